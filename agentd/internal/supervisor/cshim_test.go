package supervisor

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/shimbuild"
	"github.com/agentd/agentd/sockets"
)

// testShims are the shims the hold tests run against: "go" (the test
// binary, as agentd re-executed) and "c" (agentd-shim, what agentd uses
// when installed beside it; built once, TestMain removes it).
func testShims(t *testing.T) []shimbuild.Shim {
	t.Helper()
	shims, err := shimbuild.Both()
	if err != nil {
		t.Fatal(err)
	}
	return shims
}

// heldExe is the binary that held process pid runs, read once the exec
// of the shim is done: its argv then holds sockets.ShimArg (before, the
// forked child still shows the test binary's). Held, it cannot get past
// the shim, so what /proc/PID/exe names then is the shim.
func heldExe(t *testing.T, pid int) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if slices.Contains(strings.Split(string(b), "\x00"), sockets.ShimArg) {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if err != nil {
				t.Fatal(err)
			}
			return exe
		}
	}
	t.Fatalf("process %d never showed the shim's argv", pid)
	return ""
}
