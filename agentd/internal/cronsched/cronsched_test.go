package cronsched

import (
	"errors"
	"testing"
	"time"
)

func mustParse(t *testing.T, spec string) Schedule {
	t.Helper()
	s, err := Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2026, 3, 7, 10, 0, 0, 0, time.UTC)

// clock is the fake clock of these tests: a job is evaluated whenever it
// is due or a run of it ends, as agentd's loop does.
type run struct{ start, end time.Time }

// simulate drives Decide over [from, until) for a job whose runs last dur,
// and returns the runs started. down, when set, is a span in which agentd
// was not there: nothing is decided, a run alive keeps running (adopted).
func simulate(s Schedule, from, until time.Time, dur time.Duration, down [2]time.Time) (runs []run, overlaps, missed int) {
	next := Decide(s, time.Time{}, from, false).Next
	now := from
	for now.Before(until) {
		if !down[0].IsZero() && !now.Before(down[0]) && now.Before(down[1]) {
			now = down[1]
			continue
		}
		running := len(runs) > 0 && now.Before(runs[len(runs)-1].end)
		d := Decide(s, next, now, running)
		if d.Run {
			runs = append(runs, run{now, now.Add(dur)})
		}
		if d.Overlap {
			overlaps++
		}
		if d.Missed {
			missed++
		}
		next = d.Next
		wake := next
		if len(runs) > 0 && runs[len(runs)-1].end.After(now) && runs[len(runs)-1].end.Before(wake) {
			wake = runs[len(runs)-1].end
		}
		now = wake
	}
	return runs, overlaps, missed
}

func TestNoOverlapEverySecondJobOfThreeSeconds(t *testing.T) {
	s := mustParse(t, "@every 1s")
	runs, overlaps, _ := simulate(s, t0, t0.Add(60*time.Second), 3*time.Second, [2]time.Time{})
	if len(runs) < 10 {
		t.Fatalf("%d runs in a minute, want about 15", len(runs))
	}
	for i := 1; i < len(runs); i++ {
		if runs[i].start.Before(runs[i-1].end) {
			t.Fatalf("run %d started at %s before run %d ended at %s", i, runs[i].start, i-1, runs[i-1].end)
		}
	}
	if overlaps == 0 {
		t.Fatal("no due time found a run alive: the test does not exercise overlap")
	}
}

func TestOverlapSkipsAndMovesOn(t *testing.T) {
	s := mustParse(t, "* * * * *")
	next := t0.Add(time.Minute)
	d := Decide(s, next, next, true)
	if d.Run || !d.Overlap || !d.Next.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("due with a run alive: %+v, want overlap and next at %s", d, t0.Add(2*time.Minute))
	}
	d = Decide(s, next, next, false)
	if !d.Run || d.Overlap || !d.Due.Equal(next) {
		t.Fatalf("due with none alive: %+v, want a run", d)
	}
}

func TestMissedDuringShortOutageRunsOnce(t *testing.T) {
	s := mustParse(t, "@every 10s")
	// agentd down for 95 s: nine due times passed, one run on return.
	down := [2]time.Time{t0.Add(25 * time.Second), t0.Add(120 * time.Second)}
	runs, _, missed := simulate(s, t0, t0.Add(125*time.Second), time.Second, down)
	var during, back int
	for _, r := range runs {
		switch {
		case r.start.Before(down[0]):
		case r.start.Equal(down[1]):
			back++
		case r.start.Before(down[1]):
			during++
		}
	}
	if during != 0 || back != 1 || missed != 0 {
		t.Fatalf("runs during the outage %d, at return %d, missed %d: want 0, 1, 0 (%v)", during, back, missed, runs)
	}
	// A restart that missed a daily job by a minute runs it.
	daily := mustParse(t, "0 3 * * *")
	due := time.Date(2026, 3, 7, 3, 0, 0, 0, time.Local)
	if d := Decide(daily, due, due.Add(time.Minute), false); !d.Run || !d.Next.Equal(due.AddDate(0, 0, 1)) {
		t.Fatalf("daily job a minute late: %+v, want a run, next tomorrow", d)
	}
}

func TestLongOutageIsNotReplayed(t *testing.T) {
	daily := mustParse(t, "0 3 * * *")
	due := time.Date(2026, 3, 7, 3, 0, 0, 0, time.Local)
	back := due.Add(MaxCatchUp + time.Second)
	d := Decide(daily, due, back, false)
	if d.Run || !d.Missed {
		t.Fatalf("back %s after the due time: %+v, want it skipped as missed", back.Sub(due), d)
	}
	if !d.Next.Equal(due.AddDate(0, 0, 1)) {
		t.Fatalf("next %s, want %s", d.Next, due.AddDate(0, 0, 1))
	}
	// At the bound it still runs.
	if d := Decide(daily, due, due.Add(MaxCatchUp), false); !d.Run {
		t.Fatalf("back exactly MaxCatchUp after: %+v, want a run", d)
	}
}

func TestNewJobWaitsForItsFirstTime(t *testing.T) {
	s := mustParse(t, "@hourly")
	now := t0.Add(17 * time.Minute)
	d := Decide(s, time.Time{}, now, false)
	if d.Run || !d.Next.After(now) || d.Next.Sub(now) > time.Hour || d.Next.Minute() != 0 {
		t.Fatalf("new @hourly job at %s: %+v, want no run and next within the hour", now, d)
	}
	if d := Decide(s, d.Next, d.Next.Add(-time.Nanosecond), false); d.Run || d.Overlap || d.Missed {
		t.Fatalf("before its due time: %+v, want nothing", d)
	}
}

func TestCronTZ(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	s := mustParse(t, "CRON_TZ=America/New_York 30 3 * * *")
	// 7 March 2026 is EST (UTC-5): 03:30 in New York is 08:30 UTC.
	got := s.Next(t0)
	want := time.Date(2026, 3, 8, 3, 30, 0, 0, ny)
	if !got.Equal(want) {
		t.Fatalf("next of %q after %s: %s, want %s (%s UTC)", s, t0, got, want, want.UTC())
	}
	// The day after the switch to EDT (8 March) it is 07:30 UTC.
	if got2 := s.Next(got); !got2.Equal(time.Date(2026, 3, 9, 7, 30, 0, 0, time.UTC)) {
		t.Fatalf("next after the DST switch: %s UTC, want 07:30 UTC", got2.UTC())
	}
	// Without CRON_TZ the schedule is in the zone of the time given.
	plain := mustParse(t, "30 3 * * *")
	if got := plain.Next(t0); !got.Equal(time.Date(2026, 3, 8, 3, 30, 0, 0, time.UTC)) {
		t.Fatalf("next of %q after %s: %s", plain, t0, got)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, spec := range []string{"", "* * * *", "61 * * * *", "@fortnightly", "@every 500ms", "@every -1s", "CRON_TZ=Nowhere/Else * * * * *", "* * * * * *"} {
		if _, err := Parse(spec); !errors.Is(err, ErrBadSchedule) {
			t.Errorf("Parse(%q) = %v, want ErrBadSchedule", spec, err)
		}
	}
	for _, spec := range []string{"5 * * * *", "@hourly", "@daily", "@every 10s", "@every 1s", "CRON_TZ=UTC 0 0 * * 1-5", "*/15 9-17 * * mon-fri"} {
		if _, err := Parse(spec); err != nil {
			t.Errorf("Parse(%q): %v", spec, err)
		}
	}
}
