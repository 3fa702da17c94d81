package agent

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/agentd/agentd/grammar"

	"github.com/agentd/agentd/agentd/api"
)

// What the core shows of itself: apps, processes, releases, config and
// status, as the control API's types.

func (ag *Agent) appAPI(a *app) api.App {
	out := api.App{
		Name: a.st.Name, Formation: map[string]int{}, Readiness: maps.Clone(a.st.Readiness),
		BootTimeout: api.Duration(a.st.BootTimeout), DrainTimeout: api.Duration(a.st.DrainTimeout), User: a.st.User,
		CreatedAt: a.st.CreatedAt, Deploying: a.st.Op != nil,
		AllowRoot: a.st.AllowRoot, Limits: a.st.Limits, ReleaseTimeout: api.Duration(a.st.ReleaseTimeout),
		Bake: api.Duration(a.st.Bake), MaxSurge: a.st.MaxSurge, Strategy: maps.Clone(a.st.Strategy),
		ShedRate: a.st.ShedRate, Cron: cronWord(a.st.CronOff),
	}
	for typ, d := range a.st.DrainTimeouts {
		if out.DrainTimeouts == nil {
			out.DrainTimeouts = map[string]api.Duration{}
		}
		out.DrainTimeouts[typ] = api.Duration(d)
	}
	if op := a.st.Op; op != nil {
		out.Operation, out.Phase, out.BakeUntil = op.Kind, op.Phase, op.BakeUntil
	}
	out.StateFile, out.StateNote = a.stateNote()
	out.Maintenance = a.maintenanceAPI()
	ag.webhookAPI(a, &out)
	if a.st.Active != 0 {
		out.ActiveRelease = vname(a.st.Active)
		if r := a.release(a.st.Active); r != nil {
			for _, t := range r.Order {
				out.Formation[t] = a.count(t)
			}
		}
	}
	maps.Copy(out.Formation, a.st.Formation)
	for i, spec := range a.st.Sockets {
		s := api.Socket{App: a.st.Name, Type: spec.Type, Name: spec.Name, Addr: spec.Addr, InUse: a.socketInUse(spec.Type)}
		if i < len(a.held) {
			s.Bound = a.held[i].Bound()
		}
		s.Steering, s.SteeringWhy = a.steeringAPI(spec.Name)
		out.Sockets = append(out.Sockets, s)
	}
	return out
}

// Apps lists every app, sorted by name.
func (ag *Agent) Apps() []api.App {
	ag.mu.Lock()
	apps := slices.Collect(maps.Values(ag.apps))
	out := make([]api.App, 0, len(apps)+len(ag.broken))
	for name, b := range ag.broken {
		out = append(out, b.api(name))
	}
	ag.mu.Unlock()
	for _, a := range apps {
		a.mu.Lock()
		out = append(out, ag.appAPI(a))
		a.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// AppInfo describes one app with its active release and processes.
func (ag *Agent) AppInfo(name string) (api.AppInfo, error) {
	ag.mu.Lock()
	b := ag.broken[name]
	ag.mu.Unlock()
	if b != nil {
		return api.AppInfo{App: b.api(name), Processes: []api.Process{}}, nil
	}
	a, err := ag.get(name)
	if err != nil {
		return api.AppInfo{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	info := api.AppInfo{App: ag.appAPI(a), Processes: ag.procsAPI(a)}
	if r := a.release(a.st.Active); r != nil {
		rel := r.api(name)
		info.Release = &rel
	}
	return info, nil
}

// procsAPI lists a's processes that are running or draining. Callers hold
// a.mu.
func (ag *Agent) procsAPI(a *app) []api.Process {
	out := []api.Process{}
	for _, p := range a.procs {
		if p.p.Exited() && p.state != api.StateCrashed {
			continue
		}
		out = append(out, p.api(a.st.Name))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Release < out[j].Release
	})
	return out
}

// Ps lists processes of one app, or of all apps when name is "".
func (ag *Agent) Ps(name string) ([]api.Process, error) {
	var apps []*app
	if name != "" {
		a, err := ag.get(name)
		if err != nil {
			return nil, err
		}
		apps = []*app{a}
	} else {
		ag.mu.Lock()
		apps = slices.Collect(maps.Values(ag.apps))
		ag.mu.Unlock()
	}
	out := []api.Process{}
	for _, a := range apps {
		a.mu.Lock()
		out = append(out, ag.procsAPI(a)...)
		a.mu.Unlock()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].App < out[j].App })
	return out, nil
}

// Releases lists an app's releases, newest first.
func (ag *Agent) Releases(name string) ([]api.Release, error) {
	a, err := ag.get(name)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	out := []api.Release{}
	var digests []string
	for i := len(a.st.Releases) - 1; i >= 0; i-- {
		out = append(out, a.st.Releases[i].api(name))
		digests = append(digests, a.st.Releases[i].Digest)
	}
	a.mu.Unlock()
	// Checked on disk (the store, or an older agentd's slugs) outside the
	// lock: a release nothing can start any more says so.
	for i, d := range digests {
		out[i].CodeGone = d != "" && !ag.hasCode(d)
	}
	return out, nil
}

// Release describes one release.
func (ag *Agent) Release(name, version string) (api.Release, error) {
	a, err := ag.get(name)
	if err != nil {
		return api.Release{}, err
	}
	v, err := grammar.ParseRelease(version)
	if err != nil {
		return api.Release{}, badRequest(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.release(v)
	if r == nil {
		return api.Release{}, errf(api.CodeNotFound, "app %s has no release %s", name, vname(v))
	}
	return r.api(name), nil
}

// ConfigVars returns the app's current config vars.
func (ag *Agent) ConfigVars(name string) (map[string]string, error) {
	a, err := ag.get(name)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.st.Config), nil
}

// Status summarises the agent.
func (ag *Agent) Status() api.Status {
	st := api.Status{
		Version: ag.cfg.Version, PID: os.Getpid(), Mode: ag.cfg.Mode, StartedAt: ag.started,
		UptimeSeconds: time.Since(ag.started).Seconds(), StateDir: ag.cfg.StateDir, Sockets: []api.Socket{},
	}
	for _, a := range ag.Apps() {
		st.Apps++
		st.Sockets = append(st.Sockets, a.Sockets...)
	}
	ps, _ := ag.Ps("")
	st.Processes = len(ps)
	st.KeepReleases = ag.cfg.KeepReleases
	if u, err := ag.StoreUsage(ag.storeRefs()); err == nil {
		st.Store = &u
	}
	return st
}

// LogDir is where an app's process output is written.
func (ag *Agent) LogDir(name string) (string, error) {
	if _, err := ag.get(name); err != nil {
		return "", err
	}
	return filepath.Join(ag.cfg.logsDir(), name), nil
}
