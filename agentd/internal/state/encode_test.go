package state

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestEncodeJSONAsMarshalIndent: the reused encoder writes exactly what
// json.MarshalIndent and a newline did (the state files' format is
// unchanged), call after call, a big value then a small one, and after a
// value that cannot be encoded.
func TestEncodeJSONAsMarshalIndent(t *testing.T) {
	type rec struct {
		Name  string            `json:"name"`
		At    time.Time         `json:"at"`
		Env   map[string]string `json:"env,omitempty"`
		List  []int             `json:"list"`
		Empty []string          `json:"empty"`
	}
	big := rec{Name: "a<b>&c", At: time.Unix(1700000000, 5).UTC(), Env: map[string]string{"Z": "1", "A": "é\u2028"}, List: make([]int, 500)}
	values := []any{big, rec{Name: "small"}, map[string]any{}, big, []any{1, "x", nil}}
	for i, v := range values {
		want, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		var got []byte
		if err := encodeJSON(v, func(b []byte) error { got = bytes.Clone(b); return nil }); err != nil {
			t.Fatalf("value %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("value %d:\n%s\nwant\n%s", i, got, want)
		}
		if i == 1 {
			if err := encodeJSON(make(chan int), func([]byte) error { t.Error("f called for a value that cannot be encoded"); return nil }); err == nil {
				t.Error("a channel was encoded")
			}
		}
	}
	// Through both writers.
	dir := t.TempDir()
	for _, write := range []func(string, any) error{WriteJSON, func(p string, v any) error { return WriteJSONThen(p, v, func() {}) }} {
		p := filepath.Join(dir, "a.json")
		if err := write(p, big); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		want, _ := json.MarshalIndent(big, "", "  ")
		if !bytes.Equal(got, append(want, '\n')) {
			t.Errorf("file written:\n%s", got)
		}
	}
}
