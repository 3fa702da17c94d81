package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/rollout"
)

// The core's side of the rollout engine: the target of an operation, the
// engine's run, and what follows its outcome (a failed release, an
// automatic rollback). The engine itself is package rollout; host.go is
// how it reaches this app's processes.

// target is the rollout that takes a to release r with the app's
// formation and rollout settings: every process type of r, and processes
// of types r lacks retire. Callers hold a.mu.
func (a *app) target(r *releaseState) rollout.Target {
	t := rollout.Target{Release: r.Version, Previous: a.st.Active, Formation: map[string]int{}, AllTypes: true,
		MaxSurge: a.st.MaxSurge, Bake: time.Duration(a.st.Bake), Strategy: map[string]rollout.Strategy{}}
	for _, typ := range r.Order {
		if typ == "release" {
			continue
		}
		t.Types = append(t.Types, typ)
		t.Formation[typ] = a.count(typ)
	}
	for typ, s := range a.st.Strategy {
		t.Strategy[typ] = rollout.Strategy(s)
	}
	return t
}

// rollout runs the engine to target t. r is the new release (nil when the
// operation makes none: restart, scale, crash restart); it ends active, or
// failed with the reason.
func (o *op) rollout(r *releaseState, t rollout.Target) api.OpResult {
	a := o.a
	if t.Previous != 0 {
		o.res.Previous = vname(t.Previous)
	}
	if res, held := o.holdForMaintenance(r, t); held {
		return res
	}
	if r != nil && o.announces() {
		// A webhook must never name a release a crash could forget.
		if err := o.durable(); err != nil {
			return o.fail(r, fmt.Errorf("recording %s: %w", vname(r.Version), err))
		}
	}
	o.hookStarted(r, t.Previous)
	a.mu.Lock()
	first := r != nil && o.kind == "deploy" && !a.everActive()
	a.mu.Unlock()
	res, err := o.run(o.ctx, t, r)
	var be *rollout.BakeError
	if errors.As(err, &be) {
		if t.Canary > 0 {
			return o.canaryFailed(r, t, be)
		}
		return o.bakeFailed(r, t, be)
	}
	if err != nil {
		var re *rollout.Error
		if errors.As(err, &re) && re.Cancelled {
			err = &Error{Code: api.CodeCancelled, Msg: context.Cause(o.ctx).Error(), Err: err}
		}
		return o.fail(r, err)
	}
	o.mu.Lock()
	o.res.Changed = o.res.Changed || !res.Plan.Empty() || t.Release != t.Previous
	o.mu.Unlock()
	var scriptErr error
	if r != nil && o.kind == "deploy" {
		scriptErr = o.runPostdeploy(r, first)
	}
	o.settle(r, res)
	switch {
	case o.kind == "maintenance":
		o.maintenanceDone(t)
	case t.Canary > 0 && o.kind == "canary":
		o.info("%s canary %s gets %g%% of new connections, %s the rest: `hctl canary %s` shows the split; `hctl promote %s` or `hctl canary abort %s` ends it",
			a.st.Name, vname(t.Release), t.Canary, vname(t.Previous), a.st.Name, a.st.Name, a.st.Name)
	case t.Canary > 0:
	case o.kind != "scale":
		o.info("%s %s is live (switch %.2fs, drain %.2fs)", a.st.Name, vname(t.Release), o.res.SwitchSeconds, o.res.DrainSeconds)
	}
	if r != nil && o.kind == "deploy" {
		if err := o.postdrain(r); scriptErr == nil {
			scriptErr = err
		}
	}
	return o.finish(scriptErr)
}

// settle ends a rollout that reached its target: the operation is no
// longer in progress on disk, the app's operation lock is free (the next
// operation may start while this one's old processes still drain), and
// the operation waits for the drain up to o.waitDrain before it reports.
func (o *op) settle(r *releaseState, res rollout.Result) {
	ag, a := o.ag, o.a
	a.mu.Lock()
	a.st.Op = nil
	ag.prune(a)
	ag.save(a)
	a.mu.Unlock()
	o.unlock()
	o.awaitDrain(res)
	o.endPhase()
	if r != nil {
		a.mu.Lock()
		r.Phases = phaseTimesOf(o.phaseTimes())
		if !a.gone {
			ag.save(a)
		}
		a.mu.Unlock()
	}
}

// awaitDrain waits for the drain of a rollout, at most o.waitDrain. Past
// it, the result says what still drains: the drain goes on.
func (o *op) awaitDrain(res rollout.Result) {
	if res.Drained == nil {
		return
	}
	wait := o.waitDrain
	if wait <= 0 {
		wait = defaultWaitDrain
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case d := <-res.Drained:
		o.mu.Lock()
		o.res.DrainSeconds = d.Took.Seconds()
		o.res.Killed = append(o.res.Killed, d.Killed...)
		o.res.ConnectionsCut += d.Cut
		o.mu.Unlock()
		return
	case <-t.C:
	}
	procs, conns, deadline := o.a.draining()
	o.mu.Lock()
	o.res.DrainSeconds = wait.Seconds()
	o.res.StillDraining = procs
	o.res.DrainConnections = conns
	o.res.DrainDeadline = deadline
	o.mu.Unlock()
	o.info("the drain goes on in the background: %d process(es) hold %s, the last deadline %s",
		procs, plural(conns, "open connection"), deadline.Local().Format("15:04:05"))
}

// run is one run of the engine, its figures put in the result.
func (o *op) run(ctx context.Context, t rollout.Target, r *releaseState) (rollout.Result, error) {
	if r == nil || r.Procfile["release"] == "" {
		t.ReleasePhase = false
	}
	if r != nil {
		// An --allow-root release's private copy of its tree (codeDir) is
		// made before the engine runs, as part of preparing the release:
		// made by its first process's start, it was copied inside the
		// switch, while the old and new processes run side by side (20-30
		// ms for an 8.5 MiB binary here).
		if _, err := o.ag.codeDir(o.a, r); err != nil {
			return rollout.Result{}, fmt.Errorf("preparing %s: %w", vname(r.Version), err)
		}
	}
	eng, ctl, done := o.engine(r, t)
	defer done()
	o.a.mu.Lock()
	o.a.cutover = false
	o.a.mu.Unlock()
	res, err := eng.Run(ctx, t, ctl)
	o.a.mu.Lock()
	o.ag.pruneGens(o.a)
	o.a.mu.Unlock()
	o.mu.Lock()
	if res.Cutover {
		o.res.SwitchSeconds = res.Switch.Seconds()
	}
	o.mu.Unlock()
	return res, err
}

// engine is the engine for one run of o towards t, with the control that
// ends its bake early (EndBake); done retires that control.
func (o *op) engine(r *releaseState, t rollout.Target) (rollout.Engine, rollout.Controls, func()) {
	h := &host{ag: o.ag, a: o.a, o: o, r: r, target: t.Release, previous: t.Previous, restarts: o.restarts}
	if o.kind == "scale" {
		h.formation = t.Formation
	}
	bakeEnd := make(chan bool, 1)
	o.a.mu.Lock()
	o.a.bakeEnd = bakeEnd
	o.a.mu.Unlock()
	return rollout.Engine{Host: h}, rollout.Controls{BakeEnd: bakeEnd}, func() {
		o.a.mu.Lock()
		o.a.bakeEnd = nil
		o.a.mu.Unlock()
	}
}

// fail marks r failed with err and ends the operation.
func (o *op) fail(r *releaseState, err error) api.OpResult {
	o.endPhase()
	o.a.mu.Lock()
	if r != nil && r.Status != api.StatusActive {
		r.Status = api.StatusFailed
		r.Error = err.Error()
		r.Phases = phaseTimesOf(o.phaseTimes())
	}
	o.a.st.Op = nil
	o.ag.save(o.a)
	act := o.a.st.Active
	o.a.mu.Unlock()
	if act != 0 {
		var reason, app string
		if ae, ok := errors.AsType[*Error](err); ok {
			reason, app = ae.Reason, ae.App
		}
		err = &Error{Code: codeOf(err), Msg: fmt.Sprintf("%v (%s keeps serving)", err, vname(act)), Err: err, Reason: reason, App: app}
		o.mu.Lock()
		o.res.Previous = vname(act)
		o.mu.Unlock()
	}
	o.ag.log.Warn("operation failed", "app", o.a.st.Name, "op", o.kind, "err", err)
	return o.finish(err)
}

// bakeFailed handles a release that failed its bake window after its
// cutover: it is deployed away, the same zero-downtime way, by a new
// release with the code and config of the release that served before it
// (source "auto-rollback"), and marked failed with why.
func (o *op) bakeFailed(r *releaseState, t rollout.Target, be *rollout.BakeError) api.OpResult {
	ag, a := o.ag, o.a
	reason := fmt.Sprintf("%s failed its bake: %v", vname(t.Release), be.Reason)
	if be.Aborted {
		reason = fmt.Sprintf("%s: %v", vname(t.Release), be.Reason)
	}
	o.info("%s", reason)
	o.hookBakeFailed(t.Release, reason)
	ag.obs.Rollback(a.st.Name, "bake")
	a.mu.Lock()
	prev := a.release(t.Previous)
	if r != nil {
		r.Error = reason
	}
	if prev == nil || prev.Procfile == nil {
		if r != nil {
			r.Status = api.StatusFailed
		}
		a.st.Op = nil
		ag.save(a)
		a.mu.Unlock()
		return o.finish(&Error{Code: api.CodeBakeFailed, Msg: reason + "; there is no earlier release to roll back to: it keeps serving"})
	}
	if !ag.hasCode(prev.Digest) {
		a.mu.Unlock()
		return o.fail(nil, &Error{Code: api.CodeBakeFailed, Msg: fmt.Sprintf("%s; the code of %s is no longer kept: it keeps serving", reason, vname(prev.Version))})
	}
	nr := ag.newRelease(a, prev.Digest, "auto-rollback", maps.Clone(prev.Config))
	nr.Procfile, nr.Order = maps.Clone(prev.Procfile), slices.Clone(prev.Order)
	inheritAppJSON(nr, prev)
	nr.Message = fmt.Sprintf("automatic rollback to %s: %s", vname(prev.Version), reason)
	nr.DeployedBy = "agentd"
	// The same code as prev: a fleet that deploys prev's release id again
	// finds it active, nothing to do.
	nr.ReleaseID = prev.ReleaseID
	o.record(nr.Version)
	rt := a.target(nr)
	a.mu.Unlock()
	rt.Bake = 0 // the release it returns to has served before
	o.info("rolling back to %s as %s", vname(prev.Version), vname(nr.Version))
	// Not cancellable: the release that failed must not stay.
	res, err := o.run(context.Background(), rt, nr)
	a.mu.Lock()
	if r != nil {
		r.Status, r.Error = api.StatusFailed, reason
	}
	a.mu.Unlock()
	if err != nil {
		return o.fail(nr, fmt.Errorf("%s; the automatic rollback to %s failed too: %w", reason, vname(prev.Version), err))
	}
	o.settle(nr, res)
	o.mu.Lock()
	o.res.Release, o.res.Previous, o.res.Changed, o.res.RolledBack = vname(nr.Version), vname(t.Release), true, true
	o.mu.Unlock()
	return o.finish(&Error{Code: api.CodeRolledBack,
		Msg: fmt.Sprintf("%s; rolled back automatically: %s (the code and config of %s) serves", reason, vname(nr.Version), vname(prev.Version))})
}

// EndBake ends the bake window of the app's rollout in progress: pass
// keeps the new release, !pass rolls it back as a failed bake would.
func (ag *Agent) EndBake(name string, pass bool) error {
	a, err := ag.get(name)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.bakeEnd == nil || a.st.Op == nil || a.st.Op.Phase != rollout.PhaseBake {
		return errf(api.CodeNotFound, "app %s has no release in its bake window", name)
	}
	select {
	case a.bakeEnd <- pass:
	default:
	}
	return nil
}
