package sockets

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ShimBinaryName is the small exec shim installed beside agentd.
const ShimBinaryName = "agentd-shim"

// ShimBinary returns the exec shim to use with the agentd at exe: the
// agentd-shim beside it when there is an executable one (cheaper to
// start), else exe itself, which is a shim too (see IsShim).
func ShimBinary(exe string) string {
	p := filepath.Join(filepath.Dir(exe), ShimBinaryName)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil {
		return p
	}
	return exe
}
