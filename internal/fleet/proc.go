package fleet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a long-running process of the lab (sshd, agentd, haproxy, a plain
// app server). Its output goes to a log file, and Start returns once a line
// holding the ready text was written: no sleeps.
type Proc struct {
	Name string
	Log  string // its output, on disk
	cmd  *exec.Cmd
	done chan struct{}

	mu   sync.Mutex
	tail []string // the last lines of output, for error messages
}

// maxTail is how many lines of output Proc keeps for error messages.
const maxTail = 30

// startProc starts argv and waits up to timeout for a line of its output
// that contains ready ("" means: do not wait). The process gets SIGKILL if
// the test binary dies without cleaning up (Pdeathsig): a backstop only,
// Stop is the way to end it.
func startProc(name, logPath, ready string, timeout time.Duration, env []string, argv ...string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		logf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	w.Close()
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	readyc := make(chan struct{})
	var once sync.Once
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > maxTail {
				p.tail = p.tail[len(p.tail)-maxTail:]
			}
			p.mu.Unlock()
			if ready != "" && strings.Contains(line, ready) {
				once.Do(func() { close(readyc) })
			}
		}
		_, _ = io.Copy(io.Discard, r)
		r.Close()
		logf.Close()
	}()
	go func() {
		_ = cmd.Wait()
		// Children that outlive the process (sshd's sessions) may hold the
		// pipe open: wait a little for the last lines, not for them.
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		close(p.done)
	}()
	if ready == "" {
		return p, nil
	}
	select {
	case <-readyc:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before it was ready (%s):\n%s", name, cmd.ProcessState, p.Tail())
	case <-time.After(timeout):
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("%s was not ready within %s:\n%s", name, timeout, p.Tail())
	}
}

// CPU is the user and system time of the process and of its children it
// waited for (an sshd's sessions, an agentd's apps), once it has exited.
func (p *Proc) CPU() time.Duration {
	if !p.Exited() || p.cmd.ProcessState == nil {
		return 0
	}
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
}

// PID is the process's PID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Tail is the last lines of the process's output.
func (p *Proc) Tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// sends SIGKILL. It returns an error if SIGKILL was needed.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return errors.New(p.Name + " ignored SIGTERM for " + grace.String() + " and was killed")
}
