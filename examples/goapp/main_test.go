package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const eventTimeout = 20 * time.Second

// runMainEnv turns the test binary into goapp (the os/exec helper-process
// pattern), so the test needs no separate build.
const runMainEnv = "GOAPP_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// started is goapp started the way agentd starts a process: sockets web
// and probe as fds 3 and 4, through an exec shim that sets LISTEN_PID to
// the pid it keeps (sh: LISTEN_PID=$$, then exec), in its own process
// group, with a NOTIFY_SOCKET of its own.
type started struct {
	cmd        *exec.Cmd
	notify     *net.UnixConn
	web, probe string
	stderr     string // file name
	exited     chan struct{}
	waitErr    error
}

func startGoapp(t *testing.T, shim bool, env ...string) *started {
	t.Helper()
	dir := t.TempDir()
	s := &started{exited: make(chan struct{}), stderr: filepath.Join(dir, "stderr")}
	notifyPath := filepath.Join(dir, "notify")
	var err error
	s.notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.notify.Close() })

	var files []*os.File
	for _, addr := range []*string{&s.web, &s.probe} {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.File()
		l.Close() // the app's copy is the only one left
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		*addr = l.Addr().String()
		files = append(files, f)
	}
	stderr, err := os.Create(s.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	if shim {
		cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0"`, self)
	}
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "NOTIFY_SOCKET="+notifyPath,
		"LISTEN_FDS=2", "LISTEN_FDNAMES=web:probe",
		"AGENTD_APP=demo", "AGENTD_RELEASE=v2", "AGENTD_PROCESS=web.1")
	if !shim {
		cmd.Env = append(cmd.Env, "LISTEN_PID=1")
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		if t.Failed() {
			b, _ := os.ReadFile(s.stderr)
			t.Logf("goapp stderr:\n%s", b)
		}
	})
	return s
}

// until reads notify messages until one has the line want, and returns it.
func (s *started) until(t *testing.T, want string) string {
	t.Helper()
	buf := make([]byte, 4096)
	for {
		_ = s.notify.SetReadDeadline(time.Now().Add(eventTimeout))
		n, err := s.notify.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if msg := string(buf[:n]); strings.Contains("\n"+msg+"\n", "\n"+want+"\n") {
			return msg
		}
	}
}

func (s *started) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(eventTimeout):
		t.Fatal("timed out waiting for goapp to exit")
	}
	var ee *exec.ExitError
	if errors.As(s.waitErr, &ee) {
		return ee.ExitCode()
	}
	if s.waitErr != nil {
		t.Fatal(s.waitErr)
	}
	return 0
}

func do(t *testing.T, method, url, body string) string {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %q %v", method, url, resp.Status, b, err)
	}
	return string(b)
}

func TestGoapp(t *testing.T) {
	s := startGoapp(t, true)
	ready := s.until(t, "READY=1")
	for _, want := range []string{"STATUS=serving", "web=" + s.web, "probe=" + s.probe} {
		if !strings.Contains(ready, want) {
			t.Errorf("READY message %q lacks %q", ready, want)
		}
	}
	want := fmt.Sprintf("hello from demo v2 web.1 pid %d\n", s.cmd.Process.Pid)
	if got := do(t, "GET", "http://"+s.web+"/", ""); got != want {
		t.Errorf("GET / = %q, want %q", got, want)
	}
	if got := do(t, "POST", "http://"+s.web+"/", "hello"); got != "5\n" {
		t.Errorf("POST / = %q", got)
	}
	do(t, "GET", "http://"+s.probe+"/healthz", "")
	if got := do(t, "GET", "http://"+s.web+"/slow?ms=1", ""); !strings.HasPrefix(got, "slept") {
		t.Errorf("GET /slow = %q", got)
	}

	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.until(t, "STOPPING=1")
	if code := s.exitCode(t); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0", code)
	}
}

// TestListenPIDMismatch: fds meant for another process are an error that
// says to use exec, not a silent fallback to binding $PORT.
func TestListenPIDMismatch(t *testing.T) {
	s := startGoapp(t, false)
	if code := s.exitCode(t); code != 1 {
		t.Errorf("exit status = %d, want 1", code)
	}
	if b, _ := os.ReadFile(s.stderr); !strings.Contains(string(b), "start the app with exec") {
		t.Errorf("stderr does not explain: %q", b)
	}
}

// TestSlowBadInput: /slow wants a non-negative number of milliseconds.
func TestSlowBadInput(t *testing.T) {
	for _, q := range []string{"", "?ms=x", "?ms=-1"} {
		rec := httptest.NewRecorder()
		handler().ServeHTTP(rec, httptest.NewRequest("GET", "/slow"+q, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("GET /slow%s = %d, want 400", q, rec.Code)
		}
	}
}
