package wsload

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const eventTimeout = 60 * time.Second

// wsappBin is examples/wsapp, built once by TestMain.
var wsappBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsload-test")
	if err != nil {
		panic(err)
	}
	wsappBin = filepath.Join(dir, "wsapp")
	build := exec.Command("go", "build", "-o", wsappBin, "github.com/agentd/agentd/examples/wsapp")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		panic("building examples/wsapp: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// listener is a loopback socket shared by the releases started on it, as
// agentd shares an app's socket.
type listener struct {
	f   *os.File
	url string
}

func newListener(t *testing.T) *listener {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &listener{f: f, url: "ws://" + l.Addr().String() + "/ws"}
}

// startRelease starts wsapp as release rel on l and waits for its READY=1.
func startRelease(t *testing.T, l *listener, rel string) *exec.Cmd {
	t.Helper()
	notifyPath := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0"`, wsappBin)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath, "LISTEN_FDS=1", "LISTEN_FDNAMES=web",
		"AGENTD_APP=demo", "AGENTD_RELEASE="+rel, "AGENTD_PROCESS=web.1")
	cmd.ExtraFiles = []*os.File{l.f}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	buf := make([]byte, 4096)
	for {
		_ = notify.SetReadDeadline(time.Now().Add(eventTimeout))
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("%s: waiting for READY=1: %v", rel, err)
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			return cmd
		}
	}
}

// raiseFDLimit lets this process hold n more connections.
func raiseFDLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n+256 {
		return
	}
	lim.Cur = min(lim.Max, n+256)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < n+256 {
		t.Skipf("cannot hold %d connections (RLIMIT_NOFILE %d): %v", n, lim.Cur, err)
	}
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(eventTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestThousandClients: 1,000 clients connect to one release, paced, and
// exchange messages until the run's duration is over.
func TestThousandClients(t *testing.T) {
	const n = 1000
	raiseFDLimit(t, n)
	l := newListener(t)
	startRelease(t, l, "v1")
	// The run's Duration bounds the dials too: under the race detector on
	// a loaded 2-core machine, 85 of 1,000 clients were still connecting
	// when a 6 s run ended. 16 s leaves every dial its whole DialTimeout.
	r, err := Start(context.Background(), Config{
		URL: l.url, Clients: n, Every: time.Second, Duration: 16 * time.Second, ConnectRate: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, r.Connected(), "every client to connect")
	wait(t, r.Done(), "the run to end") // its Duration: the exchange being measured
	res := r.Stop()
	if got := res.ByRelease(); got["v1"] != n || len(got) != 1 {
		t.Errorf("connections by release = %v, want %d on v1", got, n)
	}
	if got := res.ByHow(); got[Open] != n {
		t.Errorf("connections by end = %v, want all %d open until the end; dial errors %v", got, n, res.DialErrors)
	}
	// Every client whose connection was open for 3 s (of the run's 16 s)
	// had its messages echoed: how many is the machine's speed, not
	// what is tested.
	for _, c := range res.Conns {
		if c.ClosedAt.Sub(c.ConnectedAt) >= 3*time.Second && c.Messages == 0 {
			t.Errorf("client %d was connected for %s and exchanged no message", c.Client, c.ClosedAt.Sub(c.ConnectedAt))
			break
		}
	}
	t.Logf("%d clients, %d messages, %d dial failures", n, res.Messages(), res.DialFailed)
}

// TestReconnect: clients of v1 lose their connections when v1 dies, and
// reconnect to v2, which shares the socket; each close is recorded with
// how it ended.
func TestReconnect(t *testing.T) {
	const n = 200
	raiseFDLimit(t, n)
	l := newListener(t)
	v1 := startRelease(t, l, "v1")
	onV2 := make(chan struct{}, n)
	r, err := Start(context.Background(), Config{
		URL: l.url, Clients: n, Every: 100 * time.Millisecond, Reconnect: true, Duration: time.Minute,
		OnConnect: func(c Conn) {
			if c.Release == "v2" {
				onV2 <- struct{}{}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	wait(t, r.Connected(), "every client to connect")
	startRelease(t, l, "v2")
	if err := syscall.Kill(-v1.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(eventTimeout)
	for i := range n {
		select {
		case <-onV2:
		case <-deadline:
			t.Fatalf("%d of %d clients reconnected to v2", i, n)
		}
	}
	res := r.Stop()
	if got := res.ByRelease(); got["v1"] != n || got["v2"] != n {
		t.Errorf("connections by release = %v, want %d each", got, n)
	}
	for _, c := range res.Conns {
		switch c.Release {
		case "v1":
			if c.How != ClosedEOF && c.How != ClosedReset {
				t.Errorf("v1 connection ended %s (%v), want eof or reset", c.How, c.Err)
			}
			if c.Attempt != 0 {
				t.Errorf("v1 connection was attempt %d", c.Attempt)
			}
		case "v2":
			if c.How != Open || c.Attempt != 1 {
				t.Errorf("v2 connection: %s, attempt %d, want open, attempt 1", c.How, c.Attempt)
			}
		}
	}
	cl := res.Closes("v1")
	t.Logf("v1: %d closes over %v, peak %d/s; %v", cl.Count, cl.Spread, cl.PeakPerSecond, res.ByHow())
	if cl.Count != n {
		t.Errorf("v1 closes = %d, want %d", cl.Count, n)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "ws://10.0.0.1:80/ws", Clients: 1, Duration: time.Second},
		{URL: "ws://example.com/ws", Clients: 1, Duration: time.Second},
		{URL: "http://127.0.0.1/ws", Clients: 1, Duration: time.Second},
		{URL: "ws://127.0.0.1/ws", Clients: 0, Duration: time.Second},
		{URL: "ws://127.0.0.1/ws", Clients: MaxClients + 1, Duration: time.Second},
		{URL: "ws://127.0.0.1/ws", Clients: 1},
		{URL: "ws://127.0.0.1/ws", Clients: 1, Duration: time.Second, Every: -1},
	} {
		if r, err := Start(context.Background(), cfg); err == nil {
			r.Stop()
			t.Errorf("Start(%+v) accepted", cfg)
		}
	}
}

func TestCloses(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var res Result
	for i := range 30 {
		// 10 a second for the first second, then 1 a second.
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		if i >= 10 {
			at = t0.Add(time.Duration(i-9) * time.Second)
		}
		res.Conns = append(res.Conns, Conn{Release: "v1", ClosedAt: at, How: ClosedEOF})
	}
	res.Conns = append(res.Conns, Conn{Release: "v2", How: Open})
	c := res.Closes("v1")
	if c.Count != 30 || c.Spread != 20*time.Second || c.PeakPerSecond != 10 {
		t.Errorf("Closes = %+v", c)
	}
	if res.Closes("").Count != 30 || res.Closes("v2").Count != 0 {
		t.Error("Open connections counted as closes")
	}
}
