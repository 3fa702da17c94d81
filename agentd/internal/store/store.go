// Package store is agentd's content-addressed release store. Every file of
// every release is kept once, as a read-only blob named by its content
// hash; a release is a tree of hard links to blobs, named by the release
// digest (artifact.Digest of the tree, unchanged from the slugs of earlier
// agentd versions, so a deploy of the active content is still recognised).
//
// Layout under the store's directory (STATE/store):
//
//	blobs/HH/SHA256/x.MTIME   a file's content (x: executable, 0555; f: 0444)
//	trees/sha256-HEX/         a release: directories and hard links to blobs
//	private/NAME/             a writable copy of a tree, for --allow-root apps
//	tmp/PID-RANDOM/           imports, uploads and stages in progress
//
// A blob's key is (content, executable bit, mtime) because mode and mtime
// belong to the inode: two releases that share a blob share them, and
// runtimes compare mtimes (Python's .pyc files), so a blob never changes
// either. Garbage is found by reference: a tree nothing names is removed,
// then a blob no tree links (link count 1) and no upload or stage in
// progress pins (a stage: files read before their manifest, stage.go).
//
// Durability: a file's data is synced (as it arrives, or by Unpack) before
// any name in blobs/ or trees/ refers to it, and a tree is renamed into
// trees/ only when complete, then trees/ is synced: with a journal that
// commits metadata in order (ext4, XFS), after a crash every name in the
// store is whole. Leftovers of the crashed process in tmp/ are removed by
// the next Open.
package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/internal/artifact"
)

// ErrInvalid is wrapped by every error about a client's input (a bad or
// lying manifest, a blob that does not match its hash): a 400, not a 500.
// Errors of a refused .tar.gz wrap artifact.ErrInvalid or ErrTooLarge.
var ErrInvalid = errors.New("invalid upload")

// ErrNotFound is wrapped when an upload id or a digest is unknown.
var ErrNotFound = errors.New("not found")

// treePinTTL bounds how long a freshly built tree is kept without being
// referenced: long enough for the deploy that built it to record its
// release, short enough that a deploy that vanished leaks nothing for long.
const treePinTTL = time.Hour

// Store is a release store. Its methods are safe for concurrent use, also
// by several processes of one agentd (an upgrade hands over while the old
// one may still finish an import).
type Store struct {
	dir string
	lim artifact.Limits
	tmp string // this process's own scratch directory under tmp/
	// blobs is blobs/, open: blobs are looked up relative to it (blobdir.go).
	blobs int
	// garbage: a link to a blob may have gone since the last complete
	// blob pass of a Collect (gcflag.go).
	garbage atomic.Bool

	// mu orders the linking of blobs into trees against Collect, so a blob
	// is never removed between "it exists" and the link that keeps it.
	// Collect takes it for each decision, never across a walk (collect.go).
	mu      sync.Mutex
	pinned  map[string]int       // content hash -> uploads and stages in progress that rely on it
	trees   map[string]time.Time // digest -> when built, until a Collect sees it referenced
	uploads map[string]*Upload
	stages  map[string]*Stage
}

// Open opens (creating it if needed) the store under dir. Imports and
// uploads are bounded by lim, as artifact.Unpack bounds a .tar.gz.
func Open(dir string, lim artifact.Limits) (*Store, error) {
	for _, d := range []string{dir, filepath.Join(dir, "blobs"), filepath.Join(dir, "trees"),
		filepath.Join(dir, "private"), filepath.Join(dir, "tmp")} {
		// 0755: app users must reach their release tree; nothing here is
		// writable by them.
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("opening store: %w", err)
		}
	}
	s := &Store{dir: dir, lim: lim, pinned: map[string]int{}, trees: map[string]time.Time{}, uploads: map[string]*Upload{}, stages: map[string]*Stage{}}
	if err := s.removeStaleTmp(); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Join(dir, "tmp"), strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	s.tmp = tmp
	if s.blobs, err = openBlobs(dir); err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	s.maybeGarbage() // the first Collect walks every blob
	return s, nil
}

// removeStaleTmp removes scratch directories of processes that are gone
// (a crash mid-import). Those of a live process, such as the agentd being
// upgraded from, are left alone.
func (s *Store) removeStaleTmp() error {
	entries, err := os.ReadDir(filepath.Join(s.dir, "tmp"))
	if err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	for _, e := range entries {
		pid, _, _ := strings.Cut(e.Name(), "-")
		if n, err := strconv.Atoi(pid); err == nil && unix.Kill(n, 0) != unix.ESRCH {
			continue
		}
		if err := removeAll(filepath.Join(s.dir, "tmp", e.Name())); err != nil {
			return fmt.Errorf("opening store: removing leftovers of a crash: %w", err)
		}
	}
	return nil
}

// Dir is the directory of the tree with digest d ("sha256:…"). It exists
// once an import or an upload of that content has returned d.
func (s *Store) Dir(digest string) string {
	return filepath.Join(s.dir, "trees", treeName(digest))
}

// Has reports whether the tree with digest d is in the store.
func (s *Store) Has(digest string) bool {
	_, err := os.Lstat(s.Dir(digest))
	return err == nil
}

func treeName(digest string) string { return strings.ReplaceAll(digest, ":", "-") }

func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	return ok && validHash(h)
}

func validHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// blobPath is where the blob of (hash, exec, mtime) lives.
func (s *Store) blobPath(hash string, exec bool, mtimeNs int64) string {
	return filepath.Join(s.dir, "blobs", blobRel(hash, exec, mtimeNs))
}

// anyBlob returns the path of some blob with this content, or "".
func (s *Store) anyBlob(hash string) string {
	if rel := s.anyBlobRel(hash); rel != "" {
		return filepath.Join(s.dir, "blobs", rel)
	}
	return ""
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// pinTree keeps a tree just built from Collect until it is referenced.
// Callers hold s.mu.
func (s *Store) pinTree(digest string) { s.trees[digest] = time.Now() }

// removeAll removes a tree whose directories may be read-only (trees are
// 0555 so that not even their owner writes into them by accident).
func removeAll(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
