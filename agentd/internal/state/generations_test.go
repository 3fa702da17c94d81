package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenerationsSwapped: from the third write on, PREV already exists
// and keepPrevious swaps the new link with it (RENAME_EXCHANGE) and leaves
// the generation before for the writer to remove. Each write, by either
// writer, must leave the content it replaced as PREV, the new one as the
// file, and no temporary file; during WriteJSONThen's visible both are in
// place already.
func TestGenerationsSwapped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.json")
	check := func(when string, cur, prev int) {
		t.Helper()
		var c, p map[string]int
		if err := ReadJSON(path, &c); err != nil || c["v"] != cur {
			t.Errorf("%s: current %v (%v), want v%d", when, c, err, cur)
		}
		if prev == 0 {
			return
		}
		if err := ReadJSON(Prev(path), &p); err != nil || p["v"] != prev {
			t.Errorf("%s: previous %v (%v), want v%d", when, p, err, prev)
		}
	}
	noTemp := func(when string) {
		t.Helper()
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Errorf("%s: left behind: %s", when, e.Name())
			}
		}
	}
	for v := 1; v <= 6; v++ {
		var err error
		switch v % 2 {
		case 0:
			err = WriteJSONThen(path, map[string]int{"v": v}, func() { check("in visible", v, v-1) })
		default:
			err = WriteJSON(path, map[string]int{"v": v})
		}
		if err != nil {
			t.Fatalf("write v%d: %v", v, err)
		}
		check("after the write", v, v-1)
		noTemp("after the write")
	}
	// PREV and the file are distinct inodes: an in-place edit of the
	// current file does not reach the previous generation.
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	var p map[string]int
	if err := ReadJSON(Prev(path), &p); err != nil || p["v"] != 5 {
		t.Errorf("previous after an in-place edit of the current: %v, %v", p, err)
	}
}
