package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Identical uploads unpacked side by side (two hosts' CI jobs, a retried
// deploy) all succeed and share one slug: the rename that loses the race
// is no error.
// (They go to the release store: one tree, whatever the order.)
func TestConcurrentIdenticalUnpacks(t *testing.T) {
	dir := t.TempDir()
	ag, err := New(Config{StateDir: filepath.Join(dir, "state"), RuntimeDir: filepath.Join(dir, "run"),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close(true)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string]string{"Procfile": "web: ./app\n", "app": "#!/bin/sh\nexec sleep 1\n"} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()

	const n = 8
	digests := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { digests[i], errs[i] = ag.ImportArtifact(bytes.NewReader(buf.Bytes())) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("unpack %d: %v", i, errs[i])
		} else if digests[i] != digests[0] {
			t.Errorf("unpack %d: digest %s, want %s", i, digests[i], digests[0])
		}
	}
	trees, _ := os.ReadDir(filepath.Join(ag.cfg.StateDir, "store", "trees"))
	if len(trees) != 1 {
		var names []string
		for _, s := range trees {
			names = append(names, s.Name())
		}
		t.Errorf("the store holds trees %v, want one", names)
	}
}
