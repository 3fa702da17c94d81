package sockets

import (
	"os"
	"testing"

	"github.com/agentd/agentd/internal/shimbuild"
)

// The shim tests run against both shims: agentd re-executed (here the
// test binary, whose TestMain is the shim) and the C agentd-shim that the
// packages install and agentd prefers. Both must behave the same.

type shimUnderTest struct{ name, path string }

// testShims are the shims to run a test against: "go" (the test binary)
// and "c" (agentd-shim, built once; TestMain removes it).
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
