// Package rollout is agentd's rollout engine: the one place that decides
// which processes of an app start and which retire, in which order, and
// that carries a change through its phases. Every operation that changes
// what runs goes through it: deploy, rollback, config change, restart,
// scale, the restart of a crashed process and the reconciliation after an
// agentd restart. None of them keeps a copy of the sequence.
//
// # The model
//
// An app has one active release and a formation: how many processes of
// each process type run. A [Target] names the release the app should run,
// the formation of the types in scope, and how to get there (strategy per
// type, surge limit, bake window). [MakePlan] compares the app's live
// processes with the target and says, per type, which process indexes start
// and which old processes retire. [Engine.Run] carries the plan out:
//
//	release   the release command runs to completion; a failure ends the
//	          rollout before anything started (the release is failed)
//	preboot   new processes start beside the old ones, at most MaxSurge
//	          of a type at once beyond its formation, counting old ones
//	          still draining (Host.Start records each before it runs app
//	          code)
//	readiness every new process must become ready (Host.AwaitReady); the
//	          first failure stops the new processes and restores the old
//	          formation, and the old release serves on, untouched
//	          (stop-first types: the old processes of the type are
//	          stopped and have exited before the new ones start)
//	cutover   the release becomes active (Host.Activate saves it), then
//	          the old processes get SIGTERM (Host.Retire)
//	bake      for Target.Bake after cutover the new processes are watched
//	          (Host.Watch): an exit, failed health probes or WATCHDOG=trigger
//	          fail the bake, and Run returns a [BakeError]; the caller then
//	          rolls back by deploying the previous release again
//	drain     the old processes finish what they hold and exit; the host
//	          SIGKILLs what outlives the drain timeout (or sheds its
//	          connections at a paced rate first). The rollout does not wait
//	          for it: Run returns at the cutover (or at the end of the bake)
//	          with a channel for the drain's outcome, and the app's next
//	          rollout may start while earlier generations still drain.
//
// With a surge smaller than the formation, old processes of a type retire
// as new ones of the same type become ready, batch by batch, before the
// cutover: the old release is then no longer untouched, and a failure
// restores its formation by starting old-release processes again before the
// new ones stop ([Engine.Run] plans the restore with [MakePlan] too).
//
// # Canary
//
// A target with Canary set (canary.go) starts its release's processes to
// its formation beside the active release's, retires nothing, and instead
// of a cutover calls Host.Canary, which sends the release its share of new
// connections; a bake from the canary's start returns a BakeError for the
// caller to abort it. Promote is then an ordinary target of the canary's
// release (its processes are kept), abort the active release's own target
// (the canary's processes retire).
//
// # Maintenance
//
// Maintenance mode is two rollouts of this same sequence (maintenance.go):
// on targets the responder alone ([MaintenanceOn], type [Responder]), so
// the app's processes of every type retire once it is ready; off is an
// ordinary target of a release and formation, so the responder retires
// once they are ready. A deploy meanwhile runs its release phase only
// ([Target.ReleaseOnly]).
//
// # Release statuses and process states
//
// Statuses of a release: pending (created, prepare running) → releasing
// (release phase) → active (cutover) → retired (the next cutover); pending
// or releasing → failed (release phase, boot, readiness, cancel, bake, or an
// agentd restart in the middle). A failed bake turns an active release into
// failed and creates a new release from the previous one (source
// "auto-rollback").
//
// States of a process: starting (Host.Start) → ready (Host.AwaitReady) →
// draining (Host.Retire) → exited; starting or ready → crashed when it
// exits unasked. A crashed process of the active release is replaced by a
// crash-restart rollout of one process ([Target] with the same release).
//
// # What is saved before each step
//
// Host.Save(phase) is called on entering each phase, so that an agentd that
// restarts finds the operation, its phase, and (in bake) its deadline;
// Host.Start has recorded a process before it returns; Host.Activate has
// saved the new active release before any old process gets SIGTERM. The
// engine holds no state of its own between calls: after a restart the host
// rebuilds the app from its state and runs a reconcile target.
package rollout
