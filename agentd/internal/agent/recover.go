package agent

import (
	"fmt"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/rollout"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/sockets"
)

// Recovery after agentd (re)started: adoption of the processes a previous
// agentd started, the sockets taken back, the interrupted operation
// reported, and a reconcile rollout (or the rest of a bake window).

// recover brings a loaded app to one consistent state after agentd
// (re)started, whether after an upgrade, a restart, a crash or a reboot:
// processes a previous agentd started are adopted, the sockets are taken
// back (inherited, or from the processes that hold them, or bound again),
// an operation that was in progress is reported interrupted, and the app is
// reconciled with its active release and formation in the background.
func (ag *Agent) recover(a *app) {
	for _, rec := range a.st.Processes {
		sp, err := supervisor.Adopt(rec.PID, rec.StartedAt)
		if err != nil {
			ag.log.Info("process from before is gone", "app", a.st.Name, "process", rec.Name, "pid", rec.PID)
			continue
		}
		pr := &proc{typ: rec.Type, index: rec.Index, release: rec.Release, p: sp, state: rec.State,
			restarts: rec.Restarts, readyAt: rec.ReadyAt, log: rec.Log, notifyPath: rec.Notify,
			extend: make(chan time.Duration, 1), cron: rec.Cron}
		pr.fwd.off = rec.LogSent
		pr.killAt = rec.KillAt
		pr.retired = rec.Type == scriptPostdrain
		if rec.Probe != "" {
			// The process keeps its probe socket; agentd's copy is gone, so
			// a tcp probe of it is a bare connect (readiness.Check).
			pr.probe = &readiness.Probe{Addr: rec.Probe}
		}
		a.procs = append(a.procs, pr)
		ag.log.Info("adopted process", "app", a.st.Name, "release", vname(rec.Release), "process", rec.Name, "pid", rec.PID, "state", rec.State)
	}
	ag.adoptRuns(a)
	for i, spec := range a.st.Sockets {
		h, err := ag.reclaimSocket(a, i, spec)
		if err != nil {
			ag.log.Error("socket not available", "app", a.st.Name, "socket", spec.Name, "err", err)
			continue
		}
		a.held = append(a.held, h)
		if c := h.Cookie(); c != 0 && a.st.Cookies[spec.Name] != c {
			ag.setCookie(a, spec.Name, c)
		}
		ag.startSteering(a, h)
	}
	ag.recoverCanary(a)
	var bake *opRecord
	if op := a.st.Op; op != nil && op.Phase == rollout.PhaseBake && op.Release == a.st.Active && op.BakeUntil.After(time.Now()) {
		// Past its cutover, in its bake window: the bake resumes.
		bake = op
		ag.log.Info("resuming the bake window of an interrupted deploy", "app", a.st.Name, "release", vname(op.Release), "until", op.BakeUntil)
		a.st.Op = nil
	}
	if op := a.st.Op; op != nil {
		if r := a.release(op.Release); r != nil && r.Status != api.StatusActive && !a.heldForMaintenance(r) {
			r.Status = api.StatusFailed
			r.Error = fmt.Sprintf("interrupted: agentd stopped during the %s phase of the %s", op.Phase, op.Kind)
		}
		ag.log.Warn("operation interrupted by an agentd restart", "app", a.st.Name, "op", op.Kind, "phase", op.Phase)
	}
	if a.st.Op != nil {
		// Any release left "releasing" or "pending" by the interruption.
		for _, r := range a.st.Releases {
			if a.heldForMaintenance(r) {
				continue // deployed while in maintenance, waiting for off
			}
			if r.Status == api.StatusPending || r.Status == api.StatusReleasing {
				r.Status = api.StatusFailed
				if r.Error == "" {
					r.Error = "interrupted: agentd stopped before this release was switched to"
				}
			}
		}
	}
	// A bake that resumes stays recorded: an agentd killed again before
	// the engine re-enters the bake finds it still.
	a.st.Op = bake
	a.mu.Lock()
	ag.save(a)
	a.mu.Unlock()
	ag.obs.ActiveRelease(a.st.Name, vnameOr(a.st.Active))
	ag.observeMaintenance(a)
	for _, p := range a.procs {
		if p.run != nil {
			continue // adoptRuns watches them
		}
		r := a.release(p.release)
		if p.cron {
			// A cron run adopted: it finishes, and counts as running.
			p.p.OnExit(func() { ag.cronExit(a, p) })
			continue
		}
		p.p.OnExit(func() { ag.watchExit(a, p, r) })
		go ag.attachNotify(a, p)
		if p.state == api.StateReady {
			go ag.watchLiveness(a, p)
		}
	}
	if len(a.held) == len(a.st.Sockets) {
		go ag.reconcile(a, bake)
	}
	ag.resumePostdrain(a)
}

// reclaimSocket gets socket i of a back: from the previous agentd (an
// upgrade), else from systemd (a socket unit or the fd store),
// else from a running process that holds it (a restart or crash: the apps
// kept it open and kept serving), else by binding it again at the address
// it had.
//
// With steering every release's socket has the app's address: the one
// wanted is the active release's, known by the cookie saved with the
// state. A socket systemd passes that is not it is an earlier release's
// (a socket unit's own socket outlives the release that used it): it is
// stopped, which moves anything queued on it to the routed socket.
func (ag *Agent) reclaimSocket(a *app, i int, spec sockets.Spec) (*sockets.Held, error) {
	cookie := a.st.Cookies[spec.Name]
	if ag.cfg.Inherit != nil {
		if f := ag.cfg.Inherit(socketKey(a.st.Name, spec.Name)); f != nil {
			if h, err := sockets.FromFile(spec, f); err == nil {
				return h, nil
			}
			f.Close()
		}
	}
	bound := ""
	if i < len(a.st.Bound) {
		bound = a.st.Bound[i]
	}
	var fromSystemd *sockets.Held
	if ag.cfg.Claim != nil {
		if f := ag.cfg.Claim(a.st.Name + "." + spec.Name); f != nil {
			h, err := sockets.FromFile(spec, f)
			switch {
			case err != nil:
				f.Close()
			case cookie == 0 || h.Cookie() == cookie:
				return h, nil
			default:
				// A socket unit's socket that an earlier release used, or
				// a fresh one after a reboot: it serves unless the active
				// release's processes hold a socket of their own.
				fromSystemd = h
			}
		}
	}
	if cookie != 0 {
		for _, p := range a.procs {
			if p.typ != spec.Type && p.typ != rollout.Responder || p.p.Exited() || p.release != a.st.Active {
				continue
			}
			if h, err := sockets.TakeMatching(p.p.PID(), spec, cookie); err == nil {
				ag.log.Info("socket taken back from a running process", "app", a.st.Name, "socket", spec.Name, "pid", p.p.PID())
				if fromSystemd != nil {
					// systemd keeps its copy; the steering program sends
					// it nothing.
					fromSystemd.File.Close()
				}
				return h, nil
			}
		}
	}
	if fromSystemd != nil {
		return fromSystemd, nil
	}
	if bound != "" && cookie == 0 {
		// No cookie yet (the first release got the app's socket itself):
		// the active release's processes hold it. Another release's
		// processes hold a sibling bound at the same address when the
		// socket is steered, which must never be taken for it; without
		// steering every process shares the one socket.
		steered, _ := ag.steerable(spec)
		for _, p := range a.procs {
			if p.typ != spec.Type && p.typ != rollout.Responder || p.p.Exited() || steered && p.release != a.st.Active {
				continue
			}
			if h, err := sockets.TakeFrom(p.p.PID(), spec, bound); err == nil {
				ag.log.Info("socket taken back from a running process", "app", a.st.Name, "socket", spec.Name, "pid", p.p.PID())
				return h, nil
			}
		}
	}
	again := spec
	if bound != "" && spec.Network != "unix" {
		// Port 0 was resolved once; keep the port the clients know.
		again.Address = bound
	}
	if ok, _ := ag.steerable(spec); ok && cookie != 0 {
		// Other releases' processes may still hold sockets of the group:
		// join it.
		h, err := sockets.ListenReuse(again, false)
		if err == nil && ag.cfg.Store != nil {
			ag.cfg.Store(a.st.Name+"."+spec.Name, h.File)
		}
		return h, err
	}
	return ag.bindApp(a.st.Name, again)
}

// listen binds a socket agentd owns itself and, under systemd, parks a
// copy in the fd store so that a restarted agentd gets it back even when
// no app process holds it.
func (ag *Agent) listen(app string, spec sockets.Spec) (*sockets.Held, error) {
	h, err := sockets.Listen(spec)
	if err == nil && ag.cfg.Store != nil {
		ag.cfg.Store(app+"."+spec.Name, h.File)
	}
	return h, err
}

// claimOrListen gives a new app the socket systemd passed for it by name,
// or binds it.
func (ag *Agent) claimOrListen(app string, spec sockets.Spec) (*sockets.Held, error) {
	if ag.cfg.Claim != nil {
		if f := ag.cfg.Claim(app + "." + spec.Name); f != nil {
			h, err := sockets.FromFile(spec, f)
			if err != nil {
				f.Close()
				return nil, err
			}
			ag.log.Info("socket from systemd", "app", app, "socket", spec.Name, "bound", h.Bound())
			return h, nil
		}
	}
	return ag.bindApp(app, spec)
}

func socketKey(app, name string) string { return "app/" + app + "/" + name }

// reconcile makes the running processes match the active release and the
// formation after agentd (re)started: processes an interrupted drain left
// drain on, processes of other releases (an interrupted deploy's new ones)
// retire, missing ones start, surplus ones retire: a rollout like any
// other. A bake that was in progress resumes for the rest of its window.
func (ag *Agent) reconcile(a *app, bake *opRecord) {
	o := ag.newOp(a, "boot", func(api.Event) {})
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	r := a.release(a.st.Active)
	var draining []*proc
	for _, p := range a.procs {
		if !p.p.Exited() && p.state == api.StateDraining {
			draining = append(draining, p)
		}
	}
	var t rollout.Target
	if r != nil {
		t = a.target(r)
		t.Previous = r.Version
		if mt, ok := a.maintenanceTarget(); ok {
			// In maintenance: the responder alone runs (maintenance.go).
			t, bake = mt, nil
		}
	}
	a.mu.Unlock()
	if len(draining) > 0 {
		ag.log.Info("draining processes of an interrupted operation", "app", a.st.Name, "count", len(draining))
		go ag.drain(a, draining, nil)
	}
	if r == nil {
		return
	}
	if bake != nil {
		ag.resumeBake(o, r, t, bake)
		return
	}
	res := o.rollout(nil, t)
	if !res.OK {
		ag.log.Error("processes not ready after agentd start", "app", a.st.Name, "err", res.Error)
	}
	a.mu.Lock()
	c := a.st.Canary
	a.mu.Unlock()
	if c != nil {
		// Its processes that died meanwhile start again (canary.go).
		go ag.restartCanary(a, c.Release)
	}
}
