package rollout

// Maintenance mode, as the engine sees it: the app's sockets change hands
// the way they do in a deploy, only the "new release" is a responder, one
// process of agentd's own that answers every request while the app is
// down. The engine needs no second sequence for it:
//
//   - on is a rollout whose target runs nothing but the responder
//     ([MaintenanceOn]): it starts beside the app's processes, becomes
//     ready, and only then do all of the app's processes retire, of every
//     type, socket-less ones (workers, clocks) too, since AllTypes retires
//     the types the target does not name;
//   - off is an ordinary target of the app's release and formation: the
//     responder's type is not one of the release's, so it retires at the
//     cutover, once the formation is ready;
//   - a failure before either cutover leaves what served serving: the
//     app's processes (on), or the responder (off).
//
// A deploy while the app is in maintenance runs its release phase and
// starts nothing ([Target.ReleaseOnly]): the responder keeps the sockets.

// Responder is the process type of the maintenance responder. A release
// whose Procfile has a type of this name cannot be put in maintenance.
const Responder = "maintenance"

// MaintenanceOn is the target that puts an app in maintenance: one
// responder process, recorded under the app's active release, and no
// process of any other type. With replace, a responder already running is
// replaced too (a new page).
func MaintenanceOn(active int, replace bool) Target {
	return Target{
		Release: active, Previous: active,
		Types:     []string{Responder},
		Formation: map[string]int{Responder: 1},
		AllTypes:  true,
		Replace:   replace,
	}
}

// Maintenance reports whether t is a target of the responder alone
// (MaintenanceOn): its cutover puts the app in maintenance, and the
// release and formation the app runs out of it stay what they were.
func (t Target) Maintenance() bool {
	return len(t.Types) == 1 && t.Types[0] == Responder
}
