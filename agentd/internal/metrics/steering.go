package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentd/agentd/agentd/api"
)

var (
	steeredDesc = prometheus.NewDesc("agentd_steered_connections_total",
		"New connections the kernel steering program sent to each release's socket of an app socket, since agentd started.",
		[]string{"app", "socket", "release"}, nil)
	canaryDesc = prometheus.NewDesc("agentd_canary_percent",
		"The share of new connections an app's canary release gets (absent without a canary).",
		[]string{"app", "release"}, nil)
)

// steeringCollector reads the steering program's counters at scrape time.
type steeringCollector struct {
	list func() ([]api.SteeredCount, []api.CanaryShare)
}

// WatchSteering adds the steering metrics, read from list at each scrape.
func (m *Metrics) WatchSteering(list func() ([]api.SteeredCount, []api.CanaryShare)) {
	m.reg.MustRegister(&steeringCollector{list: list})
}

func (c *steeringCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- steeredDesc
	ch <- canaryDesc
}

func (c *steeringCollector) Collect(ch chan<- prometheus.Metric) {
	counts, canaries := c.list()
	for _, s := range counts {
		ch <- prometheus.MustNewConstMetric(steeredDesc, prometheus.CounterValue, float64(s.Connections), s.App, s.Socket, s.Release)
	}
	for _, cs := range canaries {
		ch <- prometheus.MustNewConstMetric(canaryDesc, prometheus.GaugeValue, cs.Percent, cs.App, cs.Release)
	}
}
