package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/internal/diagnose"
	"github.com/agentd/agentd/agentd/internal/rollout"
	"github.com/agentd/agentd/sockets"
)

// What agentd checks of a release that misbehaves, beyond readiness, and
// how it words a failure so the operator learns what the release did.
// docs/security.md lists the hostile behaviours and what each one meets.

// maxBootExtension is how far EXTEND_TIMEOUT_USEC may push a process's boot
// deadline: to ten times the boot timeout after its start. A process that
// keeps asking for more time would otherwise hold the deploy, and the
// app's operation lock, for ever.
const maxBootExtension = 10

// bootTimeoutError is errBootTimeout with how far the process had extended
// its deadline, if at all.
type bootTimeoutError struct {
	extendedTo time.Duration // from the start; 0 when not extended
	capped     bool          // it asked for more than maxBootExtension allows
}

func (e *bootTimeoutError) Error() string { return errBootTimeout.Error() }
func (e *bootTimeoutError) Is(target error) bool {
	return target == errBootTimeout
}

// bootCeiling is the latest a process started at start may become ready.
func bootCeiling(start time.Time, boot time.Duration) time.Time {
	return start.Add(maxBootExtension * boot)
}

// describeBootTimeout words a boot timeout, with the extension if any.
func describeBootTimeout(err error) string {
	var bt *bootTimeoutError
	if !errors.As(err, &bt) || bt.extendedTo == 0 {
		return ""
	}
	s := fmt.Sprintf(" (extended by EXTEND_TIMEOUT_USEC to %s", bt.extendedTo.Round(time.Millisecond))
	if bt.capped {
		s += fmt.Sprintf(", the most it may be: %d times the boot timeout", maxBootExtension)
	}
	return s + ")"
}

// hints adds to the message of a process that failed to become ready what
// agentd saw it do: flood its notify socket, write output without pause,
// bind the app's port itself.
func (ag *Agent) hints(p *proc, tail string) string {
	var out []string
	if n := p.notified.Load(); n >= 1000 {
		what := fmt.Sprintf("it sent %d messages to its notify socket", n)
		if p.ns != nil && p.ns.Dropped() > 0 {
			what += fmt.Sprintf(" (%d dropped)", p.ns.Dropped())
		}
		out = append(out, what)
	}
	if p.log != "" {
		if fi, err := os.Stat(p.log); err == nil {
			total := fi.Size() + p.logCut.Load()
			if total >= 16<<20 {
				what := fmt.Sprintf("it wrote %d MiB of output in %.1fs", total>>20, time.Since(p.p.StartedAt()).Seconds())
				if cut := p.logCut.Load(); cut > 0 {
					what += fmt.Sprintf(" (%d MiB of it cut from its log by the %d MiB log cap)", cut>>20, ag.maxLogBytes()>>20)
				}
				out = append(out, what)
			}
		}
	}
	if strings.Contains(tail, "address already in use") {
		out = append(out, "it seems to bind an address itself: agentd holds the app's sockets (PORT included) and passes them as fds 3..; serve those (docs/app-contract.md)")
	}
	if len(out) == 0 {
		return ""
	}
	return "; " + strings.Join(out, "; ")
}

// checkSockets runs once p is ready: it fails p if neither p nor any
// process of its group still holds every socket of its type (it closed
// them, so it can never serve them), and re-arms any of the app's sockets
// that stopped listening.
func (ag *Agent) checkSockets(a *app, p *proc) error {
	a.mu.Lock()
	want := map[uint64]string{}
	for _, h := range a.held {
		if h.Spec.Type != p.typ && p.typ != rollout.Responder {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(sockets.Fd(a.givenTo(h, p.release).File), &st) == nil {
			want[st.Ino] = h.Spec.Name
		}
	}
	rearmed := ag.rearm(a)
	a.mu.Unlock()
	if len(rearmed) > 0 {
		return fmt.Errorf("%s: the app's socket %s stopped listening while it booted (shut down by a process that holds it); agentd made it listen again",
			p.name(), strings.Join(rearmed, ", "))
	}
	if len(want) == 0 {
		return nil
	}
	missing, err := groupMissing(p.p.PID(), want)
	if err != nil || len(missing) == 0 {
		// Unreadable /proc (another user, no ptrace right): no verdict.
		return nil
	}
	return fmt.Errorf("%s said it was ready but has closed its inherited socket %s: it can never serve it "+
		"(a process must keep serving every fd it is given, docs/app-contract.md)", p.name(), strings.Join(missing, ", "))
}

// groupMissing returns the names of the sockets in want (by inode) that
// neither the process pid nor any other process of its group (pgid pid)
// holds an fd of.
func groupMissing(pid int, want map[uint64]string) ([]string, error) {
	left := map[uint64]string{}
	for k, v := range want {
		left[k] = v
	}
	if err := dropHeld(pid, left); err != nil {
		return nil, err
	}
	if len(left) > 0 {
		for _, q := range groupMembers(pid) {
			if q != pid {
				dropHeld(q, left)
			}
			if len(left) == 0 {
				break
			}
		}
	}
	var out []string
	for _, name := range left {
		out = append(out, name)
	}
	return out, nil
}

// dropHeld removes from left every socket inode pid holds an fd of.
func dropHeld(pid int, left map[uint64]string) error {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		s, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
			delete(left, ino)
		}
	}
	return nil
}

// groupMembers lists the processes whose process group is pgid (the same
// /proc scan the readiness diagnostics make).
func groupMembers(pgid int) []int { return diagnose.GroupMembers(pgid) }

// rearm makes every socket of a that stopped listening listen again and
// returns their names. A listening socket is shared by agentd and every
// process of the app: shutdown(2) by any of them (SHUT_RD or SHUT_RDWR)
// stops it listening for all, resets the connections queued on it, and
// for a port the kernel chose (":0") releases the port. The exec shim's
// seccomp guard refuses that on the fds agentd passes; a process that
// duplicated one first gets past it, and this repairs what it did: bind
// the address again if the socket lost it, then listen. Callers hold a.mu.
func (ag *Agent) rearm(a *app) []string {
	var out []string
	for i, h := range a.held {
		fd := sockets.Fd(h.File)
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 1 {
			continue
		}
		bound := ""
		if i < len(a.st.Bound) {
			bound = a.st.Bound[i]
		}
		if err := relisten(fd, h.Spec, bound); err != nil {
			ag.log.Error("socket stopped listening and could not be re-armed", "app", a.st.Name, "socket", h.Spec.Name, "err", err)
		} else {
			ag.log.Warn("socket had stopped listening (shut down by a process holding it): listening again", "app", a.st.Name, "socket", h.Spec.Name)
		}
		out = append(out, h.Spec.Name)
	}
	return out
}

func relisten(fd int, spec sockets.Spec, bound string) error {
	if spec.Network != "unix" && bound != "" {
		host, port, err := net.SplitHostPort(bound)
		if err != nil {
			return err
		}
		pn, err := strconv.Atoi(port)
		if err != nil {
			return err
		}
		ip := net.ParseIP(host)
		var sa unix.Sockaddr
		if ip4 := ip.To4(); ip4 != nil && spec.Network != "tcp6" {
			a := &unix.SockaddrInet4{Port: pn}
			copy(a.Addr[:], ip4)
			sa = a
		} else {
			a := &unix.SockaddrInet6{Port: pn}
			copy(a.Addr[:], ip.To16())
			sa = a
		}
		// EINVAL: still bound (the port was asked for, not chosen).
		if err := unix.Bind(fd, sa); err != nil && err != unix.EINVAL {
			return fmt.Errorf("bind %s: %w", bound, err)
		}
	}
	return unix.Listen(fd, unix.SOMAXCONN)
}
