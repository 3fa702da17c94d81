package sockets

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// TakeFrom finds the listening socket bound to bound (as Held.Bound reports
// it) among the open fds of process pid, and returns agentd's own copy of
// it, taken with pidfd_getfd. A restarted agentd uses it to get back a
// socket that only its apps still hold: the app processes kept serving on
// it while agentd was away, and the queue was never closed. It needs the
// right to ptrace pid (root, or the same user without Yama restrictions).
//
// The fd number cannot be trusted to be 3: activation libraries dup the
// inherited fds and close the originals, so every socket fd is examined.
func TakeFrom(pid int, spec Spec, bound string) (*Held, error) {
	return take(pid, spec, func(h *Held) bool { return h.Bound() == bound },
		fmt.Sprintf("socket %s: pid %d holds no socket listening on %s", spec.Name, pid, bound))
}

// take returns agentd's copy of the first listening socket among pid's
// fds that match accepts.
func take(pid int, spec Spec, match func(*Held) bool, notFound string) (*Held, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s from pid %d: %w", spec.Name, pid, err)
	}
	defer unix.Close(pidfd)
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("socket %s from pid %d: %w", spec.Name, pid, err)
	}
	for _, e := range entries {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if errors.Is(err, unix.EBADF) {
			// Closed since the listing: a connection the process ended
			// (under load its fd table changes all the time). Giving up
			// here made agentd take another process's socket instead.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("socket %s from pid %d: pidfd_getfd: %w", spec.Name, pid, err)
		}
		f := os.NewFile(uintptr(fd), spec.Name)
		h := &Held{Spec: spec, File: f}
		if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && acc == 1 && match(h) {
			unix.CloseOnExec(fd)
			return h, nil
		}
		f.Close()
	}
	return nil, errors.New(notFound)
}
