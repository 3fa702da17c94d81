// Package e2e tests agentd end to end: the real agentd and hctl binaries,
// real app processes, real sockets and signals, and a load client that
// never retries. Each test starts its own agentd on private directories and
// stops it (and, with it, every app process) when it ends.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/loadgen"
)

var bins harness.Bins

func TestMain(m *testing.M) { os.Exit(harness.TestMain(m, &bins)) }

// env is one test's agentd with helpers.
type env struct {
	t   *testing.T
	ag  *harness.Agentd
	dir string
}

func start(t *testing.T, args ...string) *env {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables for agentd.
func startEnv(t *testing.T, environ []string, args ...string) *env {
	t.Helper()
	// Short paths: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	ag, err := harness.StartEnv(bins, dir, environ, args...)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	e := &env{t: t, ag: ag, dir: dir}
	t.Cleanup(func() {
		pids := e.allPIDs()
		ag.Stop()
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("process %d outlived agentd's stop", pid)
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("agentd log:\n%s", ag.Log())
		}
		os.RemoveAll(dir)
	})
	return e
}

// allPIDs lists every app process agentd reports, for the leak check.
func (e *env) allPIDs() []int {
	var ps []api.Process
	if r := e.ag.HctlJSON(&ps, "ps"); r.Code != 0 {
		return nil
	}
	var out []int
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}

// alive reports whether pid runs; a zombie (dead, not yet reaped by
// whoever inherited it) does not count.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func (e *env) hctl(args ...string) harness.Result {
	e.t.Helper()
	return e.ag.Hctl(args...)
}

func (e *env) mustHctl(args ...string) harness.Result {
	e.t.Helper()
	r := e.ag.Hctl(args...)
	if r.Code != 0 {
		e.t.Fatalf("hctl %s: %s", strings.Join(args, " "), r)
	}
	return r
}

func (e *env) json(v any, args ...string) {
	e.t.Helper()
	if r := e.ag.HctlJSON(v, args...); r.Code != 0 {
		e.t.Fatalf("hctl --json %s: %s", strings.Join(args, " "), r)
	}
}

// createApp creates an app on a free loopback port and returns its URL.
// Its processes run as the test's user: root in CI, hence --allow-root
// (hostile_test.go runs apps as another user).
func (e *env) createApp(name string, args ...string) string {
	e.t.Helper()
	url, err := e.ag.CreateApp(name, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return url
}

var releaseN int

// release writes a release directory whose web process is the test app
// with the given mode; every call gives different content.
func (e *env) release(mode string, extraProcfile ...string) string {
	e.t.Helper()
	releaseN++
	dir := filepath.Join(e.dir, fmt.Sprintf("rel%d", releaseN))
	procfile := fmt.Sprintf("web: TESTAPP_MODE=%s exec %s\n", mode, bins.TestApp)
	for _, l := range extraProcfile {
		procfile += l + "\n"
	}
	if _, err := harness.Release(dir, procfile, map[string]string{"VERSION": fmt.Sprint(releaseN)}); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

func (e *env) deploy(app, dir string, args ...string) api.OpResult {
	e.t.Helper()
	res, err := e.ag.Deploy(app, dir, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

func (e *env) ps(app string) []api.Process {
	e.t.Helper()
	var ps []api.Process
	e.json(&ps, "ps", app)
	return ps
}

func pidsOf(ps []api.Process) map[string]int {
	m := map[string]int{}
	for _, p := range ps {
		m[p.Release+" "+p.Name] = p.PID
	}
	return m
}

func get(t *testing.T, url string) string {
	t.Helper()
	body, err := harness.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// loads runs the three client kinds of the acceptance criteria at once.
type loads []*loadgen.Run

func startLoads(t *testing.T, url string) loads {
	t.Helper()
	var ls loads
	for _, k := range loadgen.AllKinds {
		r, err := loadgen.Start(context.Background(), loadgen.Config{
			URL: url, Kind: k, Workers: 2, Duration: 4 * time.Minute, MaxRequests: 2_000_000,
		})
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, r)
	}
	t.Cleanup(func() {
		for _, r := range ls {
			r.Stop()
		}
	})
	return ls
}

// stopAndCheck stops the load and fails the test on any failed request.
func (ls loads) stopAndCheck(t *testing.T) {
	t.Helper()
	for _, r := range ls {
		res := r.Stop()
		t.Logf("%s", res)
		if res.Failed != 0 {
			t.Errorf("%s: %d failed requests: %v", res.Kind, res.Failed, res.Errors)
		}
		if res.OK == 0 {
			t.Errorf("%s: no request succeeded", res.Kind)
		}
	}
}

// TestDeployUnderLoad is the heart of the product: ten releases in a row
// while three kinds of clients send requests; not one may fail.
func TestDeployUnderLoad(t *testing.T) {
	e := start(t)
	url := e.createApp("web", "--readiness", "web=notify", "--drain-timeout", "20s")
	first := e.deploy("web", e.release(""))
	if !first.OK || first.Release != "v1" {
		t.Fatalf("first deploy: %+v", first)
	}
	ls := startLoads(t, url)
	for i := range 10 {
		res := e.deploy("web", e.release(""), "-m", fmt.Sprintf("deploy %d", i))
		if !res.OK || !res.Changed || len(res.Killed) != 0 {
			t.Fatalf("deploy %d: %+v", i, res)
		}
		t.Logf("deploy %d: %s switch %.3fs drain %.3fs", i, res.Release, res.SwitchSeconds, res.DrainSeconds)
	}
	ls.stopAndCheck(t)
	if got := get(t, url); !strings.Contains(got, "release=v11") {
		t.Fatalf("after 11 deploys the app answers %q, want release=v11", got)
	}
	ps := e.ps("web")
	if len(ps) != 1 || ps[0].Release != "v11" || ps[0].State != api.StateReady {
		t.Fatalf("ps after the deploys: %+v", ps)
	}
	var rels []api.Release
	e.json(&rels, "releases", "web")
	if len(rels) != 10 || rels[0].Status != api.StatusActive || rels[1].Status != api.StatusRetired {
		t.Fatalf("releases (10 kept, newest active): %+v", rels)
	}
}

// TestContract checks what a process receives: its sockets as fds 3.. with
// LISTEN_PID equal to its own PID, its own process group and notify socket,
// the AGENTD_* variables and the config vars.
func TestContract(t *testing.T) {
	e := start(t)
	url := e.createApp("api", "--readiness", "web=http:/healthz")
	e.mustHctl("config", "set", "api", "TEST_GREETING=hello world")
	e.deploy("api", e.release(""))
	var got struct {
		PID          int               `json:"pid"`
		PGID         int               `json:"pgid"`
		ListenPID    string            `json:"listen_pid"`
		ListenFDs    string            `json:"listen_fds"`
		ListenFDName string            `json:"listen_fdnames"`
		Notify       string            `json:"notify_socket"`
		Env          map[string]string `json:"env"`
	}
	if err := json.Unmarshal([]byte(get(t, url+"env")), &got); err != nil {
		t.Fatal(err)
	}
	ps := e.ps("api")
	if len(ps) != 1 || ps[0].PID != got.PID {
		t.Fatalf("ps %+v, app says pid %d", ps, got.PID)
	}
	if got.ListenPID != fmt.Sprint(got.PID) || got.PGID != got.PID {
		t.Errorf("LISTEN_PID %s, pgid %d, pid %d: want all equal", got.ListenPID, got.PGID, got.PID)
	}
	if got.ListenFDs != "2" || got.ListenFDName != "web:probe" {
		t.Errorf("LISTEN_FDS=%s LISTEN_FDNAMES=%s, want 2 and web:probe (http readiness)", got.ListenFDs, got.ListenFDName)
	}
	if got.Notify == "" {
		t.Errorf("no NOTIFY_SOCKET")
	}
	want := map[string]string{"AGENTD_APP": "api", "AGENTD_RELEASE": "v1", "AGENTD_PROCESS": "web.1", "TEST_GREETING": "hello world"}
	for k, v := range want {
		if got.Env[k] != v {
			t.Errorf("%s=%q, want %q", k, got.Env[k], v)
		}
	}
	if got.Env["PORT"] == "" || !strings.HasSuffix(strings.TrimSuffix(url, "/"), ":"+got.Env["PORT"]) {
		t.Errorf("PORT=%q for %s", got.Env["PORT"], url)
	}
}

// TestFailedDeploysKeepOldRelease: a release that never becomes ready, one
// that crashes at boot, one whose release command fails and one with a
// malformed Procfile each fail with a message, while the old release's
// processes keep serving untouched.
func TestFailedDeploysKeepOldRelease(t *testing.T) {
	e := start(t)
	url := e.createApp("shop", "--readiness", "web=notify", "--boot-timeout", "3s", "--drain-timeout", "10s")
	e.deploy("shop", e.release(""))
	before := pidsOf(e.ps("shop"))

	bad := filepath.Join(e.dir, "badprocfile")
	harness.Release(bad, "web ./server\n", nil)
	cases := []struct {
		name, dir, want string
	}{
		{"never ready", e.release("never-ready"), "not ready (notify) within the boot timeout of 3s"},
		{"crash at boot", e.release("crash-at-boot"), "exited with status 3 before it was ready"},
		{"release phase fails", e.release("", "release: echo migrating; exit 7"), "exited with status 7"},
		{"malformed Procfile", bad, "Procfile line 1"},
	}
	ls := startLoads(t, url)
	for _, c := range cases {
		r := e.hctl("deploy", "shop", c.dir)
		if r.Code != 1 || !strings.Contains(r.Stderr+r.Stdout, c.want) {
			t.Errorf("%s: want exit 1 and %q, got %s", c.name, c.want, r)
		}
		if c.name == "crash at boot" && !strings.Contains(r.Stderr+r.Stdout, "crashing on purpose") {
			t.Errorf("%s: the message lacks the process's last output: %s", c.name, r)
		}
		if after := pidsOf(e.ps("shop")); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("%s: processes changed from %v to %v", c.name, before, after)
		}
	}
	ls.stopAndCheck(t)
	var rels []api.Release
	e.json(&rels, "releases", "shop")
	failed := 0
	for _, r := range rels {
		if r.Status == api.StatusFailed {
			failed++
			if r.Error == "" {
				t.Errorf("failed release %s has no error", r.Name)
			}
		}
	}
	if failed != len(cases) || rels[len(rels)-1].Status != api.StatusActive {
		t.Errorf("want %d failed releases and v1 active: %+v", len(cases), rels)
	}
	if got := get(t, url); !strings.Contains(got, "release=v1") {
		t.Errorf("app answers %q, want v1 still serving", got)
	}
}

// TestDrainTimeoutKillsGroup: a process that ignores SIGTERM, and a child it
// forked, are SIGKILLed at the drain timeout.
func TestDrainTimeoutKillsGroup(t *testing.T) {
	e := start(t)
	url := e.createApp("stub", "--readiness", "web=notify", "--drain-timeout", "2s")
	pidfile := filepath.Join(e.dir, "child.pid")
	e.mustHctl("config", "set", "stub", "TESTAPP_CHILD_PIDFILE="+pidfile)
	e.deploy("stub", e.release("ignore-sigterm,fork-child"))
	old := e.ps("stub")[0].PID
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	fmt.Sscan(string(b), &child)
	if child == 0 || syscall.Kill(child, 0) != nil {
		t.Fatalf("child %q not running", b)
	}
	// No load here: a process that ignores SIGTERM keeps its connections
	// until SIGKILL cuts them; that is what the drain timeout is for.
	res := e.deploy("stub", e.release(""))
	if got := get(t, url); !strings.Contains(got, "release=v2") {
		t.Fatalf("after the deploy the app answers %q", got)
	}
	if len(res.Killed) != 1 || res.DrainSeconds < 2 {
		t.Fatalf("deploy result: %+v, want one process killed after the 2s drain", res)
	}
	for _, pid := range []int{old, child} {
		if alive(pid) {
			t.Errorf("pid %d still alive after the drain timeout", pid)
		}
	}
}

// TestRollbackAndConfigUnderLoad: a rollback and a config change are new
// releases, switched with the same guarantee.
func TestRollbackAndConfigUnderLoad(t *testing.T) {
	e := start(t)
	url := e.createApp("blog", "--readiness", "web=notify")
	e.deploy("blog", e.release(""))
	e.deploy("blog", e.release(""))
	ls := startLoads(t, url)
	res := e.deploy("blog", e.release(""), "--skip-release-phase")
	if res.Release != "v3" {
		t.Fatalf("third deploy: %+v", res)
	}
	var rb api.OpResult
	if r := e.ag.HctlJSON(&rb, "rollback", "blog"); r.Code != 0 || rb.Release != "v4" || !rb.OK {
		t.Fatalf("rollback: %s %+v", r, rb)
	}
	var cs api.OpResult
	if r := e.ag.HctlJSON(&cs, "config", "set", "blog", "TEST_COLOR=blue"); r.Code != 0 || cs.Release != "v5" {
		t.Fatalf("config set: %s %+v", r, cs)
	}
	var rb2 api.OpResult
	if r := e.ag.HctlJSON(&rb2, "rollback", "blog", "v1"); r.Code != 0 || rb2.Release != "v6" {
		t.Fatalf("rollback v1: %s %+v", r, rb2)
	}
	ls.stopAndCheck(t)
	var rels []api.Release
	e.json(&rels, "releases", "blog")
	if rels[0].Name != "v6" || rels[0].Source != "rollback" || !strings.Contains(rels[0].Message, "v1") {
		t.Errorf("newest release: %+v", rels[0])
	}
	var env struct {
		Env map[string]string `json:"env"`
	}
	json.Unmarshal([]byte(get(t, url+"env")), &env)
	if env.Env["AGENTD_RELEASE"] != "v6" || env.Env["TEST_COLOR"] != "" {
		t.Errorf("after rollback to v1 (config of v1): %v", env.Env)
	}
	var cfg map[string]string
	e.json(&cfg, "config", "blog")
	if _, ok := cfg["TEST_COLOR"]; ok {
		t.Errorf("config after rollback to v1 still has TEST_COLOR: %v", cfg)
	}
	// Deploying the very same content again changes nothing.
	again := e.deploy("blog", e.release(""))
	again2 := e.deploy("blog", filepath.Join(e.dir, fmt.Sprintf("rel%d", releaseN)))
	if !again.Changed || again2.Changed || again2.Release != again.Release {
		t.Errorf("redeploy of the same content: %+v then %+v", again, again2)
	}
}

// TestBadInputChangesNothing: each mistake gets a clear error, a non-zero
// exit, and leaves the apps as they were.
func TestBadInputChangesNothing(t *testing.T) {
	e := start(t)
	url := e.createApp("one", "--readiness", "web=notify")
	e.deploy("one", e.release(""))
	port := strings.TrimSuffix(strings.TrimPrefix(url, "http://127.0.0.1:"), "/")
	snapshot := func() string {
		var apps []api.App
		e.json(&apps, "apps")
		ps := e.ps("one")
		return fmt.Sprint(apps, pidsOf(ps))
	}
	before := snapshot()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"apps", "info", "nope"}, `no app named "nope"`},
		{[]string{"deploy", "nope", e.release("")}, `no app named "nope"`},
		{[]string{"apps", "create", "one", "--socket", "web=tcp://127.0.0.1:0", "--allow-root"}, "already exists"},
		{[]string{"apps", "create", "two", "--socket", "web=tcp://127.0.0.1:notaport"}, "port"},
		{[]string{"apps", "create", "two", "--socket", "web=tcp://127.0.0.1:" + port, "--allow-root"}, "in use"},
		{[]string{"apps", "create", "a/b", "--socket", "web=tcp://127.0.0.1:0"}, "app name"},
		{[]string{"apps", "create", "..", "--socket", "web=tcp://127.0.0.1:0"}, "app name"},
		{[]string{"scale", "one", "worker=2"}, `no process type "worker"`},
		{[]string{"deploy", "one", filepath.Join(e.dir, "missing")}, "missing"},
		{[]string{"rollback", "one", "v9"}, "no release v9"},
		{[]string{"restart", "one", "worker"}, `no process type "worker"`},
		{[]string{"config", "set", "one", "PORT=1"}, "PORT"},
	}
	for _, c := range cases {
		r := e.hctl(c.args...)
		if r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("hctl %s: want a non-zero exit and %q on stderr, got %s", strings.Join(c.args, " "), c.want, r)
		}
		if strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 && !strings.Contains(c.want, "\n") {
			t.Logf("hctl %s: error spans several lines: %q", strings.Join(c.args, " "), r.Stderr)
		}
	}
	if after := snapshot(); after != before {
		t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// TestScaleRestartCrashLogs covers the day-to-day commands.
func TestScaleRestartCrashLogs(t *testing.T) {
	e := start(t)
	url := e.createApp("ops", "--readiness", "web=notify")
	e.deploy("ops", e.release("", "worker: TESTAPP_MODE=notify-child exec "+bins.TestApp))

	var sc api.OpResult
	if r := e.ag.HctlJSON(&sc, "scale", "ops", "web=3", "worker=1"); r.Code != 0 || !sc.OK {
		t.Fatalf("scale up: %s", r)
	}
	ps := e.ps("ops")
	if len(ps) != 4 {
		t.Fatalf("after scale web=3 worker=1: %+v", ps)
	}
	for _, p := range ps {
		if p.State != api.StateReady {
			t.Errorf("%s is %s, want ready (the worker's READY=1 comes from a child via systemd-notify)", p.Name, p.State)
		}
	}
	ls := startLoads(t, url)
	before := pidsOf(e.ps("ops"))
	if r := e.hctl("restart", "ops", "web"); r.Code != 0 {
		t.Fatalf("restart: %s", r)
	}
	after := pidsOf(e.ps("ops"))
	for k, pid := range before {
		if strings.Contains(k, "web.") && after[k] == pid {
			t.Errorf("%s kept pid %d across a restart", k, pid)
		}
		if strings.Contains(k, "worker.") && after[k] != pid {
			t.Errorf("%s changed pid on a web-only restart", k)
		}
	}
	if r := e.hctl("scale", "ops", "web=1"); r.Code != 0 {
		t.Fatalf("scale down: %s", r)
	}
	ls.stopAndCheck(t)
	if n := len(e.ps("ops")); n != 2 {
		t.Fatalf("after scale web=1: %d processes, want 2", n)
	}

	// A crash: SIGKILL the web process; agentd restarts it.
	var victim api.Process
	for _, p := range e.ps("ops") {
		if p.Type == "web" {
			victim = p
		}
	}
	syscall.Kill(victim.PID, syscall.SIGKILL)
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var cur api.Process
		for _, p := range e.ps("ops") {
			if p.Name == "web.1" && p.State == api.StateReady {
				cur = p
			}
		}
		if cur.PID != 0 && cur.PID != victim.PID {
			if cur.Restarts != 1 {
				t.Errorf("restarted process has restarts=%d, want 1", cur.Restarts)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web.1 not restarted after a crash: %+v", e.ps("ops"))
		}
		<-tick.C // polling hctl ps, as a user would
	}

	r := e.mustHctl("logs", "ops", "-n", "50")
	if !strings.Contains(r.Stdout, "web.1") {
		t.Errorf("logs show nothing of web.1:\n%s", r.Stdout)
	}
}

// killGroup stops a process group the test knows by its leader's PID.
func killGroup(pid int) {
	syscall.Kill(-pid, syscall.SIGKILL)
}
