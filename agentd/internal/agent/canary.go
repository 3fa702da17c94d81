package agent

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/rollout"
	"github.com/agentd/agentd/sockets"
)

// A canary (docs/concepts.md, "Canary") is a release whose processes run
// beside the active release's and get a share of the new connections,
// chosen per connection by the steering program: no proxy. It is three
// rollouts of the engine: the canary's own (rollout.Target.Canary: start
// ceil(P × formation) processes of each socket-holding type, then route P %
// to them), then either promote (an ordinary target of the canary's
// release: its processes are kept, the rest start, the cutover retires the
// old release) or abort (the active release's own target: the canary's
// processes retire, after their sockets' queues emptied). Between them
// no operation holds the app: the canary is state (appState.Canary), which
// an agentd restart or upgrade recovers, split included.

// canaryRecord is an app's canary as its state file keeps it.
type canaryRecord struct {
	Release   int            `json:"release"`
	Percent   float64        `json:"percent"`
	StartedAt time.Time      `json:"started_at"`
	BakeUntil time.Time      `json:"bake_until,omitzero"`
	Formation map[string]int `json:"formation"`
	// Cookies are the SO_COOKIE of the canary's socket, by socket name.
	Cookies map[string]uint64 `json:"cookies,omitempty"`
}

// canaryBlocks refuses an operation that would change what runs while the
// app has a canary. Callers hold a.mu.
func (a *app) canaryBlocks() error {
	c := a.st.Canary
	if c == nil {
		return nil
	}
	return &Error{Code: api.CodeConflict, Reason: api.ReasonCanaryRunning, App: a.st.Name,
		Msg: fmt.Sprintf("app %s has a canary: %s gets %g%% of new connections; promote it or abort it first", a.st.Name, vname(c.Release), c.Percent)}
}

// canaryRefusal says why app a cannot take a canary of percent. Callers
// hold a.mu.
func (ag *Agent) canaryRefusal(a *app, percent float64) error {
	if percent <= 0 || percent >= 100 || math.IsNaN(percent) {
		return errf(api.CodeBadRequest, "canary %g%%: want more than 0 and less than 100", percent)
	}
	if a.st.Active == 0 {
		return errf(api.CodeBadRequest, "app %s has no active release: a canary splits connections with one, so deploy first", a.st.Name)
	}
	if a.inMaintenance() {
		return errf(api.CodeConflict, "app %s is in maintenance: a canary needs the app serving", a.st.Name)
	}
	for _, spec := range a.st.Sockets {
		if a.steer[spec.Name] == nil {
			why := a.steerWhy[spec.Name]
			return &Error{Code: api.CodeBadRequest, Reason: api.ReasonNoSteering, App: a.st.Name,
				Msg: fmt.Sprintf("a canary needs kernel steering, and socket %s of app %s is one shared socket: %s", spec.Name, a.st.Name, why)}
		}
	}
	return nil
}

// canaryTarget is the canary rollout of r at percent: ceil(percent ×
// formation) processes of each type that holds a socket. Callers hold a.mu.
func (ag *Agent) canaryTarget(a *app, r *releaseState, percent float64) (rollout.Target, error) {
	t := a.target(r)
	t.AllTypes, t.Types, t.Formation = false, nil, map[string]int{}
	t.Canary = percent
	t.Previous = a.st.Active
	extra := 0
	for _, typ := range r.Order {
		if !slices.ContainsFunc(a.st.Sockets, func(s sockets.Spec) bool { return s.Type == typ }) {
			continue
		}
		n := max(1, int(math.Ceil(percent/100*float64(a.count(typ)))))
		t.Types = append(t.Types, typ)
		t.Formation[typ] = n
		extra = max(extra, n)
	}
	if len(t.Types) == 0 {
		return t, errf(api.CodeBadRequest, "%s has no process type that holds a socket: a canary has nothing to split", vname(r.Version))
	}
	if t.MaxSurge > 0 && extra > t.MaxSurge {
		return t, errf(api.CodeBadRequest, "a %g%% canary runs %d process(es) of a type beside the formation, above the app's max surge of %d: lower the share or raise the surge", percent, extra, t.MaxSurge)
	}
	return t, nil
}

// Canary is the host's side of a canary's cutover: the canary's sockets
// get percent of new connections, and the canary is saved.
func (h *host) Canary(t rollout.Target) error {
	ag, a, o := h.ag, h.a, h.o
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.release(t.Release)
	if r == nil {
		return fmt.Errorf("release %s is gone", vname(t.Release))
	}
	c := a.st.Canary
	if c == nil || c.Release != t.Release {
		c = &canaryRecord{Release: t.Release, StartedAt: time.Now().UTC(), Formation: maps.Clone(t.Formation)}
		if t.Bake > 0 {
			c.BakeUntil = c.StartedAt.Add(t.Bake)
		}
	}
	c.Percent = t.Canary
	if err := ag.routeCanary(a, c); err != nil {
		return err
	}
	a.st.Canary = c
	r.Status = api.StatusCanary
	o.record(t.Release)
	return nil
}

// routeCanary points each steered socket of a at its canary socket for
// c.Percent of new connections, and parks the canary's sockets in the fd
// store. Callers hold a.mu.
func (ag *Agent) routeCanary(a *app, c *canaryRecord) error {
	for _, h := range a.held {
		s := a.steer[h.Spec.Name]
		if s == nil {
			continue
		}
		g := s.gens[c.Release]
		if g == nil {
			continue // no process of the canary holds this socket
		}
		if err := s.group.Route(h.File, g.File, c.Percent); err != nil {
			return fmt.Errorf("steering %g%% of socket %s to %s: %w", c.Percent, h.Spec.Name, vname(c.Release), err)
		}
		s.canary, s.canaryPercent = c.Release, c.Percent
		if c.Cookies == nil {
			c.Cookies = map[string]uint64{}
		}
		c.Cookies[h.Spec.Name] = g.Cookie()
		s.releases[g.Cookie()] = c.Release
		if ag.cfg.Store != nil {
			ag.cfg.Unstore(canaryStoreName(a.st.Name, h.Spec.Name))
			ag.cfg.Store(canaryStoreName(a.st.Name, h.Spec.Name), g.File)
		}
	}
	return nil
}

func canaryStoreName(app, socket string) string { return app + "." + socket + "@canary" }

// unrouteCanary sends every new connection of a back to the active
// release; the canary's sockets wait for their processes' SIGTERM
// (steerAway). Callers hold a.mu.
func (ag *Agent) unrouteCanary(a *app, release int) {
	for _, h := range a.held {
		s := a.steer[h.Spec.Name]
		if s == nil || s.canary != release {
			continue
		}
		if err := s.group.Route(h.File, nil, 0); err != nil {
			ag.log.Error("steering the canary's share back failed: its processes get connections until they stop", "app", a.st.Name, "socket", h.Spec.Name, "err", err)
		}
		if g := s.gens[release]; g != nil {
			ag.retireSocket(a, s, retiredSocket{release: release, h: g})
			delete(s.gens, release)
		}
		s.canary, s.canaryPercent = 0, 0
		if ag.cfg.Unstore != nil {
			ag.cfg.Unstore(canaryStoreName(a.st.Name, h.Spec.Name))
		}
	}
}

// endCanaryBake ends the bake of the canary's own operation, when it is
// in one: promote passes it, abort fails it (and the canary's operation
// then stops the canary itself). It returns at once, reporting whether it
// did; the caller then waits for the app's operation lock as usual.
func (a *app) endCanaryBake(pass bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur != nil && a.cur.kind == "canary" && a.bakeEnd != nil {
		select {
		case a.bakeEnd <- pass:
			return true
		default:
		}
	}
	return false
}

// canaryOp starts operation kind (promote or abort) on app name's canary:
// the canary's own operation, if it is in its bake, is told to end it
// (pass, or not: ended says it was), then the app's operation lock is
// taken; the caller unlocks o. o is nil when there is no such app, and
// failed says so.
func (ag *Agent) canaryOp(name, kind string, pass bool, waitDrain time.Duration, emit func(api.Event)) (a *app, o *op, ended bool, failed api.OpResult) {
	a, err := ag.get(name)
	if err != nil {
		return nil, nil, false, failNoApp(name, err, emit)
	}
	ended = a.endCanaryBake(pass)
	o = ag.newOp(a, kind, emit)
	o.waitDrain = waitDrain
	o.lock()
	return a, o, ended, api.OpResult{}
}

// Promote finishes an app's canary: its release becomes the active one in
// the whole formation, by a rollout like a deploy's (the canary's
// processes are kept, the rest start), and the old release's processes
// retire. deployedBy names who asked.
func (ag *Agent) Promote(name, deployedBy string, waitDrain time.Duration, emit func(api.Event)) api.OpResult {
	a, o, _, failed := ag.canaryOp(name, "promote", true, waitDrain, emit)
	if o == nil {
		return failed
	}
	defer o.unlock()
	a.mu.Lock()
	c := a.st.Canary
	if c == nil {
		a.mu.Unlock()
		return o.finish(noCanary(name))
	}
	r := a.release(c.Release)
	if r == nil {
		a.mu.Unlock()
		return o.finish(errf(api.CodeInternal, "the canary's release %s is gone", vname(c.Release)))
	}
	t := a.target(r)
	t.Bake = 0 // the canary was the bake
	o.res.Release, o.res.Previous = vname(r.Version), vname(a.st.Active)
	r.DeployedBy = deployedBy
	o.record(r.Version)
	a.mu.Unlock()
	o.info("promoting the canary %s (%g%% of new connections since %s)", vname(r.Version), c.Percent, c.StartedAt.Local().Format("15:04:05"))
	return o.rollout(r, t)
}

// AbortCanary stops an app's canary the zero-downtime way: the canary's
// share of new connections goes back to the active release, its sockets'
// queues empty into its processes, which then drain. The canary's release
// is marked failed.
func (ag *Agent) AbortCanary(name string, waitDrain time.Duration, emit func(api.Event)) api.OpResult {
	a, o, ended, failed := ag.canaryOp(name, "abort", false, waitDrain, emit)
	if o == nil {
		return failed
	}
	defer o.unlock()
	a.mu.Lock()
	c := a.st.Canary
	if c == nil {
		a.mu.Unlock()
		if ended {
			// Its own operation, in its bake, stopped it just now.
			o.info("the canary's bake was aborted, and the canary stopped")
			return o.finish(nil)
		}
		return o.finish(noCanary(name))
	}
	o.res.Release, o.res.Previous = vname(a.st.Active), vname(c.Release)
	t := ag.abortCanary(a, c, "aborted by hand")
	a.mu.Unlock()
	o.info("aborting the canary %s: every new connection goes to %s again", vname(c.Release), vname(t.Release))
	return o.rollout(nil, t)
}

// abortCanary ends a's canary c in the state: new connections go to the
// active release only, the canary's release is failed with why, and the
// returned target (the active release's own) retires its processes. The
// caller rolls it out. Callers hold a.mu.
func (ag *Agent) abortCanary(a *app, c *canaryRecord, why string) rollout.Target {
	ag.unrouteCanary(a, c.Release)
	if r := a.release(c.Release); r != nil {
		r.Status, r.Error = api.StatusFailed, fmt.Sprintf("canary %s", why)
	}
	a.st.Canary = nil
	ag.save(a)
	var t rollout.Target
	if act := a.release(a.st.Active); act != nil {
		t = a.target(act)
	}
	t.Bake, t.ReleasePhase = 0, false
	t.Release, t.Previous = a.st.Active, a.st.Active
	return t
}

func noCanary(app string) error {
	return &Error{Code: api.CodeNotFound, Reason: api.ReasonNoCanary, App: app, Msg: fmt.Sprintf("app %s has no canary", app)}
}

// canaryFailed handles a canary that failed its bake window: it is
// aborted in the same operation, and the deploy reports why.
func (o *op) canaryFailed(r *releaseState, t rollout.Target, be *rollout.BakeError) api.OpResult {
	ag, a := o.ag, o.a
	reason := fmt.Sprintf("canary %s failed its bake: %v", vname(t.Release), be.Reason)
	if be.Aborted {
		reason = fmt.Sprintf("canary %s: %v", vname(t.Release), be.Reason)
	}
	o.info("%s", reason)
	o.hookBakeFailed(t.Release, reason)
	a.mu.Lock()
	c := a.st.Canary
	if c == nil {
		c = &canaryRecord{Release: t.Release}
	}
	at := ag.abortCanary(a, c, reason)
	a.mu.Unlock()
	res, err := o.run(context.Background(), at, nil)
	if err != nil {
		return o.fail(nil, fmt.Errorf("%s; stopping the canary failed: %w", reason, err))
	}
	o.settle(nil, res)
	code := api.CodeBakeFailed
	if be.Aborted {
		code = api.CodeCancelled
	}
	return o.finish(&Error{Code: code, Msg: fmt.Sprintf("%s; the canary is stopped: %s serves every connection", reason, vname(at.Release))})
}

// Canary describes an app's canary.
func (ag *Agent) Canary(name string) (api.Canary, error) {
	a, err := ag.get(name)
	if err != nil {
		return api.Canary{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.st.Canary
	if c == nil {
		return api.Canary{}, noCanary(name)
	}
	out := api.Canary{App: name, Release: vname(c.Release), Active: vname(a.st.Active), Percent: c.Percent,
		StartedAt: c.StartedAt, BakeUntil: c.BakeUntil, Formation: maps.Clone(c.Formation)}
	var active, canary uint64
	for _, h := range a.held {
		s := a.steer[h.Spec.Name]
		if s == nil {
			continue
		}
		counts, err := s.group.Steered()
		if err != nil {
			continue
		}
		active += counts[h.Cookie()]
		if g := s.gens[c.Release]; g != nil {
			canary += counts[g.Cookie()]
		}
	}
	out.Split = []api.CanaryShare{
		{Release: vname(a.st.Active), Percent: 100 - c.Percent, Steered: active},
		{Release: vname(c.Release), Percent: c.Percent, Steered: canary},
	}
	for _, p := range ag.procsAPI(a) {
		if p.Release == out.Release || p.Release == out.Active {
			out.Processes = append(out.Processes, p)
		}
	}
	for _, p := range a.procs {
		if p.release == c.Release && p.typ != "release" {
			out.Crashes += p.restarts
			if p.state == api.StateCrashed {
				out.Crashes++
			}
		}
	}
	sort.SliceStable(out.Processes, func(i, j int) bool { return out.Processes[i].Release > out.Processes[j].Release })
	return out, nil
}

// canaryCrashed handles the exit of a ready canary process: within the
// canary's bake window its own operation, which watches it, aborts the
// canary; after it the process starts again, like a crashed process of
// the active release. Callers hold a.mu.
func (ag *Agent) canaryCrashed(a *app, c *canaryRecord) {
	if time.Now().Before(c.BakeUntil) && a.cur != nil && a.cur.kind == "canary" {
		return
	}
	release := c.Release
	time.AfterFunc(time.Second, func() { ag.restartCanary(a, release) })
}

// restartCanary starts the canary's missing processes again (a crash, or
// agentd started and found some gone), and routes its share again.
func (ag *Agent) restartCanary(a *app, release int) {
	if ag.frozen.Load() {
		return // the new agentd does it
	}
	o := ag.newOp(a, "crash", func(api.Event) {})
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	c := a.st.Canary
	r := a.release(release)
	if c == nil || c.Release != release || a.gone || r == nil {
		a.mu.Unlock()
		return
	}
	t, err := ag.canaryTarget(a, r, c.Percent)
	t.Formation, t.Bake, t.ReleasePhase = maps.Clone(c.Formation), 0, false
	a.mu.Unlock()
	if err != nil {
		ag.log.Error("restarting the canary's processes", "app", a.st.Name, "err", err)
		return
	}
	if res := o.rollout(nil, t); !res.OK {
		ag.log.Error("the canary's processes did not start again", "app", a.st.Name, "release", vname(release), "err", res.Error)
	}
}

// recoverCanary takes the canary's sockets back after agentd started (from
// the previous agentd, from systemd's fd store, or from the canary's
// processes, by cookie; else a new sibling) and routes its share again.
func (ag *Agent) recoverCanary(a *app) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.st.Canary
	if c == nil {
		return
	}
	for _, h := range a.held {
		s := a.steer[h.Spec.Name]
		if s == nil {
			continue
		}
		g, err := ag.reclaimCanarySocket(a, h, c)
		if err != nil {
			ag.log.Error("the canary's socket is not available", "app", a.st.Name, "socket", h.Spec.Name, "err", err)
			continue
		}
		s.gens[c.Release] = g
	}
	if err := ag.routeCanary(a, c); err != nil {
		ag.log.Error("the canary's share is not steered", "app", a.st.Name, "err", err)
	}
	ag.log.Info("canary recovered", "app", a.st.Name, "release", vname(c.Release), "percent", c.Percent)
}

func (ag *Agent) reclaimCanarySocket(a *app, h *sockets.Held, c *canaryRecord) (*sockets.Held, error) {
	spec := h.Spec
	cookie := c.Cookies[spec.Name]
	if ag.cfg.Inherit != nil {
		if f := ag.cfg.Inherit(socketKey(a.st.Name, spec.Name) + "@canary"); f != nil {
			if g, err := sockets.FromFile(spec, f); err == nil {
				return g, nil
			}
			f.Close()
		}
	}
	if ag.cfg.Claim != nil {
		if f := ag.cfg.Claim(canaryStoreName(a.st.Name, spec.Name)); f != nil {
			if g, err := sockets.FromFile(spec, f); err == nil && (cookie == 0 || g.Cookie() == cookie) {
				return g, nil
			}
			f.Close()
		}
	}
	for _, p := range a.procs {
		if p.release != c.Release || p.typ != spec.Type || p.p.Exited() || cookie == 0 {
			continue
		}
		if g, err := sockets.TakeMatching(p.p.PID(), spec, cookie); err == nil {
			return g, nil
		}
	}
	return h.Sibling()
}
