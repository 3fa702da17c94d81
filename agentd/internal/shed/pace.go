package shed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Result says what Shed did.
type Result struct {
	// Closed counts the targets whose close succeeded, Gone those that
	// were closed already (closeFn's error wrapped ErrGone).
	Closed, Gone int
	// Failed holds every other closeFn error, one per target, in order.
	Failed []error
	// Left is what was not tried: the targets after a close that returned
	// ErrUnsupported (Err is that error), or after ctx was cancelled (Err
	// is ctx's error), or all of them after bad arguments.
	Left []Target
	// Err is why Shed stopped before the end of targets; nil if it did not.
	Err error
	// Start and End are when the first and the last close were tried.
	Start, End time.Time
}

// Shed calls closeFn (Close, outside tests) for each target in order, at
// no more than perSecond calls per second: a token bucket holding one
// token, so there is never a burst, and a slow closeFn makes no later
// burst either. The first close happens at once, the n-th at
// (n-1)/perSecond after it, or later.
//
// It stops early when ctx is done, or when closeFn returns an error
// wrapping ErrUnsupported (every other target would fail the same way: the
// caller falls back to SIGKILL). A perSecond that is not a positive, finite
// number is an error: nothing is closed.
func Shed(ctx context.Context, targets []Target, perSecond float64, closeFn func(Target) error) Result {
	var r Result
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		r.Left, r.Err = targets, fmt.Errorf("shed: rate %v: want a positive number of connections per second", perSecond)
		return r
	}
	interval := time.Duration(float64(time.Second) / perSecond)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var next time.Time
	for i, t := range targets {
		if i > 0 {
			// Pace from when the token was due, not from when the previous
			// close returned, unless that is already past: a close that was
			// late does not earn a burst to catch up.
			next = next.Add(interval)
			if now := time.Now(); next.Before(now) {
				next = now
			}
			timer.Reset(time.Until(next))
			select {
			case <-ctx.Done():
				r.Left, r.Err = targets[i:], ctx.Err()
				return r
			case <-timer.C:
			}
		} else {
			if err := ctx.Err(); err != nil {
				r.Left, r.Err = targets, err
				return r
			}
			next = time.Now()
			r.Start = next
		}
		r.End = time.Now()
		err := closeFn(t)
		switch {
		case err == nil:
			r.Closed++
		case errors.Is(err, ErrGone):
			r.Gone++
		case errors.Is(err, ErrUnsupported):
			r.Left, r.Err = targets[i:], err
			return r
		default:
			r.Failed = append(r.Failed, err)
		}
	}
	return r
}
