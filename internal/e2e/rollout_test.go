package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Tests of the rollout engine's capabilities, end to end: bake windows
// that roll a bad release back by themselves, the surge limit, stop-first
// types, apps set, and operations to leave and come back to.

func releaseNamed(t *testing.T, e *env, app, name string) api.Release {
	t.Helper()
	var rels []api.Release
	e.json(&rels, "releases", app)
	for _, r := range rels {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("app %s has no release %s: %+v", app, name, rels)
	return api.Release{}
}

// TestBakeRollsBack: a release that fails its bake window after its
// cutover (its health probe turns to 500; its process exits with status 3;
// it sends WATCHDOG=trigger) is rolled back by agentd, without a failed
// request.
func TestBakeRollsBack(t *testing.T) {
	cases := []struct {
		name, mode, reason string
	}{
		{"health probe 500", "unhealthy-after TESTAPP_UNHEALTHY_AFTER=5s", "failed 3 health probes in a row (http:/healthz): GET /healthz: 500"},
		{"exit 3", "exit-after TESTAPP_EXIT_AFTER=3s", "exited with status 3"},
		{"WATCHDOG=trigger", "trigger-after TESTAPP_TRIGGER_AFTER=3s", "sent WATCHDOG=trigger"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := start(t)
			url := e.createApp("bk", "--readiness", "web=http:/healthz", "--drain-timeout", "20s")
			e.deploy("bk", e.release(""))
			e.mustHctl("scale", "bk", "web=2")
			// Set after the first deploy: the first release has nothing to
			// roll back to.
			e.mustHctl("apps", "set", "bk", "--bake", "20s")
			ls := startLoads(t, url)

			start := time.Now()
			r := e.hctl("deploy", "bk", e.release(c.mode))
			took := time.Since(start)
			if r.Code != 1 {
				t.Fatalf("deploy of a release that fails its bake: want exit 1, got %s", r)
			}
			if !strings.Contains(r.Stderr, "rolled back automatically: v3 (the code and config of v1) serves") {
				t.Errorf("hctl does not name the release that serves: %s", r)
			}
			if !strings.Contains(r.Stderr, "-----> bake") {
				t.Errorf("hctl did not say it waits through the bake window: %s", r)
			}
			if took > 19*time.Second {
				t.Errorf("the rollback took %s: it should come at the failure, not at the end of the 20s window", took)
			}
			waitPs(t, e, "bk", "two ready v3 web", func(ps []api.Process) bool {
				n := 0
				for _, p := range ps {
					if p.Release == "v3" && p.State == api.StateReady {
						n++
					} else if p.Release != "v3" {
						return false
					}
				}
				return n == 2
			})
			ls.stopAndCheck(t)

			failed := releaseNamed(t, e, "bk", "v2")
			if failed.Status != api.StatusFailed || !strings.Contains(failed.Error, c.reason) || !strings.Contains(failed.Error, "into the 20s bake window") {
				t.Errorf("v2: status %s, error %q; want failed with %q", failed.Status, failed.Error, c.reason)
			}
			back := releaseNamed(t, e, "bk", "v3")
			if back.Status != api.StatusActive || back.Source != "auto-rollback" {
				t.Errorf("v3: status %s source %s, want an active auto-rollback", back.Status, back.Source)
			}
			if got := get(t, url); !strings.Contains(got, "release=v3") {
				t.Errorf("serving %q, want v3", got)
			}
			m := e.scrape()
			if v := m.val("agentd_rollbacks_total", `app="bk"`); v != 1 {
				t.Errorf("agentd_rollbacks_total{app=bk} = %v, want 1", v)
			}
		})
	}
}

// TestBakePassAndAbortByHand: hctl bake pass ends the window and keeps the
// release; abort rolls it back.
func TestBakePassAndAbortByHand(t *testing.T) {
	e := start(t)
	e.createApp("bh", "--readiness", "web=notify")
	e.deploy("bh", e.release(""))
	e.mustHctl("apps", "set", "bh", "--bake", "10m")
	for _, end := range []string{"pass", "abort"} {
		wait := e.deployUntil("-----> bake", "bh", e.release(""))
		e.mustHctl("bake", "bh", end)
		err := wait()
		if end == "pass" && err != nil || end == "abort" && err == nil {
			t.Fatalf("bake %s: hctl deploy ended with %v", end, err)
		}
	}
	var rels []api.Release
	e.json(&rels, "releases", "bh")
	if rels[0].Source != "auto-rollback" || rels[0].Status != api.StatusActive || rels[1].Status != api.StatusFailed || rels[2].Status != api.StatusRetired {
		t.Fatalf("releases after pass and abort: %+v", rels)
	}
}

// lifeEvent is one line of the test app's life log.
type lifeEvent struct {
	what string
	pid  int
	at   int64
	proc string
}

func readLifeLog(t *testing.T, path string) []lifeEvent {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []lifeEvent
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("bad life log line %q", line)
		}
		pid, _ := strconv.Atoi(f[1])
		at, _ := strconv.ParseInt(f[2], 10, 64)
		out = append(out, lifeEvent{f[0], pid, at, f[3]})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// maxAlive is the most processes of type typ alive at once by the log,
// with before of them alive when it began.
func maxAlive(evs []lifeEvent, typ string, before int) int {
	n, top := before, before
	for _, ev := range evs {
		if !strings.HasPrefix(ev.proc, typ+".") {
			continue
		}
		switch ev.what {
		case "start":
			n++
			top = max(top, n)
		case "exit":
			n--
		}
	}
	return top
}

// TestMaxSurge: formation web=6 with --max-surge 2: by the processes' own
// log of their start and exit, never more than 8 web alive through a
// deploy, and no failed request. With too little memory available for the
// whole new generation, the surge is lowered and the deploy says so.
func TestMaxSurge(t *testing.T) {
	e := start(t)
	lifelog := filepath.Join(e.dir, "life.log")
	url := e.createApp("sg", "--readiness", "web=notify", "--max-surge", "2")
	e.mustHctl("config", "set", "sg", "TESTAPP_LIFELOG="+lifelog)
	e.deploy("sg", e.release(""))
	e.mustHctl("scale", "sg", "web=6")
	waitPs(t, e, "sg", "six ready web", func(ps []api.Process) bool { return len(ps) == 6 })
	if err := os.Truncate(lifelog, 0); err != nil {
		t.Fatal(err)
	}
	ls := startLoads(t, url)
	res := e.deploy("sg", e.release(""))
	if !res.OK {
		t.Fatalf("deploy: %+v", res)
	}
	waitPs(t, e, "sg", "six web of the new release alone", func(ps []api.Process) bool {
		for _, p := range ps {
			if p.Release != res.Release {
				return false
			}
		}
		return len(ps) == 6
	})
	ls.stopAndCheck(t)
	evs := readLifeLog(t, lifelog)
	if top := maxAlive(evs, "web", 6); top > 8 || top < 7 {
		t.Errorf("%d web processes alive at once through the deploy, want 7 or 8 (formation 6, surge 2)", top)
	} else {
		t.Logf("at most %d web processes alive at once (formation 6, surge 2)", top)
	}

	// Memory: as much as about 2.5 of the processes take, by their PSS.
	pid := e.ps("sg")[0].PID
	pss := readPSS(t, pid)
	e.ag.Stop()
	e.ag.Env = []string{fmt.Sprintf("AGENTD_TEST_MEM_AVAILABLE=%d", pss*5/2)}
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	e.mustHctl("apps", "set", "sg", "--max-surge", "0")
	r := e.mustHctl("deploy", "sg", e.release(""))
	if !strings.Contains(r.Stderr, "surge lowered from 6 to") {
		t.Errorf("the deploy did not say it lowered the surge: %s", r)
	}
	e.ag.Stop()
	e.ag.Env = []string{fmt.Sprintf("AGENTD_TEST_MEM_AVAILABLE=%d", pss/4)}
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	r = e.hctl("deploy", "sg", e.release(""))
	if r.Code != 1 || !strings.Contains(r.Stderr, "not enough memory to start even one new process") || !strings.Contains(r.Stderr, "held by sg v") {
		t.Errorf("a deploy that cannot start one process: %s", r)
	}
}

func readPSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil && kb > 0 {
				return kb << 10
			}
		}
	}
	t.Fatalf("no PSS for pid %d", pid)
	return 0
}

// TestStopFirst: a stop-first worker never runs twice at once, through 10
// deploys and a kill -9 of agentd in the middle of one; each worker takes
// a non-blocking exclusive lock at its start and logs whether it got it.
// The overlap web loses no request.
func TestStopFirst(t *testing.T) {
	e := start(t)
	lifelog := filepath.Join(e.dir, "life.log")
	lock := filepath.Join(e.dir, "worker.lock")
	url := e.createApp("sf", "--readiness", "web=notify", "--readiness", "worker=notify", "--strategy", "worker=stop-first", "--drain-timeout", "20s")
	e.mustHctl("config", "set", "sf", "TESTAPP_LIFELOG="+lifelog)
	worker := fmt.Sprintf("worker: TESTAPP_LOCKFILE=%s exec %s", lock, bins.TestApp)
	e.deploy("sf", e.release("", worker))
	e.mustHctl("scale", "sf", "worker=1")
	ls := startLoads(t, url)
	for i := range 10 {
		if i != 5 {
			e.deploy("sf", e.release("", worker))
			continue
		}
		wait := e.deployUntil("stop-first: stopping", "sf", e.release("", worker))
		e.ag.Kill()
		wait()
		if err := e.ag.StartAgain(); err != nil {
			t.Fatal(err)
		}
		waitPs(t, e, "sf", "one web and one worker, ready", func(ps []api.Process) bool {
			n := map[string]int{}
			for _, p := range ps {
				if p.State != api.StateReady {
					return false
				}
				n[p.Type]++
			}
			return n["web"] == 1 && n["worker"] == 1
		})
	}
	ls.stopAndCheck(t)
	evs := readLifeLog(t, lifelog)
	locked := 0
	for _, ev := range evs {
		if ev.what == "conflict" {
			t.Errorf("two workers ran at once: %s (pid %d) found the lock taken", ev.proc, ev.pid)
		}
		if ev.what == "locked" {
			locked++
		}
	}
	// One from the scale, one per deploy but the killed one (whose old
	// worker may or may not have had its SIGTERM before the kill).
	if locked < 10 {
		t.Errorf("%d workers took the lock, want at least 10: %+v", locked, evs)
	}
	if top := maxAlive(evs, "web", 1); top < 2 {
		t.Errorf("overlap web never overlapped (at most %d alive)", top)
	}
}

// TestAppsSet changes the settings of a running app under load: nothing
// running is touched, apps info shows them, and the next rollout obeys.
func TestAppsSet(t *testing.T) {
	e := start(t)
	url := e.createApp("st", "--readiness", "web=notify")
	e.deploy("st", e.release(""))
	before := pidsOf(e.ps("st"))
	ls := startLoads(t, url)
	r := e.mustHctl("apps", "set", "st", "--drain-timeout", "7s", "--boot-timeout", "1s", "--readiness", "web=http:/healthz",
		"--bake", "1s", "--max-surge", "3", "--strategy", "web=overlap", "--strategy", "worker=stop-first")
	if !strings.Contains(r.Stdout, "changed boot_timeout, drain_timeout, bake, max_surge, readiness.web, strategy.worker") ||
		!strings.Contains(r.Stdout, "running processes get readiness.web at the next rollout") {
		t.Errorf("apps set said: %s", r)
	}
	if after := pidsOf(e.ps("st")); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("apps set touched running processes: %v -> %v", before, after)
	}
	var info api.AppInfo
	e.json(&info, "apps", "info", "st")
	if time.Duration(info.DrainTimeout) != 7*time.Second || time.Duration(info.BootTimeout) != time.Second || info.Readiness["web"] != "http:/healthz" ||
		time.Duration(info.Bake) != time.Second || info.MaxSurge != 3 || info.Strategy["worker"] != "stop-first" {
		t.Errorf("apps info after apps set: %+v", info.App)
	}
	// The shorter boot timeout fails a release that boots in 3s.
	r = e.hctl("deploy", "st", e.release("slow-boot TESTAPP_BOOT_DELAY=3s"))
	if r.Code != 1 || !strings.Contains(r.Stderr, "within the boot timeout of 1s") {
		t.Errorf("slow release with a 1s boot timeout: %s", r)
	}
	e.mustHctl("apps", "set", "st", "--boot-timeout", "30s")
	e.deploy("st", e.release(""))
	ls.stopAndCheck(t)

	// A new drain timeout kills at the new deadline.
	e.mustHctl("apps", "set", "st", "--readiness", "web=notify", "--bake", "0s")
	e.deploy("st", e.release("ignore-sigterm"))
	e.mustHctl("apps", "set", "st", "--drain-timeout", "1s")
	res := e.deploy("st", e.release(""))
	if len(res.Killed) != 1 || res.DrainSeconds < 0.9 || res.DrainSeconds > 5 {
		t.Errorf("old process ignoring SIGTERM with a 1s drain timeout: killed %v after %.2fs", res.Killed, res.DrainSeconds)
	}
	// Bad input changes nothing.
	r = e.hctl("apps", "set", "st", "--strategy", "web=sideways")
	if r.Code != 2 {
		t.Errorf("bad strategy: %s", r)
	}
	r = e.hctl("--json", "apps", "set", "st", "--max-surge", "1000")
	if r.Code != 2 || !strings.Contains(r.Stdout, `"bad_request"`) {
		t.Errorf("surge 1000: %s", r)
	}
	e.json(&info, "apps", "info", "st")
	if info.MaxSurge != 3 {
		t.Errorf("a refused apps set changed max surge to %d", info.MaxSurge)
	}
}

// TestDetachWaitCancel: a deploy to leave and come back to, and one to
// cancel before its cutover, under load.
func TestDetachWaitCancel(t *testing.T) {
	e := start(t)
	url := e.createApp("dw", "--readiness", "web=notify", "--boot-timeout", "2m")
	e.deploy("dw", e.release(""))
	ls := startLoads(t, url)

	r := e.mustHctl("deploy", "dw", e.release("slow-boot TESTAPP_BOOT_DELAY=2s"), "--detach")
	if !strings.Contains(r.Stdout, "hctl wait dw") {
		t.Errorf("deploy --detach: %s", r)
	}
	w := e.mustHctl("wait", "dw")
	if !strings.Contains(w.Stdout, "dw v2 is live") || !strings.Contains(w.Stderr, "-----> readiness") {
		t.Errorf("hctl wait: %s", w)
	}
	if w := e.hctl("wait", "dw"); w.Code != 1 || !strings.Contains(w.Stderr, "no operation in progress") {
		t.Errorf("hctl wait with nothing in progress: %s", w)
	}

	e.mustHctl("deploy", "dw", e.release("slow-boot TESTAPP_BOOT_DELAY=60s"), "--detach")
	waitPs(t, e, "dw", "a v3 process starting", func(ps []api.Process) bool {
		for _, p := range ps {
			if p.Release == "v3" {
				return true
			}
		}
		return false
	})
	// hctl wait attached first, as an operator who came back to the
	// deploy would be, then the cancel: the wait reports it. (A wait
	// started after the cancel may find the deploy already ended.)
	wait := exec.Command(bins.Hctl, "wait", "dw")
	wait.Env = append(os.Environ(), "HCTL_SOCKET="+e.ag.Socket)
	waitErr, err := wait.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(waitErr)
	if !sc.Scan() { // its first line: the deploy's history, replayed on attach
		t.Fatalf("hctl wait printed nothing: %v", sc.Err())
	}
	e.mustHctl("cancel", "dw")
	var waitOut strings.Builder
	for sc.Scan() {
		waitOut.WriteString(sc.Text() + "\n")
	}
	werr := wait.Wait()
	if ee, ok := werr.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(waitOut.String(), "cancelled by") {
		t.Errorf("hctl wait of a cancelled deploy: %v\n%s", werr, waitOut.String())
	}
	waitPs(t, e, "dw", "v2 alone", func(ps []api.Process) bool {
		return len(ps) == 1 && ps[0].Release == "v2" && ps[0].State == api.StateReady
	})
	ls.stopAndCheck(t)
	v3 := releaseNamed(t, e, "dw", "v3")
	if v3.Status != api.StatusFailed || !strings.HasPrefix(v3.Error, "cancelled by") {
		t.Errorf("v3: %s %q, want failed, cancelled by …", v3.Status, v3.Error)
	}
	checkNoOrphans(t, e, "dw")
}

// TestBakeSurvivesRestart: agentd killed with SIGKILL in a bake window;
// the next agentd watches the rest of the window, and the release that
// fails in it is rolled back as before the restart.
func TestBakeSurvivesRestart(t *testing.T) {
	e := start(t)
	url := e.createApp("br", "--readiness", "web=http:/healthz", "--drain-timeout", "20s")
	e.deploy("br", e.release(""))
	e.mustHctl("apps", "set", "br", "--bake", "30s")
	ls := startLoads(t, url)
	wait := e.deployUntil("-----> bake", "br", e.release("unhealthy-after TESTAPP_UNHEALTHY_AFTER=6s"))
	e.ag.Kill()
	wait()
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	var info api.AppInfo
	e.json(&info, "apps", "info", "br")
	if info.Phase != "bake" || info.BakeUntil.IsZero() {
		t.Errorf("after the restart: phase %q, bake until %v; want the bake resumed", info.Phase, info.BakeUntil)
	}
	waitPs(t, e, "br", "the rollback release v3 alone", func(ps []api.Process) bool {
		return len(ps) == 1 && ps[0].Release == "v3" && ps[0].State == api.StateReady
	})
	ls.stopAndCheck(t)
	if v2 := releaseNamed(t, e, "br", "v2"); v2.Status != api.StatusFailed || !strings.Contains(v2.Error, "health probes") {
		t.Errorf("v2 after a bake that failed across a restart: %s %q", v2.Status, v2.Error)
	}
	if v3 := releaseNamed(t, e, "br", "v3"); v3.Source != "auto-rollback" || v3.Status != api.StatusActive {
		t.Errorf("v3: %s %s", v3.Source, v3.Status)
	}
}

// deployUntil starts hctl deploy APP ARGS... and returns once its progress
// has shown a line containing until, with a func that waits for hctl to
// end and returns how it ended.
func (e *env) deployUntil(until, app string, args ...string) (wait func() error) {
	e.t.Helper()
	cmd := exec.Command(bins.Hctl, append([]string{"deploy", app}, args...)...)
	cmd.Env = append(os.Environ(), "HCTL_SOCKET="+e.ag.Socket, "XDG_CACHE_HOME="+filepath.Join(e.dir, "cache"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	seen := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), until) {
			seen = true
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if !seen {
		cmd.Wait()
		e.t.Fatalf("hctl deploy %s ended before %q", app, until)
	}
	return cmd.Wait
}
