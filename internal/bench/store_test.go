package main

import (
	"strings"
	"testing"
)

func TestStoreReportAndTargets(t *testing.T) {
	s := &storeResults{Runs: 1, AppBoot: stat([]float64{0.005}), PeakRSSMiB: 40,
		Cases: []storeCase{
			{Name: "8 MiB of new files", MiB: 8, CpA: stat([]float64{0.1}), Manifest: stat([]float64{0.02})},
			{Name: "256 MiB of new files", MiB: 256, CpA: stat([]float64{2}), Manifest: stat([]float64{3.5})},
			{Name: "256 MiB, one 1 MiB file changed", MiB: 256, Manifest: stat([]float64{0.05})},
		},
		StartChain: []startCost{{"direct", stat([]float64{0.001})}, {"b", stat([]float64{0.008})}, {"c", stat([]float64{0.005})}, {"after", stat([]float64{0.0015})}},
	}
	met := map[string]bool{}
	for _, tg := range storeTargets(s) {
		met[tg.Name] = tg.Met
	}
	want := map[string]bool{
		"8 MiB release: new code live ≤ app boot + 30 ms":             true,
		"256 MiB of new files: within 1.5× of cp -a + sync":           false,
		"256 MiB, one file changed: new code live ≤ app boot + 30 ms": false,
		"agentd's RSS ≤ 64 MiB through 256 MiB deploys":               true,
		"process start chain ≤ 1 ms median over a direct fork+exec":   true,
	}
	for k, v := range want {
		if got, ok := met[k]; !ok || got != v {
			t.Errorf("target %q: met %v (present %v), want %v", k, got, ok, v)
		}
	}
	var b strings.Builder
	reportStore(&b, s)
	for _, w := range []string{"| 256 MiB, one 1 MiB file changed | – |", "| after | 1.50 ms | 500 µs |", "peak RSS (VmHWM) over these deploys: 40.0 MiB"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, b.String())
		}
	}
}
