package sockets

import (
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// A process under load opens and closes connections all the time: a socket
// listed in its fd table may be closed before agentd copies it. Taking the
// listening socket back must look past such a socket, not give up on the
// process (agentd would then take a socket of another release's process,
// bound at the same address, and route the app's connections to it).
func TestTakeFromWhileFdsChurn(t *testing.T) {
	spec := Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:0"}
	h, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.File.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err == nil {
					unix.Close(fd)
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 300 {
		got, err := TakeFrom(os.Getpid(), spec, h.Bound())
		if err != nil {
			t.Fatalf("take %d: %v", i, err)
		}
		got.File.Close()
	}
}
