package relay

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/sockets"
)

// The test binary is the relay and the exec shim (helper-process pattern).
func TestMain(m *testing.M) {
	if sockets.IsShim(os.Args) {
		sockets.RunShim(os.Args)
		os.Exit(127)
	}
	if Is(os.Args) {
		os.Exit(Main(os.Args))
	}
	os.Exit(m.Run())
}

func TestArgsRoundTrip(t *testing.T) {
	o := Options{Sockets: 2, Names: []string{"web", "admin"}, TTY: true, Rows: 40, Cols: 100,
		Grace: 3 * time.Second, KillAfter: time.Second, Argv: []string{"sh", "-c", "exit 7", "--"}}
	args := Args("/x/agentd", o)
	if !Is(args) {
		t.Fatalf("Is(%q) = false", args)
	}
	got, err := parseArgs(args[2:])
	if err != nil {
		t.Fatal(err)
	}
	if got.Sockets != 2 || strings.Join(got.Names, ":") != "web:admin" || !got.TTY || got.Rows != 40 || got.Cols != 100 ||
		got.Grace != o.Grace || got.KillAfter != o.KillAfter || strings.Join(got.Argv, " ") != "sh -c exit 7 --" {
		t.Fatalf("parseArgs(Args(o)) = %+v, want %+v", got, o)
	}
	for _, bad := range [][]string{
		{"--sockets=1"}, // no command
		{"--sockets=x", "--", "true"},
		{"--sockets=2", "--names=web", "--", "true"},
		{"--tty=40", "--", "true"},
		{"--grace=forever", "--", "true"},
		{"--bogus", "--", "true"},
	} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("parseArgs(%q) accepted", bad)
		}
	}
}

// relayProc is a relay started by a test, as agentd starts one: its
// listening socket passed as fd 3.
type relayProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	path string
	done chan struct{}
}

func startRelay(t *testing.T, o Options) *relayProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args := Args(os.Args[0], o)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &relayProc{t: t, cmd: cmd, path: path, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	})
	return r
}

// wait returns the relay's exit status, failing after timeout.
func (r *relayProc) wait(timeout time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
		return r.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		r.t.Fatalf("the relay did not exit within %s", timeout)
		return -1
	}
}

type conn struct {
	t *testing.T
	c net.Conn
	r *api.FrameReader
	w *api.FrameWriter
	// seen is the output so far; pos is past the last match of until.
	seen string
	pos  int
}

func (r *relayProc) attach() *conn {
	r.t.Helper()
	c, err := net.Dial("unix", r.path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return &conn{t: r.t, c: c, r: api.NewFrameReader(c), w: api.NewFrameWriter(c)}
}

// until reads frames until the output since the last match holds want.
func (c *conn) until(want string) {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if i := strings.Index(c.seen[c.pos:], want); i >= 0 {
			c.pos += i + len(want)
			return
		}
		f, err := c.r.Read()
		if err != nil {
			c.t.Fatalf("waiting for %q, got %q: %v", want, c.seen[c.pos:], err)
		}
		if f.Type == api.FrameStdout || f.Type == api.FrameStderr {
			c.seen += string(f.Data)
		}
		if f.Type == api.FrameExit {
			c.t.Fatalf("waiting for %q, got %q and the exit %s", want, c.seen[c.pos:], f.Data)
		}
	}
}

// exit reads until the exit frame, acknowledges it, and returns it.
func (c *conn) exit() api.RunExit {
	c.t.Helper()
	f := c.skipTo(api.FrameExit, "the exit")
	var ex api.RunExit
	if err := json.Unmarshal(f.Data, &ex); err != nil {
		c.t.Fatal(err)
	}
	c.w.Write(api.FrameAck, nil)
	return ex
}

// skipTo reads frames until one of type typ and returns it; what names it
// for the failure.
func (c *conn) skipTo(typ byte, what string) api.Frame {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		f, err := c.r.Read()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if f.Type == typ {
			return f
		}
	}
}

// collect reads until the exit frame and returns the output by stream.
func (c *conn) collect() (stdout, stderr string, ex api.RunExit) {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var o, e strings.Builder
	for {
		f, err := c.r.Read()
		if err != nil {
			c.t.Fatalf("waiting for the exit: %v", err)
		}
		switch f.Type {
		case api.FrameStdout:
			o.Write(f.Data)
		case api.FrameStderr:
			e.Write(f.Data)
		case api.FrameExit:
			if err := json.Unmarshal(f.Data, &ex); err != nil {
				c.t.Fatal(err)
			}
			c.w.Write(api.FrameAck, nil)
			return o.String(), e.String(), ex
		}
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		code int
	}{{"exit 0", 0}, {"exit 7", 7}, {"kill -TERM $$", 128 + 15}} {
		r := startRelay(t, Options{Argv: []string{"sh", "-c", tc.cmd}})
		c := r.attach()
		if ex := c.exit(); ex.Code != tc.code {
			t.Errorf("%s: exit frame %+v, want code %d", tc.cmd, ex, tc.code)
		}
		if code := r.wait(10 * time.Second); code != tc.code {
			t.Errorf("%s: the relay exited %d, want %d", tc.cmd, code, tc.code)
		}
	}
}

func TestStdinAndStderr(t *testing.T) {
	r := startRelay(t, Options{Argv: []string{"sh", "-c", "cat; echo oops >&2; exit 3"}})
	c := r.attach()
	c.w.Write(api.FrameStdin, []byte("hello\n"))
	c.w.Write(api.FrameEOF, nil)
	// stdout and stderr are read apart: their order is not kept.
	stdout, stderr, ex := c.collect()
	if stdout != "hello\n" || stderr != "oops\n" || ex.Code != 3 {
		t.Fatalf("stdout %q, stderr %q, exit %+v; want hello, oops, 3", stdout, stderr, ex)
	}
}

// TestHangup: agentd's FrameHangup (the client went away) ends the command
// at once with SIGHUP; one that ignores SIGHUP is SIGKILLed KillAfter later.
func TestHangup(t *testing.T) {
	r := startRelay(t, Options{Argv: []string{"sh", "-c", "echo up; exec sleep 1000"}})
	c := r.attach()
	c.until("up")
	c.w.Write(api.FrameHangup, nil)
	if code := r.wait(10 * time.Second); code != 128+int(syscall.SIGHUP) {
		t.Fatalf("relay exited %d, want %d (SIGHUP)", code, 128+int(syscall.SIGHUP))
	}

	r = startRelay(t, Options{KillAfter: 200 * time.Millisecond, Argv: []string{"sh", "-c", "trap '' HUP; echo up; while :; do sleep 1; done"}})
	c = r.attach()
	c.until("up")
	c.w.Write(api.FrameHangup, nil)
	if code := r.wait(10 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("relay exited %d, want %d (SIGKILL)", code, 128+int(syscall.SIGKILL))
	}
}

// TestHangupWhileInputWaits: a command that never reads its stdin, with
// input waiting for it, is still hung up at once: input is queued, never
// written by the reader of the client's frames.
func TestHangupWhileInputWaits(t *testing.T) {
	r := startRelay(t, Options{Argv: []string{"sh", "-c", "echo up; exec sleep 1000"}})
	c := r.attach()
	c.until("up")
	// Far more than a pipe holds; written aside, so that a relay that
	// stops reading fails the test instead of blocking it.
	go func() {
		chunk := make([]byte, 64<<10)
		for range (2 << 20) / len(chunk) {
			c.w.Write(api.FrameStdin, chunk)
		}
		c.w.Write(api.FrameHangup, nil)
	}()
	if code := r.wait(10 * time.Second); code != 128+int(syscall.SIGHUP) {
		t.Fatalf("relay exited %d, want %d (SIGHUP)", code, 128+int(syscall.SIGHUP))
	}
}

// TestReattach: a connection that ends without FrameHangup (agentd
// restarting) leaves the command running; a new connection carries on
// where it was, with the output written meanwhile.
func TestReattach(t *testing.T) {
	r := startRelay(t, Options{Grace: time.Minute, Argv: []string{"sh", "-c", "echo a; read x; echo b $x; read y; echo c $y; exit 4"}})
	c := r.attach()
	c.until("a")
	// The relay's writes to this connection fail from here on (EPIPE), so
	// "b 1" cannot reach it: written to it before the Close below, under
	// load, it counted as this non-acknowledging client's, and was lost
	// with it (1 run in 40).
	c.c.(*net.UnixConn).CloseRead()
	c.w.Write(api.FrameStdin, []byte("1\n"))
	c.c.Close() // "b 1" is written while nobody is attached
	c = r.attach()
	c.until("b 1")
	if c.seen != "b 1\n" {
		t.Fatalf("a client that does not acknowledge output got %q on re-attaching, want only \"b 1\\n\"", c.seen)
	}
	c.w.Write(api.FrameStdin, []byte("2\n"))
	c.until("c 2")
	if ex := c.exit(); ex.Code != 4 {
		t.Fatalf("exit %+v, want 4", ex)
	}
	if code := r.wait(10 * time.Second); code != 4 {
		t.Fatalf("relay exited %d", code)
	}
}

// TestGraceExpires: with nobody re-attaching within the grace window, the
// command is hung up as if its client were gone.
func TestGraceExpires(t *testing.T) {
	r := startRelay(t, Options{Grace: 300 * time.Millisecond, Argv: []string{"sh", "-c", "echo up; exec sleep 1000"}})
	c := r.attach()
	c.until("up")
	c.c.Close()
	if code := r.wait(20 * time.Second); code != 128+int(syscall.SIGHUP) {
		t.Fatalf("relay exited %d, want %d (SIGHUP)", code, 128+int(syscall.SIGHUP))
	}
}

// TestPty: with a terminal, the command has a controlling tty of the size
// asked for, a resize reaches it, and ^C interrupts what runs in it.
func TestPty(t *testing.T) {
	r := startRelay(t, Options{TTY: true, Rows: 40, Cols: 100, Argv: []string{"sh", "-c", "stty size; read x; stty size; trap 'echo caught' INT; echo armed; while :; do sleep 0.1; done"}})
	c := r.attach()
	c.until("40 100")
	c.w.Write(api.FrameResize, api.ResizeData(50, 120))
	c.w.Write(api.FrameStdin, []byte("\r"))
	c.until("50 120")
	c.until("armed")
	c.w.Write(api.FrameStdin, []byte{3})
	c.until("caught")
	c.w.Write(api.FrameSignal, []byte{byte(syscall.SIGKILL)})
	if ex := c.exit(); ex.Code != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit %+v, want SIGKILL", ex)
	}
}

// TestReattachResendsUnacknowledged: output the relay wrote to a connection
// whose client never acknowledged it (an agentd killed between reading it
// and passing it on) is sent again on the next attach, from the offset the
// client acknowledged; what it acknowledged is not.
func TestReattachResendsUnacknowledged(t *testing.T) {
	r := startRelay(t, Options{Grace: time.Minute, Argv: []string{"sh", "-c", "echo a; read x; echo b $x; read y; echo c $y; exit 4"}})
	c := r.attach()
	c.w.Write(api.FrameOutputAck, api.OffsetData(0))
	c.until("a")
	c.w.Write(api.FrameStdin, []byte("1\n"))
	c.until("b 1") // read by "agentd", never passed on
	c.c.Close()

	c = r.attach()
	if off := c.from(); off != 0 {
		t.Fatalf("re-attached: output from offset %d, want 0 (nothing was acknowledged)", off)
	}
	c.w.Write(api.FrameOutputAck, api.OffsetData(0))
	c.until("b 1")
	if c.seen != "a\nb 1\n" {
		t.Fatalf("re-attached: output %q, want all of it again", c.seen)
	}
	c.w.Write(api.FrameOutputAck, api.OffsetData(2)) // has "a\n"
	c.c.Close()

	// The relay may see the new connection before that acknowledgement:
	// then it sends "a\n" again, from offset 0, and the client skips it.
	c = r.attach()
	off := c.from()
	if off != 0 && off != 2 {
		t.Fatalf("re-attached after an acknowledgement of 2 bytes: output from offset %d, want 2 (or 0)", off)
	}
	c.w.Write(api.FrameOutputAck, api.OffsetData(2))
	c.until("b 1")
	if got := c.seen[2-off:]; got != "b 1\n" {
		t.Fatalf("re-attached: output %q from offset %d, want \"b 1\\n\" past what the client had", c.seen, off)
	}
	c.w.Write(api.FrameStdin, []byte("2\n"))
	c.until("c 2")
	if ex := c.exit(); ex.Code != 4 {
		t.Fatalf("exit %+v, want 4", ex)
	}
	if code := r.wait(10 * time.Second); code != 4 {
		t.Fatalf("relay exited %d", code)
	}
}

// from reads the frames an attach starts with, through FrameOutputFrom,
// and returns its offset.
func (c *conn) from() int64 {
	c.t.Helper()
	off, err := api.ParseOffset(c.skipTo(api.FrameOutputFrom, "the output offset").Data)
	if err != nil {
		c.t.Fatal(err)
	}
	return off
}
