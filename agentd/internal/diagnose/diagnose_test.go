package diagnose

import (
	"net"
	"strings"
	"syscall"
	"testing"
)

func TestEpollTargets(t *testing.T) {
	fdinfo := "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n" +
		"tfd:        3 events:       19 data:                3  pos:0 ino:5133 sdev:9\n" +
		"tfd:        7 events:       19 data:                7  pos:0 ino:a sdev:9\n"
	got := epollTargets([]byte(fdinfo))
	if len(got) != 2 || got[0] != 0x5133 || got[1] != 10 {
		t.Errorf("epollTargets = %v, want [20787 10]", got)
	}
}

func TestProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000000000000000000000000000:0050": "[::]:80",
		"0000000000000000FFFF00000100007F:0050": "127.0.0.1:80",
	} {
		got, ok := procAddr(in)
		if !ok || got.String() != want {
			t.Errorf("procAddr(%q) = %v %v, want %s", in, got, ok, want)
		}
	}
}

// TestLookSelf looks at this test's own process group: a listening socket
// it polls through Go's netpoller (epoll) shows as held and polled, one it
// only holds as held, and both as listening.
func TestLookSelf(t *testing.T) {
	polled, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer polled.Close()
	go polled.Accept() // registered with the netpoller
	held, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(held)
	if err := syscall.Bind(held, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(held, 1); err != nil {
		t.Fatal(err)
	}
	// Not File(): its dup would share the listener's file status and
	// make the pending Accept blocking.
	rc, err := polled.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var pIno uint64
	rc.Control(func(fd uintptr) { pIno = ino(t, int(fd)) })
	hIno := ino(t, held)
	s, err := Look(syscall.Getpgrp(), []Socket{{Name: "web", FD: 3, Inode: pIno}})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Held[pIno] || !s.Held[hIno] {
		t.Errorf("held %v, want %d and %d", s.Held, pIno, hIno)
	}
	if !s.Polled[pIno] || s.Polled[hIno] || !s.Epoll {
		t.Errorf("polled %v (epoll %v), want %d only", s.Polled, s.Epoll, pIno)
	}
	own := strings.Join(s.Own, " ")
	if !strings.Contains(own, "127.0.0.1:") || strings.Contains(own, polled.Addr().String()) {
		t.Errorf("own %v: want the held socket, not the passed one (%s)", s.Own, polled.Addr())
	}
}

func ino(t *testing.T, fd int) uint64 {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestJudge(t *testing.T) {
	web := Socket{Name: "web", FD: 3, Inode: 100}
	probe := Socket{Name: "probe", FD: 4, Inode: 200}
	in := Input{Process: "web.1", Type: "web", Passed: []Socket{web, probe}, Probe: &probe}
	held := map[uint64]bool{100: true, 200: true}
	for _, c := range []struct {
		name    string
		in      Input
		s       Seen
		trap    string
		certain bool
		msg     string
	}{
		{"booting: holds, polls nothing", in, Seen{Members: 1, Held: held}, "", false, ""},
		{"serves both", in, Seen{Members: 1, Held: held, Polled: held, Epoll: true}, "", false, ""},
		{"probe unserved but nothing waits on it yet", in,
			Seen{Members: 1, Held: held, Polled: map[uint64]bool{100: true}, Epoll: true}, "", false, ""},
		{"probe unserved, a probe waits", with(in, 1),
			Seen{Members: 1, Held: held, Polled: map[uint64]bool{100: true}, Epoll: true}, ProbeNotAccepted, true,
			"web.1 never accepted on its probe socket, fd 4 (LISTEN_FDNAMES=web:probe): serve every fd from 3 to 3+LISTEN_FDS-1, or make web's readiness notify"},
		{"closed fd 3", in, Seen{Members: 1, Held: map[uint64]bool{200: true}}, SocketClosed, true,
			"web.1 closed its socket web, fd 3 (LISTEN_FDNAMES=web:probe)"},
		{"own port", in, Seen{Members: 1, Held: held, Epoll: true, Own: []string{"127.0.0.1:8080"}}, OwnSocket, true,
			"web.1 listens on 127.0.0.1:8080, a socket it bound itself"},
		{"own port, select(2): not sure", in, Seen{Members: 1, Held: held, Own: []string{"127.0.0.1:8080"}}, "", false, ""},
		{"own port beside fd 3 served", in, Seen{Members: 1, Held: held, Epoll: true, Polled: held, Own: []string{"127.0.0.1:9090"}}, "", false, ""},
		{"a worker's own port", Input{Process: "worker.1", Type: "worker"}, Seen{Members: 1, Epoll: true, Own: []string{"127.0.0.1:9090"}}, "", false, ""},
		{"forked, child bound its own", in, Seen{Members: 2, Held: held, Epoll: true, Own: []string{"127.0.0.1:8080"},
			Forked: &Fork{PID: 12, ListenPID: 11, Comm: "app", ListenComm: "bash"}}, ListenPIDRefused, true,
			"web.1: LISTEN_PID=11 names pid 11 (bash), but the fds went to its child, pid 12 (app), which ignores them and listens on 127.0.0.1:8080 itself"},
		{"forked, child idles: likely only", in, Seen{Members: 2, Held: held,
			Forked: &Fork{PID: 12, ListenPID: 11, Comm: "app", ListenComm: "bash"}}, ListenPIDRefused, false, "which ignores them"},
		{"forked child serves the fds (node does not check)", in, Seen{Members: 2, Held: held, Epoll: true, Polled: held,
			Forked: &Fork{PID: 12, ListenPID: 11}}, "", false, ""},
		{"epoll but not the sockets: likely only", in, Seen{Members: 1, Held: held, Epoll: true, Polled: map[uint64]bool{7: true}}, NotServed, false, ""},
		{"gone", in, Seen{}, "", false, ""},
	} {
		f, ok := Judge(c.in, c.s)
		if ok != (c.trap != "") || f.Trap != c.trap || f.Certain != c.certain || !strings.Contains(f.Msg, c.msg) {
			t.Errorf("%s: got %v %+v, want %q certain=%v %q", c.name, ok, f, c.trap, c.certain, c.msg)
		}
	}
}

func with(in Input, queued int) Input {
	in.ProbeQueued = queued
	return in
}
