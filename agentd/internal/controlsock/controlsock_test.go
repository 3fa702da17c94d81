package controlsock

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudflare/tableflip"
)

// TestControlSocketFromSystemdOutlivesAgentd: the control socket's file
// belongs to agentd.socket under systemd. When agentd stops (systemctl stop
// or restart, no upgrade), the file must still be there, or hctl finds
// nothing to connect to ("connect: no such file or directory") although
// systemd still listens and would start the next agentd. tableflip unlinks
// the path of every unix *listener* it holds when stopped without an
// upgrade; the control socket must not be held as one.
func TestControlSocketFromSystemdOutlivesAgentd(t *testing.T) {
	// tableflip allows one Upgrader per process, ever: each run of this
	// test (go test -count=N) gets a process of its own, the test binary
	// run again for this test alone.
	if os.Getenv(childEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestControlSocketFromSystemdOutlivesAgentd$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestControlSocketFromSystemdOutlivesAgentd") {
			t.Fatalf("the test in a process of its own: %v\n%s", err, out)
		}
		return
	}
	path := filepath.Join(t.TempDir(), "agentd.sock")
	// What systemd does for agentd.socket: bind, listen, pass the fd.
	sysd, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	sysd.(*net.UnixListener).SetUnlinkOnClose(false)
	passed, err := sysd.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sysd.Close()

	// Only one Upgrader per process: this is this process's.
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(upg.Fds, passed, path, "")
	if err != nil {
		t.Fatal(err)
	}
	// It serves: a client connects through the path.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// agentd stops without an upgrade, as on `systemctl stop agentd`.
	ln.Close()
	upg.Stop()
	<-upg.Exit() // tableflip's clean-up has run
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("after agentd stopped, the control socket file of systemd is gone: %v", err)
	}
	// And systemd's socket still takes connections for the next agentd.
	c, err = net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect after agentd stopped: %v", err)
	}
	c.Close()
}

// childEnv marks the process that runs TestControlSocketFromSystemdOutlivesAgentd.
const childEnv = "AGENTD_CONTROLSOCK_TEST_CHILD"

// files is tableflip's Fds as far as Listen uses them.
type files map[string]*os.File

func (fs files) File(key string) (*os.File, error) { return fs[key], nil }
func (fs files) AddFile(key string, f *os.File) error {
	dup, err := net.FileListener(f) // a copy, as tableflip keeps one
	if err != nil {
		return err
	}
	defer dup.Close()
	kept, err := dup.(*net.UnixListener).File()
	fs[key] = kept
	return err
}

// dial checks that something accepts on path.
func dial(t *testing.T, path string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect to %s: %v", path, err)
	}
	c.Close()
}

// TestBoundThenInherited: started by hand, agentd binds the socket itself
// (mode 0660) and registers it for the next agentd; that one, after an
// upgrade, serves on the very same socket and ignores systemd's.
func TestBoundThenInherited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "agentd.sock")
	fs := files{}
	ln, err := Listen(fs, nil, path, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dial(t, path)
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("bound socket %v, %v; want a socket of mode 0660", fi, err)
	}
	if fs[Key] == nil {
		t.Fatal("the bound socket is not registered for an upgrade")
	}
	t.Cleanup(func() { fs[Key].Close() })

	// The next agentd: the registered socket is what it inherits. A socket
	// systemd passed too is closed, not served.
	other, err := net.Listen("unix", filepath.Join(t.TempDir(), "other.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	fromSystemd, err := other.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	next, err := Listen(files{Key: fs[Key]}, fromSystemd, path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.Addr().String() != path {
		t.Errorf("the next agentd serves on %s, want %s", next.Addr(), path)
	}
	if err := fromSystemd.Close(); err == nil {
		t.Error("systemd's socket was left open")
	}
	// Closing the first listener, as the old agentd does when it exits,
	// must leave the path and the socket to the next one.
	ln.Close()
	dial(t, path)
}
