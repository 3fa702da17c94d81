package state

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type doc struct {
	N    int            `json:"n"`
	Tags map[string]int `json:"tags,omitempty"`
}

var errRefused = errors.New("does not hold together")

// refuseNegative is a check that refuses valid JSON: N < 0.
func refuseNegative(d *doc) func() error {
	return func() error {
		if d.N < 0 {
			return errRefused
		}
		return nil
	}
}

// twoGenerations writes generation 1 then 2 of dir/a1.json.
func twoGenerations(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "a1.json")
	for _, n := range []int{1, 2} {
		if err := WriteJSON(p, doc{N: n, Tags: map[string]int{"gen1": n}}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func quarantined(t *testing.T, p string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(p), QuarantineDir, filepath.Base(p)+".*"))
	var files []string
	for _, f := range m {
		if !strings.HasSuffix(f, ".why") {
			files = append(files, f)
		}
	}
	return files
}

func TestWriteKeepsThePreviousGeneration(t *testing.T) {
	p := twoGenerations(t)
	var cur, prev doc
	if err := ReadJSON(p, &cur); err != nil || cur.N != 2 {
		t.Fatalf("current: %+v, %v; want generation 2", cur, err)
	}
	if err := ReadJSON(Prev(p), &prev); err != nil || prev.N != 1 {
		t.Fatalf("previous: %+v, %v; want generation 1", prev, err)
	}
	// An in-place edit of the current file must not reach the previous one.
	if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ReadJSON(Prev(p), &prev); err != nil || prev.N != 1 {
		t.Fatalf("previous after an in-place edit of the current: %+v, %v", prev, err)
	}
	for _, e := range mustReadDir(t, filepath.Dir(p)) {
		if strings.Contains(e, ".tmp-") {
			t.Errorf("a temporary file is left: %s", e)
		}
	}
}

// TestLoadRecovers: each kind of bad current file is quarantined (and kept),
// the previous generation is used, written back, and reported.
func TestLoadRecovers(t *testing.T) {
	cases := map[string][]byte{
		"truncated":      []byte(`{"n": 2, "ta`),
		"empty":          {},
		"binary garbage": {0x00, 0xff, 0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef},
		"valid, refused": []byte(`{"n": -7}`),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			p := twoGenerations(t)
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			var d doc
			got, err := Load(p, &d, refuseNegative(&d))
			if err != nil {
				t.Fatal(err)
			}
			if d.N != 1 || d.Tags["gen1"] != 1 || len(d.Tags) != 1 {
				t.Errorf("loaded %+v, want generation 1 and nothing of the refused file", d)
			}
			r := got.Recovered
			if got.From != Prev(p) || r == nil || r.From != Prev(p) || r.Err == nil || r.LostSince.IsZero() {
				t.Fatalf("Loaded %+v (recovered %+v), want recovered from %s with a reason and a time", got, r, Prev(p))
			}
			if name == "valid, refused" && !errors.Is(r.Err, errRefused) {
				t.Errorf("reason %v, want the check's error", r.Err)
			}
			q := quarantined(t, p)
			if len(q) != 1 || q[0] != r.Quarantined {
				t.Fatalf("quarantine holds %v, want %s", q, r.Quarantined)
			}
			if b, err := os.ReadFile(q[0]); err != nil || string(b) != string(bad) {
				t.Errorf("quarantined file: %q, %v; want the bad content kept", b, err)
			}
			if why, err := os.ReadFile(q[0] + ".why"); err != nil || !strings.Contains(string(why), "a1.json") {
				t.Errorf("reason file: %q, %v", why, err)
			}
			// Written back: the next start loads it plainly.
			var again doc
			if got, err := Load(p, &again, refuseNegative(&again)); err != nil || got.Recovered != nil || again.N != 1 {
				t.Errorf("next load: %+v %+v %v, want generation 1 from the current file", got, again, err)
			}
			// CleanTemp eats neither generations nor the quarantine.
			if err := CleanTemp(filepath.Dir(p)); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{p, Prev(p), q[0], q[0] + ".why"} {
				if _, err := os.Stat(f); err != nil {
					t.Errorf("after CleanTemp: %v", err)
				}
			}
		})
	}
}

// TestLoadBroken: when the previous generation is bad too (or missing),
// Load says so and moves nothing, so the next start reports it again.
func TestLoadBroken(t *testing.T) {
	for _, prev := range []string{"missing", "bad"} {
		t.Run("previous "+prev, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "a1.json")
			os.WriteFile(p, []byte("{"), 0o600)
			if prev == "bad" {
				os.WriteFile(Prev(p), []byte(`{"n":-1}`), 0o600)
			}
			var d doc
			_, err := Load(p, &d, refuseNegative(&d))
			var b *Broken
			if !errors.As(err, &b) || b.File != p || b.Err == nil || b.PrevErr == nil {
				t.Fatalf("got %v, want Broken for %s", err, p)
			}
			if prev == "missing" && !errors.Is(b.PrevErr, fs.ErrNotExist) {
				t.Errorf("previous generation's error %v, want not-exist", b.PrevErr)
			}
			if d.N != 0 || d.Tags != nil {
				t.Errorf("v holds %+v after a refusal", d)
			}
			if b, err := os.ReadFile(p); err != nil || string(b) != "{" {
				t.Errorf("the broken file was touched: %q, %v", b, err)
			}
			if q := quarantined(t, p); len(q) != 0 {
				t.Errorf("quarantine holds %v, want nothing moved", q)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	var d doc
	_, err := Load(filepath.Join(t.TempDir(), "nope.json"), &d, nil)
	var b *Broken
	if !errors.Is(err, fs.ErrNotExist) || errors.As(err, &b) {
		t.Fatalf("got %v, want not-exist", err)
	}
}

// TestStalePreviousGenerationIsDropped: an app destroyed by a plain
// os.Remove of its file leaves APP.json.prev; the first write of a new app
// of that name drops it, so a bad first file is reported broken, never
// recovered from the old app's state.
func TestStalePreviousGenerationIsDropped(t *testing.T) {
	p := twoGenerations(t)
	os.Remove(p) // destroyed, the old way
	if err := WriteJSON(p, doc{N: 100}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(Prev(p)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the destroyed app's previous generation is still there: %v", err)
	}
	os.WriteFile(p, []byte("{"), 0o600)
	var d doc
	_, err := Load(p, &d, nil)
	var b *Broken
	if !errors.As(err, &b) {
		t.Fatalf("got %v (loaded %+v), want Broken", err, d)
	}
}

func TestRemoveTakesBothGenerations(t *testing.T) {
	p := twoGenerations(t)
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	if left := mustReadDir(t, filepath.Dir(p)); len(left) != 0 {
		t.Fatalf("left after Remove: %v", left)
	}
}

func mustReadDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
