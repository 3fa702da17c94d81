package shed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/internal/conns"
)

const eventTimeout = 20 * time.Second

// TestMain turns the test binary into the server process when asked: it
// accepts from fd 3, writes $SHED_TEST_GREETING to each connection, and
// reads each until it fails, then closes it. It reports on stdout
// "accepted" per connection and "eof" or "error" when a read ends, and
// exits when its stdin closes.
func TestMain(m *testing.M) {
	if os.Getenv("SHED_TEST_SERVER") == "1" {
		serve()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func serve() {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	out := make(chan string, 16)
	go func() {
		for line := range out {
			fmt.Println(line)
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			out <- "accepted"
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, os.Getenv("SHED_TEST_GREETING"))
				_, err := io.Copy(io.Discard, c)
				if err != nil {
					out <- "error " + err.Error()
				} else {
					out <- "eof"
				}
			}()
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
}

type server struct {
	cmd   *exec.Cmd
	lines *bufio.Scanner
	ls    []conns.Listener
	addr  string
}

// startServer starts the server process in its own process group, on a
// loopback listener only it holds.
func startServer(t *testing.T, greeting string) *server {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String(),
		ls: []conns.Listener{{Network: "tcp", Port: ln.Addr().(*net.TCPAddr).Port}}}
	s.cmd = exec.Command(self)
	s.cmd.Env = append(os.Environ(), "SHED_TEST_SERVER=1", "SHED_TEST_GREETING="+greeting)
	s.cmd.ExtraFiles = []*os.File{f}
	s.cmd.Stderr = os.Stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := s.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	})
	s.lines = bufio.NewScanner(stdout)
	return s
}

// expect reads n lines from the server and fails unless each starts with
// prefix.
func (s *server) expect(t *testing.T, n int, prefix string) {
	t.Helper()
	for i := range n {
		if !s.lines.Scan() {
			t.Fatalf("server line %d of %d: %v", i+1, n, s.lines.Err())
		}
		if l := s.lines.Text(); !strings.HasPrefix(l, prefix) {
			t.Fatalf("server said %q, want %q", l, prefix)
		}
	}
}

// dial opens n connections to s and waits until s has accepted them all.
func (s *server) dial(t *testing.T, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	s.expect(t, n, "accepted")
	return cs
}

func (s *server) targets(t *testing.T) []Target {
	t.Helper()
	list, err := conns.List(s.ls, []int{s.cmd.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	var ts []Target
	for _, c := range list {
		ts = append(ts, Target{PID: c.PID, FD: c.FD, Inode: c.Inode})
	}
	return ts
}

// closed is what a client saw when its read ended.
type closed struct {
	at   time.Time
	data string
	err  error // nil: a clean end-of-file
}

// watch reads c until it ends, in the background.
func watch(c net.Conn) <-chan closed {
	ch := make(chan closed, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(eventTimeout))
		b, err := io.ReadAll(c)
		ch <- closed{at: time.Now(), data: string(b), err: err}
	}()
	return ch
}

// TestShed200: a server process holding 200 client connections; shedding
// them at 100/s, the clients see a clean end-of-file each, spread over
// about 2 s, never more than about 100 in any second; the server sees
// each read end too.
func TestShed200(t *testing.T) {
	const n, rate = 200, 100.0
	s := startServer(t, "")
	clients := s.dial(t, n)
	ts := s.targets(t)
	if len(ts) != n {
		t.Fatalf("conns.List found %d connections, want %d", len(ts), n)
	}
	var seen []<-chan closed
	for _, c := range clients {
		seen = append(seen, watch(c))
	}
	r := Shed(context.Background(), ts, rate, Close)
	if r.Closed != n || r.Err != nil || len(r.Failed) > 0 || len(r.Left) > 0 {
		t.Fatalf("Shed = %+v", r)
	}
	var times []time.Time
	for i, ch := range seen {
		c := <-ch
		if c.err != nil {
			t.Errorf("client %d: %v, want a clean end-of-file", i, c.err)
		}
		times = append(times, c.at)
	}
	s.expect(t, n, "eof")
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	spread := times[n-1].Sub(times[0])
	peak := peakPerSecond(times)
	t.Logf("%d closes over %v, peak %d in a second (shed took %v)", n, spread, peak, r.End.Sub(r.Start))
	if spread < 1900*time.Millisecond {
		t.Errorf("closes spread over %v, want ≥ 1.9s", spread)
	}
	// The rate is the pacing's over the whole run; a client's goroutine
	// that the machine starved sees closes bunched (the peak of one
	// second), so the peak only has to show no herd.
	if avg := float64(n-1) / spread.Seconds(); avg > rate*1.2 || avg < rate*0.8 || float64(peak) > 2*rate {
		t.Errorf("%.0f closes a second on average, peak %d; want the average within 20%% of %v and no burst", avg, peak, rate)
	}
	if left := s.targets(t); len(left) != 0 {
		t.Errorf("after shedding the server still holds %d connections", len(left))
	}
}

// peakPerSecond is the most times (sorted) within any one-second window.
func peakPerSecond(times []time.Time) int {
	peak, j := 0, 0
	for i := range times {
		for times[i].Sub(times[j]) >= time.Second {
			j++
		}
		peak = max(peak, i-j+1)
	}
	return peak
}

// TestShutdownModes is the test behind Close's SHUT_RDWR. Both modes
// deliver the data the server queued, then a clean end-of-file, to the
// client; only with SHUT_RDWR does the server's own read end at once,
// without waiting for the client to close its side.
func TestShutdownModes(t *testing.T) {
	for _, mode := range []struct {
		name string
		how  int
	}{{"SHUT_WR", unix.SHUT_WR}, {"SHUT_RDWR", unix.SHUT_RDWR}} {
		t.Run(mode.name, func(t *testing.T) {
			greeting := strings.Repeat("queued ", 10000) // more than one segment
			s := startServer(t, greeting)
			c := s.dial(t, 1)[0]
			ts := s.targets(t)
			if len(ts) != 1 {
				t.Fatalf("targets %v", ts)
			}
			// Nothing read yet: the greeting waits in the socket buffers.
			if err := closeHow(ts[0], mode.how); err != nil {
				t.Fatal(err)
			}
			got := <-watch(c)
			if got.err != nil || got.data != greeting {
				t.Errorf("client read %d bytes, %v; want the %d queued, then EOF", len(got.data), got.err, len(greeting))
			}
			if mode.how == unix.SHUT_WR {
				// The server's read is still waiting: the client's close ends it.
				c.Close()
			}
			s.expect(t, 1, "eof")
		})
	}
}

func TestCloseGone(t *testing.T) {
	s := startServer(t, "")
	s.dial(t, 1)
	ts := s.targets(t)
	if len(ts) != 1 {
		t.Fatalf("targets %v", ts)
	}
	for name, tg := range map[string]Target{
		"fd closed":    {PID: ts[0].PID, FD: 1000},
		"other file":   {PID: ts[0].PID, FD: 0, Inode: ts[0].Inode}, // stdin, a pipe
		"other socket": {PID: ts[0].PID, FD: ts[0].FD, Inode: ts[0].Inode + 1},
		"process gone": {PID: 1 << 22, FD: 3},
	} {
		if err := Close(tg); !errors.Is(err, ErrGone) {
			t.Errorf("%s: Close(%v) = %v, want ErrGone", name, tg, err)
		}
	}
	// Untouched by all that: it is still open.
	if left := s.targets(t); len(left) != 1 {
		t.Errorf("still open: %v", left)
	}
}

// TestCloseUnsupported: a refused pidfd_getfd (here: a process this one
// may not trace, as an unprivileged user) is ErrUnsupported.
func TestCloseUnsupported(t *testing.T) {
	if err := classify(unix.EPERM); !errors.Is(err, ErrUnsupported) || !errors.Is(err, unix.EPERM) {
		t.Errorf("classify(EPERM) = %v", err)
	}
	if err := classify(unix.ENOSYS); !errors.Is(err, ErrUnsupported) {
		t.Errorf("classify(ENOSYS) = %v", err)
	}
	if os.Getuid() == 0 {
		return // root may take anyone's fds
	}
	if err := Close(Target{PID: 1, FD: 0}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Close of pid 1's fd as uid %d = %v, want ErrUnsupported", os.Getuid(), err)
	}
}

// TestCloseUnix: a unix stream connection is shut down the same way; both
// ends read end-of-file.
func TestCloseUnix(t *testing.T) {
	path := t.TempDir() + "/sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	list, err := conns.List([]conns.Listener{{Network: "unix", Path: path}}, []int{syscall.Getpgrp()})
	if err != nil || len(list) != 1 {
		t.Fatalf("conns.List = %v, %v", list, err)
	}
	if err := Close(Target{PID: list[0].PID, FD: list[0].FD, Inode: list[0].Inode}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		if got := <-watch(c); got.err != nil || got.data != "" {
			t.Errorf("%s read %q, %v after the shutdown; want end-of-file", name, got.data, got.err)
		}
	}
}
