package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// wait is only a failure bound: tests synchronise on channels.
const wait = 10 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	// Every Socket a test opened has been closed by now, and Close waits for
	// the reader: none may be left.
	buf := make([]byte, 1<<20)
	if st := string(buf[:runtime.Stack(buf, true)]); strings.Contains(st, "notify.(*Socket).run") {
		fmt.Fprintf(os.Stderr, "leaked reader goroutine:\n%s\n", st)
		code = 1
	}
	os.Exit(code)
}

func listen(t *testing.T) *Socket {
	t.Helper()
	s, err := Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *net.UnixConn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, s *Socket) Message {
	t.Helper()
	select {
	case m, ok := <-s.C():
		if !ok {
			t.Fatal("C closed")
		}
		return m
	case <-time.After(wait):
		t.Fatal("no message")
	}
	panic("unreachable")
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestListenDelivers(t *testing.T) {
	s := listen(t)
	c := dial(t, s.Path())
	if closed(s.Ready()) {
		t.Fatal("ready before READY=1")
	}
	send(t, c, "READY=1\nSTATUS=serving\nMAINPID=4242\nX_APP=v=1")
	m := recv(t, s)
	if !m.Ready || m.Status != "serving" || m.MainPID != 4242 || m.Fields["X_APP"] != "v=1" {
		t.Errorf("message %+v", m)
	}
	// The kernel fills in the credentials of the sending process: us.
	if m.SenderPID != os.Getpid() {
		t.Errorf("SenderPID = %d, want %d", m.SenderPID, os.Getpid())
	}
	if !closed(s.Ready()) {
		t.Error("Ready not closed after the READY=1 message was delivered")
	}
	if s.Status() != "serving" {
		t.Errorf("Status = %q", s.Status())
	}
	if s.Dropped() != 0 || s.Err() != nil {
		t.Errorf("Dropped = %d, Err = %v", s.Dropped(), s.Err())
	}
}

func TestLifecycleMessages(t *testing.T) {
	s := listen(t)
	c := dial(t, s.Path())

	send(t, c, "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=migrating")
	if m := recv(t, s); m.ExtendTimeout != 30*time.Second || m.Ready {
		t.Errorf("extend: %+v", m)
	}
	if s.Status() != "migrating" || closed(s.Ready()) {
		t.Errorf("status %q ready %v", s.Status(), closed(s.Ready()))
	}

	send(t, c, "READY=1\nMAINPID=77")
	if m := recv(t, s); !m.Ready || m.MainPID != 77 {
		t.Errorf("ready: %+v", m)
	}

	send(t, c, "WATCHDOG=1")
	if m := recv(t, s); !m.Watchdog {
		t.Errorf("watchdog: %+v", m)
	}
	// A message without STATUS= leaves the last status in place.
	if s.Status() != "migrating" {
		t.Errorf("status %q after a message without STATUS", s.Status())
	}

	send(t, c, "ERRNO=5\nSTATUS=")
	if m := recv(t, s); m.Errno != 5 {
		t.Errorf("errno: %+v", m)
	}
	if s.Status() != "" {
		t.Errorf("empty STATUS= did not clear: %q", s.Status())
	}

	if closed(s.Stopping()) {
		t.Fatal("stopping too early")
	}
	send(t, c, "STOPPING=1\nSTATUS=draining")
	if m := recv(t, s); !m.Stopping {
		t.Errorf("stopping: %+v", m)
	}
	if !closed(s.Stopping()) || s.Status() != "draining" {
		t.Errorf("stopping %v status %q", closed(s.Stopping()), s.Status())
	}
}

// TestBarrierClosesFDs is the barrier protocol without systemd-notify: the
// sender passes a pipe's write end and waits for EOF on the read end, which
// comes only once every copy of the write end, ours included, is closed.
func TestBarrierClosesFDs(t *testing.T) {
	s := listen(t)
	c := dial(t, s.Path())
	send(t, c, "READY=1\nSTATUS=up")

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Also pass a second fd to check that every received fd is closed.
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	// Sent the way sd_notify does it: sendmsg on an unconnected socket
	// (Go refuses WriteMsgUnix on a connected datagram socket).
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	rights := unix.UnixRights(int(w.Fd()), int(w2.Fd()))
	if err := unix.Sendmsg(fd, []byte("BARRIER=1"), rights, &unix.SockaddrUnix{Name: s.Path()}, 0); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w2.Close()

	for _, p := range []*os.File{r, r2} {
		if err := p.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		if n, err := p.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("read = %d, %v; want EOF (receiver kept the fd)", n, err)
		}
	}
	// The barrier's promise: what was sent before it has been processed.
	if !closed(s.Ready()) || s.Status() != "up" {
		t.Errorf("after the barrier: ready %v status %q", closed(s.Ready()), s.Status())
	}
	recv(t, s) // READY=1
	if m := recv(t, s); !m.Barrier {
		t.Errorf("barrier message %+v", m)
	}
}

func TestOversizedAndInvalidDropped(t *testing.T) {
	s := listen(t)
	c := dial(t, s.Path())
	send(t, c, "READY=1\n"+strings.Repeat("X", MaxMessageSize)) // truncated: dropped whole
	send(t, c, "READY=1\x00")                                   // NUL: dropped
	send(t, c, "SYNC=1")
	if m := recv(t, s); m.Fields["SYNC"] != "1" {
		t.Fatalf("got %+v", m)
	}
	if s.Dropped() != 2 || closed(s.Ready()) {
		t.Errorf("Dropped = %d, ready %v", s.Dropped(), closed(s.Ready()))
	}
}

func systemdNotify(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-notify")
	if err != nil {
		t.Skip("systemd-notify not installed")
	}
	return p
}

// runNotify runs a command with NOTIFY_SOCKET set and requires it to exit 0
// well within systemd-notify's 5 s barrier timeout: if the receiver kept the
// barrier fd, the command would hang for 5 s and be killed at 4.
func runNotify(t *testing.T, socket string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+socket)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not exit within 4s (barrier fd not closed?): %v %s", name, err, out)
	}
	if err != nil {
		t.Fatalf("%s: %v: %s", name, err, out)
	}
	t.Logf("%s %v exited 0 in %v", name, args, time.Since(start).Round(time.Millisecond))
}

func TestSystemdNotify(t *testing.T) {
	bin := systemdNotify(t)
	s := listen(t)
	runNotify(t, s.Path(), bin, "--ready", "--status=booted")
	// systemd-notify returned, so its barrier was answered, so the READY=1
	// sent before it has already been processed: no waiting needed.
	if !closed(s.Ready()) {
		t.Error("Ready not closed when systemd-notify returned")
	}
	if s.Status() != "booted" {
		t.Errorf("Status = %q", s.Status())
	}
	m := recv(t, s)
	if !m.Ready || m.Status != "booted" {
		t.Errorf("message %+v", m)
	}
	// systemd-notify reports its parent's PID (here the test process, when
	// allowed to fake credentials) or its own: never a reliable identity,
	// which is why each process gets a socket of its own.
	t.Logf("SenderPID = %d (test pid %d)", m.SenderPID, os.Getpid())
	if m.SenderPID == 0 {
		t.Error("no SCM_CREDENTIALS")
	}
	if b := recv(t, s); !b.Barrier {
		t.Errorf("expected the barrier message, got %+v", b)
	}
}

func TestSystemdNotifyFromChildOfShell(t *testing.T) {
	bin := systemdNotify(t)
	s := listen(t)
	// The trailing command stops sh from exec'ing systemd-notify in place,
	// so it really runs as a grandchild.
	runNotify(t, s.Path(), "sh", "-c", `"$0" --ready --status=from-child; st=$?; exit $st`, bin)
	if !closed(s.Ready()) || s.Status() != "from-child" {
		t.Errorf("ready %v status %q", closed(s.Ready()), s.Status())
	}
	m := recv(t, s)
	if m.SenderPID == os.Getpid() || m.SenderPID == 0 {
		t.Errorf("SenderPID = %d: expected the shell or systemd-notify", m.SenderPID)
	}
	t.Logf("SenderPID = %d (test pid %d): the socket, not the PID, identifies the app", m.SenderPID, os.Getpid())
}

func TestSystemdNotifyAbstract(t *testing.T) {
	bin := systemdNotify(t)
	name := fmt.Sprintf("@agentd-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	s, err := Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Path() != name {
		t.Errorf("Path = %q", s.Path())
	}
	runNotify(t, name, bin, "--ready", "--status=abstract")
	if !closed(s.Ready()) || s.Status() != "abstract" {
		t.Errorf("ready %v status %q", closed(s.Ready()), s.Status())
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// TestFlood: a process that floods its socket costs a bounded amount of
// memory, excess ordinary messages are dropped and counted, and a READY=1
// sent last still arrives, on C and on Ready.
func TestFlood(t *testing.T) {
	const n = 100_000
	s := listen(t)
	c := dial(t, s.Path())

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	sent := make(chan error, 1)
	go func() {
		msg := []byte("WATCHDOG=1\nSTATUS=" + strings.Repeat("x", 200))
		for range n {
			if _, err := c.Write(msg); err != nil {
				sent <- err
				return
			}
		}
		_, err := c.Write([]byte("READY=1\nSTATUS=flood-done"))
		sent <- err
	}()
	// Nobody reads C during the flood: the worst case for the queue.
	select {
	case err := <-sent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("flood sender stuck")
	}
	select {
	case <-s.Ready():
	case <-time.After(wait):
		t.Fatal("READY=1 sent after the flood was lost")
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 8<<20 {
		t.Errorf("heap grew by %d bytes during the flood", grow)
	}
	if l := len(s.C()); l > queueLen {
		t.Errorf("len(C) = %d > %d", l, queueLen)
	}
	if s.Status() != "flood-done" {
		t.Errorf("Status = %q", s.Status())
	}

	// Close to end C, then drain it: the last message must be the READY=1.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var got []Message
	for m := range s.C() {
		got = append(got, m)
	}
	if len(got) == 0 || !got[len(got)-1].Ready {
		t.Fatalf("READY=1 not the last of %d queued messages", len(got))
	}
	if total := uint64(len(got)) + s.Dropped(); total != n+1 {
		t.Errorf("delivered %d + dropped %d = %d, want %d", len(got), s.Dropped(), total, n+1)
	}
	t.Logf("queued %d, dropped %d, heap %+d bytes", len(got), s.Dropped(), int64(after.HeapAlloc)-int64(before.HeapAlloc))
}

// TestOverflowPolicy exercises push directly with a consumer that never reads.
func TestOverflowPolicy(t *testing.T) {
	newQ := func() *Socket { return &Socket{c: make(chan Message, queueLen)} }
	drain := func(s *Socket) []Message {
		var out []Message
		for len(s.c) > 0 {
			out = append(out, <-s.c)
		}
		return out
	}
	status := func(st string) Message { return Message{Status: st} }

	t.Run("important kept, oldest ordinary dropped", func(t *testing.T) {
		s := newQ()
		s.push(Message{Ready: true, Status: "ready"})
		for i := range 1000 {
			s.push(status(fmt.Sprint(i)))
		}
		q := drain(s)
		if len(q) != queueLen || !q[0].Ready {
			t.Fatalf("len %d, head %+v", len(q), q[0])
		}
		// The newest ordinary messages survive.
		if q[len(q)-1].Status != "999" || q[1].Status != fmt.Sprint(1000-queueLen+1) {
			t.Errorf("kept %q..%q", q[1].Status, q[len(q)-1].Status)
		}
		if s.Dropped() != 1000+1-queueLen {
			t.Errorf("Dropped = %d", s.Dropped())
		}
	})

	t.Run("all important: ordinary newcomer dropped, each kind's latest kept", func(t *testing.T) {
		s := newQ()
		s.push(Message{Stopping: true, Status: "stop"})
		for i := range 1000 {
			s.push(Message{Ready: true, Status: fmt.Sprint("r", i)})
		}
		s.push(status("ordinary"))
		q := drain(s)
		var stop, lastReady bool
		for _, m := range q {
			stop = stop || m.Stopping
			lastReady = lastReady || m.Status == "r999"
			if m.Status == "ordinary" {
				t.Error("ordinary message displaced an important one")
			}
		}
		if len(q) != queueLen || !stop || !lastReady {
			t.Errorf("len %d, stopping kept %v, last ready kept %v", len(q), stop, lastReady)
		}
	})
}

func TestCloseIdempotentUnlinks(t *testing.T) {
	s := listen(t)
	if _, err := os.Stat(s.Path()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file still there: %v", err)
	}
	if _, ok := <-s.C(); ok {
		t.Error("C not closed")
	}
	if closed(s.Ready()) || s.Err() != nil {
		t.Errorf("ready %v err %v", closed(s.Ready()), s.Err())
	}
}

func TestCloseLeavesNewerSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.sock")
	a, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := Listen(path); err == nil {
		t.Fatal("Listen took over a live socket")
	}
	// Someone removes a's file and binds a new socket at the same path.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	b, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("closing the old socket removed the new one's file: %v", err)
	}
	send(t, dial(t, path), "READY=1")
	<-b.Ready()
}

func TestListenPaths(t *testing.T) {
	dir := t.TempDir()

	t.Run("mode 0666 despite umask", func(t *testing.T) {
		old := unix.Umask(0o077)
		s, err := Listen(filepath.Join(dir, "mode.sock"))
		unix.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		fi, err := os.Lstat(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o666 {
			t.Errorf("mode %v", fi.Mode())
		}
	})

	t.Run("stale socket removed", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		old, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		old.Close() // a unixgram socket leaves its file behind
		if _, err := os.Lstat(path); err != nil {
			t.Fatal(err)
		}
		s, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		send(t, dial(t, path), "READY=1")
		<-s.Ready()
	})

	t.Run("regular file not removed", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := Listen(path); err == nil {
			s.Close()
			t.Fatal("Listen replaced a regular file")
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
			t.Errorf("file damaged: %q %v", b, err)
		}
	})

	t.Run("too long", func(t *testing.T) {
		long := filepath.Join(dir, strings.Repeat("a", 108))
		_, err := Listen(long)
		if !errors.Is(err, ErrPathTooLong) {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
		if _, err := Listen("@" + strings.Repeat("a", 107)); !errors.Is(err, ErrPathTooLong) {
			t.Errorf("abstract: err = %v", err)
		}
	})

	t.Run("exactly 107 bytes", func(t *testing.T) {
		p := dir + "/"
		p += strings.Repeat("b", maxPathLen-len(p))
		if len(p) != maxPathLen {
			t.Skipf("temp dir too long: %s", dir)
		}
		s, err := Listen(p)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		send(t, dial(t, p), "READY=1")
		<-s.Ready()
	})

	t.Run("empty", func(t *testing.T) {
		if _, err := Listen(""); err == nil {
			t.Error("empty path accepted")
		}
	})
}

// TestTriggerThroughFlood: WATCHDOG=trigger (the process says it is
// broken) sent amid a flood of other messages that nobody reads still
// reaches agentd.
func TestTriggerThroughFlood(t *testing.T) {
	s := listen(t)
	c := dial(t, s.Path())
	for i := range 5000 {
		if i == 2500 {
			send(t, c, "WATCHDOG=trigger")
			continue
		}
		send(t, c, fmt.Sprintf("STATUS=%d", i))
	}
	select {
	case <-s.Triggered():
	case <-time.After(wait):
		t.Fatal("WATCHDOG=trigger lost in the flood")
	}
}

// ListenFunc hands every message to its function, in order, on the
// reader, after the sticky state took it in; C carries nothing and is
// closed at Close.
func TestListenFunc(t *testing.T) {
	got := make(chan Message, 8)
	var sp atomic.Pointer[Socket]
	var stickyFirst []bool // read after got delivered them
	s, err := ListenFunc(filepath.Join(t.TempDir(), "notify.sock"), func(m Message) {
		if m.Ready {
			stickyFirst = append(stickyFirst, closed(sp.Load().Ready()))
		}
		got <- m
	})
	if err != nil {
		t.Fatal(err)
	}
	sp.Store(s)
	c := dial(t, s.Path())
	for _, msg := range []string{"STATUS=booting", "READY=1\nSTATUS=up", "WATCHDOG=trigger"} {
		send(t, c, msg)
	}
	var seen []string
	for range 3 {
		select {
		case m := <-got:
			switch {
			case m.Ready:
				seen = append(seen, "ready "+m.Status)
			case m.WatchdogTrigger:
				seen = append(seen, "trigger")
			default:
				seen = append(seen, m.Status)
			}
		case <-time.After(wait):
			t.Fatalf("got %v, then nothing", seen)
		}
	}
	if want := []string{"booting", "ready up", "trigger"}; !slices.Equal(seen, want) {
		t.Errorf("messages %v, want %v in order", seen, want)
	}
	if len(stickyFirst) != 1 || !stickyFirst[0] {
		t.Errorf("Ready() closed when fn saw READY=1: %v, want true", stickyFirst)
	}
	if !closed(s.Triggered()) || s.Status() != "up" {
		t.Errorf("sticky state: triggered %v, status %q", closed(s.Triggered()), s.Status())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-s.C(); ok {
		t.Error("C carried a message")
	}
	if _, err := ListenFunc(filepath.Join(t.TempDir(), "x.sock"), nil); err == nil {
		t.Error("ListenFunc without a function: no error")
	}
}
