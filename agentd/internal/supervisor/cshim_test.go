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

type shimUnderTest struct{ name, path string }

// testShims are the shims the hold tests run against: "go" (the test
// binary, as agentd re-executed) and "c" (agentd-shim, what agentd uses
// when installed beside it; built once, TestMain removes it).
func testShims(t *testing.T) []shimUnderTest {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := shimbuild.Cached()
	if err != nil {
		t.Fatal(err)
	}
	return []shimUnderTest{{"go", exe}, {"c", c}}
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
