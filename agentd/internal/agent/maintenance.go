package agent

import (
	"fmt"
	"strconv"
	"time"

	"github.com/agentd/agentd/grammar"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/responder"
	"github.com/agentd/agentd/agentd/internal/rollout"
)

// Maintenance mode: the app's sockets go to a responder (agentd's own
// binary as `agentd respond`, package responder) that answers every
// request with 503 while the app is down, and come back to the app's
// formation when it ends. Both switches are rollouts (package rollout's
// maintenance.go); this file is what the core adds around them: the state
// that survives a restart, the responder's process, and what other
// operations do meanwhile (a deploy prepares and runs its release phase
// and ends pending; off rolls out the newest pending release).

// RetryAfter is the Retry-After the responder answers with, in seconds.
const RetryAfter = 60

// maintState is an app's maintenance mode as its state file keeps it. It
// is set at the cutover of `on` (once the responder is ready) and removed
// at the cutover of `off`: an agentd that restarts in between reconciles
// the app to its responder alone.
type maintState struct {
	On    bool      `json:"on"`
	Since time.Time `json:"since"`
	// Page is the page the responder answers with; "" for the built-in
	// one.
	Page string `json:"page,omitempty"`
	// Pending is the newest release deployed while on (0 for none): off
	// rolls it out.
	Pending int `json:"pending,omitempty"`
}

// MaintenanceObserver is told when an app enters or leaves maintenance
// (and each app's mode when it is loaded). An Observer that implements it
// too gets it; metrics does.
type MaintenanceObserver interface {
	Maintenance(app string, on bool)
}

func (ag *Agent) observeMaintenance(a *app) {
	if mo, ok := ag.obs.(MaintenanceObserver); ok {
		mo.Maintenance(a.st.Name, a.inMaintenance())
	}
}

// inMaintenance reports whether the app is in maintenance. Callers hold
// a.mu (or own a before it is shared).
func (a *app) inMaintenance() bool { return a.st.Maintenance != nil && a.st.Maintenance.On }

// responderReadiness: the responder says READY=1 once it serves.
var responderReadiness = readiness.Kind{Name: grammar.KindNotify}

// startResponder starts the maintenance responder as process
// maintenance.INDEX of release r: the exec shim runs agentd's own image
// (the shim is agentd) in its responder mode, with every socket of the app
// and the page in its environment.
func (ag *Agent) startResponder(a *app, r *releaseState, index int, page string) (*proc, error) {
	env := []string{responder.EnvRetryAfter + "=" + strconv.Itoa(RetryAfter)}
	if page != "" {
		env = append(env, responder.EnvPage+"="+page)
	}
	return ag.spawn(a, r, rollout.Responder, index, []string{ag.self(), responder.Arg}, env)
}

// Maintenance puts app name in maintenance (on) or takes it out (off).
// page is the page to answer with while on ("" for the built-in one).
func (ag *Agent) Maintenance(name string, on bool, page, deployedBy string, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "maintenance", emit)
	if err := grammar.CheckMaintenancePage(page); err != nil {
		return o.finish(badRequest(err))
	}
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	if err := a.canaryBlocks(); err != nil {
		a.mu.Unlock()
		return o.finish(err)
	}
	r := a.release(a.st.Active)
	if r == nil {
		a.mu.Unlock()
		return o.finish(errf(api.CodeBadRequest, "app %s has no release yet: deploy first (maintenance replaces a running app)", name))
	}
	m := a.st.Maintenance
	if !on {
		ag.log.Info("maintenance off", "app", name, "by", deployedBy)
		return o.maintenanceOff(r, m)
	}
	if _, ok := r.Procfile[rollout.Responder]; ok {
		a.mu.Unlock()
		return o.finish(errf(api.CodeBadRequest, "%s's Procfile has a process type named %q, which is the maintenance responder's: rename it to use maintenance mode", vname(r.Version), rollout.Responder))
	}
	o.res.Release, o.res.Previous = vname(r.Version), vname(r.Version)
	next := &maintState{On: true, Since: time.Now().UTC(), Page: page}
	replace := false
	if m != nil && m.On {
		if m.Page == page {
			a.mu.Unlock()
			o.info("%s is in maintenance already (since %s): nothing to do", name, m.Since.Local().Format("15:04:05"))
			return o.finish(nil)
		}
		// A new page: the responder is replaced, the zero-downtime way.
		next.Since, next.Pending, replace = m.Since, m.Pending, true
	}
	o.maint = next
	o.record(r.Version)
	a.mu.Unlock()
	ag.log.Info("maintenance on", "app", name, "by", deployedBy)
	o.enter(api.PhasePrepare, "%s: the maintenance responder takes over the sockets of %s", name, vname(r.Version))
	return o.rollout(nil, rollout.MaintenanceOn(r.Version, replace))
}

// maintenanceOff ends maintenance: the newest release deployed meanwhile
// (else the active one) starts in the app's formation, and the responder
// drains once it is ready. Called with a.mu held; it unlocks it.
func (o *op) maintenanceOff(act *releaseState, m *maintState) api.OpResult {
	a := o.a
	if m == nil || !m.On {
		a.mu.Unlock()
		o.info("%s is not in maintenance: nothing to do", a.st.Name)
		o.res.Release, o.res.Previous = vname(act.Version), vname(act.Version)
		return o.finish(nil)
	}
	var nr *releaseState // the release that becomes active, when new
	r := act
	if p := a.release(m.Pending); p != nil && p.Status == api.StatusPending && p.Procfile != nil && p.Version > act.Version {
		r, nr = p, p
	}
	t := a.target(r)
	o.maintOff = true
	o.record(r.Version)
	a.mu.Unlock()
	o.res.Release = vname(r.Version)
	if nr != nil {
		o.enter(api.PhasePrepare, "%s: out of maintenance with %s, deployed while in maintenance", a.st.Name, vname(r.Version))
	} else {
		o.enter(api.PhasePrepare, "%s: out of maintenance with %s", a.st.Name, vname(r.Version))
	}
	return o.rollout(nr, t)
}

// holdForMaintenance is what an operation that would start processes does
// while the app is in maintenance: a new release (deploy, rollback,
// config) is prepared and its release phase runs, and it ends pending (off
// rolls it out); a scale saves the formation for later; a restart has
// nothing to restart. held is false when the app is not in maintenance or
// t is a maintenance switch.
func (o *op) holdForMaintenance(r *releaseState, t rollout.Target) (api.OpResult, bool) {
	a := o.a
	a.mu.Lock()
	if !a.inMaintenance() || t.Maintenance() || o.maintOff || o.kind == "boot" || o.kind == "crash" {
		a.mu.Unlock()
		return api.OpResult{}, false
	}
	a.mu.Unlock()
	switch {
	case r != nil:
	case o.kind == "scale":
		a.mu.Lock()
		if a.st.Formation == nil {
			a.st.Formation = map[string]int{}
		}
		for _, typ := range t.Types {
			a.st.Formation[typ] = t.Formation[typ]
		}
		err := o.ag.save(a)
		a.mu.Unlock()
		if err != nil {
			return o.finish(fmt.Errorf("saving the formation: %w", err)), true
		}
		o.info("%s is in maintenance: the formation is saved and applies when maintenance ends", a.st.Name)
		o.res.Changed = true
		return o.finish(nil), true
	default:
		return o.finish(errf(api.CodeConflict, "%s is in maintenance: none of its processes run (hctl maintenance %s off starts them)", a.st.Name, a.st.Name)), true
	}
	t.ReleaseOnly = true
	if _, err := o.run(o.ctx, t, r); err != nil {
		return o.fail(r, err), true
	}
	o.endPhase()
	a.mu.Lock()
	r.Status = api.StatusPending
	r.Phases = phaseTimesOf(o.phaseTimes())
	a.st.Maintenance.Pending = r.Version
	a.st.Op = nil
	err := o.ag.save(a)
	a.mu.Unlock()
	if err != nil {
		return o.fail(r, fmt.Errorf("saving the pending release: %w", err)), true
	}
	o.mu.Lock()
	o.res.Changed, o.res.Pending = true, true
	o.mu.Unlock()
	o.info("%s %s is prepared and pending: %s is in maintenance, and hctl maintenance %s off rolls it out", a.st.Name, vname(r.Version), a.st.Name, a.st.Name)
	return o.finish(nil), true
}

// maintenanceTarget is the target that keeps an app in maintenance (its
// responder alone), for a reconcile or a crash restart; ok is false when
// the app is not in maintenance. Callers hold a.mu.
func (a *app) maintenanceTarget() (rollout.Target, bool) {
	if !a.inMaintenance() || a.st.Active == 0 {
		return rollout.Target{}, false
	}
	return rollout.MaintenanceOn(a.st.Active, false), true
}

// maintenanceAPI is the app's maintenance as the API shows it. Callers
// hold a.mu.
func (a *app) maintenanceAPI() *api.Maintenance {
	m := a.st.Maintenance
	if m == nil || !m.On {
		return nil
	}
	out := &api.Maintenance{Since: m.Since, Page: "built-in", RetryAfter: RetryAfter}
	if m.Page != "" {
		out.Page = fmt.Sprintf("custom, %d bytes", len(m.Page))
	}
	if m.Pending != 0 {
		if r := a.release(m.Pending); r != nil && r.Status == api.StatusPending {
			out.Pending = vname(m.Pending)
		}
	}
	return out
}

// responderPage is the page a responder started now answers with: the
// one `on` asks for, else the one saved with the app.
func (h *host) responderPage() string {
	if h.o.maint != nil {
		return h.o.maint.Page
	}
	h.a.mu.Lock()
	defer h.a.mu.Unlock()
	if m := h.a.st.Maintenance; m != nil {
		return m.Page
	}
	return ""
}

// maintenanceDone reports a maintenance switch that reached its target.
func (o *op) maintenanceDone(t rollout.Target) {
	name := o.a.st.Name
	if t.Maintenance() {
		o.info("%s is in maintenance: every request gets 503 (Retry-After: %d) until hctl maintenance %s off", name, RetryAfter, name)
		return
	}
	o.info("%s is out of maintenance: %s is live (switch %.2fs, drain %.2fs)", name, vname(t.Release), o.res.SwitchSeconds, o.res.DrainSeconds)
}

// heldForMaintenance reports whether r is the release deployed while the
// app is in maintenance, pending until off: an agentd restart in the
// middle of another operation (or of off itself) leaves it pending.
func (a *app) heldForMaintenance(r *releaseState) bool {
	m := a.st.Maintenance
	return m != nil && m.On && m.Pending == r.Version && r.Status == api.StatusPending
}
