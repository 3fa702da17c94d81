package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// A method is a way to replace a running release of benchapp with a new
// one: agentd, or one of the alternatives it is compared with. Each serves
// one URL throughout.
type method interface {
	name() string
	// url is where clients send requests, the same across deploys.
	url() string
	// deploy replaces the running release with release i and returns once
	// the old one has exited, as `hctl deploy` does.
	deploy(i int) (deployStat, error)
	// close stops everything the method started.
	close()
}

// deployStat is what one deploy took. Times in seconds.
type deployStat struct {
	// Switch is from the start of the new release to the moment clients
	// are sent to it and the old one is told to stop (agentd: preboot to
	// cutover, its own switch_seconds). For stop-then-start it is from the
	// stop to the new process being ready: the outage.
	Switch float64 `json:"switch"`
	// Boot is the app's own boot: from its initialisation (in the new
	// process, after the Go runtime started) to READY.
	Boot float64 `json:"boot"`
	// Exec is from the start of the process (when the starter's fork and
	// exec returned) to the app's initialisation: for agentd the exec
	// shim, bash and the app's exec; then the Go runtime's start.
	Exec float64 `json:"exec"`
	// Drain is how long the old release took to exit after it was told to
	// stop.
	Drain float64 `json:"drain"`
	// Direct is the app's own boot as the alternatives see it: from the
	// fork of the app's binary, started directly (no shim, no shell) under
	// the same load, to READY. For agentd it is measured right after each
	// deploy; for the others it is Exec + Boot of the deploy itself.
	Direct float64 `json:"direct"`
	// DirectExec is the part of Direct before the app's initialisation:
	// fork, exec, the Go runtime.
	DirectExec float64 `json:"direct_exec"`
	// Wall is the whole deploy as the caller waited for it (for agentd it
	// includes hctl's start, sending the artifact and agentd's prepare).
	Wall   float64 `json:"wall"`
	Killed int     `json:"killed,omitempty"`
	// Mode is the load it ran under; At and End are when it started and
	// ended, in seconds since that load started (to place failures, whose
	// times are on the same clock).
	Mode string  `json:"mode"`
	At   float64 `json:"at"`
	End  float64 `json:"end"`
	// Prepare is agentd's prepare phase: receiving, unpacking and
	// digesting the artifact, before anything starts.
	Prepare float64 `json:"prepare,omitempty"`
}

// Overhead is what the switch took beyond the app's own boot: beyond the
// time the same app takes from being started directly to READY.
func (d deployStat) Overhead() float64 { return d.Switch - d.Direct }

// Around is the switcher's own work around the new process: the switch
// less the process's start (Exec) and the app's boot.
func (d deployStat) Around() float64 { return d.Switch - d.Exec - d.Boot }

// hctl's operations (deploy, scale, config set) wait without a bound by
// default; the benchmark bounds each so that a stuck agentd ends the run
// with an error instead of hanging it.
const (
	opTimeout      = "--timeout"
	opTimeoutValue = "3m"
)

// agentdMethod deploys through a real agentd and hctl.
type agentdMethod struct {
	ag     *harness.Agentd
	bin    string // benchapp, for the direct-boot baseline
	dir    string
	app    string
	art    *artifact
	addr   string
	client *http.Client // the control API, for ps
}

// newAgentdMethod creates app on ag with a loopback socket and deploys its
// first release. bootDelay, if set, becomes the app's BOOT_DELAY.
func newAgentdMethod(ag *harness.Agentd, bins binaries, dir, app string, bootDelay time.Duration) (*agentdMethod, error) {
	m := &agentdMethod{ag: ag, app: app, bin: bins.BenchApp, dir: mkdir(dir, "direct"), client: unixClient(ag.Socket)}
	if r := ag.Hctl("apps", "create", app, "--socket", "web=tcp://127.0.0.1:0", "--readiness", "web=notify", "--allow-root"); r.Code != 0 {
		return nil, fmt.Errorf("apps create: %s", r)
	}
	var info api.AppInfo
	if r := ag.HctlJSON(&info, "apps", "info", app); r.Code != 0 {
		return nil, fmt.Errorf("apps info: %s", r)
	}
	m.addr = info.Sockets[0].Bound
	if bootDelay > 0 {
		if r := ag.Hctl(opTimeout, opTimeoutValue, "config", "set", app, "BOOT_DELAY="+bootDelay.String()); r.Code != 0 {
			return nil, fmt.Errorf("config set: %s", r)
		}
	}
	var err error
	if m.art, err = newArtifact(filepath.Join(dir, "artifact-"+app), "web: ./benchapp\n", "benchapp", bins.BenchApp); err != nil {
		return nil, err
	}
	if _, err := m.deploy(0); err != nil {
		return nil, fmt.Errorf("first deploy: %w", err)
	}
	return m, nil
}

func (m *agentdMethod) name() string { return "agentd" }
func (m *agentdMethod) url() string  { return "http://" + m.addr + "/" }
func (m *agentdMethod) close()       {}

func (m *agentdMethod) deploy(i int) (deployStat, error) {
	art, err := m.art.write(i)
	if err != nil {
		return deployStat{}, err
	}
	t0 := time.Now()
	var res api.OpResult
	r := m.ag.HctlJSON(&res, opTimeout, opTimeoutValue, "deploy", m.app, art, "-m", fmt.Sprintf("bench %d", i))
	wall := time.Since(t0)
	if r.Code != 0 || !res.OK || !res.Changed {
		return deployStat{}, fmt.Errorf("deploy %d: %s", i, r)
	}
	st := deployStat{Switch: res.SwitchSeconds, Drain: res.DrainSeconds, Wall: wall.Seconds(), Killed: len(res.Killed)}
	for _, ph := range res.Phases {
		if ph.Name == api.PhasePrepare {
			st.Prepare = ph.Seconds
		}
	}
	ps, err := apiProcs(m.client, m.app)
	if err != nil {
		return deployStat{}, err
	}
	n := 0
	for _, p := range ps {
		if p.Release != res.Release {
			continue
		}
		initNS, readyNS := parseStatusTimes(p.Status)
		if initNS == 0 || readyNS == 0 {
			return deployStat{}, fmt.Errorf("%s %s: no boot times in its status %q", p.Release, p.Name, p.Status)
		}
		n++
		st.Boot = max(st.Boot, time.Duration(readyNS-initNS).Seconds())
		st.Exec = max(st.Exec, time.Unix(0, initNS).Sub(p.StartedAt).Seconds())
	}
	if n == 0 {
		return deployStat{}, fmt.Errorf("deploy %d: no process of %s in hctl ps", i, res.Release)
	}
	// The baseline, at the same moment under the same load: the same app
	// started directly, from fork to READY.
	port, err := freePort()
	if err != nil {
		return deployStat{}, err
	}
	p, err := startApp(m.bin, m.dir, appEnv(i, port, "port", 0), 30*time.Second)
	if err != nil {
		return deployStat{}, fmt.Errorf("direct start: %w", err)
	}
	st.Direct, st.DirectExec = p.readyAt.Sub(p.startAt).Seconds(), p.exec().Seconds()
	p.stop(syscall.SIGTERM, 10*time.Second)
	return st, nil
}

// plainMethod is what `systemctl restart` does to a service that binds its
// own port: stop the old process (SIGTERM, wait for its exit), then start
// the new one. Nothing listens in between.
type plainMethod struct {
	bin, dir  string
	port      int
	cur       *appProc
	bootDelay time.Duration
}

func newPlainMethod(bins binaries, dir string, bootDelay time.Duration) (*plainMethod, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &plainMethod{bin: bins.BenchApp, dir: dir, port: port, bootDelay: bootDelay}
	if m.cur, err = m.start(0); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *plainMethod) start(i int) (*appProc, error) {
	return startApp(m.bin, m.dir, appEnv(i, m.port, "port", m.bootDelay), 30*time.Second)
}

func (m *plainMethod) name() string { return "stop-then-start" }
func (m *plainMethod) url() string  { return fmt.Sprintf("http://127.0.0.1:%d/", m.port) }

func (m *plainMethod) deploy(i int) (deployStat, error) {
	t0 := time.Now()
	drain, killed := m.cur.stop(syscall.SIGTERM, 30*time.Second)
	p, err := m.start(i)
	if err != nil {
		return deployStat{}, err
	}
	m.cur = p
	st := deployStat{
		Switch: p.readyAt.Sub(t0).Seconds(), Boot: p.boot().Seconds(), Exec: p.exec().Seconds(),
		Direct: p.readyAt.Sub(p.startAt).Seconds(), DirectExec: p.exec().Seconds(), Drain: drain.Seconds(), Wall: time.Since(t0).Seconds(),
	}
	if killed {
		st.Killed = 1
	}
	return st, nil
}

func (m *plainMethod) close() {
	if m.cur != nil {
		m.cur.stop(syscall.SIGTERM, 30*time.Second)
	}
}

// reuseportMethod starts the new process beside the old one on a second
// socket bound to the same port with SO_REUSEPORT, then stops the old one.
// The kernel spreads new connections over both sockets; connections still
// queued on the old socket when it closes are reset.
type reuseportMethod struct {
	plainMethod
}

func newReuseportMethod(bins binaries, dir string, bootDelay time.Duration) (*reuseportMethod, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &reuseportMethod{plainMethod{bin: bins.BenchApp, dir: dir, port: port, bootDelay: bootDelay}}
	if m.cur, err = m.start(0); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *reuseportMethod) start(i int) (*appProc, error) {
	return startApp(m.bin, m.dir, appEnv(i, m.port, "reuseport", m.bootDelay), 30*time.Second)
}

func (m *reuseportMethod) name() string { return "SO_REUSEPORT" }

func (m *reuseportMethod) deploy(i int) (deployStat, error) {
	t0 := time.Now()
	p, err := m.start(i)
	if err != nil {
		return deployStat{}, err
	}
	sw := time.Since(t0)
	drain, killed := m.cur.stop(syscall.SIGTERM, 30*time.Second)
	m.cur = p
	st := deployStat{
		Switch: sw.Seconds(), Boot: p.boot().Seconds(), Exec: p.exec().Seconds(),
		Direct: p.readyAt.Sub(p.startAt).Seconds(), DirectExec: p.exec().Seconds(), Drain: drain.Seconds(), Wall: time.Since(t0).Seconds(),
	}
	if killed {
		st.Killed = 1
	}
	return st, nil
}

// appEnv is benchapp's environment outside agentd.
func appEnv(i, port int, listen string, bootDelay time.Duration) []string {
	env := []string{"PORT=" + strconv.Itoa(port), "BENCH_LISTEN=" + listen, "AGENTD_RELEASE=v" + strconv.Itoa(i), "AGENTD_PROCESS=web.1"}
	if bootDelay > 0 {
		env = append(env, "BOOT_DELAY="+bootDelay.String())
	}
	return env
}
