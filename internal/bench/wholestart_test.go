package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// startLog is agentd's log (slog's text format) with n "process start"
// lines of app store, the i-th of total ms(i), and lines that are not
// ones to count.
func startLog(n int, ms func(i int) float64) string {
	var b strings.Builder
	b.WriteString(`time=2026-12-05T00:46:09.300Z level=INFO msg="process started" app=store release=v3 process=web.2 pid=4241` + "\n")
	b.WriteString(`time=2026-12-05T00:46:09.301Z level=DEBUG msg="process start" app=other process=web.1 pid=4240 total=90ms setup=1ms fork=1ms place=0s wait=0s record=88ms` + "\n")
	for i := range n {
		d := time.Duration(ms(i) * float64(time.Millisecond))
		fmt.Fprintf(&b, "time=2026-12-05T00:46:09.399Z level=DEBUG msg=\"process start\" app=store process=web.2 pid=%d total=%s setup=489.1µs fork=1.201ms place=0s wait=59µs record=810µs\n", 5000+i, d)
	}
	return b.String()
}

func TestParseStartLines(t *testing.T) {
	ls, err := parseStartLines(startLog(3, func(i int) float64 { return 2 + float64(i) }), "store")
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 3 {
		t.Fatalf("parsed %d lines of app store, want 3 (not other's, not \"process started\")", len(ls))
	}
	want := startLine{total: 3 * time.Millisecond, setup: 489100 * time.Nanosecond, fork: 1201 * time.Microsecond, wait: 59 * time.Microsecond, record: 810 * time.Microsecond}
	if ls[1] != want {
		t.Errorf("line 2: %+v, want %+v", ls[1], want)
	}
	// A line that lacks a step, or has one that is not a duration, is an
	// error, not a zero.
	for _, bad := range []string{
		`level=DEBUG msg="process start" app=store process=web.2 pid=1 total=2ms setup=1ms fork=1ms place=0s wait=0s` + "\n",
		`level=DEBUG msg="process start" app=store process=web.2 pid=1 total=2 setup=1ms fork=1ms place=0s wait=0s record=1ms` + "\n",
	} {
		if _, err := parseStartLines(bad, "store"); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

func TestWholeStartTarget(t *testing.T) {
	judge := func(ms func(i int) float64) (bool, string) {
		ls, err := parseStartLines(startLog(200, ms), "store")
		if err != nil {
			t.Fatal(err)
		}
		ws := summarizeStarts(ls)
		s := &storeResults{WholeStart: &ws}
		for _, tg := range storeTargets(s) {
			if tg.Name == "whole process start (placement + record) ≤ 3 ms median, ≤ 6 ms p99" {
				return tg.Met, tg.Value
			}
		}
		t.Fatal("no whole process start target")
		return false, ""
	}
	// 2.5 ms each, with one slow start in 200 (the 99th percentile is the
	// 198th of 200: 2.5 ms).
	if met, v := judge(func(i int) float64 {
		if i == 7 {
			return 40
		}
		return 2.5
	}); !met || v != "median 2.50 ms, p99 2.50 ms (200 starts)" {
		t.Errorf("2.5 ms with one outlier: met %v (%s), want met", met, v)
	}
	// A median over 3 ms misses.
	if met, v := judge(func(int) float64 { return 3.2 }); met {
		t.Errorf("3.2 ms each: met (%s)", v)
	}
	// A fast median with 3 in 200 over 6 ms misses on the p99.
	if met, v := judge(func(i int) float64 {
		if i%70 == 0 {
			return 7
		}
		return 1
	}); met || v != "median 1.00 ms, p99 7.00 ms (200 starts)" {
		t.Errorf("1 ms with 3 in 200 at 7 ms: met %v (%s), want missed on the p99", met, v)
	}
}

func TestWholeStartReport(t *testing.T) {
	ls, err := parseStartLines(startLog(4, func(i int) float64 { return float64(i + 1) }), "store")
	if err != nil {
		t.Fatal(err)
	}
	ws := summarizeStarts(ls)
	ws.Load = "0.50 0.40 0.30 1/200 1234"
	var b strings.Builder
	reportStore(&b, &storeResults{WholeStart: &ws})
	for _, w := range []string{"4 starts, one per `hctl scale`", "load average 0.50 0.40 0.30", "| **whole start** | 2.50 ms | 4.00 ms | 4.00 ms |", "| record + go-ahead | 810 µs | 810 µs | 810 µs |", "| cgroup placement | not here: agentd places processes in release scopes only when systemd runs it | | |"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, b.String())
		}
	}
}
