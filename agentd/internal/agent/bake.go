package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/rollout"
)

// What a bake window watches in the new processes (rollout.Host.Watch):
// an exit, health probes failing three times in a row, WATCHDOG=trigger.

// bakeProbeEvery and bakeProbeFails: probed readiness kinds are probed
// every second while a release bakes, on the private probe socket as at
// boot; three failures in a row fail the bake.
const (
	bakeProbeEvery = time.Second
	bakeProbeFails = 3
)

// watchBake reports the first failure of procs until ctx ends.
func (ag *Agent) watchBake(ctx context.Context, a *app, procs []*proc) <-chan error {
	out := make(chan error, 1)
	report := func(err error) {
		select {
		case out <- err:
		default:
		}
	}
	for _, p := range procs {
		a.mu.Lock()
		kind := a.readinessFor(p.release, p.typ)
		live := a.livenessChecks(p)
		a.mu.Unlock()
		for _, c := range live {
			go ag.probeLiveness(ctx, a, p, c, 1, report)
		}
		go func() {
			select {
			case <-p.p.Done():
				report(fmt.Errorf("%s %s", p.name(), p.p.Exit()))
			case <-p.trigger.C():
				report(fmt.Errorf("%s sent WATCHDOG=trigger", p.name()))
			case <-ctx.Done():
			}
		}()
		if kind.Probed() {
			go ag.probeBake(ctx, a, p, kind, report)
		}
	}
	return out
}

func (ag *Agent) probeBake(ctx context.Context, a *app, p *proc, kind readiness.Kind, report func(error)) {
	a.mu.Lock()
	r := a.release(p.release)
	target := readiness.Target{Probe: p.probe}
	userName := a.st.User
	a.mu.Unlock()
	if kind.Name == "exec" && r != nil {
		a.mu.Lock()
		env, _ := ag.procEnv(a, r, p.name())
		a.mu.Unlock()
		cred, _ := credential(userName)
		dir, _ := ag.codeDir(a, r)
		target.Dir, target.Env, target.Credential = dir, env, cred
	}
	tick := time.NewTicker(bakeProbeEvery)
	defer tick.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.p.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := readiness.Check(cctx, kind, target)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			fails = 0
			continue
		}
		if fails++; fails >= bakeProbeFails {
			report(fmt.Errorf("%s failed %d health probes in a row (%s): %v", p.name(), fails, kind, err))
			return
		}
	}
}

// resumeBake carries on the bake window of a release whose deploy an
// agentd restart interrupted after its cutover: the processes of the
// release are watched for what is left of the window, and a failure rolls
// back as it would have before the restart.
func (ag *Agent) resumeBake(o *op, r *releaseState, t rollout.Target, rec *opRecord) {
	a := o.a
	t.Bake = time.Until(rec.BakeUntil)
	t.Previous = rec.Previous
	a.mu.Lock()
	a.cutover = true
	a.mu.Unlock()
	// The engine's Enter(bake) records the rest of the window again.
	eng, ctl, done := o.engine(r, t)
	err := eng.Resume(context.Background(), t, ctl)
	done()
	var be *rollout.BakeError
	if errors.As(err, &be) {
		res := o.bakeFailed(r, t, be)
		ag.log.Warn("bake failed after an agentd restart", "app", a.st.Name, "result", res.Error)
		return
	}
	a.mu.Lock()
	a.st.Op = nil
	ag.save(a)
	a.mu.Unlock()
	t.Bake = 0
	if res := o.rollout(nil, t); !res.OK {
		ag.log.Error("processes not ready after agentd start", "app", a.st.Name, "err", res.Error)
	}
}

// signal is a one-time event that any number of goroutines can wait for.
type signal struct {
	mu   sync.Mutex
	ch   chan struct{}
	once sync.Once
}

// C is closed once Fire was called.
func (s *signal) C() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) Fire() {
	s.C()
	s.once.Do(func() { close(s.ch) })
}
