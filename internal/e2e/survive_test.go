package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// TestSelfUpgradeUnderLoad: twenty hand-overs to a new agentd in a row while
// the three client kinds send requests: none fails, the app's PIDs never
// change, and hctl ps is right after each.
func TestSelfUpgradeUnderLoad(t *testing.T) {
	e := start(t)
	url := e.createApp("up", "--readiness", "web=notify")
	e.deploy("up", e.release(""))
	e.mustHctl("scale", "up", "web=2")
	before := pidsOf(e.ps("up"))
	agentPID := e.ag.PID()
	ls := startLoads(t, url)
	// Meanwhile an operator keeps asking: every call must end, in success
	// or a clean error, never hang.
	stopAsking := make(chan struct{})
	asked := make(chan [2]int)
	go func() {
		ok, hung := 0, 0
		for {
			select {
			case <-stopAsking:
				asked <- [2]int{ok, hung}
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			r := e.ag.HctlContext(ctx, "ps", "up")
			if ctx.Err() != nil {
				hung++
			} else if r.Code == 0 {
				ok++
			}
			cancel()
		}
	}()
	n := 20
	if v := os.Getenv("E2E_UPGRADES"); v != "" {
		fmt.Sscan(v, &n)
	}
	for i := range n {
		if r := e.hctl("agent", "upgrade"); r.Code != 0 {
			t.Fatalf("upgrade %d: %s", i, r)
		}
		now := e.ag.PID()
		if now == agentPID {
			t.Fatalf("upgrade %d: agentd pid still %d", i, now)
		}
		agentPID = now
		ps := e.ps("up")
		if after := pidsOf(ps); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("upgrade %d: app processes changed from %v to %v", i, before, after)
		}
		for _, p := range ps {
			if p.State != api.StateReady {
				t.Fatalf("upgrade %d: %s is %s", i, p.Name, p.State)
			}
		}
	}
	ls.stopAndCheck(t)
	close(stopAsking)
	counts := <-asked
	t.Logf("hctl ps during the upgrades: %d answered, %d hung", counts[0], counts[1])
	if counts[1] > 0 || counts[0] == 0 {
		t.Errorf("hctl ps during upgrades: %d answered, %d hung", counts[0], counts[1])
	}
	// The adopted processes are still supervised: a deploy replaces them.
	res := e.deploy("up", e.release(""))
	if !res.OK || res.Release != "v2" || len(res.Killed) != 0 {
		t.Fatalf("deploy after the upgrades: %+v", res)
	}
}

// TestRestartAndCrashKeepApps: agentd stopped and started again, or
// killed with SIGKILL and started again, takes its sockets back from the
// running apps: no request fails and the app's PIDs stay.
func TestRestartAndCrashKeepApps(t *testing.T) {
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// Without --stop-apps-on-exit: a plain stop leaves the apps running.
	ag, err := harness.Start(bins, dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ag: ag, dir: dir}
	t.Cleanup(func() {
		pids := e.allPIDs()
		ag.Stop()
		// This agentd leaves apps running by design: stop them by PID.
		for _, pid := range pids {
			killGroup(pid)
		}
		os.RemoveAll(dir)
	})
	url := e.createApp("keep", "--readiness", "web=notify")
	e.deploy("keep", e.release(""))
	before := pidsOf(e.ps("keep"))
	ls := startLoads(t, url)
	for i := range 3 {
		if i%2 == 0 {
			ag.Kill()
		} else {
			ag.Stop()
		}
		if err := ag.StartAgain("--stop-apps-on-exit=false"); err != nil {
			t.Fatal(err)
		}
		if after := pidsOf(e.ps("keep")); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("round %d: app processes changed from %v to %v", i, before, after)
		}
	}
	ls.stopAndCheck(t)
	res := e.deploy("keep", e.release(""))
	if !res.OK || res.Release != "v2" {
		t.Fatalf("deploy after the restarts: %+v", res)
	}

	// A host reboot: agentd and every app process gone. The next agentd
	// starts the active release in its formation, on the same port.
	running := pidsOf(e.ps("keep"))
	ag.Kill()
	for _, pid := range running {
		killGroup(pid)
	}
	if err := ag.StartAgain("--stop-apps-on-exit=false"); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, e, "keep", "v2")
	if got := get(t, url); !strings.Contains(got, "release=v2") {
		t.Fatalf("after the reboot the app answers %q", got)
	}

	// A process crashes, agentd restarts it and sees it ready, then agentd
	// itself is killed. The process said READY=1 once, to the agentd that
	// is gone: the next agentd must know it is ready from the state on
	// disk, or it lists it as starting for good and never restarts it if
	// it crashes again.
	crashed := e.ps("keep")[0].PID
	killGroup(crashed)
	restarted := waitRestartedReady(t, e, "keep", crashed)
	ag.Kill()
	if err := ag.StartAgain("--stop-apps-on-exit=false"); err != nil {
		t.Fatal(err)
	}
	for _, p := range e.ps("keep") {
		if p.PID == restarted && p.State != api.StateReady {
			t.Errorf("after an agentd crash, the crash-restarted %s (pid %d) is %s, want ready", p.Name, p.PID, p.State)
		}
	}
}

// waitRestartedReady waits for app's web.1 to run again, ready, under a
// PID other than old, and returns that PID.
func waitRestartedReady(t *testing.T, e *env, app string, old int) int {
	t.Helper()
	pid := 0
	waitPs(t, e, app, fmt.Sprintf("web.1 restarted and ready after pid %d ended", old), func(ps []api.Process) bool {
		for _, p := range ps {
			if p.Name == "web.1" && p.PID != 0 && p.PID != old && p.State == api.StateReady {
				pid = p.PID
				return true
			}
		}
		return false
	})
	return pid
}

// TestKillDuringEachPhase kills agentd with SIGKILL in every phase of a
// deploy, under load, and starts it again: no request fails, exactly one
// release is active, the formation runs, no process is left unsupervised,
// and the next deploy works.
func TestKillDuringEachPhase(t *testing.T) {
	cases := []struct {
		phase   string
		pause   string // test pause point, or "" for a natural wait
		release func(e *env) string
		waitFor string // progress line after which agentd is killed
		active  string // release active after the restart
	}{
		{"prepare", "prepare", func(e *env) string { return e.release("") }, "test pause at prepare", "v1"},
		{"release", "", func(e *env) string { return e.release("", "release: echo migrating; exec sleep 600") }, "release| migrating", "v1"},
		{"preboot", "preboot", func(e *env) string { return e.release("") }, "test pause at preboot", "v1"},
		{"readiness", "", func(e *env) string { return e.release("never-ready") }, "-----> readiness", "v1"},
		{"cutover", "cutover", func(e *env) string { return e.release("") }, "test pause at cutover", "v2"},
		{"drain", "", func(e *env) string { return e.release("") }, "-----> drain", "v2"},
	}
	for _, c := range cases {
		t.Run(c.phase, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "e2e-")
			if err != nil {
				t.Fatal(err)
			}
			var extra []string
			if c.pause != "" {
				extra = []string{"AGENTD_TEST_PAUSE=" + c.pause}
			}
			ag, err := harness.StartEnv(bins, dir, extra)
			if err != nil {
				t.Fatal(err)
			}
			e := &env{t: t, ag: ag, dir: dir}
			t.Cleanup(func() {
				pids := e.allPIDs()
				ag.Stop()
				for _, pid := range pids {
					if alive(pid) {
						t.Errorf("process %d outlived agentd's stop", pid)
						killGroup(pid)
					}
				}
				if t.Failed() {
					t.Logf("agentd log:\n%s", ag.Log())
				}
				os.RemoveAll(dir)
			})
			url := e.createApp("ph", "--readiness", "web=notify", "--drain-timeout", "20s", "--boot-timeout", "10m")
			if c.phase == "drain" {
				// A slow, correct drain: the old process keeps answering
				// (Connection: close) for 3s, long enough to kill agentd in it.
				e.mustHctl("config", "set", "ph", "TESTAPP_GRACE=3s")
			}
			e.deploy("ph", e.release(""))
			ls := startLoads(t, url)

			// Start the deploy and kill agentd at the chosen moment.
			cmd := exec.Command(bins.Hctl, "deploy", "ph", c.release(e), "-m", "[pause]")
			cmd.Env = append(os.Environ(), "HCTL_SOCKET="+ag.Socket)
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stderr)
			seen := false
			for sc.Scan() {
				if strings.Contains(sc.Text(), c.waitFor) {
					seen = true
					break
				}
			}
			if !seen {
				ag.Kill()
				cmd.Wait()
				t.Fatalf("the deploy never reached %q", c.waitFor)
			}
			ag.Kill()
			go func() {
				for sc.Scan() {
				}
			}()
			if err := cmd.Wait(); err == nil {
				t.Errorf("hctl deploy exited 0 although agentd was killed mid-deploy")
			}
			// Start again without the pause.
			ag.Env = nil
			if err := ag.StartAgain(); err != nil {
				t.Fatal(err)
			}
			waitSettled(t, e, "ph", c.active)
			ls.stopAndCheck(t)
			checkNoOrphans(t, e, "ph")
			// The state saved at that instant is good as it is: no phase
			// leaves a file the restarted agentd must set aside.
			var info api.AppInfo
			e.json(&info, "apps", "info", "ph")
			if info.StateFile != "" {
				t.Errorf("after a kill in %s the app's state file is %s: %s", c.phase, info.StateFile, info.StateNote)
			}

			var rels []api.Release
			e.json(&rels, "releases", "ph")
			active := 0
			for _, r := range rels {
				if r.Status == api.StatusActive {
					active++
					if r.Name != c.active {
						t.Errorf("active release %s, want %s", r.Name, c.active)
					}
				}
				if r.Name == "v2" && c.active == "v1" && (r.Status != api.StatusFailed || !strings.Contains(r.Error, "interrupted")) {
					t.Errorf("interrupted v2: status %s, error %q", r.Status, r.Error)
				}
			}
			if active != 1 {
				t.Errorf("%d active releases: %+v", active, rels)
			}
			res := e.deploy("ph", e.release(""))
			if !res.OK {
				t.Fatalf("next deploy: %+v", res)
			}
		})
	}
}

// waitSettled waits until the app runs exactly its formation (one web) of
// release want, ready, and nothing else: what the restarted agentd must
// reach on its own. It polls hctl ps as an operator would.
func waitSettled(t *testing.T, e *env, app, want string) {
	t.Helper()
	waitPs(t, e, app, "one ready "+want+" web.1", func(ps []api.Process) bool {
		return len(ps) == 1 && ps[0].Release == want && ps[0].State == api.StateReady
	})
}

// waitPs asks agentd for app's processes until done is true of them,
// for at most 90 s.
func waitPs(t *testing.T, e *env, app, what string, done func([]api.Process) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ps := e.ps(app)
		if done(ps) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("app %s: no %s: %+v", app, what, ps)
		case <-tick.C:
		}
	}
}

// checkNoOrphans looks through /proc for processes of the test app that
// agentd does not list: none may run unsupervised.
func checkNoOrphans(t *testing.T, e *env, app string) {
	t.Helper()
	known := map[int]bool{}
	for _, p := range e.ps(app) {
		known[p.PID] = true
	}
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		var pid int
		if _, err := fmt.Sscan(ent.Name(), &pid); err != nil {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "environ"))
		if err != nil || !alive(pid) {
			continue
		}
		if !strings.Contains(string(environ), "AGENTD_APP="+app+"\x00") {
			continue
		}
		// Only processes of this test's agentd: they run in a release
		// directory under its state directory.
		if cwd, err := os.Readlink(filepath.Join("/proc", ent.Name(), "cwd")); err != nil || !strings.HasPrefix(cwd, e.dir) {
			continue
		}
		if !known[pid] {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
			t.Errorf("pid %d (%s) runs for app %s but agentd does not list it", pid, strings.ReplaceAll(string(cmdline), "\x00", " "), app)
		}
	}
}

// TestFailedUpgradeKeepsOldAgent: when the binary on disk does not start,
// the upgrade fails with a message, the running agentd carries on, and the
// apps never notice.
func TestFailedUpgradeKeepsOldAgent(t *testing.T) {
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// agentd runs from a copy that the test can break and mend.
	own := bins
	own.Agentd = filepath.Join(dir, "agentd")
	if err := harness.CopyFile(bins.Agentd, own.Agentd); err != nil {
		t.Fatal(err)
	}
	ag, err := harness.Start(own, dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ag: ag, dir: dir}
	t.Cleanup(func() {
		harness.CopyFile(bins.Agentd, own.Agentd)
		ag.Stop()
		os.RemoveAll(dir)
	})
	url := e.createApp("fu", "--readiness", "web=notify")
	e.deploy("fu", e.release(""))
	oldAgent := ag.PID()
	ls := startLoads(t, url)

	if err := os.Remove(own.Agentd); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own.Agentd, []byte("#!/bin/sh\necho broken build >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := e.hctl("agent", "upgrade")
	if r.Code != 1 || !strings.Contains(r.Stderr, "upgrade failed") {
		t.Fatalf("upgrade to a broken binary: want exit 1 saying it failed, got %s", r)
	}
	if now := ag.PID(); now != oldAgent {
		t.Fatalf("agentd pid changed from %d to %d after a failed upgrade", oldAgent, now)
	}
	// The old agentd still works: it deploys.
	if res := e.deploy("fu", e.release("")); !res.OK {
		t.Fatalf("deploy after the failed upgrade: %+v", res)
	}
	// Mended, the upgrade goes through.
	os.Remove(own.Agentd)
	if err := harness.CopyFile(bins.Agentd, own.Agentd); err != nil {
		t.Fatal(err)
	}
	if r := e.hctl("agent", "upgrade"); r.Code != 0 {
		t.Fatalf("upgrade to the mended binary: %s", r)
	}
	ls.stopAndCheck(t)
	if ag.PID() == oldAgent {
		t.Fatal("agentd did not change after a successful upgrade")
	}
}
