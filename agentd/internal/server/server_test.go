package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/agent"
)

// newAgent is an agent on private directories with one app, "a", that has
// no release yet: operations on it validate their input and stop before
// anything would run.
func newAgent(t testing.TB) *agent.Agent {
	t.Helper()
	dir, err := os.MkdirTemp("", "srv-")
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(agent.Config{StateDir: dir, RuntimeDir: dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ag.Close(false)
		os.RemoveAll(dir)
	})
	if _, err := ag.CreateApp(api.AppCreate{Name: "a", Sockets: []string{"web=tcp://127.0.0.1:0"}, AllowRoot: true}); err != nil {
		t.Fatal(err)
	}
	return ag
}

func newServer(ag *agent.Agent) *Server {
	return &Server{Agent: ag, Log: slog.New(slog.DiscardHandler), AdminGroup: "agentd-test-no-such-group"}
}

// do serves one request as peer.
func do(h http.Handler, peer Peer, method, path, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r = r.WithContext(context.WithValue(r.Context(), peerKey{}, peer))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

var (
	root     = Peer{UID: 0, GID: 0, PID: 1, Known: true}
	stranger = Peer{UID: 65534, GID: 65534, PID: 1, Known: true}
)

// TestWhoMay: anyone who can connect reads the state; only root (and
// agentd's own user, and the admin group) change it or read config vars
// and logs; an unknown peer changes nothing.
func TestWhoMay(t *testing.T) {
	if os.Geteuid() == stranger.UID {
		t.Skip("runs as the stranger's uid")
	}
	h := newServer(newAgent(t)).Handler()
	reads := [][2]string{{"GET", "/v1/status"}, {"GET", "/v1/apps"}, {"GET", "/v1/apps/a"}, {"GET", "/v1/ps"},
		{"GET", "/v1/apps/a/releases"}}
	for _, rq := range reads {
		if w := do(h, stranger, rq[0], rq[1], ""); w.Code != http.StatusOK {
			t.Errorf("%s %s by a stranger: %d %s, want 200", rq[0], rq[1], w.Code, w.Body)
		}
	}
	private := [][2]string{{"GET", "/v1/apps/a/config"}, {"GET", "/v1/apps/a/logs"}}
	changes := [][3]string{
		{"POST", "/v1/apps", `{"name":"b","sockets":["web=tcp://127.0.0.1:0"],"allow_root":true}`},
		{"DELETE", "/v1/apps/a?confirm=a", ""},
		{"POST", "/v1/apps/a/deploys", "x"},
		{"POST", "/v1/apps/a/release-phase", "x"},
		{"POST", "/v1/apps/a/rollback", "{}"},
		{"POST", "/v1/apps/a/scale", `{"formation":{"web":2}}`},
		{"POST", "/v1/apps/a/restart", "{}"},
		{"PATCH", "/v1/apps/a/config", `{"set":{"K":"v"}}`},
		{"POST", "/v1/agent/upgrade", "{}"},
	}
	for _, p := range []Peer{stranger, {}} {
		for _, rq := range private {
			w := do(h, p, rq[0], rq[1], "")
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "may not read config vars or logs") {
				t.Errorf("%s %s by %+v: %d %s, want 403", rq[0], rq[1], p, w.Code, w.Body)
			}
		}
		for _, rq := range changes {
			w := do(h, p, rq[0], rq[1], rq[2])
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "may read but not change anything") {
				t.Errorf("%s %s by %+v: %d %s, want 403", rq[0], rq[1], p, w.Code, w.Body)
			}
		}
	}
	// The state is as it was: one app, no config.
	if w := do(h, root, "GET", "/v1/apps/a/config", ""); w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != "{}" {
		t.Errorf("config after the refused changes: %d %s", w.Code, w.Body)
	}
	var apps []api.App
	w := do(h, root, "GET", "/v1/apps", "")
	if json.Unmarshal(w.Body.Bytes(), &apps); len(apps) != 1 {
		t.Errorf("apps after the refused changes: %s", w.Body)
	}
}

// TestOversizedBody: a JSON body over 1 MiB is refused, not read whole.
func TestOversizedBody(t *testing.T) {
	h := newServer(newAgent(t)).Handler()
	body := `{"set":{"K":"` + strings.Repeat("v", 2<<20) + `"}}`
	w := do(h, root, "PATCH", "/v1/apps/a/config", body)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "too large") {
		t.Errorf("a 2 MiB body: %d %s", w.Code, w.Body)
	}
}

// apiRoutes are the routes with a JSON body, for FuzzAPIBodies.
var apiRoutes = [][2]string{
	{"POST", "/v1/apps"},
	{"POST", "/v1/apps/a/rollback"},
	{"POST", "/v1/apps/a/scale"},
	{"POST", "/v1/apps/a/restart"},
	{"PATCH", "/v1/apps/a/config"},
}

// FuzzAPIBodies sends arbitrary bodies to every route that decodes JSON,
// as root, through the real handler and a real agent. Bad input must get a
// 4xx answer (an error body) or an operation that fails with a result;
// never a panic or an internal error. The agent that takes app creations is
// frozen (as during an upgrade): creation validates everything, then stops
// before binding anything.
func FuzzAPIBodies(f *testing.F) {
	seeds := []string{
		`{"name":"b","sockets":["web=tcp://127.0.0.1:0"],"readiness":{"web":"notify"},"boot_timeout":"3s","user":"nobody","limits":["nofile=4096"]}`,
		`{"name":"b","sockets":["x/y=unix:///tmp/s?mode=0600"],"boot_timeout":1.5,"release_timeout":"1h","allow_root":true}`,
		`{"version":"v3"}`, `{"version":"3"}`, `{"formation":{"web":2,"worker":-1}}`, `{"type":"web"}`,
		`{"set":{"A":"1"},"unset":["B"]}`, `{"set":{"PORT":"1"}}`, `{}`, ``, `[]`, `null`, `{"name":1}`,
		`{"boot_timeout":"-5s"}`, `{"boot_timeout":1e308}`, `{"limits":["as=1G:2G","cpu=infinity"]}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	live := newAgent(f)
	frozen := newAgent(f)
	frozen.Freeze()
	hLive, hFrozen := newServer(live).Handler(), newServer(frozen).Handler()
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := apiRoutes[int(route)%len(apiRoutes)]
		h := hLive
		if rt[1] == "/v1/apps" {
			h = hFrozen
		}
		w := do(h, root, rt[0], rt[1], string(body))
		switch {
		case w.Code == http.StatusServiceUnavailable && rt[1] == "/v1/apps":
			// Valid all through: the frozen agent stopped it there.
		case w.Code >= 500:
			t.Fatalf("%s %s %q: %d %s", rt[0], rt[1], body, w.Code, w.Body)
		case w.Code >= 400:
			var e api.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Message == "" || e.Code == "" {
				t.Fatalf("%s %s %q: %d with a body that is no error: %s", rt[0], rt[1], body, w.Code, w.Body)
			}
		case w.Code == http.StatusOK && w.Header().Get("Content-Type") == "application/x-ndjson":
			res := lastResult(t, w.Body)
			if res == nil {
				t.Fatalf("%s %s %q: a stream without a result: %s", rt[0], rt[1], body, w.Body)
			}
			if res.Code == api.CodeInternal {
				t.Fatalf("%s %s %q: internal error %s", rt[0], rt[1], body, res.Error)
			}
		}
		if rt[1] == "/v1/apps/a/config" {
			// Keep the app's config from growing across inputs.
			cfg, _ := live.ConfigVars("a")
			var keys []string
			for k := range cfg {
				keys = append(keys, k)
			}
			if len(keys) > 0 {
				live.ChangeConfig("a", api.ConfigRequest{Unset: keys}, "", func(api.Event) {})
			}
		}
	})
}

func lastResult(t *testing.T, r io.Reader) *api.OpResult {
	t.Helper()
	var res *api.OpResult
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bad event line %q: %v", sc.Bytes(), err)
		}
		if ev.Type == "result" {
			res = ev.Result
		}
	}
	return res
}

// TestUploadStalls: an upload that sends nothing for UploadIdle fails its
// deploy in prepare with a clear message.
func TestUploadStalls(t *testing.T) {
	s := newServer(newAgent(t))
	s.UploadIdle = 200 * time.Millisecond
	srv := httptest.NewUnstartedServer(s.Handler())
	// httptest listens on TCP, where SO_PEERCRED tells nothing: the
	// requests count as root's.
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, peerKey{}, root)
	}
	srv.Start()
	defer srv.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte{0x1f, 0x8b}) // the start of a gzip stream, then nothing
	req, _ := http.NewRequest("POST", srv.URL+"/v1/apps/a/deploys", pr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	res := lastResult(t, resp.Body)
	if res == nil || res.OK || !strings.Contains(res.Error, "the upload stalled: nothing received for 200ms") {
		t.Fatalf("stalled upload: %+v", res)
	}
}

// TestOnlyRootGrantsRoot: a member of the admin group may create apps, but
// only root may create one that runs as root.
func TestOnlyRootGrantsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the rule applies when agentd runs as root")
	}
	g, err := user.LookupGroupId("65534")
	if err != nil {
		t.Skip("no group 65534 to stand for the admin group:", err)
	}
	s := newServer(newAgent(t))
	s.AdminGroup = g.Name
	h := s.Handler()
	member := Peer{UID: 65534, GID: 65534, PID: 1, Known: true}
	w := do(h, member, "POST", "/v1/apps", `{"name":"b","sockets":["web=tcp://127.0.0.1:0"],"allow_root":true}`)
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "only root may create an app that runs as root") {
		t.Errorf("--allow-root by a group member: %d %s", w.Code, w.Body)
	}
	w = do(h, member, "POST", "/v1/apps", `{"name":"b","sockets":["web=tcp://127.0.0.1:0"],"user":"nobody"}`)
	if w.Code != http.StatusCreated {
		t.Errorf("--user nobody by a group member: %d %s", w.Code, w.Body)
	}
	w = do(h, root, "POST", "/v1/apps", `{"name":"c","sockets":["web=tcp://127.0.0.1:0"],"allow_root":true}`)
	if w.Code != http.StatusCreated {
		t.Errorf("--allow-root by root: %d %s", w.Code, w.Body)
	}
}
