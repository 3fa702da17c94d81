package agent

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/rollout"
	"github.com/agentd/agentd/grammar"
	"github.com/agentd/agentd/sockets"
)

// The settings of an app that `apps create` takes can all be changed
// later (SetApp) without destroying the app. What running processes got
// at their start (sockets, user, limits) reaches them only at the next
// rollout; SetApp itself touches nothing that runs.

// Bounds of the rollout settings.
const (
	maxBake     = 24 * time.Hour
	maxSurgeCap = 100
	maxTimeout  = 24 * time.Hour
)

// checkRollout validates the rollout settings of an app.
func checkRollout(bake time.Duration, surge int, strategy map[string]string) error {
	if bake < 0 || bake > maxBake {
		return errf(api.CodeBadRequest, "bake %s: want 0 (no bake) to %s", bake, maxBake)
	}
	if surge < 0 || surge > maxSurgeCap {
		return errf(api.CodeBadRequest, "max surge %d: want 0 (the whole formation) to %d", surge, maxSurgeCap)
	}
	for typ, s := range strategy {
		if grammar.CheckProcessType(typ) != nil || typ == "release" {
			return errf(api.CodeBadRequest, "strategy for %q: not a process type", typ)
		}
		if _, ok := rollout.ParseStrategy(s); !ok && s != "" {
			return errf(api.CodeBadRequest, "strategy %q for %s: want %s or %s", s, typ, rollout.Overlap, rollout.StopFirst)
		}
	}
	return nil
}

// maxShedRate bounds --shed-rate: connections closed per second.
const maxShedRate = 100000

// checkDrain validates per-type drain timeouts and the shed rate.
func checkDrain(timeouts map[string]api.Duration, shedRate float64) error {
	for typ, d := range timeouts {
		if grammar.CheckProcessType(typ) != nil || typ == "release" {
			return errf(api.CodeBadRequest, "drain timeout for %q: not a process type", typ)
		}
		if d != 0 {
			if err := checkTimeout("drain timeout for "+typ, time.Duration(d)); err != nil {
				return err
			}
		}
	}
	if shedRate < 0 || shedRate > maxShedRate {
		return errf(api.CodeBadRequest, "shed rate %g: want 0 (SIGKILL at the deadline) to %d connections per second", shedRate, maxShedRate)
	}
	return nil
}

func checkTimeout(what string, d time.Duration) error {
	if d <= 0 || d > maxTimeout {
		return errf(api.CodeBadRequest, "%s %s: want more than 0 and at most %s", what, d, maxTimeout)
	}
	return nil
}

// SetApp changes settings of an app. Bad input changes nothing. Nothing
// that runs is touched: new settings apply to what starts from now on,
// and the result says which ones running processes get only at the next
// rollout.
func (ag *Agent) SetApp(name string, req api.AppSet) (api.AppSetResult, error) {
	a, err := ag.get(name)
	if err != nil {
		return api.AppSetResult{}, err
	}
	if ag.frozen.Load() {
		return api.AppSetResult{}, errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade): try again in a moment")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st // a copy to change; a.st changes only when all is valid
	st.Readiness = maps.Clone(a.st.Readiness)
	st.Strategy = maps.Clone(a.st.Strategy)
	st.Limits = slices.Clone(a.st.Limits)
	st.Sockets = slices.Clone(a.st.Sockets)
	st.Bound = slices.Clone(a.st.Bound)
	var changed, next []string
	note := func(what string, atRollout bool) {
		changed = append(changed, what)
		if atRollout {
			next = append(next, what)
		}
	}
	setDur := func(what string, dst *duration, v *api.Duration, check func(time.Duration) error) error {
		if v == nil || *dst == duration(*v) {
			return nil
		}
		if err := check(time.Duration(*v)); err != nil {
			return err
		}
		*dst = duration(*v)
		note(what, false)
		return nil
	}
	if err := setDur("boot_timeout", &st.BootTimeout, req.BootTimeout, func(d time.Duration) error { return checkTimeout("boot timeout", d) }); err != nil {
		return api.AppSetResult{}, err
	}
	if err := setDur("drain_timeout", &st.DrainTimeout, req.DrainTimeout, func(d time.Duration) error { return checkTimeout("drain timeout", d) }); err != nil {
		return api.AppSetResult{}, err
	}
	if err := setDur("release_timeout", &st.ReleaseTimeout, req.ReleaseTimeout, func(d time.Duration) error {
		if d < 0 || d > maxReleaseTimeout {
			return errf(api.CodeBadRequest, "release timeout %s: want 0 (agentd's default) to %s", d, maxReleaseTimeout)
		}
		return nil
	}); err != nil {
		return api.AppSetResult{}, err
	}
	if err := setDur("bake", &st.Bake, req.Bake, func(d time.Duration) error { return checkRollout(d, 0, nil) }); err != nil {
		return api.AppSetResult{}, err
	}
	if req.MaxSurge != nil && *req.MaxSurge != st.MaxSurge {
		if err := checkRollout(0, *req.MaxSurge, nil); err != nil {
			return api.AppSetResult{}, err
		}
		st.MaxSurge = *req.MaxSurge
		note("max_surge", false)
	}
	for _, typ := range slices.Sorted(maps.Keys(req.Readiness)) {
		kind := req.Readiness[typ]
		if kind == "" {
			if _, ok := st.Readiness[typ]; ok {
				delete(st.Readiness, typ)
				note("readiness."+typ, false)
			}
			continue
		}
		if _, err := readiness.Parse(kind); err != nil {
			return api.AppSetResult{}, errf(api.CodeBadRequest, "readiness for %s: %v", typ, err)
		}
		if grammar.CheckProcessType(typ) != nil {
			return api.AppSetResult{}, errf(api.CodeBadRequest, "readiness for %q: not a process type", typ)
		}
		if st.Readiness[typ] != kind {
			was := readiness.Default
			if k, err := readiness.Parse(st.Readiness[typ]); err == nil {
				was = k
			}
			st.Readiness[typ] = kind
			// A probe socket is given at a process's start: a kind that
			// needs one (http, tcp) reaches running processes at the next
			// rollout; the running ones keep what they have.
			k, _ := readiness.Parse(kind)
			note("readiness."+typ, k.NeedsProbe() && !was.NeedsProbe())
		}
	}
	var shed float64
	if req.ShedRate != nil {
		shed = *req.ShedRate
	}
	if err := checkDrain(req.DrainTimeouts, shed); err != nil {
		return api.AppSetResult{}, err
	}
	if req.ShedRate != nil && *req.ShedRate != st.ShedRate {
		st.ShedRate = *req.ShedRate
		note("shed_rate", false)
	}
	if len(req.DrainTimeouts) > 0 {
		st.DrainTimeouts = maps.Clone(st.DrainTimeouts)
		if st.DrainTimeouts == nil {
			st.DrainTimeouts = map[string]duration{}
		}
		for _, typ := range slices.Sorted(maps.Keys(req.DrainTimeouts)) {
			d := duration(req.DrainTimeouts[typ])
			if cur, ok := st.DrainTimeouts[typ]; d == 0 && ok {
				delete(st.DrainTimeouts, typ)
				note("drain_timeout."+typ, false)
			} else if d != 0 && cur != d {
				st.DrainTimeouts[typ] = d
				note("drain_timeout."+typ, false)
			}
		}
	}
	if err := checkRollout(0, 0, req.Strategy); err != nil {
		return api.AppSetResult{}, err
	}
	for _, typ := range slices.Sorted(maps.Keys(req.Strategy)) {
		s := req.Strategy[typ]
		if st.Strategy == nil {
			st.Strategy = map[string]string{}
		}
		if s == "" || s == string(rollout.Overlap) {
			if _, ok := st.Strategy[typ]; ok {
				delete(st.Strategy, typ)
				note("strategy."+typ, false)
			}
			continue
		}
		if st.Strategy[typ] != s {
			st.Strategy[typ] = s
			note("strategy."+typ, false)
		}
	}
	if req.User != nil && *req.User != st.User || req.AllowRoot != nil && *req.AllowRoot != st.AllowRoot {
		sec := api.AppCreate{Name: name, User: st.User, AllowRoot: st.AllowRoot}
		if req.User != nil {
			sec.User = *req.User
		}
		if req.AllowRoot != nil {
			sec.AllowRoot = *req.AllowRoot
		}
		if sec.User != "" {
			if _, err := lookupUser(sec.User); err != nil {
				return api.AppSetResult{}, &Error{Code: api.CodeBadRequest, Msg: err.Error(), Err: err}
			}
		}
		var tmp appState
		if err := checkSecurity(sec, &tmp); err != nil {
			return api.AppSetResult{}, err
		}
		if sec.User != st.User {
			st.User = sec.User
			note("user", true)
		}
		if sec.AllowRoot != st.AllowRoot {
			st.AllowRoot = sec.AllowRoot
			note("allow_root", false)
		}
	}
	if req.ClearLimits || len(req.Limits) > 0 {
		var limits []string
		if !req.ClearLimits {
			limits = slices.Clone(st.Limits)
		}
		for _, s := range req.Limits {
			r, err := sockets.ParseRlimit(s)
			if err != nil {
				return api.AppSetResult{}, &Error{Code: api.CodeBadRequest, Msg: err.Error(), Err: err}
			}
			// A limit given again replaces the one of that name.
			limits = slices.DeleteFunc(limits, func(l string) bool { return strings.SplitN(l, "=", 2)[0] == r.Name })
			limits = append(limits, r.String())
		}
		if !slices.Equal(limits, st.Limits) {
			st.Limits = limits
			note("limits", true)
		}
	}
	if req.Cron != nil {
		off, err := cronSetting(*req.Cron)
		if err != nil {
			return api.AppSetResult{}, err
		}
		if off != st.CronOff {
			st.CronOff = off
			note("cron", false)
			defer ag.kickCron()
		}
	}
	var madeSecret string
	if req.Webhook != nil || req.WebhookSecret != nil {
		was, wasSecret := st.Webhook, st.WebhookSecret
		if madeSecret, err = setWebhook(&st, req.Webhook, req.WebhookSecret); err != nil {
			return api.AppSetResult{}, err
		}
		if st.Webhook != was {
			note("webhook", false)
		}
		if st.WebhookSecret != wasSecret && st.Webhook != "" {
			note("webhook_secret", false)
		}
	}
	removed, added, err := ag.socketChanges(a, &st, req)
	if err != nil {
		return api.AppSetResult{}, err
	}
	// All valid: bind what is added, close what is removed, save.
	var held []*sockets.Held
	for _, spec := range added {
		h, err := ag.claimOrListen(name, spec)
		if err != nil {
			for _, h := range held {
				h.Close()
			}
			code := api.CodeBadRequest
			if errors.Is(err, sockets.ErrInUse) {
				code = api.CodeConflict
			}
			return api.AppSetResult{}, &Error{Code: code, Msg: err.Error(), Err: err}
		}
		held = append(held, h)
		st.Sockets = append(st.Sockets, spec)
		st.Bound = append(st.Bound, h.Bound())
		note("socket "+spec.Name, true)
	}
	keep := a.held[:0:0]
	for _, h := range a.held {
		if slices.Contains(removed, h.Spec.Name) {
			// The running processes keep their copy until the next
			// rollout replaces them; agentd stops holding it now.
			ag.stopSteering(a, h.Spec.Name)
			h.Close()
			if ag.cfg.Unstore != nil {
				ag.cfg.Unstore(name + "." + h.Spec.Name)
			}
			note("socket "+h.Spec.Name+" removed", true)
			continue
		}
		keep = append(keep, h)
	}
	a.held = append(keep, held...)
	a.st = st
	for _, h := range held {
		ag.startSteering(a, h)
	}
	if len(changed) > 0 {
		if err := ag.save(a); err != nil {
			return api.AppSetResult{}, &Error{Code: api.CodeInternal, Msg: fmt.Sprintf("saving app %s: %v", name, err), Err: err}
		}
		ag.log.Info("app settings changed", "app", name, "changed", strings.Join(changed, ","))
	}
	out := api.AppSetResult{App: ag.appAPI(a), Changed: append([]string{}, changed...), NextRollout: next}
	out.App.WebhookSecret = madeSecret // shown once
	return out, nil
}

// socketChanges validates the sockets req adds and removes against st,
// and drops the removed ones from st. Callers hold a.mu.
func (ag *Agent) socketChanges(a *app, st *appState, req api.AppSet) (removed []string, added []sockets.Spec, err error) {
	for _, n := range req.RemoveSockets {
		i := slices.IndexFunc(st.Sockets, func(s sockets.Spec) bool { return s.Name == n })
		if i < 0 {
			return nil, nil, errf(api.CodeNotFound, "app %s has no socket named %q", a.st.Name, n)
		}
		st.Sockets = slices.Delete(st.Sockets, i, i+1)
		if i < len(st.Bound) {
			st.Bound = slices.Delete(st.Bound, i, i+1)
		}
		removed = append(removed, n)
	}
	for _, s := range req.AddSockets {
		spec, err := sockets.ParseSpec(s)
		if err != nil {
			return nil, nil, &Error{Code: api.CodeBadRequest, Msg: err.Error(), Err: err}
		}
		taken := slices.ContainsFunc(st.Sockets, func(x sockets.Spec) bool { return x.Name == spec.Name }) ||
			slices.ContainsFunc(added, func(x sockets.Spec) bool { return x.Name == spec.Name })
		if taken {
			return nil, nil, errf(api.CodeConflict, "app %s has a socket named %q already", a.st.Name, spec.Name)
		}
		added = append(added, spec)
	}
	if len(st.Sockets)+len(added) == 0 {
		return nil, nil, errf(api.CodeBadRequest, "app %s would have no socket left: an app needs at least one", a.st.Name)
	}
	return removed, added, nil
}
