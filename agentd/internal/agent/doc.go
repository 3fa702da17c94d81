// Package agent is agentd's core: apps, their releases and processes, and
// the operations that change what runs. It knows nothing of HTTP or the
// CLI: the control API calls its methods and streams the events they emit.
// The sequence of a switch (release phase, preboot, readiness, cutover,
// bake, drain) is not here but in package rollout, the engine every
// operation hands its target to; this package is the engine's host: it
// starts, watches, signals and records real processes.
//
// # One deploy, from the API to the old processes' SIGKILL
//
//	server.deploy          (server/server.go)  decodes the request, streams events
//	Agent.Deploy           (ops.go)            prepare: the artifact stored, the op lock
//	                                           taken, a pending release made (written
//	                                           with its first process: op.recordLater)
//	op.rollout             (rollout.go)        the target (release, formation,
//	                                           settings) handed to the engine
//	rollout.Engine.Run     (rollout/engine.go) plan, release phase, preboot, readiness,
//	                                           cutover, bake, drain
//	host.Start, AwaitReady (host.go)           startProc and waitReady (procs.go)
//	host.Activate          (host.go)           the cutover saved; with kernel steering
//	                                           (steer.go) new connections switched to
//	                                           the new release's socket
//	host.Retire            (host.go)           the old socket emptied (steer.go), then
//	                                           drain (drain.go): SIGTERM, connections
//	                                           counted, SIGKILL at the drain timeout
//
// A failed bake comes back from the engine as a rollout.BakeError, and
// op.bakeFailed (rollout.go) deploys the previous release again through the
// engine. A crash restart (procs.go restartCrashed) and the reconcile after
// an agentd restart (recover.go) are rollouts too, of one release to itself.
//
// # Files by job
//
//	agent.go     the Agent: configuration, loading the state, close, freeze
//	apps.go      create and destroy an app; settings.go: change its settings
//	ops.go       the operations: deploy, rollback, config, restart, scale
//	op.go        an operation: its lock, phases, events, cancel, attach
//	rollout.go   targets, the engine's run, failure and automatic rollback
//	steer.go     kernel steering: a socket per release in a reuseport group,
//	             routed by the steering program, emptied before SIGTERM,
//	             taken back after a restart by cookie
//	canary.go    canaries: deploy --canary, promote, abort, their recovery
//	host.go      the engine's host: processes as the engine sees them
//	bake.go      what a bake window watches; the rest of one after a restart
//	memest.go    the memory check before a preboot
//	procs.go     starting a process, readiness, exits and crash restarts;
//	             starttime.go: the whole start timed, step by step;
//	             usercache.go: app users looked up once per /etc/passwd
//	drain.go     stopping processes; observe.go: connections, socket use
//	recover.go   adoption and reconcile after agentd (re)started
//	maintenance.go  maintenance mode: the responder, on/off, pending releases
//	release.go   artifacts, releases, the release phase, pruning
//	cron.go      app.json cron jobs: the schedule loop; cronrun.go: a run
//	             (cron.N), cronview.go: hctl cron and the --cron setting
//	appjson.go   a release's app.json: formation, release phase, readiness,
//	             its scripts (postdeploy, postdrain); liveness.go: its
//	             liveness checks and the replacement of a failing process
//	views.go     what the API shows: apps, processes, releases, status
//	run.go       one-off processes (hctl run): their relays started, recorded,
//	             adopted, and their streams pumped
//	hostile.go, security.go, journal.go, logcap.go, memory.go: see each
//
// What is saved before each step, and what survives what, is in
// docs/survival.md; the model of releases and processes in package
// rollout's documentation and docs/concepts.md.
package agent
