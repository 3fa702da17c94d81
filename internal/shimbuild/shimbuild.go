// Package shimbuild compiles agentd-shim, agentd's exec shim in C
// (sockets/cmd/agentd-shim/agentd-shim.c), for the tests, the harness and
// the benchmark, with the flags `make build` and packaging/build.sh use.
// agentd uses the agentd-shim it finds beside its own binary.
package shimbuild

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// Source is the shim's C source, relative to the repository root.
const Source = "sockets/cmd/agentd-shim/agentd-shim.c"

// Name is the binary's name, which agentd looks for beside itself
// (sockets.ShimBinaryName).
const Name = "agentd-shim"

// CFlags are the compiler flags: freestanding and static (no libc, no
// dynamic loader, no shared library to map at every process start: see the
// source's header comment for why), no stack protector (its canary lives in
// TLS, which nothing sets up), no unwind tables, an executable with one
// loadable segment (fewer pages to fault in), optimised, stripped. The
// same for gcc and clang.
var CFlags = []string{"-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector",
	"-fno-asynchronous-unwind-tables", "-Wl,-z,noseparate-code", "-s", "-fno-ident",
	"-Wall", "-Wextra", "-Werror"}

// root is the repository root (the directory with go.mod).
func root() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("shimbuild: cannot locate the repository root")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles agentd-shim into dir and returns its path. The compiler
// is $CC, else gcc.
func Build(dir string) (string, error) {
	r, err := root()
	if err != nil {
		return "", err
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	out := filepath.Join(dir, Name)
	args := append(append([]string(nil), CFlags...), "-o", out, filepath.Join(r, Source))
	cmd := exec.Command(cc, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s with %s (a C compiler and the kernel headers, Debian's gcc and linux-libc-dev, are needed): %v\n%s", Name, cc, err, b)
	}
	return out, nil
}

var cached struct {
	once      sync.Once
	dir, path string
	err       error
}

// Cached builds agentd-shim once per process, into a temporary directory
// that RemoveCached deletes (call it from TestMain after m.Run): for the
// tests of several packages that run their shim tests against it.
func Cached() (string, error) {
	cached.once.Do(func() {
		if cached.dir, cached.err = os.MkdirTemp("", "agentd-shim-"); cached.err == nil {
			cached.path, cached.err = Build(cached.dir)
		}
	})
	return cached.path, cached.err
}

// RemoveCached removes what Cached built.
func RemoveCached() {
	if cached.dir != "" {
		os.RemoveAll(cached.dir)
	}
}

// Shim is one exec shim that tests of the shim's behaviour run against.
type Shim struct{ Name, Path string }

// Both are the shims such a test runs against, which must behave the
// same: "go", the running binary (a test binary whose TestMain acts as
// agentd re-executed), and "c", agentd-shim, built once (Cached).
func Both() ([]Shim, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c, err := Cached()
	if err != nil {
		return nil, err
	}
	return []Shim{{"go", exe}, {"c", c}}, nil
}
