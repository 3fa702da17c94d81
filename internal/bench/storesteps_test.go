package main

import (
	"math"
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

func TestStoreStepsFromHctlAndPhases(t *testing.T) {
	stderr := "-----> upload: sent 1 of 258 files (1.0 MB of 277.5 MB) in 21ms; hashed 1 files (1.0 MB) in 850µs\n-----> prepare: ...\n"
	res := &api.OpResult{Phases: []api.Phase{{Name: api.PhasePrepare, Seconds: 0.013}, {Name: api.PhasePreboot, Seconds: 0.002},
		{Name: api.PhaseReadiness, Seconds: 0.020}, {Name: api.PhaseCutover, Seconds: 0.001}, {Name: api.PhaseDrain, Seconds: 0.5}}}
	st, err := parseSteps(stderr, res, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	want := storeStep{Scan: 0.00085, Upload: 0.021, Prepare: 0.013, Preboot: 0.002, Readiness: 0.020, Total: 0.1}
	if st != want {
		t.Errorf("steps %+v, want %+v", st, want)
	}
	ss := stepStats([]storeStep{st})
	if rest := ss.Rest.Median; math.Abs(rest-0.04315) > 1e-9 {
		t.Errorf("rest %v, want the whole less the steps (43.15 ms)", rest)
	}
	staged := "-----> upload: sent 8 of 10 files (8.4 MB of 17.4 MB) in 20ms; hashed 10 files (17.4 MB) in 426µs, as agentd read them\n"
	if st, err := parseSteps(staged, res, 0.1); err != nil || st.Scan != 0.000426 || st.Upload != 0.020 {
		t.Errorf("a line of files agentd hashed: %+v, %v", st, err)
	}
	if _, err := parseSteps("-----> prepare: no upload line\n", res, 0.1); err == nil {
		t.Error("output without hctl's upload line: no error")
	}
	var b strings.Builder
	reportSteps(&b, &storeResults{Cases: []storeCase{{Name: "8 MiB of new files", Steps: ss}}})
	if !strings.Contains(b.String(), "| 8 MiB of new files | 850 µs | 21.0 ms | 13.0 ms |") {
		t.Errorf("steps table:\n%s", b.String())
	}
}
