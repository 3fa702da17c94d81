// Package pyapp holds the tests of the example Python app, app.py.
package pyapp

import (
	"bufio"
	"bytes"
	"context"
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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// eventTimeout bounds every wait for an event.
const eventTimeout = 20 * time.Second

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// notifySocket is the test's end of NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func newNotifySocket(t *testing.T, dir string) *notifySocket {
	t.Helper()
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{path: path, conn: conn}
}

// until reads datagrams until one has the line want, and returns it.
func (n *notifySocket) until(t *testing.T, want string) string {
	t.Helper()
	buf := make([]byte, 4096)
	for {
		_ = n.conn.SetReadDeadline(time.Now().Add(eventTimeout))
		nb, err := n.conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s on NOTIFY_SOCKET: %v", want, err)
		}
		msg := string(buf[:nb])
		for l := range strings.SplitSeq(msg, "\n") {
			if l == want {
				return msg
			}
		}
	}
}

// proc is a started process, in its own process group, killed with it at
// cleanup.
type proc struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	mu      sync.Mutex
	stderr  bytes.Buffer
}

func start(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if cmd.Stderr == nil {
		cmd.Stderr = &lockedWriter{&p.mu, &p.stderr}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s stderr:\n%s", filepath.Base(cmd.Path), p.stderr.String())
			p.mu.Unlock()
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// exitCode waits for the process to exit and returns its status.
func (p *proc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(eventTimeout):
		t.Fatal("timed out waiting for the app to exit")
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr != nil {
		t.Fatal(p.waitErr)
	}
	return 0
}

// unixClient talks HTTP over the unix socket path.
func unixClient(path string) (*http.Client, *http.Transport) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &http.Client{Transport: tr, Timeout: eventTimeout}, tr
}

func call(t *testing.T, c *http.Client, method, path, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://app"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %q", method, path, resp.Status, b)
	}
	return resp, string(b)
}

// TestSocketActivated runs app.py under systemd-socket-activate, which
// speaks the protocol as systemd does (it binds, waits for the first
// connection, then execs the app with LISTEN_PID right), on two unix
// sockets named web and probe: READY=1 must arrive, both sockets must be
// served, and SIGTERM must drain: a request sent on an open kept-alive
// connection after STOPPING=1 is still answered, with Connection: close.
func TestSocketActivated(t *testing.T) {
	needTools(t, "python3", "systemd-socket-activate")
	dir := t.TempDir()
	notify := newNotifySocket(t, dir)
	web, probe := filepath.Join(dir, "web.sock"), filepath.Join(dir, "probe.sock")

	cmd := exec.Command("systemd-socket-activate",
		"-l", web, "-l", probe, "--fdname=web:probe",
		"-E", "NOTIFY_SOCKET="+notify.path,
		"-E", "AGENTD_APP=demo", "-E", "AGENTD_RELEASE=v7", "-E", "AGENTD_PROCESS=web.1",
		// Long enough that the grace cannot end before the test's request
		// on the open connection; it ends early once that one is closed.
		"-E", "DRAIN_GRACE=30s",
		"python3", "app.py")
	// A pipe of our own rather than StderrPipe: it reads to EOF, which
	// comes once both systemd-socket-activate and the app are gone.
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = w
	p := start(t, cmd)
	w.Close()
	// systemd-socket-activate says when it listens; the app inherits stderr.
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "Listening on "+probe) {
				close(listening)
			}
			p.mu.Lock()
			fmt.Fprintln(&p.stderr, line)
			p.mu.Unlock()
		}
	}()
	select {
	case <-listening:
	case <-p.exited:
		t.Fatal("systemd-socket-activate exited")
	case <-time.After(eventTimeout):
		t.Fatal("systemd-socket-activate did not listen")
	}

	webClient, webTr := unixClient(web)
	defer webTr.CloseIdleConnections()
	// The first connection makes systemd-socket-activate exec the app,
	// which then accepts it.
	call(t, webClient, "GET", "/healthz", "")
	ready := notify.until(t, "READY=1")
	if !strings.Contains(ready, "STATUS=serving web=") || !strings.Contains(ready, "probe=") {
		t.Errorf("READY message %q does not name both sockets", ready)
	}

	pid := p.cmd.Process.Pid
	want := fmt.Sprintf("hello from demo v7 web.1 pid %d\n", pid)
	if _, got := call(t, webClient, "GET", "/", ""); got != want {
		t.Errorf("GET / = %q, want %q (the pid must survive the exec)", got, want)
	}
	if _, got := call(t, webClient, "POST", "/", "hello"); got != "5\n" {
		t.Errorf("POST / = %q", got)
	}
	probeClient, probeTr := unixClient(probe)
	call(t, probeClient, "GET", "/healthz", "")
	probeTr.CloseIdleConnections()

	// Drain. The web client holds one kept-alive connection, now idle.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.until(t, "STOPPING=1")
	resp, got := call(t, webClient, "POST", "/", "after SIGTERM")
	if got != "13\n" || !resp.Close {
		t.Errorf("POST during the drain = %q, Connection: close %v", got, resp.Close)
	}
	if code := p.exitCode(t); code != 0 {
		t.Errorf("exit status after the drain = %d, want 0", code)
	}
}

// TestHandoverLosesNoRequest plays a deploy of app.py as agentd runs it:
// the test holds a TCP socket; a first app process serves it under POST
// load; a second starts on the same socket; the first gets SIGTERM and
// drains. Not one request may fail. Each process gets its fd through an
// exec shim, like agentd's: sh sets LISTEN_PID=$$ and execs python3.
func TestHandoverLosesNoRequest(t *testing.T) {
	needTools(t, "python3")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sock, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	url := "http://" + l.Addr().String() + "/"

	startGen := func(release string) (*proc, *notifySocket) {
		t.Helper()
		notify := newNotifySocket(t, t.TempDir())
		cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec python3 app.py`)
		cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=web",
			"NOTIFY_SOCKET="+notify.path, "AGENTD_RELEASE="+release, "DRAIN_GRACE=300ms")
		cmd.ExtraFiles = []*os.File{sock}
		p := start(t, cmd)
		notify.until(t, "READY=1")
		return p, notify
	}

	old, oldNotify := startGen("v1")

	var ok, failed atomic.Int64
	var errMu sync.Mutex
	var firstErrs []string
	progress := make(chan struct{}, 1) // a tick per 100 answers
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 5 {
		// Four clients on kept-alive connections, one with a connection
		// per request. POST: Go's client retries failed GETs silently.
		tr := &http.Transport{DisableKeepAlives: i == 4}
		client := &http.Client{Transport: tr, Timeout: eventTimeout}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tr.CloseIdleConnections()
			deadline := time.Now().Add(2 * time.Minute) // bounds the load, whatever happens
			for n := 0; time.Now().Before(deadline); n++ {
				select {
				case <-stop:
					return
				default:
				}
				body := strings.Repeat("x", 1+n%300)
				err := post(client, url, body)
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if len(firstErrs) < 10 {
						firstErrs = append(firstErrs, err.Error())
					}
					errMu.Unlock()
					continue
				}
				if ok.Add(1)%100 == 0 {
					select {
					case progress <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	t.Cleanup(stopLoad)
	awaitAnswers := func(n int64, what string) {
		t.Helper()
		target := ok.Load() + n
		for ok.Load() < target {
			select {
			case <-progress:
			case <-time.After(eventTimeout):
				t.Fatalf("load stalled waiting for %s", what)
			}
		}
	}

	awaitAnswers(300, "the first process to serve")
	startGen("v2") // preboot
	if err := syscall.Kill(-old.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	oldNotify.until(t, "STOPPING=1")
	if code := old.exitCode(t); code != 0 {
		t.Errorf("old process exit status = %d, want 0", code)
	}
	awaitAnswers(300, "the second process to serve")
	stopLoad()

	t.Logf("ok=%d failed=%d", ok.Load(), failed.Load())
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the handover; first errors: %q", n, firstErrs)
	}
}

func post(c *http.Client, url, body string) error {
	resp, err := c.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(b) != strconv.Itoa(len(body))+"\n" {
		return fmt.Errorf("%s %q", resp.Status, b)
	}
	return nil
}
