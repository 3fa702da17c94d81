package conns

import (
	"cmp"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is one open connection accepted from a listener, as a process of
// a group holds it: enough to take a copy of it (pidfd_getfd(PID, FD)) and
// close it, one by one.
type Conn struct {
	// Group is the process group (its leader's PID) the holder is in.
	Group int
	// PID is the process that holds it, and FD its fd number there. A
	// socket several processes share (after a fork) is listed once, with
	// the holder of lowest PID and its lowest fd.
	PID, FD int
	// Inode is the socket's inode: it names the connection for as long as
	// it is open, whoever holds it, so a caller can recognise it again.
	Inode uint64
	// Peer is a TCP connection's client address; zero for a unix socket.
	Peer netip.AddrPort
	// FirstSeen is when this Counter first saw the connection open (in a
	// Count or a List). See ByAge for why this, and not the inode, orders
	// connections by age.
	FirstSeen time.Time
}

// Offsets in struct inet_diag_msg (linux/inet_diag.h) of the peer's port
// and address, both in network byte order.
const (
	inetDiagMsgFamily = 0
	inetDiagMsgDport  = 6
	inetDiagMsgDst    = 24
)

// List returns the connections accepted from ls that the processes of the
// groups in pgids hold open, ordered by group, PID and fd. A group whose fd
// tables could not be read is left out, as in Count.
func List(ls []Listener, pgids []int) ([]Conn, error) {
	return NewCounter(ls).List(pgids)
}

// List is as the function List, for c's listeners; it shares the group
// members Count keeps (they are found again after MembersEvery).
func (c *Counter) List(pgids []int) ([]Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(pgids) == 0 {
		return nil, nil
	}
	open, err := acceptedPeers(c.ls)
	if err != nil {
		return nil, err
	}
	see(c, open)
	if len(open) == 0 {
		return nil, nil
	}
	fresh := time.Since(c.scanned) < MembersEvery
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
	var out []Conn
	seen := map[uint64]bool{}
	for _, g := range pgids {
		pids := slices.Clone(c.members[g])
		slices.Sort(pids)
		var group []Conn
		ok := true
		for _, pid := range pids {
			if err := socketFDs(pid, func(fd int, ino uint64) {
				if peer, isOpen := open[ino]; isOpen && !seen[ino] {
					seen[ino] = true
					group = append(group, Conn{Group: g, PID: pid, FD: fd, Inode: ino, Peer: peer, FirstSeen: c.seen[ino]})
				}
			}); err != nil {
				ok = false
				break
			}
		}
		if ok {
			slices.SortFunc(group, func(a, b Conn) int {
				return cmp.Or(cmp.Compare(a.PID, b.PID), cmp.Compare(a.FD, b.FD))
			})
			out = append(out, group...)
		}
	}
	return out, nil
}

// acceptedPeers is Accepted with each TCP connection's peer address.
func acceptedPeers(ls []Listener) (map[uint64]netip.AddrPort, error) {
	ports := map[uint16]bool{}
	paths := map[string]bool{}
	for _, l := range ls {
		switch {
		case l.Network == "tcp" && l.Port > 0 && l.Port < 1<<16:
			ports[uint16(l.Port)] = true
		case l.Network == "unix" && l.Path != "":
			paths[l.Path] = true
		}
	}
	out := map[uint64]netip.AddrPort{}
	if len(ports) > 0 {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			req := make([]byte, sizeofInetDiagReqV2)
			req[0] = fam
			req[1] = unix.IPPROTO_TCP
			binary.NativeEndian.PutUint32(req[4:], 1<<tcpEstablished|1<<tcpCloseWait)
			err := dump(req, func(m []byte) {
				if len(m) < sizeofInetDiagMsg {
					return
				}
				ino := binary.NativeEndian.Uint32(m[inetDiagMsgInode:])
				if !ports[binary.BigEndian.Uint16(m[inetDiagMsgSport:])] || ino == 0 {
					return
				}
				port := binary.BigEndian.Uint16(m[inetDiagMsgDport:])
				var addr netip.Addr
				if m[inetDiagMsgFamily] == unix.AF_INET {
					addr = netip.AddrFrom4([4]byte(m[inetDiagMsgDst : inetDiagMsgDst+4]))
				} else {
					// A v4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
					addr = netip.AddrFrom16([16]byte(m[inetDiagMsgDst : inetDiagMsgDst+16])).Unmap()
				}
				out[uint64(ino)] = netip.AddrPortFrom(addr, port)
			})
			if err != nil {
				return nil, err
			}
		}
	}
	if len(paths) > 0 {
		err := dumpUnix(func(name string, ino uint32) {
			if paths[name] {
				out[uint64(ino)] = netip.AddrPort{}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// socketFDs calls fn with the fd number and inode of every socket in pid's
// fd table. A process that has gone is not an error: it holds nothing.
func socketFDs(pid int, fn func(fd int, ino uint64)) error {
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
		fd, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		link, err := os.Readlink(dir + "/" + n)
		if err != nil {
			continue // closed since the listing
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				fn(fd, ino)
			}
		}
	}
	return nil
}
