package supervisor

import (
	"errors"
	"io/fs"
	"os"
	"testing"
	"time"
)

// TestStartTimeOfSelf: the test binary's own start time, read with plain
// system calls, is a moment of the last minutes (btime is whole seconds,
// ticks 10 ms); a PID that does not exist is fs.ErrNotExist.
func TestStartTimeOfSelf(t *testing.T) {
	st, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); st.After(now.Add(2*time.Second)) || st.Before(now.Add(-10*time.Minute)) {
		t.Errorf("start time %v, now %v", st, now)
	}
	if _, err := StartTime(1 << 30); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("StartTime of no such PID: %v, want fs.ErrNotExist", err)
	}
	if _, err := readProc("/proc/self/stat", make([]byte, 8)); err == nil {
		t.Errorf("a file longer than the buffer was read whole")
	}
}
