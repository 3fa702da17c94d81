package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// artifacts are what the host builds for the guest.
type artifacts struct {
	deb1, deb2         string // the .deb installed first, and the newer one it is upgraded to
	version1, version2 string
	goapp              string // goapp.tar.gz: goapp and its Procfile
	breakAgentd        string // with -break: an agentd that skips the readiness wait
}

// buildArtifacts runs `make package` twice (the version from git, then
// that version plus "+testvm.upgrade" for the upgrade scenario, amd64
// only) and builds examples/goapp into a release tarball.
func buildArtifacts(ctx context.Context, o *options, dir string) (*artifacts, error) {
	a := &artifacts{}
	var err error
	if a.deb1, a.version1, err = makePackage(ctx, o.repo, dir, ""); err != nil {
		return nil, err
	}
	if a.deb2, a.version2, err = makePackage(ctx, o.repo, dir, a.version1+"+testvm.upgrade"); err != nil {
		return nil, err
	}
	fmt.Printf("   %s\n   %s\n", filepath.Base(a.deb1), filepath.Base(a.deb2))

	rel := filepath.Join(dir, "goapp-release")
	if err := os.MkdirAll(rel, 0o755); err != nil {
		return nil, err
	}
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(rel, "goapp"), "./examples/goapp")
	build.Dir = o.repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./examples/goapp: %v\n%s", err, out)
	}
	procfile, err := os.ReadFile(filepath.Join(o.repo, "examples", "goapp", "Procfile"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(rel, "Procfile"), procfile, 0o644); err != nil {
		return nil, err
	}
	a.goapp = filepath.Join(dir, "goapp.tar.gz")
	if out, err := exec.CommandContext(ctx, "tar", "-C", rel, "-czf", a.goapp, ".").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tar: %v: %s", err, out)
	}
	fmt.Printf("   goapp.tar.gz (Procfile: %s)\n", strings.TrimSpace(string(procfile)))

	if o.breakIt {
		if a.breakAgentd, err = buildBreakAgentd(ctx, o.repo, dir, a.version1); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// makePackage runs `make package` for amd64 and copies the .deb to dir.
// An empty version lets packaging/build.sh take it from git.
func makePackage(ctx context.Context, repo, dir, version string) (deb, ver string, err error) {
	cmd := exec.CommandContext(ctx, "make", "package", "PKG_VERSION="+version)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "ARCHES=amd64")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("make package PKG_VERSION=%s: %v\n%s", version, err, tail(string(out), 20))
	}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "dist/agentd_") && strings.HasSuffix(line, "_amd64.deb") {
			ver = strings.TrimSuffix(strings.TrimPrefix(line, "dist/agentd_"), "-1_amd64.deb")
			deb = filepath.Join(dir, filepath.Base(line))
			b, err := os.ReadFile(filepath.Join(repo, line))
			if err != nil {
				return "", "", err
			}
			return deb, ver, os.WriteFile(deb, b, 0o644)
		}
	}
	return "", "", fmt.Errorf("make package: no amd64 .deb named in its output:\n%s", tail(string(out), 20))
}

// breakNeedle is the readiness wait in agentd's rollout
// (agentd/internal/agent/ops.go). The break build replaces it, through a
// `go build -overlay`, so that a deploy cuts over as soon as the new
// processes are started: the repository is not touched.
const (
	breakFile   = "agentd/internal/agent/ops.go"
	breakNeedle = "if err := o.awaitReady(started); err != nil {"
	breakPatch  = "if err := error(nil); err != nil { // testvm -break: readiness wait skipped"
)

// buildBreakAgentd builds agentd with the readiness wait of a deploy
// skipped.
func buildBreakAgentd(ctx context.Context, repo, dir, version string) (string, error) {
	src, err := os.ReadFile(filepath.Join(repo, breakFile))
	if err != nil {
		return "", err
	}
	if strings.Count(string(src), breakNeedle) != 1 {
		return "", fmt.Errorf("-break: %q is not in %s exactly once: update testvm/build.go", breakNeedle, breakFile)
	}
	patched := filepath.Join(dir, "ops-break.go")
	if err := os.WriteFile(patched, []byte(strings.Replace(string(src), breakNeedle, breakPatch, 1)), 0o644); err != nil {
		return "", err
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(repo, breakFile): patched}})
	if err != nil {
		return "", err
	}
	ovf := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovf, overlay, 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "agentd-break")
	cmd := exec.CommandContext(ctx, "go", "build", "-overlay", ovf, "-trimpath", "-buildmode=pie",
		"-ldflags", "-s -w -X main.version="+version+"+break", "-o", out, "./agentd")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -overlay (break): %v\n%s", err, b)
	}
	fmt.Printf("   agentd-break: %s with the readiness wait skipped\n", breakFile)
	return out, nil
}
