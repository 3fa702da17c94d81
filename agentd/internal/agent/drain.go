package agent

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/conns"
)

// The drain: SIGTERM to the retired processes, their connections counted
// while they finish, SIGKILL at the drain timeout, and what is left in a
// release's cgroup killed once none of its processes is supervised.

// drain stops procs: SIGTERM to each process group at once, then, at each
// one's deadline (its type's drain timeout from when it was retired, kept
// across agentd restarts), its remaining connections are shed at the
// app's shed rate if it has one, and SIGKILL goes to the groups still
// alive. It reports how long it took, which processes had to be killed,
// and how many connections the kills cut off; with o, the progress goes to
// its stream.
func (ag *Agent) drain(a *app, procs []*proc, o *op) (time.Duration, []string, int) {
	if len(procs) == 0 {
		return 0, nil, 0
	}
	start := time.Now()
	a.mu.Lock()
	rate := a.st.ShedRate
	timeouts := map[*proc]time.Duration{}
	for _, p := range procs {
		p.retired = true
		p.state = api.StateDraining
		timeouts[p] = a.drainTimeoutOf(p.typ)
		if p.killAt.IsZero() {
			p.killAt = start.Add(timeouts[p])
		}
		if t, ok := a.backoff[p.name()]; ok && p.release == a.st.Active {
			t.Stop()
		}
	}
	ag.save(a)
	a.mu.Unlock()
	for _, p := range procs {
		if err := p.p.Signal(syscall.SIGTERM); err != nil {
			ag.log.Warn("SIGTERM", "app", a.st.Name, "process", p.name(), "err", err)
		}
	}
	// While they drain, their open connections are counted for ps and the
	// progress stream, and once more just before a SIGKILL.
	w := ag.watchDrain(a, procs, o)
	var killed []string
	cut := 0
	for _, g := range byDeadline(procs) {
		alive := w.waitUntil(g.at, g.procs)
		if len(alive) == 0 {
			continue
		}
		if rate > 0 {
			// Paced: clients reconnect to the new release gradually, not
			// all at the same instant (shed.go).
			ag.shedGeneration(a, alive, rate, o, w)
			alive = w.waitUntil(time.Now().Add(shedGrace), alive)
		}
		for _, p := range alive {
			if k, n := w.killAfter(p, time.Now()); k {
				killed = append(killed, vname(p.release)+" "+p.name())
				cut += n
				ag.log.Warn("SIGKILL at the drain timeout", "app", a.st.Name, "process", p.name(), "pid", p.p.PID(), "connections_cut", n)
				if o != nil {
					o.event("process", p.name(), fmt.Sprintf("%s %s (pid %d) outlived the %s drain timeout: SIGKILLed, %s", vname(p.release), p.name(), p.p.PID(), timeouts[p], cutText(n)))
				}
			}
		}
	}
	w.halt()
	ag.killDrainedReleases(a, procs)
	d := time.Since(start)
	ag.obs.DrainDone(a.st.Name, d, len(killed))
	if len(killed) > 0 {
		ag.obs.ConnectionsCut(a.st.Name, cut)
	}
	return d, killed, cut
}

// shedGrace is how long a process may take to exit once its connections
// were shed, before the SIGKILL.
const shedGrace = 2 * time.Second

// deadlineGroup is the processes of a drain with one deadline.
type deadlineGroup struct {
	at    time.Time
	procs []*proc
}

// byDeadline groups procs by deadline, earliest first. Callers own the
// procs' killAt (set before the drain's save).
func byDeadline(procs []*proc) []deadlineGroup {
	var out []deadlineGroup
	for _, p := range procs {
		i := slices.IndexFunc(out, func(g deadlineGroup) bool { return g.at.Equal(p.killAt) })
		if i < 0 {
			out = append(out, deadlineGroup{at: p.killAt})
			i = len(out) - 1
		}
		out[i].procs = append(out[i].procs, p)
	}
	slices.SortFunc(out, func(x, y deadlineGroup) int { return x.at.Compare(y.at) })
	return out
}

// killDrainedReleases SIGKILLs what is left in the cgroup of each release
// of procs that no longer has a live process: what the process-group kills
// of the drain could not reach.
func (ag *Agent) killDrainedReleases(a *app, procs []*proc) {
	sc := ag.cfg.Scopes
	if sc == nil {
		return
	}
	a.mu.Lock()
	live := map[int]bool{}
	for _, p := range a.procs {
		if !p.p.Exited() {
			live[p.release] = true
		}
	}
	a.mu.Unlock()
	done := map[int]bool{}
	for _, p := range procs {
		if live[p.release] || done[p.release] {
			continue
		}
		done[p.release] = true
		if err := sc.KillRelease(a.st.Name, p.release); err != nil {
			ag.log.Warn("release cgroup", "app", a.st.Name, "release", vname(p.release), "err", err)
		}
	}
}

// drainWatch follows the connections that processes still hold while they
// drain: it counts them every connPoll for `hctl ps` (proc.conns) and the
// operation's progress stream, and once more at the drain timeout, just
// before SIGKILL, to say how many the kill cuts off.
type drainWatch struct {
	ag    *Agent
	a     *app
	o     *op // nil outside an operation
	ctr   *conns.Counter
	procs []*proc

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	warn sync.Once // a failure to count is logged once per drain

	// Used by run only.
	shown  map[*proc]int
	shownT map[*proc]time.Time

	// Used by the draining goroutine only: the counts at the drain
	// timeout, taken once for every process still alive then.
	cut map[*proc]int
}

// watchDrain starts following procs. Callers must call stop.
func (ag *Agent) watchDrain(a *app, procs []*proc, o *op) *drainWatch {
	a.mu.Lock()
	ls := a.listeners()
	a.mu.Unlock()
	w := &drainWatch{ag: ag, a: a, o: o, ctr: conns.NewCounter(ls), procs: procs,
		stop: make(chan struct{}), done: make(chan struct{}),
		shown: map[*proc]int{}, shownT: map[*proc]time.Time{}}
	if len(ls) == 0 {
		close(w.done)
		return w
	}
	go w.run()
	return w
}

// halt stops the counting and waits for it to end.
func (w *drainWatch) halt() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

func (w *drainWatch) alive() []*proc {
	var out []*proc
	for _, p := range w.procs {
		if !p.p.Exited() {
			out = append(out, p)
		}
	}
	return out
}

func (w *drainWatch) run() {
	defer close(w.done)
	tick := time.NewTicker(connPoll)
	defer tick.Stop()
	for {
		live := w.alive()
		if len(live) == 0 {
			return
		}
		w.report(w.count(live, false))
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
	}
}

// count counts the connections of ps now and records them for ps. A
// process whose count is unknown is missing from the answer. quick: with
// the processes of each group as last found, without a walk of /proc.
func (w *drainWatch) count(ps []*proc, quick bool) map[*proc]int {
	if len(ps) == 0 {
		return nil
	}
	pgids := make([]int, len(ps))
	for i, p := range ps {
		pgids[i] = p.p.PID() // each process leads its own group
	}
	count := w.ctr.Count
	if quick {
		count = w.ctr.Quick
	}
	n, err := count(pgids)
	if err != nil {
		w.warn.Do(func() {
			w.ag.log.Warn("cannot count the connections of draining processes", "app", w.a.st.Name, "err", err)
		})
		return nil
	}
	out := map[*proc]int{}
	w.a.mu.Lock()
	for _, p := range ps {
		if c, ok := n[p.p.PID()]; ok {
			out[p] = c
			p.conns = &c
		}
	}
	w.a.mu.Unlock()
	return out
}

// report puts a process's count in the progress stream when it changed,
// at most every connReportEvery, and always when it fell to 0.
func (w *drainWatch) report(counts map[*proc]int) {
	if w.o == nil {
		return
	}
	now := time.Now()
	for _, p := range w.procs {
		c, ok := counts[p]
		if !ok {
			continue
		}
		last, seen := w.shown[p]
		if seen && (c == last || (c != 0 && now.Sub(w.shownT[p]) < connReportEvery)) {
			continue
		}
		w.shown[p], w.shownT[p] = c, now
		w.o.event("process", p.name(), fmt.Sprintf("%s %s draining: %s open", vname(p.release), p.name(), plural(c, "connection")))
	}
}

// waitUntil waits until every process of ps has exited or at has come,
// and returns those still alive.
func (w *drainWatch) waitUntil(at time.Time, ps []*proc) []*proc {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	for _, p := range ps {
		select {
		case <-p.p.Done():
		case <-t.C:
			return w.aliveOf(ps)
		}
	}
	return nil
}

func (w *drainWatch) aliveOf(ps []*proc) []*proc {
	var out []*proc
	for _, p := range ps {
		if !p.p.Exited() {
			out = append(out, p)
		}
	}
	return out
}

// killAfter waits until p exits or killAt; at killAt it SIGKILLs p's group.
// It reports whether SIGKILL was needed and how many connections p held
// open when it came.
func (w *drainWatch) killAfter(p *proc, killAt time.Time) (killed bool, cut int) {
	t := time.NewTimer(time.Until(killAt))
	select {
	case <-p.p.Done():
		t.Stop()
		return false, 0
	case <-t.C:
	}
	if w.cut == nil {
		// From here on the kills tell what was cut; a count taken while
		// a killed process dies would only say 0.
		w.halt()
		w.cut = w.count(w.alive(), true)
		if w.cut == nil {
			w.cut = map[*proc]int{}
		}
	}
	cut = w.cut[p]
	if !p.p.KillAfter(0) {
		return false, 0
	}
	return true, cut
}

// draining says what of the app still drains: processes, the connections
// they were last counted holding, and the latest deadline.
func (a *app) draining() (procs, conns int, deadline time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.procs {
		if p.p.Exited() || p.state != api.StateDraining {
			continue
		}
		procs++
		if p.conns != nil {
			conns += *p.conns
		}
		if p.killAt.After(deadline) {
			deadline = p.killAt
		}
	}
	return procs, conns, deadline
}
