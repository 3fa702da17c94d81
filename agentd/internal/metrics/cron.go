package metrics

import "github.com/prometheus/client_golang/prometheus"

// cronMetrics count cron runs (docs/cron.md). The job label is the job's
// process name (cron.1): bounded by the entries of the app's app.json.
type cronMetrics struct {
	runs     *prometheus.CounterVec
	failures *prometheus.CounterVec
}

func newCronMetrics(reg *prometheus.Registry) cronMetrics {
	c := cronMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_cron_runs_total", Help: "Cron job runs started on this host, by app and job (cron.N).",
		}, []string{"app", "job"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_cron_failures_total", Help: "Cron job runs that exited non-zero or were killed by a signal, by app and job (cron.N).",
		}, []string{"app", "job"}),
	}
	reg.MustRegister(c.runs, c.failures)
	return c
}

// CronRun counts a run started (agent's cronObserver); the job's failure
// counter starts at zero with it, so that increase() sees the first one.
func (m *Metrics) CronRun(app, job string) {
	m.cron.runs.WithLabelValues(app, job).Inc()
	m.cron.failures.WithLabelValues(app, job)
}

// CronFailed counts a run that did not exit 0.
func (m *Metrics) CronFailed(app, job string) {
	m.cron.failures.WithLabelValues(app, job).Inc()
}

func (c cronMetrics) deleteApp(l prometheus.Labels) {
	c.runs.DeletePartialMatch(l)
	c.failures.DeletePartialMatch(l)
}
