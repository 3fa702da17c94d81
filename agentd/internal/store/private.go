package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// PrivateName names the private copy of one release of one app.
func PrivateName(app string, version int) string {
	return app + "-v" + strconv.Itoa(version)
}

// Private returns a writable copy of the tree with this digest, made once
// per name (see PrivateName): for an --allow-root app, which as root could
// write to any blob, and whose writes must reach no other release, not
// even a rollback to the same content (a new release, so a new copy).
// Files are reflinked where the filesystem can (FICLONE: btrfs, XFS),
// otherwise copied; modes are 0644/0755 and mtimes kept. made reports
// whether this call made the copy: its files were open for writing just
// now, and a child forked meanwhile holds them until it execs (the caller
// must let such forks finish before it execs one of them: ETXTBSY).
func (s *Store) Private(digest, name string) (dir string, made bool, err error) {
	if !validDigest(digest) {
		return "", false, fmt.Errorf("%w: digest %q", ErrInvalid, digest)
	}
	if name == "" || name != filepath.Base(name) || name[0] == '.' {
		return "", false, fmt.Errorf("%w: private copy name %q", ErrInvalid, name)
	}
	dst := filepath.Join(s.dir, "private", name)
	if _, err := os.Lstat(dst); err == nil {
		return dst, false, nil
	}
	src := s.Dir(digest)
	if !s.Has(digest) {
		return "", false, fmt.Errorf("private copy of %s: %w", digest, ErrNotFound)
	}
	tmp, err := os.MkdirTemp(s.tmp, "private-")
	if err != nil {
		return "", false, fmt.Errorf("private copy: %w", err)
	}
	defer removeAll(tmp)
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		out := filepath.Join(tmp, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(out, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(t, out)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if err := copyFile(p, out); err != nil {
			return err
		}
		if err := os.Chmod(out, fi.Mode().Perm()|0o200); err != nil {
			return err
		}
		ts := unix.NsecToTimespec(fi.ModTime().UnixNano())
		return unix.UtimesNanoAt(unix.AT_FDCWD, out, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		return "", false, fmt.Errorf("private copy of %s: %w", digest, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", false, fmt.Errorf("private copy: %w", err)
	}
	if err := renameNoReplace(tmp, dst); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", false, fmt.Errorf("private copy: %w", err)
	}
	// Each file was synced by copyFile; this commits the names.
	if err := syncDir(filepath.Join(s.dir, "private")); err != nil {
		return "", false, fmt.Errorf("private copy: %w", err)
	}
	return dst, true, nil
}
