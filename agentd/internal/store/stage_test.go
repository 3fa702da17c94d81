package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

// stageBodies stages bodies, each with the mtime given, and returns
// their hashes and how many the stage kept.
func stageBodies(t *testing.T, st *Stage, bodies []string, mtimes []int64) ([]string, int) {
	t.Helper()
	var hashes []string
	kept := 0
	for i, b := range bodies {
		h, k, err := st.Put(int64(len(b)), i == 1, mtimes[i], strings.NewReader(b))
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
	return hashes, kept
}

// stageManifest is a Procfile and an executable lib.so of these hashes.
func stageManifest(bodies, hashes []string) []api.ManifestEntry {
	return []api.ManifestEntry{
		{Path: "Procfile", Type: api.EntryFile, Mode: 0o644, Size: int64(len(bodies[0])), SHA256: hashes[0], MTimeNs: testMtime.UnixNano()},
		{Path: "lib.so", Type: api.EntryFile, Mode: 0o755, Size: int64(len(bodies[1])), SHA256: hashes[1], MTimeNs: testMtime.UnixNano()},
	}
}

// Contents staged before their manifest are in the store once the stage
// settles: the upload that follows lacks none of them, and its tree holds
// them with the manifest's modes and mtimes. A content the store holds
// already is read to hash it but not kept.
func TestStageAdoptedByUpload(t *testing.T) {
	s := openStore(t)
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	// The Procfile is staged with the mode and mtime its entry gives; the
	// library with another mtime (its file changed after hctl's stat), so
	// its upload copies it under the right one.
	bodies := []string{"web: ./server\n", strings.Repeat("z", 300<<10), "web: ./server\n"}
	hashes, kept := stageBodies(t, st, bodies, []int64{testMtime.UnixNano(), testMtime.UnixNano() + 1, testMtime.UnixNano()})
	if kept != 2 {
		t.Errorf("kept %d contents, want 2 (the third is the first's)", kept)
	}
	if err := st.Settle(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.blobPath(hashes[0], false, testMtime.UnixNano())); err != nil {
		t.Errorf("the staged Procfile is not a blob once the stage settled: %v", err)
	}
	// Pinned by the stage: a collection leaves them.
	if _, err := s.Collect(Refs{}); err != nil {
		t.Fatal(err)
	}
	u, res, err := s.NewUpload(stageManifest(bodies, hashes))
	if err != nil || len(res.Missing) != 0 {
		t.Fatalf("the upload after the stage: %+v %v", res, err)
	}
	adopted, _, err := u.Adopt(st)
	if err != nil || len(adopted) != 0 {
		t.Fatalf("adopted %v, %v; want nothing left to take", adopted, err)
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
	treeHolds(t, s, d, bodies)

	// Staged again, now that the store holds them as these very blobs:
	// nothing is kept (under another mtime: see the next test).
	st2, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	if _, k, err := st2.Put(int64(len(bodies[1])), true, testMtime.UnixNano(), strings.NewReader(bodies[1])); k || err != nil {
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

// treeHolds checks the tree d holds stageManifest's files.
func treeHolds(t *testing.T, s *Store, d string, bodies []string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(s.Dir(d), "lib.so"))
	if err != nil || string(got) != bodies[1] {
		t.Errorf("lib.so in the tree: %d bytes, %v", len(got), err)
	}
	for name, mode := range map[string]os.FileMode{"Procfile": 0o444, "lib.so": 0o555} {
		if fi, err := os.Stat(filepath.Join(s.Dir(d), name)); err != nil || fi.Mode().Perm() != mode || !fi.ModTime().Equal(testMtime) {
			t.Errorf("%s: %v %v, want %v and the manifest's mtime", name, fi.Mode(), err, mode)
		}
	}
}

// A content the stage kept but did not name (here: none are named) is
// taken by the upload from the stage's directory, as if received.
func TestStageAdoptsUnnamedContents(t *testing.T) {
	nameEarly = false
	t.Cleanup(func() { nameEarly = true })
	s := openStore(t)
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	bodies := []string{"web: ./server\n", strings.Repeat("y", 100<<10)}
	hashes, _ := stageBodies(t, st, bodies, []int64{testMtime.UnixNano(), testMtime.UnixNano()})
	if err := st.Settle(); err != nil {
		t.Fatal(err)
	}
	u, res, err := s.NewUpload(stageManifest(bodies, hashes))
	if err != nil || len(res.Missing) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	adopted, bytes, err := u.Adopt(st)
	if err != nil || len(adopted) != 2 || bytes != int64(len(bodies[0])+len(bodies[1])) || u.Missing() != 0 {
		t.Fatalf("adopted %v (%d bytes), %d still missing, %v", adopted, bytes, u.Missing(), err)
	}
	d, err := u.Commit()
	if err != nil {
		t.Fatal(err)
	}
	treeHolds(t, s, d, bodies)
}

// A stage no upload used leaves the store as it found it: the blobs it
// named go with it, pinned until then.
func TestForgottenStageLeavesNoBlobs(t *testing.T) {
	s := openStore(t)
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Put(4, false, testMtime.UnixNano(), strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	if err := st.Settle(); err != nil {
		t.Fatal(err)
	}
	blob := s.blobPath(sha("data"), false, testMtime.UnixNano())
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("the staged content is not a blob: %v", err)
	}
	st.Forget()
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Errorf("the forgotten stage's blob: %v, want it gone", err)
	}
	if len(s.pinned) != 0 {
		t.Errorf("pins left: %v", s.pinned)
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
	if _, _, err := st.Put(10, false, 0, strings.NewReader("short")); !errors.Is(err, ErrInvalid) {
		t.Errorf("5 bytes staged as 10: %v", err)
	}
	if _, _, err := st.Put(3, false, 0, strings.NewReader("longer")); !errors.Is(err, ErrInvalid) {
		t.Errorf("6 bytes staged as 3: %v", err)
	}
	if _, _, err := st.Put(101, false, 0, strings.NewReader(strings.Repeat("x", 101))); !errors.Is(err, artifact.ErrTooLarge) {
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
	if _, _, err := st.Put(4, false, 0, strings.NewReader("data")); err != nil {
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

// A content the store holds under another mtime only (a binary rebuilt
// unchanged, a fresh checkout) needs a new inode when the release is new:
// once the stage kept a content the store lacks, Finish writes those out
// too, and the upload after it copies nothing at its Commit. When the
// stage kept nothing new, they are dropped unwritten.
func TestStageFinishKeepsRebuiltContents(t *testing.T) {
	s := openStore(t)
	bodies := []string{"web: ./server\n", strings.Repeat("y", 200<<10)}
	hashes := []string{sha(bodies[0]), sha(bodies[1])}
	u, _, err := s.NewUpload(stageManifest(bodies, hashes))
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range bodies {
		if err := u.Put(hashes[i], strings.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	later := testMtime.Add(time.Hour).UnixNano()

	// The same files again, rebuilt: nothing new, nothing written.
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	if _, kept := stageBodies(t, st, bodies, []int64{later, later}); kept != 0 {
		t.Errorf("kept %d contents the store holds", kept)
	}
	if n, _, err := st.Finish(); n != 0 || err != nil {
		t.Errorf("Finish of a stage with nothing new kept %d (%v)", n, err)
	}
	if names, _ := os.ReadDir(st.dir); len(names) != 0 {
		t.Errorf("the stage holds %d files after Finish, want none", len(names))
	}
	st.Forget()

	// Rebuilt beside a new file: the release is new, and both rebuilt
	// files are written with their new mtime.
	st, err = s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(bodies), "a new file\n")
	if _, kept := stageBodies(t, st, all, []int64{later, later, later}); kept != 1 {
		t.Errorf("Put kept %d contents, want the new one", kept)
	}
	if n, b, err := st.Finish(); n != 2 || b != int64(len(bodies[0])+len(bodies[1])) || err != nil {
		t.Errorf("Finish kept %d contents (%d bytes, %v), want the 2 rebuilt ones", n, b, err)
	}
	if err := st.Settle(); err != nil {
		t.Fatal(err)
	}
	m := append(stageManifest(bodies, hashes), api.ManifestEntry{Path: "new.txt", Type: api.EntryFile, Mode: 0o644, Size: int64(len(all[2])), SHA256: sha(all[2])})
	for i := range m {
		m[i].MTimeNs = later
	}
	u2, res, err := s.NewUpload(m)
	if err != nil || len(res.Missing) != 0 {
		t.Fatalf("the upload after the stage: %+v %v", res, err)
	}
	if _, _, err := u2.Adopt(st); err != nil {
		t.Fatal(err)
	}
	if err := u2.copies.wait(); err != nil || len(u2.got) != 0 {
		t.Errorf("the upload copied %d stored contents (%v), want none: the stage wrote them", len(u2.got), err)
	}
	d, err := u2.Commit()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(s.Dir(d), "lib.so"))
	if err != nil || fi.ModTime().UnixNano() != later {
		t.Errorf("lib.so in the new tree: %v (%v), want the new mtime", fi.ModTime(), err)
	}
}

// Files of the same content read at the same moment (a tree's duplicates,
// handed over together) are kept, written and counted once.
func TestStageSameContentAtOnce(t *testing.T) {
	s := openStore(t)
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Forget()
	body := strings.Repeat("d", 256<<10)
	const n = 8
	kept := make(chan bool, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			h, k, err := st.Put(int64(len(body)), false, testMtime.UnixNano(), strings.NewReader(body))
			if err != nil || h != sha(body) {
				t.Errorf("Put: %s, %v", h, err)
			}
			kept <- k
		})
	}
	wg.Wait()
	close(kept)
	count := 0
	for k := range kept {
		if k {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d of %d files of one content kept, want 1", count, n)
	}
}
