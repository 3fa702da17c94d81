package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agentd/agentd/agentd/internal/artifact"
)

// A tree whose WalkDir order differs from the sorted order of its paths
// ("a" < "a.txt" < "a/b" as names, "a.txt" < "a/b" as strings), with every
// kind of entry.
var sample = []ent{
	file("Procfile", "web: ./server\n"),
	exe("server", "#!/bin/sh\necho hi\n"),
	dir("a"),
	file("a/b", "bee"),
	file("a.txt", "text"),
	dir("empty"),
	symlink("current", "a"),
	symlink("a/up", "../a.txt"),
	file("dup1", "same"),
	file("dup2", "same"),
}

// The release digest is exactly the one agentd computed before the store
// (artifact.Unpack then artifact.Digest), on both paths, so a redeploy of
// the active content after an upgrade is still "nothing to do".
func TestDigestUnchangedFromSlugs(t *testing.T) {
	s := openStore(t)
	tgz := targz(t, sample...)
	want := oldDigest(t, tgz)
	got, err := s.ImportTarGz(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("import: digest %s, want %s", got, want)
	}
	up, _ := upload(t, s, writeTree(t, sample...))
	if up != want {
		t.Errorf("upload: digest %s, want %s", up, want)
	}
	onDisk, err := artifact.Digest(s.Dir(got))
	if err != nil {
		t.Fatal(err)
	}
	if onDisk != want {
		t.Errorf("tree on disk digests to %s, want %s", onDisk, want)
	}
}

func ino(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// Content shared by two releases is stored once: both trees link one
// blob. The second upload of a tree with one changed file sends that file.
func TestDedup(t *testing.T) {
	s := openStore(t)
	d1, sent1 := upload(t, s, writeTree(t, sample...))
	if sent1 == 0 {
		t.Fatal("first upload sent nothing")
	}
	_, sent := upload(t, s, writeTree(t, sample...))
	if sent != 0 {
		t.Errorf("unchanged tree: sent %d bytes, want 0", sent)
	}
	changed := append([]ent{file("Procfile", "web: ./server --v2\n")}, sample[1:]...)
	d2, sent := upload(t, s, writeTree(t, changed...))
	if sent != int64(len("web: ./server --v2\n")) {
		t.Errorf("one changed file: sent %d bytes, want %d", sent, len("web: ./server --v2\n"))
	}
	if d1 == d2 {
		t.Fatal("different content, same digest")
	}
	a, b := ino(t, filepath.Join(s.Dir(d1), "server")), ino(t, filepath.Join(s.Dir(d2), "server"))
	if a.Ino != b.Ino {
		t.Error("server is not shared between the two releases")
	}
	if a, b := ino(t, filepath.Join(s.Dir(d1), "dup1")), ino(t, filepath.Join(s.Dir(d1), "dup2")); a.Ino != b.Ino {
		t.Error("two files of identical content are two blobs")
	}
	// The .tar.gz path shares blobs with uploads too.
	d3, err := s.ImportTarGz(bytes.NewReader(targz(t, sample...)))
	if err != nil || d3 != d1 {
		t.Fatalf("import of the same content: %s, %v; want %s", d3, err, d1)
	}
	_, blobs := contents(t, s)
	// sample has 5 distinct (content, exec, mtime); the change adds one.
	if len(blobs) != 6 {
		t.Errorf("%d blobs, want 6: %v", len(blobs), blobs)
	}
}

// Blobs and trees are read-only; the mtime and the executable bit are the
// release's.
func TestReadOnly(t *testing.T) {
	s := openStore(t)
	d, _ := upload(t, s, writeTree(t, sample...))
	for name, want := range map[string]os.FileMode{"server": 0o555, "Procfile": 0o444, "a": 0o555 | os.ModeDir, ".": 0o555 | os.ModeDir} {
		fi, err := os.Lstat(filepath.Join(s.Dir(d), name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
		if name == "server" && !fi.ModTime().Equal(testMtime) {
			t.Errorf("server: mtime %v, want %v", fi.ModTime(), testMtime)
		}
	}
	if os.Geteuid() != 0 {
		// Root ignores modes; an app user is not the owner either way.
		if err := os.WriteFile(filepath.Join(s.Dir(d), "Procfile"), []byte("x"), 0o644); !errors.Is(err, os.ErrPermission) {
			t.Errorf("writing a blob: %v, want permission denied", err)
		}
		if err := os.WriteFile(filepath.Join(s.Dir(d), "new"), []byte("x"), 0o644); !errors.Is(err, os.ErrPermission) {
			t.Errorf("creating a file in a tree: %v, want permission denied", err)
		}
	}
}

// A tree whose links would pass the filesystem's cap (EMLINK) gets its own
// read-only copy of that file, and the same digest.
func TestEMLINKCopies(t *testing.T) {
	s := openStore(t)
	first, _ := upload(t, s, writeTree(t, sample...))
	link = func(old, new string) error {
		if strings.Contains(new, string(filepath.Separator)+"tree-") {
			return &os.LinkError{Op: "link", Old: old, New: new, Err: syscall.EMLINK}
		}
		return os.Link(old, new)
	}
	t.Cleanup(func() { link = os.Link })
	removeAll(s.Dir(first))
	d, _ := upload(t, s, writeTree(t, sample...))
	p := filepath.Join(s.Dir(d), "server")
	if st := ino(t, p); st.Nlink != 1 {
		t.Errorf("server has %d links, want its own copy", st.Nlink)
	}
	if fi, _ := os.Lstat(p); fi.Mode() != 0o555 || !fi.ModTime().Equal(testMtime) {
		t.Errorf("copy: mode %v mtime %v", fi.Mode(), fi.ModTime())
	}
	if got, err := artifact.Digest(s.Dir(d)); err != nil || got != d {
		t.Errorf("digest of the copied tree %s, %v; want %s", got, err, d)
	}
}

// An --allow-root release gets a writable copy; what it writes reaches
// neither the blobs nor another release of the same content.
func TestPrivateCopy(t *testing.T) {
	s := openStore(t)
	d, _ := upload(t, s, writeTree(t, sample...))
	p, made, err := s.Private(d, PrivateName("app", 3))
	if err != nil || !made {
		t.Fatalf("the first private copy: made %v, %v", made, err)
	}
	// Asked again (the release's next process): the same copy, not made
	// again, so its caller need not fence forks again.
	if again, made, err := s.Private(d, PrivateName("app", 3)); again != p || made || err != nil {
		t.Errorf("the copy asked again: %s, made %v, %v", again, made, err)
	}
	if err := os.WriteFile(filepath.Join(p, "server"), []byte("evil"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(p, "Procfile"), 0o777); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(s.Dir(d), "server")); string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("the shared tree sees the private write: %q", b)
	}
	if fi, _ := os.Lstat(filepath.Join(s.Dir(d), "Procfile")); fi.Mode() != 0o444 {
		t.Errorf("the shared tree sees the private chmod: %v", fi.Mode())
	}
	p2, _, err := s.Private(d, PrivateName("app", 4))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(p2, "server")); string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("a rollback's copy sees the earlier release's write: %q", b)
	}
	if _, _, err := s.Private("sha256:nope", "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad digest: %v", err)
	}
	if _, _, err := s.Private(d, "../x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}
}

// A blob damaged on disk (a root process wrote a tree it shared) is
// never built on: the next upload of that content is asked for it, and
// the damaged blob and tree are replaced.
func TestDamagedBlobReplaced(t *testing.T) {
	s := openStore(t)
	tree := writeTree(t, sample...)
	d, _ := upload(t, s, tree)
	p := filepath.Join(s.Dir(d), "a.txt")
	os.Chmod(p, 0o644)
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	d2, sent := upload(t, s, tree)
	if d2 != d || sent != int64(len("text")) {
		t.Errorf("upload after the damage: %s, sent %d bytes; want %s and the damaged file's 4", d2, sent, d)
	}
	if b, err := os.ReadFile(filepath.Join(s.Dir(d), "a.txt")); err != nil || string(b) != "text" {
		t.Errorf("tree after the repair: %q, %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(s.Dir(d), "a.txt")); err != nil || fi.Mode() != 0o444 {
		t.Errorf("repaired blob: %v, %v", fi, err)
	}
	if got, err := artifact.Digest(s.Dir(d)); err != nil || got != d {
		t.Errorf("digest of the repaired tree: %s, %v", got, err)
	}
}
