package agent

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/agentd/agentd/grammar"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/state"
	"github.com/agentd/agentd/sockets"
)

// The life of an app: created with its sockets and settings, changed
// (SetApp, settings.go), destroyed.

// CreateApp validates req, binds the app's sockets and persists it. Bad
// input changes nothing.
func (ag *Agent) CreateApp(req api.AppCreate) (api.App, error) {
	if err := grammar.CheckAppName(req.Name); err != nil {
		return api.App{}, badRequest(err)
	}
	if len(req.Sockets) == 0 {
		return api.App{}, &Error{Code: api.CodeBadRequest, Msg: fmt.Sprintf("app %s needs at least one socket", req.Name), Reason: api.ReasonNeedsSocket, App: req.Name}
	}
	st := appState{
		Name: req.Name, Formation: map[string]int{}, Readiness: map[string]string{},
		BootTimeout: duration(req.BootTimeout), DrainTimeout: duration(req.DrainTimeout), User: req.User,
		CreatedAt: time.Now().UTC(), Config: map[string]string{},
	}
	if st.BootTimeout <= 0 {
		st.BootTimeout = duration(DefaultBootTimeout)
	}
	if st.DrainTimeout <= 0 {
		st.DrainTimeout = duration(DefaultDrainTimeout)
	}
	names := map[string]bool{}
	for _, s := range req.Sockets {
		spec, err := sockets.ParseSpec(s)
		if err != nil {
			return api.App{}, errf(api.CodeBadRequest, "%v", err)
		}
		if names[spec.Name] {
			return api.App{}, errf(api.CodeBadRequest, "socket name %q given twice", spec.Name)
		}
		names[spec.Name] = true
		st.Sockets = append(st.Sockets, spec)
	}
	for typ, kind := range req.Readiness {
		if _, err := readiness.Parse(kind); err != nil {
			return api.App{}, errf(api.CodeBadRequest, "readiness for %s: %v", typ, err)
		}
		st.Readiness[typ] = kind
	}
	if req.User != "" {
		if _, err := lookupUser(req.User); err != nil {
			return api.App{}, errf(api.CodeBadRequest, "%v", err)
		}
	}
	if err := checkSecurity(req, &st); err != nil {
		return api.App{}, err
	}
	if err := checkRollout(time.Duration(req.Bake), req.MaxSurge, req.Strategy); err != nil {
		return api.App{}, err
	}
	st.Bake, st.MaxSurge = duration(req.Bake), req.MaxSurge
	if err := checkDrain(req.DrainTimeouts, req.ShedRate); err != nil {
		return api.App{}, err
	}
	st.ShedRate = req.ShedRate
	off, err := cronSetting(req.Cron)
	if err != nil {
		return api.App{}, err
	}
	st.CronOff = off
	for typ, d := range req.DrainTimeouts {
		if st.DrainTimeouts == nil {
			st.DrainTimeouts = map[string]duration{}
		}
		st.DrainTimeouts[typ] = duration(d)
	}
	madeSecret, err := setWebhook(&st, &req.Webhook, &req.WebhookSecret)
	if err != nil {
		return api.App{}, err
	}
	for typ, s := range req.Strategy {
		if s != "" && s != api.StrategyOverlap {
			if st.Strategy == nil {
				st.Strategy = map[string]string{}
			}
			st.Strategy[typ] = s
		}
	}

	if ag.frozen.Load() {
		return api.App{}, errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade): try again in a moment")
	}
	ag.mu.Lock()
	defer ag.mu.Unlock()
	if _, ok := ag.apps[req.Name]; ok {
		return api.App{}, errf(api.CodeConflict, "app %s already exists", req.Name)
	}
	if ag.broken[req.Name] != nil {
		return api.App{}, &Error{Code: api.CodeConflict, Reason: api.ReasonBroken, App: req.Name,
			Msg: fmt.Sprintf("app %s exists, with a broken state file: repair it or destroy it first", req.Name)}
	}
	for _, other := range ag.apps {
		for _, h := range other.held {
			for _, spec := range st.Sockets {
				if h.Spec.Network == "unix" && spec.Network == "unix" && h.Spec.Address == spec.Address {
					return api.App{}, errf(api.CodeConflict, "socket %s: %s is app %s's socket", spec.Name, spec.Addr, other.st.Name)
				}
			}
		}
	}
	a := &app{op: make(chan struct{}, 1), st: st, backoff: map[string]*time.Timer{}}
	for _, spec := range st.Sockets {
		h, err := ag.claimOrListen(req.Name, spec)
		if err != nil {
			for _, h := range a.held {
				h.Close()
			}
			code := api.CodeBadRequest
			if errors.Is(err, sockets.ErrInUse) {
				code = api.CodeConflict
			}
			return api.App{}, errf(code, "%v", err)
		}
		a.held = append(a.held, h)
		a.st.Bound = append(a.st.Bound, h.Bound())
		ag.startSteering(a, h)
	}
	if err := ag.save(a); err != nil {
		for _, h := range a.held {
			h.Close()
		}
		return api.App{}, errf(api.CodeInternal, "saving app %s: %v", req.Name, err)
	}
	ag.apps[req.Name] = a
	ag.obs.ActiveRelease(req.Name, "")
	ag.log.Info("app created", "app", req.Name, "sockets", len(a.held))
	out := ag.appAPI(a)
	out.WebhookSecret = madeSecret // shown once
	return out, nil
}

func lookupUser(name string) (*user.User, error) {
	u, _, err := lookupUserGroups(name)
	return u, err
}

// lookupUserGroups is lookupUser with the user's groups (cachedLookup).
func lookupUserGroups(name string) (*user.User, []uint32, error) {
	u, groups, err := cachedLookup(name)
	if err != nil {
		return nil, nil, fmt.Errorf("user %q: %w", name, err)
	}
	if os.Geteuid() != 0 && u.Uid != strconv.Itoa(os.Geteuid()) {
		return nil, nil, fmt.Errorf("user %q: agentd runs as uid %d and can only run apps as another user when it runs as root", name, os.Geteuid())
	}
	return u, groups, nil
}

// DestroyApp stops every process of the app (draining them), closes its
// sockets and removes its state. confirm must repeat the name.
func (ag *Agent) DestroyApp(name, confirm string) error {
	ag.mu.Lock()
	b := ag.broken[name]
	ag.mu.Unlock()
	if b != nil {
		return ag.destroyBroken(name, confirm, b)
	}
	a, err := ag.get(name)
	if err != nil {
		return err
	}
	if confirm != name {
		return &Error{Code: api.CodeBadRequest, Msg: fmt.Sprintf("destroying %s stops it and deletes its releases: confirm by repeating its name", name), Reason: api.ReasonConfirm, App: name}
	}
	a.op <- struct{}{}
	defer func() { <-a.op }()
	a.mu.Lock()
	procs := a.liveProcs(0, nil)
	for _, p := range procs {
		p.retired = true
	}
	for _, t := range a.backoff {
		t.Stop()
	}
	a.mu.Unlock()
	ag.drain(a, procs, nil)
	a.mu.Lock()
	a.gone = true
	for _, h := range a.held {
		h.Close()
		if ag.cfg.Unstore != nil {
			ag.cfg.Unstore(name + "." + h.Spec.Name)
		}
		ag.stopSteering(a, h.Spec.Name)
	}
	a.held = nil
	a.mu.Unlock()
	ag.mu.Lock()
	delete(ag.apps, name)
	ag.mu.Unlock()
	ag.obs.AppDestroyed(name)
	if ag.cfg.Webhooks != nil {
		ag.cfg.Webhooks.Forget(name)
	}
	// Both generations: an app created later under the name must not
	// recover this one's state.
	if err := state.Remove(ag.cfg.appFile(name)); err != nil {
		return errf(api.CodeInternal, "removing state of %s: %v", name, err)
	}
	os.RemoveAll(filepath.Join(ag.cfg.logsDir(), name))
	ag.pruneSlugs()
	ag.log.Info("app destroyed", "app", name)
	return nil
}
