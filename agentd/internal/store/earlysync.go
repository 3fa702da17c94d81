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
// journal to commit several files at once.
const syncWorkers = 4

// syncJob is an upload's early fsyncs.
type syncJob struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	sem    chan struct{}
	closed bool
	done   map[string]bool
	err    error
}

// start fsyncs the file at p in the background, unless the job is closed
// (the upload ended).
func (j *syncJob) start(p string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return
	}
	if j.sem == nil {
		j.sem, j.done = make(chan struct{}, syncWorkers), map[string]bool{}
	}
	j.wg.Go(func() {
		j.sem <- struct{}{}
		err := syncFile(p)
		<-j.sem
		j.mu.Lock()
		defer j.mu.Unlock()
		if err != nil {
			// Never retried: after a failed fsync the kernel may have
			// dropped the pages, and a second fsync can succeed on lost
			// data.
			j.err = errors.Join(j.err, fmt.Errorf("syncing %s: %w", p, err))
			return
		}
		j.done[p] = true
	})
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
