package upgrade

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// freezer hands over one file and records what the upgrade did with it.
type freezer struct {
	u    *Upgrader
	file *os.File
	mu   sync.Mutex
	// froze is sent each Freeze, with whether Ready had been called.
	froze  chan bool
	thawed int
}

func (f *freezer) Freeze() (map[string]*os.File, func()) {
	ready := false
	select {
	case <-f.u.ready:
		ready = true
	default:
	}
	f.froze <- ready
	return map[string]*os.File{"app.web": f.file}, func() {
		f.mu.Lock()
		f.thawed++
		f.mu.Unlock()
	}
}

var ranOnce bool

// One tableflip per process: one test. No upgrade here gets as far as
// starting a new process (that is internal/e2e's TestSelfUpgradeUnderLoad):
// the file handed over is closed, so passing it fails, which is the path
// where this agentd must carry on as if nothing happened.
func TestFailedUpgradeCarriesOn(t *testing.T) {
	if ranOnce {
		t.Skip("tableflip allows one Upgrader per process: this runs once per test binary (-count=1)")
	}
	ranOnce = true
	var mu sync.Mutex
	var sent []string
	u, err := New("", slog.New(slog.NewTextHandler(io.Discard, nil)), func(s string) {
		mu.Lock()
		sent = append(sent, s)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Stop)
	closed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	f := &freezer{u: u, file: closed, froze: make(chan bool, 2)}

	err = u.Upgrade(f)
	if err == nil || !strings.Contains(err.Error(), "passing socket app.web") {
		t.Fatalf("Upgrade with a closed socket: %v", err)
	}
	<-f.froze
	mu.Lock()
	want := []string{"RELOADING=1\nSTATUS=upgrading: handing over to a new agentd",
		"READY=1\nSTATUS=upgrade failed, carrying on: " + strings.TrimPrefix(err.Error(), "passing socket app.web: ")}
	if strings.Join(sent, "|") != strings.Join(want, "|") || f.thawed != 1 {
		t.Errorf("sd_notify %q, thawed %d times; want %q and once", sent, f.thawed, want)
	}
	mu.Unlock()

	// A SIGHUP (systemctl reload) is caught from OnSIGHUP on, and one
	// that comes before Ready waits for it.
	u.OnSIGHUP(f)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if ready := <-f.froze; !ready {
		t.Error("an upgrade began before Ready")
	}
	if u.HasParent() {
		t.Error("HasParent in a process no agentd started")
	}
}
