package store

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
)

// Refs is everything that must stay: the digests of every release that any
// app's state names (quarantined state files and previous generations
// included) or that a running or draining process runs, and the private
// copies (PrivateName) in use.
type Refs struct {
	Digests map[string]bool
	Private map[string]bool
}

// Collected is what a Collect removed.
type Collected struct {
	Trees, Private, Blobs int
	Bytes                 int64
}

// Collect removes every tree and private copy that refs does not name,
// then every blob that no tree links and no upload in progress relies on.
// Trees built in the last hour are kept until a Collect sees them
// referenced: their deploy may not have recorded its release yet. It
// also forgets uploads idle for more than UploadTTL, and stages idle for
// more than StageTTL.
//
// It holds s.mu only around each decision, never across a walk: the
// prune after a deploy runs while the next deploy's NewUpload (which
// takes s.mu) may already be waiting.
func (s *Store) Collect(refs Refs) (Collected, error) {
	now := time.Now()
	s.mu.Lock()
	var stale []*Upload
	for _, u := range s.uploads {
		if u.expired(now) {
			stale = append(stale, u)
		}
	}
	var staleStages []*Stage
	for _, st := range s.stages {
		if st.expired(now) {
			staleStages = append(staleStages, st)
		}
	}
	s.mu.Unlock()
	for _, u := range stale {
		u.Abort()
	}
	for _, st := range staleStages {
		st.Forget()
	}

	var c Collected
	trees, err := readNames(filepath.Join(s.dir, "trees"))
	if err != nil {
		return c, fmt.Errorf("collecting the store: %w", err)
	}
	for _, name := range trees {
		removed, err := s.collectTree(name, refs, now)
		if removed || err != nil {
			s.maybeGarbage() // (a failed removal may have removed some)
		}
		if err != nil {
			return c, fmt.Errorf("collecting the store: %w", err)
		}
		if removed {
			c.Trees++
		}
	}
	// Private copies without s.mu: Private makes them without it, and
	// they are copies (copyFile), not links, so no blob's link count
	// depends on them.
	private, err := readNames(filepath.Join(s.dir, "private"))
	if err != nil {
		return c, fmt.Errorf("collecting the store: %w", err)
	}
	for _, name := range private {
		if refs.Private[name] {
			continue
		}
		p := filepath.Join(s.dir, "private", name)
		c.Bytes += duBytes(p)
		err := removeAll(p)
		// (A private copy links no blob: this is only prudence.)
		s.maybeGarbage()
		if err != nil {
			return c, fmt.Errorf("collecting the store: %w", err)
		}
		c.Private++
	}
	// Only now, with the trees gone, does a blob's link count say whether
	// anything still refers to it. Nothing can have become garbage if no
	// link went since the last complete pass (gcflag.go); the flag is
	// cleared before the pass, so a link that goes during it sets it again.
	if !s.garbage.Swap(false) {
		return c, nil
	}
	err = s.walkBlobs(func(d *blobDir) error { return s.collectBlobs(d, &c) })
	if err != nil {
		s.maybeGarbage()
		return c, fmt.Errorf("collecting the store: %w", err)
	}
	return c, nil
}

// collectTree removes the tree of this name (under trees/) if refs does
// not name it and it is not freshly built. The decision and the rename of
// the tree out of trees/ are one step under s.mu, as build's "is it here
// already?" and its pinTree are: a tree build has just found (and will
// return) is never removed after. Its removal, a few ms for a tree of
// hundreds of files, is done after, without s.mu: the tree is in this
// process's scratch directory by then, named by nothing (a crash leaves
// it to the next Open), and its links go before the blob pass looks.
func (s *Store) collectTree(name string, refs Refs, now time.Time) (bool, error) {
	d := strings.Replace(name, "-", ":", 1)
	s.mu.Lock()
	if refs.Digests[d] {
		delete(s.trees, d)
		s.mu.Unlock()
		return false, nil
	}
	if t, ok := s.trees[d]; ok && now.Sub(t) < treePinTTL {
		s.mu.Unlock()
		return false, nil
	}
	p := filepath.Join(s.dir, "trees", name)
	gone := filepath.Join(s.tmp, "collected-"+randomID())
	err := os.Rename(p, gone)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.mu.Unlock()
		return false, nil // another Collect took it
	case err != nil:
		// (Moving a directory needs write permission on it, to change
		// its "..": trees are 0555. agentd runs as root; anyone else
		// removes it in place, as before.)
		err = removeAll(p)
		gone = ""
	}
	delete(s.trees, d)
	s.mu.Unlock()
	if err == nil && gone != "" {
		err = removeAll(gone)
	}
	return err == nil, err
}

// collectBlobs removes the blobs of one content's directory that nothing
// links (link count 1) and no upload pins. The link counts are read first
// without s.mu (most blobs are linked: nothing to decide); each candidate
// is looked at again under s.mu, and removed only if it is still unlinked
// and unpinned. Every path that makes a blob referenced holds s.mu from
// "it exists" to the pin or link that keeps it (NewUpload pins, build
// links into its tree; the prelink and the copies of an upload only use
// pinned contents, pinned until the upload ends), so it either ran before
// this decision, which then sees the pin or the link, or runs after and
// finds the blob gone.
func (s *Store) collectBlobs(d *blobDir, c *Collected) error {
	var cands []string
	for _, n := range d.names {
		var st unix.Stat_t
		err := unix.Fstatat(d.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "lstat", Path: "blobs/" + d.hash[:2] + "/" + d.hash + "/" + n, Err: err}
		}
		if st.Nlink == 1 {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pinned[d.hash] > 0 {
		// Garbage once the upload ends, unless it links it: look again.
		s.maybeGarbage()
		return nil
	}
	removed := false
	for _, n := range cands {
		// d.fd is the directory listed: if another Collect emptied and
		// removed it meanwhile (and a build made a new one), the blob
		// is not found here and is left alone.
		var st unix.Stat_t
		err := unix.Fstatat(d.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Nlink == 1 {
			err = unix.Unlinkat(d.fd, n, 0)
			if err == nil {
				removed = true
				c.Blobs++
				c.Bytes += st.Size
			}
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return &fs.PathError{Op: "remove", Path: "blobs/" + d.hash[:2] + "/" + d.hash + "/" + n, Err: err}
		}
	}
	if removed {
		// The content's directory, once empty; still under s.mu, since
		// build makes it and links into it under s.mu.
		unix.Unlinkat(d.pre, d.hash, unix.AT_REMOVEDIR)
	}
	return nil
}

// Usage reports the store's size and what Collect(refs) would free now.
//
// Like Collect, it walks without s.mu (it is a report: a deploy must not
// wait for it), from a copy of the pins and fresh trees taken under s.mu.
func (s *Store) Usage(refs Refs) (api.StoreUsage, error) {
	s.mu.Lock()
	pinned, fresh := maps.Clone(s.pinned), maps.Clone(s.trees)
	s.mu.Unlock()
	var u api.StoreUsage
	now := time.Now()
	// Links from the trees that a Collect would remove, per inode: a blob
	// is reclaimable when those are all its links but its own name.
	doomed := map[uint64]uint64{}
	trees, err := readNames(filepath.Join(s.dir, "trees"))
	if err != nil {
		return u, fmt.Errorf("store usage: %w", err)
	}
	for _, name := range trees {
		u.Trees++
		d := strings.Replace(name, "-", ":", 1)
		if t, ok := fresh[d]; refs.Digests[d] || ok && now.Sub(t) < treePinTTL {
			continue
		}
		filepath.WalkDir(filepath.Join(s.dir, "trees", name), func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				var st syscall.Stat_t
				if syscall.Lstat(p, &st) == nil {
					if st.Nlink == 1 {
						u.Bytes += st.Size // an EMLINK copy: its own inode
						u.Reclaimable += st.Size
					} else {
						doomed[st.Ino]++
					}
				}
			}
			return nil
		})
	}
	private, err := readNames(filepath.Join(s.dir, "private"))
	if err != nil {
		return u, fmt.Errorf("store usage: %w", err)
	}
	for _, name := range private {
		n := duBytes(filepath.Join(s.dir, "private", name))
		u.Bytes += n
		if !refs.Private[name] {
			u.Reclaimable += n
		}
	}
	err = s.walkBlobs(func(d *blobDir) error {
		for _, n := range d.names {
			var st unix.Stat_t
			if unix.Fstatat(d.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue // collected meanwhile
			}
			u.Blobs++
			u.Bytes += st.Size
			if pinned[d.hash] == 0 && uint64(st.Nlink)-1 <= doomed[st.Ino] {
				u.Reclaimable += st.Size
			}
		}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("store usage: %w", err)
	}
	return u, nil
}

// duBytes is the size of the regular files under p.
func duBytes(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
