package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/internal/artifact"
)

func storeAgent(t *testing.T) *Agent {
	t.Helper()
	dir := t.TempDir()
	ag, err := New(Config{StateDir: filepath.Join(dir, "state"), RuntimeDir: filepath.Join(dir, "run"),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ag.Close(true)
		// Trees are read-only: give TempDir's cleanup its write bits back.
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	return ag
}

func appTarGz(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range []struct{ name, body string }{{"Procfile", "web: ./app\n"}, {"app", "#!/bin/sh\nexec sleep 1\n"}} {
		h := &tar.Header{Name: e.name, Mode: 0o755, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// Identical .tar.gz imports side by side all succeed with one tree, whose
// digest is the one agentd gave this content before the store (so an
// upgraded agentd still says "already active, nothing to do"), and the
// release's directory is the read-only tree, or a private copy for an
// --allow-root app.
func TestImportArtifact(t *testing.T) {
	ag := storeAgent(t)
	tgz := appTarGz(t)
	old := filepath.Join(t.TempDir(), "slug")
	if err := artifact.Unpack(bytes.NewReader(tgz), old, artifact.Limits{}); err != nil {
		t.Fatal(err)
	}
	want, err := artifact.Digest(old)
	if err != nil {
		t.Fatal(err)
	}
	digests := make([]string, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range digests {
		wg.Go(func() { digests[i], errs[i] = ag.ImportArtifact(bytes.NewReader(tgz)) })
	}
	wg.Wait()
	for i := range digests {
		if errs[i] != nil || digests[i] != want {
			t.Errorf("import %d: %s, %v; want %s", i, digests[i], errs[i], want)
		}
	}
	dir, err := ag.ReleaseDir("a", 1, want, false)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "Procfile")); err != nil || string(b) != "web: ./app\n" {
		t.Errorf("release dir Procfile: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(ag.cfg.StateDir, "slugs", filepath.Base(dir), "app")); err != nil || fi.Mode().Perm() != 0o555 {
		t.Errorf("slug link to the tree: %v, %v", fi, err)
	}
	priv, err := ag.ReleaseDir("a", 2, want, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(priv, "app"), []byte("changed"), 0o755); err != nil {
		t.Errorf("an --allow-root release cannot write its copy: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "app")); string(b) != "#!/bin/sh\nexec sleep 1\n" {
		t.Errorf("the shared tree sees a private write: %q", b)
	}
}

// Each app gets its own data directory, HOME and TMPDIR point into it.
func TestDataEnv(t *testing.T) {
	ag := storeAgent(t)
	env, err := ag.DataEnv("web", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(ag.cfg.StateDir, "data", "web")
	if want := []string{"HOME=" + dir, "TMPDIR=" + filepath.Join(dir, "tmp")}; !slices.Equal(env, want) {
		t.Errorf("env %q, want %q", env, want)
	}
	for _, d := range []string{dir, filepath.Join(dir, "tmp")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want a 0700 directory", d, fi, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "x"), nil, 0o600); err != nil {
		t.Errorf("data dir not writable: %v", err)
	}
	if _, err := ag.DataEnv("web", ""); err != nil {
		t.Errorf("second call: %v", err)
	}
}
