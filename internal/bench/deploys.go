package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/loadgen"
)

// blockResult is one method's deploys in one run: a steady window without
// deploys, then half the deploys under open-loop load and half under
// closed-loop load.
type blockResult struct {
	Method        string       `json:"method"`
	Run           int          `json:"run"`
	Steady        []kindResult `json:"steady"`
	Open          []kindResult `json:"open"`
	OpenDeploys   int          `json:"open_deploys"`
	OpenSeconds   float64      `json:"open_seconds"`
	Closed        []kindResult `json:"closed"`
	ClosedDeploys int          `json:"closed_deploys"`
	Deploys       []deployStat `json:"deploys"`
	Seconds       float64      `json:"seconds"`
	Error         string       `json:"error,omitempty"`
	// FailedDeploys counts deploys that failed (the old release kept
	// serving, as it should); DeployErrors are their first errors.
	FailedDeploys int      `json:"failed_deploys,omitempty"`
	DeployErrors  []string `json:"deploy_errors,omitempty"`
}

// maxFailedDeploys ends a block early: a method that keeps failing has
// nothing more to show.
const maxFailedDeploys = 3

// deployResults is scenarios 1 and 2.
type deployResults struct {
	Load    loadConfig                `json:"load"`
	Methods []string                  `json:"methods"`
	Blocks  []blockResult             `json:"blocks"`
	Summary map[string]*methodSummary `json:"summary"`
	Ratios  map[string]*ratioSummary  `json:"ratios_vs_agentd"`
	// ArtifactMiB is the size of the app's binary in agentd's artifact.
	ArtifactMiB float64 `json:"artifact_binary_mib"`
	// StartCosts is what starting a process costs here, idle.
	StartCosts []startCost `json:"process_start_costs"`
}

// latencySummary compares the open-loop latency of one client kind in the
// steady window and in the deploy window, over runs.
type latencySummary struct {
	SteadyP50 Stat `json:"steady_p50"`
	DeployP50 Stat `json:"deploy_p50"`
	SteadyP99 Stat `json:"steady_p99"`
	DeployP99 Stat `json:"deploy_p99"`
	SteadyMax Stat `json:"steady_max"`
	DeployMax Stat `json:"deploy_max"`
	// P99Inflation is deploy-window p99 / steady p99, run by run.
	P99Inflation Stat `json:"p99_inflation"`
}

// methodSummary is one method's figures over every run.
type methodSummary struct {
	Runs            int                        `json:"runs"`
	DeploysPerRun   Stat                       `json:"deploys_per_run"`
	RequestsPerRun  Stat                       `json:"requests_per_run"`
	FailedPerRun    Stat                       `json:"failed_per_run"`
	FailedPerDeploy Stat                       `json:"failed_per_deploy"`
	FailedTotal     int64                      `json:"failed_total"`
	RequestsTotal   int64                      `json:"requests_total"`
	DeploysTotal    int                        `json:"deploys_total"`
	ByClass         map[string]Stat            `json:"failed_by_class_per_run"`
	ByKind          map[string]Stat            `json:"failed_by_kind_per_run"` // "open keepalive-post"
	Latency         map[string]*latencySummary `json:"latency"`                // by kind, open loop
	ClosedRate      Stat                       `json:"closed_loop_rate"`       // OK req/s, all kinds, deploy window
	Late            int64                      `json:"late_total"`
	Retried         int64                      `json:"retried_total"`
	Switch          Stat                       `json:"switch_seconds"` // over deploys
	Boot            Stat                       `json:"boot_seconds"`
	Overhead        Stat                       `json:"overhead_seconds"`
	Exec            Stat                       `json:"exec_seconds"`
	Direct          Stat                       `json:"direct_boot_seconds"`
	DirectExec      Stat                       `json:"direct_exec_seconds"`
	Around          Stat                       `json:"around_seconds"`
	Drain           Stat                       `json:"drain_seconds"`
	Wall            Stat                       `json:"wall_seconds"`
	Prepare         Stat                       `json:"prepare_seconds"`
	Killed          int                        `json:"killed_total"`
	FailedDeploys   int                        `json:"failed_deploys_total"`
	Errors          []string                   `json:"errors,omitempty"`
}

// ratioSummary compares an alternative with agentd, run by run.
type ratioSummary struct {
	// ExcessFailedPerDeploy is the alternative's failed requests per deploy
	// minus agentd's, in the same run.
	ExcessFailedPerDeploy Stat `json:"excess_failed_per_deploy"`
	// P99Ratio is the alternative's deploy-window p99 over agentd's, per
	// client kind (open loop).
	P99Ratio map[string]Stat `json:"deploy_p99_ratio"`
	// SwitchRatio is the alternative's median switch time over agentd's.
	SwitchRatio Stat `json:"switch_ratio"`
	// ClosedRateRatio is the closed-loop throughput during deploys over
	// agentd's.
	ClosedRateRatio Stat `json:"closed_rate_ratio"`
}

// deployScenario runs agentd and the alternatives, block by block, run by
// run, with the same app and load.
func deployScenario(o options, bins binaries, dir string, res *results) (*deployResults, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lc := loadConfig{Rate: o.rate, OpenWorkers: 4, ClosedWorkers: 2, Timeout: 5 * time.Second}
	out := &deployResults{Load: lc, Summary: map[string]*methodSummary{}, Ratios: map[string]*ratioSummary{}}
	if fi, err := os.Stat(bins.BenchApp); err == nil {
		out.ArtifactMiB = float64(fi.Size()) / (1 << 20)
	}

	n := 30
	if o.quick {
		n = 10
	}
	say("deploys: process start costs, idle (%d each)", n)
	out.StartCosts = processStartCosts(bins, n)
	for _, sc := range out.StartCosts {
		say("  %-62s %s", sc.What, sc.Seconds.format(fmtDur))
	}
	say("deploys: starting agentd")
	ag, err := harness.Start(bins.Bins, filepath.Join(dir, "agentd"), "--log-level", "info")
	if err != nil {
		return nil, err
	}
	atCleanup(ag.Stop)
	defer ag.Stop()
	var methods []method
	am, err := newAgentdMethod(ag, bins, dir, "bench", o.bootDelay)
	if err != nil {
		return nil, err
	}
	methods = append(methods, am)
	pm, err := newPlainMethod(bins, mkdir(dir, "plain"), o.bootDelay)
	if err != nil {
		return nil, err
	}
	methods = append(methods, pm)
	rm, err := newReuseportMethod(bins, mkdir(dir, "reuseport"), o.bootDelay)
	if err != nil {
		return nil, err
	}
	methods = append(methods, rm)
	if bins.Nginx != "" {
		nm, err := newNginxMethod(bins, mkdir(dir, "nginx-bg"), o.bootDelay)
		if err != nil {
			res.Skipped = append(res.Skipped, "nginx blue/green: "+err.Error())
			say("SKIP nginx blue/green: %v", err)
		} else {
			methods = append(methods, nm)
		}
	}
	for _, m := range methods {
		atCleanup(m.close)
		out.Methods = append(out.Methods, m.name())
	}
	defer func() {
		for _, m := range methods {
			m.close()
		}
	}()

	seq := map[string]*int{}
	for _, m := range methods {
		seq[m.name()] = new(int)
	}
	for run := 1; run <= o.runs; run++ {
		// Rotate the order, so that no method always runs first (or
		// last) in a run.
		order := slices.Clone(methods)
		k := (run - 1) % len(order)
		order = append(order[k:], order[:k]...)
		for _, m := range order {
			n := o.altDeploys
			if m.name() == "agentd" {
				n = o.deploys
			}
			b := runBlock(m, n, seq[m.name()], lc, o.steady, o.pace)
			b.Run = run
			out.Blocks = append(out.Blocks, b)
			say("deploys run %d/%d %-17s %s", run, o.runs, m.name(), b.line())
			if b.Error != "" {
				say("  error: %s", b.Error)
			}
			if m.name() == "agentd" {
				// Every failure agentd lets through is worth a look.
				for _, k := range append(slices.Clone(b.Open), b.Closed...) {
					if k.Failed > 0 {
						say("  %s %s: %d failed %v: %v", k.Mode, k.Kind, k.Failed, k.ByClass, k.Errors)
					}
				}
			}
		}
	}
	summarize(out)
	return out, nil
}

func mkdir(parent, name string) string {
	d := filepath.Join(parent, name)
	os.MkdirAll(d, 0o755)
	return d
}

// runBlock deploys n releases with m under load: a steady window first,
// then n/2 deploys under open-loop load and the rest under closed-loop load.
// A deploy starts pace after the previous one started, or when it ended if
// it took longer.
func runBlock(m method, n int, seq *int, lc loadConfig, steadyDur, pace time.Duration) blockResult {
	b := blockResult{Method: m.name()}
	t0 := time.Now()
	var err error
	if b.Steady, err = steady(m.url(), lc, steadyDur); err != nil {
		b.Error = err.Error()
		return b
	}
	phases := []struct {
		mode string
		n    int
	}{{modeOpen, n / 2}, {modeClosed, n - n/2}}
	for _, ph := range phases {
		ls, err := startLoad(m.url(), ph.mode, lc)
		if err != nil {
			b.Error = err.Error()
			return b
		}
		tp := time.Now()
		// Let every client connect before the first deploy.
		time.Sleep(200 * time.Millisecond)
		done := 0
		for k := range ph.n {
			if k > 0 {
				time.Sleep(time.Until(tp.Add(200*time.Millisecond + time.Duration(k)*pace)))
			}
			*seq++
			at := time.Since(tp)
			st, err := m.deploy(*seq)
			if err != nil {
				// A failed deploy is a finding, not the end of the run:
				// count it, and go on while the old release serves.
				b.FailedDeploys++
				if len(b.DeployErrors) < 5 {
					b.DeployErrors = append(b.DeployErrors, err.Error())
				}
				say("  %s deploy %d failed: %s", m.name(), *seq, lastLines(err.Error(), 2))
				if b.FailedDeploys >= maxFailedDeploys {
					b.Error = fmt.Sprintf("%d deploys failed; the block was cut short", b.FailedDeploys)
					break
				}
				continue
			}
			st.Mode, st.At, st.End = ph.mode, at.Seconds(), time.Since(tp).Seconds()
			b.Deploys = append(b.Deploys, st)
			if os.Getenv("BENCH_DEBUG") != "" {
				fmt.Printf("  %s %s #%d switch %s boot %s exec %s direct %s overhead %s around %s drain %s wall %s\n", m.name(), ph.mode, *seq, fmtDur(st.Switch), fmtDur(st.Boot), fmtDur(st.Exec), fmtDur(st.Direct), fmtDur(st.Overhead()), fmtDur(st.Around()), fmtDur(st.Drain), fmtDur(st.Wall))
			}
			done++
		}
		// The last drain's effects reach the clients within a moment.
		time.Sleep(200 * time.Millisecond)
		ks := ls.stop()
		if ph.mode == modeOpen {
			b.Open, b.OpenDeploys, b.OpenSeconds = ks, done, time.Since(tp).Seconds()
		} else {
			b.Closed, b.ClosedDeploys = ks, done
		}
		if b.Error != "" {
			break
		}
	}
	b.Seconds = time.Since(t0).Seconds()
	return b
}

// line is a one-line progress summary of a block.
func (b blockResult) line() string {
	sent, failed, _ := totals(append(slices.Clone(b.Open), b.Closed...))
	sw := stat(collect(b.Deploys, func(d deployStat) float64 { return d.Switch }))
	ov := stat(collect(b.Deploys, func(d deployStat) float64 { return d.Overhead() }))
	return fmt.Sprintf("%3d deploys in %5.1fs: %7d requests, %5d failed; switch %s, overhead %s",
		len(b.Deploys), b.Seconds, sent, failed, sw.format(fmtDur), ov.format(fmtDur))
}

// summarize computes every method's summary and the run-by-run ratios.
func summarize(out *deployResults) {
	byRun := map[int]map[string]*blockResult{}
	for i := range out.Blocks {
		b := &out.Blocks[i]
		if byRun[b.Run] == nil {
			byRun[b.Run] = map[string]*blockResult{}
		}
		byRun[b.Run][b.Method] = b
	}
	for _, name := range out.Methods {
		var bs []*blockResult
		for i := range out.Blocks {
			if out.Blocks[i].Method == name {
				bs = append(bs, &out.Blocks[i])
			}
		}
		out.Summary[name] = summarizeMethod(bs)
	}
	for _, name := range out.Methods {
		if name == "agentd" {
			continue
		}
		rs := &ratioSummary{P99Ratio: map[string]Stat{}}
		var excess, sw, rate []float64
		p99 := map[string][]float64{}
		for _, runs := range byRun {
			a, b := runs["agentd"], runs[name]
			if a == nil || b == nil {
				continue
			}
			excess = append(excess, b.failedPerDeploy()-a.failedPerDeploy())
			sw = append(sw, ratio(medianOf(b.Deploys, deploySwitch), medianOf(a.Deploys, deploySwitch)))
			rate = append(rate, ratio(closedRate(b.Closed), closedRate(a.Closed)))
			for _, k := range loadgen.AllKinds {
				ka, okA := find(a.Open, k)
				kb, okB := find(b.Open, k)
				if okA && okB {
					p99[string(k)] = append(p99[string(k)], ratio(kb.P99, ka.P99))
				}
			}
		}
		rs.ExcessFailedPerDeploy, rs.SwitchRatio, rs.ClosedRateRatio = stat(excess), stat(sw), stat(rate)
		for k, xs := range p99 {
			rs.P99Ratio[k] = stat(xs)
		}
		out.Ratios[name] = rs
	}
}

func deploySwitch(d deployStat) float64 { return d.Switch }

func medianOf(ds []deployStat, f func(deployStat) float64) float64 {
	return stat(collect(ds, f)).Median
}

func (b *blockResult) failedPerDeploy() float64 {
	_, failed, _ := totals(append(slices.Clone(b.Open), b.Closed...))
	return ratio(float64(failed), float64(len(b.Deploys)))
}

// closedRate is the closed-loop throughput, all kinds together.
func closedRate(ks []kindResult) float64 {
	total := 0.0
	for _, k := range ks {
		total += k.rate()
	}
	return total
}

func summarizeMethod(bs []*blockResult) *methodSummary {
	s := &methodSummary{Runs: len(bs), ByClass: map[string]Stat{}, ByKind: map[string]Stat{}, Latency: map[string]*latencySummary{}}
	var deploys, requests, failed, perDeploy, rate []float64
	classes := map[string][]float64{}
	kinds := map[string][]float64{}
	type lat struct{ sp50, dp50, sp99, dp99, smax, dmax, infl []float64 }
	lats := map[string]*lat{}
	var all []deployStat
	for _, b := range bs {
		ks := append(slices.Clone(b.Open), b.Closed...)
		sent, f, byClass := totals(ks)
		deploys = append(deploys, float64(len(b.Deploys)))
		requests = append(requests, float64(sent))
		failed = append(failed, float64(f))
		perDeploy = append(perDeploy, b.failedPerDeploy())
		s.FailedTotal += f
		s.RequestsTotal += sent
		s.DeploysTotal += len(b.Deploys)
		for _, c := range loadgen.Classes {
			classes[c] = append(classes[c], float64(byClass[c]))
		}
		for _, k := range ks {
			key := k.Mode + " " + k.Kind
			kinds[key] = append(kinds[key], float64(k.Failed))
			s.Late += k.Late
			s.Retried += k.Retried
		}
		rate = append(rate, closedRate(b.Closed))
		for _, k := range loadgen.AllKinds {
			st, ok1 := find(b.Steady, k)
			dp, ok2 := find(b.Open, k)
			if !ok1 || !ok2 {
				continue
			}
			l := lats[string(k)]
			if l == nil {
				l = &lat{}
				lats[string(k)] = l
			}
			l.sp50 = append(l.sp50, st.P50)
			l.dp50 = append(l.dp50, dp.P50)
			l.sp99 = append(l.sp99, st.P99)
			l.dp99 = append(l.dp99, dp.P99)
			l.smax = append(l.smax, st.Max)
			l.dmax = append(l.dmax, dp.Max)
			l.infl = append(l.infl, ratio(dp.P99, st.P99))
		}
		all = append(all, b.Deploys...)
		if b.Error != "" {
			s.Errors = append(s.Errors, fmt.Sprintf("run %d: %s", b.Run, b.Error))
		}
		s.FailedDeploys += b.FailedDeploys
		for _, e := range b.DeployErrors {
			s.Errors = append(s.Errors, fmt.Sprintf("run %d: a deploy failed: %s", b.Run, e))
		}
		for _, k := range ks {
			for _, e := range k.Errors {
				if len(s.Errors) < 12 && !slices.Contains(s.Errors, e) {
					s.Errors = append(s.Errors, e)
				}
			}
		}
	}
	s.DeploysPerRun, s.RequestsPerRun, s.FailedPerRun, s.FailedPerDeploy = stat(deploys), stat(requests), stat(failed), stat(perDeploy)
	s.ClosedRate = stat(rate)
	for c, xs := range classes {
		s.ByClass[c] = stat(xs)
	}
	for k, xs := range kinds {
		s.ByKind[k] = stat(xs)
	}
	for k, l := range lats {
		s.Latency[k] = &latencySummary{
			SteadyP50: stat(l.sp50), DeployP50: stat(l.dp50), SteadyP99: stat(l.sp99), DeployP99: stat(l.dp99),
			SteadyMax: stat(l.smax), DeployMax: stat(l.dmax), P99Inflation: stat(l.infl),
		}
	}
	s.Switch = stat(collect(all, deploySwitch))
	s.Boot = stat(collect(all, func(d deployStat) float64 { return d.Boot }))
	s.Overhead = stat(collect(all, deployStat.Overhead))
	s.Exec = stat(collect(all, func(d deployStat) float64 { return d.Exec }))
	s.Direct = stat(collect(all, func(d deployStat) float64 { return d.Direct }))
	s.Around = stat(collect(all, deployStat.Around))
	s.DirectExec = stat(collect(all, func(d deployStat) float64 { return d.DirectExec }))
	s.Drain = stat(collect(all, func(d deployStat) float64 { return d.Drain }))
	s.Wall = stat(collect(all, func(d deployStat) float64 { return d.Wall }))
	s.Prepare = stat(collect(all, func(d deployStat) float64 { return d.Prepare }))
	for _, d := range all {
		s.Killed += d.Killed
	}
	return s
}
