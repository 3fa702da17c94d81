package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// scriptRuns is a counter of app.json's scripts and checks, registered
// on its first use, so that it lives in a file of its own.
type scriptRuns struct {
	mu  sync.Mutex
	vec *prometheus.CounterVec
}

// counter returns the counter, registering it with reg the first time.
func (s *scriptRuns) counter(reg *prometheus.Registry, opts prometheus.CounterOpts, labels ...string) *prometheus.CounterVec {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vec == nil {
		s.vec = prometheus.NewCounterVec(opts, labels)
		reg.MustRegister(s.vec)
	}
	return s.vec
}

// forget deletes a destroyed app's series, if the counter was registered.
func (s *scriptRuns) forget(l prometheus.Labels) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vec != nil {
		s.vec.DeletePartialMatch(l)
	}
}

// PostdrainDone counts a run of an app's scripts.agentd.postdrain that
// ended, by result (succeeded, failed):
// agentd_postdrain_runs_total.
func (m *Metrics) PostdrainDone(app, result string) {
	m.postdrain.counter(m.reg, prometheus.CounterOpts{
		Name: "agentd_postdrain_runs_total",
		Help: "Runs of app.json's scripts.agentd.postdrain that ended, by app and result (succeeded, failed).",
	}, "app", "result").WithLabelValues(app, result).Inc()
}

// LivenessRestart counts a process replaced because it failed an app.json
// liveness check: agentd_liveness_restarts_total.
func (m *Metrics) LivenessRestart(app, typ string) {
	m.liveness.counter(m.reg, prometheus.CounterOpts{
		Name: "agentd_liveness_restarts_total",
		Help: "Processes replaced (the zero-downtime way) because they failed an app.json liveness check, by app and process type.",
	}, "app", "type").WithLabelValues(app, typ).Inc()
}
