// Package conns counts the connections a process group still holds on an
// app's listening sockets: what a draining process has yet to finish, and
// what a SIGKILL at the drain timeout cuts off.
//
// A connection counts when it was accepted from one of the listeners (a TCP
// socket whose local port is the listener's, or a unix stream socket whose
// name is the listener's path, since an accepted unix socket carries its
// listener's address), it is still open in the kernel (TCP ESTABLISHED or
// CLOSE_WAIT: the client may have half-closed and still wait for the
// answer; unix: connected), and some process of the group has it in its fd
// table. A socket shared by several processes of the group (after a fork)
// counts once.
//
// The kernel is asked once per count: one sock_diag netlink dump per
// address family (AF_INET, AF_INET6, AF_UNIX) for the open sockets, then the
// fd tables under /proc of the groups' processes. Which processes are in a
// group takes a pass over every /proc/*/stat, the dearest part on a busy
// host: a Counter does it at most every MembersEvery (a process forked into
// the group since is seen at the next pass). Nothing polls by itself; the
// caller decides how often.
//
// Not handled: sockets in another network namespace than the caller's (the
// dump sees only its own), and fd tables the caller may not read (another
// user's processes when not root): such a group is left out of the answer.
package conns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/internal/diagnose"
)

// Listener is a listening socket whose accepted connections are counted.
type Listener struct {
	// Network is "tcp" (IPv4 or IPv6) or "unix".
	Network string
	// Port is a TCP listener's port.
	Port int
	// Path is a unix listener's path.
	Path string
}

// MembersEvery is how long a Counter keeps the members of its groups.
const MembersEvery = 5 * time.Second

// Count returns, for each process group in pgids (named by its leader's
// PID), how many connections accepted from ls its processes hold open. A
// group whose fd tables could not be read is missing from the map; a group
// with no process left counts 0.
func Count(ls []Listener, pgids []int) (map[int]int, error) {
	return NewCounter(ls).Count(pgids)
}

// Counter counts the connections accepted from a set of listeners, again
// and again, keeping the members of the groups it was asked about for
// MembersEvery. It is safe for concurrent use.
type Counter struct {
	ls []Listener

	mu      sync.Mutex
	members map[int][]int
	asked   map[int]bool
	scanned time.Time
	seen    map[uint64]time.Time // open inode -> first seen (see.go)
}

// NewCounter returns a Counter for ls.
func NewCounter(ls []Listener) *Counter {
	return &Counter{ls: ls}
}

// Count is as the function Count, for c's listeners.
func (c *Counter) Count(pgids []int) (map[int]int, error) {
	return c.count(pgids, MembersEvery)
}

// Quick is Count with the members as they were last found, however old:
// for a count that must not wait for a walk of /proc (the one just before
// a SIGKILL). It walks /proc only for a group it was never asked about.
func (c *Counter) Quick(pgids []int) (map[int]int, error) {
	return c.count(pgids, time.Duration(math.MaxInt64))
}

func (c *Counter) count(pgids []int, maxAge time.Duration) (map[int]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int]int, len(pgids))
	if len(pgids) == 0 {
		return out, nil
	}
	open, err := Accepted(c.ls)
	if err != nil {
		return nil, err
	}
	see(c, open)
	if len(open) == 0 {
		for _, g := range pgids {
			out[g] = 0
		}
		return out, nil
	}
	fresh := time.Since(c.scanned) < maxAge
	for _, g := range pgids {
		fresh = fresh && c.asked[g]
	}
	if !fresh {
		c.members, c.scanned = groupMembers(pgids), time.Now()
		c.asked = map[int]bool{}
		for _, g := range pgids {
			c.asked[g] = true
		}
	}
	members := c.members
	for _, g := range pgids {
		seen := map[uint64]bool{}
		ok := true
		for _, pid := range members[g] {
			if err := socketInodes(pid, func(ino uint64) {
				if open[ino] {
					seen[ino] = true
				}
			}); err != nil {
				ok = false
				break
			}
		}
		if ok {
			out[g] = len(seen)
		}
	}
	return out, nil
}

// Accepted returns the inodes of the open sockets accepted from ls.
func Accepted(ls []Listener) (map[uint64]bool, error) {
	ports := map[uint16]bool{}
	paths := map[string]bool{}
	for _, l := range ls {
		switch l.Network {
		case "tcp":
			if l.Port > 0 && l.Port < 1<<16 {
				ports[uint16(l.Port)] = true
			}
		case "unix":
			if l.Path != "" {
				paths[l.Path] = true
			}
		}
	}
	out := map[uint64]bool{}
	if len(ports) > 0 {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			err := dumpInet(fam, func(port uint16, ino, _ uint32) {
				if ports[port] && ino != 0 {
					out[uint64(ino)] = true
				}
			})
			if err != nil {
				return nil, err
			}
		}
	}
	if len(paths) > 0 {
		err := dumpUnix(func(name string, ino uint32) {
			if paths[name] {
				out[uint64(ino)] = true
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TCP states, as in the kernel's include/net/tcp_states.h. A connected
// unix stream socket reports TCP_ESTABLISHED too.
const (
	tcpEstablished = 1 // TCP_ESTABLISHED
	tcpCloseWait   = 8 // TCP_CLOSE_WAIT
)

// Sizes and offsets of the sock_diag structures (linux/inet_diag.h,
// linux/unix_diag.h); x/sys/unix does not define them.
const (
	sizeofInetDiagReqV2 = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg   = 72 // struct inet_diag_msg
	inetDiagMsgSport    = 4  // inet_diag_msg.id.idiag_sport, big-endian
	inetDiagMsgInode    = 68 // inet_diag_msg.idiag_inode
	inetDiagMsgRqueue   = 56 // inet_diag_msg.idiag_rqueue: bytes received, not read yet
	sizeofUnixDiagReq   = 24 // struct unix_diag_req
	sizeofUnixDiagMsg   = 16 // struct unix_diag_msg
	unixDiagMsgInode    = 4  // unix_diag_msg.udiag_ino
	udiagShowName       = 1  // UDIAG_SHOW_NAME
	unixDiagName        = 0  // UNIX_DIAG_NAME
)

// dumpInet lists the TCP sockets of family fam that are established or
// half-closed by the peer, with their local port and inode.
func dumpInet(fam uint8, fn func(port uint16, ino, rqueue uint32)) error {
	req := make([]byte, sizeofInetDiagReqV2)
	req[0] = fam
	req[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpEstablished|1<<tcpCloseWait)
	return dump(req, func(m []byte) {
		if len(m) < sizeofInetDiagMsg {
			return
		}
		port := binary.BigEndian.Uint16(m[inetDiagMsgSport:])
		fn(port, binary.NativeEndian.Uint32(m[inetDiagMsgInode:]), binary.NativeEndian.Uint32(m[inetDiagMsgRqueue:]))
	})
}

// dumpUnix lists the connected unix stream sockets with a name, with that
// name (an abstract name starts with "@") and their inode.
func dumpUnix(fn func(name string, ino uint32)) error {
	req := make([]byte, sizeofUnixDiagReq)
	req[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpEstablished)
	binary.NativeEndian.PutUint32(req[12:], udiagShowName)
	return dump(req, func(m []byte) {
		if len(m) < sizeofUnixDiagMsg || m[1] != unix.SOCK_STREAM {
			return
		}
		ino := binary.NativeEndian.Uint32(m[unixDiagMsgInode:])
		for attrs := m[sizeofUnixDiagMsg:]; len(attrs) >= unix.SizeofRtAttr; {
			l := int(binary.NativeEndian.Uint16(attrs))
			typ := binary.NativeEndian.Uint16(attrs[2:])
			if l < unix.SizeofRtAttr || l > len(attrs) {
				return
			}
			if typ == unixDiagName {
				name := string(attrs[unix.SizeofRtAttr:l])
				if strings.HasPrefix(name, "\x00") {
					name = "@" + name[1:]
				} else {
					// A path's length may count its terminating NUL.
					name = strings.TrimRight(name, "\x00")
				}
				fn(name, ino)
				return
			}
			attrs = attrs[min(len(attrs), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
		}
	})
}

// dump sends one SOCK_DIAG_BY_FAMILY dump request and calls fn with the
// payload of each answer until the kernel says it is done.
func dump(req []byte, fn func(msg []byte)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	const seq = 1
	msg := make([]byte, unix.NLMSG_HDRLEN+len(req))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	copy(msg[unix.NLMSG_HDRLEN:], req)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
				return nil
			}
			fn(m.Data)
		}
	}
}

// groupMembers finds the processes of each group in pgids, in one pass
// over /proc (diagnose.Groups). A leader that is still alive is always
// included.
func groupMembers(pgids []int) map[int][]int {
	all := diagnose.Groups()
	out := map[int][]int{}
	for _, g := range pgids {
		if m, ok := all[g]; ok {
			out[g] = m
		}
	}
	return out
}

// socketInodes calls fn with the inode of every socket in pid's fd table.
// A process that has gone is not an error: it holds nothing.
func socketInodes(pid int, fn func(uint64)) error {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil // it exited while being read
	}
	for _, n := range names {
		link, err := os.Readlink(dir + "/" + n)
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				fn(ino)
			}
		}
	}
	return nil
}
