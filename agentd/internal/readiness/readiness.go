// Package readiness decides when a new process may take over from the old
// ones. Kinds (per process type):
//
//	notify          READY=1 on the process's own NOTIFY_SOCKET
//	http:PATH       GET PATH answers 2xx or 3xx on the private probe socket
//	tcp             a connection to the probe socket is accepted by the app
//	exec:CMD        CMD (run with /bin/sh -c in the release directory) exits 0
//	uptime:DURATION the process stayed alive that long (default uptime:5s)
//
// http and tcp are probed on a socket of the process's own (passed as an
// extra fd named "probe"), never on the shared app socket: a probe sent to
// the shared socket could be answered by an old process.
package readiness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/grammar"
	"github.com/agentd/agentd/sockets"
)

// Kind is a parsed readiness kind.
type Kind struct {
	Name   string // notify, http, tcp, exec, uptime
	Path   string // http
	Cmd    string // exec
	Uptime time.Duration
}

// Default is the kind used when a process type has none: uptime:5s, as
// Dokku's default check.
var Default = Kind{Name: grammar.KindUptime, Uptime: grammar.DefaultUptime}

func (k Kind) String() string { return k.spec().String() }

func (k Kind) spec() grammar.Readiness {
	return grammar.Readiness{Kind: k.Name, Path: k.Path, Cmd: k.Cmd, Uptime: k.Uptime}
}

// NeedsProbe reports whether the kind probes a private socket.
func (k Kind) NeedsProbe() bool { return k.Name == grammar.KindHTTP || k.Name == grammar.KindTCP }

// Parse parses a readiness kind. The syntax is package grammar's (hctl
// checks with the same rules); a bad kind is a *grammar.Error
// (errors.Is(err, grammar.ErrBadReadiness)).
func Parse(s string) (Kind, error) {
	r, err := grammar.ParseReadiness(s)
	if err != nil {
		return Kind{}, parseError{err}
	}
	return Kind{Name: r.Kind, Path: r.Path, Cmd: r.Cmd, Uptime: r.Uptime}, nil
}

// parseError words a grammar error as this package always has, "readiness
// "KIND": REASON", for the messages agentd passes on to users.
type parseError struct{ err error }

func (e parseError) Error() string {
	if g, ok := errors.AsType[*grammar.Error](e.err); ok {
		return fmt.Sprintf("readiness %q: %s", g.Input, g.Reason)
	}
	return e.err.Error()
}

func (e parseError) Unwrap() error { return e.err }

// Probe is a private listening socket for one process's http/tcp check.
type Probe struct {
	File *os.File // passed to the process as the fd named "probe"
	Addr string   // where agentd connects
}

// NewProbe binds a private loopback socket for one process.
func NewProbe() (*Probe, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("probe socket: %w", err)
	}
	f, err := ln.(*net.TCPListener).File()
	addr := ln.Addr().String()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("probe socket: %w", err)
	}
	return &Probe{File: f, Addr: addr}, nil
}

// Close closes agentd's copy; the process keeps its own.
func (p *Probe) Close() error { return p.File.Close() }

// Target is what a check watches.
type Target struct {
	Probe *Probe
	// Notified is closed when READY=1 arrived.
	Notified <-chan struct{}
	// Exited is closed when the process has ended.
	Exited <-chan struct{}
	// StartedAt is when the process started (for uptime).
	StartedAt time.Time
	// Dir and Env run exec checks, as Credential when set (the app's
	// user: the check runs code of the release).
	Dir        string
	Env        []string
	Credential *syscall.Credential
}

// ErrExited is returned when the process ended before it was ready.
var ErrExited = errors.New("process exited before it was ready")

// Wait blocks until t is ready by k, the process exits (ErrExited), or ctx
// ends (its error). Polling kinds back off from 20 ms to 500 ms: fast for
// apps that boot fast, cheap for those that do not.
func Wait(ctx context.Context, k Kind, t Target) error {
	switch k.Name {
	case "notify":
		select {
		case <-t.Notified:
			return nil
		case <-t.Exited:
			return ErrExited
		case <-ctx.Done():
			return ctx.Err()
		}
	case "uptime":
		tm := time.NewTimer(time.Until(t.StartedAt.Add(k.Uptime)))
		defer tm.Stop()
		select {
		case <-tm.C:
			return nil
		case <-t.Exited:
			return ErrExited
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	check := func(ctx context.Context) error { return errors.New("unknown readiness kind " + k.Name) }
	switch k.Name {
	case "http":
		check = func(ctx context.Context) error { return checkHTTP(ctx, t.Probe.Addr, k.Path) }
	case "tcp":
		check = func(ctx context.Context) error { return checkTCP(ctx, t.Probe) }
	case "exec":
		check = func(ctx context.Context) error { return checkExec(ctx, k.Cmd, t.Dir, t.Env, t.Credential) }
	}
	delay := 20 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			// A process that died while the check ran is not ready.
			select {
			case <-t.Exited:
				return ErrExited
			default:
				return nil
			}
		}
		tm := time.NewTimer(delay)
		select {
		case <-tm.C:
		case <-t.Exited:
			tm.Stop()
			return ErrExited
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

func checkHTTP(ctx context.Context, addr, path string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// A wait that ends (the process failed otherwise) ends the check at
	// once, not at its deadline.
	defer context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })()
	// One request on its own connection, closed after: the probe never
	// holds a kept-alive connection that the app would have to drain.
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Close = true
	req.Header.Set("User-Agent", "agentd-readiness")
	if err := req.Write(c); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// checkTCP connects to the probe socket and then waits until the app has
// accepted the connection. A bare connect is no proof: the kernel completes
// the handshake into the listen queue whether or not the app ever calls
// accept. TCP_INFO on agentd's copy of the listening socket reports the
// accept queue's length in tcpi_unacked; 0 after our connect means the app
// took it.
func checkTCP(ctx context.Context, p *Probe) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	delay := 5 * time.Millisecond
	for {
		info, err := unix.GetsockoptTCPInfo(sockets.Fd(p.File), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return err
		}
		if info.Unacked == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tcp probe: connection not accepted: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

func checkExec(ctx context.Context, command, dir string, env []string, cred *syscall.Credential) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	// Kill the check's whole group on timeout, not only the shell.
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = time.Second
	if err := supervisor.Fork(cmd.Start); err != nil {
		return err
	}
	return cmd.Wait()
}
