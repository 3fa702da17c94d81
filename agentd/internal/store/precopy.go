package store

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
)

// A release whose files were rebuilt without changing (a fresh checkout, a
// build that rewrites everything) lists contents the store holds under
// another mtime only. A blob's mtime is its tree's (files are hard links),
// so such a file needs a new inode: a copy, synced. NewUpload starts those
// copies at once, while the missing contents are still being sent, instead
// of leaving them all to Commit: for an 8 MB release with a 9 MB binary
// rebuilt unchanged, the copy was a third of the time from upload to the
// new process.

// copyWorkers copy at once: the disk is shared with the upload itself.
const copyWorkers = 2

// copyJob is an upload's copies in progress.
type copyJob struct {
	wg      sync.WaitGroup
	stopped atomic.Bool
	mu      sync.Mutex
	err     error
}

// startCopies copies each blob of toCopy (hash -> a blob of that content)
// into the upload's directory under its hash, as if it had been sent: build
// then adopts it like received content. The blobs are pinned by the
// upload. Callers hold u.s.mu.
func (u *Upload) startCopies(toCopy map[string]string) {
	if len(toCopy) == 0 {
		return
	}
	next := make(chan string)
	for range min(copyWorkers, len(toCopy)) {
		u.copies.wg.Go(func() {
			for h := range next {
				if u.copies.stopped.Load() {
					continue
				}
				dst := filepath.Join(u.dir, h)
				if err := copyFile(toCopy[h], dst); err != nil {
					u.copies.fail(fmt.Errorf("copying the stored content %s: %w", h, err))
					continue
				}
				u.mu.Lock()
				u.got[h] = dst
				u.mu.Unlock()
			}
		})
	}
	go func() {
		defer close(next)
		for _, h := range slices.Sorted(maps.Keys(toCopy)) {
			next <- h
		}
	}()
}

func (c *copyJob) fail(err error) {
	c.mu.Lock()
	c.err = errors.Join(c.err, err)
	c.mu.Unlock()
}

// wait returns once every copy is done, with their errors.
func (c *copyJob) wait() error {
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// stop skips the copies not begun and waits for the others.
func (c *copyJob) stop() {
	c.stopped.Store(true)
	c.wg.Wait()
}
