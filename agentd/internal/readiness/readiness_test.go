package readiness

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	good := map[string]string{
		"notify": "notify", "tcp": "tcp", "http:/healthz": "http:/healthz",
		"exec:test -f ready": "exec:test -f ready", "uptime:2s": "uptime:2s", "uptime": "uptime:5s",
	}
	for in, want := range good {
		k, err := Parse(in)
		if err != nil || k.String() != want {
			t.Errorf("Parse(%q) = %v, %v; want %s", in, k, err, want)
		}
	}
	for _, in := range []string{"", "http", "http:healthz", "tcp:80", "exec:", "uptime:soon", "uptime:-1s", "magic"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
}

// appListener is the app's side of the probe socket, as it would get it
// through LISTEN_FDS.
func appListener(t *testing.T, p *Probe) net.Listener {
	t.Helper()
	ln, err := net.FileListener(p.File)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestTCPWaitsForAccept(t *testing.T) {
	p, err := NewProbe()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	exited := make(chan struct{})
	// Nobody accepts: the kernel completes the handshake anyway, and the
	// check must not call that ready.
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	err = Wait(ctx, Kind{Name: "tcp"}, Target{Probe: p, Exited: exited})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("tcp check with nobody accepting: %v, want deadline exceeded", err)
	}
	ln := appListener(t, p)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Wait(ctx, Kind{Name: "tcp"}, Target{Probe: p, Exited: exited}); err != nil {
		t.Fatalf("tcp check with an accepting app: %v", err)
	}
}

func TestHTTP(t *testing.T) {
	p, err := NewProbe()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln := appListener(t, p)
	healthy := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-healthy:
			w.WriteHeader(200)
		default:
			w.WriteHeader(503)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	exited := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = Wait(ctx, Kind{Name: "http", Path: "/healthz"}, Target{Probe: p, Exited: exited})
	cancel()
	if err == nil {
		t.Fatal("503 counted as ready")
	}
	close(healthy)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Wait(ctx, Kind{Name: "http", Path: "/healthz"}, Target{Probe: p, Exited: exited}); err != nil {
		t.Fatal(err)
	}
}

func TestExitedAndExec(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	for _, k := range []Kind{{Name: "notify"}, {Name: "uptime", Uptime: time.Hour}, {Name: "exec", Cmd: "false"}} {
		err := Wait(context.Background(), k, Target{Notified: make(chan struct{}), Exited: exited, StartedAt: time.Now()})
		if !errors.Is(err, ErrExited) {
			t.Errorf("%s with the process gone: %v, want ErrExited", k, err)
		}
	}
	dir := t.TempDir()
	alive := make(chan struct{})
	if err := Wait(context.Background(), Kind{Name: "exec", Cmd: "test -d " + dir}, Target{Exited: alive, Dir: dir, Env: os.Environ()}); err != nil {
		t.Fatalf("exec check that succeeds: %v", err)
	}
	notified := make(chan struct{})
	close(notified)
	if err := Wait(context.Background(), Kind{Name: "notify"}, Target{Notified: notified, Exited: alive}); err != nil {
		t.Fatal(err)
	}
}
