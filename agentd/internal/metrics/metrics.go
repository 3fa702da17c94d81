// Package metrics exports what agentd does in the Prometheus format. It
// implements the agent's Observer, so the agent itself knows nothing of
// Prometheus. Label sets are bounded: apps, process types, releases of
// running processes, phases, kinds and results; never PIDs or request
// paths. A destroyed app's series are deleted. docs/metrics.md lists every
// metric.
package metrics

import (
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentd/agentd/agentd/api"
)

// Kinds of operation counted in agentd_deploys_total; each app starts with
// a zero for each kind and result, so that increase() sees the first one.
var Kinds = []string{"deploy", "rollback", "config", "restart", "scale", "release-phase", "maintenance"}

// Results of an operation.
const (
	ResultOK     = "ok"
	ResultFailed = "failed"
)

// Metrics holds agentd's metrics and their registry.
type Metrics struct {
	reg      *prometheus.Registry
	deploys  *prometheus.CounterVec
	phase    *prometheus.HistogramVec
	ready    *prometheus.HistogramVec
	drain    *prometheus.HistogramVec
	killed   *prometheus.CounterVec
	cut      *prometheus.CounterVec
	restarts *prometheus.CounterVec
	active   *prometheus.GaugeVec
	rollback *prometheus.CounterVec
	shed     *prometheus.CounterVec
	maint    *prometheus.GaugeVec
	cron     cronMetrics
	// postdrain: scripts.go, registered on first use.
	postdrain lazyVec[*prometheus.CounterVec]
	liveness  lazyVec[*prometheus.CounterVec]
	// starts: procstart.go, registered on first use.
	starts lazyVec[*prometheus.HistogramVec]

	mu      sync.Mutex
	current map[string]string // active release by app, for active
}

// bootBuckets span fast apps (tens of ms) to the 60 s boot timeout.
var bootBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// drainBuckets span an instant drain to the default 30 s drain timeout
// and beyond.
var drainBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}

// New registers agentd's metrics. procs lists the processes for the
// by-state gauges at scrape time.
func New(version string, procs func() []api.Process) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), current: map[string]string{}}
	m.deploys = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_deploys_total",
		Help: "Operations that change what runs (deploy, rollback, config, restart, scale, release-phase), by app, kind and result (ok, failed).",
	}, []string{"app", "kind", "result"})
	m.phase = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "agentd_deploy_phase_duration_seconds", Help: "Duration of each phase of an operation (prepare, release, preboot, readiness, cutover, drain), by app and phase.",
		Buckets: bootBuckets,
	}, []string{"app", "phase"})
	m.ready = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "agentd_process_ready_duration_seconds", Help: "Time from a process's start to its readiness, by app and process type.", Buckets: bootBuckets,
	}, []string{"app", "type"})
	m.drain = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "agentd_drain_duration_seconds", Help: "Time from SIGTERM until every process of a drain had exited (or was SIGKILLed), by app.", Buckets: drainBuckets,
	}, []string{"app"})
	m.killed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_processes_killed_total", Help: "Processes SIGKILLed because they outlived the drain timeout, by app.",
	}, []string{"app"})
	m.cut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_drain_connections_cut_total", Help: "Connections still open on processes SIGKILLed at the drain timeout, by app.",
	}, []string{"app"})
	m.restarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_process_restarts_total", Help: "Crash restarts of processes of the active release, by app and process type.",
	}, []string{"app", "type"})
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentd_app_active_release_info", Help: "The release that serves each app: 1, labelled with app and release.",
	}, []string{"app", "release"})
	m.rollback = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_rollbacks_total", Help: "Rollbacks agentd made by itself, by app and why (bake: the new release failed its bake window).",
	}, []string{"app", "why"})
	m.shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_drain_connections_shed_total", Help: "Connections of draining processes agentd closed itself at their deadline, at the app's shed rate, by app.",
	}, []string{"app"})
	m.maint = newMaintenanceGauge()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agentd_build_info", Help: "agentd's version and the Go version it was built with: 1, labelled.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.cron = newCronMetrics(m.reg)
	m.reg.MustRegister(m.deploys, m.phase, m.ready, m.drain, m.killed, m.cut, m.restarts, m.active, m.rollback, m.shed, m.maint, build,
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
		m.phase.WithLabelValues(app, p.Name).Observe(p.Seconds)
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

// ConnectionsCut implements agent.Observer.
func (m *Metrics) ConnectionsCut(app string, n int) {
	m.cut.WithLabelValues(app).Add(float64(n))
}

// CrashRestart implements agent.Observer.
func (m *Metrics) CrashRestart(app, typ string) {
	m.restarts.WithLabelValues(app, typ).Inc()
}

// ConnectionsShed implements agent.Observer.
func (m *Metrics) ConnectionsShed(app string, n int) {
	m.shed.WithLabelValues(app).Add(float64(n))
}

// Rollback implements agent.Observer.
func (m *Metrics) Rollback(app, why string) {
	m.rollback.WithLabelValues(app, why).Inc()
}

// ActiveRelease implements agent.Observer. The first call for an app also
// starts its counters at zero.
func (m *Metrics) ActiveRelease(app, release string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev, known := m.current[app]
	if !known {
		for _, k := range Kinds {
			m.deploys.WithLabelValues(app, k, ResultOK)
			m.deploys.WithLabelValues(app, k, ResultFailed)
		}
		m.killed.WithLabelValues(app)
		m.cut.WithLabelValues(app)
		m.rollback.WithLabelValues(app, "bake")
		m.shed.WithLabelValues(app)
	}
	if known && prev == release {
		return
	}
	if prev != "" {
		m.active.DeleteLabelValues(app, prev)
	}
	if release != "" {
		m.active.WithLabelValues(app, release).Set(1)
	}
	m.current[app] = release
}

// AppDestroyed implements agent.Observer: every series of the app goes.
func (m *Metrics) AppDestroyed(app string) {
	m.mu.Lock()
	delete(m.current, app)
	m.mu.Unlock()
	l := prometheus.Labels{"app": app}
	m.deploys.DeletePartialMatch(l)
	m.phase.DeletePartialMatch(l)
	m.ready.DeletePartialMatch(l)
	m.drain.DeletePartialMatch(l)
	m.killed.DeletePartialMatch(l)
	m.cut.DeletePartialMatch(l)
	m.restarts.DeletePartialMatch(l)
	m.postdrain.forget(l)
	m.liveness.forget(l)
	m.starts.forget(l)
	m.active.DeletePartialMatch(l)
	m.rollback.DeletePartialMatch(l)
	m.shed.DeletePartialMatch(l)
	m.maint.DeletePartialMatch(l)
	m.cron.deleteApp(l)
}

var (
	procDesc = prometheus.NewDesc("agentd_processes",
		"App processes agentd runs, by app, process type, release and state (starting, ready, draining, crashed).",
		[]string{"app", "type", "release", "state"}, nil)
	drainConnsDesc = prometheus.NewDesc("agentd_drain_open_connections",
		"Connections still open on the app's draining processes, counted every 0.5 s while they drain.",
		[]string{"app"}, nil)
)

// procCollector reads the processes at scrape time, so the gauges are
// never stale and a process that is gone leaves no series behind.
type procCollector struct{ list func() []api.Process }

func (c *procCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- procDesc
	ch <- drainConnsDesc
}

func (c *procCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ app, typ, release, state string }
	n := map[key]int{}
	open := map[string]int{}
	for _, p := range c.list() {
		n[key{p.App, p.Type, p.Release, p.State}]++
		if _, ok := open[p.App]; !ok {
			open[p.App] = 0
		}
		if p.State == api.StateDraining && p.Connections != nil {
			open[p.App] += *p.Connections
		}
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(procDesc, prometheus.GaugeValue, float64(v), k.app, k.typ, k.release, k.state)
	}
	for app, v := range open {
		ch <- prometheus.MustNewConstMetric(drainConnsDesc, prometheus.GaugeValue, float64(v), app)
	}
}
