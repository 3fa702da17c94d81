package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The counters of app.json's scripts and checks are registered on their
// first use (lazyVec).

// PostdrainDone counts a run of an app's scripts.agentd.postdrain that
// ended, by result (succeeded, failed):
// agentd_postdrain_runs_total.
func (m *Metrics) PostdrainDone(app, result string) {
	m.postdrain.get(m.reg, func() *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_postdrain_runs_total",
			Help: "Runs of app.json's scripts.agentd.postdrain that ended, by app and result (succeeded, failed).",
		}, []string{"app", "result"})
	}).WithLabelValues(app, result).Inc()
}

// LivenessRestart counts a process replaced because it failed an app.json
// liveness check: agentd_liveness_restarts_total.
func (m *Metrics) LivenessRestart(app, typ string) {
	m.liveness.get(m.reg, func() *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_liveness_restarts_total",
			Help: "Processes replaced (the zero-downtime way) because they failed an app.json liveness check, by app and process type.",
		}, []string{"app", "type"})
	}).WithLabelValues(app, typ).Inc()
}
