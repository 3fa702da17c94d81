package store

import (
	"os"
	"path/filepath"
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
