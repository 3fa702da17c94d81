package agent

import (
	"fmt"
	"time"

	"github.com/agentd/agentd/agentd/internal/appjson"
	"github.com/agentd/agentd/agentd/internal/cronsched"
)

// Cron jobs (docs/cron.md): the "cron" entries of the active release's
// app.json run on schedule as processes cron.N (N: the entry's place in the
// list, from 1), recorded before they run and adopted across agentd
// restarts like any process. They are no part of the formation: the
// rollout engine never sees them (host.Live), so a deploy neither counts
// nor retires them, and a run finishes on the release it started with.
// When a job is due is package cronsched's decision; this file keeps each
// job's due time and last run in the app's state (appState.Cron); cronrun.go
// starts the processes and records their end, cronview.go answers the API.
// One loop serves every app; it sleeps until the earliest
// due time (at most cronIdle), and a cutover or a setting wakes it.

// cronIdle bounds the loop's sleep: a clock step (NTP, a suspended VM) is
// noticed within it.
const cronIdle = time.Minute

// cronType is the process type of cron runs, as `hctl ps` lists them.
const cronType = "cron"

// cronRecord is what agentd keeps of one cron job on this host, by its
// process name. Command and Schedule say which job it was: a release
// whose entry N differs starts the record afresh.
type cronRecord struct {
	Command  string `json:"command"`
	Schedule string `json:"schedule"`
	// Next is the job's next due time; it is saved when a run starts or
	// ends and when a due time is skipped, so that a restarted agentd
	// knows which due time it missed.
	Next        time.Time `json:"next,omitzero"`
	LastStart   time.Time `json:"last_start,omitzero"`
	LastEnd     time.Time `json:"last_end,omitzero"`
	LastRelease int       `json:"last_release,omitempty"`
	LastExit    *int      `json:"last_exit,omitempty"`
	LastResult  string    `json:"last_result,omitempty"`
	Runs        int       `json:"runs,omitempty"`
	Failures    int       `json:"failures,omitempty"`
	Skipped     int       `json:"skipped,omitempty"`
}

// cronJob is one entry of a release's app.json "cron".
type cronJob struct {
	name     string // cron.N
	index    int    // N
	command  string
	schedule cronsched.Schedule
}

// cronJobs are the cron jobs of one release, read once from its app.json.
type cronJobs struct {
	release int
	jobs    []cronJob
	err     error
}

// cronObserver is what the metrics (package metrics) count of cron runs;
// an Observer without it counts nothing.
type cronObserver interface {
	CronRun(app, job string)
	CronFailed(app, job string)
}

func (ag *Agent) kickCron() {
	select {
	case ag.cronKick <- struct{}{}:
	default:
	}
}

// runCron is the cron loop, until agentd closes.
func (ag *Agent) runCron() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ag.closed:
			return
		case <-t.C:
		case <-ag.cronKick:
		}
		wake := time.Now().Add(cronIdle)
		if !ag.frozen.Load() { // a new agentd owns the apps now
			ag.mu.Lock()
			apps := make([]*app, 0, len(ag.apps))
			for _, a := range ag.apps {
				apps = append(apps, a)
			}
			ag.mu.Unlock()
			for _, a := range apps {
				if next := ag.cronTick(a, time.Now()); !next.IsZero() && next.Before(wake) {
					wake = next
				}
			}
		}
		t.Stop()
		t.Reset(max(time.Until(wake), 0))
	}
}

// jobsOf returns the cron jobs of release r, reading its app.json the
// first time. A malformed app.json fails the deploy in prepare (package
// appjson), so an error here is a release whose code is gone.
func (ag *Agent) jobsOf(a *app, r *releaseState) ([]cronJob, error) {
	a.mu.Lock()
	c := a.cron
	a.mu.Unlock()
	if c != nil && c.release == r.Version {
		return c.jobs, c.err
	}
	c = &cronJobs{release: r.Version}
	c.jobs, c.err = ag.readCronJobs(a, r)
	if c.err != nil {
		// Once per release: the cache keeps the error.
		ag.log.Warn("cron jobs not read: none run", "app", a.st.Name, "release", vname(r.Version), "err", c.err)
	}
	a.mu.Lock()
	a.cron = c
	a.mu.Unlock()
	return c.jobs, c.err
}

func (ag *Agent) readCronJobs(a *app, r *releaseState) ([]cronJob, error) {
	dir, err := ag.codeDir(a, r)
	if err != nil {
		return nil, err
	}
	m, err := appjson.Load(dir)
	if err != nil || m == nil {
		return nil, err
	}
	var jobs []cronJob
	for i, j := range m.Cron {
		s, err := cronsched.Parse(j.Schedule)
		if err != nil {
			return nil, fmt.Errorf("app.json: cron[%d].schedule: %w", i, err)
		}
		jobs = append(jobs, cronJob{name: fmt.Sprintf("%s.%d", cronType, i+1), index: i + 1, command: j.Command, schedule: s})
	}
	return jobs, nil
}

// cronRunning returns the live run of job index, if any: of any release,
// adopted ones included. Callers hold a.mu.
func (a *app) cronRunning(index int) *proc {
	for _, p := range a.procs {
		if p.cron && p.index == index && !p.p.Exited() {
			return p
		}
	}
	return nil
}

// cronTick starts the app's jobs that are due at now and returns the
// earliest next due time (zero when none).
func (ag *Agent) cronTick(a *app, now time.Time) time.Time {
	a.mu.Lock()
	r := a.release(a.st.Active)
	off, gone := a.st.CronOff, a.gone
	if gone || r == nil || off {
		if off && !gone {
			// Off: no due time is kept, so that turning it on again
			// does not count the time off as missed.
			dirty := false
			for _, rec := range a.st.Cron {
				if !rec.Next.IsZero() {
					rec.Next, dirty = time.Time{}, true
				}
			}
			if dirty {
				ag.save(a)
			}
		}
		a.mu.Unlock()
		return time.Time{}
	}
	a.mu.Unlock()
	jobs, err := ag.jobsOf(a, r)
	if err != nil {
		return time.Time{}
	}
	var due []cronJob
	var wake time.Time
	a.mu.Lock()
	if a.gone || a.st.Active != r.Version {
		a.mu.Unlock()
		return now // changed meanwhile: look again
	}
	dirty := false
	for _, j := range jobs {
		rec := a.st.Cron[j.name]
		if rec == nil || rec.Command != j.command || rec.Schedule != j.schedule.String() {
			rec = &cronRecord{Command: j.command, Schedule: j.schedule.String()}
			if a.st.Cron == nil {
				a.st.Cron = map[string]*cronRecord{}
			}
			a.st.Cron[j.name] = rec
			dirty = true
		}
		running := a.cronRunning(j.index)
		d := cronsched.Decide(j.schedule, rec.Next, now, running != nil)
		if rec.Next.IsZero() && !d.Next.IsZero() {
			dirty = true // a new job's first due time
		}
		// Saved with the run, a skip, or the run's end: a due time
		// skipped for an alive run is not worth a write of its own.
		rec.Next = d.Next
		switch {
		case d.Run:
			due = append(due, j)
		case d.Overlap:
			rec.Skipped++
			ag.log.Info("cron job still running at its next time: not started again", "app", a.st.Name, "job", j.name,
				"due", d.Due, "pid", running.p.PID(), "release", vname(running.release))
		case d.Missed:
			rec.Skipped++
			dirty = true
			ag.log.Warn("cron job missed while agentd was down, longer ago than the catch-up bound: not run", "app", a.st.Name,
				"job", j.name, "due", d.Due, "bound", cronsched.MaxCatchUp)
		}
		if !rec.Next.IsZero() && (wake.IsZero() || rec.Next.Before(wake)) {
			wake = rec.Next
		}
	}
	if dirty && len(due) == 0 {
		ag.save(a)
	}
	a.mu.Unlock()
	for _, j := range due {
		if err := ag.startCron(a, r, j, now); err != nil {
			ag.log.Error("cron job not started", "app", a.st.Name, "job", j.name, "err", err)
		}
	}
	return wake
}
