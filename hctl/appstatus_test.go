package main

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
	"github.com/google/go-cmp/cmp"
)

func TestNewAppStatus(t *testing.T) {
	rel := &api.Release{Name: "v3", ReleaseID: "abc123", Digest: "sha256:0123456789abcdef",
		Procfile: map[string]string{"web": "./server", "worker": "./server -w", "release": "./migrate"}}
	app := api.App{Name: "myapp", ActiveRelease: "v3", Formation: map[string]int{"web": 2, "worker": 1, "cron": 4}}
	proc := func(name, release, state string) api.Process {
		return api.Process{Name: name, Release: release, State: state}
	}
	tests := []struct {
		name string
		info api.AppInfo
		want appStatus
	}{{
		name: "healthy, old release still draining",
		info: api.AppInfo{App: app, Release: rel, Processes: []api.Process{
			proc("web.1", "v3", api.StateReady), proc("web.2", "v3", api.StateReady),
			proc("worker.1", "v3", api.StateReady), proc("web.1", "v2", api.StateDraining),
		}},
		want: appStatus{App: "myapp", Release: "v3", ReleaseID: "abc123", Digest: "sha256:0123456789abcdef",
			Wanted: 3, Processes: 3, Ready: 3, Healthy: true},
	}, {
		name: "a crashed process",
		info: api.AppInfo{App: app, Release: rel, Processes: []api.Process{
			proc("web.1", "v3", api.StateReady), proc("web.2", "v3", api.StateCrashed),
			proc("worker.1", "v3", api.StateReady),
		}},
		want: appStatus{App: "myapp", Release: "v3", ReleaseID: "abc123", Digest: "sha256:0123456789abcdef",
			Wanted: 3, Processes: 3, Ready: 2, Problem: "2 of 3 processes ready (web.2 crashed)"},
	}, {
		name: "a process missing",
		info: api.AppInfo{App: app, Release: rel, Processes: []api.Process{
			proc("web.1", "v3", api.StateReady), proc("worker.1", "v3", api.StateReady),
		}},
		want: appStatus{App: "myapp", Release: "v3", ReleaseID: "abc123", Digest: "sha256:0123456789abcdef",
			Wanted: 3, Processes: 2, Ready: 2, Problem: "2 of 3 processes ready"},
	}, {
		name: "deploying",
		info: func() api.AppInfo {
			a := app
			a.Deploying = true
			return api.AppInfo{App: a, Release: rel, Processes: []api.Process{
				proc("web.1", "v3", api.StateReady), proc("web.2", "v3", api.StateReady),
				proc("worker.1", "v3", api.StateReady), proc("web.1", "v4", api.StateStarting),
			}}
		}(),
		want: appStatus{App: "myapp", Release: "v3", ReleaseID: "abc123", Digest: "sha256:0123456789abcdef",
			Deploying: true, Wanted: 3, Processes: 3, Ready: 3, Problem: "an operation is in progress"},
	}, {
		name: "no release yet",
		info: api.AppInfo{App: api.App{Name: "myapp", Formation: map[string]int{}}},
		want: appStatus{App: "myapp", Problem: "no release deployed yet"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, newAppStatus(&tt.info)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestStatusApp(t *testing.T) {
	f := newFake(t)
	f.json("GET /v1/apps/myapp", 200, api.AppInfo{
		App:       api.App{Name: "myapp", ActiveRelease: "v3", Formation: map[string]int{"web": 1}},
		Release:   &api.Release{Name: "v3", ReleaseID: "abc123", Digest: "sha256:0123456789abcdef", Procfile: map[string]string{"web": "./server"}},
		Processes: []api.Process{{Name: "web.1", Release: "v3", State: api.StateReady}},
	})
	f.json("GET /v1/apps/nope", 404, api.Error{Message: `no app "nope"`, Code: api.CodeNotFound})

	r := hctlRun(t, "status", "myapp")
	wantExit(t, r, 0)
	for _, s := range []string{"release     v3", "release id  abc123", "digest      0123456789ab\n", "processes   1 of 1 ready", "healthy     yes"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("status lacks %q:\n%s", s, r.stdout)
		}
	}

	r = hctlRun(t, "status", "myapp", "--json")
	wantExit(t, r, 0)
	var got map[string]any
	wantOneJSON(t, r, &got)
	want := map[string]any{"app": "myapp", "release": "v3", "release_id": "abc123", "digest": "sha256:0123456789abcdef",
		"deploying": false, "wanted": 1.0, "processes": 1.0, "ready": 1.0, "healthy": true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("--json (-want +got)\n%s", diff)
	}

	r = hctlRun(t, "--json", "status", "nope")
	wantExit(t, r, 1)
	wantOneJSON(t, r, &got)
	if got["code"] != api.CodeNotFound {
		t.Errorf("%s", r)
	}

	n := len(f.sent())
	wantExit(t, hctlRun(t, "status", "Bad_Name"), 2)
	wantExit(t, hctlRun(t, "status", "myapp", "extra"), 2)
	if len(f.sent()) != n {
		t.Errorf("bad usage sent requests: %v", f.sent()[n:])
	}
}

// A failed deploy's result names the new, failed release in "release" and
// the one still serving in "previous": hctl must name the latter.
func TestFailedDeploySaysWhatServes(t *testing.T) {
	f := newFake(t)
	f.events("POST /v1/apps/web/deploys",
		api.Event{Type: "result", Result: &api.OpResult{App: "web", OK: false, Release: "v4", Previous: "v3",
			Error: "web.1 exited with status 3 before it was ready (v3 keeps serving)", Code: api.CodeDeployFailed}})
	r := hctlRun(t, "deploy", "web", artifactDir(t))
	wantExit(t, r, 1)
	if !strings.HasSuffix(r.stderr, "; web v3 still serves\n") {
		t.Errorf("stderr %q does not say v3 still serves", r.stderr)
	}
}
