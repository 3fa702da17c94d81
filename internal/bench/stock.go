package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/loadgen"
)

// Scenario "stock" (issue 18): stock servers that do not follow
// docs/app-contract.md's drain recipe, deployed by agentd with and without
// kernel steering under new-connection POST load. The apps are the e2e
// test's (internal/e2e/stock/testdata): uvicorn from Debian (`python3 -m
// uvicorn app:app --fd 3`, uptime readiness) and a Go app whose SIGTERM
// handler is just http.Server.Shutdown.

// stockSystemPath is the PATH systemd gives a service: Debian's python3,
// where python3-uvicorn is.
const stockSystemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// stockResults is the scenario's outcome: one row per app and mode.
type stockResults struct {
	Deploys int        `json:"deploys_per_row"`
	Rows    []stockRow `json:"rows"`
}

// stockRow is one app deployed Deploys times with agentd --steering Mode.
type stockRow struct {
	App          string           `json:"app"`
	Steering     string           `json:"steering"` // agentd --steering: off or auto
	Rate         float64          `json:"rate"`     // requests per second asked
	SentPerSec   float64          `json:"sent_per_second"`
	Sent         int64            `json:"sent"`
	Failed       int64            `json:"failed"`
	Late         int64            `json:"late"`
	PerDeploy    []int64          `json:"failed_per_deploy"`
	FailedBefore int64            `json:"failed_before_first_deploy,omitempty"`
	LossyDeploys int              `json:"deploys_that_lost"`
	ByClass      map[string]int64 `json:"failed_by_class,omitempty"`
	Error        string           `json:"error,omitempty"`
}

// stockBenchApp is one stock server: its Procfile, the file it needs and the
// rate it is loaded at (as in internal/e2e/stock/stock_test.go).
type stockBenchApp struct {
	name, procfile, file, src string
	rate                      float64
}

func stockScenario(o options, bins binaries, dir string, res *results) (*stockResults, error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	goApp := filepath.Join(dir, "goshutdown")
	cmd := exec.Command("go", "build", "-trimpath", "-o", goApp, "./internal/e2e/stock/testdata/goshutdown")
	cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build goshutdown: %v\n%s", err, out)
	}
	var apps []stockBenchApp
	if err := exec.Command("/usr/bin/python3", "-c", "import uvicorn").Run(); err != nil {
		res.Skipped = append(res.Skipped, "stock: uvicorn (Debian's python3-uvicorn is not installed)")
		say("SKIP stock uvicorn: Debian's python3-uvicorn is not installed")
	} else {
		apps = append(apps, stockBenchApp{"uvicorn", "web: python3 -m uvicorn app:app --fd 3\n", "app.py",
			filepath.Join(root, "internal", "e2e", "stock", "testdata", "uvicorn", "app.py"), 500})
	}
	apps = append(apps, stockBenchApp{"go-shutdown", "web: ./goshutdown\n", "goshutdown", goApp, 1000})

	n := 10
	if o.quick {
		n = 5
	}
	out := &stockResults{Deploys: n}
	for _, app := range apps {
		for _, mode := range []string{"off", "auto"} {
			row := stockBlock(bins, filepath.Join(dir, app.name+"-"+mode), app, mode, n)
			say("stock %-12s --steering %-4s %s", app.name, mode, row.line())
			out.Rows = append(out.Rows, row)
		}
	}
	return out, nil
}

// stockBlock starts an agentd with --steering mode, deploys app once, then
// n times under load, and stops that agentd.
func stockBlock(bins binaries, dir string, app stockBenchApp, mode string, n int) stockRow {
	row := stockRow{App: app.name, Steering: mode, Rate: app.rate}
	fail := func(err error) stockRow { row.Error = err.Error(); return row }
	ag, err := harness.StartEnv(bins.Bins, dir, []string{"PATH=" + stockSystemPath}, "--log-level", "info", "--steering", mode)
	if err != nil {
		return fail(err)
	}
	atCleanup(ag.Stop)
	defer ag.Stop()
	if r := ag.Hctl("apps", "create", app.name, "--socket", "web=tcp://127.0.0.1:0", "--readiness", "web=uptime:2s",
		"--boot-timeout", "30s", "--drain-timeout", "10s", "--allow-root"); r.Code != 0 {
		return fail(fmt.Errorf("apps create: %s", r))
	}
	var info api.AppInfo
	if r := ag.HctlJSON(&info, "apps", "info", app.name); r.Code != 0 || len(info.Sockets) == 0 {
		return fail(fmt.Errorf("apps info: %s", r))
	}
	deploy := func(i int) error {
		rel, err := harness.Release(filepath.Join(dir, fmt.Sprintf("rel%d", i)), app.procfile, map[string]string{"VERSION": fmt.Sprint(i)})
		if err == nil {
			err = harness.CopyFile(app.src, filepath.Join(rel, app.file))
		}
		if err != nil {
			return err
		}
		var res api.OpResult
		if r := ag.HctlJSON(&res, opTimeout, opTimeoutValue, "deploy", app.name, rel); r.Code != 0 || !res.OK {
			return fmt.Errorf("deploy %d: %s", i, r)
		}
		return nil
	}
	if err := deploy(0); err != nil {
		return fail(err)
	}
	run, err := loadgen.Start(context.Background(), loadgen.Config{
		URL: "http://" + info.Sockets[0].Bound + "/", Kind: loadgen.NewConnPost, Rate: app.rate,
		Workers: 4, InFlightPerWorker: 64, Timeout: 15 * time.Second,
		Duration: 4 * time.Minute, MaxRequests: int(app.rate) * 240,
	})
	if err != nil {
		return fail(err)
	}
	defer run.Stop()
	for i := 1; i <= n; i++ {
		run.Mark(fmt.Sprintf("deploy %d", i))
		if err := deploy(i); err != nil {
			row.Error = err.Error()
			break
		}
	}
	r := run.Stop()
	row.Sent, row.Failed, row.Late, row.ByClass = r.Sent, r.Failed, r.Late, r.ByClass
	if r.Elapsed > 0 {
		row.SentPerSec = float64(r.Sent) / r.Elapsed.Seconds()
	}
	row.PerDeploy, row.FailedBefore = r.FailedPerMark() // one mark per deploy
	for _, f := range row.PerDeploy {
		if f > 0 {
			row.LossyDeploys++
		}
	}
	return row
}

func (s stockRow) line() string {
	if s.Error != "" && s.Sent == 0 {
		return "error: " + s.Error
	}
	per := make([]string, len(s.PerDeploy))
	for i, f := range s.PerDeploy {
		per[i] = fmt.Sprint(f)
	}
	l := fmt.Sprintf("%.0f req/s asked, %.0f sent: %d failed of %d, %d of %d deploys lost ≥ 1 (%s), %d late",
		s.Rate, s.SentPerSec, s.Failed, s.Sent, s.LossyDeploys, len(s.PerDeploy), strings.Join(per, " "), s.Late)
	if s.Error != "" {
		l += "; error: " + s.Error
	}
	return l
}

func reportStock(b *strings.Builder, s *stockResults) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Stock servers with and without kernel steering\n\n")
	p("Servers that do not follow the drain recipe of [app-contract.md](app-contract.md): uvicorn from Debian (`python3 -m uvicorn app:app --fd 3`, `uptime:2s` readiness) ")
	p("and a Go app whose SIGTERM handler is just `http.Server.Shutdown` (`internal/e2e/stock/testdata`), each deployed %d times in a row under new-connection POST load, ", s.Deploys)
	p("by agentd with `--steering off` (one socket shared by both releases) and `--steering auto` (issue 18: per-release sockets, new connections steered by the kernel). ")
	p("Failures are counted against the deploy in whose window they happened.\n\n")
	p("| app | steering | rate asked | sent/s | requests | failed | deploys that lost ≥ 1 | failed per deploy | late |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range s.Rows {
		per := make([]string, len(r.PerDeploy))
		for i, f := range r.PerDeploy {
			per[i] = fmt.Sprint(f)
		}
		p("| %s | %s | %.0f | %.0f | %d | %d | %d/%d | %s | %d |\n", r.App, r.Steering, r.Rate, r.SentPerSec, r.Sent, r.Failed, r.LossyDeploys, len(r.PerDeploy), strings.Join(per, " "), r.Late)
	}
	for _, r := range s.Rows {
		if r.Error != "" {
			p("\n%s --steering %s: %s\n", r.App, r.Steering, r.Error)
		}
	}
	p("\n")
}
