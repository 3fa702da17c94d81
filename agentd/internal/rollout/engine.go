package rollout

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Phases of a rollout, in order.
const (
	PhaseRelease   = "release"
	PhasePreboot   = "preboot"
	PhaseReadiness = "readiness"
	PhaseCutover   = "cutover"
	PhaseCanary    = "canary"
	PhaseBake      = "bake"
	PhaseDrain     = "drain"
)

// Phase is what the host is told on entering a phase.
type Phase struct {
	Name    string
	Message string
	// Until is the end of the bake window (PhaseBake only): the host
	// saves it so that a restarted agentd resumes the bake.
	Until time.Time
}

// Host is everything the engine reaches outside itself: processes,
// sockets, clocks and the state store. agentd's core implements it for
// real processes; the engine's tests implement it with fakes.
type Host interface {
	// Now and After are the engine's clock.
	Now() time.Time
	After(d time.Duration) <-chan time.Time
	// Live lists the app's processes that have not exited.
	Live() []Proc
	// Enter starts a phase: the host saves the phase (and the bake
	// deadline) before the engine goes on; the cutover phase it may save
	// with the cutover (Activate), which comes next.
	Enter(p Phase) error
	// Info and Event report progress (Event about one process).
	Info(msg string)
	Event(p Proc, msg string)
	// RunRelease runs the release command of the release to completion.
	RunRelease(ctx context.Context, release int) error
	// Start starts process TYPE.INDEX of the release. The process is
	// recorded in the saved state before it runs any code of the app.
	Start(ctx context.Context, release int, typ string, index int) (Proc, error)
	// AwaitReady blocks until p is ready, or fails (it exited, its boot
	// timeout passed, ctx ended) with an error that explains.
	AwaitReady(ctx context.Context, p Proc) error
	// Retire sends SIGTERM to ps at once and drains them: each is
	// SIGKILLed at its drain deadline. The channel gets one result when
	// all of them have exited.
	Retire(ps []Proc) <-chan Drain
	// Activate makes the release the active one, with the target's
	// formation, and saves it: the cutover.
	Activate(t Target) error
	// Canary sends t.Canary percent of the new connections to t.Release's
	// processes, the rest staying with the active release's, and saves
	// it: a canary's cutover.
	Canary(t Target) error
	// Watch watches ps for the bake window: the channel gets the first
	// failure (an exit, failed health probes, WATCHDOG=trigger). It ends
	// with ctx.
	Watch(ctx context.Context, ps []Proc) <-chan error
	// Memory estimates what a new process of each type needs and what
	// the machine can still give (ok false when it cannot tell).
	Memory() (m Memory, ok bool)
}

// Drain is the outcome of retiring processes.
type Drain struct {
	Took time.Duration
	// Killed names the processes SIGKILLed at the drain timeout
	// ("v3 web.1"), Cut how many connections they held then.
	Killed  []string
	Cut     int
	Timeout time.Duration
}

func (d *Drain) add(o Drain) {
	d.Took = max(d.Took, o.Took)
	d.Killed = append(d.Killed, o.Killed...)
	d.Cut += o.Cut
	d.Timeout = max(d.Timeout, o.Timeout)
}

// Controls are the ways to steer a rollout in progress.
type Controls struct {
	// BakeEnd ends a bake early: true passes it, false aborts it (the
	// automatic rollback). nil: no such control.
	BakeEnd <-chan bool
}

// Result is what a rollout did.
type Result struct {
	Plan    Plan
	Started []Proc
	// Cutover: the target release became active.
	Cutover bool
	// Canary: the target release gets its canary share (Target.Canary).
	Canary bool
	// Switch is the time from the start of preboot to the cutover.
	Switch time.Duration
	// Drained gets one Drain once every process the rollout retired has
	// exited (or was killed at its deadline). The rollout itself ends at
	// the cutover, or at the end of its bake: the drain goes on, and the
	// next rollout of the app may start meanwhile. Any number of such
	// generations may drain at once, each with its own deadline.
	Drained <-chan Drain
	// Surge is the surge the rollout used; Lowered says why it is lower
	// than asked ("" when it is not).
	Surge   int
	Lowered string
}

// Engine carries out rollouts through a Host.
type Engine struct {
	Host Host
}

// Run takes the app to target t. Before the cutover, a failure (or ctx
// ending) stops the new processes and leaves the previous release serving
// in its formation; the error is an *Error. After the cutover, a failed
// bake returns a *BakeError at once (the old processes drain on); the
// caller rolls back.
func (e *Engine) Run(ctx context.Context, t Target, ctl Controls) (Result, error) {
	h := e.Host
	var res Result
	if t.ReleasePhase {
		if err := h.Enter(Phase{Name: PhaseRelease}); err != nil {
			return res, &Error{Phase: PhaseRelease, Err: err}
		}
		if err := h.RunRelease(ctx, t.Release); err != nil {
			return res, &Error{Phase: PhaseRelease, Err: fmt.Errorf("release phase: %w", err)}
		}
	}
	if t.ReleaseOnly {
		return res, nil
	}
	plan := MakePlan(h.Live(), t)
	res.Plan = plan
	r := &run{h: h, t: t, phase: PhasePreboot}
	for _, tp := range plan.Types {
		r.types = append(r.types, &typeRun{tp: tp, old: append([]Proc(nil), tp.Retire...)})
	}
	surge, lowered, err := r.surge(plan)
	if err != nil {
		return res, &Error{Phase: PhasePreboot, Err: err}
	}
	res.Surge, res.Lowered = surge, lowered
	start := h.Now()
	if err := h.Enter(Phase{Name: PhasePreboot, Message: fmt.Sprintf("starting %d process(es) of %s beside the old ones", plan.Starts(), vname(t.Release))}); err != nil {
		return res, &Error{Phase: PhasePreboot, Err: err}
	}
	if lowered != "" {
		h.Info(lowered)
	}
	if err := r.preboot(ctx, surge); err != nil {
		res.Started = r.started
		return res, r.abort(err)
	}
	if err := r.stopFirst(ctx); err != nil {
		res.Started = r.started
		return res, r.abort(err)
	}
	if err := ctx.Err(); err != nil {
		res.Started = r.started
		return res, r.abort(fmt.Errorf("%w", err))
	}
	res.Started = r.started
	if t.Canary > 0 {
		return r.canary(ctx, ctl, res)
	}
	if err := r.enter(Phase{Name: PhaseCutover, Message: fmt.Sprintf("%s is ready: sending SIGTERM to the old processes", vname(t.Release))}); err != nil {
		return res, r.abort(err)
	}
	if err := h.Activate(t); err != nil {
		return res, r.abort(fmt.Errorf("cutover: %w", err))
	}
	res.Cutover = true
	res.Switch = h.Now().Sub(start)
	var old []Proc
	for _, tr := range r.types {
		old = append(old, tr.old...)
		tr.old = nil
	}
	r.retire(old)

	if t.Bake > 0 && t.Release != t.Previous && len(r.started) > 0 {
		if err := r.bake(ctx, ctl); err != nil {
			return res, err
		}
	}
	if err := h.Enter(Phase{Name: PhaseDrain, Message: fmt.Sprintf("draining %d old process(es)", r.retiring)}); err != nil {
		// The cutover is saved; what is left is the drain, which the host
		// carries on whether or not this phase was recorded.
		h.Info(fmt.Sprintf("warning: %v", err))
	}
	res.Drained = r.drained()
	return res, nil
}

// run is one rollout in progress.
type run struct {
	h     Host
	t     Target
	types []*typeRun

	started  []Proc
	drains   []<-chan Drain
	retiring int
	phase    string // the phase entered last
	// early counts old processes retired before the cutover: the old
	// release is no longer untouched, and a failure must restore it.
	early int
}

type typeRun struct {
	tp      TypePlan
	next    int    // next index of tp.Start to start
	old     []Proc // to retire, not yet retired
	retired []Proc // retired by this rollout before the cutover
	started []Proc
}

func (tr *typeRun) remaining() int { return len(tr.tp.Start) - tr.next }

// alive counts the processes of the type that belong to the app or to
// the rollout now: kept ones, new ones, old ones, retired ones still
// draining.
func (tr *typeRun) alive() int {
	n := len(tr.tp.Keep) + len(tr.started) + len(tr.old)
	for _, p := range tr.retired {
		select {
		case <-p.Done():
		default:
			n++
		}
	}
	return n
}

// preboot starts the new processes of the overlap types, in rounds that
// keep each type within its formation plus surge, and waits for them to
// become ready. Between rounds, as many old processes retire as new ones
// became ready.
func (r *run) preboot(ctx context.Context, surge int) error {
	// Old processes beyond the formation (left by an interrupted
	// operation) hold no share of it: they retire at once, the stale
	// releases' first, so that the surge bound leaves room to start.
	for _, tr := range r.types {
		if tr.tp.Strategy == StopFirst || tr.remaining() == 0 {
			continue
		}
		if excess := len(tr.tp.Keep) + len(tr.old) - tr.tp.Want; excess > 0 {
			sort.SliceStable(tr.old, func(i, j int) bool {
				return tr.old[i].Release() != r.t.Previous && tr.old[j].Release() == r.t.Previous
			})
			k := min(excess, len(tr.old))
			r.retireEarly(tr, tr.old[:k])
			tr.old = tr.old[k:]
		}
	}
	for {
		var batch []Proc
		var waitOn []Proc
		counts := map[*typeRun]int{}
		pending := false
		for _, tr := range r.types {
			if tr.tp.Strategy == StopFirst || tr.remaining() == 0 {
				continue
			}
			pending = true
			room := tr.tp.Want + surge - tr.alive()
			if room <= 0 {
				waitOn = append(waitOn, tr.retired...)
				continue
			}
			started, err := r.startNext(ctx, tr, min(room, tr.remaining()))
			batch = append(batch, started...)
			counts[tr] += len(started)
			if err != nil {
				return err
			}
		}
		if !pending {
			return nil
		}
		if len(batch) == 0 {
			if err := waitAny(ctx, waitOn); err != nil {
				return err
			}
			continue
		}
		if err := r.enter(Phase{Name: PhaseReadiness, Message: fmt.Sprintf("waiting for %d process(es) to become ready", len(batch))}); err != nil {
			return err
		}
		if err := awaitAll(ctx, r.h, batch); err != nil {
			return err
		}
		for _, tr := range r.types {
			n := counts[tr]
			if n == 0 || tr.remaining() == 0 {
				continue // the last batch's old ones retire at cutover
			}
			k := min(n, len(tr.old))
			r.retireEarly(tr, tr.old[:k])
			tr.old = tr.old[k:]
		}
	}
}

// stopFirst replaces the processes of the stop-first types: the old ones
// are stopped, and have exited, before the new ones start.
func (r *run) stopFirst(ctx context.Context) error {
	for _, tr := range r.types {
		if tr.tp.Strategy != StopFirst || (tr.remaining() == 0 && len(tr.old) == 0) {
			continue
		}
		if len(tr.old) > 0 && tr.remaining() > 0 {
			r.h.Info(fmt.Sprintf("stop-first: stopping %d old %s process(es) before the new ones start", len(tr.old), tr.tp.Type))
			old := tr.old
			tr.old = nil
			r.retireEarly(tr, old)
			// Already SIGTERMed: wait for the exits even if ctx ends, so
			// that no two of them ever run at once.
			for _, p := range old {
				<-p.Done()
			}
		}
		batch, err := r.startNext(ctx, tr, tr.remaining())
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			continue
		}
		if err := r.enter(Phase{Name: PhaseReadiness, Message: fmt.Sprintf("waiting for %d process(es) to become ready", len(batch))}); err != nil {
			return err
		}
		if err := awaitAll(ctx, r.h, batch); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) enter(p Phase) error {
	if p.Name == r.phase {
		return nil // the next batch of a rolling preboot
	}
	r.phase = p.Name
	return r.h.Enter(p)
}

// startNext starts the next n processes of the type's plan, each recorded
// as started by the rollout (so that a failure stops it) as soon as the
// host has started it.
func (r *run) startNext(ctx context.Context, tr *typeRun, n int) ([]Proc, error) {
	var out []Proc
	for range n {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		p, err := r.h.Start(ctx, r.t.Release, tr.tp.Type, tr.tp.Start[tr.next])
		if err != nil {
			return out, err
		}
		tr.next++
		tr.started = append(tr.started, p)
		r.started = append(r.started, p)
		out = append(out, p)
	}
	return out, nil
}

func (r *run) retireEarly(tr *typeRun, ps []Proc) {
	if len(ps) == 0 {
		return
	}
	tr.retired = append(tr.retired, ps...)
	r.early += len(ps)
	r.retire(ps)
}

func (r *run) retire(ps []Proc) {
	if len(ps) == 0 {
		return
	}
	r.retiring += len(ps)
	r.drains = append(r.drains, r.h.Retire(ps))
}

// drained aggregates the drains of the rollout in the background.
func (r *run) drained() <-chan Drain {
	out := make(chan Drain, 1)
	chs := r.drains
	r.drains = nil
	go func() {
		var d Drain
		for _, ch := range chs {
			d.add(<-ch)
		}
		out <- d
	}()
	return out
}

func (r *run) waitDrains() Drain {
	var d Drain
	for _, ch := range r.drains {
		d.add(<-ch)
	}
	r.drains = nil
	return d
}

// awaitAll waits for every process of ps to become ready; the first
// failure ends the wait (the other waits end with ctx).
func awaitAll(ctx context.Context, h Host, ps []Proc) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(ps))
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { errs <- h.AwaitReady(ctx, p) })
	}
	defer wg.Wait()
	for range ps {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// waitAny returns once one of ps has exited, or ctx ended.
func waitAny(ctx context.Context, ps []Proc) error {
	any := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	var once sync.Once
	for _, p := range ps {
		go func() {
			select {
			case <-p.Done():
				once.Do(func() { close(any) })
			case <-stop:
			}
		}()
	}
	if len(ps) == 0 {
		return errors.New("rollout: no room to start a process and nothing to wait for")
	}
	select {
	case <-any:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func vname(v int) string { return fmt.Sprintf("v%d", v) }
