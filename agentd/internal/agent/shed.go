package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/agentd/agentd/agentd/internal/conns"
	"github.com/agentd/agentd/agentd/internal/shed"
)

// Paced shedding at a draining generation's deadline (--shed-rate N):
// instead of one SIGKILL that cuts every remaining connection at once and
// sends every client back at the same instant, agentd closes the
// generation's client connections itself, at no more than N per second,
// oldest first, so that clients reconnect to the new release gradually.
// Each close is a shutdown(2) of a copy of the app's fd taken with
// pidfd_getfd: a FIN after what the app had queued, and end-of-file for the
// app's read (package shed says why not SOCK_DESTROY's RST). The order is
// that of the sockets' inode numbers, which the kernel hands out in
// increasing order: the order the connections were accepted, the same after
// an agentd restart. What is left then is SIGKILLed (drain).

// shedGeneration closes the connections that procs (a generation at its
// deadline) still hold, at rate per second.
func (ag *Agent) shedGeneration(a *app, procs []*proc, rate float64, o *op) {
	a.mu.Lock()
	ls := a.listeners()
	a.mu.Unlock()
	pgids := make([]int, len(procs))
	for i, p := range procs {
		pgids[i] = p.p.PID()
	}
	list, err := conns.List(ls, pgids)
	if err != nil {
		ag.log.Warn("cannot list the connections to shed: SIGKILL at the deadline", "app", a.st.Name, "err", err)
		return
	}
	if len(list) == 0 {
		return
	}
	slices.SortFunc(list, func(x, y conns.Conn) int { return compareUint(x.Inode, y.Inode) })
	targets := make([]shed.Target, len(list))
	for i, c := range list {
		targets[i] = shed.Target{PID: c.PID, FD: c.FD, Inode: c.Inode}
	}
	what := fmt.Sprintf("shedding %d connection(s) of %s at %g per second", len(targets), generationName(procs), rate)
	ag.log.Info(what, "app", a.st.Name)
	if o != nil {
		o.info("%s", what)
	}
	res := shed.Shed(context.Background(), targets, rate, shed.Close)
	if errors.Is(res.Err, shed.ErrUnsupported) {
		ag.log.Warn("connections cannot be shed here: SIGKILL at the deadline", "app", a.st.Name, "err", res.Err)
	}
	ag.log.Info("shed", "app", a.st.Name, "closed", res.Closed, "gone", res.Gone, "failed", len(res.Failed),
		"seconds", res.End.Sub(res.Start).Seconds())
	ag.obs.ConnectionsShed(a.st.Name, res.Closed)
}

func compareUint(x, y uint64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// generationName names the releases of procs ("v3", "v3 and v4").
func generationName(procs []*proc) string {
	var vs []int
	for _, p := range procs {
		if !slices.Contains(vs, p.release) {
			vs = append(vs, p.release)
		}
	}
	slices.Sort(vs)
	out := ""
	for i, v := range vs {
		if i > 0 {
			out += " and "
		}
		out += vname(v)
	}
	return out
}
