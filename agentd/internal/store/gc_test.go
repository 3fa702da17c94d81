package store

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// unpinAll forgets that trees are fresh, as an hour later would.
func unpinAll(s *Store) {
	s.mu.Lock()
	clear(s.trees)
	s.mu.Unlock()
}

// Collect removes what nothing refers to, and never a referenced blob:
// a tree in refs keeps all its files, a blob shared with a removed tree
// stays, and an upload in progress keeps the blobs it was told exist.
func TestCollectByReference(t *testing.T) {
	s := openStore(t)
	a, _ := upload(t, s, writeTree(t, sample...))
	onlyB := []ent{file("Procfile", "web: ./b\n"), exe("server", "#!/bin/sh\necho hi\n")}
	b, _ := upload(t, s, writeTree(t, onlyB...))
	// Fresh trees survive a Collect that does not name them yet.
	if c, err := s.Collect(Refs{}); err != nil || c.Trees != 0 || c.Blobs != 0 {
		t.Fatalf("collect of fresh trees: %+v, %v", c, err)
	}
	unpinAll(s)
	u, err := s.Usage(Refs{Digests: map[string]bool{a: true}})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len("web: ./b\n")); u.Reclaimable != want || u.Trees != 2 || u.Blobs != 6 {
		t.Errorf("usage %+v, want reclaimable %d of 2 trees and 6 blobs", u, want)
	}
	// An upload in progress that relies on b's Procfile blob.
	entries, _, err := scanTree(writeTree(t, onlyB...))
	if err != nil {
		t.Fatal(err)
	}
	up, res, err := s.NewUpload(entries)
	if err != nil || len(res.Missing) != 0 {
		t.Fatalf("upload: %+v, %v", res, err)
	}
	c, err := s.Collect(Refs{Digests: map[string]bool{a: true}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Trees != 1 || c.Blobs != 0 {
		t.Errorf("collected %+v, want b's tree and no blob (the upload pins b's)", c)
	}
	if s.Has(b) || !s.Has(a) {
		t.Errorf("after collect: has a %v, b %v", s.Has(a), s.Has(b))
	}
	if got, err := up.Commit(); err != nil || got != b {
		t.Fatalf("commit of the pinned upload: %s, %v", got, err)
	}
	if got, _ := os.ReadFile(filepath.Join(s.Dir(b), "Procfile")); string(got) != "web: ./b\n" {
		t.Errorf("b rebuilt from pinned blobs reads %q", got)
	}
	unpinAll(s)
	c, err = s.Collect(Refs{Digests: map[string]bool{a: true}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Trees != 1 || c.Blobs != 1 || c.Bytes != int64(len("web: ./b\n")) {
		t.Errorf("second collect %+v, want b's tree and its one own blob", c)
	}
	for _, e := range sample {
		if e.typ == 0 || e.body == "" {
			continue
		}
		if got, err := os.ReadFile(filepath.Join(s.Dir(a), e.name)); err != nil || string(got) != e.body {
			t.Errorf("referenced %s: %q, %v", e.name, got, err)
		}
	}
	if u, err := s.Usage(Refs{Digests: map[string]bool{a: true}}); err != nil || u.Reclaimable != 0 {
		t.Errorf("usage after collect: %+v, %v", u, err)
	}
	// Nothing referenced: everything goes.
	if _, err := s.Collect(Refs{}); err != nil {
		t.Fatal(err)
	}
	if trees, blobs := contents(t, s); len(trees)+len(blobs) != 0 {
		t.Errorf("left %v %v", trees, blobs)
	}
}

// A crash mid-import leaves scratch files and perhaps blobs no tree names
// yet; every referenced tree stays whole, the next Open clears the
// scratch, and the next Collect the orphans.
func TestCrashMidImport(t *testing.T) {
	s := openStore(t)
	a, _ := upload(t, s, writeTree(t, sample...))
	// What a crashed agentd leaves: its scratch directory (named by a
	// pid that is gone) with a half-built tree, and a blob whose tree
	// was never renamed into place.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(s.dir, "tmp", strconv.Itoa(dead.Process.Pid)+"-x")
	if err := os.MkdirAll(filepath.Join(scratch, "tree-1", "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	orphan := s.blobPath(sha("orphan"), false, 1)
	os.MkdirAll(filepath.Dir(orphan), 0o755)
	if err := os.WriteFile(orphan, []byte("orphan"), 0o444); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.dir, s.lim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(scratch); !os.IsNotExist(err) {
		t.Errorf("a dead process's scratch survived Open: %v", err)
	}
	if _, err := os.Stat(s.tmp); err != nil {
		t.Errorf("a live process's scratch was removed: %v", err)
	}
	c, err := s2.Collect(Refs{Digests: map[string]bool{a: true}})
	if err != nil || c.Blobs != 1 {
		t.Errorf("collect: %+v, %v; want the orphan blob", c, err)
	}
	if d, err := s2.ImportTarGz(bytes.NewReader(targz(t, sample...))); err != nil || d != a {
		t.Errorf("the tree survives whole: %s, %v", d, err)
	}
	_, blobs := contents(t, s2)
	if slices.Contains(blobs, orphan) || len(blobs) != 5 {
		t.Errorf("blobs %v", blobs)
	}
}
