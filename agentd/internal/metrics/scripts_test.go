package metrics

import (
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

func TestAppJSONCounters(t *testing.T) {
	m := New("1.2.3", func() []api.Process { return nil })
	hasNot(t, scrape(t, m), "agentd_postdrain_runs_total", "agentd_liveness_restarts_total")
	m.PostdrainDone("shop", "failed")
	m.PostdrainDone("shop", "failed")
	m.PostdrainDone("shop", "succeeded")
	m.LivenessRestart("shop", "web")
	has(t, scrape(t, m),
		`agentd_postdrain_runs_total{app="shop",result="failed"} 2`,
		`agentd_postdrain_runs_total{app="shop",result="succeeded"} 1`,
		`agentd_liveness_restarts_total{app="shop",type="web"} 1`)
	m.AppDestroyed("shop")
	hasNot(t, scrape(t, m), `app="shop"`)
}
