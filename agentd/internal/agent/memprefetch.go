package agent

import (
	"time"

	"github.com/agentd/agentd/agentd/internal/rollout"
)

// The memory check before a preboot (memest.go) reads the PSS of every
// process of the app, and finding a process group's members scans /proc:
// several ms on the way from the release's tree to its first process. A
// deploy takes that picture while its upload is received instead, when
// agentd mostly waits for the client and the disk.

// memFresh is how old a picture may be when the engine asks for it; an
// older one (a slow upload) is taken again.
const memFresh = 2 * time.Second

// memPrefetch is one memory picture taken in the background.
type memPrefetch struct {
	done chan struct{}
	m    rollout.Memory
	ok   bool
	at   time.Time
	// stale is set when the operation waited for another one: what ran
	// then (its preboot, its drain) changed the picture.
	stale bool
}

// prefetchMemory starts taking the app's memory picture for the preboot
// to come.
func (o *op) prefetchMemory() {
	mp := &memPrefetch{done: make(chan struct{})}
	o.mem = mp
	go func() {
		defer close(mp.done)
		mp.m, mp.ok = o.ag.memoryFor(o.a)
		mp.at = time.Now()
	}()
}

// memory is the memory picture for the engine: the prefetched one when
// it is fresh, else one taken now.
func (o *op) memory() (rollout.Memory, bool) {
	if mp := o.mem; mp != nil {
		o.mem = nil // once: a second rollout of the op (a rollback) runs after the first
		<-mp.done
		o.mu.Lock()
		stale := mp.stale
		o.mu.Unlock()
		if !stale && time.Since(mp.at) <= memFresh {
			return mp.m, mp.ok
		}
	}
	return o.ag.memoryFor(o.a)
}
