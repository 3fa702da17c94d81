package conns

import (
	"io"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// Unstarted counts the accepted connections the server never read from:
// with bytes waiting (unread), or with nothing received yet (waiting);
// one read from is the server's own, even with more bytes waiting.
func TestUnstarted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	server, client := pair(t, ln, 3)
	for _, c := range client[:2] {
		if _, err := c.Write([]byte("POST / HTTP/1.1\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	me := unix.Getpgrp()
	waitUnstarted(t, port, me, 2, 1, server[0], server[1])
	buf := make([]byte, 64)
	if _, err := io.ReadAtLeast(server[0], buf, 1); err != nil {
		t.Fatal(err)
	}
	waitUnstarted(t, port, me, 1, 1)
	// More bytes on the connection already read from: still the server's.
	if _, err := client[0].Write([]byte("Host: x\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := client[2].Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	waitUnstarted(t, port, me, 2, 0, server[0], server[2])
	if u, w, err := Unstarted([]int{port}, []int{me + 1<<20}); err != nil || u+w != 0 {
		t.Fatalf("another group: %d unread, %d waiting, %v; want none", u, w, err)
	}
}

// waitUnstarted waits until the bytes written on loopback have reached
// the server side of every conn in arrived (poll(2) says they are
// readable: the event), then asserts what Unstarted counts.
func waitUnstarted(t *testing.T, port, pgid, unread, waiting int, arrived ...net.Conn) {
	t.Helper()
	for _, c := range arrived {
		fd := fdOf(t, c)
		for {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 5000)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n != 1 {
				t.Fatalf("no bytes arrived in 5 s: %v", err)
			}
			break
		}
	}
	u, w, err := Unstarted([]int{port}, []int{pgid})
	if err != nil {
		t.Fatal(err)
	}
	if u != unread || w != waiting {
		t.Fatalf("Unstarted = %d unread, %d waiting; want %d, %d", u, w, unread, waiting)
	}
}
