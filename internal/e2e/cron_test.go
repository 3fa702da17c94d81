package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// cronRun is one run of the test's cron job, as the job recorded it.
type cronRun struct {
	pid        string
	release    string
	start, end float64 // Unix seconds; end 0 while it runs
}

// readCronRuns parses the file the job writes: "start|end UNIX RELEASE PID".
func readCronRuns(t *testing.T, path string) []cronRun {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	byPID := map[string]*cronRun{}
	var runs []*cronRun
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			continue
		}
		at, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("bad line %q in %s", l, path)
		}
		switch f[0] {
		case "start":
			r := &cronRun{pid: f[3], release: f[2], start: at}
			byPID[f[3]] = r
			runs = append(runs, r)
		case "end":
			if r := byPID[f[3]]; r != nil {
				r.end = at
			}
		}
	}
	out := make([]cronRun, len(runs))
	for i, r := range runs {
		out[i] = *r
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out
}

// cronWait polls cond every 100 ms for at most 90 s.
func cronWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("no %s within 90s", what)
		case <-tick.C:
		}
	}
}

// TestCronNeverOverlapsThroughDeploysAndRestart is issue 15's cron
// acceptance: a job due every second that runs for 3 s, through 5 deploys
// under load and a kill -9 of agentd, never runs twice at once, is never
// stopped by a deploy, and runs on the newest release after the last
// deploy; not one request fails.
func TestCronNeverOverlapsThroughDeploysAndRestart(t *testing.T) {
	e := start(t)
	url := e.createApp("cronapp", "--readiness", "web=notify", "--drain-timeout", "20s")
	runsFile := filepath.Join(e.dir, "cron-runs")
	job := fmt.Sprintf(`echo "start $(date +%%s.%%N) $AGENTD_RELEASE $$" >> %[1]s; sleep 3; echo "end $(date +%%s.%%N) $AGENTD_RELEASE $$" >> %[1]s`, runsFile)
	appJSON := fmt.Sprintf(`{"name": "cronapp", "cron": [{"command": %q, "schedule": "@every 1s"}]}`, job)
	n := 0
	release := func() string {
		t.Helper()
		n++
		dir := filepath.Join(e.dir, fmt.Sprintf("cronrel%d", n))
		procfile := fmt.Sprintf("web: TESTAPP_MODE= exec %s\n", bins.TestApp)
		if _, err := harness.Release(dir, procfile, map[string]string{"VERSION": fmt.Sprint(n), "app.json": appJSON}); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	startedAfter := func(at float64, min int) func() bool {
		return func() bool {
			c := 0
			for _, r := range readCronRuns(t, runsFile) {
				if r.start > at {
					c++
				}
			}
			return c >= min
		}
	}
	if res := e.deploy("cronapp", release()); !res.OK {
		t.Fatalf("first deploy: %+v", res)
	}
	cronWait(t, "first cron run", startedAfter(0, 1))

	ls := startLoads(t, url)
	var last float64 // when the last deploy returned, Unix seconds
	for i := range 5 {
		res := e.deploy("cronapp", release(), "-m", fmt.Sprintf("deploy %d", i))
		last = float64(time.Now().UnixNano()) / 1e9
		if !res.OK || !res.Changed {
			t.Fatalf("deploy %d: %+v", i, res)
		}
		t.Logf("deploy %d: %s switch %.3fs", i, res.Release, res.SwitchSeconds)
		if i == 2 {
			// kill -9 of agentd while a run is alive: the next agentd
			// adopts it and must not start another beside it.
			waitPs(t, e, "cronapp", "a cron run alive", func(ps []api.Process) bool {
				for _, p := range ps {
					if p.Name == "cron.1" && p.State == api.StateRunning {
						return true
					}
				}
				return false
			})
			e.ag.Kill()
			if err := e.ag.StartAgain(); err != nil {
				t.Fatal(err)
			}
		}
		// The next deploy comes while a run of this release is alive:
		// each deploy finds a run to leave alone.
		cronWait(t, "a cron run on "+res.Release, func() bool {
			for _, r := range readCronRuns(t, runsFile) {
				if r.release == res.Release {
					return true
				}
			}
			return false
		})
	}
	cronWait(t, "two cron runs started after the last deploy and ended", func() bool {
		c := 0
		for _, r := range readCronRuns(t, runsFile) {
			if r.start > last && r.end != 0 {
				c++
			}
		}
		return c >= 2
	})
	ls.stopAndCheck(t)

	runs := readCronRuns(t, runsFile)
	t.Logf("%d cron runs", len(runs))
	releases := map[string]int{}
	for i, r := range runs {
		releases[r.release]++
		if r.end == 0 && i != len(runs)-1 {
			t.Errorf("run %d (pid %s, %s) started at %.3f and never ended: something stopped it", i, r.pid, r.release, r.start)
		}
		if i > 0 && (runs[i-1].end == 0 || r.start < runs[i-1].end) {
			t.Errorf("run %d (pid %s, %s) started at %.3f while run %d (pid %s, %s, %.3f–%.3f) ran", i, r.pid, r.release, r.start,
				i-1, runs[i-1].pid, runs[i-1].release, runs[i-1].start, runs[i-1].end)
		}
		if r.start > last && r.release != "v6" {
			t.Errorf("run %d started %.3fs after the last deploy on %s, want v6", i, r.start-last, r.release)
		}
	}
	t.Logf("runs by release: %v", releases)
	if len(releases) != 6 {
		t.Errorf("runs on %d releases (%v), want each of v1–v6: the job did not follow the deploys", len(releases), releases)
	}

	var list api.CronList
	e.json(&list, "cron", "cronapp")
	if len(list.Jobs) != 1 || list.Release != "v6" || !list.Enabled {
		t.Fatalf("hctl cron: %+v", list)
	}
	j := list.Jobs[0]
	if j.Name != "cron.1" || j.Schedule != "@every 1s" || j.Runs == 0 || j.Next.IsZero() || j.LastStart.IsZero() {
		t.Errorf("hctl cron's job: %+v", j)
	}
	t.Logf("hctl cron: runs %d, failures %d, skipped %d, last %s (%s)", j.Runs, j.Failures, j.Skipped, j.LastRelease, j.LastResult)
	out := e.mustHctl("cron", "cronapp").Stdout
	if !strings.Contains(out, "cron.1") || !strings.Contains(out, "@every 1s") {
		t.Errorf("hctl cron cronapp:\n%s", out)
	}

	// Off on this host: no run starts any more (the one alive finishes).
	e.mustHctl("apps", "set", "cronapp", "--cron", "off")
	off := float64(time.Now().UnixNano()) / 1e9
	waitPs(t, e, "cronapp", "no cron run alive", func(ps []api.Process) bool {
		for _, p := range ps {
			if p.Type == "cron" {
				return false
			}
		}
		return true
	})
	// A due time passes every second: 3 s without a new run.
	quiet := time.Now().Add(3 * time.Second)
	for time.Now().Before(quiet) {
		if startedAfter(off+0.5, 1)() {
			t.Fatal("a cron run started after apps set --cron off")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := e.hctl("apps", "set", "cronapp", "--cron", "maybe"); r.Code != 2 {
		t.Errorf("apps set --cron maybe: exit %d, want 2 (bad usage): %s", r.Code, r)
	}
}

// TestCronMissedRunRunsOnceAfterRestart: agentd is killed (-9) before a
// job's due time and started again after it: the missed run starts at
// once, not at the job's next time a minute later, and only once.
func TestCronMissedRunRunsOnceAfterRestart(t *testing.T) {
	e := start(t)
	e.createApp("missed", "--readiness", "web=notify")
	runsFile := filepath.Join(e.dir, "cron-runs")
	job := fmt.Sprintf(`echo "start $(date +%%s.%%N) $AGENTD_RELEASE $$" >> %[1]s; echo "end $(date +%%s.%%N) $AGENTD_RELEASE $$" >> %[1]s`, runsFile)
	dir := filepath.Join(e.dir, "missedrel")
	procfile := fmt.Sprintf("web: TESTAPP_MODE= exec %s\n", bins.TestApp)
	if _, err := harness.Release(dir, procfile, map[string]string{"app.json": fmt.Sprintf(`{"cron": [{"command": %q, "schedule": "* * * * *"}]}`, job)}); err != nil {
		t.Fatal(err)
	}
	e.deploy("missed", dir)
	var list api.CronList
	cronWait(t, "the job's next due time", func() bool {
		e.json(&list, "cron", "missed")
		return len(list.Jobs) == 1 && !list.Jobs[0].Next.IsZero()
	})
	due := list.Jobs[0].Next
	if time.Until(due) < 2*time.Second {
		// Too close to kill agentd before it: the one after.
		due = due.Add(time.Minute)
		// ... and the run of the minute before recorded, so that the kill
		// does not make it a missed run too.
		cronWait(t, "the job's next due time after "+due.String(), func() bool {
			e.json(&list, "cron", "missed")
			return list.Jobs[0].Next.Equal(due) && list.Jobs[0].Runs >= 1
		})
	}
	runsBefore := list.Jobs[0].Runs
	e.ag.Kill()
	// agentd stays down over the due time: that is the outage.
	time.Sleep(time.Until(due) + time.Second)
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	back := float64(time.Now().UnixNano()) / 1e9
	regular := float64(due.Add(time.Minute).UnixNano()) / 1e9
	// The runs after the missed due time. Counted by their start, not by
	// the file's length: a run of the minute before (when due was too
	// close) may still be writing its lines after the kill.
	after := func() []cronRun {
		var rs []cronRun
		for _, r := range readCronRuns(t, runsFile) {
			if r.start >= float64(due.UnixNano())/1e9 {
				rs = append(rs, r)
			}
		}
		return rs
	}
	cronWait(t, "run of the missed due time", func() bool { return len(after()) > 0 })
	runs := after()
	if runs[0].start < back-1 || runs[0].start >= regular {
		t.Fatalf("the run after the restart started at %.3f; agentd was back at %.3f and the job's regular time is %.3f", runs[0].start, back, regular)
	}
	t.Logf("missed due time %s: run at %.3fs after agentd was back", due.Format(time.TimeOnly), runs[0].start-back)
	e.json(&list, "cron", "missed")
	if len(after()) != 1 || list.Jobs[0].Runs != runsBefore+1 || !list.Jobs[0].Next.After(due) {
		t.Fatalf("after the catch-up run: %d runs in the file since %s, hctl cron %+v: want one run and the next time after %s", len(after()), due, list.Jobs[0], due)
	}
}
