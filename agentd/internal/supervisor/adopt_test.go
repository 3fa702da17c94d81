package supervisor

import (
	"syscall"
	"testing"
	"time"
)

// TestAdoptChecksTheStartTime: a record whose PID now runs another
// process (the same PID, another kernel start time) is refused; the
// process it names is left alone. This is what makes a state file with a
// recycled PID harmless (agent's checkAppState leaves it to Adopt).
func TestAdoptChecksTheStartTime(t *testing.T) {
	p, out := start(t, "polite")
	if _, err := out.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	real, err := StartTime(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	for _, recorded := range []time.Time{real.Add(-time.Hour), real.Add(3 * time.Second), {}} {
		if a, err := Adopt(p.PID(), recorded); err == nil {
			a.Signal(syscall.SIGKILL)
			t.Fatalf("Adopt(pid %d, started %v) took the process started %v", p.PID(), recorded, real)
		}
	}
	if p.Exited() {
		t.Fatal("a refused adoption touched the process")
	}
	a, err := Adopt(p.PID(), real)
	if err != nil {
		t.Fatalf("Adopt with the right start time: %v", err)
	}
	if a.PID() != p.PID() || !a.Adopted() {
		t.Fatalf("adopted %d (adopted=%v), want %d", a.PID(), a.Adopted(), p.PID())
	}
}
