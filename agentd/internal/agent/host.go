package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/rollout"
)

// host is how the rollout engine reaches one app for one operation: its
// processes, sockets, clock and state (rollout.Host).
type host struct {
	ag *Agent
	a  *app
	o  *op
	// r is the operation's new release, nil when it makes none.
	r *releaseState
	// formation, when set (scale), is saved at the cutover.
	formation map[string]int
	// restarts carries a crashed process's restart count to its
	// replacement, by name.
	restarts map[string]int
	// started are the processes this operation started.
	started []*proc
	// target and previous: the releases of the rollout's target.
	target, previous int

	// held are started processes not yet recorded (flush).
	heldMu sync.Mutex
	held   []*proc
}

// flush records the processes started since the last flush with one
// write of the state, then lets them run: as soon as the record is in
// place for a restarted agentd to read, its fsync overlapping their
// start-up (releaseRecorded, procs.go). When the state cannot be written
// (or agentd is handing over to a new agentd, which owns the state now)
// they are given up unrun.
func (h *host) flush() error {
	_, err := h.flushed()
	return err
}

// flushed is flush that reports whether it wrote the state.
func (h *host) flushed() (wrote bool, err error) {
	h.heldMu.Lock()
	defer h.heldMu.Unlock()
	if len(h.held) == 0 {
		return false, nil
	}
	ps := h.held
	h.held = nil
	h.o.pause("record", h.r)
	h.a.mu.Lock()
	released := false
	if h.ag.frozen.Load() {
		err = errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade): nothing starts meanwhile")
	} else {
		recordAt := time.Now()
		for _, p := range ps {
			p.startT.recordAt = recordAt
		}
		err = h.ag.saveThen(h.a, func() { released = true; h.ag.releaseRecorded(h.a, ps) })
	}
	h.a.mu.Unlock()
	for _, p := range ps {
		if !released {
			p.p.Cancel()
		}
	}
	if released {
		h.ag.reportStarts(h.a, ps)
	}
	if err != nil {
		return false, fmt.Errorf("recording the new processes: %w", err)
	}
	return true, nil
}

// procView is a process as the engine sees it: a snapshot of whether it
// is being stopped, so that the engine never reads what app.mu guards.
type procView struct {
	p       *proc
	retired bool
}

func (v procView) Type() string          { return v.p.typ }
func (v procView) Index() int            { return v.p.index }
func (v procView) Release() int          { return v.p.release }
func (v procView) Retired() bool         { return v.retired }
func (v procView) Done() <-chan struct{} { return v.p.p.Done() }
func (v procView) Name() string          { return v.p.name() }

func procsOf(ps []rollout.Proc) []*proc {
	out := make([]*proc, len(ps))
	for i, p := range ps {
		out[i] = p.(procView).p
	}
	return out
}

func (h *host) Now() time.Time                         { return time.Now() }
func (h *host) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (h *host) Live() []rollout.Proc {
	h.a.mu.Lock()
	defer h.a.mu.Unlock()
	var out []rollout.Proc
	for _, p := range h.a.procs {
		if p.p.Exited() || p.typ == "release" && p.retired || p.cron || p.run != nil || p.typ == scriptPostdrain {
			// A cron run (cron.go), a one-off (run.go) and a postdrain script
			// (appjson.go) are no part of the formation: a rollout neither
			// counts nor retires them.
			continue
		}
		if c := h.a.st.Canary; c != nil && p.release == c.Release && h.target != c.Release && h.o.kind != "abort" {
			// A canary's processes belong to no other rollout (canary.go).
			continue
		}
		out = append(out, procView{p: p, retired: p.retired || p.state == api.StateDraining})
	}
	return out
}

func (h *host) Enter(ph rollout.Phase) error {
	o, a := h.o, h.a
	switch ph.Name {
	case rollout.PhaseRelease:
		o.enter(api.PhaseRelease, "running the release command: %s", h.r.Procfile["release"])
		a.mu.Lock()
		h.r.Status = api.StatusReleasing
		// Written with the record of the release command's process
		// (runScript), before it runs.
		o.recordLater(h.r.Version)
		a.mu.Unlock()
		return nil
	case rollout.PhasePreboot:
		if o.kind == "scale" {
			o.enter(api.PhasePreboot, "scaling %s", a.st.Name)
		} else {
			o.enter(api.PhasePreboot, "%s", ph.Message)
		}
		if h.r != nil {
			a.mu.Lock()
			var missing []string
			for _, s := range a.held {
				if _, ok := h.r.Procfile[s.Spec.Type]; !ok && !slices.Contains(missing, s.Spec.Type) {
					missing = append(missing, s.Spec.Type)
				}
			}
			a.mu.Unlock()
			if len(missing) > 0 {
				o.info("warning: the Procfile has no %s process type, so nothing serves its socket", strings.Join(missing, ", "))
			}
		}
	case rollout.PhaseReadiness:
		// The phase goes to disk with the record of the processes it
		// waits for (flush): one durable write where there were two,
		// and both stood between the processes' start and the wait for
		// their readiness, longer than a quick app's boot.
		a.mu.Lock()
		o.recordLaterAs(h.target, rollout.PhaseReadiness)
		boot := time.Duration(a.st.BootTimeout)
		a.mu.Unlock()
		wrote, err := h.flushed()
		if err != nil {
			return err
		}
		o.pause("preboot", h.r)
		o.enter(api.PhaseReadiness, "%s (boot timeout %s)", ph.Message, boot)
		if wrote {
			a.mu.Lock()
			o.unsaved = false
			a.mu.Unlock()
			return nil
		}
	case rollout.PhaseCutover:
		o.enter(api.PhaseCutover, "%s", ph.Message)
	case rollout.PhaseBake:
		// Saved before it is announced: an agentd killed once the client
		// saw the bake begin must find it on disk and resume it.
		a.mu.Lock()
		a.st.Op = &opRecord{Kind: o.kind, Release: h.target, Phase: rollout.PhaseBake, Started: o.start,
			BakeUntil: ph.Until, Previous: h.previous}
		h.ag.save(a)
		a.mu.Unlock()
		o.enter(api.PhaseBake, "%s, until %s", ph.Message, ph.Until.Format("15:04:05"))
		return nil
	case rollout.PhaseDrain:
		a.mu.Lock()
		deadline := time.Duration(a.st.DrainTimeout).String()
		if len(a.st.DrainTimeouts) > 0 {
			var per []string
			for _, typ := range slices.Sorted(maps.Keys(a.st.DrainTimeouts)) {
				per = append(per, fmt.Sprintf("%s %s", typ, time.Duration(a.st.DrainTimeouts[typ])))
			}
			deadline = strings.Join(per, ", ") + ", others " + deadline
		}
		how := "SIGKILL"
		if a.st.ShedRate > 0 {
			how = fmt.Sprintf("connections shed at %g/s, then SIGKILL,", a.st.ShedRate)
		}
		a.mu.Unlock()
		o.enter(api.PhaseDrain, "%s, %s after %s", ph.Message, how, deadline)
	default:
		o.enter(ph.Name, "%s", ph.Message)
	}
	a.mu.Lock()
	switch ph.Name {
	case rollout.PhasePreboot:
		// Written with the record of the first process it starts
		// (flush), or by the cutover when it starts none: until then
		// nothing of it runs (recordLater).
		o.recordLater(h.target)
	case rollout.PhaseCutover:
		// Written by Activate, with the cutover itself, which comes next:
		// a write of its own would stand between the new release's
		// readiness and its first connection, and tell a restarted agentd
		// nothing more (before Activate's write the old release is still
		// the active one, and the deploy is interrupted either way).
		o.recordLater(h.target)
	default:
		o.record(h.target)
	}
	a.mu.Unlock()
	return nil
}

func (h *host) Info(msg string)                  { h.o.info("%s", msg) }
func (h *host) Event(p rollout.Proc, msg string) { h.o.event("process", p.Name(), msg) }

func (h *host) RunRelease(ctx context.Context, release int) error {
	cmd, ok := h.r.Procfile["release"]
	if !ok {
		return nil
	}
	return h.ag.runRelease(ctx, h.a, h.r, cmd, h.o)
}

func (h *host) Start(ctx context.Context, release int, typ string, index int) (rollout.Proc, error) {
	ag, a := h.ag, h.a
	if ag.frozen.Load() {
		// The new agentd owns the state now: a process started here
		// would be recorded nowhere.
		return nil, errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade): nothing starts meanwhile")
	}
	a.mu.Lock()
	r := a.release(release)
	a.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("release %s is gone", vname(release))
	}
	var p *proc
	var err error
	if typ == rollout.Responder {
		p, err = ag.startResponder(a, r, index, h.responderPage())
	} else {
		p, err = ag.startProc(a, r, typ, index)
	}
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if n, ok := h.restarts[p.name()]; ok {
		p.restarts = n
	}
	a.mu.Unlock()
	h.started = append(h.started, p)
	h.heldMu.Lock()
	h.held = append(h.held, p)
	h.heldMu.Unlock()
	h.o.event("process", p.name(), fmt.Sprintf("%s %s started (pid %d)", vname(r.Version), p.name(), p.p.PID()))
	return procView{p: p}, nil
}

func (h *host) AwaitReady(ctx context.Context, rp rollout.Proc) error {
	if err := h.flush(); err != nil {
		return err
	}
	p := rp.(procView).p
	a := h.a
	a.mu.Lock()
	kind := a.readinessFor(p.release, p.typ)
	boot := time.Duration(a.st.BootTimeout)
	a.mu.Unlock()
	err := h.ag.waitReady(ctx, a, p, kind, boot)
	if err == nil {
		err = h.ag.checkSockets(a, p)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return h.o.explain(p, kind, boot, err)
	}
	h.o.event("process", p.name(), fmt.Sprintf("%s %s ready (%s) in %.2fs", vname(p.release), p.name(), kind, p.readyAt.Sub(p.p.StartedAt()).Seconds()))
	go h.ag.watchLiveness(a, p)
	return nil
}

func (h *host) Retire(ps []rollout.Proc) <-chan rollout.Drain {
	// A process started and not recorded yet is recorded first: its drain
	// is then the same as any other's.
	h.flush()
	procs := procsOf(ps)
	h.a.mu.Lock()
	timeout := time.Duration(h.a.st.DrainTimeout)
	for _, p := range procs {
		p.retired = true
	}
	h.a.mu.Unlock()
	ch := make(chan rollout.Drain, 1)
	go func() {
		// Steered sockets: the old processes get no new connection any
		// more; what they have queued empties first (steer.go).
		h.ag.steerAway(h.a, procs)
		d, killed, cut := h.ag.drain(h.a, procs, h.o)
		ch <- rollout.Drain{Took: d, Killed: killed, Cut: cut, Timeout: timeout}
	}()
	return ch
}

func (h *host) Activate(t rollout.Target) error {
	ag, a, o := h.ag, h.a, h.o
	a.mu.Lock()
	prev := a.st.Active
	r := a.release(t.Release)
	if r == nil {
		a.mu.Unlock()
		return fmt.Errorf("release %s is gone", vname(t.Release))
	}
	for _, p := range a.procs {
		if !p.p.Exited() || (!t.AllTypes && !slices.Contains(t.Types, p.typ)) {
			continue
		}
		// A crashed process of the types rolled out is replaced by the
		// rollout: its pending restart must not start another.
		if tm, ok := a.backoff[p.name()]; ok {
			tm.Stop()
			delete(a.backoff, p.name())
		}
		p.retired = true
	}
	if t.Release != prev {
		if pr := a.release(prev); pr != nil {
			pr.Status = api.StatusRetired
		}
		ag.steerCutover(a, prev, t.Release)
		if c := a.st.Canary; c != nil && c.Release == t.Release {
			a.st.Canary = nil // promoted
		}
		a.st.Active = t.Release
		a.st.Config = maps.Clone(r.Config)
	}
	r.Status = api.StatusActive
	r.Error = ""
	if h.formation != nil {
		maps.Copy(a.st.Formation, h.formation)
	}
	switch {
	case t.Maintenance() && o.maint != nil:
		a.st.Maintenance = o.maint // saved by o.record below
	case o.maintOff:
		a.st.Maintenance = nil
	}
	a.cutover = true
	o.record(t.Release)
	a.mu.Unlock()
	ag.obs.ActiveRelease(a.st.Name, vname(t.Release))
	if o.maint != nil || o.maintOff {
		ag.observeMaintenance(a)
	}
	ag.kickCron() // the next runs use the new release's jobs
	o.pause("cutover", h.r)
	return nil
}

func (h *host) Watch(ctx context.Context, ps []rollout.Proc) <-chan error {
	return h.ag.watchBake(ctx, h.a, procsOf(ps))
}

func (h *host) Memory() (rollout.Memory, bool) {
	return h.o.memory()
}

// explain turns a readiness failure into a message that says what went
// wrong, with the last lines the process wrote.
func (o *op) explain(p *proc, kind readiness.Kind, boot time.Duration, err error) error {
	var what string
	te, trapped := errors.AsType[*trapError](err)
	switch {
	case trapped && te.err == nil:
		// Failed early: the trap says it all.
		what = te.f.Msg
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
	if trapped && te.err != nil {
		what += "; likely cause: " + te.f.Msg
	}
	if tail != "" {
		what += "; its last output:\n" + tail
	}
	if trapped {
		// The Reason lets a client add its own advice (hctl names flags).
		return &Error{Code: api.CodeDeployFailed, Msg: what, Err: err, Reason: te.f.Trap, App: o.a.st.Name}
	}
	return errors.New(what)
}
