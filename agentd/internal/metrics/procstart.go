package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// startBuckets are fine around issue 14's targets for a whole process
// start (3 ms median, 6 ms p99), and reach a loaded machine's 1 s.
var startBuckets = []float64{0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1}

// ProcessStarted observes the whole start of a process (the agent's
// optional observer): agentd_process_start_seconds, registered on its
// first use (lazyVec).
func (m *Metrics) ProcessStarted(app, typ string, d time.Duration) {
	m.starts.get(m.reg, func() *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentd_process_start_seconds",
			Help:    "The whole start of an app process, from agentd's first step of it (environment, notify socket, log file) through fork and exec of the shim, its cgroup placement and its record, to the go-ahead that lets the shim exec the app; by app and process type.",
			Buckets: startBuckets,
		}, []string{"app", "type"})
	}).WithLabelValues(app, typ).Observe(d.Seconds())
}
