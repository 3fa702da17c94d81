package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
	"github.com/agentd/agentd/agentd/internal/procfile"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/sockets"
)

// op is one operation on an app (deploy, rollback, restart, scale, config
// change): it times its phases and emits progress events.
type op struct {
	ag   *Agent
	a    *app
	kind string
	emit func(api.Event)

	start      time.Time
	phase      string
	phaseStart time.Time
	phases     []api.Phase
	res        api.OpResult
}

func (ag *Agent) newOp(a *app, kind string, emit func(api.Event)) *op {
	now := time.Now()
	return &op{ag: ag, a: a, kind: kind, emit: emit, start: now, res: api.OpResult{App: a.st.Name}}
}

func (o *op) event(typ, process, msg string) {
	o.emit(api.Event{Time: time.Now().UTC(), Type: typ, Phase: o.phase, Process: process, Message: msg})
}

func (o *op) info(format string, args ...any) { o.event("info", "", fmt.Sprintf(format, args...)) }

// pause is a test-only hook: with agentd's test pause set to point, a
// release whose message contains "[pause]" stops here for good, so a test
// can kill agentd at that instant.
func (o *op) pause(point string, r *releaseState) {
	if o.ag.cfg.TestPause != point || r == nil || !strings.Contains(r.Message, "[pause]") {
		return
	}
	o.ag.log.Warn("test pause", "point", point, "app", o.a.st.Name)
	o.info("test pause at %s", point)
	select {}
}

// enter ends the current phase and starts the next one.
func (o *op) enter(phase, format string, args ...any) {
	o.endPhase()
	o.phase, o.phaseStart = phase, time.Now()
	o.event("phase", "", fmt.Sprintf(format, args...))
	o.ag.log.Info("phase", "app", o.a.st.Name, "op", o.kind, "phase", phase)
}

func (o *op) endPhase() {
	if o.phase != "" {
		o.phases = append(o.phases, api.Phase{Name: o.phase, Seconds: time.Since(o.phaseStart).Seconds()})
		o.phase = ""
	}
}

// record marks the operation in the app's state so that a restarted agentd
// knows it was interrupted. Callers hold a.mu.
func (o *op) record(release int) {
	o.a.st.Op = &opRecord{Kind: o.kind, Release: release, Phase: o.phase, Started: o.start}
	o.ag.save(o.a)
}

// finish completes the result, and emits it as the last event.
func (o *op) finish(err error) api.OpResult {
	o.endPhase()
	o.res.Phases = o.phases
	if err != nil {
		o.res.OK = false
		o.res.Error = err.Error()
		o.res.Code = api.CodeDeployFailed
		var ae *Error
		if errors.As(err, &ae) {
			o.res.Code = ae.Code
		}
	} else {
		o.res.OK = true
	}
	result := "ok"
	if !o.res.OK {
		result = "failed"
	}
	if o.kind != "boot" {
		o.ag.obs.DeployDone(o.a.st.Name, o.kind, result, o.phases)
		o.ag.lastOp.Store(fmt.Sprintf("%s %s %s %s at %s", o.a.st.Name, o.kind, o.res.Release, result, time.Now().Format("15:04:05")))
	}
	res := o.res
	o.emit(api.Event{Time: time.Now().UTC(), Type: "result", Message: result, Result: &res})
	o.ag.memory.opEnded()
	return res
}

// lock takes the app's operation lock, telling the client when it has to
// wait for another operation.
func (o *op) lock() {
	select {
	case o.a.op <- struct{}{}:
		return
	default:
	}
	o.info("waiting for the operation in progress on %s to finish", o.a.st.Name)
	o.a.op <- struct{}{}
}

func (o *op) unlock() { <-o.a.op }

// DeployRequest asks for a new release from an artifact.
type DeployRequest struct {
	App              string
	Artifact         io.Reader // .tar.gz
	Message          string
	SkipReleasePhase bool
	ReleaseID        string
	DeployedBy       string
}

// Deploy prepares a new release from the artifact and switches the app to
// it. It blocks until the switch is done or has failed; emit receives the
// progress, the last event being the result.
func (ag *Agent) Deploy(req DeployRequest, emit func(api.Event)) api.OpResult {
	a, err := ag.get(req.App)
	if err != nil {
		return failNoApp(req.App, err, emit)
	}
	o := ag.newOp(a, "deploy", emit)
	// The upload is received before the app's operation lock is taken: a
	// slow or stuck client then holds up nobody but itself, and bad input
	// fails before anything waits on it.
	o.enter(api.PhasePrepare, "receiving and unpacking the artifact")
	digest, err := ag.unpack(req.Artifact)
	if err != nil {
		return o.finish(errf(api.CodeBadRequest, "prepare: %v", err))
	}
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	if act := a.release(a.st.Active); act != nil && maps.Equal(act.Config, a.st.Config) &&
		((req.ReleaseID != "" && act.ReleaseID == req.ReleaseID) || (req.ReleaseID == "" && act.Digest == digest)) {
		a.mu.Unlock()
		o.info("%s %s has this very content already: nothing to do", a.st.Name, vname(act.Version))
		o.res.Release, o.res.Previous = vname(act.Version), vname(act.Version)
		return o.finish(nil)
	}
	r := ag.newRelease(a, digest, "deploy", maps.Clone(a.st.Config))
	r.Message, r.ReleaseID, r.DeployedBy = req.Message, req.ReleaseID, req.DeployedBy
	o.record(r.Version)
	a.mu.Unlock()
	o.res.Release = vname(r.Version)

	pf, err := procfile.ParseFile(filepath.Join(ag.cfg.slugDir(digest), "Procfile"))
	if err != nil {
		return o.fail(r, fmt.Errorf("prepare: %w", err))
	}
	a.mu.Lock()
	r.Procfile, r.Order = pf.Map(), pf.Types()
	ag.save(a)
	a.mu.Unlock()
	o.info("release %s: process types %s, digest %s", vname(r.Version), strings.Join(r.Order, ", "), shortDigest(digest))
	o.pause("prepare", r)
	return o.rollout(r, !req.SkipReleasePhase, nil)
}

func failNoApp(name string, err error, emit func(api.Event)) api.OpResult {
	res := api.OpResult{App: name, Error: err.Error(), Code: api.CodeNotFound}
	emit(api.Event{Time: time.Now().UTC(), Type: "result", Message: "failed", Result: &res})
	return res
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	return d[:min(12, len(d))]
}

// unpack stores the artifact as a slug named by its content digest.
func (ag *Agent) unpack(r io.Reader) (string, error) {
	if r == nil {
		return "", errors.New("no artifact")
	}
	tmp := filepath.Join(ag.cfg.slugsDir(), "tmp-"+randomID())
	if err := artifact.Unpack(r, tmp, artifact.Limits{MaxBytes: ag.cfg.MaxArtifactBytes}); err != nil {
		return "", err
	}
	// A process of another app forked while a file here was open for
	// writing could still hold it, and the release's exec would fail with
	// ETXTBSY: wait until every such fork has exec'd.
	supervisor.ForkFence()
	digest, err := artifact.Digest(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	dst := ag.cfg.slugDir(digest)
	if _, err := os.Stat(dst); err == nil {
		// Same content as a slug we have: keep the one in use.
		os.RemoveAll(tmp)
		return digest, nil
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		// Two uploads of the same content, unpacked side by side: the one
		// that renamed first left the slug we want (rename(2) onto a
		// non-empty directory fails), so this one is a success too.
		if _, serr := os.Stat(dst); serr == nil {
			return digest, nil
		}
		return "", fmt.Errorf("storing slug %s: %w", shortDigest(digest), err)
	}
	return digest, nil
}

// newRelease records a new pending release. Callers hold a.mu.
func (ag *Agent) newRelease(a *app, digest, source string, config map[string]string) *releaseState {
	a.st.LastVersion++
	r := &releaseState{
		Version: a.st.LastVersion, Status: api.StatusPending, Source: source, Digest: digest,
		Config: config, CreatedAt: time.Now().UTC(),
	}
	a.st.Releases = append(a.st.Releases, r)
	return r
}

// fail marks r failed with err and ends the operation.
func (o *op) fail(r *releaseState, err error) api.OpResult {
	o.a.mu.Lock()
	if r != nil && r.Status != api.StatusActive {
		r.Status = api.StatusFailed
		r.Error = err.Error()
		o.endPhase()
		r.Phases = o.phases
	}
	o.a.st.Op = nil
	o.ag.save(o.a)
	o.a.mu.Unlock()
	if act := o.a.st.Active; act != 0 {
		err = fmt.Errorf("%w (%s keeps serving)", err, vname(act))
		o.res.Previous = vname(act)
	}
	o.ag.log.Warn("operation failed", "app", o.a.st.Name, "op", o.kind, "err", err)
	return o.finish(err)
}

// rollout switches the app to release r: the release phase (if asked and
// the Procfile has one), preboot of the formation of the given types (all
// when nil) beside the old processes, readiness of every new process,
// cutover, and the drain of the old processes.
func (o *op) rollout(r *releaseState, releasePhase bool, types []string) api.OpResult {
	ag, a := o.ag, o.a
	a.mu.Lock()
	prev := a.st.Active
	if prev != 0 {
		o.res.Previous = vname(prev)
	}
	a.mu.Unlock()

	if cmd, ok := r.Procfile["release"]; ok && releasePhase {
		o.enter(api.PhaseRelease, "running the release command: %s", cmd)
		a.mu.Lock()
		r.Status = api.StatusReleasing
		o.record(r.Version)
		a.mu.Unlock()
		if err := ag.runRelease(a, r, cmd, o); err != nil {
			return o.fail(r, fmt.Errorf("release phase: %w", err))
		}
	}

	started, err := o.preboot(r, types)
	if err != nil {
		return o.fail(r, o.stopNew(started, err))
	}
	o.pause("preboot", r)
	if err := o.awaitReady(started); err != nil {
		return o.fail(r, o.stopNew(started, err))
	}
	o.res.SwitchSeconds = time.Since(o.phaseStartOf(api.PhasePreboot)).Seconds()

	o.enter(api.PhaseCutover, "%s is ready: sending SIGTERM to the old processes", vname(r.Version))
	a.mu.Lock()
	newSet := map[*proc]bool{}
	for _, p := range started {
		newSet[p] = true
	}
	var old []*proc
	for _, p := range a.procs {
		if newSet[p] || (types != nil && !slices.Contains(types, p.typ)) {
			continue
		}
		if t, ok := a.backoff[p.name()]; ok {
			t.Stop()
			delete(a.backoff, p.name())
		}
		if !p.p.Exited() && !p.retired {
			old = append(old, p)
		}
		p.retired = true
	}
	if r.Version != prev {
		if pr := a.release(prev); pr != nil {
			pr.Status = api.StatusRetired
		}
		a.st.Active = r.Version
		a.st.Config = maps.Clone(r.Config)
	}
	r.Status = api.StatusActive
	r.Error = ""
	o.record(r.Version)
	a.mu.Unlock()
	ag.obs.ActiveRelease(a.st.Name, vname(r.Version))
	o.res.Changed = true
	o.pause("cutover", r)

	o.enter(api.PhaseDrain, "draining %d old process(es), SIGKILL after %s", len(old), time.Duration(a.st.DrainTimeout))
	d, killed := ag.drain(a, old, o)
	o.res.DrainSeconds, o.res.Killed = d.Seconds(), killed
	o.endPhase()
	a.mu.Lock()
	r.Phases = o.phases
	a.st.Op = nil
	ag.prune(a)
	ag.save(a)
	a.mu.Unlock()
	o.info("%s %s is live (switch %.2fs, drain %.2fs)", a.st.Name, vname(r.Version), o.res.SwitchSeconds, d.Seconds())
	return o.finish(nil)
}

func (o *op) phaseStartOf(name string) time.Time {
	t := o.start
	for _, p := range o.phases {
		if p.Name == name {
			return t
		}
		t = t.Add(time.Duration(p.Seconds * float64(time.Second)))
	}
	return o.phaseStart
}

// preboot starts the formation of release r for types (all when nil).
func (o *op) preboot(r *releaseState, types []string) ([]*proc, error) {
	a := o.a
	a.mu.Lock()
	type slot struct {
		typ string
		n   int
	}
	var slots []slot
	total := 0
	for _, t := range r.Order {
		if types != nil && !slices.Contains(types, t) {
			continue
		}
		if n := a.count(t); n > 0 {
			slots = append(slots, slot{t, n})
			total += n
		}
	}
	missing := []string{}
	for _, h := range a.held {
		if _, ok := r.Procfile[h.Spec.Type]; !ok {
			missing = append(missing, h.Spec.Type)
		}
	}
	a.mu.Unlock()
	o.enter(api.PhasePreboot, "starting %d process(es) of %s beside the old ones", total, vname(r.Version))
	if len(missing) > 0 {
		o.info("warning: the Procfile has no %s process type, so nothing serves its socket", strings.Join(missing, ", "))
	}
	var started []*proc
	for _, s := range slots {
		for i := 1; i <= s.n; i++ {
			p, err := o.ag.startProc(a, r, s.typ, i)
			if err != nil {
				return started, err
			}
			started = append(started, p)
			o.event("process", p.name(), fmt.Sprintf("%s %s started (pid %d)", vname(r.Version), p.name(), p.p.PID()))
		}
	}
	return started, nil
}

// awaitReady waits for every process in ps; the first failure fails all.
func (o *op) awaitReady(ps []*proc) error {
	a := o.a
	a.mu.Lock()
	boot := time.Duration(a.st.BootTimeout)
	a.mu.Unlock()
	if len(ps) > 0 {
		o.enter(api.PhaseReadiness, "waiting for %d process(es) to become ready (boot timeout %s)", len(ps), boot)
	}
	errs := make(chan error, len(ps))
	var wg sync.WaitGroup
	for _, p := range ps {
		a.mu.Lock()
		kind := a.readinessOf(p.typ)
		a.mu.Unlock()
		wg.Go(func() {
			err := o.ag.waitReady(a, p, kind, boot)
			if err == nil {
				err = o.ag.checkSockets(a, p)
			}
			if err != nil {
				errs <- o.explain(p, kind, boot, err)
				return
			}
			o.event("process", p.name(), fmt.Sprintf("%s %s ready (%s) in %.2fs", vname(p.release), p.name(), kind, p.readyAt.Sub(p.p.StartedAt()).Seconds()))
			errs <- nil
		})
	}
	// Fail fast: the first failure stops the wait; the processes are
	// stopped by the caller, which ends the other waits.
	for range ps {
		if err := <-errs; err != nil {
			go func() { wg.Wait() }()
			return err
		}
	}
	wg.Wait()
	return nil
}

// explain turns a readiness failure into a message that says what went
// wrong, with the last lines the process wrote.
func (o *op) explain(p *proc, kind readiness.Kind, boot time.Duration, err error) error {
	var what string
	switch {
	case errors.Is(err, readiness.ErrExited):
		<-p.p.Done()
		what = fmt.Sprintf("%s %s before it was ready", p.name(), p.p.Exit())
	case errors.Is(err, errBootTimeout):
		what = fmt.Sprintf("%s was not ready (%s) within the boot timeout of %s%s", p.name(), kind, boot, describeBootTimeout(err))
	case strings.HasPrefix(err.Error(), p.name()):
		what = err.Error()
	default:
		what = fmt.Sprintf("%s: %v", p.name(), err)
	}
	tail := tailLines(p.log, 5)
	what += o.ag.hints(p, tail)
	if tail != "" {
		what += "; its last output:\n" + tail
	}
	return errors.New(what)
}

// stopNew stops processes of a release that failed to become ready. They
// may already have accepted connections on the shared socket, so they get
// the same SIGTERM and drain as any old process. It returns why, the
// failure, with the processes that had to be SIGKILLed.
func (o *op) stopNew(ps []*proc, why error) error {
	if len(ps) == 0 {
		return why
	}
	o.info("stopping the %d new process(es)", len(ps))
	_, killed := o.ag.drain(o.a, ps, o)
	if len(killed) > 0 {
		o.a.mu.Lock()
		timeout := time.Duration(o.a.st.DrainTimeout)
		o.a.mu.Unlock()
		why = fmt.Errorf("%w; then %s ignored SIGTERM and had to be SIGKILLed at the drain timeout of %s", why, strings.Join(killed, ", "), timeout)
	}
	return why
}

// runRelease runs the release command to completion, streaming its output.
func (ag *Agent) runRelease(a *app, r *releaseState, command string, o *op) error {
	a.mu.Lock()
	env, err := ag.procEnv(a, r, "release")
	userName := a.st.User
	shimOpt := a.shimOptions(0)
	releaseTimeout := ag.releaseTimeout(a)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	cred, err := credential(userName)
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	logDir := filepath.Join(ag.cfg.logsDir(), a.st.Name)
	os.MkdirAll(logDir, 0o750)
	logf, err := os.OpenFile(filepath.Join(logDir, vname(r.Version)+".release.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		pr.Close()
		pw.Close()
		return err
	}
	defer logf.Close()
	p, err := supervisor.Start(supervisor.Spec{
		Shim: ag.cfg.Shim, Argv: sockets.ShellArgv(command), Dir: ag.cfg.slugDir(r.Digest),
		Env: env, Output: pw, Credential: cred, ShimOptions: shimOpt,
	})
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	// Tracked like any process, so that an agentd restarted meanwhile
	// finds it and stops it with the interrupted deploy.
	rp := &proc{typ: "release", release: r.Version, p: p, state: api.StateStarting, retired: true, extend: make(chan time.Duration, 1)}
	a.mu.Lock()
	a.procs = append(a.procs, rp)
	ag.save(a)
	a.mu.Unlock()
	var tail []string
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		// agentd writes this log itself: past the log cap, lines are
		// streamed but no longer kept.
		kept, limit := int64(0), ag.maxLogBytes()
		for sc.Scan() {
			line := sc.Text()
			if kept < limit {
				n, _ := fmt.Fprintln(logf, line)
				if kept += int64(n); kept >= limit {
					fmt.Fprintf(logf, "agentd: the release command's output past %d bytes (the log cap) is not kept\n", limit)
				}
			}
			o.event("output", "release", line)
			if ag.cfg.Journal != nil {
				ag.sendLine(LineOrigin{App: a.st.Name, Release: vname(r.Version), Process: "release", PID: p.PID()}, line)
			}
			tail = append(tail, line)
			if len(tail) > 5 {
				tail = tail[1:]
			}
		}
		io.Copy(io.Discard, pr)
		pr.Close()
	}()
	timeout := time.NewTimer(releaseTimeout)
	defer timeout.Stop()
	select {
	case <-p.Done():
	case <-timeout.C:
		killed := p.Stop(10 * time.Second)
		endOutput(copied, pr)
		how := "was stopped (SIGTERM)"
		if killed {
			how = "ignored SIGTERM for 10s and was SIGKILLed"
		}
		return fmt.Errorf("%q did not finish within the release timeout of %s and %s", command, releaseTimeout, how)
	}
	endOutput(copied, pr)
	if ex := p.Exit(); ex.Code != 0 {
		msg := fmt.Sprintf("%q %s", command, ex)
		if len(tail) > 0 {
			msg += "; its last output:\n" + strings.Join(tail, "\n")
		}
		return errors.New(msg)
	}
	return nil
}

// tailLines returns the last n lines of a file, bounded to 4 KiB.
func tailLines(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4096
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max64(0, fi.Size()-max)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// RunReleasePhase runs only the release command of an artifact, with the
// app's current config, for fleets where migrations run once.
func (ag *Agent) RunReleasePhase(name string, art io.Reader, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "release-phase", emit)
	o.enter(api.PhasePrepare, "receiving and unpacking the artifact")
	digest, err := ag.unpack(art)
	if err != nil {
		return o.finish(errf(api.CodeBadRequest, "prepare: %v", err))
	}
	pf, err := procfile.ParseFile(filepath.Join(ag.cfg.slugDir(digest), "Procfile"))
	if err != nil {
		return o.finish(fmt.Errorf("prepare: %w", err))
	}
	cmd, ok := pf.Release()
	if !ok {
		o.info("the Procfile has no release command: nothing to run")
		return o.finish(nil)
	}
	a.mu.Lock()
	r := &releaseState{Version: a.st.LastVersion + 1, Digest: digest, Config: maps.Clone(a.st.Config), Procfile: pf.Map()}
	a.mu.Unlock()
	o.enter(api.PhaseRelease, "running the release command: %s", cmd)
	if err := ag.runRelease(a, r, cmd, o); err != nil {
		return o.finish(fmt.Errorf("release phase: %w", err))
	}
	o.res.Changed = true
	return o.finish(nil)
}

// Rollback makes a new release from an earlier one (its code and config)
// and deploys it the same way as any release, without a release phase.
// deployedBy names who asked, for the release's history.
func (ag *Agent) Rollback(name, version, deployedBy string, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "rollback", emit)
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	var target *releaseState
	if version != "" {
		v, err := parseVersion(version)
		if err != nil {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "%v", err))
		}
		target = a.release(v)
		if target == nil {
			a.mu.Unlock()
			return o.finish(errf(api.CodeNotFound, "app %s has no release %s (see `hctl releases %s`)", name, vname(v), name))
		}
	} else {
		for i := len(a.st.Releases) - 1; i >= 0; i-- {
			r := a.st.Releases[i]
			if r.Version < a.st.Active && r.Status == api.StatusRetired {
				target = r
				break
			}
		}
		if target == nil {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "app %s has no earlier release that served to roll back to", name))
		}
	}
	if target.Procfile == nil || target.Status == api.StatusFailed && target.Order == nil {
		a.mu.Unlock()
		return o.finish(errf(api.CodeBadRequest, "release %s never got past prepare: nothing to roll back to", vname(target.Version)))
	}
	if _, err := os.Stat(ag.cfg.slugDir(target.Digest)); err != nil {
		a.mu.Unlock()
		return o.finish(errf(api.CodeNotFound, "the code of %s is no longer kept", vname(target.Version)))
	}
	r := ag.newRelease(a, target.Digest, "rollback", maps.Clone(target.Config))
	r.Message = "rollback to " + vname(target.Version)
	r.Procfile, r.Order = maps.Clone(target.Procfile), slices.Clone(target.Order)
	r.DeployedBy = deployedBy
	o.record(r.Version)
	a.mu.Unlock()
	o.res.Release = vname(r.Version)
	o.enter(api.PhasePrepare, "%s: a new release %s from %s", name, vname(r.Version), vname(target.Version))
	return o.rollout(r, false, nil)
}

var configKeyRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`) })

// reservedKeys are set by agentd and cannot be config vars.
var reservedKeys = map[string]bool{"PORT": true, "AGENTD_APP": true, "AGENTD_RELEASE": true, "AGENTD_PROCESS": true,
	"LISTEN_FDS": true, "LISTEN_PID": true, "LISTEN_FDNAMES": true, "NOTIFY_SOCKET": true}

// ChangeConfig sets and unsets config vars. With an active release this
// makes a new release with the same code and deploys it.
func (ag *Agent) ChangeConfig(name string, req api.ConfigRequest, deployedBy string, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "config", emit)
	for k, v := range req.Set {
		if !configKeyRe().MatchString(k) || reservedKeys[k] {
			return o.finish(errf(api.CodeBadRequest, "bad config key %q: letters, digits and '_', not starting with a digit, and not one agentd sets", k))
		}
		if strings.ContainsRune(v, 0) || len(v) > 64<<10 {
			return o.finish(errf(api.CodeBadRequest, "bad value for %s: no NUL bytes, at most 64 KiB", k))
		}
	}
	for _, k := range req.Unset {
		if !configKeyRe().MatchString(k) {
			return o.finish(errf(api.CodeBadRequest, "bad config key %q", k))
		}
	}
	if len(req.Set) == 0 && len(req.Unset) == 0 {
		return o.finish(errf(api.CodeBadRequest, "nothing to set or unset"))
	}
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	cfg := maps.Clone(a.st.Config)
	maps.Copy(cfg, req.Set)
	for _, k := range req.Unset {
		delete(cfg, k)
	}
	if maps.Equal(cfg, a.st.Config) {
		a.mu.Unlock()
		o.info("config unchanged: nothing to do")
		return o.finish(nil)
	}
	act := a.release(a.st.Active)
	if act == nil {
		a.st.Config = cfg
		ag.save(a)
		a.mu.Unlock()
		o.info("config saved; it applies to the first release")
		o.res.Changed = true
		return o.finish(nil)
	}
	r := ag.newRelease(a, act.Digest, "config", cfg)
	r.Procfile, r.Order, r.DeployedBy = maps.Clone(act.Procfile), slices.Clone(act.Order), deployedBy
	var msg []string
	for _, k := range slices.Sorted(maps.Keys(req.Set)) {
		msg = append(msg, "set "+k)
	}
	for _, k := range req.Unset {
		msg = append(msg, "unset "+k)
	}
	r.Message = strings.Join(msg, ", ")
	// The new release is not active yet: the app's config only changes
	// at cutover, so a failed config deploy leaves it as it was.
	o.record(r.Version)
	a.mu.Unlock()
	o.res.Release = vname(r.Version)
	o.enter(api.PhasePrepare, "%s: a new release %s with the changed config", name, vname(r.Version))
	return o.rollout(r, true, nil)
}

// Restart replaces the processes of one type (all types when typ is "")
// with fresh ones of the same release, the preboot way: no downtime.
func (ag *Agent) Restart(name, typ string, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "restart", emit)
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	r := a.release(a.st.Active)
	if r == nil {
		a.mu.Unlock()
		return o.finish(errf(api.CodeBadRequest, "app %s has no active release to restart: deploy first", name))
	}
	var types []string
	if typ != "" {
		if _, ok := r.Procfile[typ]; !ok || typ == "release" {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "app %s has no process type %q (types: %s)", name, typ, strings.Join(r.Order, ", ")))
		}
		types = []string{typ}
	}
	o.record(r.Version)
	a.mu.Unlock()
	o.res.Release = vname(r.Version)
	return o.rollout(r, false, types)
}

// Scale changes how many processes of each type run.
func (ag *Agent) Scale(name string, formation map[string]int, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "scale", emit)
	if len(formation) == 0 {
		return o.finish(errf(api.CodeBadRequest, "nothing to scale: give TYPE=N"))
	}
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	r := a.release(a.st.Active)
	if r == nil {
		a.mu.Unlock()
		return o.finish(errf(api.CodeBadRequest, "app %s has no release yet: deploy first, then scale", name))
	}
	for typ, n := range formation {
		if _, ok := r.Procfile[typ]; !ok || typ == "release" {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "app %s has no process type %q (types: %s)", name, typ, strings.Join(r.Order, ", ")))
		}
		if n < 0 || n > 100 {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "bad count %d for %s: 0 to 100", n, typ))
		}
	}
	o.res.Release, o.res.Previous = vname(r.Version), vname(r.Version)
	var up []*proc
	var down []*proc
	type add struct {
		typ  string
		from int
		to   int
	}
	var adds []add
	for _, typ := range slices.Sorted(maps.Keys(formation)) {
		n := formation[typ]
		have := a.liveProcs(r.Version, []string{typ})
		if n > len(have) {
			adds = append(adds, add{typ, len(have) + 1, n})
		}
		for _, p := range have {
			if p.index > n {
				down = append(down, p)
			}
		}
	}
	o.record(r.Version)
	a.mu.Unlock()

	o.enter(api.PhasePreboot, "scaling %s", name)
	for _, ad := range adds {
		for i := ad.from; i <= ad.to; i++ {
			p, err := ag.startProc(a, r, ad.typ, i)
			if err != nil {
				return o.fail(nil, o.stopNew(up, err))
			}
			up = append(up, p)
			o.event("process", p.name(), fmt.Sprintf("%s %s started (pid %d)", vname(r.Version), p.name(), p.p.PID()))
		}
	}
	if err := o.awaitReady(up); err != nil {
		return o.fail(nil, o.stopNew(up, err))
	}
	a.mu.Lock()
	maps.Copy(a.st.Formation, formation)
	ag.save(a)
	a.mu.Unlock()
	if len(down) > 0 {
		o.enter(api.PhaseDrain, "stopping %d process(es)", len(down))
		d, killed := ag.drain(a, down, o)
		o.res.DrainSeconds, o.res.Killed = d.Seconds(), killed
	}
	a.mu.Lock()
	a.st.Op = nil
	ag.save(a)
	a.mu.Unlock()
	o.res.Changed = len(up)+len(down) > 0
	return o.finish(nil)
}

// prune drops releases beyond the retention count (never the active one)
// and forgets ended processes. Callers hold a.mu.
func (ag *Agent) prune(a *app) {
	if extra := len(a.st.Releases) - ag.cfg.KeepReleases; extra > 0 {
		var kept []*releaseState
		for _, r := range a.st.Releases {
			if extra > 0 && r.Version != a.st.Active {
				extra--
				continue
			}
			kept = append(kept, r)
		}
		a.st.Releases = kept
		go ag.pruneSlugs()
	}
	live := a.procs[:0]
	for _, p := range a.procs {
		if !p.p.Exited() || (p.state == api.StateCrashed && !p.retired) {
			live = append(live, p)
		}
	}
	a.procs = live
}

var pruneMu sync.Mutex

// pruneSlugs removes slugs that no kept release of any app refers to.
func (ag *Agent) pruneSlugs() {
	pruneMu.Lock()
	defer pruneMu.Unlock()
	used := map[string]bool{}
	ag.mu.Lock()
	for _, a := range ag.apps {
		a.mu.Lock()
		for _, r := range a.st.Releases {
			used[filepath.Base(ag.cfg.slugDir(r.Digest))] = true
		}
		a.mu.Unlock()
	}
	ag.mu.Unlock()
	entries, _ := os.ReadDir(ag.cfg.slugsDir())
	for _, e := range entries {
		// A slug unpacked in the last hour may belong to a deploy that has
		// not recorded its release yet.
		if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		if !used[e.Name()] && !strings.HasPrefix(e.Name(), "tmp-") {
			os.RemoveAll(filepath.Join(ag.cfg.slugsDir(), e.Name()))
		}
	}
}
