package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Every process the benchmark starts itself (app processes of the
// alternatives, nginx) runs in its own process group and is registered
// here, so that an interrupted benchmark still stops exactly what it
// started: by process group ID, never by name.
var (
	startedMu sync.Mutex
	started   = map[int]*child{}
)

// child is a process the benchmark started.
type child struct {
	name    string
	cmd     *exec.Cmd
	pid     int
	startAt time.Time
	done    chan struct{}
}

// startChild starts cmd in its own process group and registers it.
func startChild(name string, cmd *exec.Cmd) (*child, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The start is taken before the fork: on a busy machine this goroutine
	// may run again only after the child has long been going.
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, pid: cmd.Process.Pid, startAt: t0, done: make(chan struct{})}
	startedMu.Lock()
	started[c.pid] = c
	startedMu.Unlock()
	go func() {
		// Wait for the exit without reaping, kill what the leader left
		// in its group, then reap: while the leader is an unreaped
		// zombie its PID, and so the group ID, cannot be reused, so the
		// SIGKILL cannot reach anyone else's group.
		var info unix.Siginfo
		for unix.Waitid(unix.P_PID, c.pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
		}
		syscall.Kill(-c.pid, syscall.SIGKILL)
		cmd.Wait()
		startedMu.Lock()
		delete(started, c.pid)
		startedMu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// signal sends sig to the child's process group.
func (c *child) signal(sig syscall.Signal) {
	select {
	case <-c.done:
	default:
		syscall.Kill(-c.pid, sig)
	}
}

// stop sends sig and waits up to timeout for the exit, then SIGKILLs the
// group. It reports how long the exit took and whether it had to kill.
func (c *child) stop(sig syscall.Signal, timeout time.Duration) (time.Duration, bool) {
	t0 := time.Now()
	c.signal(sig)
	select {
	case <-c.done:
		return time.Since(t0), false
	case <-time.After(timeout):
	}
	c.signal(syscall.SIGKILL)
	<-c.done
	return time.Since(t0), true
}

// killAllStarted SIGKILLs the process group of every child still running.
func killAllStarted() {
	startedMu.Lock()
	var cs []*child
	for _, c := range started {
		cs = append(cs, c)
	}
	startedMu.Unlock()
	for _, c := range cs {
		c.signal(syscall.SIGKILL)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
	}
}

// appProc is a benchapp started by the benchmark (the alternatives), with
// the readiness it reported on the benchmark's own notify socket.
type appProc struct {
	*child
	readyAt time.Time // when READY=1 arrived
	initNS  int64     // the app's package initialisation (Unix ns), from STATUS=
	readyNS int64     // when the app sent READY (Unix ns), from STATUS=
}

// boot is the app's own boot: its initialisation to READY.
func (p *appProc) boot() time.Duration { return time.Duration(p.readyNS - p.initNS) }

// exec is what preceded the app's own boot: fork, exec and the Go runtime's
// start, from the start of the process to the app's initialisation.
func (p *appProc) exec() time.Duration { return time.Unix(0, p.initNS).Sub(p.startAt) }

var notifySeq atomic.Int64

// startApp starts benchapp with env in dir and waits until it sends
// READY=1 to a notify socket of the benchmark's own (as agentd's notify
// readiness does), at most bootTimeout.
func startApp(bin, dir string, env []string, bootTimeout time.Duration) (*appProc, error) {
	path := filepath.Join(dir, fmt.Sprintf("notify-%d.sock", notifySeq.Add(1)))
	os.Remove(path)
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	defer func() {
		ns.Close()
		os.Remove(path)
	}()
	logf, err := os.OpenFile(filepath.Join(dir, "app.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH")}, env...), "NOTIFY_SOCKET="+path)
	cmd.Stdout, cmd.Stderr = logf, logf
	c, err := startChild("benchapp", cmd)
	if err != nil {
		return nil, err
	}
	p := &appProc{child: c}
	deadline := time.Now().Add(bootTimeout)
	buf := make([]byte, 4096)
	for {
		ns.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := ns.ReadFromUnix(buf)
		if err == nil {
			msg := string(buf[:n])
			if parseReady(msg, p) {
				p.readyAt = time.Now()
				return p, nil
			}
			continue
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			c.stop(syscall.SIGKILL, 5*time.Second)
			return nil, fmt.Errorf("notify socket: %w", err)
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("benchapp exited before it was ready (%s): see %s/app.log", c.cmd.ProcessState, dir)
		default:
		}
		if time.Now().After(deadline) {
			c.stop(syscall.SIGKILL, 5*time.Second)
			return nil, fmt.Errorf("benchapp not ready within %s", bootTimeout)
		}
	}
}

// parseReady reads an sd_notify datagram; it reports READY=1 and keeps the
// init= and ready= times of STATUS=.
func parseReady(msg string, p *appProc) bool {
	ready := false
	for line := range strings.SplitSeq(msg, "\n") {
		switch {
		case line == "READY=1":
			ready = true
		case strings.HasPrefix(line, "STATUS="):
			p.initNS, p.readyNS = parseStatusTimes(line)
		}
	}
	return ready
}

// parseStatusTimes reads "init=NS ready=NS" from benchapp's STATUS text.
func parseStatusTimes(status string) (initNS, readyNS int64) {
	for f := range strings.FieldsSeq(status) {
		if v, ok := strings.CutPrefix(f, "init="); ok {
			initNS, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(f, "ready="); ok {
			readyNS, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return initNS, readyNS
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
