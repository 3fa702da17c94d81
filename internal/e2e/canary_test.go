package e2e

// The canary of issue 18, as a user runs it: hctl deploy --canary 10%,
// hctl canary, hctl promote, hctl canary abort, under the three client
// kinds of internal/loadgen. The test app answers GET / with
// "release=vN process=web.N", which tells the releases apart.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// canaryApp creates an app of two web processes on a steered socket and
// deploys v1 to it; it returns the app's URL. Without root it skips;
// where agentd reports no kernel steering it skips, saying why, except in
// CI as root, where the kernel support is there and a skip would hide a
// regression.
func (e *env) canaryApp(name string) string {
	e.t.Helper()
	if os.Geteuid() != 0 {
		e.t.Skip("needs root: kernel steering (a SO_REUSEPORT group and a BPF program) is for agentd as root")
	}
	url := e.createApp(name, "--readiness", "web=notify", "--drain-timeout", "20s")
	var info api.AppInfo
	e.json(&info, "apps", "info", name)
	if s := info.Sockets[0]; s.Steering != api.SteeringKernel {
		why := fmt.Sprintf("agentd does not steer %s's socket in the kernel: %s (%s)", name, s.Steering, s.SteeringWhy)
		if os.Getenv("CI") != "" {
			e.t.Fatalf("in CI as root: %s", why)
		}
		e.t.Skip(why)
	}
	e.deploy(name, e.release(""))
	e.mustHctl("scale", name, "web=2")
	return url
}

// countReleases opens n new connections to url, one GET each, from 4
// clients, and counts the answers by release. Every failure is an error
// of the test: a canary, like a deploy, loses nothing.
func countReleases(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	const workers = 4
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		fails  []string
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A new connection per request: steering picks a release per
			// connection.
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for i := w; i < n && ctx.Err() == nil; i += workers {
				rel, err := releaseOf(ctx, c, url)
				mu.Lock()
				if err != nil {
					fails = append(fails, err.Error())
				} else {
					counts[rel]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(fails) > 0 {
		t.Errorf("%d of %d requests failed: %v", len(fails), n, fails[:min(len(fails), 5)])
	}
	if ctx.Err() != nil {
		t.Fatalf("%d requests did not finish within 3 minutes: %v", n, counts)
	}
	return counts
}

// releaseOf asks url which release answers: "v2" of "release=v2 process=web.1".
func releaseOf(ctx context.Context, c *http.Client, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d, %v", resp.StatusCode, err)
	}
	rel, _, _ := strings.Cut(strings.TrimPrefix(string(b), "release="), " ")
	return rel, nil
}

// wantShare checks that release got pct % ± tol of what counts holds.
func wantShare(t *testing.T, counts map[string]int, release string, pct, tol float64) {
	t.Helper()
	total := 0
	for _, n := range counts {
		total += n
	}
	got := 100 * float64(counts[release]) / float64(max(total, 1))
	t.Logf("%s got %d of %d new connections: %.2f%% (want %.0f%% ± %.0f%%); all: %v", release, counts[release], total, got, pct, tol, counts)
	if math.Abs(got-pct) > tol {
		t.Errorf("%s got %.2f%% of new connections, want %.0f%% ± %.0f%% (%v)", release, got, pct, tol, counts)
	}
}

func (e *env) canary(app string) api.Canary {
	e.t.Helper()
	var c api.Canary
	e.json(&c, "canary", app)
	return c
}

// checkCanary checks what hctl canary says of a canary of release over
// active: the share, both releases' processes (formation 2: the canary
// runs ceil(10% of 2) = 1), a split over both, in text and in --json.
func (e *env) checkCanary(app, release, active string) api.Canary {
	e.t.Helper()
	c := e.canary(app)
	if c.Release != release || c.Active != active || c.Percent != 10 || c.Formation["web"] != 1 || c.StartedAt.IsZero() {
		e.t.Errorf("hctl canary %s: release %s over %s, %v%%, formation %v, started %v; want %s over %s, 10%%, web=1",
			app, c.Release, c.Active, c.Percent, c.Formation, c.StartedAt, release, active)
	}
	per := map[string]int{}
	for _, p := range c.Processes {
		if p.State == api.StateReady {
			per[p.Release]++
		}
	}
	if per[release] != 1 || per[active] != 2 {
		e.t.Errorf("hctl canary %s: ready processes per release %v, want 1 of %s and 2 of %s", app, per, release, active)
	}
	var rels []string
	for _, s := range c.Split {
		rels = append(rels, s.Release)
	}
	slices.Sort(rels)
	if want := []string{active, release}; !slices.Equal(rels, want) {
		e.t.Errorf("hctl canary %s: split over %v, want %v", app, rels, want)
	}
	out := e.mustHctl("canary", app).Stdout
	for _, s := range []string{release + ": 10% of new connections", "active     " + active, release + " (canary)", active + " (active)"} {
		if !strings.Contains(out, s) {
			e.t.Errorf("hctl canary %s lacks %q:\n%s", app, s, out)
		}
	}
	return c
}

// TestCanaryPromote: a canary of 10 % gets 10 % ± 2 % of 10,000 new
// connections; hctl canary shows both releases; another deploy meanwhile
// is refused and changes nothing; promote makes the canary the release of
// the whole formation. Three kinds of clients run throughout: none fails.
func TestCanaryPromote(t *testing.T) {
	e := start(t)
	url := e.canaryApp("cy")
	ls := startLoads(t, url)

	r := e.mustHctl("deploy", "cy", e.release(""), "--canary", "10%")
	if !strings.Contains(r.Stdout, "v2 is a canary") {
		t.Errorf("deploy --canary said: %s", r)
	}
	e.checkCanary("cy", "v2", "v1")
	wantShare(t, countReleases(t, url, 10_000), "v2", 10, 2)
	split := e.canary("cy").Split
	var steered, all uint64
	for _, s := range split {
		all += s.Steered
		if s.Release == "v2" {
			steered = s.Steered
		}
	}
	if all < 10_000 || math.Abs(100*float64(steered)/float64(all)-10) > 2 {
		t.Errorf("hctl canary's split %+v: want at least 10,000 connections, 10%% ± 2%% to v2", split)
	}

	// Another rollout during the canary is refused, and changes nothing.
	before, rels := pidsOf(e.ps("cy")), e.releaseNames("cy")
	r = e.hctl("deploy", "cy", e.release(""))
	if r.Code != 1 || !strings.Contains(r.Stderr, "hctl canary cy shows it") {
		t.Errorf("a deploy during the canary: want exit 1 and the canary_running advice, got %s", r)
	}
	var res api.OpResult
	if json.Unmarshal([]byte(e.hctl("--json", "deploy", "cy", e.release("")).Stdout), &res); res.Reason != api.ReasonCanaryRunning && !strings.Contains(res.Error, "canary") {
		t.Errorf("--json deploy during the canary: %+v, want reason %s", res, api.ReasonCanaryRunning)
	}
	if after := pidsOf(e.ps("cy")); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refused deploy changed the processes: %v, then %v", before, after)
	}
	if after := e.releaseNames("cy"); !slices.Equal(after, rels) {
		t.Errorf("the refused deploy changed the releases: %v, then %v", rels, after)
	}
	if c := e.canary("cy"); c.Release != "v2" || c.Percent != 10 {
		t.Errorf("the refused deploy changed the canary: %+v", c)
	}

	var pr api.OpResult
	e.json(&pr, "promote", "cy")
	if !pr.OK || pr.Release != "v2" {
		t.Fatalf("promote: %+v", pr)
	}
	waitPs(t, e, "cy", "v2 alone, 2 ready", func(ps []api.Process) bool {
		return len(ps) == 2 && ps[0].Release == "v2" && ps[1].Release == "v2" && ps[0].State == api.StateReady && ps[1].State == api.StateReady
	})
	ls.stopAndCheck(t)
	if counts := countReleases(t, url, 200); counts["v2"] != 200 {
		t.Errorf("after promote: %v, want v2 alone", counts)
	}
	if r := e.hctl("canary", "cy"); r.Code != 1 || !strings.Contains(r.Stderr, "--canary 10% starts one") {
		t.Errorf("hctl canary after promote: %s", r)
	}
	if v2 := releaseNamed(t, e, "cy", "v2"); v2.Status != api.StatusActive {
		t.Errorf("v2 after promote: %s", v2.Status)
	}
}

// TestCanaryAbort: aborting a canary under load fails none of the three
// client kinds, brings every new connection back to the active release,
// stops the canary's processes and marks its release failed.
func TestCanaryAbort(t *testing.T) {
	e := start(t)
	url := e.canaryApp("ca")
	ls := startLoads(t, url)
	e.mustHctl("deploy", "ca", e.release(""), "--canary", "10%")
	e.checkCanary("ca", "v2", "v1")
	// The canary serves before it is aborted.
	if counts := countReleases(t, url, 500); counts["v2"] == 0 {
		t.Fatalf("the canary got none of 500 new connections: %v", counts)
	}
	var res api.OpResult
	e.json(&res, "canary", "abort", "ca")
	if !res.OK || res.Release != "v1" {
		t.Fatalf("canary abort: %+v", res)
	}
	waitPs(t, e, "ca", "v1 alone, 2 ready", func(ps []api.Process) bool {
		return len(ps) == 2 && ps[0].Release == "v1" && ps[1].Release == "v1"
	})
	ls.stopAndCheck(t)
	if counts := countReleases(t, url, 200); counts["v1"] != 200 {
		t.Errorf("after the abort: %v, want v1 alone", counts)
	}
	if v2 := releaseNamed(t, e, "ca", "v2"); v2.Status != api.StatusFailed {
		t.Errorf("v2 after the abort: %s, want failed", v2.Status)
	}
	if r := e.hctl("canary", "abort", "ca"); r.Code != 1 {
		t.Errorf("a second abort: want exit 1 (no canary), got %s", r)
	}
	checkNoOrphans(t, e, "ca")
}

// TestCanarySurvivesKill: agentd killed with SIGKILL mid-canary. The next
// agentd shows the same canary and keeps the split, and the load loses
// nothing across the kill.
func TestCanarySurvivesKill(t *testing.T) {
	e := start(t)
	url := e.canaryApp("ck")
	ls := startLoads(t, url)
	e.mustHctl("deploy", "ck", e.release(""), "--canary", "10%")
	before := e.checkCanary("ck", "v2", "v1")
	pids := pidsOf(e.ps("ck"))

	e.ag.Kill()
	// Nobody steers anything now but the kernel, with the program and the
	// map agentd left behind: new connections still split.
	wantShare(t, countReleases(t, url, 2_000), "v2", 10, 4)
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	after := e.checkCanary("ck", "v2", "v1")
	if !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("the canary started at %v before the restart, at %v after", before.StartedAt, after.StartedAt)
	}
	if got := pidsOf(e.ps("ck")); fmt.Sprint(got) != fmt.Sprint(pids) {
		t.Errorf("processes before the kill %v, after the restart %v: want the same, adopted", pids, got)
	}
	wantShare(t, countReleases(t, url, 4_000), "v2", 10, 3)
	ls.stopAndCheck(t)
}

// TestCanarySurvivesUpgrade: agentd upgraded (tableflip) mid-canary. The
// new agentd gets the canary's sockets and the steering program's fds
// handed over, keeps the split, and can promote the canary, with nothing
// lost throughout.
func TestCanarySurvivesUpgrade(t *testing.T) {
	e := start(t)
	url := e.canaryApp("cu")
	ls := startLoads(t, url)
	e.mustHctl("deploy", "cu", e.release(""), "--canary", "10%")
	before := e.checkCanary("cu", "v2", "v1")
	pids := pidsOf(e.ps("cu"))
	old := e.ag.PID()
	e.mustHctl("agent", "upgrade")
	if e.ag.PID() == old {
		t.Fatalf("agentd pid still %d after the upgrade", old)
	}
	after := e.checkCanary("cu", "v2", "v1")
	if !after.StartedAt.Equal(before.StartedAt) || after.Percent != before.Percent {
		t.Errorf("canary before the upgrade %v %g%%, after %v %g%%", before.StartedAt, before.Percent, after.StartedAt, after.Percent)
	}
	if got := pidsOf(e.ps("cu")); fmt.Sprint(got) != fmt.Sprint(pids) {
		t.Errorf("processes before the upgrade %v, after %v: want the same", pids, got)
	}
	if !strings.Contains(e.ag.Log(), `program=opened`) {
		t.Errorf("the new agentd did not steer on with the handed-over program (no program=opened in its log)")
	}
	wantShare(t, countReleases(t, url, 4_000), "v2", 10, 3)
	e.mustHctl("promote", "cu")
	if counts := countReleases(t, url, 200); counts["v2"] != 200 {
		t.Errorf("after the promote: %v, want v2 alone", counts)
	}
	ls.stopAndCheck(t)
}

// TestCanaryNeedsSteering: with --steering off, hctl apps info says why
// each socket is shared, and deploy --canary is refused, saying what a
// canary needs, and changes nothing. It needs no root: without root
// steering is off in any case.
func TestCanaryNeedsSteering(t *testing.T) {
	e := start(t, "--steering", "off")
	url := e.createApp("cn", "--readiness", "web=notify")
	e.deploy("cn", e.release(""))
	info := e.mustHctl("apps", "info", "cn").Stdout
	if !strings.Contains(info, "STEERING") || !strings.Contains(info, "shared: agentd runs with --steering off") {
		t.Errorf("apps info does not say the socket is shared and why:\n%s", info)
	}
	before, rels := pidsOf(e.ps("cn")), e.releaseNames("cn")

	r := e.hctl("deploy", "cn", e.release(""), "--canary", "10%")
	if r.Code != 1 {
		t.Errorf("deploy --canary without steering: want exit 1, got %s", r)
	}
	for _, s := range []string{"a canary needs kernel steering", "--steering off", "kernel of 5.14", "ReusePort=yes"} {
		if !strings.Contains(r.Stderr, s) {
			t.Errorf("deploy --canary without steering: stderr lacks %q:\n%s", s, r.Stderr)
		}
	}
	if after := pidsOf(e.ps("cn")); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refused canary changed the processes: %v, then %v", before, after)
	}
	if after := e.releaseNames("cn"); !slices.Equal(after, rels) {
		t.Errorf("the refused canary changed the releases: %v, then %v", rels, after)
	}
	if got := get(t, url); !strings.Contains(got, "release=v1") {
		t.Errorf("after the refused canary the app answers %q, want v1", got)
	}
}

// releaseNames lists an app's releases with their status: "v2 active".
func (e *env) releaseNames(app string) []string {
	e.t.Helper()
	var rels []api.Release
	e.json(&rels, "releases", app)
	var out []string
	for _, r := range rels {
		out = append(out, r.Name+" "+r.Status)
	}
	return out
}
