package state

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteJSONThen is WriteJSON for a change that must be visible to the next
// agentd before visible runs, but need not be on disk yet: it writes and
// renames the new content, calls visible, and only then fsyncs the file
// and the directory, returning once the content is durable.
//
// For recording the processes agentd just forked (held in the exec shim
// until recorded): a restarted agentd reads the state through the page
// cache, so the record must only be renamed into place before the shim may
// exec the app; a machine crash kills the processes too, and until the
// fsyncs are done it finds the file as it was, or PATH.prev (WriteFile's
// previous generation, fsynced when written), which names no such process.
// The fsync then overlaps the app's own start-up instead of preceding it.
//
// Callers serialize their writes of path (as WriteFile's callers do): the
// next write's PATH.prev must be a durable generation, which it is once
// this returns.
func WriteJSONThen(path string, v any, visible func()) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	renamed := false
	defer func() {
		f.Close()
		if !renamed {
			os.Remove(f.Name())
		}
	}()
	if err = encodeJSON(v, func(b []byte) error { _, err := f.Write(b); return err }); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// os.CreateTemp made it 0600 already: no chmod.
	stale, err := keepPrevious(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		removeStale(stale)
		return fmt.Errorf("write %s: %w", path, err)
	}
	renamed = true
	visible()
	// The generation PREV held goes once the go-ahead is given, not
	// before (keepPrevious), and before the directory's fsync.
	removeStale(stale)
	// Now durable, as WriteFile leaves it: the content, then both renames.
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	return SyncDir(dir)
}
