package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// What happens when a rollout fails before its cutover: the new processes
// stop, and the previous release's formation is restored.

// abort handles a failure before the cutover: the new processes are
// stopped the same way as old ones (they may have accepted connections
// already), and when old processes were retired on the way (a surge below
// the formation, stop-first), the previous release's formation is started
// again.
func (r *run) abort(cause error) error {
	err := &Error{Phase: r.phase, Err: cause}
	if errors.Is(cause, context.Canceled) {
		err.Cancelled = true
	}
	if len(r.started) > 0 {
		r.h.Info(fmt.Sprintf("stopping the %d new process(es)", len(r.started)))
		d := <-r.h.Retire(r.started)
		if len(d.Killed) > 0 {
			err.Err = fmt.Errorf("%w; then %s ignored SIGTERM and had to be SIGKILLed at the drain timeout of %s", err.Err, strings.Join(d.Killed, ", "), d.Timeout)
		}
	}
	// The old ones that retired before the failure finish their drain
	// whatever comes next.
	r.waitDrains()
	if r.early > 0 && r.t.Previous != 0 {
		if rerr := r.restore(); rerr != nil {
			err.Err = fmt.Errorf("%w; restoring the formation of %s failed too: %v", err.Err, vname(r.t.Previous), rerr)
		}
	}
	return err
}

// restore starts the processes of the previous release that the failed
// rollout retired, and waits for them to become ready.
func (r *run) restore() error {
	t := Target{Release: r.t.Previous, Previous: r.t.Previous, Types: r.t.Types, Formation: r.t.Formation}
	if r.t.Release != r.t.Previous {
		t.Formation = map[string]int{}
		for _, tr := range r.types {
			t.Formation[tr.tp.Type] = len(tr.tp.Retire)
		}
	}
	var types []string
	for _, tr := range r.types {
		types = append(types, tr.tp.Type)
	}
	t.Types = types
	plan := MakePlan(r.h.Live(), t)
	if plan.Starts() == 0 {
		return nil
	}
	r.h.Info(fmt.Sprintf("starting %d process(es) of %s again", plan.Starts(), vname(t.Release)))
	var ps []Proc
	for _, tp := range plan.Types {
		for _, i := range tp.Start {
			p, err := r.h.Start(context.Background(), t.Release, tp.Type, i)
			if err != nil {
				return err
			}
			ps = append(ps, p)
		}
	}
	return awaitAll(context.Background(), r.h, ps)
}

// Error is a rollout that failed before its cutover: the previous release
// serves on.
type Error struct {
	// Phase is where it failed.
	Phase string
	// Cancelled: it was cancelled (ctx), not failed.
	Cancelled bool
	Err       error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }
