package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
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
	Size     int64
	MTimeNs  int64
	CTimeNs  int64
	Ino      uint64
	Dev      uint64
	SHA256   string
	HashedAt int64
}

// racyWindow: a file changed within this long before it was hashed may
// change again without its mtime moving (timestamps are coarse, a jiffy
// or so), so its entry is not trusted next time and it is read again.
const racyWindow = 50 * time.Millisecond

// The cache is a text file, not JSON: it is read at the start of every
// deploy of a directory, before anything is sent, and encoding/json took
// 2-3 ms for 258 entries here, longer than listing the tree it runs
// beside. Its first line is cacheVersion; each entry is a line of seven
// numbers or hashes and then the path, quoted (strconv.Quote) so that any
// byte a file name may hold survives:
//
//	SHA256 SIZE MTIME_NS CTIME_NS INO DEV HASHED_AT_NS "PATH"
const (
	cacheVersion = "hctl-hash-cache-v2"
	cacheName    = "hashes"
	// oldCacheName is the JSON cache of earlier hctl versions, removed by
	// the first save (it costs one full read of each tree, once).
	oldCacheName = "hashes.json"
)

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
	c.path = filepath.Join(dir, cacheName)
	b, err := os.ReadFile(c.path)
	if err != nil {
		return c
	}
	if entries, ok := parseCache(b); ok {
		c.entries = entries
	}
	return c
}

// parseCache reads the text of a cache file; a file of another version,
// or damaged anywhere, is not used at all.
func parseCache(b []byte) (map[string]cacheEntry, bool) {
	head, rest, ok := bytes.Cut(b, []byte("\n"))
	if !ok || string(head) != cacheVersion {
		return nil, false
	}
	entries := make(map[string]cacheEntry, bytes.Count(rest, []byte("\n")))
	for len(rest) > 0 {
		var line []byte
		if line, rest, ok = bytes.Cut(rest, []byte("\n")); !ok {
			return nil, false // cut short
		}
		var f [7][]byte
		for i := range f {
			if f[i], line, ok = bytes.Cut(line, []byte(" ")); !ok {
				return nil, false
			}
		}
		p, err := strconv.Unquote(string(line))
		if err != nil || len(f[0]) != sha256.Size*2 {
			return nil, false
		}
		var e cacheEntry
		var errs [6]error
		e.SHA256 = string(f[0])
		e.Size, errs[0] = strconv.ParseInt(string(f[1]), 10, 64)
		e.MTimeNs, errs[1] = strconv.ParseInt(string(f[2]), 10, 64)
		e.CTimeNs, errs[2] = strconv.ParseInt(string(f[3]), 10, 64)
		e.Ino, errs[3] = strconv.ParseUint(string(f[4]), 10, 64)
		e.Dev, errs[4] = strconv.ParseUint(string(f[5]), 10, 64)
		e.HashedAt, errs[5] = strconv.ParseInt(string(f[6]), 10, 64)
		if errors.Join(errs[:]...) != nil {
			return nil, false
		}
		entries[p] = e
	}
	return entries, true
}

// formatCache is the text of a cache file holding entries.
func formatCache(entries map[string]cacheEntry) []byte {
	b := make([]byte, 0, 64+len(entries)*200)
	b = append(b, cacheVersion...)
	b = append(b, '\n')
	for p, e := range entries {
		if e.SHA256 == "" {
			continue
		}
		b = append(b, e.SHA256...)
		for _, n := range []int64{e.Size, e.MTimeNs, e.CTimeNs} {
			b = append(b, ' ')
			b = strconv.AppendInt(b, n, 10)
		}
		for _, n := range []uint64{e.Ino, e.Dev} {
			b = append(b, ' ')
			b = strconv.AppendUint(b, n, 10)
		}
		b = append(b, ' ')
		b = strconv.AppendInt(b, e.HashedAt, 10)
		b = append(b, ' ')
		b = strconv.AppendQuote(b, p)
		b = append(b, '\n')
	}
	return b
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
	b := formatCache(c.entries)
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
	if err := os.Rename(tmp.Name(), c.path); err != nil {
		return err
	}
	os.Remove(filepath.Join(filepath.Dir(c.path), oldCacheName)) // (if any)
	return nil
}
