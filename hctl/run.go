package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
	"github.com/urfave/cli/v3"
)

// reattachFor is how long hctl tries to re-attach to a run after its
// connection to agentd was lost (an agentd restart or upgrade): less than
// the relay's grace window (30 s), so that the relay still waits.
const reattachFor = 25 * time.Second

// exitStatus is the exit status of the command hctl ran: hctl exits with it
// and prints nothing more.
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("the command exited with status %d", e.code) }

func (h *hctl) runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a one-off command with a release's code and environment (a console, a migration)",
		UsageText: "hctl run APP [--release vN] [--type TYPE] [-e KEY=VALUE ...] [--no-tty] -- COMMAND [ARGS...]",
		Description: "Runs COMMAND once as the app's user, with its limits and its release's config vars,\n" +
			"AGENTD_APP, AGENTD_RELEASE and AGENTD_PROCESS=run.N, in a process group of its own.\n" +
			"It gets no socket unless --type names a process type whose sockets it should inherit\n" +
			"(a console must not accept traffic). It shows in `hctl ps` as run.N, its output goes\n" +
			"to the app's logs, and it is never touched by deploys.\n\n" +
			"With a terminal on stdin the command gets a pty (window size and Ctrl-C passed\n" +
			"through), so `hctl run myapp -- bash` is an interactive shell; otherwise stdin, stdout\n" +
			"and stderr are pipes. hctl exits with the command's exit status (128+N when signal N\n" +
			"ended it). If hctl goes away, the command gets SIGHUP, then SIGKILL 5 s later. An\n" +
			"agentd restart or upgrade does not stop it: hctl re-attaches.\n\n" +
			"With --json, the command's output is collected and printed at its end as one JSON\n" +
			"object (exit_code, stdout, stderr); there is no pty.\n\n" +
			"Examples:\n" +
			"  hctl run myapp -- bash\n" +
			"  hctl run myapp -- ./manage.py migrate\n" +
			"  echo 'select 1' | hctl run myapp --release v3 -e DEBUG=1 -- psql \"$DATABASE_URL\"\n" +
			"  hctl run myapp --type web -- ./server --check",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "release", Usage: "run with release `vN` (default: the active one)", Local: true},
			&cli.StringFlag{Name: "type", Usage: "pass the sockets of process type `TYPE` (default: none)", Local: true},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `KEY=VALUE` over the release's config (repeatable)", Local: true},
			&cli.BoolFlag{Name: "no-tty", Usage: "use pipes even when stdin is a terminal", Local: true},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a := cmd.Args().Slice()
			if len(a) > 1 && a[1] == "--" {
				a = append(a[:1:1], a[2:]...)
			}
			if len(a) < 2 {
				return usagef(cmd, "missing APP and COMMAND")
			}
			app := a[0]
			if err := checkAppName(cmd, app); err != nil {
				return err
			}
			req := api.RunRequest{Command: a[1:], Type: cmd.String("type")}
			if r := cmd.String("release"); r != "" {
				v, err := releaseVersion(cmd, r)
				if err != nil {
					return err
				}
				req.Release = v
			}
			if req.Type != "" {
				if err := grammar.CheckProcessType(req.Type); err != nil {
					return usagef(cmd, "bad --type %q: %s", req.Type, grammar.Reason(err))
				}
			}
			for _, kv := range cmd.StringSlice("env") {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return usagef(cmd, "bad -e %q: want KEY=VALUE", kv)
				}
				if err := grammar.CheckSettableConfigKey(k); err != nil {
					return usagef(cmd, "bad -e %q: %s", kv, grammar.Reason(err))
				}
				if err := grammar.CheckConfigValue(k, v); err != nil {
					return usagef(cmd, "bad -e %q: %s", kv, grammar.Reason(err))
				}
				req.Env = append(req.Env, kv)
			}
			var term *unix.Termios
			if !h.jsonMode() && !cmd.Bool("no-tty") {
				if t, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err == nil {
					term = t
					req.TTY = true
					if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
						req.Rows, req.Cols = int(ws.Row), int(ws.Col)
					}
					if t := os.Getenv("TERM"); t != "" && !hasKey(req.Env, "TERM") {
						req.Env = append(req.Env, "TERM="+t)
					}
				}
			}
			return h.runSession(ctx, app, req, term)
		},
	}
}

func hasKey(env []string, k string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			return true
		}
	}
	return false
}

// runStream is the current stream of a run, replaced when hctl
// re-attaches, and the input sent on it that the relay may not have
// received: a write to a connection that agentd's restart has just cut can
// succeed and still be lost.
type runStream struct {
	mu   sync.Mutex
	cur  *api.RunStream
	next chan struct{} // closed when cur is replaced

	sent   []byte // the input sent that the relay has not acknowledged, from offset base
	base   int64
	eof    bool // FrameEOF sent
	stderr io.Writer
	// room is signalled when acknowledgements make room in the input
	// window (api.InputWindow) or the session ends (ended).
	room  *sync.Cond
	ended bool
}

// end wakes a sender waiting for room: the session is over.
func (r *runStream) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = true
	r.room.Broadcast()
}

func (r *runStream) get() (*api.RunStream, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur, r.next
}

// set makes s the stream, after sending on it the input the relay says
// it has not received (its first frame, FrameInput).
func (r *runStream) set(s *api.RunStream) error {
	f, err := s.R.Read()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.Type == api.FrameInput {
		if n, eof, err := api.ParseInput(f.Data); err == nil {
			end := r.base + int64(len(r.sent))
			switch {
			case n < r.base:
				// Cannot be: the relay acknowledged more before.
				fmt.Fprintf(r.stderr, "hctl: %d bytes of input were lost while re-attaching\r\n", r.base-n)
				s.W.Write(api.FrameStdin, r.sent)
			case n < end:
				s.W.Write(api.FrameStdin, r.sent[n-r.base:])
			}
			if r.eof && !eof {
				s.W.Write(api.FrameEOF, nil)
			}
		}
	}
	r.cur = s
	close(r.next)
	r.next = make(chan struct{})
	return nil
}

// received trims the input kept to what the relay has not said it has.
func (r *runStream) received(data []byte) {
	n, _, err := api.ParseInput(data)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && n > r.base {
		cut := min(n-r.base, int64(len(r.sent)))
		r.sent, r.base = r.sent[cut:], r.base+cut
		r.room.Broadcast()
	}
}

// send writes a frame to the current stream, waiting for a re-attach when
// the connection was lost; it gives up when done closes.
func (r *runStream) send(typ byte, data []byte, done <-chan struct{}) {
	for {
		r.mu.Lock()
		// Flow control: no more than a window ahead of what the command
		// has taken, which is also all hctl keeps to send again.
		for typ == api.FrameStdin && len(r.sent) >= api.InputWindow && !r.ended {
			r.room.Wait()
		}
		if r.ended {
			r.mu.Unlock()
			return
		}
		s, next := r.cur, r.next
		// Kept and written under one lock: set's resend and this write
		// cannot pass each other.
		err := s.W.Write(typ, data)
		if err == nil {
			switch typ {
			case api.FrameStdin:
				r.sent = append(r.sent, data...)
			case api.FrameEOF:
				r.eof = true
			}
		}
		r.mu.Unlock()
		if err == nil {
			return
		}
		select {
		case <-next:
		case <-done:
			return
		}
	}
}

// runSession starts the run and relays it until its exit.
func (h *hctl) runSession(ctx context.Context, app string, req api.RunRequest, term *unix.Termios) error {
	c := h.client()
	// The stream outlives hctl's Ctrl-C context: with pipes, Ctrl-C is
	// passed to the command, which decides when to end.
	sctx := context.WithoutCancel(ctx)
	st, err := c.StartRun(sctx, app, req)
	if err != nil {
		return err
	}
	info := st.Info
	rs := &runStream{cur: st, next: make(chan struct{}), stderr: h.stderr}
	rs.room = sync.NewCond(&rs.mu)
	done := make(chan struct{})
	defer close(done)
	defer rs.end()

	if term != nil {
		raw := *term
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag &^= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(int(os.Stdin.Fd()), unix.TCSETS, &raw); err == nil {
			defer unix.IoctlSetTermios(int(os.Stdin.Fd()), unix.TCSETS, term)
		}
	}

	// Signals: with a pty, Ctrl-C is a byte like any other and the window
	// size follows the terminal; with pipes, hctl's own signals are passed on.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	go func() {
		for {
			select {
			case <-done:
				return
			case s := <-sigs:
				sig := s.(syscall.Signal)
				if sig == syscall.SIGWINCH {
					if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil && term != nil {
						rs.send(api.FrameResize, api.ResizeData(int(ws.Row), int(ws.Col)), done)
					}
					continue
				}
				rs.send(api.FrameSignal, []byte{byte(sig)}, done)
			}
		}
	}()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := os.Stdin.Read(buf)
			if n > 0 {
				rs.send(api.FrameStdin, append([]byte(nil), buf[:n]...), done)
			}
			if err != nil {
				rs.send(api.FrameEOF, nil, done)
				return
			}
		}
	}()

	var stdout, stderr io.Writer = h.stdout, h.stderr
	var outBuf, errBuf strings.Builder
	if h.jsonMode() {
		stdout, stderr = &outBuf, &errBuf
	}
	var out outputCursor
	st.W.Write(api.FrameOutputAck, api.OffsetData(0))
	for {
		s, _ := rs.get()
		f, err := s.R.Read()
		if err != nil {
			s.Close()
			deadline := time.Now().Add(reattachFor)
			for {
				ns, rerr := h.reattach(c, app, info.Process, deadline)
				if rerr != nil {
					return rerr
				}
				if rs.set(ns) == nil {
					break
				}
				ns.Close()
			}
			// What this hctl has: the relay sends again what the lost
			// connection may not have delivered.
			s, _ = rs.get()
			s.W.Write(api.FrameOutputAck, api.OffsetData(out.got))
			continue
		}
		switch f.Type {
		case api.FrameInput:
			rs.received(f.Data)
		case api.FrameOutputFrom:
			if lost := out.from(f.Data); lost > 0 {
				fmt.Fprintf(h.stderr, "hctl: %s: %d bytes of output were not kept while hctl was not connected (they are in the logs)\r\n", info.Process, lost)
			}
		case api.FrameStdout, api.FrameStderr:
			w := stdout
			if f.Type == api.FrameStderr {
				w = stderr
			}
			if data := out.take(f.Data); len(data) > 0 {
				w.Write(data)
				s.W.Write(api.FrameOutputAck, api.OffsetData(out.got))
			}
		case api.FrameNotice:
			fmt.Fprintf(h.stderr, "hctl: %s: %s\r\n", info.Process, f.Data)
		case api.FrameExit:
			var ex api.RunExit
			if err := json.Unmarshal(f.Data, &ex); err != nil {
				return fmt.Errorf("%s: bad exit frame: %w", info.Process, err)
			}
			s.W.Write(api.FrameAck, nil)
			s.Close()
			if h.jsonMode() {
				h.writeJSON(map[string]any{"app": app, "process": info.Process, "release": info.Release,
					"exit_code": ex.Code, "signal": ex.Signal, "stdout": outBuf.String(), "stderr": errBuf.String()})
			}
			if ex.Code != 0 {
				return &exitStatus{code: ex.Code}
			}
			return nil
		}
	}
}

// reattach finds the run again through agentd after the connection was
// lost, until deadline.
func (h *hctl) reattach(c *api.Client, app, process string, deadline time.Time) (*api.RunStream, error) {
	wait := 100 * time.Millisecond
	for {
		s, err := c.AttachRun(context.Background(), app, process)
		if err == nil {
			return s, nil
		}
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
			return nil, &opError{code: "run_lost", msg: fmt.Sprintf("%s ended while hctl was not connected (agentd restarted); its exit status is unknown: see hctl logs %s --process %s", process, app, process)}
		}
		if time.Now().After(deadline) {
			return nil, &opError{code: "run_lost", msg: fmt.Sprintf("lost the connection to agentd and could not re-attach to %s within %s: %v (it is hung up once agentd's relay stops waiting)", process, reattachFor, err)}
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}

// outputCursor is where hctl is in the run's output (FrameStdout and
// FrameStderr counted together): after a re-attach the relay sends again
// from the oldest output hctl had not acknowledged (FrameOutputFrom), and
// what hctl already wrote is skipped.
type outputCursor struct {
	got  int64 // bytes written out
	skip int64 // bytes of the output that follows already written
}

// from takes FrameOutputFrom; it returns the bytes of output lost (not
// kept by the relay) before the offset it names.
func (o *outputCursor) from(data []byte) (lost int64) {
	off, err := api.ParseOffset(data)
	if err != nil {
		return 0
	}
	if off > o.got {
		lost, o.got = off-o.got, off
	}
	o.skip = o.got - off
	return lost
}

// take returns the part of an output frame's data hctl does not have yet,
// counted as had.
func (o *outputCursor) take(data []byte) []byte {
	n := min(o.skip, int64(len(data)))
	o.skip -= n
	data = data[n:]
	o.got += int64(len(data))
	return data
}
