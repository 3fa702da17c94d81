package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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
)

// asAgentd turns the test binary into agentd itself (main, flags and all)
// when set in its environment: these tests judge the command as a user
// runs it, its exit status and what it prints.
const asAgentd = "AGENTD_MAIN_TEST_AS_AGENTD"

func TestMain(m *testing.M) {
	if os.Getenv(asAgentd) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// agentdCmd is agentd with args, in an environment free of systemd's
// variables (embedded mode).
func agentdCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "LISTEN_") || k == "WATCHDOG_USEC" || k == "INVOCATION_ID" {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, asAgentd+"=1")
	return cmd
}

// dirs are a state directory and a control socket path of the test's own.
func dirs(t *testing.T) (state, control string) {
	d := t.TempDir()
	return filepath.Join(d, "state"), filepath.Join(d, "run", "agentd.sock")
}

// TestFlagsAndExitStatus: agentd's flags, messages and exit statuses, as
// a user or a unit file meets them: 0 for --help and --version, 2 for a
// flag it does not know, 1 with one "agentd: " line for a bad value.
func TestFlagsAndExitStatus(t *testing.T) {
	state, control := dirs(t)
	cases := []struct {
		args         []string
		code         int
		stdout, want string // want: in stderr
	}{
		{[]string{"--version"}, 0, "agentd dev\n", ""},
		{[]string{"--help"}, 0, "", "Usage: agentd [flags]"},
		{[]string{"--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"extra"}, 1, "", "agentd: unexpected argument \"extra\" (see agentd --help)\n"},
		{[]string{"--log-level", "loud"}, 1, "", "agentd: --log-level: "},
		{[]string{"--max-artifact-size", "big"}, 1, "", "agentd: --max-artifact-size: "},
		{[]string{"--max-log-size", "-1"}, 1, "", "agentd: --max-log-size: "},
		{[]string{"--state-dir", state, "--control-socket", control, "--journal", "off", "--release-scopes", "maybe"},
			1, "", "agentd: --release-scopes \"maybe\": want auto or off\n"},
	}
	for _, c := range cases {
		cmd := agentdCmd(t, c.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("agentd %v: %v", c.args, err)
		}
		if code != c.code || stdout.String() != c.stdout || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("agentd %s: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q",
				strings.Join(c.args, " "), code, stdout.String(), stderr.String(), c.code, c.stdout, c.want)
		}
	}
	// The run that failed late had bound the control socket: it removes the
	// file it made, as an agentd started by hand always has.
	if _, err := os.Lstat(control); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind after a failed start: %v", err)
	}
}

// TestServesThenStopsOnSIGTERM: started by hand, agentd says it is ready,
// answers on its control socket, writes its PID file, and on SIGTERM exits
// 0 and removes the socket file it bound.
func TestServesThenStopsOnSIGTERM(t *testing.T) {
	state, control := dirs(t)
	pidFile := filepath.Join(t.TempDir(), "agentd.pid")
	cmd := agentdCmd(t, "--state-dir", state, "--control-socket", control, "--journal", "off", "--pid-file", pidFile)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	ready := make(chan struct{})
	waited := make(chan struct{})
	var waitErr error
	go func() {
		// Copy the log, and say when the ready line has gone by.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), `msg="agentd ready"`) {
				close(ready)
			}
		}
		waitErr = cmd.Wait()
		close(waited)
	}()
	t.Cleanup(func() {
		select {
		case <-waited:
		default: // not reaped yet: the PID is still this agentd's
			cmd.Process.Kill()
			<-waited
		}
	})
	select {
	case <-ready:
	case <-waited:
		t.Fatalf("agentd exited before it was ready: %v\n%s", waitErr, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("agentd not ready after 30 s")
	}

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", control)
	}}}
	resp, err := hc.Get("http://agentd/v1/apps")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/apps: %s", resp.Status)
	}
	hc.CloseIdleConnections()
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("PID file holds %q (%v), want %d", b, err, cmd.Process.Pid)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-waited
	if waitErr != nil {
		t.Fatalf("agentd after SIGTERM: %v\n%s", waitErr, logs.String())
	}
	if !strings.Contains(logs.String(), `msg=stopping signal=terminated`) {
		t.Errorf("no stopping line in the log:\n%s", logs.String())
	}
	if _, err := os.Lstat(control); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind after SIGTERM: %v", err)
	}
}
