package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

// ent is one tar entry of a test artifact.
type ent struct {
	name, body, link string
	typ              byte
	mode             int64
}

func file(name, body string) ent { return ent{name: name, body: body, typ: tar.TypeReg, mode: 0o644} }
func exe(name, body string) ent  { return ent{name: name, body: body, typ: tar.TypeReg, mode: 0o755} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent {
	return ent{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}

var testMtime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func targz(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, ModTime: testMtime, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "store"), artifact.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAll(filepath.Dir(s.dir)) })
	return s
}

// writeTree writes ents as a directory (as a user's build output), every
// file with testMtime.
func writeTree(t *testing.T, ents ...ent) string {
	t.Helper()
	root := t.TempDir()
	for _, e := range ents {
		p := filepath.Join(root, e.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch e.typ {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		case tar.TypeSymlink:
			if err := os.Symlink(e.link, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(e.body), os.FileMode(e.mode)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, testMtime, testMtime); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// upload deploys dir through the manifest path as hctl does, and returns
// the digest and how many bytes of content were sent.
func upload(t *testing.T, s *Store, dir string) (string, int64) {
	t.Helper()
	u, res, staged := startUpload(t, s, dir)
	sent := putMissing(t, u, res.Missing, staged)
	d, err := u.Commit()
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	return d, sent
}

// startUpload scans dir as hctl does and starts its upload; staged is
// scanTree's, for putMissing.
func startUpload(t testing.TB, s *Store, dir string) (*Upload, api.UploadCreated, map[string]string) {
	t.Helper()
	entries, staged, err := scanTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, res, err := s.NewUpload(entries)
	if err != nil {
		t.Fatal(err)
	}
	return u, res, staged
}

// putMissing puts each content in missing from its file in staged (as
// scanTree returns them) and returns how many bytes it put.
func putMissing(t testing.TB, u *Upload, missing []string, staged map[string]string) int64 {
	t.Helper()
	var sent int64
	for _, h := range missing {
		f, err := os.Open(staged[h])
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		sent += fi.Size()
		err = u.Put(h, f)
		f.Close()
		if err != nil {
			t.Fatalf("put %s: %v", h, err)
		}
	}
	return sent
}

// contents lists what the store holds: tree names and blob paths.
func contents(t *testing.T, s *Store) (trees []string, blobs []string) {
	t.Helper()
	trees, _ = readNames(filepath.Join(s.dir, "trees"))
	filepath.WalkDir(filepath.Join(s.dir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			blobs = append(blobs, p)
		}
		return nil
	})
	return trees, blobs
}

// oldDigest is the digest the slugs of agentd before the store had: the
// artifact unpacked by artifact.Unpack, digested by artifact.Digest.
func oldDigest(t *testing.T, tgz []byte) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "slug")
	if err := artifact.Unpack(bytes.NewReader(tgz), dst, artifact.Limits{}); err != nil {
		t.Fatal(err)
	}
	d, err := artifact.Digest(dst)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
