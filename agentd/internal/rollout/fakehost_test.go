package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// fakeHost is a Host of fake processes, in the manner of tableflip's
// testEnv: the engine's whole state machine runs against it in
// milliseconds, and every fallible call can be made to fail.
type fakeHost struct {
	mu sync.Mutex

	procs     []*fakeProc
	active    int
	formation map[string]int
	phases    []string
	log       []string

	// failAt makes the k-th fallible call (Enter, RunRelease, Start,
	// AwaitReady, Activate) fail; 0: none. calls counts them.
	failAt int
	calls  int

	// notReady makes AwaitReady of matching processes fail.
	notReady func(p *fakeProc) bool
	// blockReady makes AwaitReady block until ctx ends; blocked, when
	// set, is told each time one starts blocking.
	blockReady func(p *fakeProc) bool
	blocked    chan *fakeProc
	// ignoreTerm: processes that must be SIGKILLed at the deadline.
	ignoreTerm func(p *fakeProc) bool
	// drainLater: retired processes exit a moment later, from another
	// goroutine, as real ones do, so that they count while they drain.
	drainLater bool
	// holdDrains, when set, keeps retired processes alive until closed
	// (with drainLater): a drain that outlives the rollout.
	holdDrains chan struct{}
	// releaseFails fails the release command.
	releaseFails bool
	// watchFail, when set, is sent by Watch as the bake's failure.
	watchFail error
	mem       *Memory

	// maxAlive is the most processes of each type alive at once, seen at
	// every Start.
	maxAlive map[string]int
	// together records, for stop-first checks, a type that had two
	// processes alive at once.
	together map[string]bool

	clock time.Time

	// canary and canaryPercent: the release Canary sent a share to.
	canary        int
	canaryPercent float64
}

type fakeProc struct {
	typ     string
	index   int
	release int
	retired bool
	ready   bool
	done    chan struct{}
	closed  bool
}

func (p *fakeProc) Type() string          { return p.typ }
func (p *fakeProc) Index() int            { return p.index }
func (p *fakeProc) Release() int          { return p.release }
func (p *fakeProc) Retired() bool         { return p.retired }
func (p *fakeProc) Done() <-chan struct{} { return p.done }
func (p *fakeProc) Name() string          { return fmt.Sprintf("%s.%d", p.typ, p.index) }
func (p *fakeProc) exit() {
	if !p.closed {
		p.closed = true
		close(p.done)
	}
}

var errInjected = errors.New("injected failure")

func newFakeHost() *fakeHost {
	return &fakeHost{formation: map[string]int{}, maxAlive: map[string]int{}, together: map[string]bool{}, clock: time.Unix(1e9, 0)}
}

// run starts processes of release v by formation, ready, as the state
// before the rollout under test.
func (h *fakeHost) running(v int, formation map[string]int) {
	h.active = v
	for typ, n := range formation {
		h.formation[typ] = n
		for i := 1; i <= n; i++ {
			h.procs = append(h.procs, &fakeProc{typ: typ, index: i, release: v, ready: true, done: make(chan struct{})})
		}
	}
}

func (h *fakeHost) fail(what string) error {
	h.calls++
	if h.failAt != 0 && h.calls == h.failAt {
		h.log = append(h.log, "FAIL "+what)
		return fmt.Errorf("%s: %w", what, errInjected)
	}
	return nil
}

func (h *fakeHost) Now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clock = h.clock.Add(time.Millisecond)
	return h.clock
}

// After fires at once: the fake's time passes as fast as the engine asks.
func (h *fakeHost) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	h.mu.Lock()
	h.clock = h.clock.Add(d)
	ch <- h.clock
	h.mu.Unlock()
	return ch
}

func (h *fakeHost) Live() []Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Proc
	for _, p := range h.procs {
		if !p.closed {
			out = append(out, p)
		}
	}
	return out
}

func (h *fakeHost) Enter(p Phase) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.fail("enter " + p.Name); err != nil {
		return err
	}
	h.phases = append(h.phases, p.Name)
	return nil
}

func (h *fakeHost) Info(msg string) {
	h.mu.Lock()
	h.log = append(h.log, msg)
	h.mu.Unlock()
}

func (h *fakeHost) Event(p Proc, msg string) { h.Info(p.Name() + ": " + msg) }

func (h *fakeHost) RunRelease(ctx context.Context, release int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.fail("release"); err != nil {
		return err
	}
	if h.releaseFails {
		return errors.New(`"./migrate" exited with status 1`)
	}
	return nil
}

func (h *fakeHost) Start(ctx context.Context, release int, typ string, index int) (Proc, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.fail(fmt.Sprintf("start v%d %s.%d", release, typ, index)); err != nil {
		return nil, err
	}
	p := &fakeProc{typ: typ, index: index, release: release, done: make(chan struct{})}
	alive := 1
	for _, q := range h.procs {
		if q.typ == typ && !q.closed {
			alive++
		}
	}
	h.maxAlive[typ] = max(h.maxAlive[typ], alive)
	if alive > 1 {
		h.together[typ] = true
	}
	h.procs = append(h.procs, p)
	h.log = append(h.log, fmt.Sprintf("start v%d %s", release, p.Name()))
	return p, nil
}

func (h *fakeHost) AwaitReady(ctx context.Context, pp Proc) error {
	p := pp.(*fakeProc)
	h.mu.Lock()
	if err := h.fail("ready " + p.Name()); err != nil {
		h.mu.Unlock()
		return err
	}
	block := h.blockReady != nil && h.blockReady(p)
	bad := h.notReady != nil && h.notReady(p)
	h.mu.Unlock()
	if block {
		if h.blocked != nil {
			h.blocked <- p
		}
		<-ctx.Done()
		return ctx.Err()
	}
	if bad {
		return fmt.Errorf("%s exited with status 3 before it was ready", p.Name())
	}
	h.mu.Lock()
	p.ready = true
	h.mu.Unlock()
	return nil
}

func (h *fakeHost) Retire(ps []Proc) <-chan Drain {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan Drain, 1)
	var d Drain
	d.Timeout = 30 * time.Second
	for _, pp := range ps {
		p := pp.(*fakeProc)
		p.retired = true
		if h.ignoreTerm != nil && h.ignoreTerm(p) {
			d.Killed = append(d.Killed, fmt.Sprintf("v%d %s", p.release, p.Name()))
		}
		if !h.drainLater {
			p.exit()
		}
		h.log = append(h.log, fmt.Sprintf("retire v%d %s", p.release, p.Name()))
	}
	if !h.drainLater {
		ch <- d
		return ch
	}
	hold := h.holdDrains
	go func() {
		if hold != nil {
			<-hold
		}
		h.mu.Lock()
		for _, pp := range ps {
			pp.(*fakeProc).exit()
		}
		h.mu.Unlock()
		ch <- d
	}()
	return ch
}

func (h *fakeHost) Activate(t Target) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.fail("activate"); err != nil {
		return err
	}
	h.active = t.Release
	for _, typ := range t.Types {
		h.formation[typ] = t.Formation[typ]
	}
	h.log = append(h.log, fmt.Sprintf("activate v%d", t.Release))
	return nil
}

func (h *fakeHost) Canary(t Target) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.fail("canary"); err != nil {
		return err
	}
	h.canary, h.canaryPercent = t.Release, t.Canary
	h.log = append(h.log, fmt.Sprintf("canary v%d %g%%", t.Release, t.Canary))
	return nil
}

func (h *fakeHost) Watch(ctx context.Context, ps []Proc) <-chan error {
	ch := make(chan error, 1)
	if h.watchFail != nil {
		ch <- h.watchFail
	}
	return ch
}

func (h *fakeHost) Memory() (Memory, bool) {
	if h.mem == nil {
		return Memory{}, false
	}
	return *h.mem, true
}

// serving counts the live processes of each type per release, those
// being stopped left out.
func (h *fakeHost) serving() map[int]map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[int]map[string]int{}
	for _, p := range h.procs {
		if p.closed || p.retired {
			continue
		}
		if out[p.release] == nil {
			out[p.release] = map[string]int{}
		}
		out[p.release][p.typ]++
	}
	return out
}

func (h *fakeHost) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var live []string
	for _, p := range h.procs {
		if !p.closed {
			live = append(live, fmt.Sprintf("v%d/%s", p.release, p.Name()))
		}
	}
	sort.Strings(live)
	return fmt.Sprintf("active v%d, live %v, phases %v", h.active, live, slices.Clone(h.phases))
}
