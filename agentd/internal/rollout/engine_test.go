package rollout

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// An operation kind: the app before, and the target the operation asks
// for. Every operation of agentd is one of these shapes.
type opKind struct {
	name   string
	before func(h *fakeHost)
	target Target
}

var web2worker1 = map[string]int{"web": 2, "worker": 1}

func opKinds() []opKind {
	deploy := Target{Release: 4, Previous: 3, Types: []string{"web", "worker"}, Formation: web2worker1, AllTypes: true}
	withRelease := deploy
	withRelease.ReleasePhase = true
	surge := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 6}, AllTypes: true, MaxSurge: 2}
	stopFirst := deploy
	stopFirst.Strategy = map[string]Strategy{"worker": StopFirst}
	baked := deploy
	baked.Bake = time.Minute
	v3 := func(f map[string]int) func(h *fakeHost) { return func(h *fakeHost) { h.running(3, f) } }
	return []opKind{
		{"first deploy", func(h *fakeHost) {}, Target{Release: 1, Types: []string{"web", "worker"}, Formation: web2worker1, AllTypes: true}},
		{"deploy", v3(web2worker1), deploy},
		{"deploy with release phase", v3(web2worker1), withRelease},
		{"deploy with surge 2 of 6", v3(map[string]int{"web": 6}), surge},
		{"deploy stop-first worker", v3(web2worker1), stopFirst},
		{"deploy with bake", v3(web2worker1), baked},
		{"restart", v3(web2worker1), Target{Release: 3, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, Replace: true}},
		{"scale up", v3(web2worker1), Target{Release: 3, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 4}}},
		{"scale down", v3(web2worker1), Target{Release: 3, Previous: 3, Types: []string{"web", "worker"}, Formation: map[string]int{"web": 1, "worker": 0}}},
		{"crash restart", func(h *fakeHost) {
			h.running(3, web2worker1)
			h.procs[0].exit() // crashed
		}, Target{Release: 3, Previous: 3, Types: []string{"web", "worker"}, Formation: web2worker1}},
		{"reconcile after an interrupted deploy", func(h *fakeHost) {
			h.running(3, web2worker1)
			h.procs = append(h.procs, &fakeProc{typ: "web", index: 1, release: 4, done: make(chan struct{})})
			h.procs[1].exit() // and one of v3 gone meanwhile
		}, Target{Release: 3, Previous: 3, Types: []string{"web", "worker"}, Formation: web2worker1, AllTypes: true}},
	}
}

func runOn(t *testing.T, h *fakeHost, tg Target) (Result, error) {
	t.Helper()
	e := &Engine{Host: h}
	done := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(done)
		res, err = e.Run(context.Background(), tg, Controls{})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("rollout hung: %v", h)
	}
	return res, err
}

// checkInvariants asserts what must hold after any rollout: one active
// release; on success the target formation of the target release runs
// and nothing else of the types in scope; on failure before the cutover
// the previous release runs its formation and nothing of the new one
// does; every process started is one the host recorded.
func checkInvariants(t *testing.T, h *fakeHost, before map[int]map[string]int, tg Target, err error) {
	t.Helper()
	serving := h.serving()
	var be *BakeError
	switch {
	case err == nil:
		if h.active != tg.Release {
			t.Fatalf("ok, but active is v%d, want v%d (%v)", h.active, tg.Release, h)
		}
		for _, typ := range tg.Types {
			if got, want := serving[tg.Release][typ], tg.Formation[typ]; got != want {
				t.Fatalf("ok, but %d %s of v%d serve, want %d (%v)", got, typ, tg.Release, want, h)
			}
		}
		for v, types := range serving {
			for typ, n := range types {
				if v != tg.Release && (tg.AllTypes || slices.Contains(tg.Types, typ)) && n > 0 {
					t.Fatalf("ok, but %d %s of v%d still serve (%v)", n, typ, v, h)
				}
			}
		}
	case errors.As(err, &be):
		if h.active != tg.Release {
			t.Fatalf("bake failed after cutover, but active is v%d (%v)", h.active, h)
		}
	default:
		var re *Error
		if !errors.As(err, &re) {
			t.Fatalf("error %v is not a *rollout.Error", err)
		}
		if h.active != tg.Previous {
			t.Fatalf("failed, but active is v%d, want v%d (%v)", h.active, tg.Previous, h)
		}
		if tg.Release != tg.Previous {
			if n := serving[tg.Release]; len(n) > 0 {
				t.Fatalf("failed, but v%d processes serve: %v (%v)", tg.Release, n, h)
			}
		}
		// The old release untouched, or its formation restored.
		if tg.Previous != 0 {
			want := before[tg.Previous]
			got := serving[tg.Previous]
			for typ, n := range want {
				if got[typ] < n {
					t.Fatalf("failed, and v%d runs %d %s, want %d as before (%v)", tg.Previous, got[typ], typ, n, h)
				}
			}
		}
	}
	// No process is both live and unknown to the host: the fake records
	// every process it starts, so a leak would show as a live process
	// that is retired but never exited.
	for _, p := range h.procs {
		if p.retired && !p.closed && !h.drainLater {
			t.Fatalf("%s of v%d retired but alive", p.Name(), p.release)
		}
	}
}

func TestEveryOperationReachesItsTarget(t *testing.T) {
	for _, k := range opKinds() {
		t.Run(k.name, func(t *testing.T) {
			h := newFakeHost()
			k.before(h)
			before := h.serving()
			res, err := runOn(t, h, k.target)
			if err != nil {
				t.Fatalf("%v (%v)", err, h)
			}
			checkInvariants(t, h, before, k.target, err)
			if !res.Cutover {
				t.Fatalf("no cutover: %+v", res)
			}
		})
	}
}

// TestFailKthCall makes the k-th fallible call to the host fail, for
// every k, in every kind of operation, and checks the invariants.
func TestFailKthCall(t *testing.T) {
	for _, k := range opKinds() {
		t.Run(k.name, func(t *testing.T) {
			for n := 1; ; n++ {
				h := newFakeHost()
				k.before(h)
				before := h.serving()
				h.failAt = n
				_, err := runOn(t, h, k.target)
				injected := h.calls >= n
				if !injected {
					if err != nil {
						t.Fatalf("no failure injected at %d, but: %v", n, err)
					}
					if n < 3 {
						t.Fatalf("only %d fallible calls: the test injects nothing", n)
					}
					return
				}
				t.Logf("fail call %d: %v", n, err)
				checkInvariants(t, h, before, k.target, err)
			}
		})
	}
}

func TestDeployOrder(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 2})
	res, err := runOn(t, h, Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, AllTypes: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"start v4 web.1", "start v4 web.2", "activate v4", "retire v3 web.1", "retire v3 web.2"}
	if got := h.log; !slices.Equal(got, want) {
		t.Fatalf("log %q, want %q", got, want)
	}
	if want := []string{PhasePreboot, PhaseReadiness, PhaseCutover, PhaseDrain}; !slices.Equal(h.phases, want) {
		t.Fatalf("phases %v, want %v", h.phases, want)
	}
	if res.Plan.Starts() != 2 || res.Plan.Retires() != 2 || res.Surge != 2 {
		t.Fatalf("plan %+v surge %d", res.Plan, res.Surge)
	}
}

func TestReleasePhaseFailureStartsNothing(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 2})
	h.releaseFails = true
	_, err := runOn(t, h, Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, ReleasePhase: true})
	var re *Error
	if !errors.As(err, &re) || re.Phase != PhaseRelease || !strings.HasPrefix(err.Error(), "release phase: ") {
		t.Fatalf("err %v, want a release phase *Error", err)
	}
	if slices.ContainsFunc(h.log, func(s string) bool { return strings.HasPrefix(s, "start") }) {
		t.Fatalf("started something: %q", h.log)
	}
}

func TestReadinessFailureStopsTheNewOnes(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 2})
	h.notReady = func(p *fakeProc) bool { return p.release == 4 && p.index == 2 }
	h.ignoreTerm = func(p *fakeProc) bool { return p.release == 4 && p.index == 1 }
	tg := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, AllTypes: true}
	before := h.serving()
	_, err := runOn(t, h, tg)
	want := "web.2 exited with status 3 before it was ready; then v4 web.1 ignored SIGTERM and had to be SIGKILLed at the drain timeout of 30s"
	if err == nil || err.Error() != want {
		t.Fatalf("err %v, want %q", err, want)
	}
	checkInvariants(t, h, before, tg, err)
	for _, p := range h.procs {
		if p.release == 3 && p.retired {
			t.Fatalf("old %s retired after a failed readiness", p.Name())
		}
	}
}

// TestSurge: formation 6, surge 2, old processes that drain a while:
// never more than 8 web alive, and the old ones retire as new ones become
// ready.
func TestSurge(t *testing.T) {
	for _, surge := range []int{1, 2, 3, 6, 0} {
		t.Run(fmt.Sprint(surge), func(t *testing.T) {
			h := newFakeHost()
			h.running(3, map[string]int{"web": 6})
			h.drainLater = true
			tg := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 6}, AllTypes: true, MaxSurge: surge}
			res, err := runOn(t, h, tg)
			if err != nil {
				t.Fatal(err)
			}
			limit := 6 + surge
			if surge == 0 {
				limit = 12
			}
			if h.maxAlive["web"] > limit {
				t.Fatalf("surge %d: %d web alive at once, want at most %d", surge, h.maxAlive["web"], limit)
			}
			if surge > 0 && surge < 6 && !slices.ContainsFunc(h.log[:slices.Index(h.log, "activate v4")], func(s string) bool { return strings.HasPrefix(s, "retire v3") }) {
				t.Fatalf("surge %d: no old process retired before the cutover: %q", surge, h.log)
			}
			if res.Surge != max(surge, 6*boolInt(surge == 0)) {
				t.Fatalf("surge used %d", res.Surge)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSurgeFailureRestores: a failure in a later batch, after old
// processes have retired, starts the old release's formation again.
func TestSurgeFailureRestores(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 4})
	h.notReady = func(p *fakeProc) bool { return p.release == 4 && p.index == 3 }
	tg := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 4}, AllTypes: true, MaxSurge: 1}
	before := h.serving()
	_, err := runOn(t, h, tg)
	if err == nil {
		t.Fatal("no error")
	}
	checkInvariants(t, h, before, tg, err)
	if got := h.serving()[3]["web"]; got != 4 {
		t.Fatalf("v3 runs %d web after the restore, want 4: %v", got, h)
	}
	if !slices.Contains(h.log, "starting 2 process(es) of v3 again") {
		t.Fatalf("no restore in %q", h.log)
	}
}

func TestStopFirstNeverTwoAtOnce(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 2, "clock": 1})
	h.drainLater = true
	tg := Target{Release: 4, Previous: 3, Types: []string{"web", "clock"}, Formation: map[string]int{"web": 2, "clock": 1},
		AllTypes: true, Strategy: map[string]Strategy{"clock": StopFirst}}
	if _, err := runOn(t, h, tg); err != nil {
		t.Fatal(err)
	}
	if h.together["clock"] {
		t.Fatalf("two clock processes alive at once: %q", h.log)
	}
	if !h.together["web"] {
		t.Fatalf("overlap web never overlapped: %q", h.log)
	}
	i, j := slices.Index(h.log, "retire v3 clock.1"), slices.Index(h.log, "start v4 clock.1")
	if i < 0 || j < i {
		t.Fatalf("clock not stopped before it started: %q", h.log)
	}
}

func TestCancelBeforeCutover(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 2})
	h.blockReady = func(p *fakeProc) bool { return p.release == 4 }
	h.blocked = make(chan *fakeProc, 2)
	tg := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, AllTypes: true}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{Host: h}
	errc := make(chan error, 1)
	before := h.serving()
	go func() { _, err := e.Run(ctx, tg, Controls{}); errc <- err }()
	<-h.blocked // both new ones started and waited for
	<-h.blocked
	cancel()
	err := <-errc
	var re *Error
	if !errors.As(err, &re) || !re.Cancelled || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want a cancelled *Error", err)
	}
	checkInvariants(t, h, before, tg, err)
}

func TestBake(t *testing.T) {
	tg := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, AllTypes: true, Bake: time.Minute}
	t.Run("passes", func(t *testing.T) {
		h := newFakeHost()
		h.running(3, map[string]int{"web": 2})
		if _, err := runOn(t, h, tg); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(h.phases, PhaseBake) || !slices.Contains(h.log, "v4 passed its 1m0s bake window") {
			t.Fatalf("no bake: %v %q", h.phases, h.log)
		}
	})
	t.Run("fails", func(t *testing.T) {
		h := newFakeHost()
		h.running(3, map[string]int{"web": 2})
		h.watchFail = errors.New("web.2 failed 3 health probes: GET /healthz: 500")
		before := h.serving()
		e := &Engine{Host: &slowBake{h}} // the failure, not the end of the window
		_, err := e.Run(context.Background(), tg, Controls{})
		var be *BakeError
		if !errors.As(err, &be) || be.Aborted {
			t.Fatalf("err %v, want a *BakeError", err)
		}
		if !strings.HasPrefix(err.Error(), "web.2 failed 3 health probes: GET /healthz: 500 ") || !strings.HasSuffix(err.Error(), "into the 1m0s bake window") {
			t.Fatalf("reason %q", err)
		}
		checkInvariants(t, h, before, tg, err)
	})
	for _, pass := range []bool{true, false} {
		t.Run(fmt.Sprintf("by hand pass=%v", pass), func(t *testing.T) {
			h := newFakeHost()
			h.running(3, map[string]int{"web": 2})
			end := make(chan bool, 1)
			end <- pass
			tg := tg
			tg.Bake = time.Duration(1 << 62) // the fake clock's timer fires at once: race it with a long bake
			e := &Engine{Host: &slowBake{h}}
			_, err := e.Run(context.Background(), tg, Controls{BakeEnd: end})
			var be *BakeError
			if pass && err != nil || !pass && (!errors.As(err, &be) || !be.Aborted || !errors.Is(err, ErrBakeAborted)) {
				t.Fatalf("pass=%v: err %v", pass, err)
			}
		})
	}
	t.Run("not for the same release", func(t *testing.T) {
		h := newFakeHost()
		h.running(3, map[string]int{"web": 2})
		h.watchFail = errors.New("boom")
		if _, err := runOn(t, h, Target{Release: 3, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, Replace: true, Bake: time.Minute}); err != nil {
			t.Fatalf("a restart baked: %v", err)
		}
	})
}

// slowBake is a fake host whose bake timer never fires.
type slowBake struct{ *fakeHost }

func (s *slowBake) After(d time.Duration) <-chan time.Time { return make(chan time.Time) }

func TestMemoryLowersSurge(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 6})
	h.mem = &Memory{PerProcess: map[string]int64{"web": 100 << 20}, Available: 250 << 20}
	tg := Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 6}, AllTypes: true}
	res, err := runOn(t, h, tg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Surge != 2 || !strings.Contains(res.Lowered, "surge lowered from 6 to 2") || !slices.Contains(h.log, res.Lowered) {
		t.Fatalf("surge %d, lowered %q, log %q", res.Surge, res.Lowered, h.log)
	}
	if h.maxAlive["web"] > 8 {
		t.Fatalf("%d web alive at once", h.maxAlive["web"])
	}

	h = newFakeHost()
	h.running(3, map[string]int{"web": 6})
	h.mem = &Memory{PerProcess: map[string]int64{"web": 100 << 20}, Available: 50 << 20, Holders: "v3 (6 processes, 600 MiB)"}
	before := h.serving()
	_, err = runOn(t, h, tg)
	if !errors.Is(err, ErrNoMemory) || !strings.Contains(err.Error(), "held by v3 (6 processes, 600 MiB)") {
		t.Fatalf("err %v, want ErrNoMemory naming the holder", err)
	}
	if slices.ContainsFunc(h.log, func(s string) bool { return strings.HasPrefix(s, "start") }) {
		t.Fatalf("started something: %q", h.log)
	}
	checkInvariants(t, h, before, tg, err)
}

func TestPlan(t *testing.T) {
	p := func(typ string, i, v int, retired bool) Proc {
		return &fakeProc{typ: typ, index: i, release: v, retired: retired, done: make(chan struct{})}
	}
	live := []Proc{p("web", 1, 3, false), p("web", 2, 3, false), p("web", 3, 3, false), p("worker", 1, 3, false),
		p("web", 1, 2, true), p("clock", 1, 3, false)}
	cases := []struct {
		name   string
		t      Target
		starts map[string][]int
		retire map[string]int
	}{
		{"deploy", Target{Release: 4, Types: []string{"web", "worker"}, Formation: map[string]int{"web": 2, "worker": 1}, AllTypes: true},
			map[string][]int{"web": {1, 2}, "worker": {1}}, map[string]int{"web": 3, "worker": 1, "clock": 1}},
		{"scale down web", Target{Release: 3, Types: []string{"web"}, Formation: map[string]int{"web": 1}},
			map[string][]int{}, map[string]int{"web": 2}},
		{"scale up worker", Target{Release: 3, Types: []string{"worker"}, Formation: map[string]int{"worker": 3}},
			map[string][]int{"worker": {2, 3}}, map[string]int{}},
		{"restart worker", Target{Release: 3, Types: []string{"worker"}, Formation: map[string]int{"worker": 1}, Replace: true},
			map[string][]int{"worker": {1}}, map[string]int{"worker": 1}},
		{"reconcile", Target{Release: 3, Types: []string{"web", "worker"}, Formation: map[string]int{"web": 4, "worker": 1}, AllTypes: true},
			map[string][]int{"web": {4}}, map[string]int{"clock": 1}},
		{"renew web.2 (a failed liveness check)", Target{Release: 3, Types: []string{"web"}, Formation: map[string]int{"web": 3}, Renew: []string{"web.2"}},
			map[string][]int{"web": {2}}, map[string]int{"web": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan := MakePlan(live, c.t)
			starts, retire := map[string][]int{}, map[string]int{}
			for _, tp := range plan.Types {
				if len(tp.Start) > 0 {
					starts[tp.Type] = tp.Start
				}
				if len(tp.Retire) > 0 {
					retire[tp.Type] = len(tp.Retire)
				}
			}
			if !maps.EqualFunc(starts, c.starts, slices.Equal) || !maps.Equal(retire, c.retire) {
				t.Fatalf("starts %v retire %v, want %v %v", starts, retire, c.starts, c.retire)
			}
		})
	}
}

// TestStaleProcessesRetireFirst: old processes beyond the formation (an
// interrupted operation left one of another release) retire before the
// preboot, the stale release's first, so the surge bound leaves room.
func TestStaleProcessesRetireFirst(t *testing.T) {
	h := newFakeHost()
	h.running(2, map[string]int{"web": 1})
	h.procs = append(h.procs, &fakeProc{typ: "web", index: 1, release: 1, ready: true, done: make(chan struct{})})
	h.active = 2
	tg := Target{Release: 3, Previous: 2, Types: []string{"web"}, Formation: map[string]int{"web": 1}, AllTypes: true}
	before := h.serving()
	before[1] = nil // the stale one is not part of what must survive
	_, err := runOn(t, h, tg)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, h, before, tg, err)
	if i, j := slices.Index(h.log, "retire v1 web.1"), slices.Index(h.log, "start v3 web.1"); i < 0 || j < i {
		t.Fatalf("the stale v1 process did not retire before the start: %q", h.log)
	}
	if h.maxAlive["web"] > 2 {
		t.Fatalf("%d web alive at once, want at most formation 1 + surge 1", h.maxAlive["web"])
	}
}

// TestRolloutEndsAtCutover: Run returns once the new release is live and
// the old processes have had SIGTERM; their drain goes on, and its outcome
// arrives on Drained when they have exited.
func TestRolloutEndsAtCutover(t *testing.T) {
	h := newFakeHost()
	h.running(3, map[string]int{"web": 2})
	h.drainLater = true
	h.holdDrains = make(chan struct{})
	res, err := runOn(t, h, Target{Release: 4, Previous: 3, Types: []string{"web"}, Formation: map[string]int{"web": 2}, AllTypes: true})
	if err != nil {
		t.Fatal(err)
	}
	if h.active != 4 {
		t.Fatalf("active v%d", h.active)
	}
	select {
	case d := <-res.Drained:
		t.Fatalf("drained before the old processes exited: %+v", d)
	default:
	}
	// The next rollout starts while v3 still drains.
	if _, err := runOn(t, h, Target{Release: 5, Previous: 4, Types: []string{"web"}, Formation: map[string]int{"web": 2}, AllTypes: true}); err != nil {
		t.Fatal(err)
	}
	close(h.holdDrains)
	select {
	case <-res.Drained:
	case <-time.After(10 * time.Second):
		t.Fatal("Drained never came")
	}
}
