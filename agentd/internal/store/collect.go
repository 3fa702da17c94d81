package store

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

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
// also forgets uploads idle for more than UploadTTL.
func (s *Store) Collect(refs Refs) (Collected, error) {
	now := time.Now()
	s.mu.Lock()
	var stale []*Upload
	for _, u := range s.uploads {
		if u.expired(now) {
			stale = append(stale, u)
		}
	}
	s.mu.Unlock()
	for _, u := range stale {
		u.Abort()
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var c Collected
	trees, err := readNames(filepath.Join(s.dir, "trees"))
	if err != nil {
		return c, fmt.Errorf("collecting the store: %w", err)
	}
	for _, name := range trees {
		d := strings.Replace(name, "-", ":", 1)
		if refs.Digests[d] {
			delete(s.trees, d)
			continue
		}
		if t, ok := s.trees[d]; ok && now.Sub(t) < treePinTTL {
			continue
		}
		if err := removeAll(filepath.Join(s.dir, "trees", name)); err != nil {
			return c, fmt.Errorf("collecting the store: %w", err)
		}
		delete(s.trees, d)
		c.Trees++
	}
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
		if err := removeAll(p); err != nil {
			return c, fmt.Errorf("collecting the store: %w", err)
		}
		c.Private++
	}
	// Only now, with the trees gone, does a blob's link count say whether
	// anything still refers to it.
	err = s.eachBlob(func(hash, p string, st *syscall.Stat_t) error {
		if st.Nlink > 1 || s.pinned[hash] > 0 {
			return nil
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		os.Remove(filepath.Dir(p)) // the hash's directory, once empty
		c.Blobs++
		c.Bytes += st.Size
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("collecting the store: %w", err)
	}
	return c, nil
}

// eachBlob calls fn for every blob.
func (s *Store) eachBlob(fn func(hash, path string, st *syscall.Stat_t) error) error {
	root := filepath.Join(s.dir, "blobs")
	prefixes, err := readNames(root)
	if err != nil {
		return err
	}
	for _, pre := range prefixes {
		hashes, err := readNames(filepath.Join(root, pre))
		if err != nil {
			return err
		}
		for _, h := range hashes {
			dir := filepath.Join(root, pre, h)
			names, err := readNames(dir)
			if err != nil {
				return err
			}
			for _, n := range names {
				p := filepath.Join(dir, n)
				var st syscall.Stat_t
				if err := syscall.Lstat(p, &st); err != nil {
					return err
				}
				if err := fn(h, p, &st); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Usage reports the store's size and what Collect(refs) would free now.
func (s *Store) Usage(refs Refs) (api.StoreUsage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
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
		if t, ok := s.trees[d]; refs.Digests[d] || ok && now.Sub(t) < treePinTTL {
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
	err = s.eachBlob(func(hash, _ string, st *syscall.Stat_t) error {
		u.Blobs++
		u.Bytes += st.Size
		if s.pinned[hash] == 0 && uint64(st.Nlink)-1 <= uint64(doomed[st.Ino]) {
			u.Reclaimable += st.Size
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
