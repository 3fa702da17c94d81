package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d", rec.Code)
	}
	return rec.Body.String()
}

func has(t *testing.T, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, "\n"+w+"\n") {
			t.Errorf("scrape lacks %q", w)
		}
	}
}

func hasNot(t *testing.T, body string, not ...string) {
	t.Helper()
	for _, n := range not {
		if strings.Contains(body, n) {
			t.Errorf("scrape has %q", n)
		}
	}
}

func TestMetrics(t *testing.T) {
	two, one := 2, 1
	procs := []api.Process{
		{App: "web", Type: "web", Release: "v3", State: api.StateReady},
		{App: "web", Type: "web", Release: "v3", State: api.StateReady},
		{App: "web", Type: "web", Release: "v2", State: api.StateDraining, Connections: &two},
		{App: "web", Type: "web", Release: "v2", State: api.StateDraining, Connections: &one},
		{App: "web", Type: "web", Release: "v2", State: api.StateDraining}, // not counted yet
		{App: "api", Type: "worker", Release: "v1", State: api.StateStarting},
	}
	m := New("1.2.3", func() []api.Process { return procs })

	m.ActiveRelease("web", "")
	body := scrape(t, m)
	has(t, body,
		`agentd_deploys_total{app="web",kind="deploy",result="failed"} 0`,
		`agentd_deploys_total{app="web",kind="rollback",result="ok"} 0`,
		`agentd_processes_killed_total{app="web"} 0`,
		`agentd_drain_connections_cut_total{app="web"} 0`,
		`agentd_processes{app="web",release="v3",state="ready",type="web"} 2`,
		`agentd_processes{app="web",release="v2",state="draining",type="web"} 3`,
		`agentd_drain_open_connections{app="web"} 3`,
		`agentd_drain_open_connections{app="api"} 0`,
	)
	hasNot(t, body, "agentd_app_active_release_info{")
	if !strings.Contains(body, `agentd_build_info{goversion="go`) || !strings.Contains(body, `version="1.2.3"} 1`) {
		t.Errorf("no build info")
	}

	m.ActiveRelease("web", "v2")
	m.ActiveRelease("web", "v3")
	m.DeployDone("web", "deploy", ResultOK, []api.Phase{{Name: api.PhasePreboot, Seconds: 0.2}, {Name: api.PhaseDrain, Seconds: 31}})
	m.DrainDone("web", 31*time.Second, 1)
	m.ConnectionsCut("web", 4)
	m.CrashRestart("web", "web")
	m.ProcessReady("web", "web", 300*time.Millisecond)
	body = scrape(t, m)
	has(t, body,
		`agentd_app_active_release_info{app="web",release="v3"} 1`,
		`agentd_deploys_total{app="web",kind="deploy",result="ok"} 1`,
		`agentd_deploy_phase_duration_seconds_count{app="web",phase="preboot"} 1`,
		`agentd_deploy_phase_duration_seconds_count{app="web",phase="drain"} 1`,
		`agentd_drain_duration_seconds_bucket{app="web",le="60"} 1`,
		`agentd_processes_killed_total{app="web"} 1`,
		`agentd_drain_connections_cut_total{app="web"} 4`,
		`agentd_process_restarts_total{app="web",type="web"} 1`,
		`agentd_process_ready_duration_seconds_count{app="web",type="web"} 1`,
	)
	hasNot(t, body, `release="v2"} 1`)

	// A destroyed app leaves no series of its own behind.
	m.AppDestroyed("web")
	procs = procs[5:]
	body = scrape(t, m)
	hasNot(t, body, `app="web"`)
}
