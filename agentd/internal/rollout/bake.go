package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// BakeError is a release that failed its bake window after its cutover:
// the caller rolls back to the previous release.
type BakeError struct {
	// Reason says what failed and when ("web.2 failed 3 health probes 21s
	// into the 60s bake window: GET /healthz: 500").
	Reason error
	// Aborted: ended by hand (Controls.BakeEnd), not by a failure.
	Aborted bool
}

func (e *BakeError) Error() string { return e.Reason.Error() }
func (e *BakeError) Unwrap() error { return e.Reason }

// ErrBakeAborted is the reason of a bake aborted by hand.
var ErrBakeAborted = errors.New("bake aborted by hand")

// bake watches the new processes for the bake window.
func (r *run) bake(ctx context.Context, ctl Controls) error {
	h := r.h
	start := h.Now()
	until := start.Add(r.t.Bake)
	window := r.t.Bake.Round(time.Second)
	if err := h.Enter(Phase{Name: PhaseBake, Until: until,
		Message: fmt.Sprintf("watching %s for the %s bake window", vname(r.t.Release), window)}); err != nil {
		h.Info(fmt.Sprintf("warning: %v", err))
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	fails := h.Watch(wctx, r.started)
	timer := h.After(r.t.Bake)
	select {
	case <-timer:
		h.Info(fmt.Sprintf("%s passed its %s bake window", vname(r.t.Release), window))
		return nil
	case pass := <-ctl.BakeEnd:
		if pass {
			h.Info(fmt.Sprintf("%s: bake passed by hand after %s", vname(r.t.Release), h.Now().Sub(start).Round(time.Second)))
			return nil
		}
		return &BakeError{Reason: fmt.Errorf("%w %s into the %s bake window", ErrBakeAborted, h.Now().Sub(start).Round(time.Second), window), Aborted: true}
	case err := <-fails:
		return &BakeError{Reason: fmt.Errorf("%w %s into the %s bake window", err, h.Now().Sub(start).Round(time.Second), window)}
	}
}

// Resume watches the processes of the active release t.Release for the
// rest of a bake window (t.Bake) that an agentd restart interrupted.
func (e *Engine) Resume(ctx context.Context, t Target, ctl Controls) error {
	r := &run{h: e.Host, t: t, phase: PhaseBake}
	for _, p := range e.Host.Live() {
		if p.Release() == t.Release && !p.Retired() {
			r.started = append(r.started, p)
		}
	}
	if len(r.started) == 0 || t.Bake <= 0 {
		return nil
	}
	return r.bake(ctx, ctl)
}
