package store

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The blobs are looked up relative to blobs/, open once per Store, not by
// absolute path: NewUpload stats one blob per distinct content of a
// manifest, and Collect every blob of the store, and each absolute lookup
// walks STATE/store/blobs again (268 lstats of a 258-file manifest took
// 1.1-1.5 ms by absolute path, 0.7 ms relative to an open blobs/). The
// directories of a walk are read with getdents into one buffer, not through
// os.File (which registers each with the poller and allocates a buffer).

// openBlobs opens the store's blobs/ directory. The descriptor is never
// closed: a Store lives as long as agentd, and has no Close.
func openBlobs(dir string) (int, error) {
	return unix.Open(filepath.Join(dir, "blobs"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// blobRel is the blob of (hash, exec, mtime) relative to blobs/.
func blobRel(hash string, exec bool, mtimeNs int64) string {
	k := "/f."
	if exec {
		k = "/x."
	}
	return hash[:2] + "/" + hash + k + strconv.FormatInt(mtimeNs, 10)
}

// statBlob lstats a blob by its path relative to blobs/ (a blob is a
// regular file: its lstat is its stat).
func (s *Store) statBlob(rel string, st *unix.Stat_t) error {
	return unix.Fstatat(s.blobs, rel, st, unix.AT_SYMLINK_NOFOLLOW)
}

// anyBlobRel returns some blob with this content, relative to blobs/, or "".
func (s *Store) anyBlobRel(hash string) string {
	d := hash[:2] + "/" + hash
	fd, err := openDirAt(s.blobs, d)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	names, err := readDir(fd, make([]byte, 4096))
	if err != nil || len(names) == 0 {
		return ""
	}
	return d + "/" + names[0]
}

func openDirAt(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
}

// readDir lists the names in the open directory fd ("." and ".." left
// out), reading through buf.
func readDir(fd int, buf []byte) ([]string, error) {
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// blobDir is the directory of one content during a walk of blobs/.
type blobDir struct {
	pre   int    // blobs/HH, open
	fd    int    // blobs/HH/HASH, open
	hash  string // HASH
	names []string
}

// collectWalked, if set (by tests), is called after each of blobs/HH is
// walked, with no lock held.
var collectWalked func()

// walkBlobs calls fn for the directory of every content in blobs/. It
// takes no lock: a directory that a concurrent Collect removed is skipped,
// and fn decides under s.mu what it must.
func (s *Store) walkBlobs(fn func(d *blobDir) error) error {
	buf := make([]byte, 32<<10)
	root, err := openDirAt(s.blobs, ".")
	if err != nil {
		return &fs.PathError{Op: "open", Path: "blobs/" + "blobs", Err: err}
	}
	prefixes, err := readDir(root, buf)
	unix.Close(root)
	if err != nil {
		return &fs.PathError{Op: "read", Path: "blobs/" + "blobs", Err: err}
	}
	for _, pre := range prefixes {
		if err := s.walkPrefix(pre, buf, fn); err != nil {
			return err
		}
		if collectWalked != nil {
			collectWalked()
		}
	}
	return nil
}

func (s *Store) walkPrefix(pre string, buf []byte, fn func(d *blobDir) error) error {
	pfd, err := openDirAt(s.blobs, pre)
	if err != nil {
		return &fs.PathError{Op: "open", Path: "blobs/" + pre, Err: err}
	}
	defer unix.Close(pfd)
	hashes, err := readDir(pfd, buf)
	if err != nil {
		return &fs.PathError{Op: "read", Path: "blobs/" + pre, Err: err}
	}
	for _, h := range hashes {
		hfd, err := openDirAt(pfd, h)
		if errors.Is(err, unix.ENOENT) {
			continue // emptied and removed by another Collect meanwhile
		}
		if err != nil {
			return &fs.PathError{Op: "open", Path: "blobs/" + pre + "/" + h, Err: err}
		}
		names, err := readDir(hfd, buf)
		if err == nil {
			err = fn(&blobDir{pre: pfd, fd: hfd, hash: h, names: names})
		} else {
			err = &fs.PathError{Op: "read", Path: "blobs/" + pre + "/" + h, Err: err}
		}
		unix.Close(hfd)
		if err != nil {
			return err
		}
	}
	return nil
}
