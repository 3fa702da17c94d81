// Package shed closes client connections that another process holds,
// without that process's help, and paces many such closes.
//
// It is what agentd does at a draining generation's deadline when a shed
// rate is set (issue 17): rather than one SIGKILL that cuts every remaining
// connection at the same instant (and sends every client back at once), it
// closes the connections one by one at no more than N per second, so that
// clients reconnect to the new release gradually.
//
// Closing one connection (Close):
//
//  1. pidfd_open(pid) and pidfd_getfd(pidfd, fd) take a copy of the app's fd:
//     a second reference to the same socket (needs ptrace access to the
//     process: agentd, root or the app's user, has it);
//  2. the copy's inode is checked against the one expected, so that an fd
//     number the app has since reused for another file is left alone;
//  3. shutdown(copy, SHUT_RDWR) ends the connection for both holders: the
//     client gets a FIN after whatever the app had already queued, and the
//     app's pending read returns end-of-file, so it finishes that
//     connection its own way (a WebSocket handler returns);
//  4. the copy is closed. The app still has its fd; it closes it when its
//     read fails, and only then does the kernel free the socket.
//
// Why shutdown and not sock_diag's SOCK_DESTROY: SOCK_DESTROY (kernel
// CONFIG_INET_DIAG_DESTROY, CAP_NET_ADMIN) aborts the connection, an RST that
// drops data still unsent and tells the client its connection was reset
// rather than ended; it needs no access to the app's fd table, so it is the
// fallback at best, for a process whose fds cannot be taken. It is not
// implemented here. Where pidfd_getfd is missing (Linux before 5.6) or
// refused (EPERM: no ptrace access, e.g. Yama or another user), Close
// returns an error wrapping ErrUnsupported, and the caller falls back to
// today's SIGKILL at the deadline, logging the reason.
package shed

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrUnsupported is wrapped by Close's error when this kernel or this
// process's privileges do not allow taking another process's fd: closing
// connections one by one is not possible, every later Close would fail the
// same way, and the caller should fall back to a SIGKILL.
var ErrUnsupported = errors.New("shed: cannot take a copy of another process's fd")

// ErrGone is wrapped by Close's error when there was nothing left to
// close: the process has exited, the fd is closed, or the fd number now
// names another file. The connection is not open in that process anymore,
// which is what shedding wanted.
var ErrGone = errors.New("shed: connection already gone")

// Target is one connection to close: fd FD of process PID, whose socket
// has inode Inode (as conns.Conn lists them). Inode 0 skips the check.
type Target struct {
	PID, FD int
	Inode   uint64
}

func (t Target) String() string {
	return fmt.Sprintf("pid %d fd %d (socket %d)", t.PID, t.FD, t.Inode)
}

// Close ends connection t: the client gets a FIN after the data already
// queued, the holder's reads return end-of-file. See the package doc.
//
// It returns nil once the connection is shut down; an error wrapping
// ErrGone if it was not open anymore; an error wrapping ErrUnsupported if
// fds of other processes cannot be taken here; any other error as it came.
func Close(t Target) error {
	return closeHow(t, unix.SHUT_RDWR)
}

// closeHow is Close with the shutdown(2) mode as a parameter, for the test
// that compares them. SHUT_RDWR is Close's choice, not SHUT_WR: both send
// the FIN after the queued data, but with SHUT_WR alone the app's read
// keeps waiting until the client closes its end too, so the app's handler
// (and its fd, and its process, which agentd then cannot end without a
// SIGKILL) lives on as long as a client that does not answer the FIN, or
// one that vanished, lets it. With SHUT_RDWR the app sees end-of-file at
// once, whatever the client does.
func closeHow(t Target, how int) error {
	pidfd, err := unix.PidfdOpen(t.PID, 0)
	if err != nil {
		return fmt.Errorf("shed %v: pidfd_open: %w", t, classify(err))
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, t.FD, 0)
	if err != nil {
		return fmt.Errorf("shed %v: pidfd_getfd: %w", t, classify(err))
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("shed %v: fstat: %w", t, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || (t.Inode != 0 && st.Ino != t.Inode) {
		return fmt.Errorf("shed %v: fd now names inode %d: %w", t, st.Ino, ErrGone)
	}
	if err := unix.Shutdown(fd, how); err != nil {
		if errors.Is(err, unix.ENOTCONN) {
			// The peer reset it, or it was shut down already.
			return fmt.Errorf("shed %v: shutdown: %w: %w", t, ErrGone, err)
		}
		return fmt.Errorf("shed %v: shutdown: %w", t, err)
	}
	return nil
}

// classify adds ErrGone or ErrUnsupported to a pidfd_open or pidfd_getfd
// error whose errno means one of them.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.ESRCH), errors.Is(err, unix.EBADF):
		return fmt.Errorf("%w: %w", ErrGone, err)
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return err
}
