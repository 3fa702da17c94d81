package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// hashCache remembers the sha256 of files by path, size, mtime, ctime and
// inode, as git's index does, so a deploy of a 256 MB tree with one
// changed file reads one file. It lives in $XDG_CACHE_HOME/hctl (or
// ~/.cache/hctl); losing it costs one full read, nothing else.
type hashCache struct {
	path    string
	entries map[string]cacheEntry // by absolute path
	mu      sync.Mutex            // sum runs on several goroutines
	seen    map[string]bool
	hashed  int   // files read this run
	read    int64 // bytes read this run
}

type cacheEntry struct {
	Size     int64  `json:"size"`
	MTimeNs  int64  `json:"mtime_ns"`
	CTimeNs  int64  `json:"ctime_ns"`
	Ino      uint64 `json:"ino"`
	Dev      uint64 `json:"dev"`
	SHA256   string `json:"sha256"`
	HashedAt int64  `json:"hashed_at_ns"`
}

// racyWindow: a file changed within this long before it was hashed may
// change again without its mtime moving (timestamps are coarse, a jiffy
// or so), so its entry is not trusted next time and it is read again.
const racyWindow = 50 * time.Millisecond

const cacheVersion = "hctl-hash-cache-v1"

type cacheFile struct {
	Version string                `json:"version"`
	Entries map[string]cacheEntry `json:"entries"`
}

func cacheDir() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "hctl"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "hctl"), nil
}

// loadHashCache reads the cache; a missing or unreadable one is empty
// (the deploy then reads every file, as without a cache).
func loadHashCache() *hashCache {
	c := &hashCache{entries: map[string]cacheEntry{}, seen: map[string]bool{}}
	dir, err := cacheDir()
	if err != nil {
		return c
	}
	c.path = filepath.Join(dir, "hashes.json")
	b, err := os.ReadFile(c.path)
	if err != nil {
		return c
	}
	var f cacheFile
	if json.Unmarshal(b, &f) == nil && f.Version == cacheVersion && f.Entries != nil {
		c.entries = f.Entries
	}
	return c
}

// lookup returns the sha256 of the regular file at p (absolute), whose
// lstat is st, if the cache has it and nothing about the file changed;
// else "".
func (c *hashCache) lookup(p string, st *syscall.Stat_t) string {
	key := cacheKey(st)
	c.mu.Lock()
	c.seen[p] = true
	e, ok := c.entries[p]
	c.mu.Unlock()
	if ok && e.SHA256 != "" && e.HashedAt-e.MTimeNs > int64(racyWindow) {
		e2 := e
		e2.SHA256, e2.HashedAt = "", 0
		if e2 == key {
			return e.SHA256
		}
	}
	return ""
}

func cacheKey(st *syscall.Stat_t) cacheEntry {
	return cacheEntry{Size: st.Size, MTimeNs: st.Mtim.Nano(), CTimeNs: st.Ctim.Nano(), Ino: st.Ino, Dev: st.Dev}
}

// record remembers sum as the sha256 of the file at p, whose lstat was st
// before it was read at hashedAt (by agentd, which staged it).
func (c *hashCache) record(p string, st *syscall.Stat_t, sum string, hashedAt time.Time, size int64) {
	key := cacheKey(st)
	key.SHA256, key.HashedAt = sum, hashedAt.UnixNano()
	c.mu.Lock()
	c.seen[p] = true
	c.hashed++
	c.read += size
	c.entries[p] = key
	c.mu.Unlock()
}

// sum returns the sha256 of the regular file at p (absolute), whose lstat
// is st, from the cache when nothing about the file changed.
func (c *hashCache) sum(p string, st *syscall.Stat_t) (string, error) {
	if h := c.lookup(p, st); h != "" {
		return h, nil
	}
	hashedAt := time.Now()
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	// Read in 256 KiB pieces, not io.Copy's 32 KiB: a 256 MB tree is then
	// 1,000 reads, not 8,000 (system calls cost here what hashing does).
	buf := hashBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, *buf)
	hashBufs.Put(buf)
	if err != nil {
		return "", err
	}
	if n != st.Size {
		return "", fmt.Errorf("%s: changed while being read", p)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	c.record(p, st, sum, hashedAt, n)
	return sum, nil
}

// hashBufs are sum's read buffers, one per hashing goroutine in use.
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// save writes the cache back, dropping entries under root that this scan
// did not see (deleted files). Failing to save only costs the next deploy
// a full read, so the error is for a warning.
func (c *hashCache) save(root string) error {
	if c.path == "" {
		return errors.New("no cache directory")
	}
	prefix := root + string(filepath.Separator)
	gone := map[string]bool{} // directory -> it no longer exists
	for p := range c.entries {
		if len(p) > len(prefix) && p[:len(prefix)] == prefix {
			if !c.seen[p] {
				delete(c.entries, p)
			}
			continue
		}
		// Trees deployed once and deleted since (a CI checkout, a test's
		// temporary directory) must not make the cache grow for ever: one
		// stat per directory drops them.
		d := filepath.Dir(p)
		g, ok := gone[d]
		if !ok {
			_, err := os.Lstat(d)
			g = errors.Is(err, fs.ErrNotExist)
			gone[d] = g
		}
		if g {
			delete(c.entries, p)
		}
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(cacheFile{Version: cacheVersion, Entries: c.entries})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), ".hashes-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), c.path)
}
