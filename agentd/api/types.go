// Package api holds the wire types of agentd's control API and a client for
// it. agentd serves it and hctl uses it; nothing else crosses the socket.
//
// The API is HTTP/1.1 with JSON bodies on a unix socket. Every path is under
// /v1/. Errors are an [Error] body with a fitting status code. Operations
// that change what runs (deploy, rollback, restart, scale, config changes)
// answer with a stream of newline-delimited [Event] values whose last one has
// Type "result" and carries an [OpResult].
//
// Routes:
//
//	GET    /v1/status                          Status
//	GET    /v1/apps                            []App
//	POST   /v1/apps                            AppCreate -> App
//	GET    /v1/apps/{app}                      AppInfo
//	DELETE /v1/apps/{app}?confirm={app}        -> {}
//	POST   /v1/apps/{app}/deploys?message=&skip_release_phase=1&release_id=
//	                                           body: the artifact as .tar.gz -> event stream
//	POST   /v1/apps/{app}/release-phase        body: the artifact as .tar.gz -> event stream
//	GET    /v1/apps/{app}/releases             []Release
//	GET    /v1/apps/{app}/releases/{vN}        Release
//	POST   /v1/apps/{app}/rollback             RollbackRequest -> event stream
//	GET    /v1/ps?app={app}                    []Process (all apps without app=)
//	POST   /v1/apps/{app}/scale                ScaleRequest -> event stream
//	POST   /v1/apps/{app}/restart              RestartRequest -> event stream
//	GET    /v1/apps/{app}/config               map[string]string
//	PATCH  /v1/apps/{app}/config               ConfigRequest -> event stream
//	POST   /v1/apps/{app}/maintenance      MaintenanceRequest -> event stream
//	GET    /v1/apps/{app}/logs?n=&follow=1&process=&release=
//	                                           newline-delimited LogLine
//	GET    /metrics                            Prometheus text format
package api

import (
	"encoding/json"
	"fmt"
	"time"
)

// Release statuses.
const (
	StatusPending   = "pending"
	StatusReleasing = "releasing"
	StatusActive    = "active"
	StatusFailed    = "failed"
	StatusRetired   = "retired"
	// StatusCanary: the release gets a share of new connections beside
	// the active one (hctl deploy --canary), until promote or abort.
	StatusCanary = "canary"
)

// Process states.
const (
	StateStarting = "starting"
	StateReady    = "ready"
	StateDraining = "draining"
	StateExited   = "exited"
	StateCrashed  = "crashed"
)

// Deploy phases, in order.
const (
	PhasePrepare   = "prepare"
	PhaseRelease   = "release"
	PhasePreboot   = "preboot"
	PhaseReadiness = "readiness"
	PhaseCutover   = "cutover"
	PhaseBake      = "bake"
	PhaseDrain     = "drain"
)

// Error codes carried in [Error].Code.
const (
	CodeBadRequest   = "bad_request"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeForbidden    = "forbidden"
	CodeDeployFailed = "deploy_failed"
	CodeInternal     = "internal"
	CodeUnavailable  = "unavailable"
	// CodeCancelled: the operation was cancelled before its cutover.
	CodeCancelled = "cancelled"
	// CodeBakeFailed: the release failed its bake window and could not
	// be rolled back; CodeRolledBack: it was rolled back automatically
	// (OpResult.Release names the release that serves).
	CodeBakeFailed = "bake_failed"
	CodeRolledBack = "rolled_back"
	// CodePostdrainFailed: app.json's scripts.agentd.postdrain failed; the
	// release stays active.
	CodePostdrainFailed = "postdrain_failed"
)

// Error is the body of every failed request, and the error the client
// returns for one.
type Error struct {
	Message string `json:"error"`
	Code    string `json:"code"`
	// Reason, when set, says more precisely what is wrong (one of the
	// Reason constants), and App which app it is about: a client words
	// its own advice from them (hctl names its flags).
	Reason string `json:"reason,omitempty"`
	App    string `json:"app,omitempty"`
}

// Reasons carried in [Error].Reason.
const (
	ReasonNoSuchApp     = "no_such_app"
	ReasonNoSuchRelease = "no_such_release"
	ReasonNeedsSocket   = "needs_socket"
	ReasonNeedsUser     = "needs_user"
	ReasonUserIsRoot    = "user_is_root"
	ReasonConfirm       = "confirm"
	ReasonBroken        = "broken"
	// Why a process never became ready, as agentd saw it (a deploy's
	// result): docs/app-contract.md, "When readiness fails".
	ReasonProbeNotAccepted = "probe_not_accepted"
	ReasonSocketClosed     = "socket_closed"
	ReasonListenPIDRefused = "listen_pid_refused"
	ReasonOwnSocket        = "own_socket"
	ReasonNotServed        = "not_served"
)

func (e *Error) Error() string { return e.Message }

// Duration is a time.Duration that travels as a Go duration string ("60s").
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts a duration string ("30s") or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("bad duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\" or a number of seconds")
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// Status answers GET /v1/status.
type Status struct {
	Version       string    `json:"version"`
	PID           int       `json:"pid"`
	Mode          string    `json:"mode"` // "embedded" or "systemd"
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	StateDir      string    `json:"state_dir"`
	ControlSocket string    `json:"control_socket"`
	Apps          int       `json:"apps"`
	Processes     int       `json:"processes"`
	Sockets       []Socket  `json:"sockets"`
	// Store is what the release store holds and could free now; absent
	// when agentd cannot tell. KeepReleases is how many releases of each
	// app are kept (agentd --keep-releases).
	Store        *StoreUsage `json:"store,omitempty"`
	KeepReleases int         `json:"keep_releases,omitempty"`
}

// Socket is a listening socket that agentd holds for an app.
type Socket struct {
	App   string `json:"app,omitempty"`
	Type  string `json:"type"` // process type that receives it
	Name  string `json:"name"`
	Addr  string `json:"addr"`  // as configured: tcp://127.0.0.1:8080
	Bound string `json:"bound"` // what the kernel bound: 127.0.0.1:8080
	// InUse: a running process of the app holds the socket (and so accepts
	// on it). A socket not in use still queues connections.
	InUse bool `json:"in_use"`
	// Steering is how new connections reach the app's processes:
	// SteeringKernel (a socket per release, steered by agentd's program)
	// or SteeringShared (one socket, and SteeringWhy says why).
	Steering    string `json:"steering,omitempty"`
	SteeringWhy string `json:"steering_why,omitempty"`
}

// Socket.Steering values.
const (
	SteeringKernel = "kernel"
	SteeringShared = "shared"
)

// AppCreate is the body of POST /v1/apps.
type AppCreate struct {
	Name string `json:"name"`
	// Sockets are specs "[TYPE/]NAME=ADDR", ADDR one of tcp://HOST:PORT,
	// tcp6://[HOST]:PORT, unix:///path.
	Sockets []string `json:"sockets"`
	// Readiness maps a process type to a readiness kind: notify,
	// http:PATH, tcp, exec:CMD, uptime:DURATION.
	Readiness    map[string]string `json:"readiness,omitempty"`
	BootTimeout  Duration          `json:"boot_timeout,omitempty"`
	DrainTimeout Duration          `json:"drain_timeout,omitempty"`
	User         string            `json:"user,omitempty"`

	// AllowRoot lets the app run as root. When agentd runs as root, an app
	// with no User (or with User root) is refused without it.
	AllowRoot bool `json:"allow_root,omitempty"`
	// Limits are resource limits of every process of the app,
	// "NAME=SOFT[:HARD]" (nofile=4096, nproc=512, as=2G).
	Limits []string `json:"limits,omitempty"`
	// ReleaseTimeout bounds the release phase (agentd's default: 15m).
	ReleaseTimeout Duration `json:"release_timeout,omitempty"`

	// Bake is how long a new release is watched after its cutover; a
	// failure in that window rolls it back automatically. 0: no bake.
	Bake Duration `json:"bake,omitempty"`
	// MaxSurge bounds how many new processes of a type start beyond its
	// formation before old ones retire; 0: the whole formation at once.
	MaxSurge int `json:"max_surge,omitempty"`
	// Strategy maps a process type to overlap (the default) or
	// stop-first.
	Strategy map[string]string `json:"strategy,omitempty"`
	// DrainTimeouts override DrainTimeout per process type (web=1h for
	// WebSockets, worker=30s).
	DrainTimeouts map[string]Duration `json:"drain_timeouts,omitempty"`
	// ShedRate, when above 0, is how many connections per second agentd
	// closes (FIN) of a draining generation that reached its deadline,
	// oldest first, before it SIGKILLs what is left; 0: SIGKILL at the
	// deadline.
	ShedRate float64 `json:"shed_rate,omitempty"`
	// Cron is "on" (the default: this host runs the app's cron jobs) or
	// "off" (a fleet's other hosts); docs/cron.md.
	Cron string `json:"cron,omitempty"`
	// Webhook is a URL agentd POSTs the app's deploy events to, signed
	// with WebhookSecret (agentd makes one when it is empty; the answer
	// shows it once). docs/webhooks.md.
	Webhook       string `json:"webhook,omitempty"`
	WebhookSecret string `json:"webhook_secret,omitempty"`
}

// App is an app's host-level settings.
type App struct {
	Name          string            `json:"name"`
	Sockets       []Socket          `json:"sockets"`
	Formation     map[string]int    `json:"formation"`
	Readiness     map[string]string `json:"readiness"`
	BootTimeout   Duration          `json:"boot_timeout"`
	DrainTimeout  Duration          `json:"drain_timeout"`
	User          string            `json:"user,omitempty"`
	ActiveRelease string            `json:"active_release,omitempty"` // "v3"
	Deploying     bool              `json:"deploying"`
	CreatedAt     time.Time         `json:"created_at"`

	// As in AppCreate; ReleaseTimeout only when the app has its own.
	AllowRoot      bool     `json:"allow_root,omitempty"`
	Limits         []string `json:"limits,omitempty"`
	ReleaseTimeout Duration `json:"release_timeout,omitempty"`

	Bake          Duration            `json:"bake"`
	MaxSurge      int                 `json:"max_surge"`
	Strategy      map[string]string   `json:"strategy,omitempty"`
	DrainTimeouts map[string]Duration `json:"drain_timeouts,omitempty"`
	ShedRate      float64             `json:"shed_rate,omitempty"`
	// Cron is "on" or "off": whether this host runs the app's cron jobs.
	Cron string `json:"cron,omitempty"`
	// Webhook is the app's webhook URL; WebhookSecret is set only in the
	// answer to the create or set that made a secret (shown once);
	// LastDelivery is the state of the latest delivery.
	Webhook       string           `json:"webhook,omitempty"`
	WebhookSecret string           `json:"webhook_secret,omitempty"`
	LastDelivery  *WebhookDelivery `json:"last_delivery,omitempty"`
	// Operation is the kind of the operation in progress, Phase its
	// phase, BakeUntil the end of its bake window.
	Operation string    `json:"operation,omitempty"`
	Phase     string    `json:"phase,omitempty"`
	BakeUntil time.Time `json:"bake_until,omitzero"`

	// StateFile is "recovered" when the app's state file was refused at
	// agentd's start and its previous generation used, "broken" when
	// neither was good (the app is not supervised until repaired); empty
	// when all is well. StateNote says what happened and what was lost.
	StateFile string `json:"state_file,omitempty"`
	StateNote string `json:"state_note,omitempty"`

	// Maintenance is set while the app is in maintenance (hctl
	// maintenance): its responder answers every request with 503.
	Maintenance *Maintenance `json:"maintenance,omitempty"`
}

// AppInfo answers GET /v1/apps/{app}.
type AppInfo struct {
	App
	Release   *Release  `json:"release,omitempty"` // the active one
	Processes []Process `json:"processes"`
}

// Phase is how long one deploy phase took.
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Release is one immutable, numbered release of an app.
type Release struct {
	App        string            `json:"app"`
	Version    int               `json:"version"`
	Name       string            `json:"name"` // "v3"
	Status     string            `json:"status"`
	Message    string            `json:"message,omitempty"`
	Source     string            `json:"source"` // deploy, config, rollback, restart
	Digest     string            `json:"digest"` // content digest of the artifact
	ReleaseID  string            `json:"release_id,omitempty"`
	Procfile   map[string]string `json:"procfile"`
	ConfigKeys []string          `json:"config_keys"`
	CreatedAt  time.Time         `json:"created_at"`
	DeployedBy string            `json:"deployed_by,omitempty"`
	Error      string            `json:"error,omitempty"`
	Phases     []Phase           `json:"phases,omitempty"`
	// CodeGone: the release's code is no longer on this host (collected,
	// or deleted by hand): nothing can start it, and a rollback to it is
	// refused.
	CodeGone bool `json:"code_gone,omitempty"`
	// Postdrain is what became of the release's app.json
	// scripts.agentd.postdrain; nil when it has none.
	Postdrain *ScriptRun `json:"postdrain,omitempty"`
}

// ScriptRun is one run of an app.json script.
type ScriptRun struct {
	Script   string    `json:"script"` // scripts.agentd.postdrain
	Status   string    `json:"status"` // running, succeeded, failed, skipped
	Started  time.Time `json:"started,omitzero"`
	Ended    time.Time `json:"ended,omitzero"`
	ExitCode *int      `json:"exit_code,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// Process is one running (or recently ended) instance of a process type.
type Process struct {
	App       string    `json:"app"`
	Name      string    `json:"name"` // web.1
	Type      string    `json:"type"`
	Index     int       `json:"index"`
	Release   string    `json:"release"` // v3
	State     string    `json:"state"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	ReadyAt   time.Time `json:"ready_at,omitzero"`
	Restarts  int       `json:"restarts"`
	Status    string    `json:"status,omitempty"` // last STATUS= from sd_notify
	ExitCode  *int      `json:"exit_code,omitempty"`
	// KillAt is when a draining process will be SIGKILLed.
	KillAt time.Time `json:"kill_at,omitzero"`
	// Connections, set while the process drains, is how many connections
	// accepted from the app's sockets its process group still holds open,
	// counted every 0.5 s; absent when not draining or not known.
	Connections *int `json:"connections,omitempty"`
}

// RollbackRequest is the body of POST /v1/apps/{app}/rollback. An empty
// Version means the release before the active one.
type RollbackRequest struct {
	Version string `json:"version,omitempty"` // "v3" or "3"
}

// ScaleRequest is the body of POST /v1/apps/{app}/scale.
type ScaleRequest struct {
	Formation map[string]int `json:"formation"`
}

// RestartRequest is the body of POST /v1/apps/{app}/restart. An empty Type
// restarts every type.
type RestartRequest struct {
	Type string `json:"type,omitempty"`
}

// ConfigRequest is the body of PATCH /v1/apps/{app}/config.
type ConfigRequest struct {
	Set   map[string]string `json:"set,omitempty"`
	Unset []string          `json:"unset,omitempty"`
}

// Event is one line of an operation's progress stream.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"` // phase, process, output, info, result
	Phase   string    `json:"phase,omitempty"`
	Process string    `json:"process,omitempty"`
	Message string    `json:"message"`
	Result  *OpResult `json:"result,omitempty"`
}

// OpResult is the outcome of an operation: the last event of its stream.
type OpResult struct {
	App      string `json:"app"`
	OK       bool   `json:"ok"`
	Changed  bool   `json:"changed"`
	Release  string `json:"release,omitempty"`  // the release serving now
	Previous string `json:"previous,omitempty"` // the release that served before
	Error    string `json:"error,omitempty"`
	Code     string `json:"code,omitempty"`
	// Reason, as in [Error], says precisely what is wrong, when known.
	Reason string `json:"reason,omitempty"`
	// Phases lists how long each phase took.
	Phases []Phase `json:"phases,omitempty"`
	// SwitchSeconds is the time from the start of preboot to cutover: how
	// long the new release took to become ready beside the old one.
	SwitchSeconds float64 `json:"switch_seconds"`
	// DrainSeconds is how long the old processes took to exit.
	DrainSeconds float64 `json:"drain_seconds"`
	// Killed names the old processes SIGKILLed at the drain timeout.
	Killed []string `json:"killed,omitempty"`
	// ConnectionsCut is how many connections the killed processes still
	// held open when SIGKILL cut them off.
	ConnectionsCut int `json:"connections_cut,omitempty"`
	// StillDraining is how many old processes still drained when the
	// operation stopped waiting for them (its wait for the drain, 30 s by
	// default); DrainConnections the connections they held then, and
	// DrainDeadline when the last of them will be stopped. The drain goes
	// on in agentd.
	StillDraining    int       `json:"still_draining,omitempty"`
	DrainConnections int       `json:"drain_connections,omitempty"`
	DrainDeadline    time.Time `json:"drain_deadline,omitzero"`
	// RolledBack: the new release failed its bake window and agentd
	// rolled it back by itself; Release is the rollback release.
	RolledBack bool `json:"rolled_back,omitempty"`
	// Pending: the operation made a release and ran its release phase
	// but started nothing, because the app is in maintenance; the
	// release is pending until maintenance ends.
	Pending bool `json:"pending,omitempty"`
	// Detached is set by the client that stopped following the operation
	// once it had started (DeployOptions.Detach); agentd carries it on.
	Detached bool `json:"detached,omitempty"`
}

// LogLine is one line of app output.
type LogLine struct {
	// Time is when the line was written, when known (journald keeps it);
	// left out when zero. hctl logs shows it when present.
	Time    time.Time `json:"time,omitzero"`
	Release string    `json:"release"`
	Process string    `json:"process"`
	Line    string    `json:"line"`
}
