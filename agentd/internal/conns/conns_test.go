package conns

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMain turns the test binary into a helper process when asked: it
// holds the fds it was given (3..) until its stdin closes.
func TestMain(m *testing.M) {
	if os.Getenv("CONNS_TEST_HOLDER") == "1" {
		fmt.Println("holding")
		bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pair accepts n connections from ln, returning the server sides and
// the client sides.
func pair(t *testing.T, ln net.Listener, n int) (server, client []net.Conn) {
	t.Helper()
	for range n {
		c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		client, server = append(client, c), append(server, s)
	}
	return server, client
}

func countOne(t *testing.T, ls []Listener, pgid int) int {
	t.Helper()
	got, err := Count(ls, []int{pgid})
	if err != nil {
		t.Fatal(err)
	}
	n, ok := got[pgid]
	if !ok {
		t.Fatalf("group %d left out: %v", pgid, got)
	}
	return n
}

func TestCountTCP(t *testing.T) {
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
			if n := countOne(t, ls, me); n != 0 {
				t.Fatalf("before any connection: %d", n)
			}
			server, client := pair(t, ln, 3)
			// The client sides are ours too, but on other ports: not counted.
			if n := countOne(t, ls, me); n != 3 {
				t.Fatalf("3 accepted connections, counted %d", n)
			}
			server[0].Close()
			if n := countOne(t, ls, me); n != 2 {
				t.Fatalf("after closing one: %d, want 2", n)
			}
			// Closed by the client only (CLOSE_WAIT): still ours to answer.
			client[1].Close()
			if n := countOne(t, ls, me); n != 2 {
				t.Fatalf("after the client closed one: %d, want 2", n)
			}
			other := []Listener{{Network: "tcp", Port: ls[0].Port + 1}}
			if n := countOne(t, other, me); n != 0 {
				t.Fatalf("another port: %d", n)
			}
		})
	}
}

func TestCountUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ls := []Listener{{Network: "unix", Path: path}}
	me := syscall.Getpgrp()
	server, _ := pair(t, ln, 2)
	if n := countOne(t, ls, me); n != 2 {
		t.Fatalf("2 accepted unix connections, counted %d", n)
	}
	server[1].Close()
	if n := countOne(t, ls, me); n != 1 {
		t.Fatalf("after closing one: %d, want 1", n)
	}
	if n := countOne(t, []Listener{{Network: "unix", Path: path + "x"}}, me); n != 0 {
		t.Fatalf("another path: %d", n)
	}
}

// TestCountGroup: connections held by another process group are counted
// for that group only, and a group that has ended holds nothing.
func TestCountGroup(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ls := []Listener{{Network: "tcp", Port: ln.Addr().(*net.TCPAddr).Port}}
	server, _ := pair(t, ln, 4)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CONNS_TEST_HOLDER=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, s := range server[:3] {
		f, err := s.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
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
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// Only the helper holds the first three now.
	for _, s := range server[:3] {
		s.Close()
	}
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	got, err := Count(ls, []int{cmd.Process.Pid, syscall.Getpgrp()})
	if err != nil {
		t.Fatal(err)
	}
	if got[cmd.Process.Pid] != 3 || got[syscall.Getpgrp()] != 1 {
		t.Fatalf("counts %v: want 3 for the helper's group %d and 1 for ours", got, cmd.Process.Pid)
	}
	stdin.Close()
	cmd.Wait()
	if n := countOne(t, ls, cmd.Process.Pid); n != 0 {
		t.Fatalf("a group that has ended holds %d", n)
	}
}

func TestCountNothing(t *testing.T) {
	got, err := Count(nil, []int{syscall.Getpgrp()})
	if err != nil || got[syscall.Getpgrp()] != 0 {
		t.Fatalf("no listeners: %v %v", got, err)
	}
	if got, err := Count([]Listener{{Network: "tcp", Port: 1}}, nil); err != nil || len(got) != 0 {
		t.Fatalf("no groups: %v %v", got, err)
	}
}

func BenchmarkCount(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ls := []Listener{{Network: "tcp", Port: ln.Addr().(*net.TCPAddr).Port}}
	for range 100 {
		c, _ := net.Dial("tcp4", ln.Addr().String())
		s, _ := ln.Accept()
		defer c.Close()
		defer s.Close()
	}
	me := []int{syscall.Getpgrp()}
	for b.Loop() {
		if _, err := Count(ls, me); err != nil {
			b.Fatal(err)
		}
	}
}

// A Counter keeps the groups' members between counts, but reads their
// sockets every time.
func TestCounterAgain(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := NewCounter([]Listener{{Network: "tcp", Port: ln.Addr().(*net.TCPAddr).Port}})
	me := []int{syscall.Getpgrp()}
	server, _ := pair(t, ln, 2)
	for want := 2; want >= 0; want-- {
		count := c.Count
		if want%2 == 1 {
			count = c.Quick
		}
		got, err := count(me)
		if err != nil || got[me[0]] != want {
			t.Fatalf("count %v %v, want %d", got, err, want)
		}
		if want > 0 {
			server[want-1].Close()
		}
	}
}
