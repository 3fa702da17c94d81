package metrics

import (
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

func TestProcessStartHistogram(t *testing.T) {
	m := New("1.2.3", func() []api.Process { return nil })
	hasNot(t, scrape(t, m), "agentd_process_start_seconds")
	m.ProcessStarted("shop", "web", 2200*time.Microsecond)
	m.ProcessStarted("shop", "web", 7*time.Millisecond)
	has(t, scrape(t, m),
		`agentd_process_start_seconds_bucket{app="shop",type="web",le="0.002"} 0`,
		`agentd_process_start_seconds_bucket{app="shop",type="web",le="0.0025"} 1`,
		`agentd_process_start_seconds_bucket{app="shop",type="web",le="0.006"} 1`,
		`agentd_process_start_seconds_bucket{app="shop",type="web",le="0.008"} 2`,
		`agentd_process_start_seconds_count{app="shop",type="web"} 2`)
	m.AppDestroyed("shop")
	hasNot(t, scrape(t, m), `app="shop"`)
}
