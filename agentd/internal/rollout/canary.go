package rollout

import (
	"context"
	"fmt"
)

// canary ends a canary's rollout (Target.Canary): once its processes are
// ready they get their share of the new connections beside the active
// release's, which keep serving the rest in their formation. There is no
// cutover and nothing old retires: a later rollout either promotes the
// canary (an ordinary target of its release: its processes are kept, the
// rest start, the cutover retires the old release) or aborts it (a target
// of the active release: the canary's processes retire). With a bake
// window the canary is watched from its start: a failure returns a
// *BakeError, and the caller aborts the canary.
func (r *run) canary(ctx context.Context, ctl Controls, res Result) (Result, error) {
	h := r.h
	if err := r.enter(Phase{Name: PhaseCanary, Message: fmt.Sprintf("%s is ready: sending it %g%% of new connections", vname(r.t.Release), r.t.Canary)}); err != nil {
		return res, r.abort(err)
	}
	if err := h.Canary(r.t); err != nil {
		return res, r.abort(fmt.Errorf("canary: %w", err))
	}
	res.Canary = true
	if r.t.Bake > 0 && len(r.started) > 0 {
		if err := r.bake(ctx, ctl); err != nil {
			return res, err
		}
	}
	res.Drained = r.drained()
	return res, nil
}
