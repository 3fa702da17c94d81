package sockets

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Held is a listening socket agentd holds for an app. Its File is the
// listening fd, close-on-exec in agentd; processes get it explicitly.
type Held struct {
	Spec Spec
	File *os.File
}

// Bound reports the address the kernel bound, e.g. "127.0.0.1:8080" (useful
// when the spec asked for port 0).
func (h *Held) Bound() string {
	sa, err := unix.Getsockname(Fd(h.File))
	if err != nil {
		return ""
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), fmt.Sprint(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), fmt.Sprint(a.Port))
	case *unix.SockaddrUnix:
		return a.Name
	}
	return ""
}

// Port returns the bound TCP port, or 0 for a unix socket.
func (h *Held) Port() int {
	sa, err := unix.Getsockname(Fd(h.File))
	if err != nil {
		return 0
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}

// Close closes agentd's fd (processes that inherited it keep theirs) and
// removes a unix socket's file.
func (h *Held) Close() error {
	err := h.File.Close()
	if h.Spec.Network == "unix" {
		if rerr := os.Remove(h.Spec.Address); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}

// ErrInUse is returned (wrapped) by Listen when the address is taken.
var ErrInUse = errors.New("address already in use")

// Listen binds spec and returns it held. The socket is close-on-exec in
// agentd: processes receive it through ExtraFiles, never by accident.
func Listen(spec Spec) (*Held, error) {
	if spec.Network == "unix" {
		if err := removeStaleUnix(spec.Address); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen(spec.Network, spec.Address)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("socket %s: %s: %w", spec.Name, spec.Addr, ErrInUse)
		}
		return nil, fmt.Errorf("socket %s: %w", spec.Name, err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		// agentd, not the net package, decides when the path goes away.
		ul.SetUnlinkOnClose(false)
	}
	// File() dups the fd with close-on-exec set; the listener's own fd is
	// then closed, leaving exactly one fd that agentd holds.
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", spec.Name, err)
	}
	h := &Held{Spec: spec, File: f}
	if spec.Network == "unix" {
		if err := applyUnixPerms(spec); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// FromFile wraps an fd agentd received (from systemd, tableflip, or a
// running process) after checking that it is a listening socket; it marks it
// close-on-exec, which activated fds are not.
func FromFile(spec Spec, f *os.File) (*Held, error) {
	fd := Fd(f)
	unix.CloseOnExec(fd)
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("socket %s: fd %d is not a socket: %w", spec.Name, fd, err)
	}
	if acc != 1 {
		return nil, fmt.Errorf("socket %s: fd %d is not listening", spec.Name, fd)
	}
	return &Held{Spec: spec, File: f}, nil
}

func removeStaleUnix(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unix socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("unix socket %s: a file that is not a socket is in the way", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("unix socket %s: %w (something is listening on it)", path, ErrInUse)
	}
	// Nobody listens: a leftover of a process that died. Safe to replace.
	return os.Remove(path)
}

func applyUnixPerms(spec Spec) error {
	if spec.Mode != 0 {
		if err := os.Chmod(spec.Address, os.FileMode(spec.Mode)); err != nil {
			return fmt.Errorf("socket %s: %w", spec.Name, err)
		}
	}
	if spec.Owner != "" {
		uid, gid, err := lookupOwner(spec.Owner)
		if err != nil {
			return fmt.Errorf("socket %s: %w", spec.Name, err)
		}
		if err := os.Lchown(spec.Address, uid, gid); err != nil {
			return fmt.Errorf("socket %s: %w", spec.Name, err)
		}
	}
	return nil
}
