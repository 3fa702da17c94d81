package store

import (
	"errors"
	"fmt"
	"sync"
)

// Each received file is fsynced as soon as it is whole, while the rest of
// the upload is still arriving, instead of all of them at Commit: for 256
// MiB of new files, Commit's fsyncs (each a journal commit as well as the
// data) were 179 ms of the time between the last byte and the new
// process. The data's writeback has begun already (Put's
// sync_file_range); what the early fsync adds is its journal commit, off
// the path.

// syncWorkers bounds the fsyncs in flight for one upload: enough for the
// journal to commit several files at once. The files wait in a queue, not
// in a goroutine each: a tree of 100,000 small files arrives faster than
// it can be synced.
const syncWorkers = 4

// syncJob is an upload's early fsyncs.
type syncJob struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	queue   []string
	workers int
	closed  bool
	done    map[string]bool
	err     error
	// after is called with each file once it is synced (nameBlob).
	after func(p string)
}

// start queues the file at p for an fsync in the background, unless the
// job is closed (the upload ended).
func (j *syncJob) start(p string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return
	}
	if j.done == nil {
		j.done = map[string]bool{}
	}
	j.queue = append(j.queue, p)
	if j.workers < syncWorkers {
		j.workers++
		j.wg.Go(j.work)
	}
}

// work fsyncs queued files until the queue is empty.
func (j *syncJob) work() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for len(j.queue) > 0 {
		p := j.queue[0]
		j.queue = j.queue[1:]
		j.mu.Unlock()
		err := syncFile(p)
		if err == nil && j.after != nil {
			j.after(p)
		}
		j.mu.Lock()
		if err != nil {
			// Never retried: after a failed fsync the kernel may have
			// dropped the pages, and a second fsync can succeed on lost
			// data.
			j.err = errors.Join(j.err, fmt.Errorf("syncing %s: %w", p, err))
			continue
		}
		j.done[p] = true
	}
	j.workers--
}

// wait closes the job, waits for its fsyncs and returns the files synced;
// a failed fsync fails the upload.
func (j *syncJob) wait() (map[string]bool, error) {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.wg.Wait()
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done, j.err
}

// drop closes the job, forgets what is still queued and waits for the
// fsyncs under way: for an upload given up, whose files go.
func (j *syncJob) drop() {
	j.mu.Lock()
	j.closed, j.queue = true, nil
	j.mu.Unlock()
	j.wg.Wait()
}
