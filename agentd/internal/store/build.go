package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
)

// link makes a hard link; a variable so a test can provoke EMLINK (ext4
// caps an inode at 65,000 links) without making 65,000 links.
var link = os.Link

// build makes the tree t, from blobs already in the store and from staged
// files (content hash -> a synced file of this filesystem holding exactly
// that content), and returns its digest. Staged files are adopted as blobs
// (chmod, mtime, link), so a file uploaded once is written once. The blobs
// of the contents in replace are damaged: their staged files take their
// names. The staged files in sealed are sealed already as the first
// file of their content in t needs (Upload.Put does it as each arrives).
// pre, if not nil, is the tree begun while the upload arrived.
//
// kept reports whether every staged file build adopted as a blob is linked
// by the tree in trees/ (none adopted counts): if not, the caller's removal
// of the staged files may leave garbage (gcflag.go).
func (s *Store) build(t *tree, staged map[string]string, replace, sealed map[string]bool, pre *prelink) (digest string, kept bool, err error) {
	digest = t.digest()
	dirs := t.dirs()
	tmp, linked := pre.take()
	if tmp == "" {
		if tmp, err = s.emptyTree(t, dirs); err != nil {
			return "", false, fmt.Errorf("building release: %w", err)
		}
	}
	placed := false
	defer func() {
		if !placed {
			// (Links to blobs, prelinked or made here, go with it.)
			removeAll(tmp)
			s.maybeGarbage()
		}
	}()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Has(digest) && len(replace) == 0 {
		// The same content is here already (a redeploy, a rollback's
		// content uploaded again): nothing to build.
		s.pinTree(digest)
		return digest, true, nil
	}
	// New blobs first, then their names: a name in blobs/ must never point
	// at data a crash could lose, so every staged file is synced already
	// (Upload.Commit; artifact.Unpack syncs what it unpacks) and every
	// copy is synced as it is made.
	adopted := map[string]string{} // blob path -> inode to link there
	used := map[string]bool{}      // staged files already adopted
	for _, n := range t.files {
		bp := s.blobPath(n.hash, n.exec, n.mtimeNs)
		if _, ok := adopted[bp]; ok {
			continue
		}
		if linked[n.path] && !replace[n.hash] {
			// Linked to its blob while the upload arrived (the blob is
			// pinned, so still there): no stat needed.
			continue
		}
		if _, err := os.Lstat(bp); err == nil && !replace[n.hash] {
			continue
		}
		src, ok := staged[n.hash]
		presealed := ok && !used[n.hash] && sealed[n.hash]
		if !ok || used[n.hash] {
			// Same content under another mode or mtime: a new inode.
			if src = s.anyBlob(n.hash); src == "" || replace[n.hash] {
				if src, ok = staged[n.hash]; !ok {
					return "", false, fmt.Errorf("building release: %w: the content of %q (sha256 %s) was never sent", ErrInvalid, n.path, n.hash)
				}
			}
			cp := filepath.Join(tmp, ".blob-"+randomID())
			if err := copyFile(src, cp); err != nil {
				return "", false, fmt.Errorf("building release: %w", err)
			}
			src, presealed = cp, false
		}
		used[n.hash] = true
		if !presealed {
			if err := seal(src, n.exec, n.mtimeNs); err != nil {
				return "", false, fmt.Errorf("building release: %w", err)
			}
		}
		adopted[bp] = src
	}
	for bp, src := range adopted {
		// Most contents are new: their directory is made with one mkdir
		// (MkdirAll would stat first), its parent only when missing.
		if err := os.Mkdir(filepath.Dir(bp), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			if err := os.MkdirAll(filepath.Dir(bp), 0o755); err != nil {
				return "", false, fmt.Errorf("building release: %w", err)
			}
		}
		if err := link(src, bp); errors.Is(err, fs.ErrExist) && replacing(replace, bp) {
			// Take the damaged blob's name (trees built on it keep it).
			tmpName := bp + ".new-" + randomID()
			if err := link(src, tmpName); err != nil {
				return "", false, fmt.Errorf("building release: replacing blob: %w", err)
			}
			if err := os.Rename(tmpName, bp); err != nil {
				os.Remove(tmpName)
				return "", false, fmt.Errorf("building release: replacing blob: %w", err)
			}
		} else if err != nil && !errors.Is(err, fs.ErrExist) {
			return "", false, fmt.Errorf("building release: storing blob: %w", err)
		}
	}
	for _, n := range t.files {
		if linked[n.path] && !replace[n.hash] {
			continue
		}
		bp, dst := s.blobPath(n.hash, n.exec, n.mtimeNs), filepath.Join(tmp, n.path)
		err := link(bp, dst)
		if errors.Is(err, unix.EMLINK) {
			// This blob has all the links the filesystem allows: this
			// tree gets its own copy, as read-only as the blob.
			if err = copyFile(bp, dst); err == nil {
				err = seal(dst, n.exec, n.mtimeNs)
			}
		}
		if err != nil {
			return "", false, fmt.Errorf("building release: %s: %w", n.path, err)
		}
	}
	// Directories read-only, deepest first (a parent's mode never blocks
	// the chmod of a child it lets us reach).
	for _, d := range slices.Backward(dirs) {
		if err := os.Chmod(filepath.Join(tmp, d), 0o555); err != nil {
			return "", false, fmt.Errorf("building release: %w", err)
		}
	}
	// No sync of the whole filesystem (syncfs waits for every other
	// writer's dirty data too): the data is durable already, and the
	// tree's directories and links are metadata, which the journal (ext4,
	// XFS) commits in order, so the fsync of trees/ after the rename makes
	// the rename and everything before it durable.
	trees := filepath.Join(s.dir, "trees")
	if err := renameNoReplace(tmp, s.Dir(digest)); err == nil {
		placed = true
	} else {
		if !s.Has(digest) {
			return "", false, fmt.Errorf("building release: %w", err)
		}
		if len(replace) > 0 {
			// The tree there links a damaged blob: this one takes its
			// place. The old one is set aside, not removed, since
			// processes may still run in it; it goes with this process's
			// scratch directory at the next start.
			if err := os.Rename(s.Dir(digest), filepath.Join(s.tmp, "damaged-"+randomID())); err != nil {
				return "", false, fmt.Errorf("building release: %w", err)
			}
			if err := renameNoReplace(tmp, s.Dir(digest)); err != nil {
				return "", false, fmt.Errorf("building release: %w", err)
			}
			placed = true
		}
		// Else another process of this agentd built it meanwhile: keep
		// theirs.
	}
	if err := syncDir(trees); err != nil {
		return "", false, fmt.Errorf("building release: %w", err)
	}
	s.pinTree(digest)
	return digest, placed, nil
}

// emptyTree makes t's directories and symlinks in a new scratch directory.
func (s *Store) emptyTree(t *tree, dirs []string) (string, error) {
	tmp, err := os.MkdirTemp(s.tmp, "tree-")
	if err != nil {
		return "", err
	}
	for _, d := range dirs[1:] {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			removeAll(tmp)
			return "", err
		}
	}
	for _, n := range t.nodes {
		if n.typ == api.EntrySymlink {
			if err := os.Symlink(n.target, filepath.Join(tmp, n.path)); err != nil {
				removeAll(tmp)
				return "", err
			}
		}
	}
	return tmp, nil
}

// dirs lists the tree's directories, "." first, then parents before
// children (a path sorts after its own prefix).
func (t *tree) dirs() []string {
	var out []string
	for p, n := range t.nodes {
		if n.typ == api.EntryDir && p != "." {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return append([]string{"."}, out...)
}

// seal makes a file what a blob is: read-only for everyone, executable or
// not, with the release's mtime.
func seal(p string, exec bool, mtimeNs int64) error {
	mode := os.FileMode(0o444)
	if exec {
		mode = 0o555
	}
	if err := os.Chmod(p, mode); err != nil {
		return err
	}
	ts := unix.NsecToTimespec(mtimeNs)
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// copyFile copies src to a new file dst: a reflink (FICLONE) where the
// filesystem has them, else copy_file_range through io.Copy.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// replacing reports whether the blob at bp is one of replace's contents.
func replacing(replace map[string]bool, bp string) bool {
	return replace[filepath.Base(filepath.Dir(bp))]
}
