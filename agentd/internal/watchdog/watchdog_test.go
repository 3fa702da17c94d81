package watchdog

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// listen stands in for systemd: a datagram socket at NOTIFY_SOCKET.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestReady(t *testing.T) {
	c := listen(t)
	n := NewNotifier(true, quiet)
	n.Ready("2 apps", false)
	if got := recv(t, c); got != "READY=1\nSTATUS=2 apps" {
		t.Errorf("first start sent %q", got)
	}
	// A new agentd after an upgrade names itself the main process and
	// takes the watchdog over.
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "1")
	n.Ready("2 apps", true)
	pid := strconv.Itoa(os.Getpid())
	if got := recv(t, c); got != "MAINPID="+pid+"\nREADY=1\nSTATUS=2 apps" {
		t.Errorf("after an upgrade sent %q", got)
	}
	if got := os.Getenv("WATCHDOG_PID"); got != pid {
		t.Errorf("WATCHDOG_PID=%s, want %s", got, pid)
	}
}

func TestDisabledSendsNothing(t *testing.T) {
	c := listen(t)
	n := NewNotifier(false, quiet)
	n.Ready("x", false)
	n.Notify("STOPPING=1")
	n.Supervise(context.Background(), nil) // returns at once
	// Only what an enabled notifier sends now arrives.
	NewNotifier(true, quiet).Notify("MARK=1")
	if got := recv(t, c); got != "MARK=1" {
		t.Errorf("a disabled notifier sent %q", got)
	}
}

// fakeAgent counts pings and serves a status the test changes.
type fakeAgent struct {
	mu     sync.Mutex
	pings  int
	status string
}

func (a *fakeAgent) Ping() { a.mu.Lock(); a.pings++; a.mu.Unlock() }
func (a *fakeAgent) Summary() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

func TestSuperviseFeedsWatchdog(t *testing.T) {
	c := listen(t)
	t.Setenv("WATCHDOG_USEC", "20000") // 20 ms: fed every 10 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ag := &fakeAgent{status: "1 app"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { NewNotifier(true, quiet).Supervise(ctx, ag); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// The first tick sends the status with the keep-alive, later ones the
	// keep-alive alone until the status changes.
	if got := recv(t, c); got != "WATCHDOG=1\nSTATUS=1 app" {
		t.Errorf("first tick sent %q", got)
	}
	if got := recv(t, c); got != "WATCHDOG=1" {
		t.Errorf("second tick sent %q", got)
	}
	ag.mu.Lock()
	ag.status = "2 apps"
	ag.mu.Unlock()
	for {
		got := recv(t, c)
		if got == "WATCHDOG=1" {
			continue // a tick that ran before the change
		}
		if !strings.HasSuffix(got, "\nSTATUS=2 apps") {
			t.Errorf("after the change sent %q", got)
		}
		break
	}
	ag.mu.Lock()
	defer ag.mu.Unlock()
	if ag.pings < 3 {
		t.Errorf("%d pings for 3 keep-alives: the agent's locks are not checked each time", ag.pings)
	}
}
