package state

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// PrevSuffix names a state file's previous generation: a1.json.prev.
const PrevSuffix = ".prev"

// Prev is the path of path's previous generation.
func Prev(path string) string { return path + PrevSuffix }

// keepPrevious makes path's current content its previous generation, just
// before a new one is renamed over it. A hard link costs no copy and no
// fsync: the content was fsynced when it was written, and the new content
// always gets a new inode, so an in-place edit of the current file never
// reaches the previous one. It is linked under a temporary name and swapped
// with PREV (or renamed, where there is no PREV yet), so PREV is at every
// instant a whole file.
//
// It returns the file that holds the generation PREV held before ("" for
// none), for the caller to remove once the new content is in place:
// renaming over PREV would free that inode on the way to every process
// start (on ext4 here that cost more than the rest of the renames), and a
// crash before the removal leaves a temporary file CleanTemp removes.
func keepPrevious(path string) (stale string, err error) {
	dir, prev := filepath.Dir(path), Prev(path)
	// A name of our own for the link, without creating and removing a
	// file to get one (os.CreateTemp): that cost two more changes of the
	// directory on the way to every process start. Linking fails on a
	// name that exists, so a clash is tried again under another.
	var tmp string
	for range 10 {
		tmp = filepath.Join(dir, "."+filepath.Base(prev)+".tmp-"+strconv.FormatUint(rand.Uint64(), 36))
		if err = os.Link(path, tmp); !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		// The first generation. A previous one left without a current file
		// is a destroyed app's: it must never be taken for this one's.
		if err := os.Remove(prev); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("remove a stale previous generation: %w", err)
		}
		return "", nil
	}
	if err != nil {
		// A file system without hard links: copy it.
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			return "", fmt.Errorf("keep the previous generation: %w", errors.Join(err, rerr))
		}
		if werr := writeTemp(tmp, b); werr != nil {
			return "", fmt.Errorf("keep the previous generation: %w", errors.Join(err, werr))
		}
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, prev, unix.RENAME_EXCHANGE)
	switch {
	case err == nil:
		return tmp, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		// No PREV yet, or a file system that cannot swap two names.
	default:
		os.Remove(tmp)
		return "", fmt.Errorf("keep the previous generation: %w", err)
	}
	if err := os.Rename(tmp, prev); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("keep the previous generation: %w", err)
	}
	return "", nil
}

// removeStale removes what keepPrevious left to remove. A failure leaves
// a temporary file, which CleanTemp removes at the next start: no reason
// to fail a write that is in place already.
func removeStale(stale string) {
	if stale != "" {
		os.Remove(stale)
	}
}

// writeTemp writes and fsyncs a new file, for a rename that follows.
func writeTemp(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// Remove removes path and its previous generation (an app destroyed), so
// that an app created later under the same name never recovers the old
// one's state. The quarantine is kept.
func Remove(path string) error {
	var errs []error
	// The previous generation first: a crash in between leaves the app's
	// current file, never an old generation alone that Load would revive.
	for _, p := range []string{Prev(path), path} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}
