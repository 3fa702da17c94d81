package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// op is one operation on an app (deploy, rollback, restart, scale, config
// change, crash restart, boot): it holds the app's operation lock, times
// its phases and emits progress events, to its caller and to whoever
// attaches later (Attach: `hctl wait`).
type op struct {
	ag   *Agent
	a    *app
	kind string

	// ctx ends when the operation is cancelled (Cancel): the engine
	// aborts it before its cutover.
	ctx    context.Context
	cancel context.CancelCauseFunc

	start time.Time
	// restarts, for a crash restart, carries the count to the new
	// process (by name).
	restarts map[string]int
	// maint is the maintenance state `on` saves at its cutover;
	// maintOff: `off`, whose cutover ends maintenance (maintenance.go).
	maint    *maintState
	maintOff bool

	mu         sync.Mutex // guards everything below: drains emit from goroutines
	emit       func(api.Event)
	phase      string
	phaseStart time.Time
	phases     []api.Phase
	res        api.OpResult
	history    []api.Event
	subs       map[chan api.Event]bool
	ended      bool
	locked     bool // holds the app's operation lock
	// waitDrain bounds how long the operation waits, once its rollout is
	// done, for the old processes to exit before it reports (they drain
	// on after it): DeployRequest.WaitDrain, default defaultWaitDrain.
	waitDrain time.Duration
	// who asked for the release rolled out, for its webhook events;
	// hookedStart: deploy.started went out (hooks.go).
	who         string
	hookedStart bool

	// unsaved: the record of the operation is in the app's state in
	// memory, not yet on disk (recordLater). Guarded by a.mu.
	unsaved bool
	// mem is the memory picture taken while the upload was received
	// (prefetchMemory).
	mem *memPrefetch
}

// defaultWaitDrain is how long an operation waits for its drain.
const defaultWaitDrain = 30 * time.Second

// maxHistory bounds the events an op keeps for clients that attach late.
const maxHistory = 2000

func (ag *Agent) newOp(a *app, kind string, emit func(api.Event)) *op {
	now := time.Now()
	ctx, cancel := context.WithCancelCause(context.Background())
	return &op{ag: ag, a: a, kind: kind, emit: emit, start: now, res: api.OpResult{App: a.st.Name},
		ctx: ctx, cancel: cancel, subs: map[chan api.Event]bool{}}
}

func (o *op) sendLocked(e api.Event) {
	if len(o.history) < maxHistory || e.Type == "result" {
		o.history = append(o.history, e)
	}
	for ch := range o.subs {
		select {
		case ch <- e:
		default:
			// A slow watcher loses progress lines, never the result: this
			// is the only sender, so taking one out makes room.
			if e.Type == "result" {
				select {
				case <-ch:
				default:
				}
				ch <- e
			}
		}
	}
	o.emit(e)
}

func (o *op) event(typ, process, msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sendLocked(api.Event{Time: time.Now().UTC(), Type: typ, Phase: o.phase, Process: process, Message: msg})
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
	o.mu.Lock()
	o.endPhaseLocked()
	o.phase, o.phaseStart = phase, time.Now()
	o.sendLocked(api.Event{Time: time.Now().UTC(), Type: "phase", Phase: phase, Message: fmt.Sprintf(format, args...)})
	o.mu.Unlock()
	o.ag.log.Info("phase", "app", o.a.st.Name, "op", o.kind, "phase", phase)
}

func (o *op) endPhase() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.endPhaseLocked()
}

func (o *op) endPhaseLocked() {
	if o.phase != "" {
		o.phases = append(o.phases, api.Phase{Name: o.phase, Seconds: time.Since(o.phaseStart).Seconds()})
		o.phase = ""
	}
}

func (o *op) currentPhase() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.phase
}

func (o *op) phaseTimes() []api.Phase {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]api.Phase(nil), o.phases...)
}

// record marks the operation in the app's state so that a restarted agentd
// knows it was interrupted. Callers hold a.mu.
func (o *op) record(release int) {
	o.a.st.Op = &opRecord{Kind: o.kind, Release: release, Phase: o.currentPhase(), Started: o.start}
	o.unsaved = false
	o.ag.save(o.a)
}

// recordLater is record without the write: the operation (and a release
// it just made) reach the disk with the next write of the app's state,
// which is at the latest the record of the first process the operation
// starts (host.flush), one durable write where there were three (the
// release, the preboot phase, the processes). Nothing needs them on disk
// earlier: until a process of the operation is recorded nothing of it has
// run (a process forked meanwhile is held in the exec shim and exits
// unrun should agentd die), so an agentd that dies first leaves the app as
// it was, and a restarted agentd has nothing to resume or fail; the
// release's number is used again by the next one. What does run or tell
// the world first writes it: the release phase (its process is recorded),
// a webhook (durable), any other write of the state. Callers hold a.mu.
func (o *op) recordLater(release int) { o.recordLaterAs(release, o.currentPhase()) }

// recordLaterAs is recordLater for a phase not entered yet.
func (o *op) recordLaterAs(release int, phase string) {
	o.a.st.Op = &opRecord{Kind: o.kind, Release: release, Phase: phase, Started: o.start}
	o.unsaved = true
}

// announces reports whether the start of the operation goes to the app's
// webhook (hooks.go).
func (o *op) announces() bool {
	if !o.hooked() {
		return false
	}
	o.a.mu.Lock()
	defer o.a.mu.Unlock()
	return o.a.st.Webhook != ""
}

// durable writes what recordLater left in memory, if anything: before
// something the world sees that must not name a release a crash could
// forget (a webhook). Callers hold no lock.
func (o *op) durable() error {
	o.a.mu.Lock()
	defer o.a.mu.Unlock()
	if !o.unsaved {
		return nil
	}
	o.unsaved = false
	return o.ag.save(o.a)
}

// finish completes the result, and emits it as the last event.
func (o *op) finish(err error) api.OpResult {
	o.endPhase()
	o.mu.Lock()
	o.res.Phases = o.phases
	if err != nil {
		o.res.OK = false
		o.res.Error = err.Error()
		o.res.Code = codeOf(err)
		var ae *Error
		if errors.As(err, &ae) {
			o.res.Reason = ae.Reason
		}
	} else {
		o.res.OK = true
	}
	res := o.res
	o.mu.Unlock()
	o.hookDone(res)
	result := "ok"
	if !res.OK {
		result = "failed"
	}
	if o.kind != "boot" && o.kind != "crash" {
		o.ag.obs.DeployDone(o.a.st.Name, o.kind, result, res.Phases)
		o.ag.lastOp.Store(fmt.Sprintf("%s %s %s %s at %s", o.a.st.Name, o.kind, res.Release, result, time.Now().Format("15:04:05")))
	}
	o.a.mu.Lock()
	if o.a.cur == o {
		o.a.cur = nil
	}
	o.a.mu.Unlock()
	o.mu.Lock()
	o.ended = true
	o.sendLocked(api.Event{Time: time.Now().UTC(), Type: "result", Message: result, Result: &res})
	for ch := range o.subs {
		close(ch)
		delete(o.subs, ch)
	}
	o.mu.Unlock()
	o.ag.memory.opEnded()
	return res
}

// codeOf is the API code of a core error.
func codeOf(err error) string {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return api.CodeDeployFailed
}

// lock takes the app's operation lock, telling the client when it has to
// wait for another operation, and makes this the app's current operation.
func (o *op) lock() {
	select {
	case o.a.op <- struct{}{}:
	default:
		o.info("waiting for the operation in progress on %s to finish", o.a.st.Name)
		o.a.op <- struct{}{}
		o.mu.Lock()
		if o.mem != nil {
			o.mem.stale = true
		}
		o.mu.Unlock()
	}
	o.a.mu.Lock()
	o.a.cur = o
	o.a.mu.Unlock()
	o.mu.Lock()
	o.locked = true
	o.mu.Unlock()
}

// unlock frees the app's operation lock; a second call does nothing (a
// rollout frees it at its cutover, before its drain ends). The operation
// stays attachable (hctl wait) until its result.
func (o *op) unlock() {
	o.mu.Lock()
	locked := o.locked
	o.locked = false
	o.mu.Unlock()
	if !locked {
		return
	}
	<-o.a.op
}

// Attach follows the operation in progress on an app: it returns what the
// operation emitted so far and a channel of what comes next, closed after
// the result. A watcher that stops reading loses progress lines; the
// result always arrives.
func (ag *Agent) Attach(name string) (past []api.Event, next <-chan api.Event, detach func(), err error) {
	a, err := ag.get(name)
	if err != nil {
		return nil, nil, nil, err
	}
	a.mu.Lock()
	o := a.cur
	a.mu.Unlock()
	if o == nil {
		return nil, nil, nil, errf(api.CodeNotFound, "app %s has no operation in progress", name)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	past = append([]api.Event(nil), o.history...)
	ch := make(chan api.Event, 256)
	if o.ended {
		close(ch)
		return past, ch, func() {}, nil
	}
	o.subs[ch] = true
	return past, ch, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.subs[ch] {
			delete(o.subs, ch)
			close(ch)
		}
	}, nil
}

// Cancel aborts the operation in progress on an app before its cutover:
// the new release is failed "cancelled by WHO" and the old one serves on.
// Past the cutover there is nothing to cancel (a bake is ended with
// EndBake).
func (ag *Agent) Cancel(name, who string) error {
	a, err := ag.get(name)
	if err != nil {
		return err
	}
	a.mu.Lock()
	o := a.cur
	cut := a.cutover
	a.mu.Unlock()
	if o == nil || o.kind == "boot" || o.kind == "crash" {
		return errf(api.CodeNotFound, "app %s has no operation in progress to cancel", name)
	}
	if cut {
		return errf(api.CodeConflict, "the %s of %s is past its cutover: nothing to cancel (a bake window is ended by passing or aborting the bake)", o.kind, name)
	}
	if who == "" {
		who = "an operator"
	}
	o.cancel(&cancelled{who: who})
	return nil
}

// cancelled is why an operation was cancelled.
type cancelled struct{ who string }

func (c *cancelled) Error() string { return "cancelled by " + c.who }
