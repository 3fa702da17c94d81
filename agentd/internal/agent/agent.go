package agent

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/state"
)

// Config configures an Agent.
type Config struct {
	StateDir   string
	RuntimeDir string // notify sockets live here; keep the path short
	// Shim is the exec shim every process starts through: agentd-shim,
	// or the agentd binary itself (sockets.ShimBinary).
	Shim string
	// Self is agentd's own binary, which the processes agentd runs itself
	// start (the maintenance responder, a run's relay), through the shim
	// like any other; empty: Shim, which is then agentd.
	Self    string
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
	// Webhooks, if set, delivers the apps' deploy events (hooks.go).
	Webhooks Hooks
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
	// Steer, if set, makes the kernel steering of one reuseport group
	// (steer.go): each release gets a socket of its own in an SO_REUSEPORT
	// group, and a BPF program picks the release for each new connection.
	// nil: every app socket is one socket shared by all releases, and
	// SteerOff says why.
	Steer    Steerer
	SteerOff string
	// Mode is "systemd" or "embedded", for status.
	Mode string
	// TestMemAvailable, a test-only hook, stands in for the memory the
	// machine has available (bytes; AGENTD_TEST_MEM_AVAILABLE).
	TestMemAvailable int64
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
	// Rollback counts a rollback agentd made by itself (why: "bake").
	Rollback(app, why string)
	// ConnectionsShed counts connections of a draining generation that
	// agentd closed at its deadline (--shed-rate).
	ConnectionsShed(app string, n int)
}

type nopObserver struct{}

func (nopObserver) DeployDone(string, string, string, []api.Phase) {}
func (nopObserver) ProcessReady(string, string, time.Duration)     {}
func (nopObserver) DrainDone(string, time.Duration, int)           {}
func (nopObserver) CrashRestart(string, string)                    {}
func (nopObserver) Rollback(string, string)                        {}
func (nopObserver) ConnectionsShed(string, int)                    {}

// Agent owns every app on the host.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	obs     Observer
	started time.Time
	groups  groups // process groups, one pass over /proc shared

	mu   sync.Mutex
	apps map[string]*app
	// broken are apps whose state file and its previous generation could
	// not be used (statefile.go): not supervised, their processes left
	// alone, until repaired.
	broken map[string]*brokenApp

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

	// cronKick wakes the cron loop (cron.go).
	cronKick chan struct{}
}

// Error is a core error with a code the control API maps to a status,
// and the cause it wraps (errors.Is and errors.As see through it).
type Error struct {
	Code string
	Msg  string
	Err  error
	// Reason and App, when set, say precisely what is wrong (api.Reason*)
	// and of which app, so that a client words its own advice: the core's
	// message names no flag of hctl's.
	Reason, App string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// badRequest is a core error for input that breaks the grammar.
func badRequest(err error) error {
	return &Error{Code: api.CodeBadRequest, Msg: err.Error(), Err: err}
}

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
	if v, err := strconv.ParseInt(os.Getenv("AGENTD_TEST_MEM_AVAILABLE"), 10, 64); err == nil && cfg.TestMemAvailable == 0 {
		cfg.TestMemAvailable = v
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
	ag := &Agent{cfg: cfg, log: cfg.Log, obs: cfg.Metrics, started: time.Now(), apps: map[string]*app{}, broken: map[string]*brokenApp{}, closed: make(chan struct{}), cronKick: make(chan struct{}, 1)}
	if err := ag.load(); err != nil {
		return nil, err
	}
	go ag.capLogs()
	go ag.runCron()
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
func (ag *Agent) save(a *app) error { return ag.saveThen(a, nil) }

// saveThen is save that calls visible (when not nil) as soon as the new
// state is in place for a restarted agentd to read, before it is fsynced
// (state.WriteJSONThen): for letting just-recorded processes run.
func (ag *Agent) saveThen(a *app, visible func()) error {
	if ag.frozen.Load() {
		return nil
	}
	a.st.Processes = a.st.Processes[:0]
	for _, p := range a.procs {
		if p.p.Exited() || p.run != nil {
			continue
		}
		a.st.Processes = append(a.st.Processes, procRecord{
			Name: p.name(), Type: p.typ, Index: p.index, Release: p.release, PID: p.p.PID(),
			StartedAt: p.p.KernelStart(), State: p.state, Restarts: p.restarts, ReadyAt: p.readyAt,
			Notify: p.notifyPath, Log: p.log, LogSent: p.fwd.sent(), Probe: p.probeAddr(), KillAt: p.killAt,
			Cron: p.cron,
		})
	}
	a.recordRuns()
	var err error
	if visible == nil {
		err = state.WriteJSON(ag.cfg.appFile(a.st.Name), &a.st)
	} else {
		err = state.WriteJSONThen(ag.cfg.appFile(a.st.Name), &a.st, visible)
	}
	if err != nil {
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
		ag.loadApp(name)
	}
	return nil
}

func (ag *Agent) get(name string) (*app, error) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	a, ok := ag.apps[name]
	if b := ag.broken[name]; !ok && b != nil {
		return nil, &Error{Code: api.CodeConflict, Reason: api.ReasonBroken, App: name,
			Msg: fmt.Sprintf("app %s is not supervised: its state file is broken (%s)", name, b.err)}
	}
	if !ok {
		return nil, &Error{Code: api.CodeNotFound, Msg: fmt.Sprintf("no app named %q", name), Reason: api.ReasonNoSuchApp, App: name}
	}
	return a, nil
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
			s := a.steer[h.Spec.Name]
			if s == nil {
				continue
			}
			if s.canary != 0 && s.gens[s.canary] != nil {
				files[socketKey(a.st.Name, h.Spec.Name)+"@canary"] = s.gens[s.canary].File
			}
			// The new agentd steers on with this program and these maps.
			if fs, err := s.group.Files(); err == nil {
				for f, file := range fs {
					files[socketKey(a.st.Name, h.Spec.Name)+"@steer."+f] = file
				}
			}
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

// self is agentd's own binary, for the processes that run agentd in one
// of its modes (Config.Self).
func (ag *Agent) self() string {
	if ag.cfg.Self != "" {
		return ag.cfg.Self
	}
	return ag.cfg.Shim
}
