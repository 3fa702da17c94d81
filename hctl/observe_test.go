package main

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

// The error of a failed release keeps its lines: the last lines of the
// failing process's output are the point of it.
func TestReleaseInfoError(t *testing.T) {
	var b strings.Builder
	writeRelease(&b, &api.Release{App: "shop", Name: "v4", Status: "failed", DeployedBy: "alice", Message: "new cart",
		Error:  "web.1 exited with status 3 before it was ready; its last output:\nbooting\ncrashing on purpose",
		Phases: []api.Phase{{Name: "prepare", Seconds: 0.1}, {Name: "preboot", Seconds: 0.05}, {Name: "readiness", Seconds: 0.35}}})
	for _, s := range []string{
		"deployed by  alice\n",
		"phases       prepare 0.10s, preboot 0.05s, readiness 0.35s (0.50s in all)\n",
		"error:\n  web.1 exited with status 3 before it was ready; its last output:\n  booting\n  crashing on purpose\n",
	} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("release info lacks %q:\n%s", s, b.String())
		}
	}
}

func TestOpTimesCut(t *testing.T) {
	got := opTimes(&api.OpResult{SwitchSeconds: 1, DrainSeconds: 2, Killed: []string{"v1 web.1"}, ConnectionsCut: 2})
	if want := " (switch 1.00s, drain 2.00s; killed at the drain timeout: v1 web.1, cutting 2 open connection(s))"; got != want {
		t.Errorf("opTimes = %q, want %q", got, want)
	}
}
