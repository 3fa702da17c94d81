package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/appjson"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/rollout"
)

// Liveness checks of app.json (Dokku's format, which Dokku itself never
// runs): probed while a process runs, on its private probe socket; a
// process that fails one `attempts` times in a row is replaced the
// zero-downtime way (a new one started and ready before it is retired).
// Inside a bake window a single failed probe fails the bake instead
// (watchBake).

// livenessChecks are the probed liveness checks of p's type in its
// release's app.json. Callers hold a.mu.
func (a *app) livenessChecks(p *proc) []appjson.Healthcheck {
	r := a.release(p.release)
	if r == nil || r.AppJSON == nil {
		return nil
	}
	var out []appjson.Healthcheck
	for _, c := range r.AppJSON.Healthchecks[p.typ] {
		if c.Type != appjson.CheckLiveness {
			continue
		}
		if k, err := readiness.Parse(c.Readiness().String()); err == nil && k.Probed() {
			out = append(out, c)
		}
	}
	return out
}

// livenessNeedsProbe reports whether a liveness check of typ in r's
// app.json probes the private probe socket (http or tcp).
func livenessNeedsProbe(r *releaseState, typ string) bool {
	if r == nil || r.AppJSON == nil {
		return false
	}
	for _, c := range r.AppJSON.Healthchecks[typ] {
		if c.Type == appjson.CheckLiveness && (c.Path != "" || c.Listening) {
			return true
		}
	}
	return false
}

// baking reports whether release v is in its bake window. Callers hold a.mu.
func (a *app) baking(v int) bool {
	return a.st.Op != nil && a.st.Op.Phase == rollout.PhaseBake && a.st.Op.Release == v
}

// watchLiveness probes p's liveness checks from its readiness until it
// ends or retires, and replaces it when one fails attempts times in a row.
func (ag *Agent) watchLiveness(a *app, p *proc) {
	a.mu.Lock()
	checks := a.livenessChecks(p)
	a.mu.Unlock()
	if len(checks) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-p.p.Done()
		cancel()
	}()
	failed := make(chan error, len(checks))
	for _, c := range checks {
		go ag.probeLiveness(ctx, a, p, c, c.Attempts, func(err error) { failed <- err })
	}
	select {
	case <-ctx.Done():
	case err := <-failed:
		ag.renew(a, p, err)
	}
}

// probeLiveness runs check c of p every c.Wait after c.InitialDelay and
// reports when it failed attempts times in a row. Failures inside a bake
// window of p's release are the bake's to report (watchBake probes with
// attempts 1), not this watcher's.
func (ag *Agent) probeLiveness(ctx context.Context, a *app, p *proc, c appjson.Healthcheck, attempts int, report func(error)) {
	kind, err := readiness.Parse(c.Readiness().String())
	if err != nil {
		return
	}
	a.mu.Lock()
	target := readiness.Target{Probe: p.probe}
	r := a.release(p.release)
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
	wait := max(c.Wait, 100*time.Millisecond)
	next := time.NewTimer(c.InitialDelay)
	defer next.Stop()
	fails := 0
	inBake := attempts == 1
	for {
		select {
		case <-ctx.Done():
			return
		case <-next.C:
		}
		next.Reset(wait)
		a.mu.Lock()
		stop := p.retired || p.state != api.StateReady
		baking := a.baking(p.release)
		a.mu.Unlock()
		if stop {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, c.Timeout)
		err := readiness.Check(cctx, kind, target)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil || (baking && !inBake) {
			fails = 0
			continue
		}
		if fails++; fails >= attempts {
			report(fmt.Errorf("%s failed its liveness check %s %d time(s) in a row: %v", p.name(), kind, fails, err))
			return
		}
	}
}

// renew replaces p, which failed a liveness check, with a new process of
// the same release the zero-downtime way: the new one is started and
// ready before p is retired (and drains as in a deploy).
func (ag *Agent) renew(a *app, p *proc, why error) {
	if ag.frozen.Load() {
		return
	}
	o := ag.newOp(a, "restart", func(api.Event) {})
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	r := a.release(a.st.Active)
	if a.gone || r == nil || p.release != r.Version || p.retired || p.p.Exited() {
		a.mu.Unlock()
		return
	}
	t := rollout.Target{Release: r.Version, Previous: r.Version, Types: []string{p.typ},
		Formation: map[string]int{p.typ: a.count(p.typ)}, Renew: []string{p.name()}}
	o.record(r.Version)
	a.mu.Unlock()
	ag.log.Warn("replacing a process that failed its liveness check", "app", a.st.Name, "process", p.name(), "pid", p.p.PID(), "err", why)
	if lo, ok := ag.obs.(interface{ LivenessRestart(app, typ string) }); ok {
		lo.LivenessRestart(a.st.Name, p.typ)
	}
	if res := o.rollout(nil, t); !res.OK {
		ag.log.Warn("liveness restart failed", "app", a.st.Name, "process", p.name(), "err", res.Error)
		// It keeps serving: it is watched again, and replaced at its
		// next failure.
		go ag.watchLiveness(a, p)
	}
}
