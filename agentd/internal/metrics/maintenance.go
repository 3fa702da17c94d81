package metrics

import "github.com/prometheus/client_golang/prometheus"

func newMaintenanceGauge() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentd_app_maintenance",
		Help: "1 while the app is in maintenance (its responder answers every request with 503), else 0, by app.",
	}, []string{"app"})
}

// Maintenance implements agent.MaintenanceObserver.
func (m *Metrics) Maintenance(app string, on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.maint.WithLabelValues(app).Set(v)
}
