package steer

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Supported, asked by an unprivileged user, says no and names the
// privileges. As root the test runs a copy of its binary as nobody.
func TestSupportedNeedsPrivilege(t *testing.T) {
	if os.Geteuid() != 0 {
		err := Supported()
		if err == nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "CAP_BPF") {
			t.Fatalf("Supported() as uid %d = %v, want the privileges named", os.Geteuid(), err)
		}
		return
	}
	// nobody must be able to run the binary: go test's own directory is
	// root's alone.
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "steer.test")
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), helperEnv+"=supported")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper as nobody: %v, stderr %q", err, stderr.String())
	}
	t.Logf("Supported() as nobody: %s", out.String())
	if !strings.Contains(out.String(), "needs root") || !strings.Contains(out.String(), "CAP_BPF") || !strings.Contains(out.String(), "CAP_NET_ADMIN") {
		t.Fatalf("Supported() as nobody = %q, want the privileges named", out.String())
	}
}

func TestListenQueuedCookie(t *testing.T) {
	a := listen(t, "127.0.0.1:0")
	addr := addrOf(t, a)
	b := listen(t, addr) // binds only because both have SO_REUSEPORT
	for _, f := range []*os.File{a, b} {
		if on, err := ReusePort(f); err != nil || !on {
			t.Fatalf("ReusePort(%s) = %v, %v; want true", f.Name(), on, err)
		}
	}
	plainL, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plainL.Close()
	plain, err := plainL.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if on, err := ReusePort(plain); err != nil || on {
		t.Fatalf("ReusePort of net.Listen's socket = %v, %v; want false", on, err)
	}
	if _, err := Listen("udp", "127.0.0.1:0"); err == nil {
		t.Fatal("Listen(udp) succeeded")
	}

	// Cookie: stable, the same through another fd of the socket, distinct
	// between sockets of one address.
	ca, cb := cookie(t, a), cookie(t, b)
	if ca == 0 || ca == cb || cookie(t, a) != ca {
		t.Fatalf("cookies A %d (again %d), B %d", ca, cookie(t, a), cb)
	}
	la, err := net.FileListener(a)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	dup, err := la.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	if c := cookie(t, dup); c != ca {
		t.Fatalf("cookie through a dup %d, want %d", c, ca)
	}
	if _, err := Cookie(os.Stdin); err == nil {
		t.Fatal("Cookie of stdin succeeded")
	}

	// Queued: established connections not accepted yet. One socket alone
	// on its address takes every connection.
	q := listen(t, "127.0.0.1:0")
	if n, err := Queued(q); err != nil || n != 0 {
		t.Fatalf("Queued of an idle listener = %d, %v", n, err)
	}
	qaddr := addrOf(t, q)
	for range 5 {
		c, err := net.DialTimeout("tcp4", qaddr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, "5 queued", func() (bool, error) {
		n, err := Queued(q)
		return n == 5, err
	})
	lq, err := net.FileListener(q)
	if err != nil {
		t.Fatal(err)
	}
	defer lq.Close()
	for range 2 {
		c, err := lq.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if n, err := Queued(q); err != nil || n != 3 {
		t.Fatalf("Queued after 2 accepts = %d, %v; want 3", n, err)
	}
}
