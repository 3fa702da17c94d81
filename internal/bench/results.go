package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/internal/harness"
)

// results is everything a run measured: docs/benchmarks.json.
type results struct {
	Machine machineInfo `json:"machine"`
	Mode    string      `json:"mode"` // full or quick
	Started time.Time   `json:"started"`
	Seconds float64     `json:"seconds"` // the benchmark's own time, without -wait-quiet
	// WaitedSeconds is how long -wait-quiet waited before measuring.
	WaitedSeconds float64         `json:"waited_seconds,omitempty"`
	Config        runConfig       `json:"config"`
	Deploys       *deployResults  `json:"deploys,omitempty"`
	CrossCheck    *crossResults   `json:"crosscheck,omitempty"`
	Proxy         *proxyResults   `json:"proxy,omitempty"`
	Scale         *scaleResults   `json:"scale,omitempty"`
	Store         *storeResults   `json:"store,omitempty"`
	Stock         *stockResults   `json:"stock,omitempty"`
	Targets       []targetOutcome `json:"targets"`
	Skipped       []string        `json:"skipped,omitempty"`
	Errors        []string        `json:"errors,omitempty"`
}

// fail records a scenario that could not finish.
func (r *results) fail(scenario string, err error) {
	msg := scenario + ": " + err.Error()
	r.Errors = append(r.Errors, msg)
	say("FAILED %s", msg)
}

// runConfig is the options a run used.
type runConfig struct {
	Runs          int     `json:"runs"`
	Deploys       int     `json:"agentd_deploys_per_run"`
	AltDeploys    int     `json:"alternative_deploys_per_run"`
	CrossDeploys  int     `json:"crosscheck_deploys"`
	RatePerKind   float64 `json:"open_loop_rate_per_kind"`
	SteadySeconds float64 `json:"steady_seconds"`
	PaceSeconds   float64 `json:"pace_seconds"`
	BootDelay     string  `json:"app_boot_delay"`
	ProxySeconds  float64 `json:"proxy_seconds"`
	ScaleApps     int     `json:"scale_apps"`
	ScaleProcs    int     `json:"scale_procs_per_app"`
	ScaleConc     int     `json:"scale_concurrency"`
	Scenarios     string  `json:"scenarios"`
}

func configOf(o options) runConfig {
	var sc []string
	for _, s := range allScenarios {
		if o.scenarios[s] {
			sc = append(sc, s)
		}
	}
	return runConfig{
		Runs: o.runs, Deploys: o.deploys, AltDeploys: o.altDeploys, CrossDeploys: o.xDeploys,
		RatePerKind: o.rate, SteadySeconds: o.steady.Seconds(), PaceSeconds: o.pace.Seconds(), BootDelay: o.bootDelay.String(),
		ProxySeconds: o.proxyDur.Seconds(), ScaleApps: o.scaleApps, ScaleProcs: o.scaleProcs, ScaleConc: o.scaleConc,
		Scenarios: strings.Join(sc, ","),
	}
}

// machineInfo names the machine the figures come from.
type machineInfo struct {
	Host     string `json:"host"`
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	MemoryGB string `json:"memory"`
	Kernel   string `json:"kernel"`
	OS       string `json:"os"`
	Virt     string `json:"virtualization,omitempty"`
	Go       string `json:"go"`
	Commit   string `json:"commit"`
	Nginx    string `json:"nginx,omitempty"`
	Wrk      string `json:"wrk,omitempty"`
	Hey      string `json:"hey,omitempty"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end
	// of the run: other work on the machine shows here.
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after,omitempty"`
}

func (m machineInfo) oneLine() string {
	s := fmt.Sprintf("%s: %s, %d cores, %s RAM, Linux %s, %s", m.Host, m.CPU, m.Cores, m.MemoryGB, m.Kernel, m.OS)
	if m.Virt != "" {
		s += " (" + m.Virt + ")"
	}
	return s
}

func machine(b binaries) machineInfo {
	m := machineInfo{Cores: runtime.NumCPU(), Go: runtime.Version(), LoadBefore: loadavg()}
	m.Host, _ = os.Hostname()
	m.CPU = firstField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseFloat(strings.Fields(firstField("/proc/meminfo", "MemTotal") + " 0")[0], 64); err == nil {
		m.MemoryGB = fmt.Sprintf("%.0f GiB", kb/1024/1024)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.OS = strings.Trim(firstField("/etc/os-release", "PRETTY_NAME"), `"`)
	if out, err := exec.Command("systemd-detect-virt").Output(); err == nil {
		m.Virt = strings.TrimSpace(string(out))
	}
	if root, err := harness.ModuleRoot(); err == nil {
		cmd := exec.Command("git", "describe", "--always", "--dirty")
		cmd.Dir = root
		if out, err := cmd.Output(); err == nil {
			m.Commit = strings.TrimSpace(string(out))
		}
	}
	if b.Nginx != "" {
		out, _ := exec.Command(b.Nginx, "-v").CombinedOutput()
		m.Nginx = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	}
	if b.Wrk != "" {
		out, _ := exec.Command(b.Wrk, "--version").CombinedOutput()
		m.Wrk = strings.Fields(string(out) + " ? ?")[1]
	}
	if b.Hey != "" {
		m.Hey = "Debian package"
		if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "hey").Output(); err == nil {
			m.Hey = strings.TrimSpace(string(out))
		}
	}
	return m
}

// loadavg is the 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// firstField returns the value of the first "key: value" or "key=value"
// line of a file.
func firstField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		rest := strings.TrimLeft(line[len(key):], " \t")
		if v, ok := strings.CutPrefix(rest, ":"); ok {
			return strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(rest, "="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// targetOutcome is one of the targets, judged on this run.
type targetOutcome struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Met   bool   `json:"met"`
}

// targets judges the run against the targets agentd is built to meet.
func targets(r *results) []targetOutcome {
	var ts []targetOutcome
	if d := r.Deploys; d != nil {
		if s := d.Summary["agentd"]; s != nil {
			var parts []string
			for _, mode := range []string{modeOpen, modeClosed} {
				for _, k := range kindsOrder {
					if st, ok := s.ByKind[mode+" "+k]; ok {
						parts = append(parts, fmt.Sprintf("%s %s %.0f", mode, k, st.Max))
					}
				}
			}
			ts = append(ts, targetOutcome{
				Name:  "agentd: 0 failed requests in every client kind",
				Value: fmt.Sprintf("%d failed of %d requests in %d deploys (%s)", s.FailedTotal, s.RequestsTotal, s.DeploysTotal, strings.Join(parts, ", ")),
				Met:   s.FailedTotal == 0 && s.DeploysTotal > 0 && len(s.Errors) == 0,
			})
			ts = append(ts, targetOutcome{
				Name:  "every agentd deploy succeeds",
				Value: fmt.Sprintf("%d of %d deploys failed", s.FailedDeploys, s.DeploysTotal+s.FailedDeploys),
				Met:   s.FailedDeploys == 0,
			})
			ts = append(ts, targetOutcome{
				Name: "agentd's overhead on a switch well under 10 ms beyond the app's own boot",
				Value: fmt.Sprintf("%s over deploys; of which agentd's own work around the process %s, and the process start through the exec shim and bash %s against %s for the app started directly",
					s.Overhead.format(fmtDur), fmtDur(s.Around.Median), fmtDur(s.Exec.Median), fmtDur(s.DirectExec.Median)),
				Met: s.Overhead.valid() && s.Overhead.Median < 0.010,
			})
		}
	}
	if p := r.Proxy; p != nil && p.AgentdVsAlone.valid() {
		ts = append(ts, targetOutcome{
			Name:  "throughput through agentd's socket equal to the app alone",
			Value: "ratio " + p.AgentdVsAlone.format(fmtRatio) + " (kept-alive POSTs)",
			Met:   p.AgentdVsAlone.Median >= 0.95,
		})
	}
	if s := r.Scale; s != nil {
		ts = append(ts, targetOutcome{
			Name:  fmt.Sprintf("every deploy of the %d apps succeeds", s.Apps),
			Value: fmt.Sprintf("%d of %d deploys failed", s.FailedDeploys, s.Deploys),
			Met:   s.FailedDeploys == 0,
		})
		ts = append(ts, targetOutcome{
			Name:  fmt.Sprintf("agentd idle CPU ~0 with %d supervised processes", s.Processes),
			Value: s.IdleCPU.format(fmtPct) + " of one core",
			Met:   s.IdleCPU.valid() && s.IdleCPU.Median < 1,
		})
		ts = append(ts, targetOutcome{
			Name:  fmt.Sprintf("agentd RSS under 30 MiB with %d supervised processes", s.Processes),
			Value: s.IdleRSS.format(fmtMiB),
			Met:   s.IdleRSS.valid() && s.IdleRSS.Max < 30,
		})
	}
	if s := r.Store; s != nil {
		ts = append(ts, storeTargets(s)...)
	}
	return ts
}

// kindsOrder is the order client kinds are printed in.
var kindsOrder = []string{"new-conn-post", "keepalive-post", "default-get"}
