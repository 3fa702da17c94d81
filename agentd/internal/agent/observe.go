package agent

import (
	"fmt"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/conns"
)

// What the agent shows of itself beyond its state: the connections of
// draining processes, whether each socket is in use, and the Observer calls
// that are not tied to one place of the deploy state machine.

// connPoll is how often the connections of draining processes are
// counted: often enough for `hctl ps` and a deploy's progress to follow a
// drain, rarely enough to cost nothing (one sock_diag dump per address
// family and a walk of /proc, about 10 ms on a host with 30,000 sockets).
// Nothing is counted while nothing drains.
const connPoll = 500 * time.Millisecond

// connReportEvery bounds how often a deploy's progress stream reports the
// count of one draining process.
const connReportEvery = time.Second

func (nopObserver) ConnectionsCut(string, int)   {}
func (nopObserver) ActiveRelease(string, string) {}
func (nopObserver) AppDestroyed(string)          {}

// vnameOr is "v3", or "" for no release.
func vnameOr(v int) string {
	if v == 0 {
		return ""
	}
	return vname(v)
}

// listeners lists the app's sockets for counting connections. Callers
// hold a.mu.
func (a *app) listeners() []conns.Listener {
	var ls []conns.Listener
	for _, h := range a.held {
		if h.Spec.Network == "unix" {
			ls = append(ls, conns.Listener{Network: "unix", Path: h.Spec.Address})
		} else if port := h.Port(); port != 0 {
			ls = append(ls, conns.Listener{Network: "tcp", Port: port})
		}
	}
	return ls
}

// socketInUse reports whether a running process of the app holds the
// sockets of process type typ: every process of that type got them at its
// start. Callers hold a.mu.
func (a *app) socketInUse(typ string) bool {
	for _, p := range a.procs {
		if p.typ == typ && p.p != nil && !p.p.Exited() {
			return true
		}
	}
	return false
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

// cutText says what a SIGKILL cut off.
func cutText(n int) string {
	if n == 0 {
		return "with no connection open"
	}
	return "cutting " + plural(n, "open connection")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// connsAPI is what api.Process shows of p's connections: only while it
// drains. Callers hold a.mu.
func (p *proc) connsAPI() *int {
	if p.state != api.StateDraining || p.conns == nil {
		return nil
	}
	c := *p.conns
	return &c
}
