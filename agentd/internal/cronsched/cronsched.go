// Package cronsched decides when an app's cron jobs run: it parses a
// job's schedule (robfig/cron v3's standard grammar: five fields, the
// @hourly-style descriptors, @every DURATION and an optional CRON_TZ=Zone
// prefix) and, given the job's next due time, the time now and whether a
// run of the job is still alive, says whether a run starts now and when
// the job is due next. It holds no clock and starts nothing: the caller
// (agentd's core) owns the processes and persists the due time, so that
// the decision is the same after an agentd restart, and tests drive it
// with times of their own.
//
// The rules (docs/cron.md):
//   - a job never runs twice at once: a due time that finds a run alive is
//     skipped (Overlap), and the job is due next at its next time after now;
//   - a due time that passed while agentd was down runs once when agentd is
//     back, however many were missed, if the most recent one is at most
//     MaxCatchUp old; an older one is skipped (Missed): a longer outage is
//     not replayed;
//   - a new job (no due time yet) first runs at its first time after now.
package cronsched

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// MaxCatchUp is how late a run may start: a due time that passed at most
// this long ago (agentd was restarting or upgrading, which takes seconds)
// runs once now; an older one (a host or agentd down for longer) is
// skipped and logged. An hour covers any restart and a reboot, and keeps a
// daily job from running at the wrong time of day after a long outage.
const MaxCatchUp = time.Hour

// ErrBadSchedule marks a schedule robfig/cron refuses.
var ErrBadSchedule = errors.New("bad cron schedule")

// Schedule is a parsed cron schedule.
type Schedule struct {
	spec string
	s    cron.Schedule
}

// Parse parses a schedule: "5 * * * *", "@hourly", "@every 10s",
// "CRON_TZ=Europe/Paris 0 3 * * *". Times without CRON_TZ are in the
// host's local time zone.
func Parse(spec string) (Schedule, error) {
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return Schedule{}, fmt.Errorf("%w %q: %w", ErrBadSchedule, spec, err)
	}
	rest := spec
	if strings.HasPrefix(rest, "CRON_TZ=") || strings.HasPrefix(rest, "TZ=") {
		_, rest, _ = strings.Cut(rest, " ")
	}
	if d, ok := strings.CutPrefix(strings.TrimSpace(rest), "@every "); ok {
		// robfig turns @every below 1s (even a negative one) into 1s; say
		// so rather than run at a rate nobody asked for.
		if v, err := time.ParseDuration(strings.TrimSpace(d)); err != nil || v < time.Second {
			return Schedule{}, fmt.Errorf("%w %q: @every needs a duration of at least 1s", ErrBadSchedule, spec)
		}
	}
	return Schedule{spec: spec, s: s}, nil
}

// String is the schedule as written.
func (s Schedule) String() string { return s.spec }

// Next is the first due time strictly after t (zero when the schedule
// never fires, such as 30 February).
func (s Schedule) Next(t time.Time) time.Time {
	if s.s == nil {
		return time.Time{}
	}
	return s.s.Next(t)
}

// Decision is what to do about one job at one moment.
type Decision struct {
	// Run: start a run now.
	Run bool
	// Overlap: a due time passed while a run was still alive; no run.
	Overlap bool
	// Missed: the due time passed more than MaxCatchUp ago (agentd was
	// down); no run.
	Missed bool
	// Due is the due time this decision was about (zero when nothing was
	// due).
	Due time.Time
	// Next is the job's next due time, to persist; zero when it never
	// fires again.
	Next time.Time
}

// Decide says what to do about a job whose next due time is next (zero for
// a job never scheduled before), at now, with running telling whether a
// run of the job is alive (on any release, adopted after a restart
// included).
func Decide(s Schedule, next, now time.Time, running bool) Decision {
	if next.IsZero() {
		return Decision{Next: s.Next(now)}
	}
	if now.Before(next) {
		return Decision{Next: next}
	}
	d := Decision{Due: next, Next: s.Next(now)}
	switch {
	case running:
		d.Overlap = true
	case now.Sub(next) > MaxCatchUp:
		d.Missed = true
	default:
		d.Run = true
	}
	return d
}
