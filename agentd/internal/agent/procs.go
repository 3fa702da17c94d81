package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/notify"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/rollout"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/sockets"
)

// procEnv builds a process's environment: a minimal base, the release's
// config vars, then agentd's own variables, which config cannot override.
func (ag *Agent) procEnv(a *app, r *releaseState, name string) ([]string, error) {
	env := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG": "C.UTF-8",
	}
	if v := os.Getenv("PATH"); v != "" {
		env["PATH"] = v
	}
	home := os.Getenv("HOME")
	if a.st.User != "" {
		u, err := lookupUser(a.st.User)
		if err != nil {
			return nil, err
		}
		home = u.HomeDir
		env["USER"], env["LOGNAME"] = u.Username, u.Username
	}
	if home != "" {
		env["HOME"] = home
	}
	// The release tree is read-only: HOME and TMPDIR point into the app's
	// data directory, which the config may override.
	data, err := ag.DataEnv(a.st.Name, a.st.User)
	if err != nil {
		return nil, err
	}
	for _, kv := range data {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range r.Config {
		env[k] = v
	}
	for _, h := range a.held {
		if p := h.Port(); p != 0 {
			env["PORT"] = strconv.Itoa(p)
			break
		}
	}
	env["AGENTD_APP"] = a.st.Name
	env["AGENTD_RELEASE"] = vname(r.Version)
	env["AGENTD_PROCESS"] = name
	// Only the shim may set LISTEN_PID; stale activation variables from
	// agentd's own environment must not leak into apps.
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"} {
		delete(env, k)
	}
	out := make([]string, 0, len(env)+1)
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out, nil
}

func credential(userName string) (*syscall.Credential, error) {
	if userName == "" {
		return nil, nil
	}
	u, groups, err := lookupUserGroups(userName)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == os.Geteuid() {
		return nil, nil
	}
	// The supplementary groups are the user's own (as initgroups(3) gives
	// them), never inherited from agentd (root's groups).
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, nil
}

func randomID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startProc starts process typ.index of release r, held in the exec shim:
// it runs no code of the app until the caller has recorded it and calls
// p.p.Release (host.flush records a whole batch with one write). It does
// not wait for readiness. Callers must not hold a.mu.
func (ag *Agent) startProc(a *app, r *releaseState, typ string, index int) (*proc, error) {
	command, ok := r.Procfile[typ]
	if !ok {
		return nil, fmt.Errorf("release %s has no process type %q", vname(r.Version), typ)
	}
	return ag.spawn(a, r, typ, index, sockets.ShellArgv(command), nil)
}

// spawn starts argv as process typ.index of release r, as startProc says;
// extraEnv is added to its environment. The maintenance responder
// (rollout.Responder) gets every socket of the app, other types their own.
func (ag *Agent) spawn(a *app, r *releaseState, typ string, index int, argv, extraEnv []string) (*proc, error) {
	pr := &proc{typ: typ, index: index, release: r.Version, state: api.StateStarting, extend: make(chan time.Duration, 1)}
	pr.startT.began = time.Now()
	name := pr.name()
	dir, err := ag.codeDir(a, r)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	env, err := ag.procEnv(a, r, name)
	var files []*os.File
	var names []string
	for _, h := range a.held {
		if h.Spec.Type == typ || typ == rollout.Responder {
			s, serr := ag.socketFor(a, h, r.Version)
			if serr != nil && err == nil {
				err = serr
			}
			if serr == nil {
				files = append(files, s.File)
				names = append(names, h.Spec.Name)
			}
		}
	}
	kind := a.readinessFor(r.Version, typ)
	// Liveness checks of app.json probe the same private socket.
	probeLive := livenessNeedsProbe(r, typ)
	userName := a.st.User
	shimOpt := a.shimOptions(0)
	drainTimeout := time.Duration(a.st.DrainTimeout)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	cred, err := credential(userName)
	if err != nil {
		return nil, err
	}
	if kind.NeedsProbe() || probeLive {
		if pr.probe, err = readiness.NewProbe(); err != nil {
			return nil, err
		}
		files = append(files, pr.probe.File)
		names = append(names, "probe")
	}
	// Held until recorded, the process sends nothing before pr is whole.
	pr.ns, err = notify.ListenFunc(filepath.Join(ag.cfg.notifyDir(), a.st.Name+"-"+randomID()), ag.notified(a, pr))
	if err != nil {
		pr.closeFiles()
		return nil, fmt.Errorf("notify socket for %s: %w", name, err)
	}
	if cred != nil {
		// The app's user must be able to send to its notify socket.
		os.Chown(pr.ns.Path(), int(cred.Uid), int(cred.Gid))
	}
	env = append(env, extraEnv...)
	env = append(env, "NOTIFY_SOCKET="+pr.ns.Path())
	logDir := filepath.Join(ag.cfg.logsDir(), a.st.Name)
	os.MkdirAll(logDir, 0o750)
	pr.log = filepath.Join(logDir, vname(r.Version)+"."+name+".log")
	out, err := os.OpenFile(pr.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		pr.closeFiles()
		return nil, fmt.Errorf("log file for %s: %w", name, err)
	}
	defer out.Close()
	shimOpt.GuardFDs = len(files)
	spec := supervisor.Spec{
		Shim: ag.cfg.Shim, Argv: argv, Dir: dir,
		Env: env, Files: files, Names: names, Output: out, Credential: cred, ShimOptions: shimOpt,
		// Until it is recorded: an agentd that dies first leaves nothing
		// running that nobody knows of (the shim exits, ExitNotReleased).
		Held: true,
	}
	if sc := ag.cfg.Scopes; sc != nil {
		// Placed while the shim holds it, before it runs any app code.
		// A failure leaves it in agentd's own cgroup, still supervised.
		spec.Place = func(pid int) {
			t := time.Now()
			defer func() { pr.startT.place = time.Since(t) }()
			if err := sc.Place(a.st.Name, r.Version, pid, drainTimeout); err != nil {
				ag.log.Warn("release cgroup", "app", a.st.Name, "process", name, "err", err)
			}
		}
	}
	forkAt := time.Now()
	pr.startT.setup = forkAt.Sub(pr.startT.began)
	pr.p, err = supervisor.Start(spec)
	pr.startT.started = time.Now()
	pr.startT.fork = pr.startT.started.Sub(forkAt) - pr.startT.place
	if err != nil {
		pr.closeFiles()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	ag.log.Info("process started", "app", a.st.Name, "release", vname(r.Version), "process", name, "pid", pr.p.PID())
	pr.notifyPath = pr.ns.Path()
	a.mu.Lock()
	a.procs = append(a.procs, pr)
	a.mu.Unlock()
	pr.p.OnExit(func() { ag.watchExit(a, pr, r) })
	return pr, nil
}

// releaseRecorded lets held processes exec their app, once their record
// is where a restarted agentd would read it (host.flush).
func (ag *Agent) releaseRecorded(a *app, ps []*proc) {
	for _, p := range ps {
		if err := p.p.Release(); err != nil {
			ag.log.Warn("releasing a held process", "app", a.st.Name, "process", p.name(), "err", err)
			continue
		}
		p.startT.released = time.Now()
	}
}

func (p *proc) probeAddr() string {
	if p.probe == nil {
		return ""
	}
	return p.probe.Addr
}

func (p *proc) closeFiles() {
	if p.ns != nil {
		p.ns.Close()
	}
	if p.probe != nil {
		p.probe.Close()
	}
}

// attachNotify binds the notify socket of an adopted process again at the
// path the process knows. After an upgrade the previous agentd still holds
// it until it exits, so binding is retried until then; a process still
// booting is waited for once its socket is back.
func (ag *Agent) attachNotify(a *app, p *proc) {
	if p.notifyPath == "" {
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range 3000 {
		ns, err := notify.ListenFunc(p.notifyPath, ag.notified(a, p))
		if err == nil {
			a.mu.Lock()
			p.ns = ns
			starting := p.state == api.StateStarting
			kind := a.readinessOf(p.typ)
			boot := time.Duration(a.st.BootTimeout)
			a.mu.Unlock()
			if starting {
				if err := ag.waitReady(context.Background(), a, p, kind, boot); err != nil {
					// Its READY=1 may have gone to the agentd that died: it
					// is replaced the zero-downtime way, not left starting.
					ag.log.Warn("adopted process not ready: replacing it", "app", a.st.Name, "process", p.name(), "err", err)
					if !p.p.Exited() {
						ag.drain(a, []*proc{p}, nil)
					}
					ag.reconcile(a, nil)
				} else {
					ag.saveReady(a)
				}
			}
			if p.p.Exited() {
				ns.Close()
			}
			return
		}
		select {
		case <-p.p.Done():
			return
		case <-tick.C:
		}
	}
}

// notified returns what takes p's notify messages, on its socket's reading
// goroutine (notify.ListenFunc): with 400 processes, a goroutine of its
// own per process was about 2 MiB of agentd's RSS.
func (ag *Agent) notified(a *app, p *proc) func(notify.Message) {
	// It takes no lock: a.mu's holder may be closing this very socket,
	// which waits for its reader.
	return func(m notify.Message) {
		p.notified.Add(1)
		if m.Status != "" {
			p.status.Store(&m.Status)
		}
		if m.WatchdogTrigger {
			select {
			case <-p.trigger.C(): // fired already: once is enough
			default:
				ag.log.Warn("process sent WATCHDOG=trigger", "app", a.st.Name, "process", p.name())
				p.trigger.Fire()
			}
		}
		if m.ExtendTimeout > 0 {
			select {
			case p.extend <- m.ExtendTimeout:
			default:
			}
		}
	}
}

// watchExit records a process's end and restarts it with backoff if it
// crashed while serving the active release. It runs once the process has
// exited (Process.OnExit).
func (ag *Agent) watchExit(a *app, p *proc, r *releaseState) {
	<-p.p.Done()
	// Its last lines, a last one without newline included.
	ag.forward(a.st.Name, p, true)
	ex := p.p.Exit()
	a.mu.Lock()
	defer a.mu.Unlock()
	p.closeFiles()
	wasReady := p.state == api.StateReady
	if ex.Code == sockets.ExitNotReleased {
		// Never ran: it was given up before it was recorded.
		p.state, p.retired = api.StateExited, true
		ag.save(a)
		return
	}
	if p.retired || p.state == api.StateDraining {
		p.state = api.StateExited
		ag.save(a)
		return
	}
	p.state = api.StateCrashed
	ag.log.Warn("process ended", "app", a.st.Name, "release", vname(p.release), "process", p.name(), "pid", p.p.PID(), "how", ex.String())
	// A serving process whose accept failed because a socket was shut
	// under it: the socket must listen again before anything restarts.
	ag.rearm(a)
	if c := a.st.Canary; c != nil && c.Release == p.release && wasReady && !a.gone {
		ag.canaryCrashed(a, c)
		ag.save(a)
		return
	}
	if !wasReady || a.gone || r == nil || p.release != a.st.Active || a.st.Formation == nil {
		ag.save(a)
		return
	}
	// Crash restart with backoff; a new release starts new processes
	// with a fresh count.
	ag.scheduleRestart(a, p.typ, p.index, p.restarts)
	ag.save(a)
}

func (ag *Agent) restartCrashed(a *app, typ string, index, restarts int) {
	if ag.frozen.Load() {
		// A new agentd is taking over: it restarts what it finds crashed.
		return
	}
	name := fmt.Sprintf("%s.%d", typ, index)
	o := ag.newOp(a, "crash", func(api.Event) {})
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	delete(a.backoff, name)
	r := a.release(a.st.Active)
	still := !a.gone && r != nil && index <= a.count(typ) && r.Procfile[typ] != ""
	mt, maint := a.maintenanceTarget()
	if maint {
		// In maintenance only the responder runs: it is the one restarted.
		still = !a.gone && typ == rollout.Responder
	}
	for _, p := range a.liveProcs(a.st.Active, []string{typ}) {
		if p.index == index {
			still = false // the rollout in the meantime replaced it
		}
	}
	if !still || ag.frozen.Load() {
		a.mu.Unlock()
		return
	}
	t := mt
	if !maint {
		t = rollout.Target{Release: r.Version, Previous: r.Version, Types: []string{typ}, Formation: map[string]int{typ: a.count(typ)}}
	}
	o.restarts = map[string]int{name: restarts}
	o.record(r.Version)
	a.mu.Unlock()
	ag.obs.CrashRestart(a.st.Name, typ)
	if res := o.rollout(nil, t); !res.OK {
		ag.log.Warn("crash restart failed", "app", a.st.Name, "process", name, "err", res.Error)
		a.mu.Lock()
		ag.scheduleRestart(a, typ, index, restarts)
		a.mu.Unlock()
	}
}

// scheduleRestart restarts process TYPE.INDEX of the active release after
// an exponential backoff: 1s, 2s, 4s … 5 min, by how often it was
// restarted already. Callers hold a.mu.
func (ag *Agent) scheduleRestart(a *app, typ string, index, restarts int) {
	name := fmt.Sprintf("%s.%d", typ, index)
	if a.gone {
		return
	}
	if t, ok := a.backoff[name]; ok {
		t.Stop()
	}
	delay := min(time.Second<<min(restarts, 9), 5*time.Minute)
	ag.log.Info("restarting crashed process", "app", a.st.Name, "process", name, "in", delay)
	a.backoff[name] = time.AfterFunc(delay, func() { ag.restartCrashed(a, typ, index, restarts+1) })
}

// saveReady records on disk that a process outside a deploy (a crash
// restart, an adopted one still booting) became ready. A process says
// READY=1 once: an agentd that restarts after it did so learns it only
// from the state, and would otherwise list the process as starting for
// good and not restart it when it crashes. (A deploy saves at its end.)
func (ag *Agent) saveReady(a *app) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.gone { // a destroyed app's file must stay deleted
		ag.save(a)
	}
}

var errBootTimeout = errors.New("not ready within the boot timeout")

// waitReady waits for p to become ready by kind within boot, which the
// process may extend with EXTEND_TIMEOUT_USEC.
func (ag *Agent) waitReady(parent context.Context, a *app, p *proc, kind readiness.Kind, boot time.Duration) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	done := make(chan error, 1)
	a.mu.Lock()
	r := a.release(p.release)
	var env []string
	if r != nil { // gone from the list (an interrupted release, pruned): no exec check can run
		env, _ = ag.procEnv(a, r, p.name())
	}
	userName := a.st.User
	a.mu.Unlock()
	// An exec check runs code of the release: as the app's user.
	cred, _ := credential(userName)
	dir := ""
	if kind.Name == "exec" && r != nil {
		dir, _ = ag.codeDir(a, r)
	}
	go func() {
		done <- readiness.Wait(ctx, kind, readiness.Target{
			Probe: p.probe, Notified: p.ns.Ready(), Exited: p.p.Done(), StartedAt: p.p.StartedAt(),
			Dir: dir, Env: env, Credential: cred,
		})
	}()
	// What the process does with its sockets, to fail it early when it
	// can never become ready, and to say why when it fails (traps.go).
	traps := ag.watchTraps(ctx, a, p)
	deadline := p.p.StartedAt().Add(boot)
	ceiling := bootCeiling(p.p.StartedAt(), boot)
	var extended *bootTimeoutError
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case err := <-done:
			if err == nil {
				a.mu.Lock()
				if p.state == api.StateStarting {
					p.state = api.StateReady
				}
				p.readyAt = time.Now()
				a.mu.Unlock()
				// agentd keeps its copy of the probe socket: a bake window
				// probes it again (bake.go); it closes with the process.
				ag.obs.ProcessReady(a.st.Name, p.typ, p.readyAt.Sub(p.p.StartedAt()))
			}
			return traps.explain(err)
		case te := <-traps.sure:
			cancel()
			<-done
			return te
		case d := <-p.extend:
			if nd := time.Now().Add(d); nd.After(deadline) {
				if extended == nil {
					extended = &bootTimeoutError{}
				}
				if nd.After(ceiling) {
					nd, extended.capped = ceiling, true
				}
				deadline = nd
				extended.extendedTo = deadline.Sub(p.p.StartedAt())
				timer.Reset(time.Until(deadline))
			}
		case <-timer.C:
			cancel()
			<-done
			if extended != nil {
				return traps.explain(extended)
			}
			return traps.explain(errBootTimeout)
		}
	}
}
