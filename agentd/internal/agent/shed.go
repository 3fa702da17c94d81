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
// when the drain's watcher first saw each connection (it counts them every
// 0.5 s), then the socket's inode (roughly the order the kernel created
// them): after an agentd restart, what the new watcher saw first. What is
// left then is SIGKILLed (drain).

// shedGeneration closes the connections that procs (a generation at its
// deadline) still hold, at rate per second.
func (ag *Agent) shedGeneration(a *app, procs []*proc, rate float64, o *op, w *drainWatch) {
	if w.ctr == nil {
		return
	}
	pgids := make([]int, len(procs))
	for i, p := range procs {
		pgids[i] = p.p.PID()
	}
	list, err := w.ctr.List(pgids)
	if err != nil {
		ag.log.Warn("cannot list the connections to shed: SIGKILL at the deadline", "app", a.st.Name, "err", err)
		return
	}
	if len(list) == 0 {
		return
	}
	conns.ByAge(list)
	targets := make([]shed.Target, len(list))
	for i, c := range list {
		targets[i] = shed.Target{PID: c.PID, FD: c.FD, Inode: c.Inode}
	}
	what := fmt.Sprintf("shedding %d connection(s) of %s at %g per second", len(targets), generationName(procs), rate)
	ag.log.Info(what, "app", a.st.Name)
	if o != nil {
		o.info("%s", what)
	}
	// An agentd that stops stops shedding: the next one sheds the rest.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ag.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	res := shed.Shed(ctx, targets, rate, shed.Close)
	for _, err := range res.Failed {
		ag.log.Warn("shedding a connection", "app", a.st.Name, "err", err)
	}
	if errors.Is(res.Err, shed.ErrUnsupported) {
		ag.log.Warn("connections cannot be shed here: SIGKILL at the deadline", "app", a.st.Name, "err", res.Err)
	}
	ag.log.Info("shed", "app", a.st.Name, "closed", res.Closed, "gone", res.Gone, "failed", len(res.Failed),
		"seconds", res.End.Sub(res.Start).Seconds())
	ag.obs.ConnectionsShed(a.st.Name, res.Closed)
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
