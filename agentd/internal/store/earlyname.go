package store

import (
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A received file gets its name in blobs/ as soon as it is synced, while
// the rest of the upload arrives, instead of in Commit's build: for 256
// MiB of new files, build's directory and link for each new blob were
// 17-57 ms of the time between the last byte and the new process (each
// hash directory is a new inode). build then finds the blob there, as it
// finds any blob the store holds, and only links it into the tree.
//
// Durability is as before: a name in blobs/ is made only once the file's
// data and its mode and mtime (sealed by Put) are synced. A blob named by
// an upload that is then aborted or fails is linked by nothing once the
// upload's directory goes: end marks the store for collection (gcflag.go),
// as for anything an unfinished upload adopted.

// nameBlob names the received, synced file at p (dir/SHA256) in blobs/.
// Anything out of the common case is left to build: a file whose mode
// and mtime could not be set, a damaged blob to replace, a name that is
// there already, any failure.
func (u *Upload) nameBlob(p string) {
	hash := filepath.Base(p)
	n := u.first[hash] // (set by NewUpload, read-only since)
	u.mu.Lock()
	ok := nameEarly && n != nil && u.sealed[hash] && !u.replace[hash]
	u.mu.Unlock()
	if !ok {
		return
	}
	rel, ok := u.s.linkBlob(p, hash, n.exec, n.mtimeNs, false)
	if !ok {
		return
	}
	u.mu.Lock()
	if u.named == nil {
		u.named = map[string]string{}
	}
	u.named[hash] = rel
	u.mu.Unlock()
	if blobNamed != nil {
		blobNamed(hash)
	}
}

// linkBlob links the synced, sealed file at p into blobs/ as the blob of
// hash with this mode and mtime, and pins it if pin (until its holder
// unpins it). It returns the blob relative to blobs/, or false if it made
// none (one is there already, or a failure).
func (s *Store) linkBlob(p, hash string, exec bool, mtimeNs int64, pin bool) (string, bool) {
	dir := hash[:2] + "/" + hash
	// Under s.mu, as build links: Collect removes an empty hash directory
	// under it, and must not between the mkdir and the link.
	s.mu.Lock()
	defer s.mu.Unlock()
	made := false
	switch err := unix.Mkdirat(s.blobs, dir, 0o755); err {
	case nil:
		made = true
	case unix.EEXIST:
	case unix.ENOENT:
		if err := unix.Mkdirat(s.blobs, hash[:2], 0o755); err != nil && err != unix.EEXIST {
			return "", false
		}
		if unix.Mkdirat(s.blobs, dir, 0o755) != nil {
			return "", false
		}
		made = true
	default:
		return "", false
	}
	rel := blobRel(hash, exec, mtimeNs)
	if err := unix.Linkat(unix.AT_FDCWD, p, s.blobs, rel, 0); err != nil {
		if made {
			unix.Unlinkat(s.blobs, dir, unix.AT_REMOVEDIR)
		}
		return "", false
	}
	if pin {
		s.pinned[hash]++
	}
	return rel, true
}

// unnameBlobs removes the blobs an upload that did not commit named, now
// that its directory is gone: linked by nothing else, they would wait for
// the next collection, and an aborted upload leaves the store as it found
// it. One linked meanwhile (a build that found it) stays.
func (u *Upload) unnameBlobs() {
	u.mu.Lock()
	named := u.named
	u.named = nil
	u.mu.Unlock()
	u.s.unname(named, false)
}

// unname removes the blobs named (hash -> blob relative to blobs/) that
// nothing links or pins any more, unpinning them first if unpin.
func (s *Store) unname(named map[string]string, unpin bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for hash, rel := range named {
		if unpin {
			if s.pinned[hash]--; s.pinned[hash] <= 0 {
				delete(s.pinned, hash)
			}
		}
		var st unix.Stat_t
		if s.statBlob(rel, &st) != nil || st.Nlink != 1 || s.pinned[hash] > 0 {
			continue
		}
		if unix.Unlinkat(s.blobs, rel, 0) == nil {
			unix.Unlinkat(s.blobs, filepath.Dir(rel), unix.AT_REMOVEDIR) // once empty
		}
	}
}

// nameEarly is false only in tests of build's own naming of blobs (an
// import's, or a content nameBlob left to it).
var nameEarly = true

// blobNamed, nil but in tests, is told each content nameBlob named.
var blobNamed func(hash string)
