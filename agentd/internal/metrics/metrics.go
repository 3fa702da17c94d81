// Package metrics exports what agentd does in the Prometheus format. It
// implements the agent's Observer, so the agent itself knows nothing of
// Prometheus. Label sets are bounded: apps, process types, phases and
// results, never PIDs or request paths.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentd/agentd/agentd/api"
)

// Metrics holds agentd's metrics and their registry.
type Metrics struct {
	reg      *prometheus.Registry
	deploys  *prometheus.CounterVec
	phase    *prometheus.HistogramVec
	ready    *prometheus.HistogramVec
	drain    *prometheus.HistogramVec
	killed   *prometheus.CounterVec
	restarts *prometheus.CounterVec
}

// bootBuckets span fast apps (tens of ms) to the 60 s boot timeout.
var bootBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// New registers agentd's metrics. procs lists the processes for the
// by-state gauge at scrape time.
func New(version string, procs func() []api.Process) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.deploys = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_deploys_total", Help: "Operations that switch what runs (deploy, rollback, config, restart, scale), by app, kind and result.",
	}, []string{"app", "kind", "result"})
	m.phase = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "agentd_deploy_phase_duration_seconds", Help: "Duration of each deploy phase.", Buckets: bootBuckets,
	}, []string{"phase"})
	m.ready = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "agentd_process_ready_duration_seconds", Help: "Time from a process's start to its readiness.", Buckets: bootBuckets,
	}, []string{"app", "type"})
	m.drain = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "agentd_drain_duration_seconds", Help: "Time old processes took to exit after SIGTERM.", Buckets: bootBuckets,
	}, []string{"app"})
	m.killed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_processes_killed_total", Help: "Processes SIGKILLed because they outlived the drain timeout.",
	}, []string{"app"})
	m.restarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_process_restarts_total", Help: "Crash restarts of processes.",
	}, []string{"app", "type"})
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agentd_build_info", Help: "agentd's version.", ConstLabels: prometheus.Labels{"version": version},
	})
	build.Set(1)
	m.reg.MustRegister(m.deploys, m.phase, m.ready, m.drain, m.killed, m.restarts, build,
		&procCollector{list: procs},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// DeployDone implements agent.Observer.
func (m *Metrics) DeployDone(app, kind, result string, phases []api.Phase) {
	m.deploys.WithLabelValues(app, kind, result).Inc()
	for _, p := range phases {
		m.phase.WithLabelValues(p.Name).Observe(p.Seconds)
	}
}

// ProcessReady implements agent.Observer.
func (m *Metrics) ProcessReady(app, typ string, boot time.Duration) {
	m.ready.WithLabelValues(app, typ).Observe(boot.Seconds())
}

// DrainDone implements agent.Observer.
func (m *Metrics) DrainDone(app string, d time.Duration, killed int) {
	m.drain.WithLabelValues(app).Observe(d.Seconds())
	m.killed.WithLabelValues(app).Add(float64(killed))
}

// CrashRestart implements agent.Observer.
func (m *Metrics) CrashRestart(app, typ string) {
	m.restarts.WithLabelValues(app, typ).Inc()
}

var procDesc = prometheus.NewDesc("agentd_processes", "App processes by app, type and state.", []string{"app", "type", "state"}, nil)

type procCollector struct{ list func() []api.Process }

func (c *procCollector) Describe(ch chan<- *prometheus.Desc) { ch <- procDesc }

func (c *procCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ app, typ, state string }
	n := map[key]int{}
	for _, p := range c.list() {
		n[key{p.App, p.Type, p.State}]++
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(procDesc, prometheus.GaugeValue, float64(v), k.app, k.typ, k.state)
	}
}
