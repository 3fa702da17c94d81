// Package supervisor starts and stops one app process the way agentd's
// contract promises: through the exec shim (so LISTEN_PID is the process's
// own PID), with the app's sockets as fds 3.., in a process group of its
// own, and stopped by SIGTERM to the whole group, then SIGKILL to the whole
// group when the drain timeout runs out. It knows nothing of apps, releases
// or deploys.
package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/sockets"
)

// Spec says how to start a process.
type Spec struct {
	// Shim is the agentd binary that serves as the exec shim.
	Shim string
	// Argv is the command to run (after the shim), e.g. bash -c "…".
	Argv []string
	Dir  string
	Env  []string
	// Files are passed as fds 3.. and Names name them in LISTEN_FDNAMES.
	Files []*os.File
	Names []string
	// Output receives stdout and stderr. The process writes to it directly,
	// so its output does not depend on agentd staying alive.
	Output *os.File
	// Credential, if set, is the user the process runs as.
	Credential *syscall.Credential
}

// Exit describes how a process ended.
type Exit struct {
	Code   int            // exit status, or -1 when killed by a signal
	Signal syscall.Signal // the signal that killed it, if any
	At     time.Time
}

func (e Exit) String() string {
	if e.Signal != 0 {
		return "killed by " + unix.SignalName(e.Signal)
	}
	return fmt.Sprintf("exited with status %d", e.Code)
}

// Process is a started process.
type Process struct {
	pid       int
	startedAt time.Time
	done      chan struct{}

	mu   sync.Mutex
	exit Exit
}

// Start starts the process. It returns once the process exists; its exit is
// reported by Done.
func Start(s Spec) (*Process, error) {
	if len(s.Argv) == 0 {
		return nil, errors.New("start: no command")
	}
	argv := sockets.ShimArgv(s.Shim, s.Argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.Dir
	cmd.Env = append(append([]string(nil), s.Env...), sockets.Env(s.Names)...)
	cmd.ExtraFiles = s.Files
	cmd.Stdout = s.Output
	cmd.Stderr = s.Output
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so a signal reaches every child it forks.
		Setpgid:    true,
		Credential: s.Credential,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %q: %w", s.Argv, err)
	}
	p := &Process{pid: cmd.Process.Pid, startedAt: time.Now(), done: make(chan struct{})}
	go p.wait(cmd)
	return p, nil
}

// wait waits for the group leader to exit, kills whatever it left behind in
// its group, then reaps it. The group is killed before the reap because a
// zombie leader keeps its PID, and so the group ID, from being reused: the
// SIGKILL cannot hit an unrelated group.
func (p *Process) wait(cmd *exec.Cmd) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	unix.Kill(-p.pid, unix.SIGKILL)
	err := cmd.Wait()
	ex := Exit{Code: 0, At: time.Now()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			ex.Code, ex.Signal = -1, ws.Signal()
		} else {
			ex.Code = ws.ExitStatus()
		}
	} else if err != nil {
		ex.Code = -1
	}
	p.mu.Lock()
	p.exit = ex
	p.mu.Unlock()
	close(p.done)
}

// PID is the process's PID, which is also its process group ID.
func (p *Process) PID() int { return p.pid }

// StartedAt is when the process was started.
func (p *Process) StartedAt() time.Time { return p.startedAt }

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit is how the process ended; valid once Done is closed.
func (p *Process) Exit() Exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process's whole group. Signalling a process that
// has already ended is not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := unix.Kill(-p.pid, sig); err != nil && err != unix.ESRCH {
		return fmt.Errorf("signal %s to group %d: %w", unix.SignalName(sig), p.pid, err)
	}
	return nil
}

// Stop sends SIGTERM to the group and waits up to timeout for the process
// to exit; then it sends SIGKILL to the group and waits for the reap. It
// reports whether SIGKILL was needed.
func (p *Process) Stop(timeout time.Duration) (killed bool) {
	p.Signal(syscall.SIGTERM)
	return p.KillAfter(timeout)
}

// KillAfter waits up to timeout for the process to exit, then SIGKILLs its
// group. It reports whether SIGKILL was needed.
func (p *Process) KillAfter(timeout time.Duration) (killed bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
	}
	p.Signal(syscall.SIGKILL)
	<-p.done
	return true
}
