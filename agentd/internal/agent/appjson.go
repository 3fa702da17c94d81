package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/appjson"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/sockets"
)

// A release's app.json (package appjson): what it changes in a deploy
// (formation, release phase, readiness) and the scripts it runs around
// one (Heroku's postdeploy, Dokku's postdeploy, agentd's postdrain).

// Names of the script processes, as `hctl ps` and the logs show them.
const (
	scriptPostdeploy      = "postdeploy"       // Heroku's scripts.postdeploy
	scriptDokkuPostdeploy = "dokku-postdeploy" // Dokku's scripts.dokku.postdeploy
	scriptPostdrain       = "postdrain"        // scripts.agentd.postdrain
)

// isScript reports whether typ is one of app.json's script processes (or
// the release phase): run once, never part of the formation.
func isScript(typ string) bool {
	return typ == "release" || typ == scriptPostdeploy || typ == scriptDokkuPostdeploy || typ == scriptPostdrain
}

// runsScript reports whether typ is an app.json script process r runs
// (postdeploy, dokku-postdeploy, postdrain): a recorded process of that
// name belongs to r (statecheck.go).
func runsScript(r *releaseState, typ string) bool {
	if r.AppJSON == nil {
		return false
	}
	switch s := r.AppJSON.Scripts; typ {
	case scriptPostdeploy:
		return s.Postdeploy != ""
	case scriptDokkuPostdeploy:
		return s.DokkuPostdeploy != ""
	case scriptPostdrain:
		return s.AgentdPostdrain != ""
	}
	return false
}

// Postdrain states, recorded in the release so that it runs once per
// release across agentd restarts.
const (
	postdrainRunning   = "running"
	postdrainSucceeded = "succeeded"
	postdrainFailed    = "failed"
	postdrainSkipped   = "skipped"
	// postdrainDeferred: deployed with --skip-postdrain, left to
	// RunPostdrain (hctl postdrain), once per fleet.
	postdrainDeferred = "deferred"
)

// postdrainState is what a release records of its scripts.agentd.postdrain.
type postdrainState struct {
	Status   string    `json:"status"`
	Started  time.Time `json:"started,omitzero"`
	Ended    time.Time `json:"ended,omitzero"`
	ExitCode *int      `json:"exit_code,omitempty"`
	Error    string    `json:"error,omitempty"`
	Log      string    `json:"log,omitempty"`
}

func (s *postdrainState) api() *api.ScriptRun {
	if s == nil {
		return nil
	}
	return &api.ScriptRun{Script: "scripts.agentd.postdrain", Status: s.Status, Started: s.Started,
		Ended: s.Ended, ExitCode: s.ExitCode, Error: s.Error}
}

// appJSONOf reads the app.json of the release with this digest, nil when
// it has none.
func (ag *Agent) appJSONOf(digest string) (*appjson.Manifest, error) {
	dir := ag.cfg.slugDir(digest)
	if s, err := ag.Store(); err == nil && s.Has(digest) {
		dir = s.Dir(digest)
	}
	return appjson.Load(dir)
}

// everActive reports whether any release of a was ever switched to: the
// app has had its first successful deploy. Callers hold a.mu.
func (a *app) everActive() bool {
	return a.st.Active != 0 || slices.ContainsFunc(a.st.Releases, func(r *releaseState) bool {
		return r.Status == api.StatusActive || r.Status == api.StatusRetired
	})
}

// applyAppJSON applies what r's app.json changes before its rollout:
// Dokku's predeploy becomes the release phase when the Procfile has none,
// and its formation is the app's on the first deploy (types `hctl scale`
// set already keep their count). It reports what it did, and which of its
// health checks the app's own settings override. Callers hold a.mu.
func (a *app) applyAppJSON(r *releaseState, m *appjson.Manifest, info func(string, ...any)) {
	r.AppJSON = m
	if m == nil {
		return
	}
	if c := m.Scripts.DokkuPredeploy; c != "" {
		if _, ok := r.Procfile["release"]; ok {
			info("app.json scripts.dokku.predeploy is not run: the Procfile's release: line is the release phase")
		} else {
			r.Procfile["release"] = c
			info("app.json scripts.dokku.predeploy is the release phase: %s", c)
		}
	}
	if len(m.Formation) > 0 && !a.everActive() {
		if a.st.Formation == nil {
			a.st.Formation = map[string]int{}
		}
		for _, typ := range slices.Sorted(mapsKeys(m.Formation)) {
			if _, ok := r.Procfile[typ]; !ok || typ == "release" {
				info("app.json formation.%s: the Procfile has no such process type; ignored", typ)
				continue
			}
			if n, set := a.st.Formation[typ]; set {
				info("app.json formation.%s is overridden by the app's formation (%s=%d)", typ, typ, n)
				continue
			}
			a.st.Formation[typ] = m.Formation[typ].Quantity
			info("app.json formation: %s=%d (first deploy)", typ, m.Formation[typ].Quantity)
		}
	}
	for _, typ := range slices.Sorted(mapsKeys(m.Healthchecks)) {
		if _, ok := r.Procfile[typ]; !ok || typ == "release" {
			info("app.json healthchecks.%s: the Procfile has no such process type; ignored", typ)
			continue
		}
		c, ok := startupCheck(m, typ)
		if !ok {
			continue
		}
		if s, set := a.st.Readiness[typ]; set {
			info("app.json healthchecks.%s (%s) is overridden by the app's setting --readiness %s=%s", typ, c.Readiness(), typ, s)
		} else {
			info("app.json healthchecks.%s: %s is %s's readiness", typ, c.Readiness(), typ)
		}
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// startupCheck is the first startup check of typ in m.
func startupCheck(m *appjson.Manifest, typ string) (appjson.Healthcheck, bool) {
	if m == nil {
		return appjson.Healthcheck{}, false
	}
	for _, c := range m.Healthchecks[typ] {
		if c.Type == appjson.CheckStartup {
			return c, true
		}
	}
	return appjson.Healthcheck{}, false
}

// readinessFor is the readiness of a process of typ of release v: the
// app's setting (apps create/set) when it has one, else the startup check
// of the release's app.json, else the default. Callers hold a.mu.
func (a *app) readinessFor(v int, typ string) readiness.Kind {
	if _, set := a.st.Readiness[typ]; !set {
		if r := a.release(v); r != nil {
			if c, ok := startupCheck(r.AppJSON, typ); ok {
				if k, err := readiness.Parse(c.Readiness().String()); err == nil {
					return k
				}
			}
		}
	}
	return a.readinessOf(typ)
}

// runPostdeploy runs r's postdeploy scripts after its cutover: Heroku's
// scripts.postdeploy when this was the app's first successful deploy,
// Dokku's scripts.dokku.postdeploy on every deploy. A failure is the
// operation's error; the release stays active.
func (o *op) runPostdeploy(r *releaseState, first bool) error {
	a := o.a
	a.mu.Lock()
	m := r.AppJSON
	a.mu.Unlock()
	if m == nil {
		return nil
	}
	run := func(name, key, cmd string) error {
		o.info("running app.json %s: %s", key, cmd)
		if err := o.ag.runScript(context.Background(), a, r, name, cmd, o); err != nil {
			return &Error{Code: api.CodeDeployFailed,
				Msg: fmt.Sprintf("app.json %s failed: %v (%s stays active)", key, err, vname(r.Version))}
		}
		return nil
	}
	if first && m.Scripts.Postdeploy != "" {
		if err := run(scriptPostdeploy, "scripts.postdeploy", m.Scripts.Postdeploy); err != nil {
			return err
		}
	}
	if m.Scripts.DokkuPostdeploy != "" {
		return run(scriptDokkuPostdeploy, "scripts.dokku.postdeploy", m.Scripts.DokkuPostdeploy)
	}
	return nil
}

// postdrainPending reports whether r has a postdrain script that has not
// run yet. Callers hold a.mu.
func postdrainPending(r *releaseState) bool {
	return r != nil && r.AppJSON != nil && r.AppJSON.Scripts.AgentdPostdrain != "" && r.Postdrain == nil
}

// olderProcs are the processes of releases other than v still alive: the
// ones scripts.agentd.postdrain of v waits for. Callers hold a.mu.
func (a *app) olderProcs(v int) []*proc {
	var out []*proc
	for _, p := range a.procs {
		if p.release != v && p.typ != "release" && !p.p.Exited() {
			out = append(out, p)
		}
	}
	return out
}

// awaitPostdrain waits until r's bake (if one is in progress) has passed
// and no process of a release other than r is left, then runs r's
// postdrain once, if r is still the active release. o is the
// operation still waiting for it (its result carries the outcome), or nil
// when nobody waits (the drain outlived the deploy, or agentd restarted).
func (ag *Agent) awaitPostdrain(a *app, r *releaseState, o *op) error {
	for {
		a.mu.Lock()
		if !postdrainPending(r) || a.gone {
			a.mu.Unlock()
			return nil
		}
		if a.st.Active != r.Version {
			// A newer release took over before this one's drain ended: the
			// contract step is the newer release's to run.
			r.Postdrain = &postdrainState{Status: postdrainSkipped, Error: fmt.Sprintf("%s was no longer active when the older processes were gone", vname(r.Version))}
			ag.save(a)
			a.mu.Unlock()
			return nil
		}
		if a.baking(r.Version) {
			// An agentd restarted in the bake window resumes the bake: the
			// postdrain waits for it to pass (or, failed, skips above).
			a.mu.Unlock()
			time.Sleep(time.Second)
			continue
		}
		older := a.olderProcs(r.Version)
		if len(older) == 0 {
			// Claimed under the lock that saw it pending: a second
			// waiter (hctl postdrain, a deploy's) finds it taken.
			r.Postdrain = &postdrainState{Status: postdrainRunning, Started: time.Now().UTC()}
			a.mu.Unlock()
			break
		}
		a.mu.Unlock()
		for _, p := range older {
			<-p.p.Done()
		}
	}
	return ag.runPostdrain(a, r, o)
}

// runPostdrain starts r's postdrain, claimed by the caller, as a tracked
// process of its own (recorded, so a restarted agentd adopts it; listed by
// `hctl ps`) and waits for it.
func (ag *Agent) runPostdrain(a *app, r *releaseState, o *op) error {
	a.mu.Lock()
	cmd := r.AppJSON.Scripts.AgentdPostdrain
	a.mu.Unlock()
	if o != nil {
		o.info("running app.json scripts.agentd.postdrain (no process of an older release is left): %s", cmd)
	}
	pr, err := ag.startScriptProc(a, r, scriptPostdrain, postdrainCommand(cmd))
	a.mu.Lock()
	if err != nil {
		r.Postdrain = &postdrainState{Status: postdrainFailed, Started: time.Now().UTC(), Ended: time.Now().UTC(), Error: err.Error()}
		ag.save(a)
		a.mu.Unlock()
		return ag.postdrainDone(a, r, o)
	}
	r.Postdrain.Started, r.Postdrain.Log = pr.p.StartedAt().UTC(), pr.log
	err = ag.save(a)
	a.mu.Unlock()
	if err != nil {
		pr.p.Cancel()
		<-pr.p.Done()
		a.mu.Lock()
		r.Postdrain = nil // it never ran: the next agentd runs it
		a.mu.Unlock()
		return fmt.Errorf("recording scripts.agentd.postdrain: %w", err)
	}
	pr.p.Release()
	if o != nil {
		o.event("process", scriptPostdrain, fmt.Sprintf("%s postdrain started (pid %d)", vname(r.Version), pr.p.PID()))
	}
	<-pr.p.Done()
	return ag.postdrainDone(a, r, o)
}

// postdrainCommand wraps the script so that its exit status is written to
// its own log: an agentd that restarted while it ran adopts it, and the
// exit status of a process that is not agentd's child is otherwise lost.
func postdrainCommand(cmd string) string {
	return "(" + cmd + "\n); rc=$?; echo \"" + postdrainMarker + "$rc\"; exit $rc"
}

const postdrainMarker = "agentd: scripts.agentd.postdrain exit status "

// postdrainExit reads the exit status the wrapper wrote to the log.
func postdrainExit(log string) (int, bool) {
	f, err := os.Open(log)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	code, found := 0, false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), postdrainMarker); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				code, found = n, true
			}
		}
	}
	return code, found
}

// postdrainDone records how r's postdrain ended and reports a failure in
// the logs, the metrics and, when o still waits, its result.
func (ag *Agent) postdrainDone(a *app, r *releaseState, o *op) error {
	a.mu.Lock()
	st := r.Postdrain
	if st.Status == postdrainRunning {
		st.Ended = time.Now().UTC()
		code, ok := postdrainExit(st.Log)
		switch {
		case !ok:
			st.Status = postdrainFailed
			st.Error = "it ended without an exit status (killed?); see its log " + filepath.Base(st.Log)
		case code != 0:
			st.Status = postdrainFailed
			st.ExitCode = &code
			st.Error = fmt.Sprintf("exit status %d", code)
			if tail := tailLines(st.Log, 6); tail != "" {
				st.Error += "; its last output:\n" + strings.TrimSpace(strings.ReplaceAll(tail, postdrainMarker+strconv.Itoa(code), ""))
			}
		default:
			st.Status = postdrainSucceeded
			st.ExitCode = &code
		}
	}
	ag.save(a)
	s := *st
	a.mu.Unlock()
	if po, ok := ag.obs.(interface{ PostdrainDone(app, result string) }); ok {
		po.PostdrainDone(a.st.Name, s.Status)
	}
	if s.Status != postdrainFailed {
		if o != nil {
			o.info("app.json scripts.agentd.postdrain of %s %s", vname(r.Version), s.Status)
		}
		ag.log.Info("postdrain script ended", "app", a.st.Name, "release", vname(r.Version), "status", s.Status)
		return nil
	}
	ag.log.Error("postdrain script failed; the release stays active", "app", a.st.Name, "release", vname(r.Version), "err", s.Error)
	return &Error{Code: api.CodePostdrainFailed,
		Msg: fmt.Sprintf("app.json scripts.agentd.postdrain of %s failed: %s (%s stays active)", vname(r.Version), s.Error, vname(r.Version))}
}

// resumePostdrain, after agentd (re)started, follows the postdrain of the
// active release: one that was running is waited for (adopted), one that
// is due runs once the older processes are gone.
func (ag *Agent) resumePostdrain(a *app) {
	a.mu.Lock()
	r := a.release(a.st.Active)
	if r == nil || r.AppJSON == nil || r.AppJSON.Scripts.AgentdPostdrain == "" {
		a.mu.Unlock()
		return
	}
	var running *proc
	for _, p := range a.procs {
		if p.typ == scriptPostdrain && p.release == r.Version && !p.p.Exited() {
			running = p
		}
	}
	st := r.Postdrain
	a.mu.Unlock()
	switch {
	case st == nil:
		go ag.awaitPostdrain(a, r, nil)
	case st.Status == postdrainRunning:
		go func() {
			if running != nil {
				<-running.p.Done()
			}
			ag.postdrainDone(a, r, nil)
		}()
	}
}

// inheritAppJSON gives nr, a release made from the code of from (a
// rollback, a config change), from's app.json: its health checks and
// formation apply to the same code. Its scripts do not run again: they
// belong to a deploy of new code. Callers hold a.mu.
func inheritAppJSON(nr, from *releaseState) {
	nr.AppJSON = from.AppJSON
	if nr.AppJSON != nil && nr.AppJSON.Scripts.AgentdPostdrain != "" {
		nr.Postdrain = &postdrainState{Status: postdrainSkipped, Error: fmt.Sprintf("%s is a %s of the code of %s: app.json scripts run on deploys", vname(nr.Version), nr.Source, vname(from.Version))}
	}
}

// scriptState is the state `hctl ps` shows for a script process.
const scriptState = "running"

// startScriptProc starts command as a script process of release r: the
// app's environment, user and limits, its output to its own log file, no
// sockets. It is recorded and held like any process; the caller releases
// it (p.p.Release) once it is saved. Callers must not hold a.mu.
func (ag *Agent) startScriptProc(a *app, r *releaseState, name, command string) (*proc, error) {
	pr := &proc{typ: name, release: r.Version, state: scriptState, retired: true, extend: make(chan time.Duration, 1)}
	dir, err := ag.codeDir(a, r)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	env, err := ag.procEnv(a, r, name)
	userName := a.st.User
	shimOpt := a.shimOptions(0)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	cred, err := credential(userName)
	if err != nil {
		return nil, err
	}
	logDir := filepath.Join(ag.cfg.logsDir(), a.st.Name)
	os.MkdirAll(logDir, 0o750)
	pr.log = filepath.Join(logDir, vname(r.Version)+"."+name+".log")
	out, err := os.OpenFile(pr.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log file for %s: %w", name, err)
	}
	defer out.Close()
	pr.p, err = supervisor.Start(supervisor.Spec{
		Shim: ag.cfg.Shim, Argv: sockets.ShellArgv(command), Dir: dir,
		Env: env, Output: out, Credential: cred, ShimOptions: shimOpt, Held: true,
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	a.mu.Lock()
	a.procs = append(a.procs, pr)
	a.mu.Unlock()
	pr.p.OnExit(func() { ag.watchExit(a, pr, r) })
	return pr, nil
}

// postdrain starts r's postdrain after its rollout: the operation waits
// for it (and reports its outcome) when the drain ended while it waited;
// otherwise it runs in the background once the drain ends, and `hctl
// releases info` reports it.
func (o *op) postdrain(r *releaseState) error {
	a := o.a
	a.mu.Lock()
	pending := postdrainPending(r)
	draining := len(a.olderProcs(r.Version)) > 0
	a.mu.Unlock()
	if !pending {
		return nil
	}
	if draining {
		o.info("app.json scripts.agentd.postdrain runs once no process of an older release is left; `hctl releases info %s %s` reports it", a.st.Name, vname(r.Version))
		go o.ag.awaitPostdrain(a, r, nil)
		return nil
	}
	return o.ag.awaitPostdrain(a, r, o)
}

// RunPostdrain runs the active release's scripts.agentd.postdrain once no
// process of an older release is left on this host (hctl postdrain): the
// fleet's way to run it once, on one host, after every host deployed with
// --skip-postdrain and drained. One that succeeded is not run again; one
// that runs is not started twice.
func (ag *Agent) RunPostdrain(name string, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "postdrain", emit)
	a.mu.Lock()
	r := a.release(a.st.Active)
	if r == nil {
		a.mu.Unlock()
		return o.finish(errf(api.CodeBadRequest, "app %s has no active release: deploy first", name))
	}
	o.res.Release = vname(r.Version)
	if r.AppJSON == nil || r.AppJSON.Scripts.AgentdPostdrain == "" {
		a.mu.Unlock()
		// Nothing to do is no failure: a fleet's playbook runs this
		// after every deploy, with or without the script.
		o.info("%s of %s has no app.json scripts.agentd.postdrain: nothing to run", vname(r.Version), name)
		return o.finish(nil)
	}
	switch st := r.Postdrain; {
	case st != nil && st.Status == postdrainSucceeded:
		a.mu.Unlock()
		o.info("scripts.agentd.postdrain of %s succeeded already (%s): not run again", vname(r.Version), st.Started.Format(time.RFC3339))
		return o.finish(nil)
	case st != nil && st.Status == postdrainRunning:
		a.mu.Unlock()
		return o.finish(errf(api.CodeConflict, "scripts.agentd.postdrain of %s is running already (since %s)", vname(r.Version), st.Started.Format(time.RFC3339)))
	}
	// Deferred, failed (run again on purpose) or never run.
	r.Postdrain = nil
	older := len(a.olderProcs(r.Version))
	a.mu.Unlock()
	if older > 0 {
		o.info("waiting for %d process(es) of older releases to exit first", older)
	}
	o.mu.Lock()
	o.res.Changed = true
	o.mu.Unlock()
	return o.finish(ag.awaitPostdrain(a, r, o))
}
