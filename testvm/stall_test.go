package main

import (
	"os"
	"testing"
	"time"
)

func TestStallWatchFindsGapsBetweenHeartbeats(t *testing.T) {
	var w stallWatch
	w.arm()
	t0 := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	beat := func(line string, at time.Duration) (stall, bool) { return w.beat(line, t0.Add(at)) }
	if _, ok := beat("TESTVM-HEARTBEAT 100.00\r\n", 0); ok {
		t.Fatal("the first beat ended a stall")
	}
	if _, ok := beat("TESTVM-HEARTBEAT 101.00\r\n", time.Second); ok {
		t.Fatal("a beat one second after the last ended a stall")
	}
	// The host waits 40 s for the next beat; the guest's clock moved on
	// as far (qemu stopped, its virtual clock did not).
	s, ok := beat("TESTVM-HEARTBEAT 141.02\r\n", 41*time.Second)
	if !ok || s.host != 40*time.Second || s.guest.Round(10*time.Millisecond) != 40020*time.Millisecond {
		t.Fatalf("stall after 40 s without a beat: %v %v", s, ok)
	}
	// A reboot: the uptime starts again, nothing to compare.
	if _, ok := beat("TESTVM-HEARTBEAT 3.50", 90*time.Second); ok {
		t.Fatal("the first beat after a reboot ended a stall")
	}
	if _, ok := beat("garbage TESTVM-HEARTBEAT x", 100*time.Second); ok {
		t.Fatal("a line without an uptime ended a stall")
	}
	// A reboot's shutdown: beats of the old heartbeat are ignored until
	// the new one is started.
	w.reset()
	if _, ok := beat("TESTVM-HEARTBEAT 50.00", 150*time.Second); ok || !w.lastBeat().IsZero() {
		t.Fatal("a beat before arm was taken")
	}
	w.arm()
	longest, n := w.since(t0)
	if n != 1 || longest.host != 40*time.Second {
		t.Fatalf("since: %v, %d; want the 40 s stall, 1", longest, n)
	}
	if got, want := w.summary(), "4 beats, 1 stall(s) of 5s or more, the longest 40.0s (guest clock +40.0s) ending 18:00:41.0"; got != want {
		t.Fatalf("summary: %q, want %q", got, want)
	}
	if _, n := w.since(t0.Add(41 * time.Second)); n != 0 {
		t.Fatalf("since the stall's end: %d stalls, want 0", n)
	}
}

func TestQemuCPUReadsAProcessCPUTime(t *testing.T) {
	// This test's own process, made to use CPU until a clock tick (10 ms)
	// shows.
	deadline := time.Now().Add(10 * time.Second)
	var d time.Duration
	var err error
	for x := 0; d == 0 && err == nil && time.Now().Before(deadline); x++ {
		d, err = qemuCPU(os.Getpid())
	}
	if err != nil || d <= 0 {
		t.Fatalf("qemuCPU(self) = %v, %v", d, err)
	}
	if _, err := qemuCPU(-1); err == nil {
		t.Fatal("qemuCPU of no process: no error")
	}
}
