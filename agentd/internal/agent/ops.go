package agent

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd/grammar"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/appjson"
)

// The operations that change what runs. Each checks its input, records a
// release when it makes one, and hands a target to the rollout engine
// (o.rollout); none carries out a switch itself.

// DeployRequest asks for a new release from an artifact.
type DeployRequest struct {
	App              string
	Artifact         io.Reader // .tar.gz
	Message          string
	SkipReleasePhase bool
	// SkipPostdrain leaves app.json's scripts.agentd.postdrain to
	// RunPostdrain (once per fleet).
	SkipPostdrain bool
	ReleaseID     string
	DeployedBy    string
	// Prepare, when set, stores the release's code and returns its
	// digest instead of unpacking Artifact (an upload by manifest).
	Prepare func() (digest string, err error)
	// Detached: the client does not wait for the outcome.
	Detached bool
	// WaitDrain bounds how long the deploy waits, once the new release is
	// live, for the old processes to exit before it reports; they drain
	// on after it. 0: 30s.
	WaitDrain time.Duration
	// Canary, when above 0, deploys the release as a canary that gets
	// this percentage of new connections beside the active release
	// (canary.go), until Promote or AbortCanary.
	Canary float64
}

// Deploy prepares a new release from the artifact and switches the app to
// it. It blocks until the switch is done or has failed; emit receives the
// progress, the last event being the result.
func (ag *Agent) Deploy(req DeployRequest, emit func(api.Event)) api.OpResult {
	a, err := ag.get(req.App)
	if err != nil {
		return failNoApp(req.App, err, emit)
	}
	kind := "deploy"
	if req.Canary != 0 {
		kind = "canary"
	}
	o := ag.newOp(a, kind, emit)
	o.waitDrain = req.WaitDrain
	// The upload is received before the app's operation lock is taken: a
	// slow or stuck client then holds up nobody but itself, and bad input
	// fails before anything waits on it.
	o.enter(api.PhasePrepare, "receiving and unpacking the artifact")
	o.prefetchMemory()
	prepare := req.Prepare
	if prepare == nil {
		prepare = func() (string, error) {
			if req.Artifact == nil {
				return "", errors.New("no artifact")
			}
			return ag.ImportArtifact(req.Artifact)
		}
	}
	digest, err := prepare()
	if err != nil {
		return o.finish(errf(api.CodeBadRequest, "prepare: %v", err))
	}
	// Parsed before the release is recorded, so that one durable write of
	// the state (not two) records it with its Procfile: a state write is
	// two fsyncs on the way to the new code's first answer.
	pf, pfErr := ag.procfileOf(digest)
	var m *appjson.Manifest
	if pfErr == nil {
		if m, err = ag.appJSONOf(digest); err != nil {
			pfErr = errf(api.CodeBadRequest, "%v", err)
		}
	}
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	if err := a.canaryBlocks(); err != nil {
		a.mu.Unlock()
		return o.finish(err)
	}
	if req.Canary != 0 {
		if err := ag.canaryRefusal(a, req.Canary); err != nil {
			a.mu.Unlock()
			return o.finish(err)
		}
	}
	if act := a.release(a.st.Active); act != nil && maps.Equal(act.Config, a.st.Config) &&
		((req.ReleaseID != "" && act.ReleaseID == req.ReleaseID) || (req.ReleaseID == "" && act.Digest == digest)) {
		a.mu.Unlock()
		o.info("%s %s has this very content already: nothing to do", a.st.Name, vname(act.Version))
		o.res.Release, o.res.Previous = vname(act.Version), vname(act.Version)
		return o.finish(nil)
	}
	r := ag.newRelease(a, digest, "deploy", maps.Clone(a.st.Config))
	r.Message, r.ReleaseID, r.DeployedBy = req.Message, req.ReleaseID, req.DeployedBy
	if pfErr == nil {
		r.Procfile, r.Order = pf.Map(), pf.Types()
		a.applyAppJSON(r, m, o.info)
		if req.SkipPostdrain && postdrainPending(r) {
			r.Postdrain = &postdrainState{Status: postdrainDeferred}
			o.info("app.json scripts.agentd.postdrain is left to hctl postdrain (--skip-postdrain)")
		}
	}
	o.recordLater(r.Version) // written with the first process (recordLater)
	a.mu.Unlock()
	o.res.Release = vname(r.Version)
	if pfErr != nil {
		return o.fail(r, fmt.Errorf("prepare: %w", pfErr))
	}
	o.info("release %s: process types %s, digest %s", vname(r.Version), strings.Join(r.Order, ", "), shortDigest(digest))
	// An --allow-root release's private copy is part of its prepare phase
	// (o.run makes it for the operations that have none).
	if _, err := ag.codeDir(a, r); err != nil {
		return o.fail(r, fmt.Errorf("prepare: %w", err))
	}
	o.pause("prepare", r)
	a.mu.Lock()
	t := a.target(r)
	if req.Canary != 0 {
		t, err = ag.canaryTarget(a, r, req.Canary)
	}
	a.mu.Unlock()
	if err != nil {
		return o.fail(r, err)
	}
	t.ReleasePhase = !req.SkipReleasePhase
	return o.rollout(r, t)
}

func failNoApp(name string, err error, emit func(api.Event)) api.OpResult {
	res := api.OpResult{App: name, Error: err.Error(), Code: codeOf(err)}
	var ae *Error
	if errors.As(err, &ae) {
		res.Reason = ae.Reason
	}
	emit(api.Event{Time: time.Now().UTC(), Type: "result", Message: "failed", Result: &res})
	return res
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	return d[:min(12, len(d))]
}

// Rollback makes a new release from an earlier one (its code and config)
// and deploys it the same way as any release, without a release phase.
// deployedBy names who asked, for the release's history.
func (ag *Agent) Rollback(name, version, deployedBy string, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "rollback", emit)
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	if err := a.canaryBlocks(); err != nil {
		a.mu.Unlock()
		return o.finish(err)
	}
	var target *releaseState
	if version != "" {
		v, err := grammar.ParseRelease(version)
		if err != nil {
			a.mu.Unlock()
			return o.finish(badRequest(err))
		}
		target = a.release(v)
		if target == nil {
			a.mu.Unlock()
			return o.finish(&Error{Code: api.CodeNotFound, Msg: fmt.Sprintf("app %s has no release %s", name, vname(v)), Reason: api.ReasonNoSuchRelease, App: name})
		}
	} else {
		for i := len(a.st.Releases) - 1; i >= 0; i-- {
			r := a.st.Releases[i]
			if r.Version < a.st.Active && r.Status == api.StatusRetired {
				target = r
				break
			}
		}
		if target == nil {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "app %s has no earlier release that served to roll back to", name))
		}
	}
	if target.Procfile == nil || target.Status == api.StatusFailed && target.Order == nil {
		a.mu.Unlock()
		return o.finish(errf(api.CodeBadRequest, "release %s never got past prepare: nothing to roll back to", vname(target.Version)))
	}
	if !ag.hasCode(target.Digest) {
		a.mu.Unlock()
		return o.finish(errf(api.CodeNotFound, "the code of %s is no longer kept", vname(target.Version)))
	}
	r := ag.newRelease(a, target.Digest, "rollback", maps.Clone(target.Config))
	r.Message = "rollback to " + vname(target.Version)
	r.Procfile, r.Order = maps.Clone(target.Procfile), slices.Clone(target.Order)
	inheritAppJSON(r, target)
	r.DeployedBy = deployedBy
	o.recordLater(r.Version) // written with the first process (recordLater)
	t := a.target(r)
	a.mu.Unlock()
	o.res.Release = vname(r.Version)
	o.enter(api.PhasePrepare, "%s: a new release %s from %s", name, vname(r.Version), vname(target.Version))
	return o.rollout(r, t)
}

// ChangeConfig sets and unsets config vars. With an active release this
// makes a new release with the same code and deploys it.
func (ag *Agent) ChangeConfig(name string, req api.ConfigRequest, deployedBy string, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "config", emit)
	for k, v := range req.Set {
		if err := grammar.CheckSettableConfigKey(k); err != nil {
			return o.finish(badRequest(err))
		}
		if err := grammar.CheckConfigValue(k, v); err != nil {
			return o.finish(badRequest(err))
		}
	}
	for _, k := range req.Unset {
		if err := grammar.CheckConfigKey(k); err != nil {
			return o.finish(badRequest(err))
		}
	}
	if len(req.Set) == 0 && len(req.Unset) == 0 {
		return o.finish(errf(api.CodeBadRequest, "nothing to set or unset"))
	}
	o.lock()
	defer o.unlock()
	a.mu.Lock()
	if err := a.canaryBlocks(); err != nil {
		a.mu.Unlock()
		return o.finish(err)
	}
	cfg := maps.Clone(a.st.Config)
	maps.Copy(cfg, req.Set)
	for _, k := range req.Unset {
		delete(cfg, k)
	}
	if maps.Equal(cfg, a.st.Config) {
		a.mu.Unlock()
		o.info("config unchanged: nothing to do")
		return o.finish(nil)
	}
	act := a.release(a.st.Active)
	if act == nil {
		a.st.Config = cfg
		ag.save(a)
		a.mu.Unlock()
		o.info("config saved; it applies to the first release")
		o.res.Changed = true
		return o.finish(nil)
	}
	r := ag.newRelease(a, act.Digest, "config", cfg)
	r.Procfile, r.Order, r.DeployedBy = maps.Clone(act.Procfile), slices.Clone(act.Order), deployedBy
	inheritAppJSON(r, act)
	var msg []string
	for _, k := range slices.Sorted(maps.Keys(req.Set)) {
		msg = append(msg, "set "+k)
	}
	for _, k := range req.Unset {
		msg = append(msg, "unset "+k)
	}
	r.Message = strings.Join(msg, ", ")
	// The new release is not active yet: the app's config only changes
	// at cutover, so a failed config deploy leaves it as it was.
	o.recordLater(r.Version) // written with the first process (recordLater)
	t := a.target(r)
	a.mu.Unlock()
	t.ReleasePhase = true
	o.res.Release = vname(r.Version)
	o.enter(api.PhasePrepare, "%s: a new release %s with the changed config", name, vname(r.Version))
	return o.rollout(r, t)
}

// Restart replaces the processes of one type (all types when typ is "")
// with fresh ones of the same release, the preboot way: no downtime.
func (ag *Agent) Restart(name, typ string, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "restart", emit)
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
		return o.finish(errf(api.CodeBadRequest, "app %s has no active release to restart: deploy first", name))
	}
	t := a.target(r)
	t.Replace = true
	if typ != "" {
		if _, ok := r.Procfile[typ]; !ok || typ == "release" {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "app %s has no process type %q (types: %s)", name, typ, strings.Join(r.Order, ", ")))
		}
		t.Types, t.AllTypes = []string{typ}, false
	}
	o.recordLater(r.Version) // written with the first process (recordLater)
	a.mu.Unlock()
	o.res.Release = vname(r.Version)
	return o.rollout(nil, t)
}

// Scale changes how many processes of each type run.
func (ag *Agent) Scale(name string, formation map[string]int, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "scale", emit)
	if len(formation) == 0 {
		return o.finish(errf(api.CodeBadRequest, "nothing to scale: give TYPE=N"))
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
		return o.finish(errf(api.CodeBadRequest, "app %s has no release yet: deploy first, then scale", name))
	}
	for typ, n := range formation {
		if _, ok := r.Procfile[typ]; !ok || typ == "release" {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "app %s has no process type %q (types: %s)", name, typ, strings.Join(r.Order, ", ")))
		}
		if n < 0 || n > grammar.MaxScale {
			a.mu.Unlock()
			return o.finish(errf(api.CodeBadRequest, "bad count %d for %s: 0 to %d", n, typ, grammar.MaxScale))
		}
	}
	o.res.Release, o.res.Previous = vname(r.Version), vname(r.Version)
	t := a.target(r)
	t.Types, t.AllTypes, t.Formation = nil, false, map[string]int{}
	for _, typ := range r.Order {
		if n, ok := formation[typ]; ok {
			t.Types = append(t.Types, typ)
			t.Formation[typ] = n
		}
	}
	o.record(r.Version)
	a.mu.Unlock()
	return o.rollout(nil, t)
}
