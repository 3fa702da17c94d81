package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/harness"
)

// On agentd's own socket, hctl hands the files agentd lacks over as open
// files (agentd reads them itself); through a socket that carries bytes
// only, as ssh forwards one, the same deploy sends their bytes. Both make
// the same release, and each sends only what agentd lacks.
func TestDeployDirHandsOverFiles(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	e := start(t)
	url := e.createApp("web", "--readiness", "web=notify")
	dir := e.storeRelease("tree")

	relay, stop, err := harness.RelaySocket(t.TempDir(), e.ag.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	r := hctlVia(t, relay, "deploy", "web", dir)
	if files, sent := uploadLine(t, r); r.Code != 0 || files != 2 || sent != "2.0 MB" {
		t.Fatalf("deploy through a byte relay: sent %d files (%s):\n%s", files, sent, r)
	}
	// agentd found no descriptor with the first line, and hctl then sent
	// the bytes.
	if l := e.ag.Log(); !strings.Contains(l, `msg="upload: handed-over files read"`) || !strings.Contains(l, "files=0 bytes=0 ") || strings.Contains(l, "files=2 ") {
		t.Errorf("the relayed deploy did not fall back from handing over files:\n%s", l)
	}
	if got := get(t, url); !strings.Contains(got, "release=v1") {
		t.Errorf("after the relayed deploy the app answers %q", got)
	}

	if err := os.WriteFile(filepath.Join(dir, "VERSION"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, r2 := e.deployR("web", dir)
	if files, sent := uploadLine(t, r2); files != 1 || sent != "1 B" || res.Release != "v2" {
		t.Errorf("one new file on agentd's socket: sent %d files (%s), %+v", files, sent, res)
	}
	if !strings.Contains(e.ag.Log(), `msg="upload: handed-over files read"`) || !strings.Contains(e.ag.Log(), "files=1 bytes=1 ") {
		t.Errorf("the file was not handed over on agentd's own socket:\n%s", e.ag.Log())
	}
	if got := get(t, url); !strings.Contains(got, "release=v2") {
		t.Errorf("after the second deploy the app answers %q", got)
	}
}

// hctlVia runs hctl against the control socket at sock.
func hctlVia(t *testing.T, sock string, args ...string) harness.Result {
	t.Helper()
	cmd := exec.Command(bins.Hctl, args...)
	cmd.Env = append(os.Environ(), "HCTL_SOCKET="+sock)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := harness.Result{Stdout: out.String(), Stderr: errb.String()}
	if err != nil {
		r.Code = cmd.ProcessState.ExitCode()
	}
	return r
}
