package main

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Where a manifest deploy's time goes, step by step: hctl's own figures
// (its scan of the tree, with its own hashing where it did any; the
// upload: the files agentd hashed as it read them, the manifest, the
// sending)
// from its upload line, and agentd's phases up to the switch from the
// result, each timed where it happens. What is left of the whole (hctl's
// own start, the requests' round trips, the switch at the start of the
// cutover, the first answer reaching the poller) is "the rest".

// storeStep is one deploy's steps, in seconds.
type storeStep struct {
	Scan, Upload, Prepare, Preboot, Readiness, Total float64
}

// storeSteps are the medians over a case's deploys.
type storeSteps struct {
	Scan      Stat `json:"hctl_scan_seconds"`
	Upload    Stat `json:"hctl_upload_seconds"`
	Prepare   Stat `json:"prepare_seconds"`
	Preboot   Stat `json:"preboot_seconds"`
	Readiness Stat `json:"readiness_seconds"`
	// Rest is the whole (hctl deploy to the first new answer, the app's
	// boot not subtracted) less every step above.
	Rest  Stat `json:"rest_seconds"`
	Total Stat `json:"total_seconds"`
}

// uploadLineRE reads hctl's "-----> upload: sent ... in 21ms; hashed ...
// in 9ms", which may end ", as agentd read them".
var uploadLineRE = regexp.MustCompile(`upload: sent .* in (\S+); hashed .* in ([^\s,]+)`)

// parseSteps reads one deploy's steps from hctl's stderr and its result;
// total is hctl deploy to the first answer from the new release.
func parseSteps(stderr string, res *api.OpResult, total float64) (storeStep, error) {
	st := storeStep{Total: total}
	m := uploadLineRE.FindStringSubmatch(stderr)
	if m == nil {
		return st, fmt.Errorf("no upload line in hctl's output:\n%s", stderr)
	}
	for i, p := range []*float64{&st.Upload, &st.Scan} {
		d, err := time.ParseDuration(m[i+1])
		if err != nil {
			return st, fmt.Errorf("upload line %q: %w", m[0], err)
		}
		*p = d.Seconds()
	}
	for _, ph := range res.Phases {
		switch ph.Name {
		case api.PhasePrepare:
			st.Prepare = ph.Seconds
		case api.PhasePreboot:
			st.Preboot = ph.Seconds
		case api.PhaseReadiness:
			st.Readiness = ph.Seconds
		}
	}
	return st, nil
}

func stepStats(xs []storeStep) *storeSteps {
	if len(xs) == 0 {
		return nil
	}
	col := func(f func(storeStep) float64) Stat {
		var v []float64
		for _, x := range xs {
			v = append(v, f(x))
		}
		return stat(v)
	}
	return &storeSteps{
		Scan:      col(func(x storeStep) float64 { return x.Scan }),
		Upload:    col(func(x storeStep) float64 { return x.Upload }),
		Prepare:   col(func(x storeStep) float64 { return x.Prepare }),
		Preboot:   col(func(x storeStep) float64 { return x.Preboot }),
		Readiness: col(func(x storeStep) float64 { return x.Readiness }),
		Rest: col(func(x storeStep) float64 {
			return x.Total - x.Scan - x.Upload - x.Prepare - x.Preboot - x.Readiness
		}),
		Total: col(func(x storeStep) float64 { return x.Total }),
	}
}

// reportSteps writes the table of where the time went.
func reportSteps(b *strings.Builder, s *storeResults) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("Where a manifest deploy's time went (medians; the app's boot not subtracted: it is most of readiness). ")
	p("**scan**: hctl's listing of the tree, hashing what its cache cannot vouch for; **upload**: the manifest, agentd's answer and the sending of what it lacks (both from hctl's upload line); ")
	p("**prepare** to **readiness**: agentd's phases up to the switch, timed by agentd; **rest**: the whole less the steps (hctl's own start, the requests' round trips, the switch, the first answer reaching the poller).\n\n")
	p("| release | scan | upload | prepare | preboot | readiness | rest | whole |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range s.Cases {
		if st := c.Steps; st != nil {
			p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", c.Name, fmtDur(st.Scan.Median), fmtDur(st.Upload.Median), fmtDur(st.Prepare.Median),
				fmtDur(st.Preboot.Median), fmtDur(st.Readiness.Median), fmtDur(st.Rest.Median), fmtDur(st.Total.Median))
		}
	}
	p("\n")
}
