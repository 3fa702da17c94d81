package sockets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Kernel steering (docs/concepts.md, "How connections reach a
// generation") gives each generation of an app's processes a listening
// socket of its own, all bound with SO_REUSEPORT to the app's address: one
// reuseport group.

// ListenReuse binds a TCP spec with SO_REUSEPORT.
//
// first says that it starts a group: the address must then be free of
// any listener at all. SO_REUSEPORT alone would let the bind join a group
// that another process of the same user (root) already has on the
// address, and split the connections with it; so a probe bind without the
// option checks first (and resolves port 0 to a port of our own).
// Siblings (first false) join the group of the app's own socket.
func ListenReuse(spec Spec, first bool) (*Held, error) {
	if spec.Network == "unix" {
		return nil, fmt.Errorf("socket %s: unix sockets cannot form a reuseport group", spec.Name)
	}
	address := spec.Address
	if first {
		probe, err := net.Listen(spec.Network, address)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("socket %s: %s: %w", spec.Name, spec.Addr, ErrInUse)
			}
			return nil, fmt.Errorf("socket %s: %w", spec.Name, err)
		}
		// Port 0 resolved once: the group's port is this one.
		address = probe.Addr().String()
		probe.Close()
	}
	return listenReuse(spec, spec.Network, address)
}

// listenReuse binds address on network with SO_REUSEPORT.
func listenReuse(spec Spec, network, address string) (*Held, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	// Go listens with MPTCP by default where the kernel has it; a
	// sockarray takes plain TCP sockets only, and the clients of the
	// group's other sockets see plain TCP anyway.
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), network, address)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("socket %s: %s: %w", spec.Name, spec.Addr, ErrInUse)
		}
		return nil, fmt.Errorf("socket %s: %w", spec.Name, err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", spec.Name, err)
	}
	return &Held{Spec: spec, File: f}, nil
}

// ReusePort reports whether h was bound with SO_REUSEPORT, and so can be
// in a reuseport group. A socket bound without it (by an agentd before
// steering, or by a socket unit without ReusePort=yes) never can: the
// option counts only at bind time.
func (h *Held) ReusePort() bool {
	v, err := unix.GetsockoptInt(Fd(h.File), unix.SOL_SOCKET, unix.SO_REUSEPORT)
	return err == nil && v == 1
}

// Cookie is the kernel's identity of the socket (SO_COOKIE). Every socket
// of a reuseport group has the same address, so the cookie is how agentd
// tells a generation's socket from its siblings.
func (h *Held) Cookie() uint64 {
	c, err := unix.GetsockoptUint64(Fd(h.File), unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return 0
	}
	return c
}

// Queued is the length of a TCP listener's accept queue: connections the
// kernel completed that no process has accepted yet.
func (h *Held) Queued() (int, error) {
	info, err := unix.GetsockoptTCPInfo(Fd(h.File), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("socket %s: TCP_INFO: %w", h.Spec.Name, err)
	}
	return int(info.Unacked), nil
}

// TakeMatching is TakeFrom for a socket known by its cookie: among the
// open fds of pid, the listening socket whose SO_COOKIE is cookie.
func TakeMatching(pid int, spec Spec, cookie uint64) (*Held, error) {
	return take(pid, spec, func(h *Held) bool { return h.Cookie() == cookie },
		fmt.Sprintf("socket %s: pid %d holds no socket with cookie %d", spec.Name, pid, cookie))
}

// Sibling binds a new socket into h's reuseport group: the same address,
// family and IPV6_V6ONLY as h, with SO_REUSEPORT. The family must match:
// Go listens on "tcp" 0.0.0.0 with a dual-stack IPv6 socket, so a socket
// unit's IPv4 socket and a sibling bound from its address string would be
// in two groups, and the kernel would keep choosing the IPv4 one.
func (h *Held) Sibling() (*Held, error) {
	fd := Fd(h.File)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("socket %s: getsockname: %w", h.Spec.Name, err)
	}
	network := "tcp4"
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		network = "tcp6"
		if v6only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err == nil && v6only == 0 {
			network = "tcp" // dual stack, as Go makes it for "tcp" on [::]
		}
	}
	return listenReuse(h.Spec, network, h.Bound())
}
