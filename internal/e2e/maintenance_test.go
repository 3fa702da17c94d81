package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/loadgen"
)

// maintLoads runs the two POST kinds of the acceptance criteria, with 503
// as an answer (the responder's), not a failure: refused, reset and cut
// requests stay failures.
func maintLoads(t *testing.T, url string) loads {
	t.Helper()
	var ls loads
	for _, k := range []loadgen.Kind{loadgen.NewConnPost, loadgen.KeepAlivePost} {
		r, err := loadgen.Start(context.Background(), loadgen.Config{
			URL: url, Kind: k, Workers: 2, Duration: 4 * time.Minute, MaxRequests: 2_000_000,
			Accept: []int{http.StatusServiceUnavailable},
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

// answered503 is how many 503s every load has had so far (the fewest).
func (ls loads) answered503() int64 {
	least := int64(-1)
	for _, r := range ls {
		if n := r.Snapshot().Statuses[http.StatusServiceUnavailable]; least < 0 || n < least {
			least = n
		}
	}
	return least
}

// waitMore503 waits until every load has had n more 503s than from.
func waitMore503(t *testing.T, ls loads, from, n int64, what string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d more 503 answers on every load %s", n, what), func() bool { return ls.answered503() >= from+n })
}

// answer is one request's response, as a user's browser or curl sees it.
type answer struct {
	status     int
	retryAfter string
	body       string
}

func fetch(t *testing.T, url string) answer {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
}

// only reports whether the live processes of ps are exactly names (as
// "RELEASE TYPE.N"), each ready.
func only(ps []api.Process, names ...string) bool {
	var got []string
	for _, p := range ps {
		if p.State == api.StateDraining || p.State == api.StateExited {
			continue
		}
		if p.State != api.StateReady {
			return false
		}
		got = append(got, p.Release+" "+p.Name)
	}
	slices.Sort(got)
	slices.Sort(names)
	return slices.Equal(got, names)
}

func (e *env) appStatus(app string) map[string]any {
	e.t.Helper()
	var s map[string]any
	e.json(&s, "status", app)
	return s
}

// TestMaintenanceUnderLoad: under a new-connection and a kept-alive POST
// load, `maintenance on`, wait, `off`: every request gets 200 or 503, none
// is refused, reset or cut; off brings back the release that was active.
// Then on again, a deploy while on (its release phase runs, nothing
// starts: pending), a kill -9 of agentd while on (still 503, the
// responder adopted), and off rolls out the pending release.
func TestMaintenanceUnderLoad(t *testing.T) {
	e := start(t)
	url := e.createApp("mnt", "--readiness", "web=notify", "--readiness", "worker=uptime:1s", "--drain-timeout", "20s")
	migrations := filepath.Join(e.dir, "migrations")
	n := 0
	release := func() string {
		n++
		return e.release("", "worker: exec sleep 600", fmt.Sprintf("release: echo migrated-%d >> %s", n, migrations))
	}
	e.deploy("mnt", release())
	e.mustHctl("scale", "mnt", "worker=1")
	waitPs(t, e, "mnt", "v1 web and worker ready", func(ps []api.Process) bool { return only(ps, "v1 web.1", "v1 worker.1") })
	page := filepath.Join(e.dir, "page.html")
	if err := os.WriteFile(page, []byte("<h1>back soon: mnt-page</h1>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ls := maintLoads(t, url)
	waitFor(t, "200 answers", func() bool {
		return ls[0].Snapshot().Statuses[200] > 50 && ls[1].Snapshot().Statuses[200] > 50
	})

	// on, wait, off.
	var res api.OpResult
	if r := e.ag.HctlJSON(&res, "maintenance", "mnt", "on", "--page", page); r.Code != 0 || !res.OK || !res.Changed {
		t.Fatalf("maintenance on: %s %+v", r, res)
	}
	t.Logf("on: switch %.3fs, drain %.3fs", res.SwitchSeconds, res.DrainSeconds)
	if ps := e.ps("mnt"); !only(ps, "v1 maintenance.1") {
		t.Fatalf("in maintenance, ps: %+v (want the responder alone: web and worker stopped)", ps)
	}
	a := fetch(t, url)
	if a.status != 503 || a.retryAfter == "" || !strings.Contains(a.body, "mnt-page") {
		t.Fatalf("in maintenance the app answers %+v, want 503, Retry-After and the page", a)
	}
	if s := e.appStatus("mnt"); s["maintenance"] == nil || s["healthy"] != false {
		t.Errorf("hctl status in maintenance: %v", s)
	}
	if out := e.mustHctl("apps").Stdout; !strings.Contains(out, "v1 (maintenance)") {
		t.Errorf("hctl apps does not show the maintenance:\n%s", out)
	}
	if v, ok := e.scrape().get("agentd_app_maintenance", `app="mnt"`); !ok || v != 1 {
		t.Errorf("agentd_app_maintenance{app=mnt} = %v (found %v), want 1", v, ok)
	}
	if r := e.hctl("restart", "mnt"); r.Code != 1 || !strings.Contains(r.Stderr, "maintenance") {
		t.Errorf("restart in maintenance: %s (want exit 1 naming the maintenance)", r)
	}
	waitMore503(t, ls, 0, 100, "in maintenance")
	if r := e.ag.HctlJSON(&res, "maintenance", "mnt", "off"); r.Code != 0 || !res.OK || res.Release != "v1" {
		t.Fatalf("maintenance off: %s %+v", r, res)
	}
	t.Logf("off: switch %.3fs, drain %.3fs", res.SwitchSeconds, res.DrainSeconds)
	waitPs(t, e, "mnt", "v1 back", func(ps []api.Process) bool { return only(ps, "v1 web.1", "v1 worker.1") })
	if a := fetch(t, url); a.status != 200 || !strings.Contains(a.body, "release=v1") {
		t.Fatalf("after off the app answers %+v, want 200 from v1", a)
	}
	if v, _ := e.scrape().get("agentd_app_maintenance", `app="mnt"`); v != 0 {
		t.Errorf("agentd_app_maintenance{app=mnt} = %v after off, want 0", v)
	}

	// on again; a deploy while on starts nothing; kill -9 of agentd.
	e.mustHctl("maintenance", "mnt", "on")
	responder := pidsOf(e.ps("mnt"))["v1 maintenance.1"]
	if a := fetch(t, url); a.status != 503 || !strings.Contains(a.body, "maintenance") {
		t.Fatalf("on with the built-in page: %+v", a)
	}
	dep := e.deploy("mnt", release())
	if !dep.OK || !dep.Pending || dep.Release != "v2" {
		t.Fatalf("deploy in maintenance: %+v, want OK and pending v2", dep)
	}
	if b, _ := os.ReadFile(migrations); !strings.Contains(string(b), "migrated-2") {
		t.Errorf("the release phase of v2 did not run in maintenance: %q", b)
	}
	if ps := e.ps("mnt"); !only(ps, "v1 maintenance.1") {
		t.Fatalf("a deploy in maintenance started processes: %+v", ps)
	}
	v2 := releaseNamed(t, e, "mnt", "v2")
	if v2.Status != api.StatusPending {
		t.Errorf("v2 is %s, want pending", v2.Status)
	}
	before := ls.answered503()
	e.ag.Kill()
	waitMore503(t, ls, before, 100, "while agentd is dead")
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitPs(t, e, "mnt", "the responder adopted", func(ps []api.Process) bool { return only(ps, "v1 maintenance.1") })
	if got := pidsOf(e.ps("mnt"))["v1 maintenance.1"]; got != responder {
		t.Errorf("after agentd's restart the responder is pid %d, want the adopted %d", got, responder)
	}
	if v2 := releaseNamed(t, e, "mnt", "v2"); v2.Status != api.StatusPending {
		t.Errorf("after the restart v2 is %s, want pending", v2.Status)
	}
	before = ls.answered503()
	waitMore503(t, ls, before, 100, "after agentd's restart")
	if r := e.ag.HctlJSON(&res, "maintenance", "mnt", "off"); r.Code != 0 || !res.OK || res.Release != "v2" {
		t.Fatalf("maintenance off with v2 pending: %s %+v", r, res)
	}
	t.Logf("off with pending v2: switch %.3fs, drain %.3fs", res.SwitchSeconds, res.DrainSeconds)
	waitPs(t, e, "mnt", "v2 live", func(ps []api.Process) bool { return only(ps, "v2 web.1", "v2 worker.1") })
	if a := fetch(t, url); a.status != 200 || !strings.Contains(a.body, "release=v2") {
		t.Fatalf("after off the app answers %+v, want 200 from v2", a)
	}
	if b, _ := os.ReadFile(migrations); strings.Count(string(b), "migrated-2") != 1 {
		t.Errorf("v2's release phase ran %d times, want once: %q", strings.Count(string(b), "migrated-2"), b)
	}

	for _, r := range ls {
		res := r.Stop()
		t.Logf("%s: %d sent, statuses %v, %d failed %v", res.Kind, res.Sent, res.Statuses, res.Failed, res.ByClass)
		if res.Failed != 0 {
			t.Errorf("%s: %d failed requests (%v): %v", res.Kind, res.Failed, res.ByClass, res.Errors)
		}
		if codes := slices.Sorted(maps.Keys(res.Statuses)); !slices.Equal(codes, []int{200, 503}) {
			t.Errorf("%s: statuses seen %v, want 200 and 503", res.Kind, codes)
		}
	}
}

// TestMaintenanceOffFails: a release deployed in maintenance that never
// becomes ready fails `off` (exit 1); the responder answers on, nothing is
// refused, and the next off brings back the release that was active. A
// responder that crashes is started again, as any process of the app.
func TestMaintenanceOffFails(t *testing.T) {
	e := start(t)
	url := e.createApp("mof", "--readiness", "web=notify")
	e.deploy("mof", e.release(""))
	ls := maintLoads(t, url)
	e.mustHctl("maintenance", "mof", "on")
	if dep := e.deploy("mof", e.release("crash-at-boot")); !dep.Pending || dep.Release != "v2" {
		t.Fatalf("deploy in maintenance: %+v", dep)
	}
	before := ls.answered503()
	var res api.OpResult
	// hctl --json prints the result of a failed operation too.
	r := e.hctl("--json", "maintenance", "mof", "off")
	if err := json.Unmarshal([]byte(r.Stdout), &res); r.Code != 1 || err != nil || res.OK || !strings.Contains(res.Error, "web.1") {
		t.Fatalf("off with a release that crashes at boot: %s (%v), want exit 1 naming web.1", r, err)
	}
	waitMore503(t, ls, before, 50, "after the failed off")
	waitPs(t, e, "mof", "the responder alone", func(ps []api.Process) bool { return only(ps, "v1 maintenance.1") })
	if s := e.appStatus("mof"); s["maintenance"] == nil {
		t.Errorf("after a failed off the app is not in maintenance: %v", s)
	}
	if v2 := releaseNamed(t, e, "mof", "v2"); v2.Status != api.StatusFailed {
		t.Errorf("v2 is %s after its failed off, want failed", v2.Status)
	}
	if r := e.ag.HctlJSON(&res, "maintenance", "mof", "off"); r.Code != 0 || res.Release != "v1" {
		t.Fatalf("second off: %s %+v, want v1 back", r, res)
	}
	if a := fetch(t, url); a.status != 200 || !strings.Contains(a.body, "release=v1") {
		t.Fatalf("after off the app answers %+v, want 200 from v1", a)
	}
	for _, r := range ls {
		res := r.Stop()
		t.Logf("%s: %d sent, statuses %v, %d failed %v", res.Kind, res.Sent, res.Statuses, res.Failed, res.ByClass)
		if res.Failed != 0 || res.Statuses[503] == 0 || res.Statuses[200] == 0 {
			t.Errorf("%s: %d failed (%v), statuses %v: want none failed, 200 and 503 seen", res.Kind, res.Failed, res.Errors, res.Statuses)
		}
	}

	// Without load (its kept-alive connections die with it): a responder
	// killed from outside is replaced.
	e.mustHctl("maintenance", "mof", "on")
	old := pidsOf(e.ps("mof"))["v1 maintenance.1"]
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitPs(t, e, "mof", "a new responder", func(ps []api.Process) bool {
		return only(ps, "v1 maintenance.1") && pidsOf(ps)["v1 maintenance.1"] != old
	})
	if a := fetch(t, url); a.status != 503 {
		t.Fatalf("after the responder's restart the app answers %+v, want 503", a)
	}
}
