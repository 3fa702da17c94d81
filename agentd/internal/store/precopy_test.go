package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRebuiltUnchanged: the same content with a new mtime (a build that
// rewrote a file without changing it) is not sent again, the new release
// has the new mtime on an inode of its own (a copy made while the upload
// was open), and the old release keeps its mtime. An upload aborted with
// such copies under way leaves nothing behind.
func TestRebuiltUnchanged(t *testing.T) {
	s := openStore(t)
	first := writeTree(t, sample...)
	d1, _ := upload(t, s, first)
	later := testMtime.Add(time.Hour)
	if err := os.Chtimes(filepath.Join(first, "server"), later, later); err != nil {
		t.Fatal(err)
	}
	// And one file changed, else the tree is the same one (mtimes are
	// not part of the digest) and reused.
	if err := os.WriteFile(filepath.Join(first, "a.txt"), []byte("new text"), 0o644); err != nil {
		t.Fatal(err)
	}
	d2, sent := upload(t, s, first)
	if sent != int64(len("new text")) {
		t.Errorf("rebuilt unchanged: sent %d bytes, want only the changed file's %d", sent, len("new text"))
	}
	if d1 == d2 {
		t.Fatal("another mtime, same digest")
	}
	old, now := filepath.Join(s.Dir(d1), "server"), filepath.Join(s.Dir(d2), "server")
	if ino(t, old).Ino == ino(t, now).Ino {
		t.Fatal("the two releases share one inode for different mtimes")
	}
	for p, want := range map[string]time.Time{old: testMtime, now: later} {
		if fi, err := os.Lstat(p); err != nil || !fi.ModTime().Equal(want) || fi.Mode() != 0o555 {
			t.Errorf("%s: %v, %v; want mode 0555, mtime %v", p, fi.Mode(), fi.ModTime(), want)
		}
	}
	b, err := os.ReadFile(now)
	if want, _ := os.ReadFile(filepath.Join(first, "server")); err != nil || string(b) != string(want) {
		t.Errorf("copied content %q, %v; want %q", b, err, want)
	}

	// Aborted: its copies are waited for and removed with it.
	again := testMtime.Add(2 * time.Hour)
	os.Chtimes(filepath.Join(first, "server"), again, again)
	os.WriteFile(filepath.Join(first, "a.txt"), []byte("newer text"), 0o644)
	entries, _, err := scanTree(first)
	if err != nil {
		t.Fatal(err)
	}
	u, res, err := s.NewUpload(entries)
	if err != nil || len(res.Missing) != 1 {
		t.Fatalf("NewUpload: %v, missing %v; want a.txt's content only", err, res.Missing)
	}
	// The copy is made while the upload is open, before Commit.
	if err := u.copies.wait(); err != nil || len(u.got) != 1 {
		t.Errorf("copies before Commit: %v, %v; want the server's content copied", err, u.got)
	}
	u.Abort()
	if _, err := os.Stat(u.dir); !os.IsNotExist(err) {
		t.Errorf("aborted upload's directory: %v, want it gone", err)
	}
}
