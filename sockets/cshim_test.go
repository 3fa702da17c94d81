package sockets

import (
	"testing"

	"github.com/agentd/agentd/internal/shimbuild"
)

// The shim tests run against both shims: agentd re-executed (here the
// test binary, whose TestMain is the shim) and the C agentd-shim that the
// packages install and agentd prefers. Both must behave the same.

// testShims are the shims to run a test against: "go" (the test binary)
// and "c" (agentd-shim, built once; TestMain removes it).
func testShims(t *testing.T) []shimbuild.Shim {
	t.Helper()
	shims, err := shimbuild.Both()
	if err != nil {
		t.Fatal(err)
	}
	return shims
}
