package store

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

// releaseEnts is a release of n files of distinct content; gen changes
// one of them, as a one-file-changed deploy does.
func releaseEnts(n, gen int) []ent {
	ents := []ent{file("Procfile", "web: ./server\n")}
	for i := range n - 1 {
		body := fmt.Sprintf("file %d of the release\n", i)
		if i == 0 {
			body = fmt.Sprintf("the changed file, generation %d\n", gen)
		}
		ents = append(ents, file(fmt.Sprintf("lib/m%03d.py", i), body))
	}
	return ents
}

// benchStore is a store holding a 256-file release and its previous
// release (one file changed): 257 blobs, both trees referenced.
func benchStore(b *testing.B) (*Store, Refs, []api.ManifestEntry) {
	s, err := Open(filepath.Join(b.TempDir(), "store"), artifact.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { removeAll(filepath.Dir(s.dir)) })
	refs := Refs{Digests: map[string]bool{}}
	for gen := range 2 {
		d, err := s.ImportTarGz(bytes.NewReader(targz(b, releaseEnts(256, gen)...)))
		if err != nil {
			b.Fatal(err)
		}
		refs.Digests[d] = true
	}
	// A 258-entry manifest (the root, lib and 256 files) whose contents
	// are all held: the current release with one file renamed, so a tree
	// the store lacks.
	var entries []api.ManifestEntry
	for _, e := range releaseEnts(256, 1) {
		entries = append(entries, api.ManifestEntry{Path: e.name, Type: api.EntryFile, Mode: 0o644,
			Size: int64(len(e.body)), SHA256: sha(e.body), MTimeNs: testMtime.UnixNano()})
	}
	entries[1].Path = "lib/renamed.py"
	entries = append(entries, api.ManifestEntry{Path: "lib", Type: api.EntryDir, Mode: 0o755})
	return s, refs, entries
}

// BenchmarkCollect is the prune after a deploy, with nothing to remove:
// "walk" looks at every blob (the first Collect after a start, or after
// a tree was removed), "nothing-went" after nothing could have become
// garbage (gcflag.go).
func BenchmarkCollect(b *testing.B) {
	s, refs, _ := benchStore(b)
	b.Run("walk", func(b *testing.B) {
		for b.Loop() {
			s.maybeGarbage()
			if _, err := s.Collect(refs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nothing-went", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Collect(refs); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkNewUpload is the manifest of a deploy whose contents the store
// holds already.
func BenchmarkNewUpload(b *testing.B) {
	s, _, entries := benchStore(b)
	newUploads(b, s, entries)
}

// BenchmarkNewUploadWhileCollecting is the manifest of the next deploy
// while the prune of the last one walks every blob, over and over.
func BenchmarkNewUploadWhileCollecting(b *testing.B) {
	s, refs, entries := benchStore(b)
	stop, _ := collectLoop(b, s, s.maybeGarbage, func() Refs { return refs }, func() {})
	defer stop()
	newUploads(b, s, entries)
}

// newUploads times NewUpload of entries, whose contents s holds, until
// the benchmark has enough; each upload is aborted off the clock.
func newUploads(b *testing.B, s *Store, entries []api.ManifestEntry) {
	for b.Loop() {
		u, res, err := s.NewUpload(entries)
		if err != nil || len(res.Missing) != 0 {
			b.Fatalf("%+v, %v", res, err)
		}
		b.StopTimer()
		u.Abort()
		b.StartTimer()
	}
}
