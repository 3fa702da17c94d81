package rollout

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// inMaintenance is the app of v3 in maintenance: its responder alone runs.
func inMaintenance(h *fakeHost) *fakeProc {
	h.active = 3
	maps.Copy(h.formation, web2worker1)
	p := &fakeProc{typ: Responder, index: 1, release: 3, ready: true, done: make(chan struct{})}
	h.procs = append(h.procs, p)
	return p
}

// runBlocked runs tg with the readiness of the processes block matches
// held until the test has looked at the host, then cancels the rollout (a
// boot timeout would end it the same way); it returns what Run did.
func runBlocked(t *testing.T, h *fakeHost, tg Target, block func(p *fakeProc) bool, look func()) (Result, error) {
	t.Helper()
	h.blocked = make(chan *fakeProc, 8)
	h.blockReady = block
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type out struct {
		res Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := (&Engine{Host: h}).Run(ctx, tg, Controls{})
		done <- out{res, err}
	}()
	select {
	case <-h.blocked:
	case <-time.After(10 * time.Second):
		t.Fatalf("no process reached readiness: %v", h)
	}
	look()
	cancel() // the blocked wait ends with ctx: the rollout fails, as a boot timeout would
	h.mu.Lock()
	h.blockReady = nil
	h.mu.Unlock()
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(10 * time.Second):
		t.Fatalf("rollout hung: %v", h)
	}
	return Result{}, nil
}

func TestMaintenanceOnRespondsBeforeTheAppRetires(t *testing.T) {
	h := newFakeHost()
	h.running(3, web2worker1)
	res, err := runOn(t, h, MaintenanceOn(3, false))
	if err != nil {
		t.Fatalf("Run: %v (%v)", err, h)
	}
	if !res.Cutover {
		t.Fatalf("no cutover: %v", h)
	}
	// The responder started and was ready before any process of the app
	// got SIGTERM; every process of the app retired, the worker too.
	start := slices.Index(h.log, "start v3 maintenance.1")
	if start < 0 {
		t.Fatalf("the responder never started: %v", h.log)
	}
	var retired []string
	for i, l := range h.log {
		if strings.HasPrefix(l, "retire ") {
			if i < start {
				t.Errorf("%q before the responder started: %v", l, h.log)
			}
			retired = append(retired, l)
		}
	}
	slices.Sort(retired)
	if want := []string{"retire v3 web.1", "retire v3 web.2", "retire v3 worker.1"}; !slices.Equal(retired, want) {
		t.Errorf("retired %v, want %v", retired, want)
	}
	if got := h.serving(); len(got) != 1 || !maps.Equal(got[3], map[string]int{Responder: 1}) {
		t.Errorf("serving %v, want only v3 maintenance.1", got)
	}
	if !slices.Equal(h.phases, []string{PhasePreboot, PhaseReadiness, PhaseCutover, PhaseDrain}) {
		t.Errorf("phases %v", h.phases)
	}
}

func TestMaintenanceOnWaitsForTheResponder(t *testing.T) {
	h := newFakeHost()
	h.running(3, web2worker1)
	_, err := runBlocked(t, h, MaintenanceOn(3, false), func(p *fakeProc) bool { return p.typ == Responder }, func() {
		// The responder is booting: the whole app still serves.
		if got := h.serving()[3]; got["web"] != 2 || got["worker"] != 1 {
			t.Errorf("while the responder boots, serving %v", h.serving())
		}
	})
	// Its readiness never came: the app serves on, the responder stopped.
	if err == nil {
		t.Fatal("Run succeeded with a responder that never became ready")
	}
	if got := h.serving(); !maps.Equal(got[3], web2worker1) || len(got) != 1 {
		t.Errorf("after the failed on, serving %v, want v3 %v", got, web2worker1)
	}
}

func TestMaintenanceOnResponderFails(t *testing.T) {
	h := newFakeHost()
	h.running(3, web2worker1)
	h.notReady = func(p *fakeProc) bool { return p.typ == Responder }
	_, err := runOn(t, h, MaintenanceOn(3, false))
	var re *Error
	if !errors.As(err, &re) || re.Phase != PhaseReadiness {
		t.Fatalf("err %v, want a readiness *Error", err)
	}
	if got := h.serving(); !maps.Equal(got[3], web2worker1) || len(got) != 1 {
		t.Errorf("serving %v, want v3 %v untouched", got, web2worker1)
	}
}

func TestMaintenanceOnAgainKeepsOrReplacesTheResponder(t *testing.T) {
	h := newFakeHost()
	old := inMaintenance(h)
	res, err := runOn(t, h, MaintenanceOn(3, false))
	if err != nil || !res.Plan.Empty() {
		t.Fatalf("on while on: plan %+v, err %v; want nothing to do", res.Plan, err)
	}
	// A reconcile after an agentd restart is the same target: the
	// adopted responder stays, a stray process of the app retires.
	h.procs = append(h.procs, &fakeProc{typ: "web", index: 1, release: 3, done: make(chan struct{})})
	if _, err := runOn(t, h, MaintenanceOn(3, false)); err != nil {
		t.Fatal(err)
	}
	if old.retired || !slices.Contains(h.log, "retire v3 web.1") {
		t.Errorf("reconcile: the responder retired (%v) or the stray web.1 did not: %v", old.retired, h.log)
	}
	// A new page: the responder is replaced the zero-downtime way.
	if _, err := runOn(t, h, MaintenanceOn(3, true)); err != nil {
		t.Fatal(err)
	}
	if !old.retired {
		t.Error("replace: the old responder was not retired")
	}
	if got := h.serving(); !maps.Equal(got[3], map[string]int{Responder: 1}) {
		t.Errorf("serving %v, want one responder", got)
	}
}

// Off is an ordinary target: the formation starts beside the responder,
// which retires only once every process of the formation is ready.
func TestMaintenanceOffRetiresTheResponderLast(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release int
	}{{"the active release", 3}, {"a pending release", 4}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost()
			resp := inMaintenance(h)
			tg := Target{Release: tc.release, Previous: 3, Types: []string{"web", "worker"}, Formation: web2worker1, AllTypes: true}
			if tg.Maintenance() {
				t.Fatal("an off target taken for a maintenance one")
			}
			_, err := runBlocked(t, h, tg, func(p *fakeProc) bool { return p.typ == "web" && p.index == 2 }, func() {
				if resp.retired {
					t.Error("the responder retired before the formation was ready")
				}
			})
			if err == nil {
				t.Fatal("Run succeeded with a process that never became ready")
			}
			// The failed off left the responder serving, nothing else.
			if got := h.serving(); len(got) != 1 || !maps.Equal(got[3], map[string]int{Responder: 1}) {
				t.Fatalf("after a failed off, serving %v, want the responder alone", got)
			}
			// And again, with every process ready.
			res, err := runOn(t, h, tg)
			if err != nil || !res.Cutover {
				t.Fatalf("off: %v (%v)", err, h)
			}
			if !resp.retired || h.active != tc.release {
				t.Errorf("responder retired %v, active v%d; want true, v%d", resp.retired, h.active, tc.release)
			}
			if got := h.serving(); len(got) != 1 || !maps.Equal(got[tc.release], web2worker1) {
				t.Errorf("serving %v, want v%d %v", got, tc.release, web2worker1)
			}
		})
	}
}

func TestReleaseOnlyStartsNothing(t *testing.T) {
	h := newFakeHost()
	inMaintenance(h)
	tg := Target{Release: 4, Previous: 3, Types: []string{"web", "worker"}, Formation: web2worker1, AllTypes: true,
		ReleasePhase: true, ReleaseOnly: true}
	res, err := runOn(t, h, tg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cutover || len(res.Started) > 0 || h.active != 3 {
		t.Errorf("release only: cutover %v, started %d, active v%d", res.Cutover, len(res.Started), h.active)
	}
	if !slices.Equal(h.phases, []string{PhaseRelease}) {
		t.Errorf("phases %v, want only the release phase", h.phases)
	}
	if got := h.serving(); len(got) != 1 || !maps.Equal(got[3], map[string]int{Responder: 1}) {
		t.Errorf("serving %v, want the responder alone", got)
	}
	h.releaseFails = true
	if _, err := runOn(t, h, tg); err == nil {
		t.Error("a failed release phase was not reported")
	}
}
