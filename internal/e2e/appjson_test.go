package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// app.json in the release: formation on the first deploy only, Heroku's
// and Dokku's scripts at their own moments, Dokku's startup health checks
// as readiness, agentd's postdrain after the last old process exited.

// appJSONRelease writes a release of the test app (web, and a worker that
// sleeps) with app.json; env is put before the web command.
func (e *env) appJSONRelease(t *testing.T, appJSON, env string) string {
	t.Helper()
	releaseN++
	dir := filepath.Join(e.dir, fmt.Sprintf("aj%d", releaseN))
	procfile := fmt.Sprintf("web: %s exec %s\nworker: exec sleep 600\nclock: exec sleep 600\n", env, bins.TestApp)
	if _, err := harness.Release(dir, procfile, map[string]string{"VERSION": fmt.Sprint(releaseN), "app.json": appJSON}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// scriptLines reads the "NAME RELEASE UNIXNANO" lines the scripts wrote.
func scriptLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// names are the first two fields of each line: "predeploy v1".
func names(lines []string) []string {
	var out []string
	for _, l := range lines {
		f := strings.Fields(l)
		out = append(out, strings.Join(f[:min(2, len(f))], " "))
	}
	return out
}

func countTypes(ps []api.Process) map[string]int {
	n := map[string]int{}
	for _, p := range ps {
		if p.State == api.StateReady {
			n[p.Type]++
		}
	}
	return n
}

// TestAppJSONFormationScriptsChecks: under load, the first deploy takes
// app.json's formation (web=2, worker=1), runs Dokku's predeploy as the
// release phase, then Heroku's postdeploy and Dokku's postdeploy after the
// cutover; web's startup check (http:/healthz) is its readiness. After
// `hctl scale web=1` a second deploy asking for web=3 keeps web=1, and runs
// predeploy and Dokku's postdeploy again but not Heroku's postdeploy. A
// startup check that never passes fails a deploy and the release before
// keeps serving; a readiness given to apps create wins, and hctl says so.
func TestAppJSONFormationScriptsChecks(t *testing.T) {
	e := start(t)
	url := e.createApp("aj", "--drain-timeout", "20s", "--boot-timeout", "10s")
	log := filepath.Join(e.dir, "scripts.log")
	script := func(name string) string {
		return fmt.Sprintf(`echo \"%s $AGENTD_RELEASE $(date +%%s%%N)\" >> %s`, name, log)
	}
	// clock: a type the first formation leaves out (0 processes): a later
	// app.json asking for one changes nothing.
	appJSON := func(web int, path string) string {
		clock := ""
		if web == 3 {
			clock = `, "clock": {"quantity": 1}`
		}
		return fmt.Sprintf(`{
  "name": "aj", "env": {"IGNORED": {"value": "1"}},
  "formation": {"web": {"quantity": %d}, "worker": {"quantity": 1}%s},
  "scripts": {"postdeploy": "%s", "dokku": {"predeploy": "%s", "postdeploy": "%s"}},
  "healthchecks": {"web": [{"type": "startup", "path": "%s", "attempts": 3}],
                   "worker": [{"type": "startup", "uptime": 1}]}
}`, web, clock, script("postdeploy"), script("predeploy"), script("dokku-postdeploy"), path)
	}
	r := e.mustHctl("deploy", "aj", e.appJSONRelease(t, appJSON(2, "/healthz"), ""))
	for _, want := range []string{"scripts.dokku.predeploy is the release phase", "formation: web=2 (first deploy)", "http:/healthz is web's readiness"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("first deploy does not say %q:\n%s", want, r)
		}
	}
	if n := countTypes(e.ps("aj")); n["web"] != 2 || n["worker"] != 1 {
		t.Fatalf("after the first deploy: %v ready, want web=2 worker=1 (app.json formation)", n)
	}
	if got, want := strings.Join(names(scriptLines(t, log)), ", "), "predeploy v1, postdeploy v1, dokku-postdeploy v1"; got != want {
		t.Fatalf("scripts of the first deploy: %s, want %s", got, want)
	}
	ls := startLoads(t, url)

	e.mustHctl("scale", "aj", "web=1")
	r = e.mustHctl("deploy", "aj", e.appJSONRelease(t, appJSON(3, "/healthz"), ""))
	if strings.Contains(r.Stderr, "formation: web=3") || strings.Contains(r.Stderr, "formation: clock=1") {
		t.Errorf("the second deploy applied app.json's formation:\n%s", r)
	}
	if n := countTypes(e.ps("aj")); n["web"] != 1 || n["worker"] != 1 || n["clock"] != 0 {
		t.Fatalf("after scale web=1 and a second deploy: %v ready, want web=1 worker=1 clock=0 (hctl scale wins; formation on the first deploy only)", n)
	}
	if got, want := strings.Join(names(scriptLines(t, log)), ", "), "predeploy v1, postdeploy v1, dokku-postdeploy v1, predeploy v2, dokku-postdeploy v2"; got != want {
		t.Fatalf("scripts after the second deploy: %s, want %s", got, want)
	}

	// A startup check that never passes gates the release out.
	r = e.hctl("deploy", "aj", e.appJSONRelease(t, appJSON(1, "/no-such-page"), ""))
	if r.Code != 1 || !strings.Contains(r.Stderr, "http:/no-such-page") || !strings.Contains(r.Stderr, "v2 keeps serving") {
		t.Errorf("deploy with a startup check that fails: want exit 1 naming http:/no-such-page and v2 serving:\n%s", r)
	}
	if got := get(t, url); !strings.Contains(got, "release=v2") {
		t.Errorf("after the failed deploy the app answers %q, want release=v2", got)
	}
	ls.stopAndCheck(t)

	// A readiness given to apps create wins over app.json, and hctl says so.
	e.createApp("own", "--readiness", "web=notify")
	r = e.mustHctl("deploy", "own", e.appJSONRelease(t, appJSON(1, "/no-such-page"), ""))
	if !strings.Contains(r.Stderr, "healthchecks.web (http:/no-such-page) is overridden by the app's setting --readiness web=notify") {
		t.Errorf("hctl does not say the app's readiness overrides app.json:\n%s", r)
	}

	// Malformed app.json: the deploy fails in prepare naming the key, and
	// nothing changes.
	r = e.hctl("deploy", "aj", e.appJSONRelease(t, `{"cron": [{"command": "x", "schedule": "61 * * * *"}]}`, ""))
	if r.Code != 1 || !strings.Contains(r.Stderr, "app.json: cron[0].schedule") {
		t.Errorf("deploy of a malformed app.json: want exit 1 naming cron[0].schedule:\n%s", r)
	}
	if got := get(t, url); !strings.Contains(got, "release=v2") {
		t.Errorf("after the malformed app.json the app answers %q, want release=v2", got)
	}

	// A failing Dokku postdeploy fails the result, after the cutover: the
	// release stays active.
	r = e.hctl("deploy", "aj", e.appJSONRelease(t, `{"scripts": {"dokku": {"postdeploy": "echo notify failed >&2; exit 3"}}}`, ""))
	if r.Code != 1 || !strings.Contains(r.Stderr, "app.json scripts.dokku.postdeploy failed") || !strings.Contains(r.Stderr, "stays active") {
		t.Errorf("deploy with a failing scripts.dokku.postdeploy: want exit 1 saying the release stays active:\n%s", r)
	}
	var info api.AppInfo
	e.json(&info, "apps", "info", "aj")
	if got := get(t, url); !strings.Contains(got, "release="+info.ActiveRelease) || info.ActiveRelease == "v2" {
		t.Errorf("after a failing postdeploy: active %s, the app answers %q; want the new release active", info.ActiveRelease, got)
	}
}

// lifeExits reads the exit times of the processes in a $TESTAPP_LIFELOG.
func lifeExits(t *testing.T, path string) map[int]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[int]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 3 && fs[0] == "exit" {
			pid, _ := strconv.Atoi(fs[1])
			at, _ := strconv.ParseInt(fs[2], 10, 64)
			out[pid] = at
		}
	}
	return out
}

// holdOn opens a connection to url, checks with one request that it is
// served by release rel, then sends a request that takes d: the process
// of rel keeps draining until it has answered.
func holdOn(t *testing.T, url, rel string, d time.Duration) net.Conn {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	body := ""
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer on the held connection: %v", err)
		}
		if strings.HasPrefix(l, "release=") {
			body = l
			break
		}
	}
	if !strings.Contains(body, "release="+rel) {
		t.Fatalf("held connection served by %q, want %s", body, rel)
	}
	fmt.Fprintf(c, "GET /slow?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n", d.Milliseconds())
	return c
}

func (e *env) release1(t *testing.T, app, v string) api.Release {
	t.Helper()
	var r api.Release
	e.json(&r, "releases", "info", app, v)
	return r
}

// TestAppJSONPostdrain: scripts.agentd.postdrain of v1 runs right after the
// first deploy (nothing older); v2's runs once the last
// process of v1 has exited (v1 exits after hctl returned, and agentd is
// restarted while v1 drains): its start is at or after v1's exit, it runs
// once (another restart runs nothing), all under load without a failed
// request. A failing postdrain of v3 fails hctl deploy (exit 1) and is
// reported in `hctl releases info`, v3 staying active.
func TestAppJSONPostdrain(t *testing.T) {
	e := start(t)
	url := e.createApp("pd", "--readiness", "web=notify", "--drain-timeout", "30s")
	lifelog := filepath.Join(e.dir, "life.log")
	log := filepath.Join(e.dir, "scripts.log")
	env := "TESTAPP_LIFELOG=" + lifelog
	postdrain := func(cmd string) string {
		return fmt.Sprintf(`{"formation": {"worker": {"quantity": 0}}, "scripts": {"agentd": {"postdrain": "%s"}}}`, cmd)
	}
	ok := postdrain(fmt.Sprintf(`echo \"postdrain $AGENTD_RELEASE $(date +%%s%%N)\" >> %s`, log))
	e.deploy("pd", e.appJSONRelease(t, ok, env))
	// Once per release: the first one too, right away (nothing is older).
	if got := names(scriptLines(t, log)); len(got) != 1 || got[0] != "postdrain v1" {
		t.Fatalf("postdrain lines after the first deploy: %v, want v1's", got)
	}
	v1 := e.ps("pd")
	ls := startLoads(t, url)
	holdOn(t, url, "v1", 15*time.Second)

	r := e.mustHctl("deploy", "pd", e.appJSONRelease(t, ok, env), "--wait-drain", "1s")
	if !strings.Contains(r.Stderr, "scripts.agentd.postdrain runs once no process of an older release is left") {
		t.Errorf("hctl deploy does not say postdrain waits for the drain:\n%s", r)
	}
	if got := e.release1(t, "pd", "v2").Postdrain; got != nil {
		t.Errorf("postdrain of v2 is %+v while v1 still drains, want not run yet", got)
	}
	// agentd is killed and started again while v1 drains: the postdrain
	// still runs, once.
	e.ag.Kill()
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "v2's postdrain", func() bool {
		pd := e.release1(t, "pd", "v2").Postdrain
		return pd != nil && pd.Status == "succeeded"
	})
	exits := lifeExits(t, lifelog)
	var lastExit int64
	for _, p := range v1 {
		at, ok := exits[p.PID]
		if !ok {
			t.Fatalf("%s (pid %d) of v1 recorded no exit", p.Name, p.PID)
		}
		lastExit = max(lastExit, at)
	}
	lines := scriptLines(t, log)
	if got := strings.Join(names(lines), ", "); got != "postdrain v1, postdrain v2" {
		t.Fatalf("postdrain lines: %s, want v1's and v2's once each", got)
	}
	startAt, _ := strconv.ParseInt(strings.Fields(lines[1])[2], 10, 64)
	t.Logf("v1's last process exited at %d, v2's postdrain started at %d (+%s)", lastExit, startAt, time.Duration(startAt-lastExit))
	if startAt < lastExit {
		t.Errorf("postdrain started %s before v1's last process exited", time.Duration(lastExit-startAt))
	}
	e.ag.Kill()
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	// A failing postdrain: hctl waits for it (the drain is short) and fails.
	r = e.hctl("deploy", "pd", e.appJSONRelease(t, postdrain("echo contract failed >&2; exit 7"), env))
	if r.Code != 1 || !strings.Contains(r.Stderr, "scripts.agentd.postdrain of v3 failed: exit status 7") || !strings.Contains(r.Stderr, "v3 stays active") {
		t.Errorf("deploy with a failing postdrain: want exit 1 and the failure:\n%s", r)
	}
	ls.stopAndCheck(t)
	if lines := scriptLines(t, log); len(lines) != 2 {
		t.Errorf("a postdrain ran again: %v", lines)
	}
	rel := e.release1(t, "pd", "v3")
	if rel.Status != api.StatusActive || rel.Postdrain == nil || rel.Postdrain.Status != "failed" || !strings.Contains(rel.Postdrain.Error, "contract failed") {
		t.Errorf("releases info v3: %+v %+v, want active with a failed postdrain and its output", rel, rel.Postdrain)
	}
	info := e.mustHctl("releases", "info", "pd", "v3")
	if !strings.Contains(info.Stdout, "scripts.agentd.postdrain: failed") {
		t.Errorf("hctl releases info does not show the failed postdrain:\n%s", info)
	}
	if !strings.Contains(e.ag.Log(), "postdrain script failed") {
		t.Errorf("agentd's log does not report the failed postdrain")
	}

	// A fleet's way: deploy with --skip-postdrain, then hctl postdrain
	// once. The script waits for a file, so it is seen in hctl ps.
	gate := filepath.Join(e.dir, "gate")
	waiting := fmt.Sprintf(`i=0; while [ ! -e %s ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo \"postdrain $AGENTD_RELEASE $(date +%%s%%N)\" >> %s`, gate, log)
	r = e.mustHctl("deploy", "pd", e.appJSONRelease(t, postdrain(waiting), env), "--skip-postdrain")
	if pd := e.release1(t, "pd", "v4").Postdrain; pd == nil || pd.Status != "deferred" {
		t.Fatalf("postdrain of v4 deployed with --skip-postdrain: %+v, want deferred", pd)
	}
	done := make(chan harness.Result, 1)
	go func() { done <- e.ag.Hctl("postdrain", "pd") }()
	waitFor(t, "postdrain in hctl ps", func() bool {
		for _, p := range e.ps("pd") {
			if p.Name == "postdrain" && p.Release == "v4" && p.State == "running" {
				return true
			}
		}
		return false
	})
	// agentd is killed while it runs: the new agentd adopts it (still in
	// hctl ps), and records how it ended; hctl lost its stream.
	e.ag.Kill()
	<-done
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	adopted := false
	for _, p := range e.ps("pd") {
		adopted = adopted || p.Name == "postdrain" && p.Release == "v4" && p.State == "running"
	}
	if !adopted {
		t.Errorf("the running postdrain is not in hctl ps after an agentd restart: %+v", e.ps("pd"))
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "v4's adopted postdrain recorded as succeeded", func() bool {
		pd := e.release1(t, "pd", "v4").Postdrain
		return pd != nil && pd.Status == "succeeded"
	})
	if r := e.mustHctl("postdrain", "pd"); !strings.Contains(r.Stdout, "succeeded already") {
		t.Errorf("hctl postdrain again: %s, want it not run again", r)
	}
	if got := strings.Join(names(scriptLines(t, log)), ", "); got != "postdrain v1, postdrain v2, postdrain v4" {
		t.Errorf("postdrain lines: %s", got)
	}
}

// lifeEvents reads a $TESTAPP_LIFELOG: start and exit times by PID.
func lifeEvents(t *testing.T, path string) (starts, exits map[int]int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	starts, exits = map[int]int64{}, map[int]int64{}
	for l := range strings.SplitSeq(string(b), "\n") {
		fs := strings.Fields(l)
		if len(fs) < 3 {
			continue
		}
		pid, _ := strconv.Atoi(fs[1])
		at, _ := strconv.ParseInt(fs[2], 10, 64)
		switch fs[0] {
		case "start":
			starts[pid] = at
		case "exit":
			exits[pid] = at
		}
	}
	return starts, exits
}

// TestAppJSONLiveness: web's liveness check (GET /healthz on the probe
// socket, 2 attempts a second apart) fails 3 s after each process
// started: agentd replaces the process each time, the new one started
// and ready before the old one exits, and under load not one request
// fails.
func TestAppJSONLiveness(t *testing.T) {
	e := start(t)
	url := e.createApp("lv", "--readiness", "web=notify", "--drain-timeout", "20s")
	lifelog := filepath.Join(e.dir, "life.log")
	appJSON := `{"formation": {"worker": {"quantity": 0}},
  "healthchecks": {"web": [{"type": "liveness", "path": "/healthz", "attempts": 2, "wait": 1, "timeout": 1}]}}`
	e.deploy("lv", e.appJSONRelease(t, appJSON, "TESTAPP_MODE=unhealthy-after TESTAPP_UNHEALTHY_AFTER=3s TESTAPP_LIFELOG="+lifelog))
	ls := startLoads(t, url)
	waitFor(t, "two liveness restarts", func() bool {
		_, exits := lifeEvents(t, lifelog)
		return len(exits) >= 2
	})
	ls.stopAndCheck(t)
	starts, exits := lifeEvents(t, lifelog)
	for pid, exit := range exits {
		// Another process started before this one exited, and lived on.
		var successor bool
		for other, start := range starts {
			if other != pid && start < exit && (exits[other] == 0 || exits[other] > exit) {
				successor = true
			}
		}
		if !successor {
			t.Errorf("process %d exited with no successor started before it", pid)
		}
	}
	if n := strings.Count(e.ag.Log(), "replacing a process that failed its liveness check"); n < 2 {
		t.Errorf("agentd logged %d liveness replacements, want 2 or more", n)
	}
	if got := get(t, url); !strings.Contains(got, "release=v1 process=web.1") {
		t.Errorf("after the liveness restarts the app answers %q, want v1's web.1", got)
	}

	// Inside a bake window a failed liveness probe fails the bake: the
	// release is rolled back instead of its process being replaced.
	e.mustHctl("apps", "set", "lv", "--bake", "30s")
	r := e.hctl("deploy", "lv", e.appJSONRelease(t, appJSON, "TESTAPP_MODE=unhealthy-after TESTAPP_UNHEALTHY_AFTER=2s TESTAPP_LIFELOG="+lifelog))
	if r.Code != 1 || !strings.Contains(r.Stderr, "failed its bake") || !strings.Contains(r.Stderr, "liveness check http:/healthz") {
		t.Errorf("deploy whose process fails a liveness probe while baking: want exit 1, a failed bake naming the check:\n%s", r)
	}
}
