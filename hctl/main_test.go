package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/urfave/cli/v3"
)

// fakeAgentd is a minimal stand-in for agentd on a unix socket: canned
// answers per route, and a record of what hctl sent. It only serves to test
// hctl's behaviour; agentd itself is tested against the real server.
type fakeAgentd struct {
	t    *testing.T
	sock string
	mux  *http.ServeMux

	mu       sync.Mutex
	requests []string // "METHOD /path?query"
	bodies   []string
}

func newFake(t *testing.T) *fakeAgentd {
	t.Helper()
	dir, err := os.MkdirTemp("", "hctltest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeAgentd{t: t, sock: filepath.Join(dir, "s"), mux: http.NewServeMux()}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		req := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			req += "?" + r.URL.RawQuery
		}
		f.mu.Lock()
		f.requests = append(f.requests, req)
		f.bodies = append(f.bodies, string(b))
		f.mu.Unlock()
		f.mux.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	// hctl finds the fake through the environment, as a script would.
	t.Setenv("HCTL_SOCKET", f.sock)
	return f
}

// json answers route with status and v as JSON.
func (f *fakeAgentd) json(route string, status int, v any) {
	f.mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	})
}

// events answers route with a stream of events.
func (f *fakeAgentd) events(route string, evs ...api.Event) {
	f.mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, ev := range evs {
			enc.Encode(ev)
			w.(http.Flusher).Flush()
		}
	})
}

func (f *fakeAgentd) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeAgentd) lastBody() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return ""
	}
	return f.bodies[len(f.bodies)-1]
}

type result struct {
	code           int
	stdout, stderr string
}

func hctlRun(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"hctl"}, args...), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// wantExit checks the exit status and, for a failure, that stderr is one
// "hctl: " line.
func wantExit(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d, got %s", code, r)
	}
	if code != 0 {
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "hctl: ") {
			t.Errorf("stderr does not end with an hctl: line:\n%s", r)
		}
	}
}

// wantOneJSON checks that stdout is exactly one JSON value and decodes it.
func wantOneJSON(t *testing.T, r result, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		t.Fatalf("stdout holds more than one JSON value:\n%s", r)
	}
}

func artifactDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: ./server\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestGlobalAndAppSocketFlags(t *testing.T) {
	f := newFake(t)
	f.json("POST /v1/apps", 201, api.App{Name: "web"})
	t.Setenv("HCTL_SOCKET", "/nonexistent/agentd.sock")

	// The global --socket goes before the command; the app's after it.
	r := hctlRun(t, "--socket", f.sock, "apps", "create", "web",
		"--socket", "web=tcp://127.0.0.1:8080", "--socket", "worker/q=unix:///run/q.sock",
		"--readiness", "web=http:/healthz", "--readiness", "worker=exec:check --a,b",
		"--boot-timeout", "2m", "--drain-timeout", "45s", "--user", "app")
	wantExit(t, r, 0)
	var got api.AppCreate
	if err := json.Unmarshal([]byte(f.lastBody()), &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "web" || strings.Join(got.Sockets, " ") != "web=tcp://127.0.0.1:8080 worker/q=unix:///run/q.sock" {
		t.Errorf("sent %+v", got)
	}
	if got.Readiness["web"] != "http:/healthz" || got.Readiness["worker"] != "exec:check --a,b" {
		t.Errorf("readiness %v", got.Readiness)
	}
	if time.Duration(got.BootTimeout) != 2*time.Minute || time.Duration(got.DrainTimeout) != 45*time.Second || got.User != "app" {
		t.Errorf("sent %+v", got)
	}

	// HCTL_SOCKET alone picks the control socket.
	t.Setenv("HCTL_SOCKET", f.sock)
	r = hctlRun(t, "apps", "create", "web", "--socket", "web=tcp://127.0.0.1:8080")
	wantExit(t, r, 0)
	if n := len(f.sent()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}

	// A control socket path given after the command is an app socket spec:
	// refused locally, with a hint.
	r = hctlRun(t, "apps", "create", "web", "--socket", "/run/agentd/agentd.sock")
	wantExit(t, r, 2)
	if !strings.Contains(r.stderr, "put --socket PATH before the command") {
		t.Errorf("no hint:\n%s", r)
	}

	// The global flag works after commands that have no --socket of their own.
	t.Setenv("HCTL_SOCKET", "/nonexistent/agentd.sock")
	f.json("GET /v1/apps", 200, []api.App{})
	r = hctlRun(t, "apps", "--socket", f.sock)
	wantExit(t, r, 0)
}

func TestUsageErrorsSendNothing(t *testing.T) {
	f := newFake(t)
	dir := artifactDir(t)
	notGz := filepath.Join(t.TempDir(), "release.tar.gz")
	if err := os.WriteFile(notGz, []byte("plain text"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := [][]string{
		{"deploy", "myapp", notGz},
		{"release-phase", "myapp", notGz},
		{},
		{"frobnicate"},
		{"deploy", "myapp"},
		{"deploy", "myapp", filepath.Join(dir, "missing")},
		{"deploy", "MyApp", dir},
		{"deploy", "myapp", dir, "--bogus"},
		{"deploy", "myapp", dir, "extra"},
		{"release-phase", "myapp"},
		{"scale", "myapp"},
		{"scale", "myapp", "web"},
		{"scale", "myapp", "web=-1"},
		{"scale", "myapp", "web=two"},
		{"scale", "myapp", "web=1", "web=2"},
		{"config", "set", "myapp", "NOEQUALS"},
		{"config", "set", "myapp", "1BAD=x"},
		{"config", "unset", "myapp", "A=1"},
		{"config", "set", "myapp"},
		{"rollback", "myapp", "seven"},
		{"releases", "info", "myapp"},
		{"releases", "info", "myapp", "x3"},
		{"apps", "create", "web", "--socket", "web:8080"},
		{"apps", "create", "web", "--socket", "web=http://x:80"},
		{"apps", "create", "web", "--readiness", "web=magic"},
		{"apps", "create", "web", "--boot-timeout", "soon"},
		{"apps", "create", "a-very-long-app-name-that-is-too-long"},
		{"apps", "destroy", "web"},
		{"apps", "destroy", "web", "--confirm", "other"},
		{"apps", "frobnicate"},
		{"logs", "myapp", "-n", "-1"},
		{"logs", "myapp", "--release", "latest"},
		{"ps", "a", "b"},
		{"status", "myapp", "extra"},
		{"status", "Bad_App"},
		{"restart", "myapp", "web", "extra"},
	}
	for _, args := range cases {
		r := hctlRun(t, args...)
		if r.code != 2 {
			t.Errorf("hctl %s: %s", strings.Join(args, " "), r)
			continue
		}
		if !strings.HasPrefix(lastLine(r.stderr), "hctl: ") {
			t.Errorf("hctl %s: stderr:\n%s", strings.Join(args, " "), r.stderr)
		}
	}
	if s := f.sent(); len(s) != 0 {
		t.Errorf("usage errors sent requests: %v", s)
	}

	// With --json the error is also one JSON object on stdout.
	r := hctlRun(t, "--json", "scale", "myapp", "web=x")
	wantExit(t, r, 2)
	var e map[string]string
	wantOneJSON(t, r, &e)
	if e["code"] != "usage" || !strings.Contains(e["error"], "web=x") {
		t.Errorf("json error %v", e)
	}
	// No help text on stdout for a bad flag in --json mode.
	r = hctlRun(t, "--json", "deploy", "--bogus")
	wantExit(t, r, 2)
	wantOneJSON(t, r, &e)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestUnreachableExits2(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agentd.sock")
	r := hctlRun(t, "--socket", sock, "status")
	wantExit(t, r, 2)
	want := "hctl: cannot reach agentd at " + sock + ": connect: no such file or directory (is agentd running? set --socket or HCTL_SOCKET)\n"
	if r.stderr != want {
		t.Errorf("stderr %q\nwant   %q", r.stderr, want)
	}
	r = hctlRun(t, "--socket", sock, "--json", "restart", "myapp")
	wantExit(t, r, 2)
	var e map[string]string
	wantOneJSON(t, r, &e)
	if e["code"] != "unreachable" {
		t.Errorf("json %v", e)
	}
}

func TestServerErrors(t *testing.T) {
	f := newFake(t)
	f.json("GET /v1/apps/{app}", 404, api.Error{Message: `no app "ghost"`, Code: api.CodeNotFound})
	f.json("POST /v1/apps", 400, api.Error{Message: `bad socket address "tcp://x:99999"`, Code: api.CodeBadRequest})
	f.json("DELETE /v1/apps/{app}", 409, api.Error{Message: "web is deploying", Code: api.CodeConflict})

	r := hctlRun(t, "apps", "info", "ghost")
	wantExit(t, r, 1)
	if r.stderr != "hctl: no app \"ghost\"\n" || r.stdout != "" {
		t.Errorf("%s", r)
	}
	r = hctlRun(t, "--json", "apps", "info", "ghost")
	wantExit(t, r, 1)
	var e map[string]string
	wantOneJSON(t, r, &e)
	if e["code"] != "not_found" || e["error"] != `no app "ghost"` {
		t.Errorf("json %v", e)
	}
	// agentd refusing malformed input is bad usage, as a local check would be.
	r = hctlRun(t, "apps", "create", "web", "--socket", "web=tcp://127.0.0.1:1")
	wantExit(t, r, 2)
	r = hctlRun(t, "apps", "destroy", "web", "--confirm", "web")
	wantExit(t, r, 1)
	if !strings.Contains(r.stderr, "web is deploying") {
		t.Errorf("%s", r)
	}
}

func TestDeploy(t *testing.T) {
	f := newFake(t)
	dir := artifactDir(t)
	f.events("POST /v1/apps/{app}/deploys",
		api.Event{Type: "phase", Phase: api.PhasePrepare, Message: "unpacked 3 files"},
		api.Event{Type: "output", Phase: api.PhaseRelease, Process: "release", Message: "migrated"},
		api.Event{Type: "process", Phase: api.PhasePreboot, Process: "web.1", Message: "v3 web.1 started (pid 9)"},
		api.Event{Type: "process", Phase: api.PhaseReadiness, Process: "web.1", Message: "ready"},
		api.Event{Type: "info", Message: "v3 is active"},
		api.Event{Type: "result", Result: &api.OpResult{App: "myapp", OK: true, Changed: true, Release: "v3", Previous: "v2",
			SwitchSeconds: 1.234, DrainSeconds: 0.41}},
	)
	r := hctlRun(t, "deploy", "myapp", dir, "-m", "fix login", "--release-id", "abc123", "--skip-release-phase")
	wantExit(t, r, 0)
	if r.stdout != "myapp v3 is live (switch 1.23s, drain 0.41s)\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	wantErr := "-----> prepare: unpacked 3 files\n" +
		"       release| migrated\n" +
		"       v3 web.1 started (pid 9)\n" +
		"       web.1: ready\n" +
		"-----> v3 is active\n"
	if r.stderr != wantErr {
		t.Errorf("stderr %q\nwant   %q", r.stderr, wantErr)
	}
	// A directory's few small files are hashed by hctl, not staged, then
	// its manifest goes; this fake, like an agentd before the store,
	// answers 404, and the .tar.gz follows.
	if s := f.sent(); len(s) != 2 || s[0] != "POST /v1/uploads" || s[1] != "POST /v1/apps/myapp/deploys?message=fix+login&release_id=abc123&skip_release_phase=1" {
		t.Errorf("sent %v", s)
	}
	if f.lastBody() == "" {
		t.Error("no artifact sent")
	}

	// --json: the result alone on stdout, progress still on stderr.
	r = hctlRun(t, "deploy", "myapp", dir, "--json")
	wantExit(t, r, 0)
	var res api.OpResult
	wantOneJSON(t, r, &res)
	if !res.OK || res.Release != "v3" || !strings.Contains(r.stderr, "prepare: unpacked") {
		t.Errorf("%s", r)
	}
}

func TestDeployUnchangedKilledAndFailed(t *testing.T) {
	f := newFake(t)
	dir := artifactDir(t)
	f.events("POST /v1/apps/same/deploys",
		api.Event{Type: "result", Result: &api.OpResult{App: "same", OK: true, Changed: false, Release: "v3"}})
	f.events("POST /v1/apps/slow/deploys",
		api.Event{Type: "result", Result: &api.OpResult{App: "slow", OK: true, Changed: true, Release: "v8",
			SwitchSeconds: 2, DrainSeconds: 30, Killed: []string{"web.1", "web.2"}}})
	f.events("POST /v1/apps/bad/deploys",
		api.Event{Type: "phase", Phase: api.PhaseReadiness, Message: "waiting for web.1"},
		api.Event{Type: "result", Result: &api.OpResult{App: "bad", OK: false, Release: "v2", Previous: "v2",
			Error: "web.1 exited with status 1 before it was ready", Code: api.CodeDeployFailed}})
	f.events("POST /v1/apps/lost/deploys",
		api.Event{Type: "phase", Phase: api.PhasePreboot, Message: "starting web.1"})

	r := hctlRun(t, "deploy", "same", dir)
	wantExit(t, r, 0)
	if r.stdout != "same v3 already active, nothing to do\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = hctlRun(t, "deploy", "slow", dir)
	wantExit(t, r, 0)
	if r.stdout != "slow v8 is live (switch 2.00s, drain 30.00s; killed at the drain timeout: web.1, web.2)\n" {
		t.Errorf("stdout %q", r.stdout)
	}

	r = hctlRun(t, "deploy", "bad", dir)
	wantExit(t, r, 1)
	if want := "hctl: deploy of bad failed: web.1 exited with status 1 before it was ready; bad v2 still serves\n"; lastLine(r.stderr)+"\n" != want {
		t.Errorf("stderr %q\nwant %q", r.stderr, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = hctlRun(t, "--json", "deploy", "bad", dir)
	wantExit(t, r, 1)
	var res api.OpResult
	wantOneJSON(t, r, &res)
	if res.OK || res.Code != api.CodeDeployFailed || res.Error == "" {
		t.Errorf("json %+v", res)
	}

	r = hctlRun(t, "deploy", "lost", dir)
	wantExit(t, r, 1)
	if !strings.Contains(r.stderr, "outcome is unknown") || !strings.Contains(r.stderr, "hctl releases lost") {
		t.Errorf("%s", r)
	}
	r = hctlRun(t, "--json", "deploy", "lost", dir)
	wantExit(t, r, 1)
	var e map[string]string
	wantOneJSON(t, r, &e)
	if e["code"] != "outcome_unknown" {
		t.Errorf("json %v", e)
	}
}

func TestTimeout(t *testing.T) {
	f := newFake(t)
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	f.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	f.mux.HandleFunc("POST /v1/apps/{app}/restart", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Event{Type: "phase", Phase: api.PhasePreboot, Message: "starting"})
		w.(http.Flusher).Flush()
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	r := hctlRun(t, "--timeout", "100ms", "status")
	wantExit(t, r, 1)
	if r.stderr != "hctl: timed out after 100ms waiting for agentd\n" {
		t.Errorf("%s", r)
	}
	r = hctlRun(t, "--timeout", "100ms", "restart", "myapp")
	wantExit(t, r, 1)
	if !strings.Contains(r.stderr, "timed out waiting for agentd; the operation may still be running") {
		t.Errorf("%s", r)
	}
}

func TestTables(t *testing.T) {
	f := newFake(t)
	created := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	started := time.Date(2025, 3, 4, 6, 0, 0, 0, time.UTC)
	now = func() time.Time { return started.Add(3*time.Hour + 2*time.Minute) }
	t.Cleanup(func() { now = time.Now })
	exit1 := 1

	f.json("GET /v1/apps", 200, []api.App{
		{Name: "myapp", ActiveRelease: "v3", Formation: map[string]int{"web": 2, "worker": 1},
			Sockets: []api.Socket{{Type: "web", Name: "http", Addr: "tcp://127.0.0.1:8080"}}},
		{Name: "other", Deploying: true},
	})
	f.json("GET /v1/apps/{app}/releases", 200, []api.Release{
		{Name: "v3", Version: 3, Status: "active", CreatedAt: created, Source: "deploy", Message: "fix login\nmore detail",
			Digest: "sha256:0123456789abcdef0123", DeployedBy: "alice", Phases: []api.Phase{
				{Name: "prepare", Seconds: 0.02}, {Name: "release", Seconds: 1.5}, {Name: "preboot", Seconds: 0.01},
				{Name: "readiness", Seconds: 0.514}, {Name: "cutover", Seconds: 0}, {Name: "drain", Seconds: 2.25}}},
		{Version: 2, Status: "retired", CreatedAt: created, Source: "config"},
	})
	conns := 3
	f.json("GET /v1/ps", 200, []api.Process{
		{App: "myapp", Name: "web.1", Release: "v2", State: "draining", PID: 4100, StartedAt: started, Status: "draining",
			KillAt: now().Add(25 * time.Second), Connections: &conns},
		{App: "myapp", Name: "web.1", Release: "v3", State: "ready", PID: 4242, StartedAt: started, Restarts: 0, Status: "serving"},
		{App: "myapp", Name: "worker.1", Release: "v3", State: "crashed", PID: 4243, StartedAt: started, Restarts: 5, ExitCode: &exit1},
	})
	f.json("GET /v1/apps/{app}/config", 200, map[string]string{"ZED": "last", "A": "first", "URL": "x=y"})

	r := hctlRun(t, "apps")
	wantExit(t, r, 0)
	want := "NAME   RELEASE  FORMATION       SOCKETS                        DEPLOYING  STATE\n" +
		"myapp  v3       web=2 worker=1  web/http=tcp://127.0.0.1:8080  no         ok\n" +
		"other  -        -               -                              yes        ok\n"
	if r.stdout != want {
		t.Errorf("apps:\n%s\nwant:\n%s", r.stdout, want)
	}

	r = hctlRun(t, "releases", "myapp")
	wantExit(t, r, 0)
	ts := created.Local().Format("2006-01-02 15:04:05")
	want = "VERSION  STATUS   CREATED              SOURCE  MESSAGE    DIGEST        DEPLOYED BY  PREPARE  RELEASE  PREBOOT  READINESS  CUTOVER  DRAIN\n" +
		"v3       active   " + ts + "  deploy  fix login  0123456789ab  alice        0.02s    1.50s    0.01s    0.51s      0.00s    2.25s\n" +
		"v2       retired  " + ts + "  config  -          -             -            -        -        -        -          -        -\n"
	if r.stdout != want {
		t.Errorf("releases:\n%s\nwant:\n%s", r.stdout, want)
	}

	r = hctlRun(t, "ps")
	wantExit(t, r, 0)
	want = "APP    PROCESS   RELEASE  STATE     PID   UPTIME  RESTARTS  CONNS  KILL IN  STATUS\n" +
		"myapp  web.1     v2       draining  4100  3h02m   0         3      25s      draining\n" +
		"myapp  web.1     v3       ready     4242  3h02m   0         -      -        serving\n" +
		"myapp  worker.1  v3       crashed   -     -       5         -      -        exit 1\n"
	if r.stdout != want {
		t.Errorf("ps:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = hctlRun(t, "ps", "myapp")
	wantExit(t, r, 0)
	if s := f.sent(); s[len(s)-1] != "GET /v1/ps?app=myapp" {
		t.Errorf("sent %v", s)
	}

	r = hctlRun(t, "config", "myapp")
	wantExit(t, r, 0)
	if r.stdout != "A=first\nURL=x=y\nZED=last\n" {
		t.Errorf("config %q", r.stdout)
	}

	// --json prints arrays and maps as they came.
	r = hctlRun(t, "--json", "ps")
	var ps []api.Process
	wantOneJSON(t, r, &ps)
	if len(ps) != 3 || ps[1].PID != 4242 || ps[0].Connections == nil || *ps[0].Connections != 3 {
		t.Errorf("json ps %+v", ps)
	}
	r = hctlRun(t, "releases", "myapp", "--json")
	var rels []api.Release
	wantOneJSON(t, r, &rels)
	if len(rels) != 2 {
		t.Errorf("json releases %+v", rels)
	}
}

func TestOperations(t *testing.T) {
	f := newFake(t)
	ok := func(rel string) api.Event {
		return api.Event{Type: "result", Result: &api.OpResult{OK: true, Changed: true, Release: rel, SwitchSeconds: 1, DrainSeconds: 0.5}}
	}
	f.events("POST /v1/apps/{app}/scale", ok("v3"))
	f.events("POST /v1/apps/{app}/restart", ok("v3"))
	f.events("POST /v1/apps/{app}/rollback", ok("v5"))
	f.events("PATCH /v1/apps/{app}/config", ok("v6"))
	f.json("DELETE /v1/apps/{app}", 200, struct{}{})

	check := func(args []string, wantOut string, wantBody string) {
		t.Helper()
		r := hctlRun(t, args...)
		wantExit(t, r, 0)
		if r.stdout != wantOut {
			t.Errorf("hctl %s: stdout %q, want %q", strings.Join(args, " "), r.stdout, wantOut)
		}
		if wantBody != "" && strings.TrimSpace(f.lastBody()) != wantBody {
			t.Errorf("hctl %s: sent %s, want %s", strings.Join(args, " "), f.lastBody(), wantBody)
		}
	}
	check([]string{"scale", "myapp", "web=2", "worker=0"}, "myapp scaled to web=2 worker=0 (v3)\n", `{"formation":{"web":2,"worker":0}}`)
	check([]string{"restart", "myapp"}, "myapp restarted, v3 is live (switch 1.00s, drain 0.50s)\n", `{}`)
	check([]string{"restart", "myapp", "worker"}, "myapp worker restarted, v3 is live (switch 1.00s, drain 0.50s)\n", `{"type":"worker"}`)
	check([]string{"rollback", "myapp"}, "myapp rolled back: v5 is live (switch 1.00s, drain 0.50s)\n", `{}`)
	check([]string{"rollback", "myapp", "2"}, "myapp rolled back to v2: v5 is live (switch 1.00s, drain 0.50s)\n", `{"version":"v2"}`)
	check([]string{"config", "set", "myapp", "B=2", "A=x=y", "EMPTY="}, "myapp: set A, B, EMPTY, v6 is live (switch 1.00s, drain 0.50s)\n",
		`{"set":{"A":"x=y","B":"2","EMPTY":""}}`)
	check([]string{"config", "unset", "myapp", "A", "B"}, "myapp: unset A, B, v6 is live (switch 1.00s, drain 0.50s)\n", `{"unset":["A","B"]}`)
	check([]string{"apps", "destroy", "myapp", "--confirm", "myapp"}, "destroyed myapp\n", "")
	if s := f.sent(); s[len(s)-1] != "DELETE /v1/apps/myapp?confirm=myapp" {
		t.Errorf("sent %v", s)
	}
}

func TestLogs(t *testing.T) {
	f := newFake(t)
	when := time.Date(2025, 1, 2, 3, 4, 5, 600e6, time.UTC)
	lines := []api.LogLine{
		{Release: "v3", Process: "web.1", Line: "listening on fd 3"},
		{Time: when, Release: "v3", Process: "worker.1", Line: "tick"},
	}
	f.mux.HandleFunc("GET /v1/apps/{app}/logs", func(w http.ResponseWriter, r *http.Request) {
		enc := json.NewEncoder(w)
		for _, l := range lines {
			enc.Encode(l)
		}
	})
	r := hctlRun(t, "logs", "myapp", "-n", "5", "--process", "web.1", "--release", "3", "-f")
	wantExit(t, r, 0)
	want := "v3 web.1: listening on fd 3\n" + when.Local().Format("2006-01-02T15:04:05.000") + " v3 worker.1: tick\n"
	if r.stdout != want {
		t.Errorf("stdout %q\nwant   %q", r.stdout, want)
	}
	if s := f.sent(); s[0] != "GET /v1/apps/myapp/logs?follow=1&n=5&process=web.1&release=v3" {
		t.Errorf("sent %v", s)
	}

	r = hctlRun(t, "--json", "logs", "myapp")
	wantExit(t, r, 0)
	var got []api.LogLine
	wantOneJSON(t, r, &got)
	if len(got) != 2 || got[1].Line != "tick" {
		t.Errorf("json %+v", got)
	}
	r = hctlRun(t, "--json", "logs", "myapp", "-f")
	wantExit(t, r, 0)
	if n := strings.Count(r.stdout, "\n"); n != 2 || !strings.HasPrefix(r.stdout, `{"release":"v3"`) {
		t.Errorf("ndjson %q", r.stdout)
	}
}

func TestStatusAndInfo(t *testing.T) {
	f := newFake(t)
	f.json("GET /v1/status", 200, api.Status{Version: "1.0.0", PID: 7, Mode: "embedded", UptimeSeconds: 3725,
		ControlSocket: "/run/agentd/agentd.sock", StateDir: "/var/lib/agentd", Apps: 1, Processes: 2,
		Sockets: []api.Socket{{App: "myapp", Type: "web", Name: "http", Addr: "tcp://127.0.0.1:8080", Bound: "127.0.0.1:8080", InUse: true},
			{App: "myapp", Type: "admin", Name: "adm", Addr: "unix:///run/myapp.sock", Bound: "/run/myapp.sock"}}})
	f.json("GET /v1/apps/{app}", 200, api.AppInfo{
		App:     api.App{Name: "myapp", ActiveRelease: "v3", BootTimeout: api.Duration(time.Minute), DrainTimeout: api.Duration(30 * time.Second)},
		Release: &api.Release{Name: "v3", Source: "deploy", Message: "fix"},
	})
	f.json("GET /v1/apps/{app}/releases/{v}", 200, api.Release{App: "myapp", Name: "v3", Status: "active",
		Procfile: map[string]string{"web": "./server", "release": "./migrate"}, Phases: []api.Phase{{Name: "prepare", Seconds: 0.25}}})

	r := hctlRun(t, "status")
	wantExit(t, r, 0)
	for _, s := range []string{"agentd          1.0.0", "mode            embedded", "uptime          1h02m",
		"APP    TYPE   NAME  ADDR                    BOUND            IN USE\n",
		"myapp  web    http  tcp://127.0.0.1:8080    127.0.0.1:8080   yes\n",
		"myapp  admin  adm   unix:///run/myapp.sock  /run/myapp.sock  no\n"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("status lacks %q:\n%s", s, r.stdout)
		}
	}
	r = hctlRun(t, "apps", "info", "myapp")
	wantExit(t, r, 0)
	for _, s := range []string{"boot timeout   1m0s", "drain timeout  30s", "active release v3: deploy"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("info lacks %q:\n%s", s, r.stdout)
		}
	}
	r = hctlRun(t, "releases", "info", "myapp", "v3")
	wantExit(t, r, 0)
	for _, s := range []string{"status   active", "phases   prepare 0.25s", "  release: ./migrate", "  web: ./server"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("release info lacks %q:\n%s", s, r.stdout)
		}
	}
	if s := f.sent(); s[len(s)-1] != "GET /v1/apps/myapp/releases/v3" {
		t.Errorf("sent %v", s)
	}
}

// Every command answers --help with its one-line usage and examples.
func TestHelp(t *testing.T) {
	var h hctl
	root := h.rootCommand()
	var walk func(c *cli.Command, path []string)
	walk = func(c *cli.Command, path []string) {
		r := hctlRun(t, append(path[1:], "--help")...)
		if r.code != 0 {
			t.Errorf("%s --help: %s", strings.Join(path, " "), r)
		}
		if !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "USAGE:") {
			t.Errorf("%s --help lacks usage or examples:\n%s", strings.Join(path, " "), r.stdout)
		}
		if c.UsageText == "" || strings.Contains(c.UsageText, "\n") && c != root {
			t.Errorf("%s: UsageText %q is not one line", strings.Join(path, " "), c.UsageText)
		}
		for _, sub := range c.Commands {
			walk(sub, append(path, sub.Name))
		}
	}
	walk(root, []string{"hctl"})

	r := hctlRun(t, "--version")
	wantExit(t, r, 0)
	if !strings.HasPrefix(r.stdout, "hctl version ") {
		t.Errorf("%s", r)
	}
}
