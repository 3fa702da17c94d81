package shed

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

	"github.com/agentd/agentd/agentd/internal/conns"
	"github.com/agentd/agentd/internal/wsload"
)

// TestShedWebSockets is the whole chain with the example app: wsapp is
// told to stop (SIGTERM) and keeps its 200 WebSockets open; conns.List
// finds them, Shed closes them at 100/s; the clients (wsload) see an
// end-of-file each, about 100 a second, and wsapp exits 0 once the last is
// gone.
func TestShedWebSockets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds examples/wsapp")
	}
	const n, rate = 200, 100.0
	dir := t.TempDir()
	bin := filepath.Join(dir, "wsapp")
	build := exec.Command("go", "build", "-o", bin, "github.com/agentd/agentd/examples/wsapp")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building examples/wsapp: %v\n%s", err, out)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lf, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	app := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0"`, bin)
	app.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(dir, "notify"), "LISTEN_FDS=1",
		"LISTEN_FDNAMES=web", "AGENTD_RELEASE=v1", "AGENTD_PROCESS=web.1")
	app.ExtraFiles = []*os.File{lf}
	app.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- app.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-app.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	until := func(want string) {
		t.Helper()
		buf := make([]byte, 4096)
		for {
			_ = notify.SetReadDeadline(time.Now().Add(eventTimeout))
			k, err := notify.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s: %v", want, err)
			}
			if strings.Contains(string(buf[:k]), want) {
				return
			}
		}
	}
	until("READY=1")

	run, err := wsload.Start(context.Background(), wsload.Config{
		URL: "ws://" + ln.Addr().String() + "/ws", Clients: n, Every: 200 * time.Millisecond, Duration: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Stop() })
	select {
	case <-run.Connected():
	case <-time.After(eventTimeout):
		t.Fatal("clients did not connect")
	}
	if err := syscall.Kill(app.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	until("STOPPING=1")

	port := ln.Addr().(*net.TCPAddr).Port
	list, err := conns.List([]conns.Listener{{Network: "tcp", Port: port}}, []int{app.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	var ts []Target
	for _, c := range list {
		ts = append(ts, Target{PID: c.PID, FD: c.FD, Inode: c.Inode})
	}
	if len(ts) != n {
		t.Fatalf("conns.List: %d connections, want %d", len(ts), n)
	}
	r := Shed(context.Background(), ts, rate, Close)
	if r.Closed != n || r.Err != nil {
		t.Fatalf("Shed = %+v", r)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("wsapp after its last WebSocket: %v, want exit 0", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("wsapp did not exit after its WebSockets were shed")
	}
	// wsapp is gone once it has closed its last WebSocket, which its
	// client may not have read yet: every client ends (Done) once it saw
	// its connection's end, and Stop would count one still reading as open.
	select {
	case <-run.Done():
	case <-time.After(eventTimeout):
		t.Error("the clients did not all see their connection end")
	}
	res := run.Stop()
	if got := res.ByHow(); got[wsload.ClosedEOF] != n {
		t.Errorf("client closes = %v, want %d eof", got, n)
	}
	cl := res.Closes("v1")
	t.Logf("%d WebSockets shed at %v/s: closes over %v, peak %d/s, %d messages", cl.Count, rate, cl.Spread, cl.PeakPerSecond, res.Messages())
	avg := float64(cl.Count-1) / cl.Spread.Seconds()
	if cl.Spread < 1900*time.Millisecond || avg > rate*1.2 || avg < rate*0.8 || float64(cl.PeakPerSecond) > 2*rate {
		t.Errorf("closes spread over %v, %.0f/s on average, peak %d/s; want ≥ 1.9s, the average within 20%% of %v, no burst", cl.Spread, avg, cl.PeakPerSecond, rate)
	}
}
