package main

import (
	"bufio"
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
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"
)

const eventTimeout = 20 * time.Second

// runMainEnv turns the test binary into wsapp (the os/exec helper-process
// pattern), so the test needs no separate build.
const runMainEnv = "WSAPP_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// started is wsapp started the way agentd starts it: sockets web and probe
// as fds 3 and 4, LISTEN_PID set by an exec shim, its own process group
// and NOTIFY_SOCKET.
type started struct {
	cmd        *exec.Cmd
	notify     *net.UnixConn
	web, probe string
	exited     chan struct{}
	waitErr    error
}

func startWsapp(t *testing.T) *started {
	t.Helper()
	dir := t.TempDir()
	s := &started{exited: make(chan struct{})}
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
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0"`, self)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "NOTIFY_SOCKET="+notifyPath,
		"LISTEN_FDS=2", "LISTEN_FDNAMES=web:probe",
		"AGENTD_APP=demo", "AGENTD_RELEASE=v3", "AGENTD_PROCESS=web.1")
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
			b, _ := os.ReadFile(stderr.Name())
			t.Logf("wsapp stderr:\n%s", b)
		}
	})
	s.until(t, "READY=1")
	return s
}

// until reads notify messages until one has the line want.
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
		t.Fatal("timed out waiting for wsapp to exit")
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

// running fails the test if wsapp has exited.
func (s *started) running(t *testing.T) {
	t.Helper()
	select {
	case <-s.exited:
		t.Fatalf("wsapp exited: %v", s.waitErr)
	default:
	}
}

// dialWS opens a WebSocket to s and checks its hello.
func (s *started) dialWS(t *testing.T) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	// A dialer of our own, to learn the client port (the connection's name
	// in /proc/net/tcp): coder/websocket hides its net.Conn.
	var port int
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			port = conn.LocalAddr().(*net.TCPAddr).Port
		}
		return conn, err
	}}
	defer tr.CloseIdleConnections()
	c, _, err := websocket.Dial(ctx, "ws://"+s.web+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	wsClients[c] = port
	t.Cleanup(func() { c.CloseNow() })
	typ, msg, err := c.Read(ctx)
	want := fmt.Sprintf("hello v3 web.1 %d", s.cmd.Process.Pid)
	if err != nil || typ != websocket.MessageText || string(msg) != want {
		t.Fatalf("hello = %v %q %v, want %q", typ, msg, err, want)
	}
	return c
}

// echo sends msg on c and checks it comes back.
func echo(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %d bytes: %v", len(msg), err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != msg {
		t.Fatalf("echo of %d bytes = %d bytes, %v", len(msg), len(got), err)
	}
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

func TestEndpoints(t *testing.T) {
	s := startWsapp(t)
	want := fmt.Sprintf("hello from demo v3 web.1 pid %d\n", s.cmd.Process.Pid)
	if got := do(t, "GET", "http://"+s.web+"/", ""); got != want {
		t.Errorf("GET / = %q, want %q", got, want)
	}
	if got := do(t, "POST", "http://"+s.web+"/", "hello"); got != "5\n" {
		t.Errorf("POST / = %q", got)
	}
	do(t, "GET", "http://"+s.probe+"/healthz", "")
	c := s.dialWS(t)
	echo(t, c, "one")
	echo(t, c, strings.Repeat("x", 10000))
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := s.exitCode(t); code != 0 {
		t.Errorf("exit status = %d", code)
	}
}

// TestWebSocketOutlivesDrain: after SIGTERM wsapp stops accepting and
// drains its short requests, but an open WebSocket keeps echoing, and
// wsapp exits once its client closes it.
func TestWebSocketOutlivesDrain(t *testing.T) {
	s := startWsapp(t)
	c := s.dialWS(t)
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := s.until(t, "STOPPING=1"); !strings.Contains(msg, "1 websockets open") {
		t.Errorf("STOPPING message %q does not count the WebSocket", msg)
	}
	// Stopped accepting: wsapp held the only copy of the listener.
	if conn, err := net.Dial("tcp", s.web); err == nil {
		conn.Close()
		t.Error("web socket still accepts after the drain started")
	}
	for i := range 20 {
		echo(t, c, "after SIGTERM "+strconv.Itoa(i))
	}
	s.running(t)
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Errorf("close: %v", err)
	}
	if code := s.exitCode(t); code != 0 {
		t.Errorf("exit status after the last WebSocket closed = %d, want 0", code)
	}
}

// TestShutdownFromOutside: what agentd's shedding does, done here by hand
// (pidfd_getfd, shutdown(SHUT_RDWR), close the copy) to one WebSocket's
// server-side fd. That client sees its connection end (no close frame:
// end-of-file); the other WebSocket is untouched; shutting that one down
// too, wsapp exits cleanly.
func TestShutdownFromOutside(t *testing.T) {
	s := startWsapp(t)
	a, b := s.dialWS(t), s.dialWS(t)
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.until(t, "STOPPING=1")
	for _, c := range []*websocket.Conn{a, b} {
		shutdownServerSide(t, s, c)
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		_, _, err := c.Read(ctx)
		cancel()
		if err == nil || websocket.CloseStatus(err) != -1 || !errors.Is(err, io.EOF) {
			t.Errorf("client read after shutdown: %v, want end-of-file without a close frame", err)
		}
		if c == a {
			echo(t, b, "still here")
			s.running(t)
		}
	}
	if code := s.exitCode(t); code != 0 {
		t.Errorf("exit status = %d, want 0", code)
	}
}

// shutdownServerSide finds the fd wsapp holds for c's connection and shuts
// it down from this process, as package agentd/internal/shed does.
func shutdownServerSide(t *testing.T, s *started, c *websocket.Conn) {
	t.Helper()
	ino := serverInode(t, s, c)
	pid := s.cmd.Process.Pid
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if link, _ := os.Readlink(dir + "/" + e.Name()); link != fmt.Sprintf("socket:[%d]", ino) {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(pidfd)
		cp, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			t.Skipf("pidfd_getfd: %v", err)
		}
		defer unix.Close(cp)
		if err := unix.Shutdown(cp, unix.SHUT_RDWR); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no fd of wsapp holds socket %d", ino)
}

// wsClients keeps the client port of each WebSocket dialWS opened: the
// coder/websocket client hides its net.Conn.
var wsClients = map[*websocket.Conn]int{}

// serverInode is the inode of the server side of c, from /proc/net/tcp:
// the connection whose local port is the web socket's and whose remote
// port is c's.
func serverInode(t *testing.T, s *started, c *websocket.Conn) uint64 {
	t.Helper()
	_, webPort, _ := net.SplitHostPort(s.web)
	wp, _ := strconv.Atoi(webPort)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 || fl[3] != "01" { // 01: ESTABLISHED
			continue
		}
		if hexPort(fl[1]) == wp && hexPort(fl[2]) == wsClients[c] {
			ino, err := strconv.ParseUint(fl[9], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return ino
		}
	}
	t.Fatalf("no connection from port %d to %s in /proc/net/tcp", wsClients[c], s.web)
	return 0
}

func hexPort(addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.ParseInt(p, 16, 32)
	return int(n)
}

// TestNoUpgradeWhileDraining: a client that kept a connection alive from
// before the drain and asks for a WebSocket on it gets 503 with
// Connection: close, so it reconnects to the new release.
func TestNoUpgradeWhileDraining(t *testing.T) {
	s := startWsapp(t)
	conn, err := net.Dial("tcp", s.web)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(eventTimeout))
	br := bufio.NewReader(conn)
	get := func(req string) *http.Response {
		t.Helper()
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get("GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("before the drain: %s, close %v", resp.Status, resp.Close)
	}
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.until(t, "STOPPING=1")
	// Within the drain's grace (a second), the kept-alive connection is
	// still served.
	resp := get("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close {
		t.Errorf("upgrade while draining: %s, close %v; want 503 and Connection: close", resp.Status, resp.Close)
	}
	if code := s.exitCode(t); code != 0 {
		t.Errorf("exit status = %d", code)
	}
}
