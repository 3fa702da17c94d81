package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// TestExecShimChoice: agentd uses the agentd-shim beside it (the harness
// builds it there, as the packages install it), and without one it
// re-executes itself as the shim, says so once, and apps still start.
// TestKillBetweenForkAndRecord shows the held processes are agentd-shim.
func TestExecShimChoice(t *testing.T) {
	t.Run("beside agentd", func(t *testing.T) {
		e := start(t)
		if log := e.ag.Log(); !strings.Contains(log, `msg="exec shim" path=`+bins.Shim) {
			t.Errorf("agentd does not say it uses %s:\n%s", bins.Shim, log)
		}
	})
	t.Run("missing", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "e2e-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		alone := bins
		alone.Agentd, alone.Shim = filepath.Join(dir, "bin", "agentd"), ""
		if err := os.MkdirAll(filepath.Dir(alone.Agentd), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := harness.CopyFile(bins.Agentd, alone.Agentd); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(alone.Agentd, 0o755); err != nil {
			t.Fatal(err)
		}
		ag, err := harness.Start(alone, dir)
		if err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, ag: ag, dir: dir}
		t.Cleanup(func() {
			ag.Stop()
			if t.Failed() {
				t.Logf("agentd log:\n%s", ag.Log())
			}
		})
		e.createApp("noshim", "--readiness", "web=notify")
		if res := e.deploy("noshim", e.release("")); !res.OK {
			t.Fatalf("deploy without agentd-shim: %+v", res)
		}
		if ps := e.ps("noshim"); len(ps) != 1 || ps[0].State != api.StateReady {
			t.Errorf("processes: %+v, want one ready", ps)
		}
		log := ag.Log()
		if !strings.Contains(log, "no agentd-shim beside agentd") || !strings.Contains(log, `msg="exec shim" path=/proc/self/exe`) {
			t.Errorf("agentd does not say it falls back to itself:\n%s", log)
		}
	})
}
