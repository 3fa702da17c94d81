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
	"runtime"
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
	// ShimOptions are what the exec shim applies before it execs Argv: no new
	// privileges, resource limits, the guard of the inherited sockets.
	ShimOptions sockets.ShimOptions
	// Place, if set, is called with the new process's PID while the shim
	// holds it, before it execs Argv (ShimOptions.HoldFD): to move it into
	// its cgroup before it can fork anything.
	Place func(pid int)
	// Held makes Start return with the process still held in the shim
	// (after Place): it execs Argv only once Release is called, so the
	// caller can record it first (its PID and KernelStart are known). Should
	// the caller die or call Cancel instead, the shim exits with
	// sockets.ExitNotReleased without exec'ing: no process runs that the
	// caller did not record.
	Held bool
}

// Exit describes how a process ended.
type Exit struct {
	Code    int            // exit status, or -1 when killed by a signal or unknown
	Unknown bool           // an adopted process: its status went to its real parent
	Signal  syscall.Signal // the signal that killed it, if any
	At      time.Time
}

func (e Exit) String() string {
	if e.Signal != 0 {
		return "killed by " + unix.SignalName(e.Signal)
	}
	if e.Unknown {
		return "exited"
	}
	return fmt.Sprintf("exited with status %d", e.Code)
}

// Process is a started process.
type Process struct {
	pid       int
	startedAt time.Time
	done      chan struct{}
	adopted   bool
	// kernelStart is the start time as /proc tells it (whole-second
	// precision of btime): the identity recorded in state.
	kernelStart time.Time

	fdMu  sync.Mutex
	pidfd int // adopted processes only
	// hold is the write end of the hold pipe while holdOpen: until the
	// process is released or cancelled. (A flag, so that the zero value of
	// an adopted Process holds nothing, not fd 0.)
	hold     int
	holdOpen bool

	mu     sync.Mutex
	exit   Exit
	ended  bool     // set with exit, before done is closed
	onExit []func() // run by the goroutine that saw the exit
}

// OnExit runs f once the process has exited (Done closed), on the
// goroutine that watched for the exit, or on a new one if it has exited
// already. It saves the caller a goroutine per process that would only
// wait on Done: with hundreds of processes, their stacks were a good part
// of agentd's memory.
func (p *Process) OnExit(f func()) {
	p.mu.Lock()
	if !p.ended {
		p.onExit = append(p.onExit, f)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	go f()
}

// end records the exit, closes done and runs the OnExit functions.
func (p *Process) end(ex Exit) {
	p.mu.Lock()
	p.exit, p.ended = ex, true
	fs := p.onExit
	p.onExit = nil
	p.mu.Unlock()
	close(p.done)
	for _, f := range fs {
		f()
	}
}

// Start starts the process. It returns once the process exists; its exit is
// reported by Done.
//
// It uses syscall.StartProcess with raw descriptors rather than os/exec:
// os/exec calls (*os.File).Fd on every file it passes, which switches a
// socket shared with running app processes to blocking mode (see
// sockets.Fd).
func Start(s Spec) (*Process, error) {
	if len(s.Argv) == 0 {
		return nil, errors.New("start: no command")
	}
	devnull, err := devNull()
	if err != nil {
		return nil, fmt.Errorf("start %q: %w", s.Argv, err)
	}
	out := devnull
	if s.Output != nil {
		out = s.Output
	}
	fds := []uintptr{uintptr(sockets.Fd(devnull)), uintptr(sockets.Fd(out)), uintptr(sockets.Fd(out))}
	for _, f := range s.Files {
		fds = append(fds, uintptr(sockets.Fd(f)))
	}
	env := append(append([]string(nil), s.Env...), sockets.Env(s.Names)...)
	opt := s.ShimOptions
	hold := [2]int{-1, -1}
	if s.Place != nil || s.Held {
		// A plain blocking pipe, not os.Pipe: the shim's blocking read of
		// its end is the hold.
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("start %q: hold pipe: %w", s.Argv, err)
		}
		hold = p
		opt.HoldFD = len(fds)
		fds = append(fds, uintptr(hold[0]))
	}
	argv := sockets.ShimArgvOpts(s.Shim, opt, s.Argv)
	var pid int
	err = Fork(func() (err error) {
		pid, err = syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
			Dir: s.Dir, Env: env, Files: fds,
			Sys: &syscall.SysProcAttr{
				// Its own process group, so a signal reaches every child it
				// forks.
				Setpgid:    true,
				Credential: s.Credential,
			},
		})
		return err
	})
	// The files must stay open until the fork has dup'ed them.
	runtime.KeepAlive(s.Files)
	runtime.KeepAlive(out)
	if hold[0] >= 0 {
		unix.Close(hold[0])
	}
	if err != nil {
		if hold[1] >= 0 {
			unix.Close(hold[1])
		}
		return nil, fmt.Errorf("start %q: %w", s.Argv, err)
	}
	if s.Place != nil {
		s.Place(pid)
	}
	p := &Process{pid: pid, startedAt: time.Now(), done: make(chan struct{}), pidfd: -1, hold: hold[1], holdOpen: hold[1] >= 0}
	// The kernel's record of the start, so that a later agentd can tell
	// this process from another that got the same PID. exec keeps it: it is
	// already the app's while the shim holds it.
	p.kernelStart, _ = StartTime(p.pid)
	if !s.Held {
		// An error means the shim is gone already; Done reports its exit.
		p.Release()
	}
	go p.wait()
	return p, nil
}

// devnull is /dev/null, opened once for every process's stdin rather than
// once per start: the fork dups it, and agentd never closes it.
var devnull struct {
	sync.Mutex
	f *os.File
}

func devNull() (*os.File, error) {
	devnull.Lock()
	defer devnull.Unlock()
	if devnull.f == nil {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		devnull.f = f
	}
	return devnull.f, nil
}

// Release lets a held process (Spec.Held) exec its command: it writes the
// go-ahead byte and closes the hold pipe. Call it once the process is
// recorded. It does nothing for a process that is not held (any more).
func (p *Process) Release() error {
	p.fdMu.Lock()
	defer p.fdMu.Unlock()
	if !p.holdOpen {
		return nil
	}
	fd := p.hold
	p.holdOpen = false
	defer unix.Close(fd)
	for {
		_, err := unix.Write(fd, []byte{1})
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// EPIPE: the shim is gone already; its exit says why.
			return fmt.Errorf("release pid %d: %w", p.pid, err)
		}
		return nil
	}
}

// Cancel gives up a held process without letting it exec: the hold pipe
// is closed without the go-ahead and the shim exits with
// sockets.ExitNotReleased (Done reports it). For when recording it failed.
// It does nothing for a process that is not held (any more).
func (p *Process) Cancel() {
	p.fdMu.Lock()
	defer p.fdMu.Unlock()
	if p.holdOpen {
		unix.Close(p.hold)
		p.holdOpen = false
	}
}

// wait waits for the group leader to exit, kills whatever it left behind in
// its group, then reaps it. The group is killed before the reap because a
// zombie leader keeps its PID, and so the group ID, from being reused: the
// SIGKILL cannot hit an unrelated group.
func (p *Process) wait() {
	// Wait in the runtime's poller on a pidfd rather than in a blocking
	// waitid: a blocked syscall holds an OS thread, one per supervised
	// process. The pidfd turns readable at exit; the leader stays a zombie
	// (unreaped) until Wait4 below.
	if fd, err := unix.PidfdOpen(p.pid, unix.PIDFD_NONBLOCK); err == nil {
		f := os.NewFile(uintptr(fd), "pidfd")
		if rc, err := f.SyscallConn(); err == nil {
			rc.Read(func(fd uintptr) bool {
				n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
				return err != nil || n > 0
			})
		}
		f.Close()
	}
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	unix.Kill(-p.pid, unix.SIGKILL)
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(p.pid, &ws, 0, nil)
		if err != unix.EINTR {
			break
		}
	}
	// A held process that ended (killed in the shim) needs its pipe no more.
	p.Cancel()
	ex := Exit{Code: ws.ExitStatus(), At: time.Now()}
	if ws.Signaled() {
		ex.Code, ex.Signal = -1, syscall.Signal(ws.Signal())
	}
	p.end(ex)
}

// PID is the process's PID, which is also its process group ID.
func (p *Process) PID() int { return p.pid }

// StartedAt is when the process was started.
func (p *Process) StartedAt() time.Time { return p.startedAt }

// KernelStart is the start time /proc reports, which identifies the
// process together with its PID; record it to Adopt the process later.
func (p *Process) KernelStart() time.Time { return p.kernelStart }

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
	if p.adopted {
		// The leader through its pidfd (never a recycled PID), then the
		// rest of its group.
		if err := p.signalLeader(sig); err != nil {
			return fmt.Errorf("signal %s to pid %d: %w", unix.SignalName(sig), p.pid, err)
		}
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
