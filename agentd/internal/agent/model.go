package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/appjson"
	"github.com/agentd/agentd/agentd/internal/notify"
	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/rollout"
	"github.com/agentd/agentd/agentd/internal/state"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/sockets"
)

// Defaults (docs/concepts.md): Heroku's R10 boot timeout and its drain timeout.
const (
	DefaultBootTimeout  = 60 * time.Second
	DefaultDrainTimeout = 30 * time.Second
)

// The state file has types of its own, not the API's (agentd/api): what
// agentd reads at start must not change when the wire format does.

// duration is a time.Duration as the state file keeps it: a Go duration
// string ("60s"); a number of seconds is read too.
type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("bad duration %q: %w", s, err)
		}
		*d = duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return errors.New(`a duration is a string like "30s" or a number of seconds`)
	}
	*d = duration(secs * float64(time.Second))
	return nil
}

// phaseTime is how long one phase of a release's rollout took.
type phaseTime struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

func phaseTimesOf(ps []api.Phase) []phaseTime {
	out := make([]phaseTime, len(ps))
	for i, p := range ps {
		out[i] = phaseTime{Name: p.Name, Seconds: p.Seconds}
	}
	return out
}

func (t phaseTime) api() api.Phase { return api.Phase{Name: t.Name, Seconds: t.Seconds} }

// appState is what agentd persists of an app, one JSON file per app.
type appState struct {
	Name    string         `json:"name"`
	Sockets []sockets.Spec `json:"sockets"`
	// Bound is the address each socket got (index-aligned with Sockets),
	// so that a socket asked for port 0 keeps its port across restarts.
	Bound []string `json:"bound,omitempty"`
	// Cookies are the SO_COOKIE of each steered socket's active-release
	// socket, by socket name (steer.go).
	Cookies      map[string]uint64 `json:"cookies,omitempty"`
	Formation    map[string]int    `json:"formation"`
	Readiness    map[string]string `json:"readiness"`
	BootTimeout  duration          `json:"boot_timeout"`
	DrainTimeout duration          `json:"drain_timeout"`
	User         string            `json:"user,omitempty"`
	CreatedAt    time.Time         `json:"created_at"`
	// Config is the config of the newest release (what `config set` edits).
	Config      map[string]string `json:"config"`
	Releases    []*releaseState   `json:"releases"`
	Active      int               `json:"active"` // version, 0 for none
	LastVersion int               `json:"last_version"`
	// Processes records the running processes, so a restarted agentd can
	// find them.
	Processes []procRecord `json:"processes"`
	// Op is the operation in progress, so a restarted agentd can report it
	// as interrupted.
	Op *opRecord `json:"op,omitempty"`

	// AllowRoot: created with consent to run as root (see CreateApp).
	AllowRoot bool `json:"allow_root,omitempty"`
	// Limits are the app's resource limits, "NAME=SOFT:HARD", applied by
	// the exec shim to every process.
	Limits []string `json:"limits,omitempty"`
	// ReleaseTimeout bounds the release phase; 0 for agentd's default.
	ReleaseTimeout duration `json:"release_timeout,omitempty"`

	// Bake is how long a new release is watched after its cutover
	// before it counts as good; 0: no bake.
	Bake duration `json:"bake,omitempty"`
	// MaxSurge bounds the new processes of a type beyond its formation
	// during a rollout; 0: the whole formation.
	MaxSurge int `json:"max_surge,omitempty"`
	// Strategy per process type: "overlap" (the default) or "stop-first".
	Strategy map[string]string `json:"strategy,omitempty"`
	// DrainTimeouts override DrainTimeout per process type.
	DrainTimeouts map[string]duration `json:"drain_timeouts,omitempty"`
	// ShedRate > 0: at a generation's deadline its connections are closed
	// at that many per second before the SIGKILL.
	ShedRate float64 `json:"shed_rate,omitempty"`

	// Maintenance is the app's maintenance mode (maintenance.go).
	Maintenance *maintState `json:"maintenance,omitempty"`
	// Canary is the app's canary (canary.go), nil when none.
	Canary *canaryRecord `json:"canary,omitempty"`
	// CronOff: this host does not run the app's cron jobs (a fleet's
	// other hosts); Cron is what it keeps of each job (cron.go).
	CronOff bool                   `json:"cron_off,omitempty"`
	Cron    map[string]*cronRecord `json:"cron,omitempty"`
	// Webhook is where the app's deploy events go, signed with
	// WebhookSecret (hooks.go).
	Webhook       string `json:"webhook,omitempty"`
	WebhookSecret string `json:"webhook_secret,omitempty"`
	// Runs are the running one-off processes (hctl run, run.go), kept
	// apart from Processes: they are no part of any formation.
	Runs []runRecord `json:"runs,omitempty"`
	// LastRun numbers them: run.N.
	LastRun int `json:"last_run,omitempty"`
}

type releaseState struct {
	Version    int               `json:"version"`
	Status     string            `json:"status"`
	Message    string            `json:"message,omitempty"`
	Source     string            `json:"source"`
	Digest     string            `json:"digest"`
	ReleaseID  string            `json:"release_id,omitempty"`
	Procfile   map[string]string `json:"procfile"`
	Order      []string          `json:"order"` // process types in Procfile order
	Config     map[string]string `json:"config"`
	CreatedAt  time.Time         `json:"created_at"`
	DeployedBy string            `json:"deployed_by,omitempty"`
	Error      string            `json:"error,omitempty"`
	Phases     []phaseTime       `json:"phases,omitempty"`
	// AppJSON is the release's app.json (appjson.go), nil without one;
	// Postdrain what became of its scripts.agentd.postdrain.
	AppJSON   *appjson.Manifest `json:"app_json,omitempty"`
	Postdrain *postdrainState   `json:"postdrain,omitempty"`
}

// procRecord is what a restarted agentd needs to adopt a process: its
// identity (PID and the kernel's start time, so a recycled PID never
// matches) and where it stood.
type procRecord struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Index     int       `json:"index"`
	Release   int       `json:"release"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	State     string    `json:"state"`
	Restarts  int       `json:"restarts,omitempty"`
	ReadyAt   time.Time `json:"ready_at,omitzero"`
	Notify    string    `json:"notify,omitempty"`
	Log       string    `json:"log,omitempty"`
	// LogSent is how much of Log was forwarded to the journal.
	LogSent int64 `json:"log_sent,omitempty"`
	// Probe is the address of the process's private probe socket, so a
	// restarted agentd probes it again (a bake window).
	Probe string `json:"probe,omitempty"`
	// KillAt is a draining process's deadline: a restarted agentd keeps
	// it (and sheds or kills at it), it does not start the drain anew.
	KillAt time.Time `json:"kill_at,omitzero"`
	// Cron: a cron job's run (cron.go), no part of the formation.
	Cron bool `json:"cron,omitempty"`
}

type opRecord struct {
	Kind    string    `json:"kind"`
	Release int       `json:"release"`
	Phase   string    `json:"phase"`
	Started time.Time `json:"started"`
	// BakeUntil is the end of the bake window (phase bake), so that a
	// restarted agentd resumes the bake; Previous the release it rolls
	// back to when the bake fails.
	BakeUntil time.Time `json:"bake_until,omitzero"`
	Previous  int       `json:"previous,omitempty"`
}

func vname(v int) string { return fmt.Sprintf("v%d", v) }

func (r *releaseState) api(app string) api.Release {
	keys := make([]string, 0, len(r.Config))
	for k := range r.Config {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := api.Release{
		App: app, Version: r.Version, Name: vname(r.Version), Status: r.Status,
		Message: r.Message, Source: r.Source, Digest: r.Digest, ReleaseID: r.ReleaseID,
		Procfile: r.Procfile, ConfigKeys: keys, CreatedAt: r.CreatedAt,
		DeployedBy: r.DeployedBy, Error: r.Error, Postdrain: r.Postdrain.api(),
	}
	for _, p := range r.Phases {
		out.Phases = append(out.Phases, p.api())
	}
	return out
}

// app is an app in memory: its persisted state, the sockets agentd holds
// for it, and its processes.
type app struct {
	// op serialises operations that change what runs: one at a time per app.
	op chan struct{}

	mu   sync.Mutex // guards everything below
	st   appState
	held []*sockets.Held
	// steer is the kernel steering of each steered socket by name, and
	// steerWhy why a socket is shared instead (steer.go).
	steer    map[string]*steering
	steerWhy map[string]string
	procs    []*proc
	backoff  map[string]*time.Timer // pending crash restarts by process name
	gone     bool                   // destroyed

	// cur is the operation holding the op lock (Attach, Cancel);
	// cutover is set once its rollout is past the cutover; bakeEnd
	// ends its bake early (EndBake).
	cur     *op
	cutover bool
	bakeEnd chan bool

	// recovered is set when the state file was refused at start and its
	// previous generation used (statefile.go).
	recovered *state.Recovered

	// cron caches the cron jobs of the active release (cron.go).
	cron *cronJobs
}

func (a *app) release(v int) *releaseState {
	for _, r := range a.st.Releases {
		if r.Version == v {
			return r
		}
	}
	return nil
}

// count is how many processes of typ the formation wants. A type with no
// entry runs one process if it is "web" and none otherwise, as on Heroku.
func (a *app) count(typ string) int {
	if n, ok := a.st.Formation[typ]; ok {
		return n
	}
	if typ == sockets.DefaultType {
		return 1
	}
	return 0
}

// drainTimeoutOf is how long a process of typ may drain. Callers hold a.mu.
func (a *app) drainTimeoutOf(typ string) time.Duration {
	if d, ok := a.st.DrainTimeouts[typ]; ok && d > 0 {
		return time.Duration(d)
	}
	return time.Duration(a.st.DrainTimeout)
}

func (a *app) readinessOf(typ string) readiness.Kind {
	if typ == rollout.Responder {
		return responderReadiness
	}
	if s, ok := a.st.Readiness[typ]; ok {
		if k, err := readiness.Parse(s); err == nil {
			return k
		}
	}
	return readiness.Default
}

// proc is one process of the app.
type proc struct {
	typ     string
	index   int
	release int

	p      *supervisor.Process
	ns     *notify.Socket
	probe  *readiness.Probe
	extend chan time.Duration // EXTEND_TIMEOUT_USEC while booting
	log    string
	// notifyPath is the NOTIFY_SOCKET the process was given; it outlives
	// agentd restarts, which bind it again.
	notifyPath string

	// Guarded by app.mu.
	state    string
	readyAt  time.Time
	restarts int
	killAt   time.Time
	retired  bool // being replaced or stopped: never restarted
	cron     bool // a cron job's run (cron.go): the rollout engine never sees it
	// status is the last STATUS= it sent; set by its notify socket's reader
	// (procs.go: notified), which takes no lock.
	status atomic.Pointer[string]
	conns  *int // open connections, counted while draining (observe.go)

	// For the message of a failed deploy (hostile.go): bytes cut from its
	// log by the cap, and notify messages received.
	logCut   atomic.Int64
	notified atomic.Int64

	// fwd: how much of the log file went to the journal (journal.go).
	fwd logForward
	// trigger fires when the process sent WATCHDOG=trigger (bake.go).
	trigger signal

	// run is set for a one-off process (run.go): never part of a rollout.
	run *runInfo
	// startT times its start (starttime.go).
	startT startTimes
}

func (p *proc) name() string {
	if isScript(p.typ) {
		return p.typ // run once: release, postdeploy, postdrain
	}
	return fmt.Sprintf("%s.%d", p.typ, p.index)
}

func (p *proc) api(app string) api.Process {
	ap := api.Process{
		App: app, Name: p.name(), Type: p.typ, Index: p.index, Release: vname(p.release),
		State: p.state, PID: p.p.PID(), StartedAt: p.p.StartedAt(), ReadyAt: p.readyAt,
		Restarts: p.restarts, Status: p.statusMsg(), KillAt: p.killAt, Connections: p.connsAPI(),
	}
	if p.p.Exited() {
		c := p.p.Exit().Code
		ap.ExitCode = &c
	}
	return ap
}

// liveProcs returns the app's processes that are not ended, of release v
// (0 for any) and of types (nil for all), sorted by name.
func (a *app) liveProcs(v int, types []string) []*proc {
	var out []*proc
	for _, p := range a.procs {
		if p.p.Exited() || p.retired {
			continue
		}
		if (p.run != nil || p.cron) && (v != 0 || types != nil) {
			continue // a one-off or a cron run is no release's formation
		}
		if v != 0 && p.release != v {
			continue
		}
		if types != nil && !slices.Contains(types, p.typ) {
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].typ != out[j].typ {
			return out[i].typ < out[j].typ
		}
		return out[i].index < out[j].index
	})
	return out
}

func (p *proc) statusMsg() string {
	if s := p.status.Load(); s != nil {
		return *s
	}
	return ""
}
