package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/internal/diagnose"
	"github.com/agentd/agentd/sockets"
)

// While a process boots, agentd looks at what it does with the sockets it
// was given (package diagnose) and fails it as soon as it is certain the
// process can never become ready, rather than at its boot timeout: it
// serves fd 3 but never the probe socket, it closed a socket, it bound a
// port of its own, or a shell forked it and it refused the fds under a
// LISTEN_PID not its own. A likely cause that is not certain is named
// when readiness fails.

// trapLook is how often a booting process is looked at, and trapSure how
// long a certain trap must be seen, unchanged, before the process is
// failed: a process may take its sockets one after the other.
const (
	trapLook = 250 * time.Millisecond
	trapSure = time.Second
)

// trapError is a readiness failure that package diagnose explains.
type trapError struct {
	f   diagnose.Finding
	err error // the readiness error it explains; nil when the trap ended the wait
}

func (e *trapError) Error() string {
	if e.err == nil {
		return e.f.Msg
	}
	return e.err.Error()
}

func (e *trapError) Unwrap() error { return e.err }

// trapWatch looks at one booting process until its context ends.
type trapWatch struct {
	sure chan *trapError // a certain trap, once

	mu   sync.Mutex
	last diagnose.Finding // the latest finding, certain or not
}

// watchTraps starts looking at p, which boots with readiness kind; the
// looks end with ctx. Callers must not hold a.mu.
func (ag *Agent) watchTraps(ctx context.Context, a *app, p *proc) *trapWatch {
	w := &trapWatch{sure: make(chan *trapError, 1)}
	in, ok := trapInput(a, p)
	if !ok {
		return w
	}
	go func() {
		var since time.Time
		var seen string
		tick := time.NewTicker(trapLook)
		defer tick.Stop()
		for {
			// The first look comes one tick after the start: most
			// processes are ready before it and cost no look at all (a
			// look reads the fds of the group and the socket tables),
			// and a trap is sure only after trapSure anyway.
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if p.probe != nil && p.probe.File != nil {
				in.ProbeQueued, _ = diagnose.Queued(sockets.Fd(p.probe.File))
			}
			s, err := diagnose.LookAt(p.p.PID(), ag.groups.members()[p.p.PID()], in.Passed)
			f, found := diagnose.Judge(in, s)
			if err != nil || !found || p.p.Exited() {
				// Nothing to judge, or gone: its exit says what happened.
				since, seen = time.Time{}, ""
			} else {
				w.mu.Lock()
				w.last = f
				w.mu.Unlock()
				switch {
				case !f.Certain:
					since, seen = time.Time{}, ""
				case f.Trap != seen:
					since, seen = time.Now(), f.Trap
				case time.Since(since) >= trapSure:
					w.sure <- &trapError{f: f}
					return
				}
			}
		}
	}()
	return w
}

// explain adds the latest finding to a readiness error that has none.
func (w *trapWatch) explain(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	if _, ok := errors.AsType[*trapError](err); ok {
		return err
	}
	w.mu.Lock()
	f := w.last
	w.mu.Unlock()
	if f.Trap == "" {
		return err
	}
	return &trapError{f: f, err: err}
}

// trapInput lists the sockets p was given, as it sees them. A process
// whose sockets agentd does not hold (none of its type, adopted without
// its probe) is still judged on those it knows.
func trapInput(a *app, p *proc) (diagnose.Input, bool) {
	in := diagnose.Input{Process: p.name(), Type: p.typ}
	a.mu.Lock()
	fd := 3
	for _, h := range a.held {
		if h.Spec.Type != p.typ {
			continue
		}
		g := a.givenTo(h, p.release)
		in.Passed = append(in.Passed, diagnose.Socket{Name: h.Spec.Name, FD: fd, Inode: inode(sockets.Fd(g.File))})
		fd++
	}
	a.mu.Unlock()
	if p.probe != nil && p.probe.File != nil {
		s := diagnose.Socket{Name: "probe", FD: fd, Inode: inode(sockets.Fd(p.probe.File))}
		in.Passed = append(in.Passed, s)
		in.Probe = &in.Passed[len(in.Passed)-1]
	}
	for _, s := range in.Passed {
		if s.Inode == 0 {
			return in, false
		}
	}
	return in, len(in.Passed) > 0
}

func inode(fd int) uint64 {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return 0
	}
	return st.Ino
}
