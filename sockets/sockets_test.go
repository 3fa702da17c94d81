package sockets

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/internal/shimbuild"
)

// TestMain turns the test binary into the shim or into a child app when the
// environment asks, so the shim is tested with real processes.
func TestMain(m *testing.M) {
	if IsShim(os.Args) {
		fmt.Fprintln(os.Stderr, RunShim(os.Args))
		os.Exit(127)
	}
	if os.Getenv("SOCKETS_TEST_CHILD") == "1" {
		childMain()
		return
	}
	code := m.Run()
	shimbuild.RemoveCached()
	os.Exit(code)
}

// childMain reports what the app side of the protocol sees, then serves one
// connection on fd 3 to prove the socket works.
func childMain() {
	ok := os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid())
	fmt.Printf("pid=%d listen_pid_ok=%v fds=%s names=%s\n", os.Getpid(), ok, os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	ln, err := net.FileListener(os.NewFile(ListenFdsStart, "web"))
	if err != nil {
		fmt.Println("filelistener:", err)
		os.Exit(1)
	}
	c, err := ln.Accept()
	if err != nil {
		os.Exit(1)
	}
	fmt.Fprintf(c, "hello from %d\n", os.Getpid())
	c.Close()
	os.Exit(0)
}

func TestParseSpec(t *testing.T) {
	good := []struct {
		in                       string
		typ, name, network, addr string
	}{
		{"web=tcp://127.0.0.1:8080", "web", "web", "tcp", "127.0.0.1:8080"},
		{"http=tcp://127.0.0.1:0", "web", "http", "tcp", "127.0.0.1:0"},
		{"worker/metrics=tcp://:9100", "worker", "metrics", "tcp", ":9100"},
		{"web=tcp6://[::1]:8080", "web", "web", "tcp6", "[::1]:8080"},
		{"web=unix:///run/app.sock", "web", "web", "unix", "/run/app.sock"},
		{"web=unix:///run/app.sock?mode=0660", "web", "web", "unix", "/run/app.sock"},
	}
	for _, g := range good {
		s, err := ParseSpec(g.in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", g.in, err)
			continue
		}
		if s.Type != g.typ || s.Name != g.name || s.Network != g.network || s.Address != g.addr {
			t.Errorf("ParseSpec(%q) = %+v", g.in, s)
		}
	}
	bad := map[string]string{
		"web":                                     "NAME=ADDR",
		"web=http://127.0.0.1:80":                 "want tcp://",
		"web=tcp://127.0.0.1":                     "missing port",
		"web=tcp://127.0.0.1:99999":               "0 to 65535",
		"web=tcp://example.com:80":                "not an IP",
		"web=tcp6://127.0.0.1:80":                 "IPv6",
		"web=unix://relative":                     "absolute",
		"we b=tcp://127.0.0.1:1":                  "name",
		"../x/web=tcp://127.0.0.1:1":              "type",
		"probe=tcp://127.0.0.1:1":                 "probe",
		"web=unix:///a.sock?mode=999":             "octal",
		"web=unix:///a.sock?color=red":            "unknown option",
		"web=tcp://127.0.0.1:1/path":              "HOST:PORT",
		"web=unix:///" + strings.Repeat("a", 200): "107 bytes",
	}
	for in, want := range bad {
		_, err := ParseSpec(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSpec(%q) = %v, want error containing %q", in, err, want)
		}
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"web=tcp://127.0.0.1:8080", "w/x=unix:///a?mode=0600", "a=tcp6://[::1]:0", "=", "/="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSpec(in)
		if err != nil {
			return
		}
		// A valid spec renders to a string that parses to the same spec.
		s2, err := ParseSpec(s.String())
		if err != nil || s2 != s {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", in, s, s.String(), s2, err)
		}
	})
}

func TestListenInUse(t *testing.T) {
	spec, _ := ParseSpec("web=tcp://127.0.0.1:0")
	h, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	spec2, _ := ParseSpec("web=tcp://" + h.Bound())
	if _, err := Listen(spec2); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen on %s: %v, want ErrInUse", h.Bound(), err)
	}
	flags, err := unix.FcntlInt(uintptr(Fd(h.File)), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("held socket is not close-on-exec (flags %d, %v)", flags, err)
	}
}

func TestUnixSocketModeAndStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	spec, err := ParseSpec("web=unix://" + path + "?mode=0600")
	if err != nil {
		t.Fatal(err)
	}
	h, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode of %s: %v %v", path, fi.Mode(), err)
	}
	if _, err := Listen(spec); !errors.Is(err, ErrInUse) {
		t.Fatalf("Listen over a live unix socket: %v, want ErrInUse", err)
	}
	// A stale socket file (nobody listening) is replaced.
	h.File.Close()
	h2, err := Listen(spec)
	if err != nil {
		t.Fatalf("Listen over a stale socket file: %v", err)
	}
	h2.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left %s behind", path)
	}
}

// TestShimSetsListenPID starts a real child through the shim with a real
// socket and checks the child sees LISTEN_PID equal to its own PID, that the
// PID is the one the parent started, and that it accepts on the socket.
func TestShimSetsListenPID(t *testing.T) {
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) { testShimSetsListenPID(t, sh.Path) })
	}
}

func testShimSetsListenPID(t *testing.T, shim string) {
	spec, _ := ParseSpec("web=tcp://127.0.0.1:0")
	h, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(shim, ShimArgv(shim, []string{exe, "-test.run=^$"})[1:]...)
	cmd.Env = append(os.Environ(), "SOCKETS_TEST_CHILD=1", "LISTEN_PID=1")
	cmd.Env = append(cmd.Env, Env([]string{"web"})...)
	cmd.ExtraFiles = []*os.File{h.File}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("pid=%d listen_pid_ok=true fds=1 names=web\n", cmd.Process.Pid)
	if line != want {
		t.Fatalf("child said %q, want %q", line, want)
	}
	c, err := net.Dial("tcp", h.Bound())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != fmt.Sprintf("hello from %d\n", cmd.Process.Pid) {
		t.Fatalf("reply %q, %v", got, err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

// TestTakeFrom takes a listening socket back from a running process that
// holds it under another fd number, as a restarted agentd does.
func TestTakeFrom(t *testing.T) {
	spec, _ := ParseSpec("web=tcp://127.0.0.1:0")
	h, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	bound := h.Bound()
	// A child holds the socket at fd 3 and runs until the test ends.
	cmd := exec.Command("sleep", "60")
	cmd.ExtraFiles = []*os.File{h.File}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	h.File.Close() // only the child holds it now

	got, err := TakeFrom(cmd.Process.Pid, spec, bound)
	if err != nil {
		t.Fatal(err)
	}
	defer got.File.Close()
	if got.Bound() != bound {
		t.Fatalf("took %s, want %s", got.Bound(), bound)
	}
	// It is the very same socket: a connection queues on it and we can
	// accept it here.
	ln, err := net.FileListener(got.File)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", bound)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if _, err := TakeFrom(cmd.Process.Pid, spec, "127.0.0.1:1"); err == nil {
		t.Fatal("TakeFrom found a socket the process does not hold")
	}
}

// TestStaysNonBlocking: nothing agentd does with a held socket may switch
// it to blocking mode, a flag every process holding it shares: an app would
// then block in accept(2) and never notice its listener closing on SIGTERM.
func TestStaysNonBlocking(t *testing.T) {
	spec, _ := ParseSpec("web=tcp://127.0.0.1:0")
	h, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.Bound()
	h.Port()
	if _, err := FromFile(spec, h.File); err != nil {
		t.Fatal(err)
	}
	fl, err := unix.FcntlInt(uintptr(Fd(h.File)), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("held socket flags %#x (%v): O_NONBLOCK was cleared", fl, err)
	}
}
