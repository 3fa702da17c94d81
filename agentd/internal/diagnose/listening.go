package diagnose

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Listening returns the listening sockets of this network namespace by
// inode: TCP ("127.0.0.1:8080", "[::]:8080") from /proc/net/tcp and tcp6,
// unix stream sockets by path ("/run/app.sock", "@abstract").
func Listening() map[uint64]string {
	out := map[uint64]string{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		readTable(f, func(fields []string) {
			// sl local rem st queues tr retrnsmt uid timeout inode
			if len(fields) < 10 || fields[3] != "0A" { // TCP_LISTEN
				return
			}
			ino, err := strconv.ParseUint(fields[9], 10, 64)
			if err != nil || ino == 0 {
				return
			}
			if addr, ok := procAddr(fields[1]); ok {
				out[ino] = addr.String()
			}
		})
	}
	readTable("/proc/net/unix", func(fields []string) {
		// Num RefCount Protocol Flags Type St Inode [Path]
		if len(fields) < 8 || fields[3] != "00010000" { // __SO_ACCEPTCON
			return
		}
		if ino, err := strconv.ParseUint(fields[6], 10, 64); err == nil {
			out[ino] = fields[7]
		}
	})
	return out
}

// readTable calls fn with the fields of each line of a /proc/net table
// but its header.
func readTable(path string, fn func([]string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fn(strings.Fields(sc.Text()))
	}
}

// procAddr parses an address of /proc/net/tcp*: the IP as 32-bit words in
// host byte order, in hex, then ":" and the port in hex.
func procAddr(s string) (netip.AddrPort, bool) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(ipHex)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	// Each 32-bit word is in host order: back to network order.
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	ip, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), true
}

// Queued returns how many connections wait in the accept queue of the
// listening TCP socket fd: connections the kernel completed and no
// process has accepted yet (tcpi_unacked of a listening socket).
func Queued(fd int) (int, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, err
	}
	return int(info.Unacked), nil
}
