package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/sockets"
)

// notifyMsg is one datagram agentd sent to "systemd", with the address of
// each socket attached to it.
type notifyMsg struct {
	text  string
	bound []string
}

// fakeSystemd is the receiving end of NOTIFY_SOCKET, as systemd has it.
func fakeSystemd(t *testing.T, path string) <-chan notifyMsg {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	ch := make(chan notifyMsg, 256)
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 4096)
		for {
			n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil {
				close(ch)
				return
			}
			m := notifyMsg{text: string(buf[:n])}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, cm := range msgs {
				fds, _ := unix.ParseUnixRights(&cm)
				for _, f := range fds {
					h := &sockets.Held{File: os.NewFile(uintptr(f), "stored")}
					m.bound = append(m.bound, h.Bound())
					h.File.Close()
				}
			}
			ch <- m
		}
	}()
	t.Cleanup(func() { unix.Close(fd) })
	return ch
}

// expect waits for a message containing want.
func expect(t *testing.T, ch <-chan notifyMsg, want string) notifyMsg {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(m.text, want) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %q from agentd", want)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestUnderSocketActivation runs the real agentd under Debian's
// systemd-socket-activate, the reference peer of the protocol: named
// sockets without close-on-exec, NOTIFY_SOCKET and a watchdog. agentd must
// serve its API on the fd named "control", give the fd named "web.http" to
// app web, keep "ghost.http" for an app created later, park sockets it
// binds itself in the fd store and remove them when their app goes, and
// say READY, STATUS, WATCHDOG and STOPPING.
func TestUnderSocketActivation(t *testing.T) {
	ssa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	notifyPath := filepath.Join(dir, "systemd-notify")
	msgs := fakeSystemd(t, notifyPath)
	control := filepath.Join(dir, "agentd.sock")
	webAddr, ghostAddr := freePort(t), freePort(t)

	cmd := exec.Command(ssa,
		"-l", control, "--fdname=control",
		"-l", webAddr, "--fdname=web.http",
		"-l", ghostAddr, "--fdname=ghost.http",
		"-E", "NOTIFY_SOCKET="+notifyPath, "-E", "WATCHDOG_USEC=2000000",
		bins.Agentd, "--state-dir", filepath.Join(dir, "state"), "--control-socket", control, "--stop-apps-on-exit")
	logf, _ := os.Create(filepath.Join(dir, "agentd.log"))
	r, w, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// It says "Listening on …" once per socket, after binding it.
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(r)
		n := 0
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if strings.HasPrefix(sc.Text(), "Listening on") {
				if n++; n == 3 {
					close(listening)
				}
			}
		}
	}()
	select {
	case <-listening:
	case <-time.After(30 * time.Second):
		t.Fatal("systemd-socket-activate did not listen")
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "agentd.log"))
			t.Logf("agentd log:\n%s", b)
		}
	})
	ag := &harness.Agentd{Bins: bins, Dir: dir, Socket: control}
	e := &env{t: t, ag: ag, dir: dir}

	// systemd-socket-activate starts agentd on the first connection: this
	// status request, queued on the control socket it holds.
	var st api.Status
	e.json(&st, "status")
	if st.Mode != "systemd" || st.PID != cmd.Process.Pid {
		t.Fatalf("status %+v: want mode systemd, pid %d", st, cmd.Process.Pid)
	}
	// systemd-socket-activate, like systemd without NonBlocking=yes,
	// passes blocking sockets. The descriptions are shared with the app
	// processes, whose (Go) accept loops hang a drain on a socket that
	// turns blocking under them: agentd makes every socket non-blocking,
	// the one it keeps for a later app (ghost.http) included.
	if blocking := blockingSockets(t, cmd.Process.Pid); len(blocking) > 0 {
		t.Errorf("agentd holds blocking sockets (fd: flags): %v", blocking)
	}
	ready := expect(t, msgs, "READY=1")
	if !strings.Contains(ready.text, "STATUS=") {
		t.Errorf("READY without STATUS: %q", ready.text)
	}
	expect(t, msgs, "WATCHDOG=1")

	// The app named web gets the fd named web.http: same address, no bind.
	e.mustHctl("apps", "create", "web", "--socket", "http=tcp://"+webAddr, "--readiness", "web=notify", "--allow-root")
	var info api.AppInfo
	e.json(&info, "apps", "info", "web")
	if info.Sockets[0].Bound != webAddr {
		t.Fatalf("web bound %s, want the activated %s", info.Sockets[0].Bound, webAddr)
	}
	e.deploy("web", e.release(""))
	if got := get(t, "http://"+webAddr+"/"); !strings.Contains(got, "release=v1") {
		t.Fatalf("app answers %q", got)
	}
	expect(t, msgs, "STATUS=1 apps, 1 processes; last: web deploy v1 ok")

	// An app whose socket systemd did not pass: agentd binds it and parks
	// it in the fd store.
	e.mustHctl("apps", "create", "other", "--socket", "http=tcp://127.0.0.1:0", "--allow-root")
	e.json(&info, "apps", "info", "other")
	stored := expect(t, msgs, "FDSTORE=1")
	if stored.text != "FDSTORE=1\nFDNAME=other.http" || len(stored.bound) != 1 || stored.bound[0] != info.Sockets[0].Bound {
		t.Fatalf("fd store message %q with sockets %v, want other.http bound to %s", stored.text, stored.bound, info.Sockets[0].Bound)
	}
	e.mustHctl("apps", "destroy", "other", "--confirm", "other")
	if m := expect(t, msgs, "FDSTOREREMOVE=1"); m.text != "FDSTOREREMOVE=1\nFDNAME=other.http" {
		t.Fatalf("fd store removal %q", m.text)
	}

	// ghost.http matched no app at start: kept, and given to app ghost.
	e.mustHctl("apps", "create", "ghost", "--socket", "http=tcp://"+ghostAddr, "--allow-root")
	e.json(&info, "apps", "info", "ghost")
	if info.Sockets[0].Bound != ghostAddr {
		t.Fatalf("ghost bound %s, want the activated %s", info.Sockets[0].Bound, ghostAddr)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	expect(t, msgs, "STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("agentd exit: %v", err)
	}
}

// blockingSockets lists pid's socket fds whose O_NONBLOCK is clear, with
// their flags from /proc/PID/fdinfo.
func blockingSockets(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	n := 0
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		n++
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if err != nil {
					t.Fatalf("fdinfo %s: %q", e.Name(), line)
				}
				if flags&unix.O_NONBLOCK == 0 {
					out = append(out, e.Name()+": "+strings.TrimSpace(v))
				}
			}
		}
	}
	if n < 3 {
		t.Fatalf("agentd (pid %d) holds %d sockets, want at least the 3 activated ones", pid, n)
	}
	return out
}
