package conns

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Unread counts the accepted connections with bytes waiting, and forgets
// one once it is read.
func TestUnread(t *testing.T) {
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
	waitUnread(t, port, me, 2)
	buf := make([]byte, 64)
	if _, err := io.ReadAtLeast(server[0], buf, 1); err != nil {
		t.Fatal(err)
	}
	waitUnread(t, port, me, 1)
	if n, err := Unread([]int{port}, []int{me + 1<<20}); err != nil || n != 0 {
		t.Fatalf("another group: %d unread, %v; want 0", n, err)
	}
}

// waitUnread polls until Unread says want: the bytes written on loopback
// reach the receiving socket a moment later.
func waitUnread(t *testing.T, port, pgid, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := Unread([]int{port}, []int{pgid})
		if err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Unread = %d, want %d", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
