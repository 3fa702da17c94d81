// Package agent is agentd's core: apps, their releases and processes, and
// the deploy state machine (prepare, release phase, preboot, readiness,
// cutover, drain). It knows nothing of HTTP or the CLI: the control API
// calls its methods and streams the events they emit.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/state"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/sockets"
)

// Config configures an Agent.
type Config struct {
	StateDir   string
	RuntimeDir string // notify sockets live here; keep the path short
	// Shim is the agentd binary used as the exec shim.
	Shim    string
	Version string
	Log     *slog.Logger
	// KeepReleases is how many releases per app are kept (default 10).
	KeepReleases int
	// ReleaseTimeout bounds the release phase (default 15m); an app may
	// have its own.
	ReleaseTimeout time.Duration
	// MaxArtifactBytes bounds what one artifact unpacks to (default 1 GiB).
	MaxArtifactBytes int64
	// MaxLogBytes caps each process's log file (default 256 MiB): past it,
	// the file is cut back to its last MiB (see logcap.go).
	MaxLogBytes int64
	// Metrics, if set, observes what the agent does.
	Metrics Observer
	// Journal, if set, receives every line of app output (journal.go): the
	// processes still write to their log files, and agentd forwards what
	// they wrote, so their output never waits for agentd.
	Journal func(o LineOrigin, line string) error
	// Inherit, if set, returns a socket passed by the previous agentd
	// (tableflip) by its key, or nil.
	Inherit func(key string) *os.File
	// Claim, if set, hands over a socket that systemd passed to agentd by
	// its fd name "APP.NAME" (socket activation or the fd store), or nil.
	Claim func(name string) *os.File
	// Store and Unstore, if set, park a socket agentd bound itself in
	// systemd's fd store under "APP.NAME", and take it out again.
	Store   func(name string, f *os.File)
	Unstore func(name string)
	// Scopes, if set (under systemd), gives each release of an app a
	// cgroup of its own.
	Scopes Scopes
	// Mode is "systemd" or "embedded", for status.
	Mode string
	// TestPause, a test-only hook, blocks an operation at the named point
	// (prepare, preboot, cutover, drain) so tests can kill agentd there.
	TestPause string
}

// Observer is told about events worth counting. It keeps the agent free of
// any metrics library.
type Observer interface {
	DeployDone(app, kind, result string, phases []api.Phase)
	ProcessReady(app, typ string, boot time.Duration)
	DrainDone(app string, d time.Duration, killed int)
	// ConnectionsCut: processes SIGKILLed at the drain timeout still held
	// n connections open.
	ConnectionsCut(app string, n int)
	CrashRestart(app, typ string)
	// ActiveRelease is told an app's active release ("" for none) when
	// the app is created or loaded and at each cutover.
	ActiveRelease(app, release string)
	AppDestroyed(app string)
}

type nopObserver struct{}

func (nopObserver) DeployDone(string, string, string, []api.Phase) {}
func (nopObserver) ProcessReady(string, string, time.Duration)     {}
func (nopObserver) DrainDone(string, time.Duration, int)           {}
func (nopObserver) CrashRestart(string, string)                    {}

// Agent owns every app on the host.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	obs     Observer
	started time.Time

	mu   sync.Mutex
	apps map[string]*app

	// frozen is set while a new agentd takes over (an upgrade).
	frozen atomic.Bool
	// lastOp describes the last finished operation, for Summary.
	lastOp atomic.Value

	// closed ends agentd's background loops (the log cap) at Close.
	closed    chan struct{}
	closeOnce sync.Once

	// journalErrs counts lines the journal refused (journal.go).
	journalErrs atomic.Int64
	// memory returns the garbage of a burst of operations (memory.go).
	memory memoryReturn
}

// Errors with a code the control API maps to a status.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errf(code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// New loads the state under cfg.StateDir, binds every app's sockets, and
// starts each app's active release. An app whose sockets cannot be bound is
// reported and left stopped; the others run.
func New(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.KeepReleases <= 0 {
		cfg.KeepReleases = 10
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = 15 * time.Minute
	}
	if cfg.Metrics == nil {
		cfg.Metrics = nopObserver{}
	}
	if cfg.Mode == "" {
		cfg.Mode = "embedded"
	}
	for _, d := range []string{cfg.appsDir(), cfg.slugsDir(), cfg.logsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.notifyDir(), 0o711); err != nil {
		return nil, fmt.Errorf("runtime directory: %w", err)
	}
	// Unpacks a crash interrupted leave a tmp- directory behind.
	if tmps, err := filepath.Glob(filepath.Join(cfg.slugsDir(), "tmp-*")); err == nil {
		for _, t := range tmps {
			os.RemoveAll(t)
		}
	}
	ag := &Agent{cfg: cfg, log: cfg.Log, obs: cfg.Metrics, started: time.Now(), apps: map[string]*app{}, closed: make(chan struct{})}
	if err := ag.load(); err != nil {
		return nil, err
	}
	go ag.capLogs()
	return ag, nil
}

func (c Config) appsDir() string   { return filepath.Join(c.StateDir, "apps") }
func (c Config) slugsDir() string  { return filepath.Join(c.StateDir, "slugs") }
func (c Config) logsDir() string   { return filepath.Join(c.StateDir, "logs") }
func (c Config) notifyDir() string { return filepath.Join(c.RuntimeDir, "notify") }
func (c Config) appFile(name string) string {
	return filepath.Join(c.appsDir(), name+".json")
}
func (c Config) slugDir(digest string) string {
	return filepath.Join(c.slugsDir(), strings.ReplaceAll(digest, ":", "-"))
}

// save persists a's state. Callers hold a.mu. While agentd is frozen for
// an upgrade, the new agentd owns the state and nothing is written.
func (ag *Agent) save(a *app) error {
	if ag.frozen.Load() {
		return nil
	}
	a.st.Processes = a.st.Processes[:0]
	for _, p := range a.procs {
		if p.p.Exited() {
			continue
		}
		a.st.Processes = append(a.st.Processes, procRecord{
			Name: p.name(), Type: p.typ, Index: p.index, Release: p.release, PID: p.p.PID(),
			StartedAt: p.p.KernelStart(), State: p.state, Restarts: p.restarts, ReadyAt: p.readyAt,
			Notify: p.notifyPath, Log: p.log, LogSent: p.fwd.sent(),
		})
	}
	if err := state.WriteJSON(ag.cfg.appFile(a.st.Name), &a.st); err != nil {
		ag.log.Error("saving state", "app", a.st.Name, "err", err)
		return err
	}
	return nil
}

func (ag *Agent) load() error {
	state.CleanTemp(ag.cfg.appsDir())
	entries, err := os.ReadDir(ag.cfg.appsDir())
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		a := &app{op: make(chan struct{}, 1), backoff: map[string]*time.Timer{}}
		if err := state.ReadJSON(ag.cfg.appFile(name), &a.st); err != nil {
			return fmt.Errorf("state of app %s: %w", name, err)
		}
		ag.apps[name] = a
		ag.recover(a)
	}
	return nil
}

// recover brings a loaded app to one consistent state after agentd
// (re)started, whether after an upgrade, a restart, a crash or a reboot:
// processes a previous agentd started are adopted, the sockets are taken
// back (inherited, or from the processes that hold them, or bound again),
// an operation that was in progress is reported interrupted, and the app is
// reconciled with its active release and formation in the background.
func (ag *Agent) recover(a *app) {
	for _, rec := range a.st.Processes {
		sp, err := supervisor.Adopt(rec.PID, rec.StartedAt)
		if err != nil {
			ag.log.Info("process from before is gone", "app", a.st.Name, "process", rec.Name, "pid", rec.PID)
			continue
		}
		pr := &proc{typ: rec.Type, index: rec.Index, release: rec.Release, p: sp, state: rec.State,
			restarts: rec.Restarts, readyAt: rec.ReadyAt, log: rec.Log, notifyPath: rec.Notify,
			extend: make(chan time.Duration, 1)}
		pr.fwd.off = rec.LogSent
		a.procs = append(a.procs, pr)
		ag.log.Info("adopted process", "app", a.st.Name, "release", vname(rec.Release), "process", rec.Name, "pid", rec.PID, "state", rec.State)
	}
	for i, spec := range a.st.Sockets {
		h, err := ag.reclaimSocket(a, i, spec)
		if err != nil {
			ag.log.Error("socket not available", "app", a.st.Name, "socket", spec.Name, "err", err)
			continue
		}
		a.held = append(a.held, h)
	}
	if op := a.st.Op; op != nil {
		if r := a.release(op.Release); r != nil && r.Status != api.StatusActive {
			r.Status = api.StatusFailed
			r.Error = fmt.Sprintf("interrupted: agentd stopped during the %s phase of the %s", op.Phase, op.Kind)
		}
		ag.log.Warn("operation interrupted by an agentd restart", "app", a.st.Name, "op", op.Kind, "phase", op.Phase)
	}
	if a.st.Op != nil {
		// Any release left "releasing" or "pending" by the interruption.
		for _, r := range a.st.Releases {
			if r.Status == api.StatusPending || r.Status == api.StatusReleasing {
				r.Status = api.StatusFailed
				if r.Error == "" {
					r.Error = "interrupted: agentd stopped before this release was switched to"
				}
			}
		}
	}
	a.st.Op = nil
	a.mu.Lock()
	ag.save(a)
	a.mu.Unlock()
	ag.obs.ActiveRelease(a.st.Name, vnameOr(a.st.Active))
	for _, p := range a.procs {
		r := a.release(p.release)
		p.p.OnExit(func() { ag.watchExit(a, p, r) })
		go ag.attachNotify(a, p)
	}
	if len(a.held) == len(a.st.Sockets) {
		go ag.reconcile(a)
	}
}

// reclaimSocket gets socket i of a back: from the previous agentd (an
// upgrade), else from a running process that holds it (a restart or crash:
// the apps kept it open and kept serving), else by binding it again at the
// address it had.
func (ag *Agent) reclaimSocket(a *app, i int, spec sockets.Spec) (*sockets.Held, error) {
	if ag.cfg.Inherit != nil {
		if f := ag.cfg.Inherit(socketKey(a.st.Name, spec.Name)); f != nil {
			if h, err := sockets.FromFile(spec, f); err == nil {
				return h, nil
			}
			f.Close()
		}
	}
	bound := ""
	if i < len(a.st.Bound) {
		bound = a.st.Bound[i]
	}
	if ag.cfg.Claim != nil {
		if f := ag.cfg.Claim(a.st.Name + "." + spec.Name); f != nil {
			if h, err := sockets.FromFile(spec, f); err == nil {
				return h, nil
			}
			f.Close()
		}
	}
	if bound != "" {
		for _, p := range a.procs {
			if p.typ != spec.Type || p.p.Exited() {
				continue
			}
			if h, err := sockets.TakeFrom(p.p.PID(), spec, bound); err == nil {
				ag.log.Info("socket taken back from a running process", "app", a.st.Name, "socket", spec.Name, "pid", p.p.PID())
				return h, nil
			}
		}
	}
	again := spec
	if bound != "" && spec.Network != "unix" {
		// Port 0 was resolved once; keep the port the clients know.
		again.Address = bound
	}
	return ag.listen(a.st.Name, again)
}

// listen binds a socket agentd owns itself and, under systemd, parks a
// copy in the fd store so that a restarted agentd gets it back even when
// no app process holds it.
func (ag *Agent) listen(app string, spec sockets.Spec) (*sockets.Held, error) {
	h, err := sockets.Listen(spec)
	if err == nil && ag.cfg.Store != nil {
		ag.cfg.Store(app+"."+spec.Name, h.File)
	}
	return h, err
}

// claimOrListen gives a new app the socket systemd passed for it by name,
// or binds it.
func (ag *Agent) claimOrListen(app string, spec sockets.Spec) (*sockets.Held, error) {
	if ag.cfg.Claim != nil {
		if f := ag.cfg.Claim(app + "." + spec.Name); f != nil {
			h, err := sockets.FromFile(spec, f)
			if err != nil {
				f.Close()
				return nil, err
			}
			ag.log.Info("socket from systemd", "app", app, "socket", spec.Name, "bound", h.Bound())
			return h, nil
		}
	}
	return ag.listen(app, spec)
}

func socketKey(app, name string) string { return "app/" + app + "/" + name }

// reconcile makes the running processes match the active release and the
// formation: processes of other releases are drained (an interrupted
// deploy's new ones, or old ones an interrupted drain left), missing ones
// are started and waited for, surplus ones drained.
func (ag *Agent) reconcile(a *app) {
	a.op <- struct{}{}
	defer func() { <-a.op }()
	o := ag.newOp(a, "boot", func(api.Event) {})
	a.mu.Lock()
	r := a.release(a.st.Active)
	var stale []*proc
	have := map[string]bool{}
	for _, p := range a.procs {
		if p.p.Exited() {
			continue
		}
		if r == nil || p.release != r.Version || p.state == api.StateDraining || p.typ == "release" || p.index > a.count(p.typ) {
			stale = append(stale, p)
			continue
		}
		have[p.name()] = true
	}
	var missing [][2]any
	if r != nil {
		for _, t := range r.Order {
			for i := 1; i <= a.count(t); i++ {
				if !have[fmt.Sprintf("%s.%d", t, i)] {
					missing = append(missing, [2]any{t, i})
				}
			}
		}
	}
	a.mu.Unlock()
	if len(missing) > 0 {
		ag.log.Info("starting missing processes", "app", a.st.Name, "release", vname(r.Version), "count", len(missing))
		var started []*proc
		for _, m := range missing {
			p, err := ag.startProc(a, r, m[0].(string), m[1].(int))
			if err != nil {
				ag.log.Error("starting process", "app", a.st.Name, "err", err)
				continue
			}
			started = append(started, p)
		}
		if err := o.awaitReady(started); err != nil {
			ag.log.Error("processes not ready after agentd start", "app", a.st.Name, "err", err)
		}
	}
	if len(stale) > 0 {
		ag.log.Info("draining processes of an interrupted operation", "app", a.st.Name, "count", len(stale))
		ag.drain(a, stale, nil)
	}
	a.mu.Lock()
	ag.save(a)
	a.mu.Unlock()
}

func (ag *Agent) get(name string) (*app, error) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	a, ok := ag.apps[name]
	if !ok {
		return nil, errf(api.CodeNotFound, "no app named %q (see `hctl apps`)", name)
	}
	return a, nil
}

// CreateApp validates req, binds the app's sockets and persists it. Bad
// input changes nothing.
func (ag *Agent) CreateApp(req api.AppCreate) (api.App, error) {
	if !appNameRe().MatchString(req.Name) {
		return api.App{}, errf(api.CodeBadRequest, "bad app name %q: want lowercase letters, digits and '-', starting with a letter, at most 30", req.Name)
	}
	if len(req.Sockets) == 0 {
		return api.App{}, errf(api.CodeBadRequest, "app %s: at least one --socket [TYPE/]NAME=ADDR is needed", req.Name)
	}
	st := appState{
		Name: req.Name, Formation: map[string]int{}, Readiness: map[string]string{},
		BootTimeout: req.BootTimeout, DrainTimeout: req.DrainTimeout, User: req.User,
		CreatedAt: time.Now().UTC(), Config: map[string]string{},
	}
	if st.BootTimeout <= 0 {
		st.BootTimeout = api.Duration(DefaultBootTimeout)
	}
	if st.DrainTimeout <= 0 {
		st.DrainTimeout = api.Duration(DefaultDrainTimeout)
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

	if ag.frozen.Load() {
		return api.App{}, errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade): try again in a moment")
	}
	ag.mu.Lock()
	defer ag.mu.Unlock()
	if _, ok := ag.apps[req.Name]; ok {
		return api.App{}, errf(api.CodeConflict, "app %s already exists", req.Name)
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
	return ag.appAPI(a), nil
}

func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	if os.Geteuid() != 0 && u.Uid != strconv.Itoa(os.Geteuid()) {
		return nil, fmt.Errorf("user %q: agentd runs as uid %d and can only run apps as another user when it runs as root", name, os.Geteuid())
	}
	return u, nil
}

// DestroyApp stops every process of the app (draining them), closes its
// sockets and removes its state. confirm must repeat the name.
func (ag *Agent) DestroyApp(name, confirm string) error {
	a, err := ag.get(name)
	if err != nil {
		return err
	}
	if confirm != name {
		return errf(api.CodeBadRequest, "destroying %s stops it and deletes its releases: confirm with --confirm %s", name, name)
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
	}
	a.held = nil
	a.mu.Unlock()
	ag.mu.Lock()
	delete(ag.apps, name)
	ag.mu.Unlock()
	ag.obs.AppDestroyed(name)
	if err := os.Remove(ag.cfg.appFile(name)); err != nil {
		return errf(api.CodeInternal, "removing state of %s: %v", name, err)
	}
	state.SyncDir(ag.cfg.appsDir())
	os.RemoveAll(filepath.Join(ag.cfg.logsDir(), name))
	ag.pruneSlugs()
	ag.log.Info("app destroyed", "app", name)
	return nil
}

func (ag *Agent) appAPI(a *app) api.App {
	out := api.App{
		Name: a.st.Name, Formation: map[string]int{}, Readiness: maps.Clone(a.st.Readiness),
		BootTimeout: a.st.BootTimeout, DrainTimeout: a.st.DrainTimeout, User: a.st.User,
		CreatedAt: a.st.CreatedAt, Deploying: a.st.Op != nil,
		AllowRoot: a.st.AllowRoot, Limits: a.st.Limits, ReleaseTimeout: a.st.ReleaseTimeout,
	}
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
		out.Sockets = append(out.Sockets, s)
	}
	return out
}

// Apps lists every app, sorted by name.
func (ag *Agent) Apps() []api.App {
	ag.mu.Lock()
	apps := slices.Collect(maps.Values(ag.apps))
	ag.mu.Unlock()
	out := make([]api.App, 0, len(apps))
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
	defer a.mu.Unlock()
	out := []api.Release{}
	for i := len(a.st.Releases) - 1; i >= 0; i-- {
		out = append(out, a.st.Releases[i].api(name))
	}
	return out, nil
}

// Release describes one release.
func (ag *Agent) Release(name, version string) (api.Release, error) {
	a, err := ag.get(name)
	if err != nil {
		return api.Release{}, err
	}
	v, err := parseVersion(version)
	if err != nil {
		return api.Release{}, errf(api.CodeBadRequest, "%v", err)
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
	return st
}

// LogDir is where an app's process output is written.
func (ag *Agent) LogDir(name string) (string, error) {
	if _, err := ag.get(name); err != nil {
		return "", err
	}
	return filepath.Join(ag.cfg.logsDir(), name), nil
}

// Close releases agentd's resources without stopping app processes: the
// apps keep serving on the sockets they inherited while agentd is away.
// With stopApps, every app's processes are drained and stopped first.
func (ag *Agent) Close(stopApps bool) {
	ag.closeOnce.Do(func() { close(ag.closed) })
	ag.mu.Lock()
	apps := slices.Collect(maps.Values(ag.apps))
	ag.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range apps {
		a.mu.Lock()
		for _, t := range a.backoff {
			t.Stop()
		}
		procs := a.liveProcs(0, nil)
		if stopApps {
			for _, p := range procs {
				p.retired = true
			}
		}
		a.mu.Unlock()
		if stopApps {
			wg.Go(func() { ag.drain(a, procs, nil) })
		}
	}
	wg.Wait()
	if ag.cfg.Journal != nil {
		// What the apps wrote so far, so the next agentd resumes after it.
		for _, l := range ag.liveLogs() {
			ag.forward(l.app, l.p, false)
		}
	}
	for _, a := range apps {
		a.mu.Lock()
		ag.save(a)
		for _, h := range a.held {
			h.File.Close()
		}
		for _, p := range a.procs {
			p.closeFiles()
		}
		a.mu.Unlock()
	}
}

// Freeze prepares a hand-over to a new agentd (an upgrade): it waits for
// every operation in progress to finish and holds them off, and stops
// writing state, which the new agentd then owns. It returns the sockets to
// pass on, by key, and thaw, which undoes the freeze if the upgrade fails.
func (ag *Agent) Freeze() (files map[string]*os.File, thaw func()) {
	ag.mu.Lock()
	apps := slices.Collect(maps.Values(ag.apps))
	ag.mu.Unlock()
	for _, a := range apps {
		a.op <- struct{}{}
	}
	// Forward what the apps wrote so far and record how far, so that the
	// new agentd resumes the journal where this one stopped.
	if ag.cfg.Journal != nil {
		for _, l := range ag.liveLogs() {
			ag.forward(l.app, l.p, false)
		}
		for _, a := range apps {
			a.mu.Lock()
			ag.save(a)
			a.mu.Unlock()
		}
	}
	ag.frozen.Store(true)
	files = map[string]*os.File{}
	for _, a := range apps {
		a.mu.Lock()
		for _, h := range a.held {
			files[socketKey(a.st.Name, h.Spec.Name)] = h.File
		}
		a.mu.Unlock()
	}
	return files, func() {
		ag.frozen.Store(false)
		for _, a := range apps {
			a.mu.Lock()
			ag.save(a)
			a.mu.Unlock()
			<-a.op
		}
	}
}

// Ping takes every lock a request would, so that a watchdog fed after it
// returns proves agentd is not deadlocked.
func (ag *Agent) Ping() {
	ag.mu.Lock()
	apps := slices.Collect(maps.Values(ag.apps))
	ag.mu.Unlock()
	for _, a := range apps {
		a.mu.Lock()
		//lint:ignore SA2001 the lock itself is the check
		a.mu.Unlock()
	}
}

// Summary is a one-line status for systemd (STATUS=): apps, processes,
// and the last operation's outcome.
func (ag *Agent) Summary() string {
	st := ag.Status()
	s := fmt.Sprintf("%d apps, %d processes", st.Apps, st.Processes)
	if last, ok := ag.lastOp.Load().(string); ok && last != "" {
		s += "; last: " + last
	}
	return s
}

// Scopes places app processes in a cgroup per release: under systemd a
// scope unit, agentd-APP-vN.scope (package scope).
type Scopes interface {
	// Place moves pid, a new process of release of app, into the
	// release's cgroup. drainTimeout is the app's: systemd's stop of the
	// scope at shutdown allows it.
	Place(app string, release, pid int, drainTimeout time.Duration) error
	// KillRelease SIGKILLs whatever is left in the release's cgroup once
	// none of its processes is supervised any more: processes that left
	// their process group (daemons) and outlived the drain.
	KillRelease(app string, release int) error
}
