package api

import "time"

// Canary is a release that gets a share of an app's new connections beside
// the active release, until it is promoted or aborted (GET
// /v1/apps/{app}/canary). Kernel steering picks the release per new
// connection (docs/concepts.md).
type Canary struct {
	App string `json:"app"`
	// Release is the canary's release, Active the release that keeps the
	// rest of the connections and its formation.
	Release string `json:"release"`
	Active  string `json:"active"`
	// Percent is the share of new connections the canary gets.
	Percent   float64   `json:"percent"`
	StartedAt time.Time `json:"started_at"`
	// BakeUntil, when set, is the end of the canary's bake window: a
	// failure until then aborts the canary by itself.
	BakeUntil time.Time `json:"bake_until,omitzero"`
	// Formation is how many processes of each type the canary runs.
	Formation map[string]int `json:"formation"`
	// Split is, per release, the new connections steered to it since the
	// canary started (or since agentd started, whichever is later).
	Split []CanaryShare `json:"split"`
	// Processes are both releases' processes (with their restarts,
	// crashes and the last health probe results where app.json has checks).
	Processes []Process `json:"processes"`
	// Crashes counts the canary's processes that exited unasked.
	Crashes int `json:"crashes"`
}

// CanaryShare is one release's part of a canary's split.
type CanaryShare struct {
	App     string  `json:"app,omitempty"`
	Release string  `json:"release"`
	Percent float64 `json:"percent"` // the share asked for
	// Steered counts the new connections the kernel sent to the release.
	Steered uint64 `json:"steered"`
}

// CanaryRequest is the body of POST /v1/apps/{app}/promote and POST
// /v1/apps/{app}/canary/abort.
type CanaryRequest struct {
	// WaitDrain bounds how long the operation waits for the retired
	// processes to exit before it reports (seconds, 0: 30).
	WaitDrainSeconds float64 `json:"wait_drain_seconds,omitempty"`
}

// Reasons of canary refusals, in [Error].Reason.
const (
	// ReasonCanaryRunning: the app has a canary; promote or abort it first.
	ReasonCanaryRunning = "canary_running"
	// ReasonNoCanary: the app has no canary to promote or abort.
	ReasonNoCanary = "no_canary"
	// ReasonNoSteering: a canary needs kernel steering, which this app's
	// sockets do not have (App.Sockets[].SteeringWhy says why).
	ReasonNoSteering = "no_steering"
)

// SteeredCount is how many new connections the kernel steered to one
// release's socket of an app socket since agentd started.
type SteeredCount struct {
	App         string `json:"app"`
	Socket      string `json:"socket"`
	Release     string `json:"release"`
	Connections uint64 `json:"connections"`
}
