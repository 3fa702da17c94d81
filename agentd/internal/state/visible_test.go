package state

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteJSONThen: visible runs once the new content is what a reader of
// the path gets (the old one kept as the previous generation), and a
// write that fails calls nothing and leaves no file behind.
func TestWriteJSONThen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.json")
	if err := WriteJSON(path, map[string]int{"v": 1}); err != nil {
		t.Fatal(err)
	}
	var seen map[string]int
	var prev map[string]int
	calls := 0
	err := WriteJSONThen(path, map[string]int{"v": 2}, func() {
		calls++
		if err := ReadJSON(path, &seen); err != nil {
			t.Errorf("in visible: %v", err)
		}
		if err := ReadJSON(Prev(path), &prev); err != nil {
			t.Errorf("in visible, previous generation: %v", err)
		}
	})
	if err != nil || calls != 1 || seen["v"] != 2 || prev["v"] != 1 {
		t.Fatalf("WriteJSONThen: %v, %d calls, saw %v, previous %v; want one call seeing v2 over v1", err, calls, seen, prev)
	}
	var loaded map[string]int
	if _, err := Load(path, &loaded, nil); err != nil || loaded["v"] != 2 {
		t.Fatalf("Load after: %v, %v", loaded, err)
	}
	gone := filepath.Join(dir, "no-such-dir", "b.json")
	if err := WriteJSONThen(gone, 1, func() { t.Error("visible called for a failed write") }); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if n := e.Name(); n != "a.json" && n != "a.json.prev" {
			t.Errorf("left behind: %s", n)
		}
	}
}
