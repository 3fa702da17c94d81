package agent

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/sockets"
)

func TestCheckSecurity(t *testing.T) {
	var st appState
	err := checkSecurity(api.AppCreate{Name: "a"}, &st)
	if os.Geteuid() == 0 {
		if err == nil || !strings.Contains(err.Error(), "app a would run as root") {
			t.Errorf("no user, agentd root: %v", err)
		}
		var ae *Error
		if err := checkSecurity(api.AppCreate{Name: "a", User: "root"}, &st); !errors.As(err, &ae) || ae.Reason != api.ReasonUserIsRoot || strings.Contains(err.Error(), "--") {
			t.Errorf("user root: %v (the core's words name no hctl flag; hctl adds them by Reason)", err)
		}
	} else if err != nil {
		t.Errorf("no user, agentd not root: %v", err)
	}
	st = appState{}
	req := api.AppCreate{Name: "a", AllowRoot: true, Limits: []string{"nofile=4096", "AS=1G:2G"}, ReleaseTimeout: api.Duration(time.Minute)}
	if err := checkSecurity(req, &st); err != nil {
		t.Fatal(err)
	}
	if !st.AllowRoot || strings.Join(st.Limits, " ") != "nofile=4096:4096 as=1073741824:2147483648" || st.ReleaseTimeout != duration(time.Minute) {
		t.Errorf("recorded %+v", st)
	}
	for _, bad := range []api.AppCreate{
		{Name: "a", AllowRoot: true, Limits: []string{"bogus=1"}},
		{Name: "a", AllowRoot: true, ReleaseTimeout: -1},
		{Name: "a", AllowRoot: true, ReleaseTimeout: api.Duration(48 * time.Hour)},
	} {
		if err := checkSecurity(bad, &appState{}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "512M": 512 << 20, "1G": 1 << 30, "1GiB": 1 << 30, "2k": 2048, "3TB": 3 << 40} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "1X", "G", "99999999999T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// TestCutLog cuts a log file while a writer appends to it, on the test's
// temporary directory and on /dev/shm (tmpfs: no COLLAPSE_RANGE, the
// fallback).
func TestCutLog(t *testing.T) {
	dirs := []string{t.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "logcap-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			dirs = append(dirs, d)
		}
	}
	for _, dir := range dirs {
		path := filepath.Join(dir, "v1.web.1.log")
		w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		line := []byte(strings.Repeat("a", 63) + "\n")
		for range (4 << 20) / len(line) {
			w.Write(line)
		}
		w.Write([]byte("the last line\n"))
		n, err := cutLog(path, 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		w.Write([]byte("after the cut\n"))
		w.Close()
		b, _ := os.ReadFile(path)
		t.Logf("%s: cut %d bytes, %d left", dir, n, len(b))
		if n < 3<<20-8192 || len(b) > 1<<20+8192 || len(b) < 1<<20-8192 {
			t.Errorf("%s: cut %d, %d left; want about 3 MiB cut and 1 MiB left", dir, n, len(b))
		}
		if !bytes.HasSuffix(b, []byte("the last line\nafter the cut\n")) {
			t.Errorf("%s: the tail is not the newest output: %q", dir, b[max(0, len(b)-40):])
		}
	}
}

// TestRearm: a listening socket shut down through a copy of its fd stops
// listening and, for a port the kernel chose, loses its port; rearm makes
// it listen again on the same address.
func TestRearm(t *testing.T) {
	spec, _ := sockets.ParseSpec("web=tcp://127.0.0.1:0")
	h, err := sockets.Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	bound := h.Bound()
	dup, err := unix.Dup(sockets.Fd(h.File))
	if err != nil {
		t.Fatal(err)
	}
	unix.Shutdown(dup, unix.SHUT_RDWR)
	unix.Close(dup)
	if c, err := net.Dial("tcp", bound); err == nil {
		c.Close()
		t.Fatal("the shut-down socket still accepts connections")
	}
	ag := &Agent{log: slog.New(slog.DiscardHandler)}
	a := &app{st: appState{Name: "x", Bound: []string{bound}}, held: []*sockets.Held{h}}
	if got := ag.rearm(a); len(got) != 1 || got[0] != "web" {
		t.Fatalf("rearm: %v, want [web]", got)
	}
	c, err := net.Dial("tcp", bound)
	if err != nil {
		t.Fatalf("after rearm: %v", err)
	}
	c.Close()
	if got := ag.rearm(a); len(got) != 0 {
		t.Errorf("rearm of a listening socket: %v", got)
	}
}

// TestGroupMissing finds a socket held by a child of the process (same
// group) and misses one nobody holds.
func TestGroupMissing(t *testing.T) {
	spec, _ := sockets.ParseSpec("web=tcp://127.0.0.1:0")
	held, err := sockets.Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	other, err := sockets.Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// sh (the group leader) closes fd 3 and leaves it to its child.
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & exec 3<&-; wait")
	cmd.ExtraFiles = []*os.File{held.File}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}()
	ino := func(h *sockets.Held) uint64 {
		var st unix.Stat_t
		unix.Fstat(sockets.Fd(h.File), &st)
		return st.Ino
	}
	want := map[uint64]string{ino(held): "web", ino(other): "other"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing, err := groupMissing(cmd.Process.Pid, want)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) == 1 && missing[0] == "other" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing %v, want [other]", missing)
		}
		time.Sleep(20 * time.Millisecond) // until sh has forked and closed fd 3
	}
}
