package agent

import (
	"runtime/debug"
	"sync"
	"time"
)

// An operation (unpacking an artifact, gzip and tar readers, digests,
// JSON of the state) allocates megabytes that are garbage once it ends.
// Go keeps freed heap for reuse and returns it to the OS only slowly, so
// an idle agentd would hold the peak of its last burst: on a host with
// 400 processes that was most of its RSS (docs/benchmarks.md). Once no
// operation has ended for memoryIdleAfter, agentd collects and returns
// that memory at once: one forced GC per burst, on a heap of a few MiB.
const memoryIdleAfter = 2 * time.Second

type memoryReturn struct {
	mu    sync.Mutex
	timer *time.Timer
}

// opEnded (re)arms the return of memory for when agentd is idle.
func (m *memoryReturn) opEnded() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.timer == nil {
		m.timer = time.AfterFunc(memoryIdleAfter, debug.FreeOSMemory)
		return
	}
	m.timer.Reset(memoryIdleAfter)
}
