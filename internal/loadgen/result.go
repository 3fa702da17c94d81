package loadgen

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Result is the outcome of a run, or of the part of it so far (Snapshot).
//
// Every request counted in Sent was handed to the HTTP client exactly once and,
// once it has finished, is counted in exactly one of OK and Failed: after Stop,
// Sent == OK + Failed. A Snapshot may also see requests still in flight
// (InFlight).
type Result struct {
	Kind Kind
	Sent int64 // requests started
	OK   int64 // 2xx (or a status of Config.Accept) with the full body read
	// Accepted counts the OK responses whose status was one of
	// Config.Accept rather than 2xx; Statuses every complete response by
	// status code.
	Accepted int64
	Statuses map[int]int64
	Failed   int64 // everything else; see ByClass
	// Late counts open-loop sends that were due but skipped because every
	// in-flight slot was busy (the target was too slow for Rate). They were
	// not sent, so they are not in Sent; they are reported so a stall can
	// never look like a clean run with a lower rate. Always 0 in a closed loop.
	Late int64
	// Retried counts requests for which the HTTP transport took a connection
	// more than once, i.e. retried silently after a kept-alive connection was
	// lost. It is expected only for DefaultGet (that is how Go's client hides
	// failures from users); a POST kind with Retried > 0 is a bug in loadgen.
	Retried  int64
	ByClass  map[string]int64 // failed requests per class (see Classes); only non-zero classes
	Errors   []string         // the first maxErrors distinct error texts
	Failures []Failure        // the first maxFailures failures, in completion order
	Marks    []Mark           // markers recorded by Run.Mark, in order
	Elapsed  time.Duration    // from Start until the last request finished (or until now)
	Latency  LatencySummary   // over OK requests
	// Err is set when the run could not start at all (Do with an invalid
	// Config). Such a Result has Sent == 0, which Verify rejects, so a
	// misconfigured check cannot pass as "0 failed".
	Err error
}

// Failure locates one failed request in time, so that failures can be matched
// against the markers (for example "deploy 3 start") around them.
type Failure struct {
	At    time.Duration // when the request was started, since the run started
	Took  time.Duration // how long until it failed
	Class string
}

// Mark is a labelled point in a run with the totals at that moment. The
// difference between two marks' totals is the traffic of the window between
// them.
type Mark struct {
	Label  string
	At     time.Duration // since the run started
	Sent   int64
	OK     int64
	Failed int64
}

// InFlight is the number of requests started but not yet finished.
func (r Result) InFlight() int64 { return r.Sent - r.OK - r.Failed }

// String renders the result on one line, for test failures and `make demo`:
//
//	keepalive-post: 12345 sent, 0 failed in 10s (1234/s) p50=512µs p99=2.1ms max=9.8ms
//
// Failure classes, late sends, silent retries and requests in flight are
// added when non-zero.
func (r Result) String() string {
	if r.Err != nil {
		return fmt.Sprintf("%s: not started: %v", r.Kind, r.Err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d sent, %d failed", r.Kind, r.Sent, r.Failed)
	if r.Failed > 0 {
		var parts []string
		for _, c := range Classes {
			if n := r.ByClass[c]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s=%d", c, n))
			}
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, " "))
	}
	if r.Accepted > 0 {
		var codes []string
		for _, c := range slices.Sorted(maps.Keys(r.Statuses)) {
			codes = append(codes, fmt.Sprintf("%d=%d", c, r.Statuses[c]))
		}
		fmt.Fprintf(&b, ", statuses %s", strings.Join(codes, " "))
	}
	if r.Late > 0 {
		fmt.Fprintf(&b, ", %d late", r.Late)
	}
	if r.Retried > 0 {
		fmt.Fprintf(&b, ", %d silently retried", r.Retried)
	}
	if n := r.InFlight(); n > 0 {
		fmt.Fprintf(&b, ", %d in flight", n)
	}
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Sent) / r.Elapsed.Seconds()
	}
	fmt.Fprintf(&b, " in %s (%.0f/s) p50=%s p99=%s max=%s",
		short(r.Elapsed), rate, short(r.Latency.P50), short(r.Latency.P99), short(r.Latency.Max))
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "; first error: %s", r.Errors[0])
	}
	return b.String()
}

// Verify returns nil only for a run that proves "no request failed": it
// started, sent at least one request, and every request sent finished OK.
// Late sends and silent retries are reported by String but not judged here,
// because the client saw no failure; callers that care check them directly.
func (r Result) Verify() error {
	switch {
	case r.Err != nil:
		return fmt.Errorf("loadgen %s: %w", r.Kind, r.Err)
	case r.Sent == 0:
		return fmt.Errorf("loadgen %s: no request was sent, so nothing was proven", r.Kind)
	case r.Failed > 0:
		return fmt.Errorf("loadgen %s", r)
	case r.OK != r.Sent:
		return fmt.Errorf("loadgen %s: %d requests still in flight", r, r.InFlight())
	}
	return nil
}

// short rounds d to three significant digits so lines stay readable.
func short(d time.Duration) time.Duration {
	unit := time.Duration(1)
	for d >= 1000*unit {
		unit *= 10
	}
	return d.Round(unit)
}
