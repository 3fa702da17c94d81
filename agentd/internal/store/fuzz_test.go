package store

import (
	"encoding/json"
	"path"
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

// A manifest from a client is checked before anything touches the disk:
// whatever the bytes, checkManifest does not panic, and what it accepts
// stays inside the release.
func FuzzManifest(fz *testing.F) {
	seeds := [][]api.ManifestEntry{
		{f("Procfile", "web: x\n"), {Path: "bin", Type: api.EntryDir}, {Path: "bin/x", Type: api.EntrySymlink, Target: "../Procfile"}},
		{{Path: "a/b/up", Type: api.EntrySymlink, Target: "../.."}, {Path: "x", Type: api.EntrySymlink, Target: "a/b/up/.."}},
		{{Path: "../x", Type: api.EntryFile}},
		{{Path: "l", Type: api.EntrySymlink, Target: "."}, f("l/x", "")},
	}
	for _, s := range seeds {
		b, _ := json.Marshal(api.UploadManifest{Entries: s})
		fz.Add(b)
	}
	fz.Fuzz(func(t *testing.T, b []byte) {
		var m api.UploadManifest
		if json.Unmarshal(b, &m) != nil {
			return
		}
		tr, err := checkManifest(m.Entries, artifact.Limits{MaxBytes: 1 << 20, MaxFiles: 1000})
		if err != nil {
			return
		}
		for p, n := range tr.nodes {
			if p != path.Clean(p) || strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") {
				t.Fatalf("accepted path %q", p)
			}
			if n.typ == api.EntrySymlink && strings.HasPrefix(n.target, "/") {
				t.Fatalf("accepted symlink %q -> %q", p, n.target)
			}
		}
		again, err := checkManifest(m.Entries, artifact.Limits{MaxBytes: 1 << 20, MaxFiles: 1000})
		if err != nil || again.digest() != tr.digest() {
			t.Fatalf("a second check: %v, or another digest", err)
		}
	})
}
