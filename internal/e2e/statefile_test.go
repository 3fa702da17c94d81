package e2e

import (
	"encoding/json"
	"time"

	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/harness"

	"github.com/agentd/agentd/agentd/api"
)

// TestBadStateFiles: one of three apps' state file is truncated, emptied,
// overwritten with garbage, or valid JSON that does not hold together.
// agentd starts anyway; the other two stay healthy and deployable under
// load with 0 failed; the bad one is recovered from its previous
// generation with its processes' PIDs unchanged, or, when both generations
// are bad, reported broken, left alone, and repaired from what runs.
func TestBadStateFiles(t *testing.T) {
	e := start(t)
	urls := map[string]string{}
	for _, a := range []string{"a1", "a2", "a3"} {
		urls[a] = e.createApp(a, "--readiness", "web=notify")
		e.deploy(a, e.release(""))
	}
	e.deploy("a1", e.release("")) // a coherent previous generation
	file := filepath.Join(e.ag.StateDir, "apps", "a1.json")
	ls := startLoads(t, urls["a2"])
	a1 := startLoads(t, urls["a1"])

	edit := func(f func(m map[string]any)) func([]byte) []byte {
		return func(b []byte) []byte {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			f(m)
			out, _ := json.Marshal(m)
			return out
		}
	}
	cases := []struct {
		name string
		bad  func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"empty", func([]byte) []byte { return nil }},
		{"binary garbage", func([]byte) []byte { return []byte("\x00\xff\x13garbage\x7f") }},
		{"active release missing", edit(func(m map[string]any) { m["active"] = 99 })},
		{"formation for a type the Procfile lacks", edit(func(m map[string]any) { m["formation"] = map[string]any{"ghost": 2} })},
		{"socket spec agentd would refuse", edit(func(m map[string]any) {
			s := m["sockets"].([]any)[0].(map[string]any)
			s["addr"] = "tcp://999.1.1.1:80"
		})},
	}
	for _, c := range cases {
		before := pidsOf(e.ps("a1"))
		e.ag.Kill()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, c.bad(b), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := e.ag.StartAgain(); err != nil {
			t.Fatalf("%s: agentd did not start: %v", c.name, err)
		}
		var info api.AppInfo
		e.json(&info, "apps", "info", "a1")
		if info.StateFile != "recovered" || !strings.Contains(info.StateNote, "previous generation") {
			t.Errorf("%s: a1 state %q %q, want recovered", c.name, info.StateFile, info.StateNote)
		}
		if after := pidsOf(e.ps("a1")); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("%s: a1's processes changed: %v -> %v", c.name, before, after)
		}
		if res := e.deploy("a2", e.release("")); !res.OK {
			t.Errorf("%s: a2 deploy: %+v", c.name, res)
		}
		q, _ := filepath.Glob(filepath.Join(e.ag.StateDir, "apps", ".quarantine", "a1.json.*"))
		if len(q) == 0 {
			t.Errorf("%s: the refused file is not in the quarantine", c.name)
		}
	}

	// Both generations bad: broken, left alone, repaired from what runs.
	before := pidsOf(e.ps("a1"))
	t.Cleanup(func() {
		// agentd stops only what it supervises: a1's processes, should the
		// test end while it is broken.
		for _, pid := range before {
			if alive(pid) {
				killGroup(pid)
			}
		}
	})
	e.ag.Kill()
	for _, f := range []string{file, file + ".prev"} {
		if err := os.WriteFile(f, []byte("{\"name\": \"a1\", tru"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.ag.StartAgain(); err != nil {
		t.Fatalf("agentd did not start with a broken app: %v", err)
	}
	var apps []api.App
	e.json(&apps, "apps")
	broken := false
	for _, a := range apps {
		broken = broken || a.Name == "a1" && a.StateFile == "broken"
	}
	if !broken {
		t.Errorf("hctl apps does not report a1 broken: %+v", apps)
	}
	r := e.hctl("status", "a1")
	if !strings.Contains(r.Stdout, "not supervised") {
		t.Errorf("hctl status a1: %s", r)
	}
	r = e.hctl("deploy", "a1", e.release(""))
	if r.Code != 1 || !strings.Contains(r.Stderr, "hctl apps repair a1") {
		t.Errorf("deploy to a broken app: %s", r)
	}
	if res := e.deploy("a3", e.release("")); !res.OK {
		t.Errorf("a3 deploy with a1 broken: %+v", res)
	}
	for name, pid := range before {
		if !alive(pid) {
			t.Errorf("broken a1's %s (pid %d) was touched", name, pid)
		}
	}
	e.mustHctl("apps", "repair", "a1")
	if after := pidsOf(e.ps("a1")); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("repair restarted a1's processes: %v -> %v", before, after)
	}
	if res := e.deploy("a1", e.release("")); !res.OK {
		t.Errorf("a1 deploy after repair: %+v", res)
	}
	ls.stopAndCheck(t)
	a1.stopAndCheck(t)
	checkNoOrphans(t, e, "a1")
}

// TestKillBetweenForkAndRecord: agentd killed with SIGKILL after it forked
// a new release's processes and before it recorded them (a test pause
// point there): the held processes never run the app, and after the
// restart no process of that release runs unrecorded.
func TestKillBetweenForkAndRecord(t *testing.T) {
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	ag, err := harness.StartEnv(bins, dir, []string{"AGENTD_TEST_PAUSE=record"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ag: ag, dir: dir}
	t.Cleanup(func() {
		ag.Stop()
		if t.Failed() {
			t.Logf("agentd log:\n%s", ag.Log())
		}
		os.RemoveAll(dir)
	})
	url := e.createApp("fr", "--readiness", "web=notify")
	e.deploy("fr", e.release(""))
	e.mustHctl("scale", "fr", "web=3")
	ls := startLoads(t, url)
	wait := e.deployUntil("test pause at record", "fr", e.release(""), "-m", "[pause]")
	// Held there, each new process is agentd-shim, the C shim beside
	// agentd, and not yet the app: the fast shim is the one agentd uses,
	// and it holds the process until it is recorded.
	held := runningOfRelease(e, "fr", "v2")
	if len(held) == 0 {
		t.Fatal("no v2 process held at the pause")
	}
	for _, pid := range held {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != bins.Shim {
			t.Errorf("held v2 process %d runs %q (%v), want %s", pid, exe, err, bins.Shim)
		}
	}
	ag.Kill()
	wait()
	ag.Env = nil
	if err := ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitPs(t, e, "fr", "three ready v1 web", func(ps []api.Process) bool {
		n := 0
		for _, p := range ps {
			if p.Release == "v1" && p.State == api.StateReady {
				n++
			}
		}
		return n == 3 && len(ps) == 3
	})
	// The held shims exit when their holder dies; none ran the app.
	waitFor(t, "the held processes of v2 gone", func() bool { return len(runningOfRelease(e, "fr", "v2")) == 0 })
	ls.stopAndCheck(t)
	checkNoOrphans(t, e, "fr")
	if log := ag.Log(); strings.Contains(log, "release=v2 process=web.1") && strings.Contains(log, "adopted process app=fr release=v2") {
		t.Errorf("agentd adopted a v2 process it never recorded:\n%s", log)
	}
}

// runningOfRelease lists the pids of processes of this test's agentd that
// run release rel of app.
func runningOfRelease(e *env, app, rel string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		var pid int
		if _, err := fmt.Sscan(ent.Name(), &pid); err != nil || !alive(pid) {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "environ"))
		if err != nil || !strings.Contains(string(environ), "AGENTD_APP="+app+"\x00") || !strings.Contains(string(environ), "AGENTD_RELEASE="+rel+"\x00") {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", ent.Name(), "cwd")); err == nil && strings.HasPrefix(cwd, e.dir) {
			out = append(out, pid)
		}
	}
	return out
}

// waitFor polls done until it is true, for at most 30 s.
func waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s", what)
		}
		<-tick.C
	}
}

// TestReleaseCodeGone: the code of an old release deleted by hand: agentd
// starts, says so in hctl releases, and a rollback to it fails with a
// clear error, changing nothing.
func TestReleaseCodeGone(t *testing.T) {
	e := start(t)
	e.createApp("cg", "--readiness", "web=notify")
	e.deploy("cg", e.release(""))
	e.deploy("cg", e.release(""))
	v1 := releaseNamed(t, e, "cg", "v1")
	tree := filepath.Join(e.ag.StateDir, "store", "trees", strings.Replace(v1.Digest, ":", "-", 1))
	if err := os.RemoveAll(tree); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(e.ag.StateDir, "slugs", strings.Replace(v1.Digest, ":", "-", 1)))
	e.ag.Kill()
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	if v1 := releaseNamed(t, e, "cg", "v1"); !v1.CodeGone {
		t.Errorf("v1's code is gone, but hctl releases does not say so: %+v", v1)
	}
	if r := e.hctl("releases", "cg"); !strings.Contains(r.Stdout, "(code gone)") {
		t.Errorf("hctl releases: %s", r)
	}
	r := e.hctl("rollback", "cg", "v1")
	if r.Code != 1 || !strings.Contains(r.Stderr, "no longer kept") {
		t.Errorf("rollback to a release whose code is gone: %s", r)
	}
	if ps := e.ps("cg"); len(ps) != 1 || ps[0].Release != "v2" {
		t.Errorf("after the refused rollback: %+v", ps)
	}
}
