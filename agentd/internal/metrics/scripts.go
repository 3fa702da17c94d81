package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// scriptRuns is a counter of app.json's scripts and checks, registered
// on its first use, so that it lives in a file of its own.
type scriptRuns struct {
	once sync.Once
	vec  *prometheus.CounterVec
}

// PostdrainDone counts a run of an app's scripts.agentd.postdrain that
// ended, by result (succeeded, failed, skipped):
// agentd_postdrain_runs_total.
func (m *Metrics) PostdrainDone(app, result string) {
	s := &m.postdrain
	s.once.Do(func() {
		s.vec = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_postdrain_runs_total",
			Help: "Runs of app.json's scripts.agentd.postdrain that ended, by app and result (succeeded, failed, skipped).",
		}, []string{"app", "result"})
		m.reg.MustRegister(s.vec)
	})
	s.vec.WithLabelValues(app, result).Inc()
}

// LivenessRestart counts a process replaced because it failed an app.json
// liveness check: agentd_liveness_restarts_total.
func (m *Metrics) LivenessRestart(app, typ string) {
	s := &m.liveness
	s.once.Do(func() {
		s.vec = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_liveness_restarts_total",
			Help: "Processes replaced (the zero-downtime way) because they failed an app.json liveness check, by app and process type.",
		}, []string{"app", "type"})
		m.reg.MustRegister(s.vec)
	})
	s.vec.WithLabelValues(app, typ).Inc()
}
