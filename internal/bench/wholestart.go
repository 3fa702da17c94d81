package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// wholeStart is issue 14's "whole process start" as agentd itself times
// it: from its first step of a process (environment, notify socket, log
// file) through fork and exec of the shim, the cgroup placement and the
// record (state written and renamed into place), to the go-ahead that lets
// the shim exec the app. agentd logs each at debug ("process start") and
// observes it in agentd_process_start_seconds; the steps say where the
// time goes.
type wholeStart struct {
	Total  dist `json:"seconds"`
	Setup  dist `json:"setup_seconds"`
	Fork   dist `json:"fork_exec_seconds"`
	Place  dist `json:"place_seconds"`
	Wait   dist `json:"wait_seconds"`
	Record dist `json:"record_seconds"`
	// Load is /proc/loadavg when the starts began.
	Load string `json:"loadavg"`
}

// dist is a Stat with its 99th percentile: the target has one.
type dist struct {
	Stat
	P99 float64 `json:"p99"`
}

// newDist summarises xs; the 99th percentile by nearest rank.
func newDist(xs []float64) dist {
	d := dist{Stat: stat(xs)}
	if len(xs) > 0 {
		s := slices.Sorted(slices.Values(xs))
		d.P99 = s[int(math.Ceil(0.99*float64(len(s))))-1]
	}
	return d
}

// startLine is one "process start" line of agentd's log.
type startLine struct {
	total, setup, fork, place, wait, record time.Duration
}

// parseStartLines reads agentd's "process start" debug lines (slog's text
// format) of app.
func parseStartLines(log, app string) ([]startLine, error) {
	var out []startLine
	for line := range strings.Lines(log) {
		if !strings.Contains(line, `msg="process start"`) || !strings.Contains(line, " app="+app+" ") {
			continue
		}
		var s startLine
		fields := map[string]*time.Duration{"total": &s.total, "setup": &s.setup, "fork": &s.fork, "place": &s.place, "wait": &s.wait, "record": &s.record}
		seen := 0
		for f := range strings.FieldsSeq(line) {
			k, v, ok := strings.Cut(f, "=")
			d, want := fields[k]
			if !ok || !want {
				continue
			}
			x, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("agentd's log: %s in %q: %w", k, line, err)
			}
			*d = x
			seen++
		}
		if seen != len(fields) {
			return nil, fmt.Errorf("agentd's log: a process start line without every step: %q", line)
		}
		out = append(out, s)
	}
	return out, nil
}

func summarizeStarts(ls []startLine) wholeStart {
	col := func(f func(startLine) time.Duration) dist {
		xs := make([]float64, len(ls))
		for i, l := range ls {
			xs[i] = f(l).Seconds()
		}
		return newDist(xs)
	}
	return wholeStart{
		Total:  col(func(l startLine) time.Duration { return l.total }),
		Setup:  col(func(l startLine) time.Duration { return l.setup }),
		Fork:   col(func(l startLine) time.Duration { return l.fork }),
		Place:  col(func(l startLine) time.Duration { return l.place }),
		Wait:   col(func(l startLine) time.Duration { return l.wait }),
		Record: col(func(l startLine) time.Duration { return l.record }),
	}
}

// wholeStarts scales the app from 1 process to 2 and back n times, so
// that each scale-up starts one process alone (a batch would count its
// siblings' starts in each one's wait), and reads their whole starts
// from agentd's log.
func (sb *storeBench) wholeStarts(n int) (*wholeStart, error) {
	load := loadavg()
	from := len(sb.ag.Log())
	for i := range n {
		for _, f := range []string{"web=2", "web=1"} {
			if r := sb.ag.Hctl(opTimeout, opTimeoutValue, "scale", "store", f); r.Code != 0 {
				return nil, fmt.Errorf("scale %d of %d (%s): %s", i+1, n, f, r)
			}
		}
	}
	ls, err := parseStartLines(sb.ag.Log()[from:], "store")
	if err != nil {
		return nil, err
	}
	if len(ls) != n {
		return nil, fmt.Errorf("agentd logged %d process starts for %d scale-ups", len(ls), n)
	}
	ws := summarizeStarts(ls)
	ws.Load = load
	return &ws, nil
}
