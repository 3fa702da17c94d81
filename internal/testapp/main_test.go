package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eventTimeout bounds every wait for an event.
const eventTimeout = 20 * time.Second

// runMainEnv turns the test binary into testapp (the os/exec helper-process
// pattern), so no separate build is needed. fork-child re-executes the
// binary, and the variable is inherited, so its child is testapp too.
const runMainEnv = "TESTAPP_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Exit(run())
	}
	os.Exit(m.Run())
}

// notifySocket is the test's end of NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{path: path, conn: conn}
}

// next returns the next datagram. It closes any fd that came with it:
// systemd-notify sends BARRIER=1 with an fd and blocks until it is closed.
func (n *notifySocket) next(t *testing.T) string {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
	_ = n.conn.SetReadDeadline(time.Now().Add(eventTimeout))
	nb, noob, _, _, err := n.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("waiting for a notify message: %v", err)
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:noob])
	for _, m := range msgs {
		fds, _ := unix.ParseUnixRights(&m)
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	return string(buf[:nb])
}

// until reads messages until one has the line want, and returns the
// messages read before it.
func (n *notifySocket) until(t *testing.T, want string) []string {
	t.Helper()
	var before []string
	for {
		m := n.next(t)
		if hasLine(m, want) {
			return before
		}
		before = append(before, m)
	}
}

func hasLine(msg, line string) bool {
	for l := range strings.SplitSeq(msg, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// app is a testapp process started the way agentd starts one.
type app struct {
	cmd            *exec.Cmd
	notify         *notifySocket
	web, probe     string // addresses
	stdout, stderr string // file names
	exited         chan struct{}
	waitErr        error
}

type appOpts struct {
	env       []string
	noSockets bool // start without LISTEN_* (and without the shim)
	noShim    bool // pass sockets and LISTEN_* but not through the shim
	byHand    bool // no AGENTD_* variables, as when run by hand
}

// startApp starts testapp with a web and a probe socket as fds 3 and 4,
// through the same kind of exec shim agentd uses (sh sets LISTEN_PID=$$
// and execs, so the PID is kept), in its own process group, with
// NOTIFY_SOCKET. Cleanup SIGKILLs the whole group.
func startApp(t *testing.T, o appOpts) *app {
	t.Helper()
	a := &app{notify: newNotifySocket(t), exited: make(chan struct{})}
	dir := t.TempDir()
	a.stdout, a.stderr = filepath.Join(dir, "stdout"), filepath.Join(dir, "stderr")
	// Files, not pipes: a forked child keeps them open, and Wait would wait
	// for it.
	stdout, err := os.Create(a.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(a.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if o.noSockets || o.noShim {
		cmd = exec.Command(self)
	} else {
		cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0"`, self)
	}
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "NOTIFY_SOCKET="+a.notify.path, "TESTX=y")
	if !o.byHand {
		cmd.Env = append(cmd.Env, "AGENTD_APP=demo", "AGENTD_RELEASE=v3", "AGENTD_PROCESS=web.1")
	}
	if !o.noSockets {
		web, webFile := tcpSocket(t)
		probe, probeFile := tcpSocket(t)
		a.web, a.probe = web, probe
		cmd.ExtraFiles = []*os.File{webFile, probeFile}
		cmd.Env = append(cmd.Env, "LISTEN_FDS=2", "LISTEN_FDNAMES=web:probe")
		if o.noShim {
			cmd.Env = append(cmd.Env, "LISTEN_PID=1")
		}
	}
	cmd.Env = append(cmd.Env, o.env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.cmd = cmd
	go func() {
		a.waitErr = cmd.Wait()
		close(a.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-a.exited
		if t.Failed() {
			for _, f := range []string{a.stdout, a.stderr} {
				b, _ := os.ReadFile(f)
				t.Logf("%s:\n%s", filepath.Base(f), b)
			}
		}
	})
	return a
}

// tcpSocket returns a listening socket's address and a file for it, and
// closes the test's listener: the app's copy is then the only one.
func tcpSocket(t *testing.T) (string, *os.File) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return l.Addr().String(), f
}

// exitCode waits for the app to exit and returns its exit status.
func (a *app) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-a.exited:
	case <-time.After(eventTimeout):
		t.Fatal("timed out waiting for testapp to exit")
	}
	var ee *exec.ExitError
	if errors.As(a.waitErr, &ee) {
		return ee.ExitCode()
	}
	if a.waitErr != nil {
		t.Fatal(a.waitErr)
	}
	return 0
}

func get(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %q %v", path, resp.Status, b, err)
	}
	return string(b)
}

func TestContract(t *testing.T) {
	a := startApp(t, appOpts{})
	a.notify.until(t, "READY=1")
	pid := a.cmd.Process.Pid

	for _, addr := range []string{a.web, a.probe} {
		var c contract
		if err := json.Unmarshal([]byte(get(t, addr, "/env")), &c); err != nil {
			t.Fatal(err)
		}
		checks := []struct{ name, got, want string }{
			{"pid", strconv.Itoa(c.Pid), strconv.Itoa(pid)},
			{"pgid", strconv.Itoa(c.Pgid), strconv.Itoa(pid)},
			{"listen_pid", c.ListenPID, strconv.Itoa(pid)},
			{"listen_fds", c.ListenFDs, "2"},
			{"listen_fdnames", c.ListenFDNames, "web:probe"},
			{"notify_socket", c.NotifySocket, a.notify.path},
			{"env AGENTD_RELEASE", c.Env["AGENTD_RELEASE"], "v3"},
			{"env TESTX", c.Env["TESTX"], "y"},
			{"listeners", fmt.Sprint(len(c.Listeners)), "2"},
		}
		for _, ch := range checks {
			if ch.got != ch.want {
				t.Errorf("/env %s = %q, want %q", ch.name, ch.got, ch.want)
			}
		}
		if _, ok := c.Env["HOME"]; ok {
			t.Error("/env reports unrelated variables")
		}
	}
	if got := get(t, a.web, "/"); got != "release=v3 process=web.1\n" {
		t.Errorf("GET / = %q", got)
	}
	resp, err := http.Post("http://"+a.web+"/", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "5\n" {
		t.Errorf("POST / = %s %q", resp.Status, b)
	}

	if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	a.notify.until(t, "STOPPING=1")
	if code := a.exitCode(t); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0", code)
	}
}

// TestListenPIDMismatch: fds whose LISTEN_PID names another process mean
// a broken shim; testapp must say so loudly rather than ignore them.
func TestListenPIDMismatch(t *testing.T) {
	a := startApp(t, appOpts{noShim: true})
	if code := a.exitCode(t); code != exitListenPID {
		t.Fatalf("exit status = %d, want %d", code, exitListenPID)
	}
	if b, _ := os.ReadFile(a.stderr); !strings.Contains(string(b), "LISTEN_PID") {
		t.Errorf("stderr does not explain: %q", b)
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		mode   string
		code   int
		stderr string
	}{
		{"crash-at-boot", exitCrash, "crashing on purpose"},
		{"no-such-mode", exitUsage, "unknown TESTAPP_MODE"},
		{"slow-boot", exitUsage, "TESTAPP_BOOT_DELAY"}, // with a bad delay, below
	} {
		t.Run(tc.mode, func(t *testing.T) {
			a := startApp(t, appOpts{env: []string{"TESTAPP_MODE=" + tc.mode, "TESTAPP_BOOT_DELAY=soon"}})
			if code := a.exitCode(t); code != tc.code {
				t.Fatalf("exit status = %d, want %d", code, tc.code)
			}
			if b, _ := os.ReadFile(a.stderr); !strings.Contains(string(b), tc.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", b, tc.stderr)
			}
		})
	}
}

func TestNeverReady(t *testing.T) {
	a := startApp(t, appOpts{env: []string{"TESTAPP_MODE=never-ready"}})
	// The web socket is served...
	get(t, a.web, "/healthz")
	// ...the probe socket is held open but never accepted on: the kernel
	// completes the connection, and no answer ever comes. Proving a
	// negative needs a bound; 300ms is far more than a local answer takes.
	c, err := net.Dial("tcp", a.probe)
	if err != nil {
		t.Fatalf("probe socket refused (closed instead of held): %v", err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("probe answered: n=%d err=%v", n, err)
	}
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, m := range a.notify.until(t, "STOPPING=1") {
		if hasLine(m, "READY=1") {
			t.Errorf("never-ready sent %q", m)
		}
	}
	if code := a.exitCode(t); code != 0 {
		t.Errorf("exit status = %d", code)
	}
}

func TestIgnoreSigterm(t *testing.T) {
	a := startApp(t, appOpts{env: []string{"TESTAPP_MODE=ignore-sigterm"}})
	a.notify.until(t, "READY=1")
	// An ignored signal is discarded when sent, so once Kill returns it has
	// had all the effect it will have.
	if err := syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	get(t, a.web, "/healthz")
	select {
	case <-a.exited:
		t.Fatal("exited on SIGTERM")
	default:
	}
}

func TestForkChild(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "child.pid")
	a := startApp(t, appOpts{env: []string{"TESTAPP_MODE=fork-child", "TESTAPP_CHILD_PIDFILE=" + pidfile}})
	a.notify.until(t, "READY=1")
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("pidfile not written before READY=1: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(child, 0)
	if err != nil {
		t.Fatalf("child %d: %v", child, err)
	}
	defer unix.Close(pidfd)
	if pgid, err := syscall.Getpgid(child); err != nil || pgid != a.cmd.Process.Pid {
		t.Fatalf("child pgid = %d (%v), want the app's group %d", pgid, err, a.cmd.Process.Pid)
	}

	// SIGTERM to the group: the app drains and exits, the child stays.
	if err := syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := a.exitCode(t); code != 0 {
		t.Errorf("exit status = %d", code)
	}
	if exited(t, pidfd, 0) {
		t.Fatal("child died of SIGTERM")
	}
	// SIGKILL to the group is what removes it.
	if err := syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !exited(t, pidfd, eventTimeout) {
		t.Fatal("child survived SIGKILL of its group")
	}
}

// exited reports whether the process behind pidfd has exited, waiting up
// to timeout for it (pidfd becomes readable on exit).
func exited(t *testing.T, pidfd int, timeout time.Duration) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
}

func TestNotifyChild(t *testing.T) {
	if _, err := exec.LookPath("systemd-notify"); err != nil {
		t.Skip("systemd-notify not installed")
	}
	a := startApp(t, appOpts{env: []string{"TESTAPP_MODE=notify-child"}})
	var ready string
	for {
		ready = a.notify.next(t)
		if hasLine(ready, "READY=1") {
			break
		}
	}
	if !hasLine(ready, "STATUS=ready-from-child") {
		t.Errorf("READY message %q lacks the child's status", ready)
	}
	// Then it waits for its BARRIER=1 fd to be closed (next closes it).
	if m := a.notify.next(t); m != "BARRIER=1" {
		t.Errorf("after READY=1: %q, want BARRIER=1", m)
	}
}

func TestSlowBoot(t *testing.T) {
	const delay = 300 * time.Millisecond
	start := time.Now()
	a := startApp(t, appOpts{env: []string{"TESTAPP_MODE=slow-boot", "TESTAPP_BOOT_DELAY=" + delay.String()}})
	a.notify.until(t, "READY=1")
	if el := time.Since(start); el < delay {
		t.Errorf("READY=1 after %v, before the boot delay %v", el, delay)
	}
	get(t, a.probe, "/healthz")
}

func TestExitAfterReady(t *testing.T) {
	a := startApp(t, appOpts{env: []string{"TESTAPP_MODE=exit-after-ready"}})
	a.notify.until(t, "READY=1")
	if code := a.exitCode(t); code != 1 {
		t.Errorf("exit status = %d, want 1", code)
	}
}

// TestNoSockets: run by hand, without sockets, it listens on its own.
func TestNoSockets(t *testing.T) {
	a := startApp(t, appOpts{noSockets: true, byHand: true})
	a.notify.until(t, "READY=1")
	b, _ := os.ReadFile(a.stderr)
	_, addr, ok := strings.Cut(string(b), "listening on ")
	if !ok {
		t.Fatalf("stderr %q does not say where it listens", b)
	}
	addr = strings.TrimSpace(strings.SplitN(addr, "\n", 2)[0])
	var c contract
	if err := json.Unmarshal([]byte(get(t, addr, "/env")), &c); err != nil {
		t.Fatal(err)
	}
	if c.ListenFDs != "" || len(c.Listeners) != 1 || c.Listeners[0].Name != "port" {
		t.Errorf("/env = %+v", c)
	}
}

// TestWorker: under agentd without sockets (a worker type) it binds
// nothing, is ready, and stops on SIGTERM.
func TestWorker(t *testing.T) {
	a := startApp(t, appOpts{noSockets: true, env: []string{"PORT=1"}})
	a.notify.until(t, "READY=1")
	if b, _ := os.ReadFile(a.stderr); strings.Contains(string(b), "listening on") {
		t.Errorf("a worker listens: %q", b)
	}
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := a.exitCode(t); code != 0 {
		t.Errorf("exit status = %d, want 0", code)
	}
}
