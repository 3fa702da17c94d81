// Package state writes agentd's state files so that a crash at any instant
// leaves either the old or the new content, never a torn file: write a
// temporary file in the same directory, fsync it, rename it over the old
// one, then fsync the directory so the rename itself is durable.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces path with data. The content path had
// before becomes path's previous generation, PATH.prev (see Load).
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if perm != 0o600 { // os.CreateTemp's own mode: no change of the inode to make
		if err = f.Chmod(perm); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	stale, err := keepPrevious(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		removeStale(stale)
		return fmt.Errorf("write %s: %w", path, err)
	}
	removeStale(stale)
	// One fsync makes both renames durable. Should only the second reach
	// the disk, PREV is an older generation: still a good one.
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// WriteJSON atomically replaces path with v as indented JSON.
func WriteJSON(path string, v any) error {
	var werr error
	if err := encodeJSON(v, func(b []byte) error { werr = WriteFile(path, b, 0o600); return nil }); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return werr
}

// ReadJSON reads path into v. A missing file returns an error satisfying
// errors.Is(err, os.ErrNotExist).
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// CleanTemp removes temporary files a crash left behind in dir. It never
// touches generations (.prev) or the quarantine.
func CleanTemp(dir string) error {
	matches, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
