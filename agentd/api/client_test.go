package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeAgentd serves handler on a unix socket in a temporary directory and
// returns a client for it. It only checks what the client sends and how it
// decodes answers; the real server is tested with agentd.
func fakeAgentd(t *testing.T, handler http.Handler) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "apitest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return NewClient(sock)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeEvents(w http.ResponseWriter, evs ...Event) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, ev := range evs {
		enc.Encode(ev)
		w.(http.Flusher).Flush()
	}
}

func TestStatusAndLists(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "agentd" {
			t.Errorf("Host = %q, want agentd", r.Host)
		}
		writeJSON(w, 200, Status{Version: "1.2.3", PID: 42, Apps: 2})
	})
	mux.HandleFunc("GET /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []App{{Name: "a", BootTimeout: Duration(time.Minute)}, {Name: "b"}})
	})
	mux.HandleFunc("GET /v1/ps", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []Process{{App: r.URL.Query().Get("app"), Name: "web.1"}})
	})
	mux.HandleFunc("GET /v1/apps/{app}/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"A": "1"})
	})
	mux.HandleFunc("GET /v1/apps/{app}/releases/{v}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, Release{App: r.PathValue("app"), Name: r.PathValue("v")})
	})
	c := fakeAgentd(t, mux)
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil || st.Version != "1.2.3" || st.PID != 42 || st.Apps != 2 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	apps, err := c.Apps(ctx)
	if err != nil || len(apps) != 2 || apps[0].BootTimeout != Duration(time.Minute) {
		t.Fatalf("Apps = %+v, %v", apps, err)
	}
	ps, err := c.Ps(ctx, "web")
	if err != nil || len(ps) != 1 || ps[0].App != "web" {
		t.Fatalf("Ps(web) = %+v, %v", ps, err)
	}
	ps, err = c.Ps(ctx, "")
	if err != nil || ps[0].App != "" {
		t.Fatalf("Ps() = %+v, %v", ps, err)
	}
	cfg, err := c.Config(ctx, "web")
	if err != nil || cfg["A"] != "1" {
		t.Fatalf("Config = %v, %v", cfg, err)
	}
	rel, err := c.Release(ctx, "web", "3")
	if err != nil || rel.Name != "v3" || rel.App != "web" {
		t.Fatalf("Release = %+v, %v", rel, err)
	}
}

func TestCreateAndDestroy(t *testing.T) {
	var got AppCreate
	var confirm string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Error(err)
		}
		writeJSON(w, 201, App{Name: got.Name, DrainTimeout: got.DrainTimeout})
	})
	mux.HandleFunc("DELETE /v1/apps/{app}", func(w http.ResponseWriter, r *http.Request) {
		confirm = r.URL.Query().Get("confirm")
		writeJSON(w, 200, struct{}{})
	})
	c := fakeAgentd(t, mux)
	app, err := c.CreateApp(context.Background(), AppCreate{
		Name: "web", Sockets: []string{"http=tcp://127.0.0.1:0"}, DrainTimeout: Duration(5 * time.Second),
	})
	if err != nil || app.Name != "web" || app.DrainTimeout != Duration(5*time.Second) {
		t.Fatalf("CreateApp = %+v, %v", app, err)
	}
	if got.Sockets[0] != "http=tcp://127.0.0.1:0" {
		t.Errorf("server got %+v", got)
	}
	if err := c.DestroyApp(context.Background(), "web", "web"); err != nil {
		t.Fatal(err)
	}
	if confirm != "web" {
		t.Errorf("confirm = %q", confirm)
	}
}

func TestErrorMapping(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/apps/{app}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 404, Error{Message: `no app "nope"`, Code: CodeNotFound})
	})
	mux.HandleFunc("GET /v1/apps/{app}/releases", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError) // not JSON
	})
	mux.HandleFunc("GET /v1/apps/{app}/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 409, Error{Message: "busy"}) // no code
	})
	c := fakeAgentd(t, mux)
	ctx := context.Background()

	_, err := c.AppInfo(ctx, "nope")
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != CodeNotFound || apiErr.Message != `no app "nope"` {
		t.Fatalf("AppInfo error = %#v", err)
	}
	_, err = c.Releases(ctx, "x")
	if !errors.As(err, &apiErr) || apiErr.Code != CodeInternal || !strings.Contains(apiErr.Message, "500") || !strings.Contains(apiErr.Message, "boom") {
		t.Fatalf("Releases error = %#v", err)
	}
	_, err = c.Config(ctx, "x")
	if !errors.As(err, &apiErr) || apiErr.Code != CodeConflict || apiErr.Message != "busy" {
		t.Fatalf("Config error = %#v", err)
	}
}

func TestUnreachable(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "agentd.sock")
	_, err := NewClient(missing).Status(context.Background())
	var u *UnreachableError
	if !errors.As(err, &u) {
		t.Fatalf("err = %#v, want *UnreachableError", err)
	}
	want := "cannot reach agentd at " + missing + ": connect: no such file or directory (is agentd running? set --socket or HCTL_SOCKET)"
	if err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}

	// A socket file nobody listens on: connection refused.
	ln, err := net.Listen("unix", filepath.Join(dir, "dead.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	_, err = NewClient(filepath.Join(dir, "dead.sock")).Apps(context.Background())
	if !errors.As(err, &u) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want unreachable: connection refused", err)
	}

	// Streaming calls report it the same way, not as an unknown outcome.
	_, err = NewClient(missing).Restart(context.Background(), "web", "", nil)
	if !errors.As(err, &u) {
		t.Fatalf("Restart err = %#v, want *UnreachableError", err)
	}
}

func TestUnreachableMessages(t *testing.T) {
	e := &UnreachableError{Socket: "/run/agentd/agentd.sock", Err: os.NewSyscallError("connect", syscall.EACCES)}
	want := "cannot reach agentd at /run/agentd/agentd.sock: connect: permission denied " +
		"(only root and members of the agentd group may use it; set --socket or HCTL_SOCKET for another agentd)"
	if e.Error() != want {
		t.Errorf("got  %q\nwant %q", e.Error(), want)
	}
	if !errors.Is(e, syscall.EACCES) {
		t.Error("does not unwrap to EACCES")
	}
}

func TestUnreachablePermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores socket permissions")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(sock, 0); err != nil {
		t.Fatal(err)
	}
	_, err = NewClient(sock).Status(context.Background())
	var u *UnreachableError
	if !errors.As(err, &u) || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "agentd group") {
		t.Fatalf("err = %v", err)
	}
}

func TestDeployStream(t *testing.T) {
	var gotQuery, gotBody, gotCT string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apps/{app}/deploys", func(w http.ResponseWriter, r *http.Request) {
		gotQuery = r.URL.RawQuery
		gotCT = r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		writeEvents(w,
			Event{Type: "phase", Phase: PhasePrepare, Message: "unpacked 3 files"},
			Event{Type: "process", Phase: PhaseReadiness, Process: "web.1", Message: "ready"},
			Event{Type: "result", Result: &OpResult{App: "web", OK: true, Changed: true, Release: "v3", Previous: "v2", SwitchSeconds: 1.5}},
		)
	})
	c := fakeAgentd(t, mux)
	var events []Event
	res, err := c.Deploy(context.Background(), "web", strings.NewReader("ARTIFACT"),
		DeployOptions{Message: "fix login", SkipReleasePhase: true, ReleaseID: "abc"},
		func(ev Event) { events = append(events, ev) })
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Release != "v3" || res.SwitchSeconds != 1.5 {
		t.Errorf("result = %+v", res)
	}
	if len(events) != 3 || events[0].Message != "unpacked 3 files" || events[1].Process != "web.1" {
		t.Errorf("events = %+v", events)
	}
	if gotBody != "ARTIFACT" || gotCT != "application/gzip" {
		t.Errorf("body %q content-type %q", gotBody, gotCT)
	}
	if gotQuery != "message=fix+login&release_id=abc&skip_release_phase=1" {
		t.Errorf("query = %q", gotQuery)
	}
}

// agentd answers a deploy with progress while it still reads the upload.
// That needs a full-duplex handler (without it, Go's server discards up to
// 256 KiB of a chunked body once the handler flushes): check that the
// client keeps sending a large chunked body after the response began.
func TestDeployFullDuplex(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apps/{app}/deploys", func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			t.Error(err)
		}
		writeEvents(w, Event{Type: "phase", Phase: PhasePrepare, Message: "receiving"})
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		msg := fmt.Sprintf("%d %x", n, h.Sum(nil))
		if err != nil {
			msg = err.Error()
		}
		writeEvents(w, Event{Type: "result", Result: &OpResult{OK: true, Release: msg}})
	})
	c := fakeAgentd(t, mux)
	data := make([]byte, 3<<20)
	rand.Read(data)
	want := fmt.Sprintf("%d %x", len(data), sha256.Sum256(data))
	// a MultiReader hides the length, so the body goes chunked, as a
	// directory packed on the fly does
	res, err := c.Deploy(context.Background(), "web", io.MultiReader(bytes.NewReader(data)), DeployOptions{}, nil)
	if err != nil || res.Release != want {
		t.Fatalf("server got %v, want %s (err %v)", res, want, err)
	}
}

func TestStreamFailedResult(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apps/{app}/deploys", func(w http.ResponseWriter, r *http.Request) {
		writeEvents(w,
			Event{Type: "phase", Phase: PhaseReadiness, Message: "waiting"},
			Event{Type: "result", Result: &OpResult{App: "web", OK: false, Release: "v2", Error: "web.1 exited with status 1"}},
		)
	})
	mux.HandleFunc("POST /v1/apps/{app}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req RollbackRequest
		json.NewDecoder(r.Body).Decode(&req)
		writeEvents(w, Event{Type: "result", Result: &OpResult{OK: false, Code: CodeNotFound, Error: "no release " + req.Version}})
	})
	c := fakeAgentd(t, mux)
	res, err := c.Deploy(context.Background(), "web", strings.NewReader("x"), DeployOptions{}, nil)
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != CodeDeployFailed || apiErr.Message != "web.1 exited with status 1" {
		t.Fatalf("err = %#v", err)
	}
	if res == nil || res.OK || res.Release != "v2" {
		t.Fatalf("res = %+v", res)
	}
	_, err = c.Rollback(context.Background(), "web", "v9", nil)
	if !errors.As(err, &apiErr) || apiErr.Code != CodeNotFound || apiErr.Message != "no release v9" {
		t.Fatalf("rollback err = %#v", err)
	}
}

func TestStreamLost(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apps/{app}/scale", func(w http.ResponseWriter, r *http.Request) {
		writeEvents(w, Event{Type: "phase", Phase: PhasePreboot, Message: "starting web.2"})
		// and the stream ends without a result
	})
	mux.HandleFunc("POST /v1/apps/{app}/restart", func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		io.WriteString(w, `{"type":"phase","mess`) // cut mid-event
	})
	c := fakeAgentd(t, mux)
	n := 0
	res, err := c.Scale(context.Background(), "web", map[string]int{"web": 2}, func(Event) { n++ })
	var lost *OutcomeUnknownError
	if !errors.As(err, &lost) || res != nil || n != 1 {
		t.Fatalf("res %v err %#v events %d", res, err, n)
	}
	if want := "the connection to agentd was lost before the operation finished; the outcome is unknown (check `hctl releases web`)"; err.Error() != want {
		t.Errorf("err = %q", err)
	}
	_, err = c.Restart(context.Background(), "web", "", nil)
	if !errors.As(err, &lost) || !strings.Contains(err.Error(), "outcome is unknown") {
		t.Fatalf("err = %v", err)
	}
}

func TestStreamTimeout(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	mux := http.NewServeMux()
	mux.HandleFunc("PATCH /v1/apps/{app}/config", func(w http.ResponseWriter, r *http.Request) {
		var req ConfigRequest
		json.NewDecoder(r.Body).Decode(&req)
		if req.Set["A"] != "1" || len(req.Unset) != 1 || req.Unset[0] != "B" {
			t.Errorf("config request = %+v", req)
		}
		writeEvents(w, Event{Type: "info", Message: "new release v4"})
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c := fakeAgentd(t, mux)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.ConfigChange(ctx, "web", ConfigRequest{Set: map[string]string{"A": "1"}, Unset: []string{"B"}}, nil)
	var lost *OutcomeUnknownError
	if !errors.As(err, &lost) || !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
}

func TestLogs(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/apps/{app}/logs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("n") != "5" || q.Get("follow") != "1" || q.Get("process") != "web.1" || q.Get("release") != "v3" {
			t.Errorf("query = %v", q)
		}
		enc := json.NewEncoder(w)
		for _, l := range []string{"one", "two", "three"} {
			enc.Encode(LogLine{Release: "v3", Process: "web.1", Line: l})
		}
	})
	c := fakeAgentd(t, mux)
	var lines []string
	err := c.Logs(context.Background(), "web", LogOptions{N: 5, Follow: true, Process: "web.1", Release: "3"}, func(l LogLine) error {
		lines = append(lines, l.Line)
		return nil
	})
	if err != nil || strings.Join(lines, ",") != "one,two,three" {
		t.Fatalf("lines %v err %v", lines, err)
	}
	stop := errors.New("stop")
	lines = nil
	err = c.Logs(context.Background(), "web", LogOptions{N: 5, Follow: true, Process: "web.1", Release: "v3"}, func(l LogLine) error {
		lines = append(lines, l.Line)
		return stop
	})
	if err != stop || len(lines) != 1 {
		t.Fatalf("lines %v err %v", lines, err)
	}
}
