package store

import (
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// putAndWaitNamed puts every content an upload lacks, from the files of a scanned
// tree, and waits until each was named in blobs/ (by its sync worker).
func putAndWaitNamed(t *testing.T, s *Store, dir string) *Upload {
	t.Helper()
	u, res, staged := startUpload(t, s, dir)
	named := make(chan string, len(res.Missing))
	blobNamed = func(h string) { named <- h }
	t.Cleanup(func() { blobNamed = nil })
	putMissing(t, u, res.Missing, staged)
	var got []string
	for range res.Missing {
		select {
		case h := <-named:
			got = append(got, h)
		case <-time.After(30 * time.Second):
			t.Fatalf("named %d of %d contents in 30s", len(got), len(res.Missing))
		}
	}
	slices.Sort(got)
	if want := slices.Sorted(slices.Values(res.Missing)); !slices.Equal(got, want) {
		t.Fatalf("named %v, want %v", got, want)
	}
	return u
}

// A received content is a blob once it is synced, before Commit: Commit's
// tree links that blob (one inode), and the rest of the store is as a
// Commit that named it would have left it.
func TestBlobsNamedAsTheyAreSynced(t *testing.T) {
	s := openStore(t)
	dir := writeTree(t, exe("bin/server", "v1"), file("lib/a", "aaa"), file("Procfile", "web: bin/server\n"))
	u := putAndWaitNamed(t, s, dir)
	trees, blobs := contents(t, s)
	if len(trees) != 0 || len(blobs) != 3 {
		t.Fatalf("before Commit: trees %v, blobs %v; want the 3 blobs and no tree", trees, blobs)
	}
	d, err := u.Commit()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bin/server", "lib/a", "Procfile"} {
		if n := ino(t, filepath.Join(s.Dir(d), p)).Nlink; n != 2 {
			t.Errorf("%s has %d links, want 2 (its blob and this tree)", p, n)
		}
	}
	if c, err := s.Collect(Refs{Digests: map[string]bool{d: true}}); err != nil || c.Blobs != 0 || c.Trees != 0 {
		t.Errorf("collect of a store in use: %+v, %v", c, err)
	}
}

// An upload aborted after its contents were named leaves no blob: its
// abort removes them, with no collection needed.
func TestAbortRemovesBlobsNamedEarly(t *testing.T) {
	s := openStore(t)
	held := writeTree(t, file("kept", "kept\n"))
	d, _ := upload(t, s, held)
	_, before := contents(t, s)
	u := putAndWaitNamed(t, s, writeTree(t, file("kept", "kept\n"), file("new", "new\n"), exe("x", "x")))
	if _, blobs := contents(t, s); len(blobs) != len(before)+2 {
		t.Fatalf("blobs %v, want the 2 new ones named", blobs)
	}
	u.Abort()
	if _, blobs := contents(t, s); !slices.Equal(blobs, before) {
		t.Errorf("after the abort: %v, want %v", blobs, before)
	}
	if !s.Has(d) {
		t.Error("the abort removed the tree of another release")
	}
	if c, err := s.Collect(Refs{Digests: map[string]bool{d: true}}); err != nil || c.Blobs != 0 {
		t.Errorf("collect after the abort: %+v, %v; want nothing left to remove", c, err)
	}
}
