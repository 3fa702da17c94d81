package rollout

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A canary starts its processes beside the active release's, sends them
// their share, and retires nothing; promote and abort are ordinary targets
// afterwards.
func TestCanary(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 4, "worker": 1})
	canary := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 1}, Canary: 10}
	res, err := runOn(t, h, canary)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Canary || res.Cutover {
		t.Fatalf("canary %v cutover %v, want a canary and no cutover", res.Canary, res.Cutover)
	}
	s := h.serving()
	if s[3]["web"] != 4 || s[3]["worker"] != 1 || s[4]["web"] != 1 || s[4]["worker"] != 0 {
		t.Fatalf("serving %v: want v3 untouched (web 4, worker 1) and one v4 web", s)
	}
	if h.active != 3 || h.canary != 4 || h.canaryPercent != 10 {
		t.Fatalf("active v%d canary v%d %g%%: want v3 active, v4 at 10%%", h.active, h.canary, h.canaryPercent)
	}

	// Promote: the canary's process is kept, the rest start, v3 retires.
	starts := len(h.procs)
	promote := Target{Release: 4, Previous: 3, Types: []string{"web", "worker"}, Formation: map[string]int{"web": 4, "worker": 1}, AllTypes: true}
	if _, err := runOn(t, h, promote); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, h, nil, promote, nil)
	if got := len(h.procs) - starts; got != 4 {
		t.Fatalf("promote started %d processes, want 4 (web.1 of the canary kept)", got)
	}
}

func TestCanaryAbortAndFailure(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 2})
	canary := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 1}, Canary: 50}
	if _, err := runOn(t, h, canary); err != nil {
		t.Fatal(err)
	}
	// Abort: the active release's own target retires the canary's.
	abort := Target{Release: 3, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, AllTypes: true}
	if _, err := runOn(t, h, abort); err != nil {
		t.Fatal(err)
	}
	if s := h.serving(); s[4]["web"] != 0 || s[3]["web"] != 2 {
		t.Fatalf("after abort serving %v, want v3 web 2 only", s)
	}

	// A canary that is never ready changes nothing, and gets no share.
	h = newFakeHost()
	h.running(3, map[string]int{"web": 2})
	h.notReady = func(p *fakeProc) bool { return p.release == 4 }
	if _, err := runOn(t, h, canary); err == nil {
		t.Fatal("a canary that never got ready succeeded")
	}
	if s := h.serving(); s[4]["web"] != 0 || s[3]["web"] != 2 || h.canary != 0 {
		t.Fatalf("serving %v canary v%d: want v3 untouched and no canary", s, h.canary)
	}

	// A canary that fails its bake returns a BakeError for the caller to
	// abort it; the active release is untouched.
	h = newFakeHost()
	h.running(3, map[string]int{"web": 2})
	h.watchFail = errors.New("web.1 exited")
	baked := canary
	baked.Bake = time.Minute
	// The failure, not the end of the window (the fake clock's timer
	// fires at once).
	_, err := (&Engine{Host: &slowBake{h}}).Run(context.Background(), baked, Controls{})
	var be *BakeError
	if !errors.As(err, &be) {
		t.Fatalf("err %v, want a BakeError", err)
	}
	if h.active != 3 {
		t.Fatalf("active v%d after a failed canary bake, want v3", h.active)
	}
}
