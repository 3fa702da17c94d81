package store

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func f(p, body string) api.ManifestEntry {
	return api.ManifestEntry{Path: p, Type: api.EntryFile, Mode: 0o644, Size: int64(len(body)), SHA256: sha(body)}
}

// A manifest that lies, in its hashes or its sizes, is refused and
// changes nothing in the store.
func TestLyingManifest(t *testing.T) {
	s := openStore(t)
	honest, _ := upload(t, s, writeTree(t, sample...))
	trees0, blobs0 := contents(t, s)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", what, err)
		}
		if trees, blobs := contents(t, s); len(trees) != len(trees0) || len(blobs) != len(blobs0) {
			t.Errorf("%s changed the store: %v %v", what, trees, blobs)
		}
	}
	u, res, err := s.NewUpload([]api.ManifestEntry{f("Procfile", "web: x\n"), f("big", "0123456789")})
	if err != nil || len(res.Missing) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	check("bytes of another hash", u.Put(sha("web: x\n"), strings.NewReader("web: y\n")))
	check("fewer bytes", u.Put(sha("0123456789"), strings.NewReader("01234")))
	check("more bytes", u.Put(sha("0123456789"), strings.NewReader("0123456789abc")))
	check("content the upload did not ask for", u.Put(sha("other"), strings.NewReader("other")))
	_, err = u.Commit()
	check("commit with files missing", err)
	if err := u.Put(sha("web: x\n"), strings.NewReader("web: x\n")); err != nil {
		t.Errorf("an honest put after lies: %v", err)
	}
	u.Abort()
	if _, err := s.Upload(u.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("aborted upload still found: %v", err)
	}
	check("a commit after abort", func() error { _, err := u.Commit(); return err }())
	// A manifest that gives known content another size: agentd asks for
	// the content rather than trust its blob, and the real bytes of that
	// hash cannot have that size.
	lie := f("Procfile", "web: ./server\n")
	lie.Size = 3
	lu, lres, err := s.NewUpload([]api.ManifestEntry{lie})
	if err != nil || len(lres.Missing) != 1 {
		t.Fatalf("known hash with a lying size: %+v, %v; want the content asked for", lres, err)
	}
	check("the real bytes under a lying size", lu.Put(lie.SHA256, strings.NewReader("web: ./server\n")))
	_, err = lu.Commit()
	check("commit of the lying size", err)
	lu.Abort()
	_, _, err = s.NewUpload([]api.ManifestEntry{f("a", "x"), {Path: "b", Type: api.EntryFile, Size: 2, SHA256: sha("x")}})
	check("one hash with two sizes", err)
	if !s.Has(honest) {
		t.Error("the honest release is gone")
	}
}

// Every refusal of the artifact rules holds for a manifest, and refused
// input changes nothing.
func TestHostileManifest(t *testing.T) {
	s := openStore(t)
	small := artifact.Limits{MaxBytes: 10, MaxFiles: 3}
	cases := []struct {
		name    string
		entries []api.ManifestEntry
		lim     artifact.Limits
		want    error
	}{
		{"absolute path", []api.ManifestEntry{f("/etc/passwd", "x")}, artifact.Limits{}, ErrInvalid},
		{"dot dot", []api.ManifestEntry{f("../x", "x")}, artifact.Limits{}, ErrInvalid},
		{"dot dot inside", []api.ManifestEntry{f("a/../../x", "x")}, artifact.Limits{}, ErrInvalid},
		{"NUL", []api.ManifestEntry{f("a\x00b", "x")}, artifact.Limits{}, ErrInvalid},
		{"device", []api.ManifestEntry{{Path: "dev", Type: "chardev"}}, artifact.Limits{}, ErrInvalid},
		{"fifo", []api.ManifestEntry{{Path: "p", Type: "fifo"}}, artifact.Limits{}, ErrInvalid},
		{"setuid", []api.ManifestEntry{{Path: "s", Type: api.EntryFile, Mode: 0o4755, SHA256: sha("")}}, artifact.Limits{}, ErrInvalid},
		{"bad hash", []api.ManifestEntry{{Path: "s", Type: api.EntryFile, SHA256: "ABC"}}, artifact.Limits{}, ErrInvalid},
		{"negative size", []api.ManifestEntry{{Path: "s", Type: api.EntryFile, Size: -1, SHA256: sha("")}}, artifact.Limits{}, ErrInvalid},
		{"absolute symlink", []api.ManifestEntry{{Path: "l", Type: api.EntrySymlink, Target: "/etc"}}, artifact.Limits{}, ErrInvalid},
		{"symlink out", []api.ManifestEntry{{Path: "a/l", Type: api.EntrySymlink, Target: "../../x"}}, artifact.Limits{}, ErrInvalid},
		{"symlink chain out", []api.ManifestEntry{
			{Path: "a/b/up", Type: api.EntrySymlink, Target: "../.."},
			{Path: "x", Type: api.EntrySymlink, Target: "a/b/up/.."}}, artifact.Limits{}, ErrInvalid},
		{"symlink loop", []api.ManifestEntry{
			{Path: "a", Type: api.EntrySymlink, Target: "b"},
			{Path: "b", Type: api.EntrySymlink, Target: "a"}}, artifact.Limits{}, ErrInvalid},
		{"through a symlink", []api.ManifestEntry{
			{Path: "l", Type: api.EntrySymlink, Target: "."}, f("l/x", "x")}, artifact.Limits{}, ErrInvalid},
		{"file under a file", []api.ManifestEntry{f("a", "x"), f("a/b", "y")}, artifact.Limits{}, ErrInvalid},
		{"duplicate", []api.ManifestEntry{f("a", "x"), f("./a", "y")}, artifact.Limits{}, ErrInvalid},
		{"root not a dir", []api.ManifestEntry{f(".", "x")}, artifact.Limits{}, ErrInvalid},
		{"too large", []api.ManifestEntry{f("a", "0123456789a")}, small, artifact.ErrTooLarge},
		{"too large together", []api.ManifestEntry{f("a", "012345"), f("b", "678901")}, small, artifact.ErrTooLarge},
		{"too many files", []api.ManifestEntry{f("a/b/c/d", "x")}, small, artifact.ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.lim = c.lim
			if _, _, err := s.NewUpload(c.entries); !errors.Is(err, c.want) {
				t.Errorf("NewUpload: %v, want %v", err, c.want)
			}
			if trees, blobs := contents(t, s); len(trees)+len(blobs) != 0 || len(s.uploads) != 0 {
				t.Errorf("refused manifest left %v %v %v", trees, blobs, s.uploads)
			}
		})
	}
}

// The .tar.gz path keeps artifact.Unpack's refusals, and a refused
// artifact leaves the store as it was.
func TestHostileTarGz(t *testing.T) {
	s := openStore(t)
	cases := map[string][]byte{
		"dot dot":        targz(t, file("../x", "x")),
		"absolute":       targz(t, file("/etc/x", "x")),
		"device":         targz(t, ent{name: "dev", typ: tar.TypeChar}),
		"symlink out":    targz(t, symlink("l", "../../etc")),
		"symlink chain":  targz(t, symlink("a/b/up", "../.."), symlink("x", "a/b/up/..")),
		"through a link": targz(t, symlink("l", "."), file("l/x", "x")),
		"setuid":         targz(t, ent{name: "s", typ: tar.TypeReg, mode: 0o4755}),
		"not gzip":       []byte("plain"),
	}
	for name, tgz := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := s.ImportTarGz(bytes.NewReader(tgz))
			if !errors.Is(err, artifact.ErrInvalid) {
				t.Errorf("import: %v, want artifact.ErrInvalid", err)
			}
			if trees, blobs := contents(t, s); len(trees)+len(blobs) != 0 {
				t.Errorf("left %v %v", trees, blobs)
			}
		})
	}
	s.lim = artifact.Limits{MaxBytes: 4}
	if _, err := s.ImportTarGz(bytes.NewReader(targz(t, file("a", "12345")))); !errors.Is(err, artifact.ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
}
