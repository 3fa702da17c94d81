package conns

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Unstarted counts the TCP connections accepted from listeners on ports
// that the processes of the groups in pgids hold and have never read from:
// started, with bytes received none of which was read (a server that
// accepts in batches and reads later: an asyncio server under load holds
// many), and waiting, with nothing received yet (a client that connected
// and has not sent its request; a browser's preconnect never does). A
// server that closes such connections at shutdown (uvicorn), or answers
// no request it reads after its shutdown began (Go's http.Server), loses
// their requests: kernel steering waits for them before SIGTERM.
// Connections the server has read from (a request in progress, kept-alive
// or WebSocket connections with traffic) are its own to drain, and not
// counted.
func Unstarted(ports []int, pgids []int) (unread, waiting int, err error) {
	want := map[uint16]bool{}
	for _, p := range ports {
		if p > 0 && p < 1<<16 {
			want[uint16(p)] = true
		}
	}
	const (
		none = iota + 1
		some
	)
	kind := map[uint64]int{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		err := dumpInetInfo(fam, func(port uint16, ino, rqueue uint32, received uint64) {
			switch {
			case !want[port] || ino == 0:
			case received == 0:
				kind[uint64(ino)] = none
			case uint64(rqueue) == received:
				kind[uint64(ino)] = some // received, none of it read
			}
		})
		if err != nil {
			return 0, 0, err
		}
	}
	if len(kind) == 0 {
		return 0, 0, nil
	}
	for _, pids := range groupMembers(pgids) {
		for _, pid := range pids {
			socketInodes(pid, func(ino uint64) {
				switch kind[ino] {
				case some:
					unread++
				case none:
					waiting++
				}
				delete(kind, ino) // a connection shared by two processes counts once
			})
		}
	}
	return unread, waiting, nil
}

// INET_DIAG_INFO: the attribute that carries a socket's struct tcp_info.
const inetDiagInfo = 2

// bytesReceivedAt is where tcpi_bytes_received sits in struct tcp_info.
var bytesReceivedAt = int(unsafe.Offsetof(unix.TCPInfo{}.Bytes_received))

// dumpInetInfo is dumpInet with each socket's receive queue and the data
// bytes it received in all (tcpi_bytes_received, Linux ≥ 4.1).
func dumpInetInfo(fam uint8, fn func(port uint16, ino, rqueue uint32, received uint64)) error {
	req := make([]byte, sizeofInetDiagReqV2)
	req[0] = fam
	req[1] = unix.IPPROTO_TCP
	req[2] = 1 << (inetDiagInfo - 1) // idiag_ext: ask for tcp_info
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpEstablished|1<<tcpCloseWait)
	return dump(req, func(m []byte) {
		if len(m) < sizeofInetDiagMsg {
			return
		}
		port := binary.BigEndian.Uint16(m[inetDiagMsgSport:])
		ino := binary.NativeEndian.Uint32(m[inetDiagMsgInode:])
		rqueue := binary.NativeEndian.Uint32(m[inetDiagMsgRqueue:])
		for attrs := m[sizeofInetDiagMsg:]; len(attrs) >= unix.SizeofRtAttr; {
			l := int(binary.NativeEndian.Uint16(attrs))
			typ := binary.NativeEndian.Uint16(attrs[2:])
			if l < unix.SizeofRtAttr || l > len(attrs) {
				return
			}
			if typ == inetDiagInfo {
				info := attrs[unix.SizeofRtAttr:l]
				if len(info) >= bytesReceivedAt+8 {
					fn(port, ino, rqueue, binary.NativeEndian.Uint64(info[bytesReceivedAt:]))
				}
				return
			}
			attrs = attrs[min(len(attrs), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
		}
	})
}
