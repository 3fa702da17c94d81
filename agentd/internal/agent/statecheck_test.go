package agent

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/state"
	"github.com/agentd/agentd/sockets"
)

// coherent is an app in a state agentd itself leaves: v2 active with web
// and worker, v1 retired, two processes of v2 running.
func coherent(t *testing.T) *appState {
	t.Helper()
	web, err := sockets.ParseSpec("web=tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm, err := sockets.ParseSpec("worker/admin=unix:///tmp/agentd-statecheck.sock?mode=0600")
	if err != nil {
		t.Fatal(err)
	}
	pf := map[string]string{"web": "./server", "worker": "./server --worker", "release": "./server migrate"}
	return &appState{
		Name: "a1", Sockets: []sockets.Spec{web, adm}, Bound: []string{"127.0.0.1:41234", "/tmp/agentd-statecheck.sock"},
		Formation: map[string]int{"web": 2, "worker": 1}, Readiness: map[string]string{"web": "notify"},
		BootTimeout: duration(time.Minute), DrainTimeout: duration(30 * time.Second),
		Releases: []*releaseState{
			{Version: 1, Status: api.StatusRetired, Procfile: pf, Order: []string{"web", "worker"}},
			{Version: 2, Status: api.StatusActive, Procfile: pf, Order: []string{"web", "worker"}},
		},
		Active: 2, LastVersion: 2,
		Processes: []procRecord{
			{Name: "web.1", Type: "web", Index: 1, Release: 2, PID: 4242, State: "ready"},
			{Name: "web.2", Type: "web", Index: 2, Release: 2, PID: 4243, State: "ready"},
			{Name: "worker.1", Type: "worker", Index: 1, Release: 2, PID: 4244, State: "ready"},
		},
	}
}

func TestCheckAppStateAcceptsCoherent(t *testing.T) {
	if err := checkAppState(coherent(t), "a1"); err != nil {
		t.Fatal(err)
	}
	// A type scaled under an older release stays in the formation when a
	// newer Procfile drops it: idle, not incoherent.
	st := coherent(t)
	st.Releases = append(st.Releases, &releaseState{Version: 3, Status: api.StatusActive, Procfile: map[string]string{"web": "./server"}, Order: []string{"web"}})
	st.Releases[1].Status = api.StatusRetired
	st.Active, st.LastVersion = 3, 3
	st.Processes = st.Processes[:1]
	st.Processes[0].Release = 3
	if err := checkAppState(st, "a1"); err != nil {
		t.Fatalf("worker=1 scaled under v2, v3 has no worker: %v", err)
	}
}

// TestCheckAppStateAcceptsAReleasePhase: the state saved while v3's
// release phase runs records its release process (retired, so no rollout
// counts it); an agentd killed then must find the file good, not fall
// back to the previous generation.
func TestCheckAppStateAcceptsAReleasePhase(t *testing.T) {
	st := coherent(t)
	st.Releases = append(st.Releases, &releaseState{Version: 3, Status: api.StatusPending, Procfile: st.Releases[1].Procfile, Order: []string{"web", "worker"}})
	st.LastVersion = 3
	st.Processes = append(st.Processes, procRecord{Name: "release", Type: "release", Release: 3, PID: 4245, State: "starting"})
	if err := checkAppState(st, "a1"); err != nil {
		t.Fatal(err)
	}
	// A release process of a release whose Procfile has no release: line
	// does not hold together.
	delete(st.Releases[2].Procfile, "release")
	if err := checkAppState(st, "a1"); err == nil {
		t.Fatal("a release process of a release without a release: line was accepted")
	}
}

// TestCheckAppStateAcceptsWhatAgentdWrites: the file a real CreateApp
// saves (no release yet) passes the check.
func TestCheckAppStateAcceptsWhatAgentdWrites(t *testing.T) {
	dir := t.TempDir()
	ag, err := New(Config{StateDir: dir, RuntimeDir: dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close(false) })
	if _, err := ag.CreateApp(api.AppCreate{Name: "a1", Sockets: []string{"web=tcp://127.0.0.1:0", "worker/q=unix://" + filepath.Join(dir, "q.sock")}, AllowRoot: true}); err != nil {
		t.Fatal(err)
	}
	var st appState
	if _, err := state.Load(filepath.Join(dir, "apps", "a1.json"), &st, func() error { return checkAppState(&st, "a1") }); err != nil {
		t.Fatal(err)
	}
}

func TestCheckAppStateRefuses(t *testing.T) {
	cases := []struct {
		name   string
		change func(st *appState)
		want   string // in the error
	}{
		{"active release missing", func(st *appState) { st.Releases = st.Releases[:1] }, "active release v2 is not in the release list"},
		{"active release negative", func(st *appState) { st.Active = -1 }, "active release -1"},
		{"formation for a type no Procfile has", func(st *appState) { st.Formation["clock"] = 1 }, `no release has a process type "clock"`},
		{"formation count out of range", func(st *appState) { st.Formation["web"] = 1000 }, "web=1000"},
		{"formation for the release phase", func(st *appState) { st.Formation["release"] = 1 }, `process type "release"`},
		{"socket address agentd refuses", func(st *appState) { st.Sockets[0].Addr = "tcp://example.com:80" }, "is not an IP address"},
		{"socket scheme unknown", func(st *appState) { st.Sockets[0].Addr = "udp://127.0.0.1:53" }, "want tcp://"},
		{"socket fields that disagree with the address", func(st *appState) { st.Sockets[0].Address = "0.0.0.0:80" }, "stored as tcp 0.0.0.0:80"},
		{"socket name refused", func(st *appState) { st.Sockets[0].Name = "probe" }, `"probe"`},
		{"duplicate socket names", func(st *appState) { st.Sockets[1].Name = "web" }, `socket name "web" twice`},
		{"no socket", func(st *appState) { st.Sockets, st.Bound = nil, nil }, "no socket"},
		{"more bound addresses than sockets", func(st *appState) { st.Bound = append(st.Bound, "x") }, "3 bound addresses for 2 sockets"},
		{"process of an unknown release", func(st *appState) { st.Processes[0].Release = 9 }, "web.1 (pid 4242) of release v9"},
		{"process of a type its release lacks", func(st *appState) { st.Processes[0].Type = "clock" }, `no process type "clock"`},
		{"pid twice", func(st *appState) { st.Processes[1].PID = 4242 }, "pid 4242 recorded for both"},
		{"pid 1", func(st *appState) { st.Processes[0].PID = 1 }, "pid 1"},
		{"release twice", func(st *appState) { st.Releases[0].Version = 2 }, "release v2 twice"},
		{"release beyond the last version", func(st *appState) { st.LastVersion = 1 }, "newer than the last version"},
		{"file of another app", func(st *appState) { st.Name = "a2" }, `holds app "a2"`},
		{"readiness refused", func(st *appState) { st.Readiness["web"] = "sometimes" }, "readiness of web"},
		{"null release", func(st *appState) { st.Releases = append(st.Releases, nil) }, "empty release"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := coherent(t)
			c.change(st)
			err := checkAppState(st, "a1")
			if !errors.Is(err, errIncoherent) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an incoherent state saying %q", err, c.want)
			}
		})
	}
	// Every reason at once, not the first only.
	st := coherent(t)
	st.Releases = st.Releases[:1]
	st.Formation["clock"] = 2
	err := checkAppState(st, "a1")
	for _, want := range []string{"not in the release list", "of release v2, which is not"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("several problems: %v, want it to say %q", err, want)
		}
	}
}

// TestCheckAppStateAcceptsARestart: in the middle of hctl restart the new
// web.1 of a release runs beside its old one; the file that says so is
// good (make soak found it refused, and the app left broken).
func TestCheckAppStateAcceptsARestart(t *testing.T) {
	st := coherent(t)
	twin := st.Processes[0]
	twin.PID = 4343
	st.Processes = append(st.Processes, twin)
	if err := checkAppState(st, "a1"); err != nil {
		t.Fatal(err)
	}
}
