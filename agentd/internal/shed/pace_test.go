package shed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

func TestShedStopsOnUnsupported(t *testing.T) {
	ts := []Target{{PID: 1}, {PID: 2}, {PID: 3}, {PID: 4}}
	var tried []int
	r := Shed(context.Background(), ts, 1e6, func(t Target) error {
		tried = append(tried, t.PID)
		switch t.PID {
		case 1:
			return fmt.Errorf("x: %w", ErrGone)
		case 2:
			return errors.New("odd")
		case 3:
			return fmt.Errorf("y: %w", ErrUnsupported)
		}
		return nil
	})
	if !errors.Is(r.Err, ErrUnsupported) || r.Gone != 1 || len(r.Failed) != 1 || len(r.Left) != 2 || r.Left[0].PID != 3 {
		t.Errorf("Shed = %+v", r)
	}
	if len(tried) != 3 {
		t.Errorf("tried %v, want to stop at the unsupported one", tried)
	}
}

func TestShedBadRate(t *testing.T) {
	for _, rate := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		called := false
		r := Shed(context.Background(), []Target{{PID: 1}}, rate, func(Target) error { called = true; return nil })
		if r.Err == nil || called || len(r.Left) != 1 {
			t.Errorf("rate %v: %+v, called %v", rate, r, called)
		}
	}
}

// TestShedCancel: a cancelled context stops the pacing at once, with what
// is left reported.
func TestShedCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ts := make([]Target, 5)
	n := 0
	r := Shed(ctx, ts, 0.001, func(Target) error {
		n++
		cancel() // the next token is 1000 s away: only the cancel ends the wait
		return nil
	})
	if !errors.Is(r.Err, context.Canceled) || n != 1 || r.Closed != 1 || len(r.Left) != 4 {
		t.Errorf("Shed = %+v after %d closes", r, n)
	}
}

// TestShedPace measures the pacing itself: 50 closes at 200/s take about
// 49/200 s, never less.
func TestShedPace(t *testing.T) {
	start := time.Now()
	r := Shed(context.Background(), make([]Target, 50), 200, func(Target) error { return nil })
	took := time.Since(start)
	if r.Closed != 50 || took < 245*time.Millisecond || took > 2*time.Second {
		t.Errorf("Shed = %+v in %v, want 50 closes in about 245ms", r, took)
	}
}
