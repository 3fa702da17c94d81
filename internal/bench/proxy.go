package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/loadgen"
)

// proxyResults is scenario 3: what a proxy hop costs. The same app is
// reached three ways in each run: alone (binding its own port, no agentd),
// through agentd's socket (agentd holds the socket, the app accepts on it:
// nothing between client and app), and through nginx in front of agentd's
// socket. Each is loaded in a closed loop, one after the other, in an order
// that rotates from run to run.
type proxyResults struct {
	Seconds  float64            `json:"seconds_per_measurement"`
	Workers  int                `json:"workers"`
	Samples  []proxySample      `json:"samples"`
	Summary  []proxyTargetStats `json:"summary"`
	WrkRates map[string]Stat    `json:"wrk_rate,omitempty"` // target -> req/s (kept-alive GETs, wrk)
	// Ratios run by run, kept-alive POSTs.
	AgentdVsAlone Stat `json:"agentd_vs_alone_rate"`
	NginxVsAgentd Stat `json:"nginx_vs_agentd_rate"`
	// Ratios run by run, a new connection per POST.
	AgentdVsAloneNewConn Stat `json:"agentd_vs_alone_rate_new_conn"`
	NginxVsAgentdNewConn Stat `json:"nginx_vs_agentd_rate_new_conn"`
	// p99 ratios run by run.
	NginxVsAgentdP99        Stat `json:"nginx_vs_agentd_p99"`
	NginxVsAgentdP99NewConn Stat `json:"nginx_vs_agentd_p99_new_conn"`
}

type proxySample struct {
	Run    int     `json:"run"`
	Target string  `json:"target"`
	Client string  `json:"client"` // a loadgen kind, or "wrk"
	Rate   float64 `json:"rate"`   // successful requests/s
	P50    float64 `json:"p50_seconds,omitempty"`
	P99    float64 `json:"p99_seconds,omitempty"`
	Failed int64   `json:"failed"`
}

type proxyTargetStats struct {
	Target     string `json:"target"`
	Client     string `json:"client"`
	Rate       Stat   `json:"rate"`
	P50        Stat   `json:"p50_seconds"`
	P99        Stat   `json:"p99_seconds"`
	FailedRuns int    `json:"runs_with_failures"`
}

const (
	targetAlone  = "app alone"
	targetAgentd = "through agentd's socket"
	targetNginx  = "through nginx"
)

func proxyScenario(o options, bins binaries, dir string, res *results) (*proxyResults, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	const workers = 8
	out := &proxyResults{Seconds: o.proxyDur.Seconds(), Workers: workers, WrkRates: map[string]Stat{}}
	ag, err := harness.Start(bins.Bins, filepath.Join(dir, "agentd"), "--log-level", "info")
	if err != nil {
		return nil, err
	}
	atCleanup(ag.Stop)
	defer ag.Stop()
	am, err := newAgentdMethod(ag, bins, dir, "proxy", 0)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	alone, err := startApp(bins.BenchApp, mkdir(dir, "alone"), appEnv(0, port, "port", 0), 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer alone.stop(syscall.SIGTERM, 30*time.Second)
	urls := map[string]string{targetAlone: fmt.Sprintf("http://127.0.0.1:%d/", port), targetAgentd: am.url()}
	targets := []string{targetAlone, targetAgentd}
	if bins.Nginx != "" {
		nport, err := freePort()
		if err != nil {
			return nil, err
		}
		ng, err := startNginx(bins.Nginx, filepath.Join(dir, "nginx"), nport, am.addr)
		if err != nil {
			res.Skipped = append(res.Skipped, "proxy through nginx: "+err.Error())
			say("SKIP proxy through nginx: %v", err)
		} else {
			atCleanup(ng.stop)
			defer ng.stop()
			urls[targetNginx] = fmt.Sprintf("http://127.0.0.1:%d/", nport)
			targets = append(targets, targetNginx)
		}
	}
	clients := []loadgen.Kind{loadgen.KeepAlivePost, loadgen.NewConnPost}
	// Each target's measurement in a run is cut into slices taken in turn
	// with the other targets' (A B C, B C A, C A B), so that other work on
	// the machine, which comes and goes over seconds, weighs on all three
	// alike.
	const slicesPerRun = 3
	slice := o.proxyDur / slicesPerRun
	for run := 1; run <= o.runs; run++ {
		for _, kind := range clients {
			type acc struct {
				ok       int64
				secs     float64
				p50, p99 []float64
				failed   int64
			}
			accs := map[string]*acc{}
			for sl := range slicesPerRun {
				order := slices.Clone(targets)
				k := (run - 1 + sl) % len(order)
				order = append(order[k:], order[:k]...)
				for _, t := range order {
					r := loadgen.Do(context.Background(), loadgen.Config{URL: urls[t], Kind: kind, Workers: workers, Duration: slice, MaxRequests: 50_000_000})
					a := accs[t]
					if a == nil {
						a = &acc{}
						accs[t] = a
					}
					a.ok += r.OK
					a.secs += r.Elapsed.Seconds()
					a.p50 = append(a.p50, r.Latency.P50.Seconds())
					a.p99 = append(a.p99, r.Latency.P99.Seconds())
					a.failed += r.Failed
				}
			}
			for _, t := range targets {
				a := accs[t]
				s := proxySample{Run: run, Target: t, Client: string(kind), Rate: ratio(float64(a.ok), a.secs),
					P50: stat(a.p50).Median, P99: stat(a.p99).Median, Failed: a.failed}
				out.Samples = append(out.Samples, s)
				say("proxy run %d/%d %-24s %-15s %s p50 %s p99 %s failed %d", run, o.runs, t, kind, fmtRate(s.Rate), fmtDur(s.P50), fmtDur(s.P99), s.Failed)
			}
		}
		if bins.Wrk != "" {
			order := slices.Clone(targets)
			k := (run - 1) % len(order)
			order = append(order[k:], order[:k]...)
			for _, t := range order {
				rate, err := wrkRate(bins.Wrk, urls[t], slice)
				if err != nil {
					say("  wrk: %v", err)
					continue
				}
				out.Samples = append(out.Samples, proxySample{Run: run, Target: t, Client: "wrk", Rate: rate})
				say("proxy run %d/%d %-24s %-15s %s", run, o.runs, t, "wrk", fmtRate(rate))
			}
		}
	}
	for _, t := range targets {
		for _, c := range append(kindStrings(clients), "wrk") {
			var rate, p50, p99 []float64
			failedRuns := 0
			for _, s := range out.Samples {
				if s.Target == t && s.Client == c {
					rate = append(rate, s.Rate)
					if c != "wrk" {
						p50 = append(p50, s.P50)
						p99 = append(p99, s.P99)
					}
					if s.Failed > 0 {
						failedRuns++
					}
				}
			}
			if len(rate) == 0 {
				continue
			}
			if c == "wrk" {
				out.WrkRates[t] = stat(rate)
				continue
			}
			out.Summary = append(out.Summary, proxyTargetStats{Target: t, Client: c, Rate: stat(rate), P50: stat(p50), P99: stat(p99), FailedRuns: failedRuns})
		}
	}
	pair := func(a, b, client string, f func(proxySample) float64) Stat {
		var xs []float64
		for run := 1; run <= o.runs; run++ {
			var sa, sb *proxySample
			for i := range out.Samples {
				s := &out.Samples[i]
				if s.Run == run && s.Client == client {
					if s.Target == a {
						sa = s
					}
					if s.Target == b {
						sb = s
					}
				}
			}
			if sa != nil && sb != nil {
				xs = append(xs, ratio(f(*sa), f(*sb)))
			}
		}
		return stat(xs)
	}
	rateOf := func(s proxySample) float64 { return s.Rate }
	p99Of := func(s proxySample) float64 { return s.P99 }
	ka, nc := string(loadgen.KeepAlivePost), string(loadgen.NewConnPost)
	out.AgentdVsAlone = pair(targetAgentd, targetAlone, ka, rateOf)
	out.AgentdVsAloneNewConn = pair(targetAgentd, targetAlone, nc, rateOf)
	out.NginxVsAgentd = pair(targetNginx, targetAgentd, ka, rateOf)
	out.NginxVsAgentdNewConn = pair(targetNginx, targetAgentd, nc, rateOf)
	out.NginxVsAgentdP99 = pair(targetNginx, targetAgentd, ka, p99Of)
	out.NginxVsAgentdP99NewConn = pair(targetNginx, targetAgentd, nc, p99Of)
	return out, nil
}

func kindStrings(ks []loadgen.Kind) []string {
	var out []string
	for _, k := range ks {
		out = append(out, string(k))
	}
	return out
}

var wrkRateRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// wrkRate runs wrk (kept-alive GETs, 8 connections, 1 thread) for d and
// returns its requests/s, or an error if any request failed.
func wrkRate(bin, url string, d time.Duration) (float64, error) {
	secs := max(1, int(d.Seconds()+0.5)) // wrk takes whole seconds
	cmd := exec.Command(bin, "-t1", "-c8", "-d"+strconv.Itoa(secs)+"s", url)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	c, err := startChild("wrk", cmd)
	if err != nil {
		return 0, err
	}
	select {
	case <-c.done:
	case <-time.After(d + 30*time.Second):
		c.stop(syscall.SIGKILL, 5*time.Second)
		return 0, fmt.Errorf("wrk did not finish")
	}
	w := crossWindow{}
	parseWrk(out.String(), &w)
	if w.Error != "" {
		return 0, fmt.Errorf("%s", w.Error)
	}
	if w.Errors+w.Non2xx > 0 {
		return 0, fmt.Errorf("wrk saw %d errors and %d non-2xx answers", w.Errors, w.Non2xx)
	}
	m := wrkRateRe.FindStringSubmatch(out.String())
	if m == nil {
		return 0, fmt.Errorf("no Requests/sec in wrk's report")
	}
	return strconv.ParseFloat(m[1], 64)
}
