package supervisor

import (
	"testing"
	"time"
)

// ForkFence must not return while a fork that began before it is still
// running: that is the whole of its promise.
func TestForkFenceWaitsForForks(t *testing.T) {
	inFork := make(chan struct{})
	release := make(chan struct{})
	forkDone := make(chan struct{})
	go func() {
		defer close(forkDone)
		Fork(func() error {
			close(inFork)
			<-release
			return nil
		})
	}()
	<-inFork
	fenced := make(chan struct{})
	go func() {
		ForkFence()
		close(fenced)
	}()
	select {
	case <-fenced:
		t.Fatal("ForkFence returned while a fork was in progress")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-fenced
	<-forkDone
}
