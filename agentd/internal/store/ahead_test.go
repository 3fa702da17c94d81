package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSealedAsTheyArrive: a content received once but listed twice, under
// two modes and mtimes, gives each file its own (the received file is
// sealed for the first as it arrives, the second gets a copy), and a
// content sent for a file whose mode the manifest marks executable is
// executable in the tree.
func TestSealedAsTheyArrive(t *testing.T) {
	s := openStore(t)
	dir := writeTree(t, exe("bin/tool", "same bytes"), file("doc/tool.txt", "same bytes"), file("Procfile", "web: bin/tool\n"))
	later := testMtime.Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "doc/tool.txt"), later, later); err != nil {
		t.Fatal(err)
	}
	d, sent := upload(t, s, dir)
	if want := int64(len("same bytes") + len("web: bin/tool\n")); sent != want {
		t.Errorf("sent %d bytes, want each content once (%d)", sent, want)
	}
	for p, want := range map[string]struct {
		mode  os.FileMode
		mtime time.Time
	}{"bin/tool": {0o555, testMtime}, "doc/tool.txt": {0o444, later}, "Procfile": {0o444, testMtime}} {
		fi, err := os.Lstat(filepath.Join(s.Dir(d), p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want.mode || !fi.ModTime().Equal(want.mtime) {
			t.Errorf("%s: mode %v, mtime %v; want %v, %v", p, fi.Mode(), fi.ModTime(), want.mode, want.mtime)
		}
	}
	if ino(t, filepath.Join(s.Dir(d), "bin/tool")).Ino == ino(t, filepath.Join(s.Dir(d), "doc/tool.txt")).Ino {
		t.Error("two modes of one content share an inode")
	}
}

// TestPrelinkedTree: the tree begun while an upload arrives is the tree
// Commit completes (unchanged files share their blobs' inodes, the changed
// one is new), and an aborted upload leaves nothing in the scratch
// directory.
func TestPrelinkedTree(t *testing.T) {
	s := openStore(t)
	dir := writeTree(t, exe("bin/server", "v1"), file("lib/a", "aaa"), file("lib/b", "bbb"), symlink("current", "bin/server"), file("Procfile", "web: bin/server\n"))
	d1, _ := upload(t, s, dir)
	if err := os.WriteFile(filepath.Join(dir, "lib/b"), []byte("BBB"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(dir, "lib/b"), testMtime, testMtime); err != nil {
		t.Fatal(err)
	}
	d2, sent := upload(t, s, dir)
	if sent != 3 {
		t.Errorf("sent %d bytes, want the changed file's 3", sent)
	}
	for p, same := range map[string]bool{"bin/server": true, "lib/a": true, "Procfile": true, "lib/b": false} {
		if got := ino(t, filepath.Join(s.Dir(d1), p)).Ino == ino(t, filepath.Join(s.Dir(d2), p)).Ino; got != same {
			t.Errorf("%s: shares its inode with the last release: %v, want %v", p, got, same)
		}
	}
	if target, err := os.Readlink(filepath.Join(s.Dir(d2), "current")); err != nil || target != "bin/server" {
		t.Errorf("symlink: %q, %v", target, err)
	}
	if fi, err := os.Lstat(filepath.Join(s.Dir(d2), "lib")); err != nil || fi.Mode() != 0o555|os.ModeDir {
		t.Errorf("lib: %v, %v; want a read-only directory", fi.Mode(), err)
	}

	// Aborted with its tree begun: nothing left in the scratch directory.
	os.WriteFile(filepath.Join(dir, "lib/a"), []byte("AAA"), 0o644)
	entries, _, err := scanTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, _, err := s.NewUpload(entries)
	if err != nil {
		t.Fatal(err)
	}
	u.pre.wg.Wait() // the tree begun in full: the abort must remove it
	u.Abort()
	if left, _ := readNames(s.tmp); len(left) != 0 {
		t.Errorf("the aborted upload left %v in the scratch directory", left)
	}
}

// TestEarlySyncFailureFailsCommit: a received file whose fsync failed
// while the upload arrived fails the Commit, even though a second fsync
// would succeed (the kernel may have dropped the pages), and no tree is
// made of it.
func TestEarlySyncFailureFailsCommit(t *testing.T) {
	s := openStore(t)
	dir := writeTree(t, file("Procfile", "web: ./x\n"), exe("x", "#!/bin/sh\n"))
	entries, staged, err := scanTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	var failed atomic.Bool
	var calls atomic.Int32
	orig := syncFile
	t.Cleanup(func() { syncFile = orig })
	syncFile = func(p string) error {
		calls.Add(1)
		if failed.CompareAndSwap(false, true) {
			return syscall.EIO
		}
		return orig(p)
	}
	u, res, err := s.NewUpload(entries)
	if err != nil {
		t.Fatal(err)
	}
	putMissing(t, u, res.Missing, staged)
	u.syncs.wg.Wait()
	if n := calls.Load(); n != int32(len(res.Missing)) {
		t.Errorf("%d fsyncs while the upload arrived, want one per received file (%d)", n, len(res.Missing))
	}
	if _, err := u.Commit(); !errors.Is(err, syscall.EIO) {
		t.Errorf("commit after a failed fsync: %v, want EIO", err)
	}
	if !failed.Load() {
		t.Fatal("no fsync ran before Commit returned")
	}
	if trees, _ := contents(t, s); len(trees) != 0 {
		t.Errorf("a tree was made of an upload whose fsync failed: %v", trees)
	}
}

// TestEarlySyncsBounded: files arriving faster than they are synced wait
// in a queue, at most syncWorkers fsyncs at once, and every one is synced
// before Commit's wait returns.
func TestEarlySyncsBounded(t *testing.T) {
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	orig := syncFile
	t.Cleanup(func() { syncFile = orig })
	syncFile = func(p string) error {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		inFlight.Add(-1)
		return nil
	}
	var j syncJob
	const files = 1000
	for i := range files {
		j.start(fmt.Sprintf("f%d", i))
	}
	if g := runtime.NumGoroutine(); g > 100 {
		t.Errorf("%d goroutines for %d queued fsyncs", g, files)
	}
	close(release)
	done, err := j.wait()
	if err != nil || len(done) != files {
		t.Errorf("synced %d of %d, %v", len(done), files, err)
	}
	if m := most.Load(); m > syncWorkers {
		t.Errorf("%d fsyncs at once, want at most %d", m, syncWorkers)
	}
	j.start("late")
	if _, ok := done["late"]; ok || len(j.queue) != 0 {
		t.Error("a file queued after the wait was taken")
	}
}
