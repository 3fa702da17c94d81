package relay

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/sockets"
)

// maxBuffered bounds the output kept (outQueue); past it the oldest is
// dropped (it is in the log file) and the client told.
const maxBuffered = 1 << 20

// writeTimeout: a client that takes no output for this long is treated as
// gone away without a word (agentd stuck), as a closed connection is.
const writeTimeout = 30 * time.Second

// Main runs the relay with os.Args and returns its exit status: the
// command's (128+N when a signal N ended it), or 127 when it could not
// start. Its stdout and stderr are the run's log file.
func Main(args []string) int {
	// The command is forked from this thread with Pdeathsig: the signal
	// comes when the forking thread ends, so it must be one that never does.
	runtime.LockOSThread()
	o, err := parseArgs(args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentd relay:", err)
		return 127
	}
	lf := os.NewFile(uintptr(sockets.ListenFdsStart+o.Sockets), "relay")
	ln, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentd relay: its socket:", err)
		return 127
	}
	s, err := start(o, os.Environ(), os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentd relay:", err)
		return 127
	}
	return s.serve(ln)
}

// session is one command and its clients.
type session struct {
	o    Options
	pid  int // the command's; also its process group
	ptmx *os.File
	// in is the command's stdin: the pty or a pipe (nil once closed).
	in  *os.File
	log io.Writer

	// inBytes counts the input received, inEOF its end: told to every
	// client that attaches (FrameInput).
	inBytes atomic.Int64
	inEOF   atomic.Bool
	// inq is the input not yet written; inWritten counts what was.
	inq       *inputQueue
	inWritten atomic.Int64

	// acking: a client acknowledged output (api.FrameOutputAck): it is an
	// hctl that skips output it already has, and the same one re-attaches.
	acking atomic.Bool

	out    chan api.Frame // output read from the command
	outEnd chan struct{}  // closed when every output reader ended
	exited chan api.RunExit
}

// start starts the command through the exec shim (LISTEN_PID), in a
// session (pty) or process group (pipes) of its own, SIGKILLed should the
// relay die.
func start(o Options, env []string, log io.Writer) (*session, error) {
	s := &session{o: o, log: log, out: make(chan api.Frame, 64), outEnd: make(chan struct{}), exited: make(chan api.RunExit, 1),
		inq: newInputQueue()}
	var kept []string
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == "LISTEN_PID" || k == "LISTEN_FDS" || k == "LISTEN_FDNAMES" {
			continue
		}
		kept = append(kept, kv)
	}
	if o.Sockets > 0 {
		kept = append(kept, sockets.Env(o.Names)...)
	}
	var (
		stdio   [3]*os.File
		readers []*os.File
		tags    []byte
		closeIn []*os.File // the command's ends, closed after the fork
	)
	sys := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if o.TTY {
		ptmx, tty, err := pty.Open()
		if err != nil {
			return nil, fmt.Errorf("pty: %w", err)
		}
		if o.Rows > 0 && o.Cols > 0 {
			pty.Setsize(ptmx, &pty.Winsize{Rows: uint16(o.Rows), Cols: uint16(o.Cols)})
		}
		s.ptmx, s.in = ptmx, ptmx
		stdio = [3]*os.File{tty, tty, tty}
		readers, tags = []*os.File{ptmx}, []byte{api.FrameStdout}
		closeIn = []*os.File{tty}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		var pipes [3][2]*os.File
		for i := range pipes {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, fmt.Errorf("pipe: %w", err)
			}
			pipes[i] = [2]*os.File{r, w}
		}
		s.in = pipes[0][1]
		stdio = [3]*os.File{pipes[0][0], pipes[1][1], pipes[2][1]}
		readers, tags = []*os.File{pipes[1][0], pipes[2][0]}, []byte{api.FrameStdout, api.FrameStderr}
		closeIn = stdio[:]
		sys.Setpgid = true
	}
	fds := []uintptr{stdio[0].Fd(), stdio[1].Fd(), stdio[2].Fd()}
	for i := range o.Sockets {
		fds = append(fds, uintptr(sockets.ListenFdsStart+i))
	}
	exe := "/proc/self/exe"
	argv := append([]string{exe, sockets.ShimArg, "--"}, o.Argv...)
	pid, err := syscall.ForkExec(exe, argv, &syscall.ProcAttr{Env: kept, Files: fds, Sys: sys})
	for _, f := range closeIn {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("starting %q: %w", o.Argv, err)
	}
	s.pid = pid
	done := make(chan struct{}, len(readers))
	for i, r := range readers {
		go s.read(r, tags[i], done)
	}
	go func() {
		for range readers {
			<-done
		}
		close(s.outEnd)
	}()
	go s.wait()
	return s, nil
}

// read copies one output of the command to the log and to s.out.
func (s *session) read(r *os.File, tag byte, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.log.Write(buf[:n])
			s.out <- api.Frame{Type: tag, Data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			// EOF (pipes) or EIO (a pty whose last slave closed).
			return
		}
	}
}

// wait reaps the command; whatever it left in its group is killed first
// (the leader's zombie keeps the group ID from being reused meanwhile).
func (s *session) wait() {
	var info unix.Siginfo
	for unix.Waitid(unix.P_PID, s.pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
	}
	unix.Kill(-s.pid, unix.SIGKILL)
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(s.pid, &ws, 0, nil); err != unix.EINTR {
			break
		}
	}
	ex := api.RunExit{Code: ws.ExitStatus()}
	if ws.Signaled() {
		ex.Code = 128 + int(ws.Signal())
		ex.Signal = unix.SignalName(ws.Signal())
	}
	s.exited <- ex
}

// client is one attached connection.
type client struct {
	c net.Conn
	w *api.FrameWriter
}

// event is what a client's reader tells the loop.
type event struct {
	cl   *client
	kind byte  // FrameAck, FrameHangup, FrameOutputAck, or 0: the connection ended
	n    int64 // FrameOutputAck's offset
}

// serve runs the session until the command has exited and its exit was
// delivered (or nobody came for it within Grace), and returns its status.
func (s *session) serve(ln net.Listener) int {
	defer ln.Close()
	conns := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT)
	events := make(chan event, 4)
	written := make(chan struct{}, 1)
	go s.writeInput(written)
	defer s.inq.stop()

	var (
		cur      *client
		out      outQueue
		exit     *api.RunExit
		hungUp   bool
		outDone  = s.outEnd
		exited   = s.exited
		grace    = time.NewTimer(s.o.Grace) // none attached yet
		kill     <-chan time.Time
		finished = false
	)
	// drop ends the current client's connection; what it was sent but
	// did not acknowledge goes again to the next.
	drop := func() {
		out.lost(s.acking.Load())
		cur.c.Close()
		cur = nil
	}
	detach := func() {
		if cur != nil {
			drop()
		}
		grace.Reset(s.o.Grace)
	}
	// write sends the current client one frame.
	write := func(typ byte, data []byte) bool {
		if cur == nil {
			return false
		}
		cur.c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := cur.w.Write(typ, data); err != nil {
			detach()
			return false
		}
		return true
	}
	// flush sends the current client the output it was not sent.
	flush := func() {
		for f, ok := out.next(); ok && write(f.Type, f.Data); f, ok = out.next() {
			out.wrote()
		}
	}
	hangup := func() {
		if hungUp || exit != nil {
			return
		}
		hungUp = true
		fmt.Fprintf(s.log, "agentd relay: the client is gone: SIGHUP to the command, SIGKILL in %s\n", s.o.KillAfter)
		unix.Kill(-s.pid, unix.SIGHUP)
		unix.Kill(-s.pid, unix.SIGCONT)
		kill = time.After(s.o.KillAfter)
	}
	deliverExit := func() {
		if exit == nil || outDone != nil || cur == nil || finished {
			return
		}
		flush()
		b, _ := json.Marshal(exit)
		finished = write(api.FrameExit, b)
	}
	for {
		select {
		case c := <-conns:
			if cur != nil {
				// A new agentd re-attached; the old connection is stale.
				drop()
			}
			cur = &client{c: c, w: api.NewFrameWriter(c)}
			finished = false
			grace.Stop()
			go s.readClient(cur, events)
			write(api.FrameInput, api.InputData(s.inBytes.Load(), s.inEOF.Load()))
			write(api.FrameOutputFrom, api.OffsetData(out.off))
			// A client that acknowledges counts what it lacks itself.
			if out.dropped > 0 && !s.acking.Load() {
				write(api.FrameNotice, fmt.Appendf(nil, "%d bytes of output were not kept while detached (they are in the logs)", out.dropped))
				out.dropped = 0
			}
			flush()
			deliverExit()
		case f := <-s.out:
			out.push(f)
			flush()
		case <-written:
			// Input taken by the command: the client may send more.
			write(api.FrameInput, api.InputData(s.inWritten.Load(), false))
		case <-outDone:
			// Every reader put its last frame in s.out before it ended;
			// select may have picked this case first: they go before the exit.
			for drained := false; !drained; {
				select {
				case f := <-s.out:
					out.push(f)
				default:
					drained = true
				}
			}
			outDone = nil
			flush()
			deliverExit()
		case ex := <-exited:
			exited = nil
			ex.HungUp = hungUp
			exit = &ex
			kill = nil
			if hungUp {
				return ex.Code
			}
			// Output still buffered in a pty may never end (a child holding
			// it): it gets a moment, not forever.
			if outDone != nil {
				go func() {
					select {
					case <-s.outEnd:
					case <-time.After(2 * time.Second):
						if s.ptmx != nil {
							s.ptmx.Close()
						}
					}
				}()
			}
			deliverExit()
			if cur == nil {
				grace.Reset(s.o.Grace)
			}
		case ev := <-events:
			if ev.kind == api.FrameOutputAck {
				out.ack(ev.n)
				continue
			}
			if ev.cl != cur {
				continue
			}
			switch ev.kind {
			case api.FrameAck:
				if exit != nil {
					return exit.Code
				}
			case api.FrameHangup:
				cur.c.Close()
				cur = nil
				if exit != nil {
					return exit.Code
				}
				hangup()
			default:
				detach()
			}
		case <-grace.C:
			if cur != nil {
				continue
			}
			if exit != nil {
				return exit.Code
			}
			fmt.Fprintf(s.log, "agentd relay: no client re-attached within %s\n", s.o.Grace)
			hangup()
		case <-kill:
			kill = nil
			unix.Kill(-s.pid, unix.SIGKILL)
		case sig := <-sigs:
			// agentd stopping the run (a drain, the app destroyed): to the
			// command.
			unix.Kill(-s.pid, sig.(syscall.Signal))
		}
	}
}

// readClient handles a client's frames: input goes straight to the
// command; ack, hangup and the connection's end go to the loop.
func (s *session) readClient(cl *client, events chan<- event) {
	fr := api.NewFrameReader(cl.c)
	for {
		f, err := fr.Read()
		if err != nil {
			events <- event{cl: cl}
			return
		}
		switch f.Type {
		case api.FrameStdin:
			if s.inEOF.Load() {
				continue
			}
			if !s.inq.push(f.Data) {
				fmt.Fprintf(s.log, "agentd relay: the client sent more than %d bytes of input ahead of the command: cut off\n", maxQueued)
				cl.c.Close()
				events <- event{cl: cl}
				return
			}
			s.inBytes.Add(int64(len(f.Data)))
		case api.FrameEOF:
			if !s.inEOF.Swap(true) {
				s.inq.close()
			}
		case api.FrameResize:
			if rows, cols, err := api.ParseResize(f.Data); err == nil && s.ptmx != nil {
				pty.Setsize(s.ptmx, &pty.Winsize{Rows: uint16(rows), Cols: uint16(cols)})
			}
		case api.FrameSignal:
			if len(f.Data) == 1 && allowedSignal(syscall.Signal(f.Data[0])) {
				unix.Kill(-s.pid, syscall.Signal(f.Data[0]))
			}
		case api.FrameOutputAck:
			// Set here, not by the loop: before anything this client sends
			// next has an effect, such as input whose output ends up in
			// flight when its connection is lost.
			s.acking.Store(true)
			if n, err := api.ParseOffset(f.Data); err == nil {
				events <- event{cl: cl, kind: f.Type, n: n}
			}
		case api.FrameAck, api.FrameHangup:
			events <- event{cl: cl, kind: f.Type}
			if f.Type == api.FrameHangup {
				return
			}
		}
	}
}

// allowedSignal: what a client may send the command.
func allowedSignal(sig syscall.Signal) bool {
	switch sig {
	case unix.SIGINT, unix.SIGTERM, unix.SIGQUIT, unix.SIGHUP, unix.SIGKILL, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGTSTP, unix.SIGCONT:
		return true
	}
	return false
}

// ExitName says how a relay's command ended from the relay's own exit
// status, for the log.
func ExitName(code int) string {
	if code > 128 && code < 128+65 {
		return "killed by " + unix.SignalName(syscall.Signal(code-128))
	}
	return "exited with status " + strconv.Itoa(code)
}
