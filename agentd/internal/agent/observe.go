package agent

import (
	"fmt"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/conns"
	"github.com/agentd/agentd/agentd/internal/rollout"
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
		if (p.typ == typ || p.typ == rollout.Responder) && p.p != nil && !p.p.Exited() {
			return true
		}
	}
	return false
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
