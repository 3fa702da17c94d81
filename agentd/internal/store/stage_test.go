package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

// Contents staged before their manifest are adopted by the upload that
// names the stage: it lacks nothing of them, and its tree holds them. A
// content the store holds already is read to hash it but not kept.
func TestStageAdoptedByUpload(t *testing.T) {
	s := openStore(t)
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	bodies := []string{"web: ./server\n", strings.Repeat("z", 300<<10), "web: ./server\n"}
	var hashes []string
	kept := 0
	for _, b := range bodies {
		h, k, err := st.Put(int64(len(b)), strings.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if h != sha(b) {
			t.Errorf("staged %d bytes as %s, want %s", len(b), h, sha(b))
		}
		hashes = append(hashes, h)
		if k {
			kept++
		}
	}
	if kept != 2 {
		t.Errorf("kept %d contents, want 2 (the third is the first's)", kept)
	}
	entries := []api.ManifestEntry{
		{Path: "Procfile", Type: api.EntryFile, Mode: 0o644, Size: int64(len(bodies[0])), SHA256: hashes[0], MTimeNs: testMtime.UnixNano()},
		{Path: "lib.so", Type: api.EntryFile, Mode: 0o755, Size: int64(len(bodies[1])), SHA256: hashes[1], MTimeNs: testMtime.UnixNano()},
	}
	u, res, err := s.NewUpload(entries)
	if err != nil || len(res.Missing) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	adopted, bytes, err := u.Adopt(st)
	if err != nil || len(adopted) != 2 || bytes != int64(len(bodies[0])+len(bodies[1])) || u.Missing() != 0 {
		t.Fatalf("adopted %v (%d bytes), %d still missing, %v", adopted, bytes, u.Missing(), err)
	}
	if _, err := s.Stage(st.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("the stage outlived its adoption: %v", err)
	}
	if _, _, err := u.Adopt(st); !errors.Is(err, ErrInvalid) {
		t.Errorf("a stage adopted twice: %v", err)
	}
	d, err := u.Commit()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.Dir(d), "lib.so"))
	if err != nil || string(got) != bodies[1] {
		t.Errorf("lib.so in the tree: %d bytes, %v", len(got), err)
	}
	if fi, err := os.Stat(filepath.Join(s.Dir(d), "lib.so")); err != nil || fi.Mode().Perm() != 0o555 || !fi.ModTime().Equal(testMtime) {
		t.Errorf("lib.so: %v %v, want 0555 and the manifest's mtime", fi.Mode(), err)
	}

	// Staged again, now that the store holds them: nothing is kept.
	st2, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	if _, k, err := st2.Put(int64(len(bodies[1])), strings.NewReader(bodies[1])); k || err != nil {
		t.Errorf("a content the store holds: kept %v, %v", k, err)
	}
	if names, _ := os.ReadDir(st2.dir); len(names) != 0 {
		t.Errorf("the stage holds %d files, want none", len(names))
	}
	st2.Forget()
	if _, err := os.Stat(st2.dir); !os.IsNotExist(err) {
		t.Errorf("a forgotten stage's directory: %v", err)
	}
}

// A staged file must be the size its line says, and a stage is bounded as
// an upload is; what was refused is not kept.
func TestStageRefusals(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "store"), artifact.Limits{MaxBytes: 100, MaxFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Forget()
	if _, _, err := st.Put(10, strings.NewReader("short")); !errors.Is(err, ErrInvalid) {
		t.Errorf("5 bytes staged as 10: %v", err)
	}
	if _, _, err := st.Put(3, strings.NewReader("longer")); !errors.Is(err, ErrInvalid) {
		t.Errorf("6 bytes staged as 3: %v", err)
	}
	if _, _, err := st.Put(101, strings.NewReader(strings.Repeat("x", 101))); !errors.Is(err, artifact.ErrTooLarge) {
		t.Errorf("101 bytes under a 100-byte limit: %v", err)
	}
	if names, _ := os.ReadDir(st.dir); len(names) != 0 {
		t.Errorf("refused files left %d in the stage", len(names))
	}
}

// A stage no upload names is forgotten by Collect once idle past StageTTL.
func TestStageForgottenWhenIdle(t *testing.T) {
	s := openStore(t)
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Put(4, strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Collect(Refs{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stage(st.ID); err != nil {
		t.Fatalf("a fresh stage was forgotten: %v", err)
	}
	st.mu.Lock()
	st.used = time.Now().Add(-StageTTL - time.Minute)
	st.mu.Unlock()
	if _, err := s.Collect(Refs{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stage(st.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("an idle stage: %v, want it forgotten", err)
	}
	if _, err := os.Stat(st.dir); !os.IsNotExist(err) {
		t.Errorf("the idle stage's directory: %v", err)
	}
}
