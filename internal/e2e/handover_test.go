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
	if files, sent := uploadLine(t, r); r.Code != 0 || files != 2 || sent != "3.0 MB" {
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
	// hctl had no hash of the new file (nor of those written with it, too
	// recently to trust their mtime): agentd read them as staged files,
	// hashed them, and kept the new one.
	if !strings.Contains(e.ag.Log(), `msg="upload: staged files read"`) || !strings.Contains(e.ag.Log(), " kept=1 ") {
		t.Errorf("the file was not handed over on agentd's own socket:\n%s", e.ag.Log())
	}
	if !strings.Contains(r2.Stderr, ", as agentd read them") {
		t.Errorf("hctl does not say agentd hashed the file:\n%s", r2)
	}
	if got := get(t, url); !strings.Contains(got, "release=v2") {
		t.Errorf("after the second deploy the app answers %q", got)
	}
	// Through the relay, the one file still changed is hashed by hctl:
	// the stage falls back as the hand-over does.
	if err := os.WriteFile(filepath.Join(dir, "VERSION"), []byte("3"), 0o644); err != nil {
		t.Fatal(err)
	}
	r3 := hctlVia(t, relay, "deploy", "web", dir)
	if files, sent := uploadLine(t, r3); r3.Code != 0 || files != 1 || sent != "1 B" || strings.Contains(r3.Stderr, "as agentd read them") {
		t.Errorf("a change through the byte relay: sent %d files (%s):\n%s", files, sent, r3)
	}
	if got := get(t, url); !strings.Contains(got, "release=v3") {
		t.Errorf("after the third deploy the app answers %q", got)
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
