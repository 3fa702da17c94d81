package sockets

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseFDNames(t *testing.T) {
	got, err := ParseFDNames("control:web.http", 3)
	if err != nil || len(got) != 3 || got[0] != "control" || got[1] != "web.http" || got[2] != "unknown" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := ParseFDNames("a:b:c", 2); err == nil {
		t.Fatal("more names than fds accepted")
	}
	if got, _ := ParseFDNames("", 1); got[0] != "unknown" {
		t.Fatalf("no names: %q", got)
	}
}

func FuzzParseFDNames(f *testing.F) {
	for _, s := range []string{"control:web.http", "", ":", "a::b", "x\x00y"} {
		f.Add(s, 2)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		names, err := ParseFDNames(s, n)
		if err != nil {
			return
		}
		if len(names) != n {
			t.Fatalf("%d names for %d fds", len(names), n)
		}
		for _, name := range names {
			if name == "" {
				t.Fatal("empty name")
			}
		}
	})
}

// TestStoreSendsFD plays systemd: it receives the FDSTORE message and the
// socket attached to it, and checks it is the same listening socket.
func TestStoreSendsFD(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	spec, _ := ParseSpec("web=tcp://127.0.0.1:0")
	h, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := Store("app.web", h.File); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 256), make([]byte, 256)
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "FDSTORE=1\nFDNAME=app.web" {
		t.Fatalf("message %q", buf[:n])
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	if len(msgs) != 1 {
		t.Fatalf("%d control messages", len(msgs))
	}
	fds, _ := unix.ParseUnixRights(&msgs[0])
	if len(fds) != 1 {
		t.Fatalf("%d fds", len(fds))
	}
	got := &Held{Spec: spec, File: os.NewFile(uintptr(fds[0]), "stored")}
	defer got.File.Close()
	if got.Bound() != h.Bound() {
		t.Fatalf("stored fd bound to %s, want %s", got.Bound(), h.Bound())
	}
	if _, err := net.Dial("tcp", got.Bound()); err != nil {
		t.Fatal(err)
	}
	if err := Unstore("app.web"); err != nil {
		t.Fatal(err)
	}
	n, _, _, _, _ = unix.Recvmsg(fd, buf, oob, 0)
	if string(buf[:n]) != "FDSTOREREMOVE=1\nFDNAME=app.web" {
		t.Fatalf("message %q", buf[:n])
	}
}
