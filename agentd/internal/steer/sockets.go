package steer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Errors a caller can tell apart with errors.Is. Each comes wrapped with
// the socket and the reason in words.
var (
	// ErrNoReusePort: the socket was bound without SO_REUSEPORT, so it
	// belongs to no reuseport group and cannot join one.
	ErrNoReusePort = errors.New("socket bound without SO_REUSEPORT")
	// ErrNotListener: not a listening TCP socket (not a socket, UDP, unix,
	// or listen() not called).
	ErrNotListener = errors.New("not a listening TCP socket")
	// ErrOtherGroup: the socket is bound to another address than the
	// group's, so it is in another reuseport group.
	ErrOtherGroup = errors.New("socket of another reuseport group")
	// ErrInOtherMap: the kernel lets a socket be in one REUSEPORT_SOCKARRAY
	// only, and another one (a previous agentd's group, still attached)
	// holds it.
	ErrInOtherMap = errors.New("socket already in another steering map")
	// ErrClosed: the Group was closed.
	ErrClosed = errors.New("steering group closed")
)

// sockInfo is what Route and Attach check of a socket before touching a map.
type sockInfo struct {
	cookie uint64
	addr   netip.AddrPort
}

// inspect returns f's cookie and address, or an error that says why f cannot
// be steered: it must be a listening TCP socket with SO_REUSEPORT.
func inspect(f *os.File) (sockInfo, error) {
	if f == nil {
		return sockInfo{}, fmt.Errorf("no socket given: %w", ErrNotListener)
	}
	var info sockInfo
	var reasonErr error
	err := control(f, func(fd int) error {
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			if errors.Is(err, unix.ENOTSOCK) {
				reasonErr = fmt.Errorf("%s is not a socket: %w", f.Name(), ErrNotListener)
				return nil
			}
			return fmt.Errorf("SO_TYPE: %w", err)
		}
		proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		if err != nil {
			return fmt.Errorf("SO_PROTOCOL: %w", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return fmt.Errorf("getsockname: %w", err)
		}
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			info.addr = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *unix.SockaddrInet6:
			info.addr = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
		}
		if proto == unix.IPPROTO_MPTCP {
			// Go's net.Listen makes MPTCP listeners by default since Go 1.24;
			// the sockarray takes TCP and UDP sockets only.
			reasonErr = fmt.Errorf("%s (%s) is an MPTCP socket (bind it with ListenConfig.SetMultipathTCP(false), as Listen does): %w", f.Name(), info.addr, ErrNotListener)
			return nil
		}
		if typ != unix.SOCK_STREAM || proto != unix.IPPROTO_TCP || !info.addr.IsValid() {
			reasonErr = fmt.Errorf("%s is not a TCP socket (only TCP over IPv4 or IPv6 can be steered): %w", f.Name(), ErrNotListener)
			return nil
		}
		listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			return fmt.Errorf("SO_ACCEPTCONN: %w", err)
		}
		if listening == 0 {
			reasonErr = fmt.Errorf("%s (%s) is not listening: %w", f.Name(), info.addr, ErrNotListener)
			return nil
		}
		reuse, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT)
		if err != nil {
			return fmt.Errorf("SO_REUSEPORT: %w", err)
		}
		if reuse == 0 {
			reasonErr = fmt.Errorf("%s (%s) cannot join a reuseport group (bind a new socket with SO_REUSEPORT): %w", f.Name(), info.addr, ErrNoReusePort)
			return nil
		}
		info.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		if err != nil {
			return fmt.Errorf("SO_COOKIE: %w", err)
		}
		return nil
	})
	if err != nil {
		return sockInfo{}, fmt.Errorf("inspect %s: %w", f.Name(), err)
	}
	if reasonErr != nil {
		return sockInfo{}, reasonErr
	}
	return info, nil
}

// control runs fn with f's descriptor, keeping f alive meanwhile.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	return fnErr
}

// Cookie returns the socket's SO_COOKIE: the kernel's 64-bit id of the
// socket, the same through every fd of it in every process, never reused
// while the system runs. Every socket of a reuseport group has the same
// address, so the cookie is what tells them apart.
func Cookie(f *os.File) (uint64, error) {
	var c uint64
	err := control(f, func(fd int) error {
		var err error
		c, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("SO_COOKIE of %s: %w", f.Name(), err)
	}
	return c, nil
}

// Queued returns how many connections wait in a listening socket's accept
// queue (established, not accepted yet): TCP_INFO's tcpi_unacked, which the
// kernel fills with sk_ack_backlog for a listener. Handshakes still in the
// SYN queue are not counted.
func Queued(f *os.File) (int, error) {
	var n int
	err := control(f, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return err
		}
		if ti.State != tcpListen {
			return fmt.Errorf("not listening (TCP state %d)", ti.State)
		}
		n = int(ti.Unacked)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("accept queue of %s: %w", f.Name(), err)
	}
	return n, nil
}

// tcpListen is TCP_LISTEN of include/net/tcp_states.h.
const tcpListen = 10

// ReusePort reports whether SO_REUSEPORT is set on the socket.
func ReusePort(f *os.File) (bool, error) {
	var on bool
	err := control(f, func(fd int) error {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT)
		on = v != 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("SO_REUSEPORT of %s: %w", f.Name(), err)
	}
	return on, nil
}

// Listen binds a TCP (not MPTCP) socket with SO_REUSEPORT set before bind (the only
// time it counts) and listens, with the system's default backlog. The
// returned file's descriptor is close-on-exec: hand it to a child
// explicitly (ExtraFiles). network is "tcp", "tcp4" or "tcp6".
func Listen(network, address string) (*os.File, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("listen %s %s: only TCP can be steered", network, address)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); cerr != nil {
			return cerr
		}
		if err != nil {
			return fmt.Errorf("SO_REUSEPORT: %w", err)
		}
		return nil
	}}
	// Plain TCP: Go makes MPTCP listeners by default, and the kernel's
	// sockarray refuses them.
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), network, address)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	// File dups the descriptor (close-on-exec); the listener's own copy
	// closes with l, the socket lives on in the file.
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", network, address, err)
	}
	return f, nil
}
