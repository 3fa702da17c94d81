package loadgen

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFailedPerMark(t *testing.T) {
	ms := time.Millisecond
	r := Result{
		Marks: []Mark{{Label: "deploy 1", At: 100 * ms}, {Label: "deploy 2", At: 200 * ms}, {Label: "end", At: 300 * ms}},
		Failures: []Failure{
			{At: 10 * ms, Took: 5 * ms},    // before the first mark
			{At: 90 * ms, Took: 20 * ms},   // sent before deploy 1, failed in it
			{At: 100 * ms},                 // exactly at deploy 1
			{At: 150 * ms, Took: 60 * ms},  // failed in deploy 2's window
			{At: 250 * ms, Took: 100 * ms}, // failed after the end mark
		},
	}
	per, before := r.FailedPerMark()
	if diff := cmp.Diff([]int64{2, 1, 1}, per); diff != "" || before != 1 {
		t.Errorf("FailedPerMark() = %v, %d; want [2 1 1], 1 (-want +got):\n%s", per, before, diff)
	}
	if per, before := (Result{}).FailedPerMark(); len(per) != 0 || before != 0 {
		t.Errorf("no marks, no failures: %v, %d", per, before)
	}
	if per, before := (Result{Failures: []Failure{{At: ms}}}).FailedPerMark(); len(per) != 0 || before != 1 {
		t.Errorf("no marks, one failure: %v, %d; want [], 1", per, before)
	}
}
