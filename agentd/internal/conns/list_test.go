package conns

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

func TestListTCP(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s: %v", network, err)
			}
			defer ln.Close()
			ls := []Listener{{Network: "tcp", Port: ln.Addr().(*net.TCPAddr).Port}}
			me := syscall.Getpgrp()
			server, client := pair(t, ln, 3)
			got, err := List(ls, []int{me})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 {
				t.Fatalf("List = %+v, want the 3 accepted connections", got)
			}
			// Each entry names the server side: its fd in this process is
			// the one the accepted net.Conn holds, its peer the client's
			// local address.
			want := map[int]netip.AddrPort{}
			for i, s := range server {
				want[fdOf(t, s)] = client[i].LocalAddr().(*net.TCPAddr).AddrPort()
			}
			for _, c := range got {
				if c.Group != me || c.PID != os.Getpid() {
					t.Errorf("%+v: want group %d, pid %d", c, me, os.Getpid())
				}
				peer, ok := want[c.FD]
				if !ok {
					t.Errorf("%+v: fd is not an accepted connection's (%v)", c, want)
				}
				if c.Peer != netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port()) {
					t.Errorf("%+v: peer, want %v", c, peer)
				}
				if c.Inode == 0 {
					t.Errorf("%+v: no inode", c)
				}
			}
			n, err := NewCounter(ls).Count([]int{me})
			if err != nil || n[me] != len(got) {
				t.Errorf("Count = %v, %v; List has %d", n, err, len(got))
			}
		})
	}
}

// fdOf is the fd number a net.Conn holds.
func fdOf(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestListUnix(t *testing.T) {
	path := t.TempDir() + "/sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	server, _ := pair(t, ln, 2)
	got, err := List([]Listener{{Network: "unix", Path: path}}, []int{syscall.Getpgrp()})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("List = %+v, want 2", got)
	}
	fds := map[int]bool{fdOf(t, server[0]): true, fdOf(t, server[1]): true}
	for _, c := range got {
		if !fds[c.FD] || c.Peer.IsValid() {
			t.Errorf("%+v: want one of fds %v and no peer", c, fds)
		}
	}
}

// TestListOtherProcess: connections held by another process's group are
// listed with that process's PID and its fd numbers, once each even when
// this process holds them too.
func TestListOtherProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ls := []Listener{{Network: "tcp", Port: ln.Addr().(*net.TCPAddr).Port}}
	server, _ := pair(t, ln, 2)
	var files []*os.File
	for _, s := range server {
		f, err := s.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "CONNS_TEST_HOLDER=1")
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	buf := make([]byte, len("holding\n"))
	if _, err := out.Read(buf); err != nil { // the child has its fds
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	got, err := List(ls, []int{pgid, syscall.Getpgrp()})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("List = %+v, want 2 (each socket once)", got)
	}
	for i, c := range got {
		if c.Group != pgid || c.PID != pgid || c.FD != 3+i {
			t.Errorf("List[%d] = %+v, want group and pid %d, fd %d", i, c, pgid, 3+i)
		}
	}
}

func TestListNothing(t *testing.T) {
	got, err := List([]Listener{{Network: "tcp", Port: 1}}, []int{syscall.Getpgrp()})
	if err != nil || len(got) != 0 {
		t.Errorf("List with no connection = %v, %v", got, err)
	}
	if got, err := List(nil, nil); err != nil || got != nil {
		t.Errorf("List of no group = %v, %v", got, err)
	}
}

// TestFirstSeen: a Counter remembers when it first saw each connection,
// across Count and List, so ByAge puts the older ones first whatever
// their inodes; a connection closed is forgotten.
func TestFirstSeen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctr := NewCounter([]Listener{{Network: "tcp", Port: ln.Addr().(*net.TCPAddr).Port}})
	me := []int{syscall.Getpgrp()}
	old, _ := pair(t, ln, 2)
	if _, err := ctr.Count(me); err != nil {
		t.Fatal(err)
	}
	young, _ := pair(t, ln, 1)
	got, err := ctr.List(me)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("List = %+v", got)
	}
	// Pretend the young one has the smallest inode, as a per-CPU batch
	// can give it: its FirstSeen still puts it last.
	for i := range got {
		if got[i].FD == fdOf(t, young[0]) {
			got[i].Inode = 0
		}
	}
	ByAge(got)
	if got[2].FD != fdOf(t, young[0]) || !got[2].FirstSeen.After(got[0].FirstSeen) || got[0].FirstSeen != got[1].FirstSeen {
		t.Errorf("ByAge = %+v, want the connection seen last at the end", got)
	}
	oldFD := fdOf(t, old[0])
	old[0].Close()
	if _, err := ctr.Count(me); err != nil {
		t.Fatal(err)
	}
	ctr.mu.Lock()
	n := len(ctr.seen)
	ctr.mu.Unlock()
	if n != 2 {
		t.Errorf("after one of 3 closed, the Counter remembers %d first-seen times, want 2 (fd %d forgotten)", n, oldFD)
	}
}
