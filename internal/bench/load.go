package main

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/agentd/agentd/internal/loadgen"
)

// Load modes: an open loop sends at a fixed rate whatever the latency (so a
// stall shows as latency, not as a lower rate); a closed loop sends each
// worker's next request as soon as the previous one ended (as fast as the
// server allows).
const (
	modeOpen   = "open"
	modeClosed = "closed"
)

// loadConfig is the load every deploy scenario gets, the same for agentd and
// each alternative.
type loadConfig struct {
	Rate          float64       `json:"rate_per_kind"`  // open loop, requests/s per client kind
	OpenWorkers   int           `json:"open_workers"`   // per kind
	ClosedWorkers int           `json:"closed_workers"` // per kind
	Timeout       time.Duration `json:"timeout_ns"`     // per request
}

// kindResult is one client kind's outcome over one load window.
type kindResult struct {
	Kind    string           `json:"kind"`
	Mode    string           `json:"mode"`
	Sent    int64            `json:"sent"`
	OK      int64            `json:"ok"`
	Failed  int64            `json:"failed"`
	ByClass map[string]int64 `json:"by_class,omitempty"`
	Late    int64            `json:"late,omitempty"`
	Retried int64            `json:"retried,omitempty"`
	Seconds float64          `json:"seconds"`
	P50     float64          `json:"p50_seconds"`
	P99     float64          `json:"p99_seconds"`
	Max     float64          `json:"max_seconds"`
	Errors  []string         `json:"errors,omitempty"`
	// Failures locates the first failed requests in the window.
	Failures []failureAt `json:"failures,omitempty"`
}

// failureAt is one failed request: when it was sent (seconds since the
// window started), how long until it failed, and its class.
type failureAt struct {
	At    float64 `json:"at"`
	Took  float64 `json:"took"`
	Class string  `json:"class"`
}

func (k kindResult) rate() float64 { return ratio(float64(k.OK), k.Seconds) }

// loadSet is the three client kinds sending at once.
type loadSet struct {
	mode string
	runs []*loadgen.Run
}

// startLoad starts every client kind against url in mode.
func startLoad(url, mode string, lc loadConfig) (*loadSet, error) {
	ls := &loadSet{mode: mode}
	for _, k := range loadgen.AllKinds {
		cfg := loadgen.Config{URL: url, Kind: k, Timeout: lc.Timeout, MaxRequests: 20_000_000, Duration: 30 * time.Minute}
		if mode == modeOpen {
			cfg.Rate, cfg.Workers = lc.Rate, lc.OpenWorkers
		} else {
			cfg.Workers = lc.ClosedWorkers
		}
		r, err := loadgen.Start(context.Background(), cfg)
		if err != nil {
			ls.stop()
			return nil, fmt.Errorf("load %s %s: %w", mode, k, err)
		}
		ls.runs = append(ls.runs, r)
	}
	return ls, nil
}

// stop ends the load, waits for every request in flight and returns one
// result per kind.
func (ls *loadSet) stop() []kindResult {
	var out []kindResult
	for _, r := range ls.runs {
		out = append(out, toKindResult(r.Stop(), ls.mode))
	}
	return out
}

func toKindResult(r loadgen.Result, mode string) kindResult {
	k := kindResult{
		Kind: string(r.Kind), Mode: mode, Sent: r.Sent, OK: r.OK, Failed: r.Failed,
		ByClass: maps.Clone(r.ByClass), Late: r.Late, Retried: r.Retried, Seconds: r.Elapsed.Seconds(),
		P50: r.Latency.P50.Seconds(), P99: r.Latency.P99.Seconds(), Max: r.Latency.Max.Seconds(),
	}
	if len(r.Errors) > 0 {
		k.Errors = r.Errors[:min(3, len(r.Errors))]
	}
	for _, f := range r.Failures[:min(20, len(r.Failures))] {
		k.Failures = append(k.Failures, failureAt{At: f.At.Seconds(), Took: f.Took.Seconds(), Class: f.Class})
	}
	if len(k.ByClass) == 0 {
		k.ByClass = nil
	}
	return k
}

// totals adds up kind results.
func totals(ks []kindResult) (sent, failed int64, byClass map[string]int64) {
	byClass = map[string]int64{}
	for _, k := range ks {
		sent += k.Sent
		failed += k.Failed
		for c, n := range k.ByClass {
			byClass[c] += n
		}
	}
	return sent, failed, byClass
}

// find returns the result of kind in ks.
func find(ks []kindResult, kind loadgen.Kind) (kindResult, bool) {
	for _, k := range ks {
		if k.Kind == string(kind) {
			return k, true
		}
	}
	return kindResult{}, false
}

// steady runs load for d without any deploy: the baseline.
func steady(url string, lc loadConfig, d time.Duration) ([]kindResult, error) {
	ls, err := startLoad(url, modeOpen, lc)
	if err != nil {
		return nil, err
	}
	time.Sleep(d)
	return ls.stop(), nil
}
