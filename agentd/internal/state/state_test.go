package state

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteJSONReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "app.json")
	type doc struct{ N int }
	for i := range 3 {
		if err := WriteJSON(p, doc{i}); err != nil {
			t.Fatal(err)
		}
		var got doc
		if err := ReadJSON(p, &got); err != nil || got.N != i {
			t.Fatalf("read back %+v, %v; want %d", got, err, i)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 || entries[0].Name() != "app.json" || entries[1].Name() != "app.json.prev" {
		t.Fatalf("directory holds %v, want only app.json and its previous generation", entries)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode())
	}
}

func TestCleanTempRemovesCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	leftover := filepath.Join(dir, ".app.json.tmp-123")
	os.WriteFile(leftover, []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, "app.json"), []byte("{}"), 0o600)
	if err := CleanTemp(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatal("leftover temp file survived")
	}
	if _, err := os.Stat(filepath.Join(dir, "app.json")); err != nil {
		t.Fatal("CleanTemp removed the real file")
	}
}

func TestReadJSONMissing(t *testing.T) {
	var v struct{}
	if err := ReadJSON(filepath.Join(t.TempDir(), "nope.json"), &v); !os.IsNotExist(err) {
		t.Fatalf("got %v, want not-exist", err)
	}
}
