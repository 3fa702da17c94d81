package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// uploadFake is the upload side of an agentd, remembering which contents
// it holds and counting the content bytes it receives.
type uploadFake struct {
	mu       sync.Mutex
	have     map[string]bool
	pending  map[string]bool
	received int64
	manifest api.UploadManifest
}

func (f *fakeAgentd) uploads(t *testing.T) *uploadFake {
	u := &uploadFake{have: map[string]bool{}}
	f.mux.HandleFunc("POST /v1/uploads", func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.manifest = api.UploadManifest{}
		if err := json.NewDecoder(r.Body).Decode(&u.manifest); err != nil {
			t.Errorf("manifest: %v", err)
		}
		res := api.UploadCreated{ID: "u1", Missing: []string{}}
		u.pending = map[string]bool{}
		for _, e := range u.manifest.Entries {
			if e.Type == api.EntryFile && !u.have[e.SHA256] && !u.pending[e.SHA256] {
				u.pending[e.SHA256] = true
				res.Missing = append(res.Missing, e.SHA256)
			}
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(res)
	})
	f.mux.HandleFunc("POST /v1/uploads/{id}/blobs", func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		defer u.mu.Unlock()
		br := bufio.NewReader(r.Body)
		for {
			var hash string
			var size int64
			if _, err := fmt.Fscanf(br, "%s %d\n", &hash, &size); err != nil {
				break
			}
			n, _ := io.CopyN(io.Discard, br, size)
			u.received += n
			u.have[hash] = true
		}
		w.WriteHeader(http.StatusNoContent)
	})
	f.events("POST /v1/apps/{app}/uploads/{id}/deploy",
		api.Event{Type: "result", Result: &api.OpResult{App: "myapp", OK: true, Changed: true, Release: "v2"}})
	return u
}

func (u *uploadFake) bytes() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.received
}

var hashedRE = regexp.MustCompile(`hashed (\d+) files`)

func hashed(t *testing.T, r result) string {
	t.Helper()
	m := hashedRE.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no upload line: %s", r)
	}
	return m[1]
}

// A directory deploys manifest first: a second deploy of the unchanged
// tree sends no file bytes and reads no file (the hash cache), and a
// one-file change sends and reads that file alone.
func TestDeployDirSendsOnlyWhatAgentdLacks(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	f := newFake(t)
	u := f.uploads(t)
	dir := artifactDir(t)
	big := strings.Repeat("x", 1<<20)
	for i := range 4 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("lib%d.so", i)), []byte(big+fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("lib0.so", filepath.Join(dir, "current.so")); err != nil {
		t.Fatal(err)
	}
	// Files written just now are "racily clean" (their mtime may not
	// move on the next write): age them, as a build's output is by the
	// time it is deployed again.
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{"Procfile", "lib0.so", "lib1.so", "lib2.so", "lib3.so"} {
		os.Chtimes(filepath.Join(dir, n), old, old)
	}

	r := hctlRun(t, "deploy", "myapp", dir)
	wantExit(t, r, 0)
	total := int64(4*(1<<20+1) + len("web: ./server\n"))
	if got := u.bytes(); got != total {
		t.Errorf("first deploy sent %d bytes, want %d", got, total)
	}
	if hashed(t, r) != "5" {
		t.Errorf("first deploy: %s", r.stderr)
	}
	var link api.ManifestEntry
	for _, e := range u.manifest.Entries {
		if e.Path == "current.so" {
			link = e
		}
	}
	if link.Type != api.EntrySymlink || link.Target != "lib0.so" {
		t.Errorf("symlink in the manifest: %+v", link)
	}

	r = hctlRun(t, "deploy", "myapp", dir)
	wantExit(t, r, 0)
	if got := u.bytes(); got != total {
		t.Errorf("an unchanged tree sent %d more bytes", got-total)
	}
	if hashed(t, r) != "0" || !strings.Contains(r.stderr, "sent 0 of 5 files (0 B") {
		t.Errorf("an unchanged tree was read again: %s", r.stderr)
	}

	if err := os.WriteFile(filepath.Join(dir, "lib2.so"), []byte(big+"changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = hctlRun(t, "deploy", "myapp", dir)
	wantExit(t, r, 0)
	if got, want := u.bytes()-total, int64(1<<20+len("changed")); got != want {
		t.Errorf("one changed file: sent %d bytes, want %d", got, want)
	}
	if hashed(t, r) != "1" {
		t.Errorf("one changed file: %s", r.stderr)
	}
	if s := f.sent(); s[len(s)-1] != "POST /v1/apps/myapp/uploads/u1/deploy" {
		t.Errorf("sent %v", s)
	}
}

// What agentd would refuse is bad usage before anything is sent.
func TestDeployDirRefusesSpecialFilesAndEscapes(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	f := newFake(t)
	f.uploads(t)
	dir := artifactDir(t)
	if err := os.Symlink("../../etc/passwd", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	r := hctlRun(t, "deploy", "myapp", dir)
	wantExit(t, r, 2)
	if !strings.Contains(r.stderr, "points outside") || len(f.sent()) != 0 {
		t.Errorf("%s\nsent %v", r, f.sent())
	}
}

// The hash cache forgets trees that are gone, and keeps those that are not.
func TestHashCacheDropsDeletedTrees(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	kept, gone := artifactDir(t), artifactDir(t)
	for _, dir := range []string{kept, gone} {
		d, err := scanDirUpload(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := hashFiles(d.manifest, d.files, d.cache); err != nil {
			t.Fatal(err)
		}
		if err := d.cache.save(d.root); err != nil {
			t.Fatal(err)
		}
	}
	os.RemoveAll(gone)
	d, err := scanDirUpload(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cache.save(d.root); err != nil {
		t.Fatal(err)
	}
	c := loadHashCache()
	keptRoot, _ := filepath.EvalSymlinks(kept)
	if _, ok := c.entries[filepath.Join(keptRoot, "Procfile")]; !ok || len(c.entries) != 1 {
		t.Errorf("cache holds %v, want only %s's Procfile", c.entries, kept)
	}
}

// The cache file keeps any path a file may have, and a damaged or older
// one is not used at all (it only costs a full read).
func TestHashCacheFile(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	entries := map[string]cacheEntry{}
	for i, p := range []string{"/t/a b", "/t/new\nline", `/t/quo"te`, "/t/\xff\xfe", "/t/ünï"} {
		entries[p] = cacheEntry{Size: int64(i), MTimeNs: -1, CTimeNs: 1 << 62, Ino: 1<<64 - 1, Dev: 7, SHA256: sum, HashedAt: 9}
	}
	b := formatCache(entries)
	got, ok := parseCache(b)
	if !ok || !maps.Equal(got, entries) {
		t.Fatalf("read back %v (%v), want %v:\n%s", got, ok, entries, b)
	}
	for name, bad := range map[string][]byte{
		"cut short":     b[:len(b)-1],
		"other version": append([]byte("hctl-hash-cache-v1\n"), b[bytes.IndexByte(b, '\n')+1:]...),
		"a field less":  []byte(cacheVersion + "\n" + sum + " 1 2 3 4 5 \"/t/x\"\n"),
		"not a number":  []byte(cacheVersion + "\n" + sum + " 1 2 x 4 5 6 \"/t/x\"\n"),
		"short hash":    []byte(cacheVersion + "\nabcd 1 2 3 4 5 6 \"/t/x\"\n"),
		"JSON":          []byte(`{"version":"hctl-hash-cache-v1","entries":{}}`),
	} {
		if got, ok := parseCache(bad); ok {
			t.Errorf("%s: used %v", name, got)
		}
	}

	// A save replaces the JSON cache of earlier versions.
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	old := filepath.Join(os.Getenv("XDG_CACHE_HOME"), "hctl", oldCacheName)
	if err := os.MkdirAll(filepath.Dir(old), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte(`{"version":"hctl-hash-cache-v1","entries":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := loadHashCache()
	c.entries = map[string]cacheEntry{filepath.Join(t.TempDir(), "x"): entries["/t/a b"]} // (its directory exists)
	if err := c.save("/elsewhere"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the old cache is still there: %v", err)
	}
	if got := loadHashCache().entries; !maps.Equal(got, c.entries) {
		t.Errorf("the saved cache reads back as %v, want %v", got, c.entries)
	}
}
