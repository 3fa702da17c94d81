package store

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countWalks counts the prefix directories Collect walks from now on.
func countWalks(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	collectWalked = func() { n.Add(1) }
	t.Cleanup(func() { collectWalked = nil })
	return &n
}

// A Collect after which no link to a blob went skips the walk of the
// blobs; one after a tree was removed does not, and finds its garbage.
func TestCollectSkipsWalkWhenNothingWent(t *testing.T) {
	s := openStore(t)
	walks := countWalks(t)
	v1 := []ent{file("Procfile", "web: ./app\n"), file("changed", "v1\n")}
	d1, _ := upload(t, s, writeTree(t, v1...))
	if _, err := s.Collect(Refs{Digests: map[string]bool{d1: true}}); err != nil || walks.Load() == 0 {
		t.Fatalf("the first Collect after Open walked %d prefix directories (%v), want all", walks.Load(), err)
	}
	v2 := []ent{file("Procfile", "web: ./app\n"), file("changed", "v2\n")}
	d2, _ := upload(t, s, writeTree(t, v2...))
	walks.Store(0)
	both := Refs{Digests: map[string]bool{d1: true, d2: true}}
	if c, err := s.Collect(both); err != nil || walks.Load() != 0 || c != (Collected{}) {
		t.Errorf("a Collect after a deploy that removed nothing: %+v, %v, walked %d", c, err, walks.Load())
	}
	unpinAll(s)
	c, err := s.Collect(Refs{Digests: map[string]bool{d2: true}})
	if err != nil || c.Trees != 1 || c.Blobs != 1 || walks.Load() == 0 {
		t.Errorf("a Collect that removes v1: %+v, %v, walked %d; want v1's tree and its own blob", c, err, walks.Load())
	}
	checkTree(t, s, d2, v2)
	if _, blobs := contents(t, s); len(blobs) != 2 {
		t.Errorf("blobs %v, want v2's two", blobs)
	}
}

// Every way a link to a blob goes outside Collect makes the next Collect
// walk: an upload aborted after its prelink linked a blob whose tree was
// removed meanwhile, and a build that fails after adopting new blobs.
func TestCollectFindsGarbageLeftByUploads(t *testing.T) {
	s := openStore(t)
	walks := countWalks(t)
	upload(t, s, writeTree(t, file("only-a", "a\n"), file("other", "other\n")))
	// An upload relying on only-a, under another name: its prelink
	// links only-a's blob into its scratch tree.
	entries, _, err := scanTree(writeTree(t, file("x", "a\n"), file("new", "not yet sent\n")))
	if err != nil {
		t.Fatal(err)
	}
	u, res, err := s.NewUpload(entries)
	if err != nil || len(res.Missing) != 1 {
		t.Fatalf("upload: %+v, %v", res, err)
	}
	u.pre.wg.Wait()
	unpinAll(s)
	c, err := s.Collect(Refs{})
	if err != nil || c.Trees != 1 || c.Blobs != 1 {
		t.Fatalf("collect of a: %+v, %v; want its tree and the blob of other (only-a is prelinked)", c, err)
	}
	walks.Store(0)
	if c, err := s.Collect(Refs{}); err != nil || c.Blobs != 0 || walks.Load() != 0 {
		t.Errorf("collect with nothing gone: %+v, %v, walked %d", c, err, walks.Load())
	}
	u.Abort()
	if c, err := s.Collect(Refs{}); err != nil || c.Blobs != 1 {
		t.Errorf("collect after the abort: %+v, %v; want only-a's blob", c, err)
	}
	if _, blobs := contents(t, s); len(blobs) != 0 {
		t.Errorf("left %v", blobs)
	}

	// A build that fails linking its tree, after it made the new content
	// a blob (the received files not named as they were synced:
	// earlyname_test.go has those).
	nameEarly = false
	t.Cleanup(func() { nameEarly = true })
	link = func(old, new string) error {
		if filepath.Base(new) == "last" {
			return &os.LinkError{Op: "link", Old: old, New: new, Err: syscall.EIO}
		}
		return os.Link(old, new)
	}
	t.Cleanup(func() { link = os.Link })
	entries, staged, err := scanTree(writeTree(t, file("first", "1\n"), file("last", "2\n")))
	if err != nil {
		t.Fatal(err)
	}
	u, res, err = s.NewUpload(entries)
	if err != nil {
		t.Fatal(err)
	}
	putMissing(t, u, res.Missing, staged)
	if _, err := u.Commit(); err == nil {
		t.Fatal("commit succeeded with a failing link")
	}
	if _, blobs := contents(t, s); len(blobs) == 0 {
		t.Fatal("the failed build adopted no blob: nothing tested")
	}
	if c, err := s.Collect(Refs{}); err != nil || c.Blobs != 2 {
		t.Errorf("collect after the failed build: %+v, %v; want its 2 blobs", c, err)
	}
}

// A blob kept only because an upload pinned it is looked at again: the
// upload may end without linking it (here, it needed the content under
// another mtime, a copy).
func TestCollectFindsBlobsKeptForAPin(t *testing.T) {
	s := openStore(t)
	upload(t, s, writeTree(t, file("p", "same bytes\n")))
	dir := writeTree(t, file("p", "same bytes\n"))
	rebuilt := testMtime.Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "p"), rebuilt, rebuilt); err != nil {
		t.Fatal(err)
	}
	entries, _, err := scanTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, res, err := s.NewUpload(entries)
	if err != nil || len(res.Missing) != 0 {
		t.Fatalf("upload: %+v, %v", res, err)
	}
	unpinAll(s)
	if c, err := s.Collect(Refs{}); err != nil || c.Trees != 1 || c.Blobs != 0 {
		t.Fatalf("collect: %+v, %v; want the old tree, not its pinned blob", c, err)
	}
	d, err := u.Commit()
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Collect(Refs{Digests: map[string]bool{d: true}})
	if err != nil || c.Blobs != 1 {
		t.Errorf("collect after the commit: %+v, %v; want the old mtime's blob", c, err)
	}
	if _, blobs := contents(t, s); len(blobs) != 1 || blobs[0] != s.blobPath(sha("same bytes\n"), false, rebuilt.UnixNano()) {
		t.Errorf("blobs %v, want the new mtime's only", blobs)
	}
}
