package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// bannedDeps are the packages (a trailing '/' bans a whole tree) that must
// never enter hctl's dependency graph: hctl is a small client on every
// operator's machine and in every CI job, so it must not drag in the
// daemon's metrics, D-Bus, systemd's D-Bus API or the upgrader, nor any
// package internal to agentd (its rules reach hctl through the root
// packages grammar, sockets and agentd/api instead).
var bannedDeps = []string{
	"github.com/prometheus/",
	"github.com/godbus/",
	"github.com/coreos/go-systemd/v22/dbus",
	"github.com/cloudflare/tableflip",
	"github.com/agentd/agentd/agentd/internal/",
}

// listDeps is `go list -deps` of pkg: every package it imports, directly
// or not, standard library included. flags go to go list.
func listDeps(t *testing.T, pkg string, flags ...string) []string {
	t.Helper()
	args := append(append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, flags...), pkg)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps %s printed only %q: not a dependency list", pkg, deps)
	}
	return deps
}

// banned returns the entries of deps that bannedDeps forbids.
func banned(deps []string) []string {
	var bad []string
	for _, dep := range deps {
		for _, b := range bannedDeps {
			if dep == b || strings.HasSuffix(b, "/") && strings.HasPrefix(dep, b) {
				bad = append(bad, dep)
			}
		}
	}
	return bad
}

// TestDeps fences hctl's dependency graph, as tailscale's
// cmd/tailscale/deps_test.go does.
func TestDeps(t *testing.T) {
	for _, dep := range banned(listDeps(t, ".")) {
		t.Errorf("hctl depends on %s, which it must not (see bannedDeps)", dep)
	}
}

// TestDepsFenceCatches: the fence is no fence if its patterns match
// nothing. agentd itself depends on every banned tree; each must be
// caught there. (-e: a package of agentd that does not compile at the
// moment still lists its imports.)
func TestDepsFenceCatches(t *testing.T) {
	bad := strings.Join(banned(listDeps(t, "../agentd", "-e")), "\n") + "\n"
	for _, b := range bannedDeps {
		if !strings.Contains(bad, b) {
			t.Errorf("no package of agentd matches the banned %s: the pattern is wrong or agentd changed", b)
		}
	}
}
