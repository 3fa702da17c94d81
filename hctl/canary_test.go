package main

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

func TestCanaryUsage(t *testing.T) {
	f := newFake(t)
	dir := artifactDir(t)
	for _, args := range [][]string{
		{"deploy", "myapp", dir, "--canary", "0"},
		{"deploy", "myapp", dir, "--canary", "100%"},
		{"deploy", "myapp", dir, "--canary", "150"},
		{"deploy", "myapp", dir, "--canary", "-5%"},
		{"deploy", "myapp", dir, "--canary", "ten"},
		{"deploy", "myapp", dir, "--canary", "1e1"},
		{"deploy", "myapp", dir, "--canary", ""},
		{"canary"},
		{"canary", "Bad_App"},
		{"canary", "myapp", "extra"},
		{"canary", "abort"},
		{"canary", "abort", "myapp", "extra"},
		{"canary", "abort", "myapp", "--wait-drain", "-1s"},
		{"canary", "abort", "myapp", "--wait-drain", "soon"},
		{"promote"},
		{"promote", "Bad_App"},
		{"promote", "myapp", "--wait-drain", "-1s"},
	} {
		r := hctlRun(t, args...)
		if r.code != 2 || !strings.HasPrefix(lastLine(r.stderr), "hctl: ") {
			t.Errorf("hctl %s: %s", strings.Join(args, " "), r)
		}
	}
	if s := f.sent(); len(s) != 0 {
		t.Errorf("usage errors sent requests: %v", s)
	}
	r := hctlRun(t, "deploy", "myapp", dir, "--canary", "100%")
	if !strings.Contains(r.stderr, `bad --canary "100%": the share must be above 0% and below 100%`) {
		t.Errorf("%s", r)
	}
}

// TestDeployCanary: --canary travels as canary= in the grammar's form, and
// the summary says what runs and how to go on.
func TestDeployCanary(t *testing.T) {
	f := newFake(t)
	dir := artifactDir(t)
	f.events("POST /v1/apps/{app}/deploys",
		api.Event{Type: "result", Result: &api.OpResult{App: "myapp", OK: true, Changed: true, Release: "v4", Previous: "v3", SwitchSeconds: 1.5}})
	for arg, want := range map[string]string{"10%": "10", "10": "10", "0.5%": "0.5", "99.5": "99.5"} {
		r := hctlRun(t, "deploy", "myapp", dir, "--canary", arg)
		wantExit(t, r, 0)
		s := f.sent()
		u, err := url.Parse(s[len(s)-1][len("POST "):])
		if err != nil || u.Path != "/v1/apps/myapp/deploys" || u.Query().Get("canary") != want {
			t.Errorf("--canary %s sent %s, want canary=%s", arg, s[len(s)-1], want)
		}
		wantOut := "myapp v4 is a canary: it gets " + want + "% of new connections, v3 the rest (switch 1.50s); " +
			"hctl canary myapp shows it, hctl promote myapp finishes it, hctl canary abort myapp stops it\n"
		if r.stdout != wantOut {
			t.Errorf("stdout %q\nwant   %q", r.stdout, wantOut)
		}
	}
	// Without --canary, no canary= at all.
	r := hctlRun(t, "deploy", "myapp", dir)
	wantExit(t, r, 0)
	if s := f.sent(); strings.Contains(s[len(s)-1], "canary") {
		t.Errorf("sent %s", s[len(s)-1])
	}
}

func TestCanaryShow(t *testing.T) {
	f := newFake(t)
	started := time.Date(2026, 12, 4, 21, 40, 0, 0, time.UTC)
	now = func() time.Time { return started.Add(3*time.Minute + 12*time.Second) }
	t.Cleanup(func() { now = time.Now })
	exit1 := 1
	c := api.Canary{App: "myapp", Release: "v4", Active: "v3", Percent: 10, StartedAt: started,
		BakeUntil: started.Add(5 * time.Minute), Formation: map[string]int{"web": 1}, Crashes: 1,
		Split: []api.CanaryShare{{Release: "v3", Percent: 90, Steered: 8970}, {Release: "v4", Percent: 10, Steered: 1030}},
		Processes: []api.Process{
			{App: "myapp", Name: "web.2", Type: "web", Index: 2, Release: "v3", State: "ready", PID: 11, StartedAt: started.Add(-time.Hour), ReadyAt: started.Add(-time.Hour)},
			{App: "myapp", Name: "web.1", Type: "web", Index: 1, Release: "v3", State: "ready", PID: 10, StartedAt: started.Add(-time.Hour), ReadyAt: started.Add(-time.Hour)},
			{App: "myapp", Name: "web.1", Type: "web", Index: 1, Release: "v4", State: "ready", PID: 20, StartedAt: started, ReadyAt: started.Add(time.Second), Restarts: 1, Status: "serving"},
			{App: "myapp", Name: "web.2", Type: "web", Index: 2, Release: "v4", State: "crashed", PID: 21, StartedAt: started, ExitCode: &exit1},
		}}
	f.json("GET /v1/apps/{app}/canary", 200, c)

	r := hctlRun(t, "canary", "myapp")
	wantExit(t, r, 0)
	ts := func(d time.Duration) string { return started.Add(d).Local().Format("2006-01-02 15:04:05") }
	want := "app        myapp\n" +
		"canary     v4: 10% of new connections asked, 10.3% steered (1,030 of 10,000)\n" +
		"active     v3\n" +
		"formation  web=1\n" +
		"running    3m12s (since " + ts(0) + ")\n" +
		"bake       until " + ts(5*time.Minute) + " (1m48s left; a crash or failed probe until then aborts the canary)\n" +
		"crashes    1\n" +
		"\nsplit:\n" +
		"RELEASE  ROLE    ASKED  STEERED  SHARE\n" +
		"v4       canary  10%    1,030    10.3%\n" +
		"v3       active  90%    8,970    89.7%\n" +
		"\nprocesses:\n" +
		"RELEASE      PROCESS  STATE    PID  UPTIME  RESTARTS  READY                STATUS\n" +
		"v4 (canary)  web.1    ready    20   3m12s   1         " + ts(time.Second) + "  serving\n" +
		"v4 (canary)  web.2    crashed  -    -       0         no                   exit 1\n" +
		"v3 (active)  web.1    ready    10   1h03m   0         " + ts(-time.Hour) + "  -\n" +
		"v3 (active)  web.2    ready    11   1h03m   0         " + ts(-time.Hour) + "  -\n"
	if r.stdout != want {
		t.Errorf("canary:\n%s\nwant:\n%s", r.stdout, want)
	}
	if s := f.sent(); s[len(s)-1] != "GET /v1/apps/myapp/canary" {
		t.Errorf("sent %v", s)
	}

	// --json anywhere: the Canary as agentd sent it.
	r = hctlRun(t, "canary", "myapp", "--json")
	wantExit(t, r, 0)
	var got api.Canary
	wantOneJSON(t, r, &got)
	if got.Release != "v4" || len(got.Split) != 2 || got.Split[1].Steered != 1030 || len(got.Processes) != 4 {
		t.Errorf("json %+v", got)
	}
}

func TestPromoteAndAbort(t *testing.T) {
	f := newFake(t)
	f.events("POST /v1/apps/{app}/promote",
		api.Event{Type: "phase", Phase: api.PhaseCutover, Message: "v4 takes every new connection"},
		api.Event{Type: "result", Result: &api.OpResult{OK: true, Changed: true, Release: "v4", Previous: "v3", SwitchSeconds: 1, DrainSeconds: 0.5}})
	f.events("POST /v1/apps/{app}/canary/abort",
		api.Event{Type: "result", Result: &api.OpResult{OK: true, Changed: true, Release: "v3", Previous: "v3", DrainSeconds: 0.25}})

	r := hctlRun(t, "promote", "myapp", "--wait-drain", "2m")
	wantExit(t, r, 0)
	if r.stdout != "myapp promoted: v4 is live (switch 1.00s, drain 0.50s)\n" || !strings.Contains(r.stderr, "-----> cutover: v4 takes every new connection") {
		t.Errorf("%s", r)
	}
	if b := strings.TrimSpace(f.lastBody()); b != `{"wait_drain_seconds":120}` {
		t.Errorf("promote sent %s", b)
	}
	r = hctlRun(t, "canary", "abort", "myapp")
	wantExit(t, r, 0)
	if r.stdout != "myapp canary aborted: v3 takes every new connection again (drain 0.25s)\n" {
		t.Errorf("%s", r)
	}
	if s, b := f.sent(), strings.TrimSpace(f.lastBody()); s[len(s)-1] != "POST /v1/apps/myapp/canary/abort" || b != `{}` {
		t.Errorf("abort sent %v %s", s, b)
	}
	r = hctlRun(t, "--json", "promote", "myapp")
	wantExit(t, r, 0)
	var res api.OpResult
	wantOneJSON(t, r, &res)
	if !res.OK || res.Release != "v4" || res.App != "myapp" {
		t.Errorf("json %+v", res)
	}
}

// TestCanaryRefusals: each Reason gets hctl's advice, exit 1, and --json
// one object with the code.
func TestCanaryRefusals(t *testing.T) {
	f := newFake(t)
	dir := artifactDir(t)
	f.json("GET /v1/apps/{app}/canary", 404, api.Error{Message: "myapp has no canary", Code: api.CodeNotFound, Reason: api.ReasonNoCanary, App: "myapp"})
	f.events("POST /v1/apps/{app}/promote",
		api.Event{Type: "result", Result: &api.OpResult{App: "myapp", OK: false, Release: "v3", Previous: "v3",
			Error: "myapp has no canary", Code: api.CodeConflict, Reason: api.ReasonNoCanary}})
	f.events("POST /v1/apps/busy/deploys",
		api.Event{Type: "result", Result: &api.OpResult{App: "busy", OK: false, Release: "v3", Previous: "v3",
			Error: "busy has a canary, v4", Code: api.CodeConflict, Reason: api.ReasonCanaryRunning}})
	f.events("POST /v1/apps/plain/deploys",
		api.Event{Type: "result", Result: &api.OpResult{App: "plain", OK: false, Release: "v3", Previous: "v3",
			Error: "plain's sockets are not steered by the kernel", Code: api.CodeConflict, Reason: api.ReasonNoSteering}})
	f.json("GET /v1/apps/plain", 200, api.AppInfo{App: api.App{Name: "plain", Sockets: []api.Socket{
		{Type: "web", Name: "web", Addr: "tcp://127.0.0.1:8080", Steering: api.SteeringShared, SteeringWhy: "agentd runs with --steering off"},
		{Type: "web", Name: "admin", Addr: "tcp://127.0.0.1:8081", Steering: api.SteeringKernel}}}})

	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"canary", "myapp"}, []string{"hctl: myapp has no canary (hctl deploy myapp PATH --canary 10% starts one)"}},
		{[]string{"promote", "myapp"}, []string{"hctl: promote of myapp failed: myapp has no canary (hctl deploy myapp PATH --canary 10% starts one); myapp v3 still serves"}},
		{[]string{"deploy", "busy", dir}, []string{"busy has a canary, v4 (hctl canary busy shows it; hctl promote busy or hctl canary abort busy ends it)"}},
		{[]string{"deploy", "plain", dir, "--canary", "10%"}, []string{
			"plain's sockets are not steered by the kernel; socket web: shared (agentd runs with --steering off); a canary needs kernel steering",
			"kernel of 5.14 or later", "ReusePort=yes", "hctl apps info plain"}},
	}
	for _, c := range cases {
		r := hctlRun(t, c.args...)
		wantExit(t, r, 1)
		for _, w := range c.want {
			if !strings.Contains(lastLine(r.stderr), w) {
				t.Errorf("hctl %s: stderr lacks %q:\n%s", strings.Join(c.args, " "), w, r)
			}
		}
		if strings.Contains(r.stderr, "socket admin") {
			t.Errorf("a steered socket is named as not steered:\n%s", r)
		}
		r = hctlRun(t, append([]string{"--json"}, c.args...)...)
		wantExit(t, r, 1)
		var e map[string]any
		wantOneJSON(t, r, &e)
		if e["code"] == nil || e["code"] == "" {
			t.Errorf("hctl --json %s: %v", strings.Join(c.args, " "), e)
		}
	}
}

// TestSteeringColumn: apps info and status show each socket's steering,
// and tables from an agentd that reports none keep their columns.
func TestSteeringColumn(t *testing.T) {
	f := newFake(t)
	socks := []api.Socket{
		{App: "myapp", Type: "web", Name: "http", Addr: "tcp://127.0.0.1:8080", Bound: "127.0.0.1:8080", InUse: true, Steering: api.SteeringKernel},
		{App: "myapp", Type: "admin", Name: "adm", Addr: "unix:///run/a.sock", Bound: "/run/a.sock", Steering: api.SteeringShared, SteeringWhy: "a unix socket"},
	}
	f.json("GET /v1/apps/{app}", 200, api.AppInfo{App: api.App{Name: "myapp", Sockets: socks}})
	f.json("GET /v1/status", 200, api.Status{Version: "1", Sockets: socks})

	r := hctlRun(t, "apps", "info", "myapp")
	wantExit(t, r, 0)
	want := "TYPE   NAME  ADDR                  BOUND           IN USE  STEERING\n" +
		"web    http  tcp://127.0.0.1:8080  127.0.0.1:8080  yes     kernel\n" +
		"admin  adm   unix:///run/a.sock    /run/a.sock     no      shared: a unix socket\n"
	if !strings.Contains(r.stdout, want) {
		t.Errorf("apps info:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = hctlRun(t, "status")
	wantExit(t, r, 0)
	if !strings.Contains(r.stdout, "APP    TYPE   NAME  ADDR                  BOUND           IN USE  STEERING\n") ||
		!strings.Contains(r.stdout, "myapp  admin  adm   unix:///run/a.sock    /run/a.sock     no      shared: a unix socket\n") {
		t.Errorf("status:\n%s", r.stdout)
	}
}
