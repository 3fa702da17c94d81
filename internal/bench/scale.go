package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// scaleResults is scenario 4: one agentd supervising many apps.
type scaleResults struct {
	Apps        int `json:"apps"`
	ProcsPerApp int `json:"procs_per_app"`
	Processes   int `json:"processes"`
	Concurrency int `json:"concurrency"`
	// SetupSeconds is creating the apps, their first deploy and scaling
	// them up, all Concurrency at a time.
	SetupSeconds float64 `json:"setup_seconds"`
	// Idle: agentd's CPU (% of one core) over windows of IdleWindow, and
	// its RSS (MiB) at the end of each.
	IdleWindow float64 `json:"idle_window_seconds"`
	IdleCPU    Stat    `json:"idle_cpu_percent"`
	IdleRSS    Stat    `json:"idle_rss_mib"`
	// Deploy rounds: every app gets a new release, Concurrency at a time.
	DeployAll     Stat `json:"deploy_all_seconds"`
	DeployOne     Stat `json:"deploy_one_seconds"` // each hctl deploy, over all rounds
	DeployCPU     Stat `json:"deploy_cpu_percent"` // agentd's CPU over each round
	DeployRSSPeak Stat `json:"deploy_rss_peak_mib"`
	// hctl ps of every process (one hctl run, the API call and the
	// rendering), of one app, and the API call alone (GET /v1/ps).
	PsAll    Stat `json:"ps_all_seconds"`
	PsApp    Stat `json:"ps_app_seconds"`
	PsAllAPI Stat `json:"ps_all_api_seconds"`
	// What agentd holds at idle.
	Threads int `json:"threads"`
	FDs     int `json:"fds"`
	// Deploys and FailedDeploys count the deploy rounds' deploys.
	Deploys       int `json:"deploys"`
	FailedDeploys int `json:"failed_deploys"`
	// RSSEmpty is agentd's RSS before any app exists (MiB).
	RSSEmpty float64 `json:"rss_empty_mib"`
	// RSS after the last round (MiB): growth here would be a leak.
	RSSAfter float64 `json:"rss_after_mib"`
	// AppsRSS is the supervised processes' RSS together (MiB), for scale.
	AppsRSS float64  `json:"apps_rss_mib"`
	Errors  []string `json:"errors,omitempty"`
}

func scaleScenario(o options, bins binaries, dir string) (*scaleResults, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out := &scaleResults{Apps: o.scaleApps, ProcsPerApp: o.scaleProcs, Processes: o.scaleApps * o.scaleProcs, Concurrency: o.scaleConc}
	say("scale: starting agentd for %d apps of %d processes", o.scaleApps, o.scaleProcs)
	ag, err := harness.Start(bins.Bins, filepath.Join(dir, "agentd"), "--log-level", "info")
	if err != nil {
		return nil, err
	}
	atCleanup(ag.Stop)
	defer func() {
		t0 := time.Now()
		ag.Stop()
		say("scale: agentd stopped %d processes in %.1fs", out.Processes, time.Since(t0).Seconds())
	}()
	pid := ag.PID()
	out.RSSEmpty, _ = rssMiB(pid)
	names := make([]string, o.scaleApps)
	for i := range names {
		names[i] = fmt.Sprintf("s%03d", i+1)
	}
	// Each app deploys its own content (as different apps would), so
	// that every deploy unpacks and stores a new slug. The binary is
	// compressed once (see artifact).
	// (Identical content deployed to several apps at once also trips a
	// race in agentd's slug store: see the report that came with this
	// benchmark.)
	tiny, err := newArtifact(filepath.Join(dir, "tinyapp"), "web: ./tinyapp\n", "tinyapp", bins.TinyApp)
	if err != nil {
		return nil, err
	}
	artifact := func(app string, round int) (string, error) {
		return tiny.writeAs(filepath.Join(dir, "artifact-"+app+".tar.gz"), fmt.Sprintf("%s %d", app, round))
	}

	t0 := time.Now()
	if err := forEach(names, o.scaleConc, func(n string) error {
		if r := ag.Hctl("apps", "create", n, "--socket", "web=tcp://127.0.0.1:0", "--readiness", "web=notify", "--allow-root"); r.Code != 0 {
			return fmt.Errorf("apps create %s: %s", n, r)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var errMu sync.Mutex
	noteErr := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(out.Errors) < 10 {
			out.Errors = append(out.Errors, strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " "))
		}
	}
	// Setting up is not measured: an operation that fails is noted and
	// tried once more.
	if err := forEach(names, o.scaleConc, func(n string) error {
		art, err := artifact(n, 0)
		if err != nil {
			return err
		}
		for _, args := range [][]string{{"deploy", n, art}, {"scale", n, fmt.Sprintf("web=%d", o.scaleProcs)}} {
			r := ag.Hctl(append([]string{opTimeout, opTimeoutValue}, args...)...)
			if r.Code != 0 {
				noteErr("setup: %s %s failed, tried again: %s", args[0], n, lastLines(r.Stderr, 1))
				r = ag.Hctl(append([]string{opTimeout, opTimeoutValue}, args...)...)
			}
			if r.Code != 0 {
				return fmt.Errorf("%s %s: %s", args[0], n, r)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	out.SetupSeconds = time.Since(t0).Seconds()
	ready, err := countReady(ag)
	if err != nil {
		return nil, err
	}
	say("scale: %d apps created, deployed and scaled in %.1fs: %d processes ready", o.scaleApps, out.SetupSeconds, ready)
	if ready != out.Processes {
		return nil, fmt.Errorf("%d processes ready, want %d", ready, out.Processes)
	}

	// Idle.
	time.Sleep(2 * time.Second)
	windows, window := 3, 5*time.Second
	if o.quick {
		window = 3 * time.Second
	}
	out.IdleWindow = window.Seconds()
	var cpu, rss []float64
	for range windows {
		c0, err := cpuTicks(pid)
		if err != nil {
			return nil, err
		}
		w0 := time.Now()
		time.Sleep(window)
		c1, err := cpuTicks(pid)
		if err != nil {
			return nil, err
		}
		cpu = append(cpu, cpuPercent(c1-c0, time.Since(w0)))
		r, err := rssMiB(pid)
		if err != nil {
			return nil, err
		}
		rss = append(rss, r)
	}
	out.IdleCPU, out.IdleRSS = stat(cpu), stat(rss)
	out.Threads, out.FDs = countDir(fmt.Sprintf("/proc/%d/task", pid)), countDir(fmt.Sprintf("/proc/%d/fd", pid))
	out.AppsRSS = appsRSS(ag)
	say("scale: idle with %d processes: agentd CPU %s, RSS %s, %d threads, %d fds (the apps: %.0f MiB)",
		ready, out.IdleCPU.format(fmtPct), out.IdleRSS.format(fmtMiB), out.Threads, out.FDs, out.AppsRSS)

	// hctl ps.
	nps := 20
	if o.quick {
		nps = 10
	}
	var psAll, psApp, psAPI []float64
	client := unixClient(ag.Socket)
	for i := range nps {
		t := time.Now()
		if r := ag.Hctl("ps"); r.Code != 0 {
			return nil, fmt.Errorf("hctl ps: %s", r)
		}
		psAll = append(psAll, time.Since(t).Seconds())
		t = time.Now()
		if r := ag.Hctl("ps", names[i%len(names)]); r.Code != 0 {
			return nil, fmt.Errorf("hctl ps: %s", r)
		}
		psApp = append(psApp, time.Since(t).Seconds())
		t = time.Now()
		n, err := apiPs(client)
		if err != nil {
			return nil, err
		}
		psAPI = append(psAPI, time.Since(t).Seconds())
		if n != out.Processes {
			noteErr("GET /v1/ps listed %d processes, want %d", n, out.Processes)
		}
	}
	out.PsAll, out.PsApp, out.PsAllAPI = stat(psAll), stat(psApp), stat(psAPI)
	say("scale: hctl ps (all %d) %s; hctl ps APP %s; GET /v1/ps alone %s", out.Processes, out.PsAll.format(fmtDur), out.PsApp.format(fmtDur), out.PsAllAPI.format(fmtDur))

	// Deploy every app, Concurrency at a time.
	rounds := 3
	if o.quick {
		rounds = 2
	}
	var all, one, dcpu, dpeak []float64
	for round := 1; round <= rounds; round++ {
		// Two rounds give a spread; a third only if it fits the time
		// budget (another round takes about as long as the last one).
		if round > 2 && len(all) > 0 && time.Since(benchStart)+time.Duration(all[len(all)-1]*float64(time.Second)) > o.budget {
			msg := fmt.Sprintf("deploy round %d of %d left out: it would end past the %s time budget", round, rounds, o.budget)
			say("scale: %s", msg)
			noteErr("%s", msg)
			break
		}
		var mu sync.Mutex
		stop := make(chan struct{})
		peak := 0.0
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tk := time.NewTicker(50 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					if r, err := rssMiB(pid); err == nil && r > peak {
						peak = r
					}
				}
			}
		}()
		c0, err := cpuTicks(pid)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		err = forEach(names, o.scaleConc, func(n string) error {
			art, err := artifact(n, round)
			if err != nil {
				return err
			}
			t := time.Now()
			var res api.OpResult
			r := ag.HctlJSON(&res, opTimeout, opTimeoutValue, "deploy", n, art, "-m", fmt.Sprintf("round %d", round))
			mu.Lock()
			defer mu.Unlock()
			out.Deploys++
			if r.Code != 0 || !res.OK {
				// A failed deploy leaves the old release serving: a
				// finding to report, not a reason to stop measuring.
				out.FailedDeploys++
				msg := res.Error
				if msg == "" {
					msg = lastLines(r.Stderr, 1)
				}
				noteErr("round %d: deploy %s failed: %s", round, n, msg)
				say("  scale: deploy %s failed: %s", n, lastLines(msg, 2))
				return nil
			}
			one = append(one, time.Since(t).Seconds())
			return nil
		})
		d := time.Since(t0)
		c1, cerr := cpuTicks(pid)
		close(stop)
		<-sampled
		if err != nil {
			return nil, err
		}
		if cerr != nil {
			return nil, cerr
		}
		all = append(all, d.Seconds())
		dcpu = append(dcpu, cpuPercent(c1-c0, d))
		dpeak = append(dpeak, peak)
		say("scale: round %d/%d: %d apps (%d processes replaced) deployed %d at a time in %.1fs; agentd CPU %.0f %%, RSS peak %.1f MiB",
			round, rounds, o.scaleApps, out.Processes, o.scaleConc, d.Seconds(), dcpu[len(dcpu)-1], peak)
	}
	out.DeployAll, out.DeployOne, out.DeployCPU, out.DeployRSSPeak = stat(all), stat(one), stat(dcpu), stat(dpeak)
	if ready, err := countReady(ag); err != nil || ready != out.Processes {
		noteErr("after the rounds: %d processes ready (err %v), want %d", ready, err, out.Processes)
	}
	time.Sleep(time.Second)
	out.RSSAfter, _ = rssMiB(pid)
	return out, nil
}

// forEach runs f on every item, conc at a time, and returns the first
// error (after every started call has ended).
func forEach(items []string, conc int, f func(string) error) error {
	work := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range conc {
		wg.Go(func() {
			for it := range work {
				if err := f(it); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, it := range items {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		work <- it
	}
	close(work)
	wg.Wait()
	return first
}

// countReady counts agentd's processes in state ready.
func countReady(ag *harness.Agentd) (int, error) {
	var ps []api.Process
	if r := ag.HctlJSON(&ps, "ps"); r.Code != 0 {
		return 0, fmt.Errorf("hctl ps: %s", r)
	}
	n := 0
	for _, p := range ps {
		if p.State == api.StateReady {
			n++
		}
	}
	return n, nil
}

// appsRSS adds up the RSS of agentd's processes.
func appsRSS(ag *harness.Agentd) float64 {
	var ps []api.Process
	if r := ag.HctlJSON(&ps, "ps"); r.Code != 0 {
		return 0
	}
	total := 0.0
	for _, p := range ps {
		if r, err := rssMiB(p.PID); err == nil {
			total += r
		}
	}
	return total
}

// cpuTicks is a process's user+system CPU time in clock ticks, from
// /proc/PID/stat (fields 14 and 15, after the parenthesised name).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return u + st, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuPercent is ticks over d as a percentage of one core.
func cpuPercent(ticks int64, d time.Duration) float64 {
	return float64(ticks) / clockTicks / d.Seconds() * 100
}

// rssMiB is VmRSS from /proc/PID/status.
func rssMiB(pid int) (float64, error) {
	v := firstField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS")
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0, fmt.Errorf("no VmRSS for pid %d", pid)
	}
	kb, err := strconv.ParseFloat(f[0], 64)
	return kb / 1024, err
}

func countDir(path string) int {
	es, _ := os.ReadDir(path)
	return len(es)
}

// unixClient is an HTTP client for agentd's control socket.
func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// apiPs calls GET /v1/ps and returns how many processes it listed.
func apiPs(c *http.Client) (int, error) {
	ps, err := apiProcs(c, "")
	return len(ps), err
}

// apiProcs calls GET /v1/ps (?app=APP unless app is empty).
func apiProcs(c *http.Client, app string) ([]api.Process, error) {
	u := "http://agentd/v1/ps"
	if app != "" {
		u += "?app=" + url.QueryEscape(app)
	}
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/ps: %s", resp.Status)
	}
	var ps []api.Process
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		return nil, err
	}
	return ps, nil
}
