package agent

import (
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Promote finishes an app's canary: its release becomes the active one in
// the whole formation, by a rollout like a deploy's (the canary's
// processes are kept, the rest start), and the old release's processes
// retire. deployedBy names who asked.
func (ag *Agent) Promote(name, deployedBy string, waitDrain time.Duration, emit func(api.Event)) api.OpResult {
	return failNoApp(name, errf(api.CodeInternal, "not built yet"), emit)
}

// AbortCanary stops an app's canary the zero-downtime way: the canary's
// share of new connections goes back to the active release, its sockets'
// queues empty into its processes, which then drain. The canary's release
// is marked failed.
func (ag *Agent) AbortCanary(name string, waitDrain time.Duration, emit func(api.Event)) api.OpResult {
	return failNoApp(name, errf(api.CodeInternal, "not built yet"), emit)
}

// Canary describes an app's canary; CodeNotFound (ReasonNoCanary) when it
// has none.
func (ag *Agent) Canary(name string) (api.Canary, error) {
	return api.Canary{}, errf(api.CodeInternal, "not built yet")
}
