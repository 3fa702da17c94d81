// Command bench is `make bench`: it measures agentd's release switch against
// the usual alternatives on this machine, with the same app and the same
// load for each, and writes docs/benchmarks.json and docs/benchmarks.md.
//
// Scenarios (each can be chosen with -scenarios):
//
//   - deploys: agentd, N deploys in a row under load, and, in the same runs
//     with the same load, three alternatives: stop-then-start (what
//     `systemctl restart` does to a service that binds its own port), an
//     SO_REUSEPORT handover, and a blue/green switch behind nginx reloaded
//     with a new upstream. Failed requests by class and client kind,
//     latency in the deploy window against steady state, the switch time
//     split into the app's own boot and what surrounds it. Ratios against
//     agentd are taken run by run.
//   - crosscheck: the same deploys for agentd and stop-then-start under wrk
//     (kept-alive POSTs) and hey (a new connection per POST), so the
//     benchmark's own load generator is checked by two others.
//   - proxy: throughput and p99 of the app alone, through agentd's socket
//     and through nginx in front of it, in the same run.
//   - scale: agentd with 100 apps of 4 processes: RSS and CPU idle and
//     during 10 concurrent deploys, `hctl ps` latency, time to deploy all.
//   - store: deploy to first response from the new code, minus the app's
//     boot, for 8/64/256 MiB of new files and 256 MiB with one changed
//     file, by .tar.gz and manifest first, beside cp -a + sync; and the
//     process start chain against a direct fork+exec (store.go).
//   - stock: stock servers (uvicorn from Debian, a Go app whose SIGTERM
//     handler is just http.Server.Shutdown) deployed 10 times under
//     new-connection POST load by agentd with --steering off and auto:
//     what kernel steering saves them (issue 18; stock.go).
//
// Load comes from internal/loadgen, which never retries and classifies
// every failure (refused, reset, eof, timeout, non2xx), in its three client
// kinds at once: a new connection per POST, POSTs on kept-alive
// connections, GETs through Go's default client. Every figure is reported as
// median [min–max] over several runs.
//
// Everything targets 127.0.0.1; every process the benchmark starts is
// stopped by its PID or process group; nginx runs with a private config and
// pid file and is stopped by signalling the process the benchmark started.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentd/agentd/internal/harness"
)

// options are the command-line flags.
type options struct {
	quick      bool
	runs       int
	deploys    int // agentd deploys per run
	altDeploys int // deploys per run for each alternative
	xDeploys   int // deploys per tool in the cross-check
	rate       float64
	steady     time.Duration
	pace       time.Duration
	bootDelay  time.Duration
	proxyDur   time.Duration
	scaleApps  int
	scaleProcs int
	scaleConc  int
	oneFile    int // one-file manifest deploys per run of the store scenario
	scenarios  map[string]bool
	install    bool
	waitQuiet  time.Duration
	budget     time.Duration
	jsonOut    string
	mdOut      string
}

var allScenarios = []string{"deploys", "crosscheck", "proxy", "scale", "store", "stock"}

func main() {
	var o options
	var scen string
	flag.BoolVar(&o.quick, "quick", false, "fewer runs and deploys (about 4 minutes), and no files written unless -json or -md is given: for trying the benchmark, not for publishing")
	flag.IntVar(&o.runs, "runs", 0, "runs of each scenario (default 3, quick 2)")
	flag.IntVar(&o.deploys, "deploys", 0, "agentd deploys in a row per run (default 100, quick 20)")
	flag.IntVar(&o.altDeploys, "alt-deploys", 0, "deploys per run of each alternative (default 20, quick 6)")
	flag.IntVar(&o.xDeploys, "crosscheck-deploys", 0, "deploys per tool and method in the wrk/hey cross-check (default 10, quick 4)")
	flag.Float64Var(&o.rate, "rate", 400, "open-loop requests per second of each of the three client kinds")
	flag.DurationVar(&o.steady, "steady", 0, "steady-state window before each run's deploys (default 3s, quick 2s)")
	flag.DurationVar(&o.pace, "pace", 500*time.Millisecond, "deploys start at most this often, for every method alike, so that deploy windows have the same density of deploys")
	flag.DurationVar(&o.bootDelay, "boot-delay", 0, "BOOT_DELAY of the app (how long it takes to become ready), the same for every method")
	flag.DurationVar(&o.proxyDur, "proxy-duration", 0, "length of each proxy-cost measurement (default 3s, quick 2s)")
	flag.IntVar(&o.scaleApps, "scale-apps", 100, "apps in the scale scenario")
	flag.IntVar(&o.scaleProcs, "scale-procs", 4, "processes per app in the scale scenario")
	flag.IntVar(&o.scaleConc, "scale-concurrency", 10, "concurrent deploys in the scale scenario")
	flag.IntVar(&o.oneFile, "one-file", 0, "deploys of a one-file change per run of the store scenario (default 5, quick 2)")
	flag.StringVar(&scen, "scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma-separated: "+strings.Join(allScenarios, ", "))
	flag.DurationVar(&o.budget, "budget", 14*time.Minute, "the scale scenario's last deploy round is left out if it would end past this much time since the start (a busy machine)")
	flag.DurationVar(&o.waitQuiet, "wait-quiet", 0, "before measuring, wait up to this long for the machine's load average to fall below half its cores")
	flag.BoolVar(&o.install, "install", true, "apt-get install nginx, wrk and hey when missing (as root)")
	flag.StringVar(&o.jsonOut, "json", "docs/benchmarks.json", "results file (relative to the repository root)")
	flag.StringVar(&o.mdOut, "md", "docs/benchmarks.md", "Markdown report (relative to the repository root); empty: none")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		// A quick run is a trial: it must not replace the published
		// figures unless asked to.
		if !set["json"] {
			o.jsonOut = ""
		}
		if !set["md"] {
			o.mdOut = ""
		}
	}
	o.scenarios = map[string]bool{}
	for s := range strings.SplitSeq(scen, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allScenarios, s) {
			fmt.Fprintf(os.Stderr, "bench: unknown scenario %q (want %s)\n", s, strings.Join(allScenarios, ", "))
			os.Exit(2)
		}
		o.scenarios[s] = true
	}
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if o.quick {
				*v = quick
			}
		}
	}
	defD := func(v *time.Duration, full, quick time.Duration) {
		if *v == 0 {
			*v = full
			if o.quick {
				*v = quick
			}
		}
	}
	def(&o.runs, 3, 2)
	def(&o.deploys, 100, 20)
	def(&o.altDeploys, 20, 6)
	def(&o.xDeploys, 6, 4)
	def(&o.oneFile, 5, 2)
	defD(&o.steady, 3*time.Second, 2*time.Second)
	defD(&o.proxyDur, 3*time.Second, 2*time.Second)
	if o.runs < 1 || o.deploys < 2 || o.altDeploys < 2 || o.rate <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be >= 1, -deploys and -alt-deploys >= 2, -rate > 0")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// binaries are the programs the benchmark runs.
type binaries struct {
	harness.Bins
	BenchApp, TinyApp string
	Nginx, Wrk, Hey   string // empty when not installed
}

var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

// atCleanup registers f to run at the end, also on Ctrl-C, newest first.
func atCleanup(f func()) {
	cleanupMu.Lock()
	cleanups = append(cleanups, f)
	cleanupMu.Unlock()
}

func cleanup() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	killAllStarted()
}

var benchStart = time.Now()

// say prints a progress line with the time since the start.
func say(format string, args ...any) {
	fmt.Printf("[%5.0fs] %s\n", time.Since(benchStart).Seconds(), fmt.Sprintf(format, args...))
}

func run(o options) error {
	root, err := harness.ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "agentd-bench-")
	if err != nil {
		return err
	}
	os.Chmod(dir, 0o755) // nginx's workers run as another user
	atCleanup(func() { os.RemoveAll(dir) })
	defer cleanup()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nbench: %s: stopping everything it started\n", s)
		cleanup()
		os.Exit(130)
	}()

	res := &results{Mode: "full", Started: time.Now().UTC()}
	if o.quick {
		res.Mode = "quick"
	}
	res.Config = configOf(o)

	say("preflight: tools")
	bins, skipped := preflight(o)
	res.Skipped = append(res.Skipped, skipped...)
	for _, s := range skipped {
		say("SKIP: %s", s)
	}
	say("building agentd, hctl, benchapp and tinyapp")
	if bins, err = build(bins, filepath.Join(dir, "bin")); err != nil {
		return err
	}
	if o.waitQuiet > 0 {
		w0 := time.Now()
		deadline := w0.Add(o.waitQuiet)
		for busy(machineInfo{LoadBefore: loadavg(), Cores: runtime.NumCPU()}) && time.Now().Before(deadline) {
			say("waiting for a quieter machine: load average %s", loadavg())
			time.Sleep(15 * time.Second)
		}
		// The wait is not part of the benchmark's own time.
		res.WaitedSeconds = time.Since(w0).Seconds()
		benchStart = benchStart.Add(time.Since(w0))
	}
	res.Machine = machine(bins)
	say("machine: %s", res.Machine.oneLine())
	if busy(res.Machine) {
		say("WARNING: load average %s on %d cores: other work is running here, and the figures will show it", res.Machine.LoadBefore, res.Machine.Cores)
	}

	// A scenario that fails is reported and the others still run, so a
	// long run is never lost to one error.
	if o.scenarios["deploys"] {
		if res.Deploys, err = deployScenario(o, bins, filepath.Join(dir, "deploys"), res); err != nil {
			res.fail("deploys", err)
		}
	}
	if o.scenarios["crosscheck"] {
		if res.CrossCheck, err = crossCheckScenario(o, bins, filepath.Join(dir, "crosscheck"), res); err != nil {
			res.fail("crosscheck", err)
		}
	}
	if o.scenarios["proxy"] {
		if res.Proxy, err = proxyScenario(o, bins, filepath.Join(dir, "proxy"), res); err != nil {
			res.fail("proxy", err)
		}
	}
	if o.scenarios["scale"] {
		if res.Scale, err = scaleScenario(o, bins, filepath.Join(dir, "scale")); err != nil {
			res.fail("scale", err)
		}
	}
	if o.scenarios["store"] {
		if res.Store, err = storeScenario(o, bins, filepath.Join(dir, "store")); err != nil {
			res.fail("store", err)
		}
	}
	if o.scenarios["stock"] {
		if res.Stock, err = stockScenario(o, bins, filepath.Join(dir, "stock"), res); err != nil {
			res.fail("stock", err)
		}
	}
	res.Seconds = time.Since(benchStart).Seconds()
	res.Machine.LoadAfter = loadavg()
	res.Targets = targets(res)

	md := report(res)
	fmt.Println()
	fmt.Print(md)
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if o.jsonOut != "" {
		if err := os.WriteFile(underRoot(root, o.jsonOut), append(js, '\n'), 0o644); err != nil {
			return err
		}
		say("wrote %s", o.jsonOut)
	}
	if o.mdOut != "" {
		if err := os.WriteFile(underRoot(root, o.mdOut), []byte(md), 0o644); err != nil {
			return err
		}
		say("wrote %s", o.mdOut)
	}
	var missed []string
	for _, t := range res.Targets {
		if !t.Met {
			missed = append(missed, t.Name)
		}
	}
	if len(missed) > 0 {
		say("targets missed: %s", strings.Join(missed, "; "))
	}
	if len(res.Errors) > 0 {
		return fmt.Errorf("%d scenario(s) failed: %s", len(res.Errors), strings.Join(res.Errors, "; "))
	}
	return nil
}

// busy reports whether the machine's 1-minute load average exceeds half
// its cores before the benchmark starts anything.
func busy(m machineInfo) bool {
	f := strings.Fields(m.LoadBefore)
	if len(f) == 0 {
		return false
	}
	l, err := strconv.ParseFloat(f[0], 64)
	return err == nil && l > float64(m.Cores)/2
}

// preflight finds nginx, wrk and hey, installing them with apt-get when
// missing (once, as root). What stays missing is reported as skipped.
func preflight(o options) (binaries, []string) {
	var b binaries
	look := func() {
		b.Nginx, _ = lookPath("nginx")
		b.Wrk, _ = lookPath("wrk")
		b.Hey, _ = lookPath("hey")
	}
	look()
	if (b.Nginx == "" || b.Wrk == "" || b.Hey == "") && o.install {
		if os.Geteuid() != 0 {
			say("nginx, wrk or hey missing and not root: not installing (run as root, or apt-get install nginx wrk hey)")
		} else {
			say("installing Debian's nginx, wrk and hey (apt-get update; apt-get install)")
			if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
				say("apt-get update failed: %v: %s", err, lastLines(string(out), 3))
			}
			cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "nginx", "wrk", "hey")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				say("apt-get install failed: %v: %s", err, lastLines(string(out), 3))
			}
			look()
		}
	}
	var skipped []string
	if b.Nginx == "" {
		skipped = append(skipped, "nginx is not installed: the nginx blue/green alternative and the proxy comparison are left out")
	}
	if b.Wrk == "" {
		skipped = append(skipped, "wrk is not installed: its cross-check is left out")
	}
	if b.Hey == "" {
		skipped = append(skipped, "hey is not installed: its cross-check is left out")
	}
	return b, skipped
}

// lookPath is exec.LookPath that also searches the sbin directories (nginx
// lives in /usr/sbin, which a normal user's PATH may lack).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New(name + " not found")
}

// build compiles agentd, hctl and agentd-shim (through the harness, as
// the tests do) and the two benchmark apps.
func build(b binaries, dir string) (binaries, error) {
	bins, err := harness.Build(dir)
	if err != nil {
		return b, err
	}
	b.Bins = bins
	b.BenchApp = filepath.Join(dir, "benchapp")
	b.TinyApp = filepath.Join(dir, "tinyapp")
	root, err := harness.ModuleRoot()
	if err != nil {
		return b, err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/", "./internal/bench/benchapp", "./internal/bench/tinyapp")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return b, fmt.Errorf("go build: %v\n%s", err, out)
	}
	return b, nil
}

// underRoot resolves a relative output path against the repository root.
func underRoot(root, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(root, p)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
