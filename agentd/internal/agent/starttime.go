package agent

import "time"

// startTimes times the whole start of one process, in the steps a slow
// start is found in: from spawn's first line (its environment, notify
// socket, log file: setup) through fork and exec of the shim (fork),
// placement in its release's cgroup (place), the wait for the rest of its
// batch (wait: host.flush records every process an operation started
// with one write), the record itself (record: the state written and
// renamed into place) and the go-ahead the shim is released by. The whole
// of it is issue 14's "whole process start" (make bench, store scenario),
// and agentd_process_start_seconds.
type startTimes struct {
	began   time.Time
	setup   time.Duration // began → the fork
	fork    time.Duration // fork + exec of the shim
	place   time.Duration // the cgroup placement
	started time.Time     // supervisor.Start returned
	// Set by host.flush: its write began, and the go-ahead was given.
	recordAt, released time.Time
}

// total is the whole start: valid once released is set.
func (t *startTimes) total() time.Duration { return t.released.Sub(t.began) }

// reportStarts logs (at debug, one line per process: what the bench
// reads) and observes the whole start of processes just released. Called
// after the record is durable, off the path of their start.
func (ag *Agent) reportStarts(a *app, ps []*proc) {
	so, observe := ag.obs.(interface {
		ProcessStarted(app, typ string, d time.Duration)
	})
	for _, p := range ps {
		t := &p.startT
		if t.began.IsZero() || t.released.IsZero() {
			continue
		}
		if observe {
			so.ProcessStarted(a.st.Name, p.typ, t.total())
		}
		ag.log.Debug("process start", "app", a.st.Name, "process", p.name(), "pid", p.p.PID(),
			"total", t.total(), "setup", t.setup, "fork", t.fork, "place", t.place,
			"wait", t.recordAt.Sub(t.started), "record", t.released.Sub(t.recordAt))
	}
}
