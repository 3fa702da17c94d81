package api

// Rollout settings of an app, and the requests that steer a rollout in
// progress.
//
// Routes:
//
//	PATCH  /v1/apps/{app}                      AppSet -> AppSetResult
//	GET    /v1/apps/{app}/op                   event stream of the operation in progress
//	POST   /v1/apps/{app}/cancel               -> {} (the operation in progress, before its cutover)
//	POST   /v1/apps/{app}/bake                 BakeRequest -> {} (ends the bake window)
//	POST   /v1/apps/{app}/repair               -> App (an app whose state file is broken)

// Strategies of a process type in a rollout.
const (
	StrategyOverlap   = "overlap"
	StrategyStopFirst = "stop-first"
)

// AppSet is the body of PATCH /v1/apps/{app}: the settings to change,
// nil (or absent) for those that stay. Maps are merged by key; an empty
// string as a value removes that type's entry (back to the default).
type AppSet struct {
	BootTimeout    *Duration         `json:"boot_timeout,omitempty"`
	DrainTimeout   *Duration         `json:"drain_timeout,omitempty"`
	ReleaseTimeout *Duration         `json:"release_timeout,omitempty"`
	Readiness      map[string]string `json:"readiness,omitempty"`
	Bake           *Duration         `json:"bake,omitempty"`
	MaxSurge       *int              `json:"max_surge,omitempty"`
	Strategy       map[string]string `json:"strategy,omitempty"`
	// DrainTimeouts per type; a zero duration removes the type's entry.
	DrainTimeouts map[string]Duration `json:"drain_timeouts,omitempty"`
	ShedRate      *float64            `json:"shed_rate,omitempty"`
	User          *string             `json:"user,omitempty"`
	AllowRoot     *bool               `json:"allow_root,omitempty"`
	Limits        []string            `json:"limits,omitempty"`
	// ClearLimits drops every limit (Limits then sets the new ones).
	ClearLimits bool `json:"clear_limits,omitempty"`
	// AddSockets are socket specs as in AppCreate; RemoveSockets names.
	AddSockets    []string `json:"add_sockets,omitempty"`
	RemoveSockets []string `json:"remove_sockets,omitempty"`
	// Cron "on" or "off": whether this host runs the app's cron jobs.
	Cron *string `json:"cron,omitempty"`
	// Webhook sets the webhook URL ("" removes it); WebhookSecret sets
	// its secret ("": agentd makes a new one).
	Webhook       *string `json:"webhook,omitempty"`
	WebhookSecret *string `json:"webhook_secret,omitempty"`
}

// AppSetResult answers PATCH /v1/apps/{app}.
type AppSetResult struct {
	App App `json:"app"`
	// Changed names the settings that changed.
	Changed []string `json:"changed"`
	// NextRollout names those of them that running processes got at
	// their start and that reach them only at the next rollout (a deploy,
	// restart, config change or rollback); nothing running was touched.
	NextRollout []string `json:"next_rollout,omitempty"`
}

// BakeRequest is the body of POST /v1/apps/{app}/bake.
type BakeRequest struct {
	// Pass ends the bake window now, keeping the new release; false
	// aborts it: the automatic rollback.
	Pass bool `json:"pass"`
}
