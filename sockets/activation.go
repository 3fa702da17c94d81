package sockets

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Activated is a socket systemd passed to agentd, with its fd name
// (FileDescriptorName= of the .socket unit, or the FDNAME it was stored
// under in the fd store).
type Activated struct {
	Name string
	File *os.File
}

// ParseFDNames splits LISTEN_FDNAMES for n fds. systemd names every fd;
// a missing or short list leaves the rest "unknown", as sd_listen_fds_with_names does.
func ParseFDNames(s string, n int) ([]string, error) {
	if n < 0 || n > 4096 {
		return nil, fmt.Errorf("LISTEN_FDS=%d out of range", n)
	}
	names := make([]string, n)
	var given []string
	if s != "" {
		given = strings.Split(s, ":")
	}
	if len(given) > n {
		return nil, fmt.Errorf("LISTEN_FDNAMES names %d fds, LISTEN_FDS is %d", len(given), n)
	}
	for i := range names {
		names[i] = "unknown"
		if i < len(given) && given[i] != "" {
			if len(given[i]) > 255 || strings.ContainsAny(given[i], "\x00\n") {
				return nil, fmt.Errorf("LISTEN_FDNAMES entry %d is not a valid name", i)
			}
			names[i] = given[i]
		}
	}
	return names, nil
}

// TakeActivated takes the sockets systemd passed to this process
// (LISTEN_PID equal to our PID), marks them close-on-exec (activated fds
// are not: they must never leak into app processes by accident), and
// unsets the LISTEN_* variables so that nothing started later, a new
// agentd after an upgrade included, mistakes them for its own.
func TakeActivated() ([]Activated, error) {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil {
		return nil, fmt.Errorf("LISTEN_FDS=%q: %w", os.Getenv("LISTEN_FDS"), err)
	}
	names, err := ParseFDNames(os.Getenv("LISTEN_FDNAMES"), n)
	if err != nil {
		return nil, err
	}
	out := make([]Activated, 0, n)
	for i, name := range names {
		fd := ListenFdsStart + i
		unix.CloseOnExec(fd)
		// Non-blocking, always. The open file description, and with it
		// O_NONBLOCK, is shared with every app process that holds the
		// socket, and systemd clears O_NONBLOCK on each start of agentd
		// (unless the service says NonBlocking=yes, as agentd.service does). A Go app whose
		// listener turns blocking under it parks its accept loop in a
		// blocking accept(2) after the next connection, and then its
		// Close, and the whole drain, waits for a connection that may
		// never come: a reboot after `systemctl restart agentd` hung 90 s
		// on such apps. Sockets agentd binds itself are non-blocking too,
		// so apps see one mode (docs/app-contract.md).
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("socket %q (fd %d) from systemd: %w", name, fd, err)
		}
		out = append(out, Activated{Name: name, File: os.NewFile(uintptr(fd), name)})
	}
	return out, nil
}

// notifySocket returns the address of $NOTIFY_SOCKET, or an error when
// agentd does not run under systemd.
func notifySocket() (*unix.SockaddrUnix, error) {
	p := os.Getenv("NOTIFY_SOCKET")
	if p == "" {
		return nil, errors.New("NOTIFY_SOCKET is not set")
	}
	if p[0] == '@' {
		p = "\x00" + p[1:]
	}
	return &unix.SockaddrUnix{Name: p}, nil
}

// Notify sends an sd_notify message to systemd, with files attached
// (SCM_RIGHTS) when given. go-systemd's daemon.SdNotify cannot attach
// files, which the fd store needs.
func Notify(state string, files ...*os.File) error {
	addr, err := notifySocket()
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = Fd(f)
		}
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte(state), oob, addr, 0); err != nil {
		return fmt.Errorf("sd_notify %q: %w", firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Store parks a socket in systemd's fd store under name, so that a
// restarted agentd gets it back with LISTEN_FDNAMES even when no app
// process holds it. The unit needs FileDescriptorStoreMax=.
func Store(name string, f *os.File) error {
	return Notify("FDSTORE=1\nFDNAME="+name, f)
}

// Unstore removes the socket named name from systemd's fd store.
func Unstore(name string) error {
	return Notify("FDSTOREREMOVE=1\nFDNAME=" + name)
}
