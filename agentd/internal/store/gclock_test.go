package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

// The manifest of the next deploy does not wait for the prune of the last
// one: NewUpload returns while a Collect is in the middle of its walk of
// every blob (held at its first prefix directory by the test hook).
func TestNewUploadDuringCollect(t *testing.T) {
	s := openStore(t)
	// Thousands of tiny blobs, in every prefix directory.
	var ents []ent
	for i := range 2000 {
		ents = append(ents, file(fmt.Sprintf("d%d/f%04d", i%10, i), fmt.Sprintf("content %d\n", i)))
	}
	d, err := s.ImportTarGz(bytes.NewReader(targz(t, ents...)))
	if err != nil {
		t.Fatal(err)
	}
	unpinAll(s) // so that the Collect has a tree to decide about

	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	collectWalked = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	t.Cleanup(func() { collectWalked = nil })
	type result struct {
		c   Collected
		err error
	}
	collected, ended := make(chan result, 1), make(chan struct{})
	go func() {
		defer close(ended)
		c, err := s.Collect(Refs{Digests: map[string]bool{d: true}})
		collected <- result{c, err}
	}()
	defer func() { // (also if the test fails below)
		close(release)
		<-ended
	}()
	select {
	case <-entered:
	case r := <-collected:
		t.Fatalf("Collect ended without walking the blobs: %+v, %v", r.c, r.err)
	}

	// A new release with every content held: one file renamed.
	moved := append([]ent{file("renamed", ents[0].body)}, ents[1:]...)
	entries, _, err := scanTree(writeTree(t, moved...))
	if err != nil {
		t.Fatal(err)
	}
	type created struct {
		u   *Upload
		res api.UploadCreated
		err error
	}
	done := make(chan created, 1)
	go func() {
		u, res, err := s.NewUpload(entries)
		done <- created{u, res, err}
	}()
	var up created
	select {
	case up = <-done:
	case <-time.After(time.Minute): // only a deadline: it returns at once unless it waits for the walk
		t.Fatal("NewUpload waited for Collect's walk of the blobs")
	}
	if up.err != nil || len(up.res.Missing) != 0 {
		t.Fatalf("upload of held contents: %+v, %v", up.res, up.err)
	}
	select {
	case r := <-collected:
		t.Fatalf("Collect ended while held in its walk: %+v, %v", r.c, r.err)
	default:
	}
	release <- struct{}{} // let the walk go on
	if r := <-collected; r.err != nil || r.c.Blobs != 0 || r.c.Trees != 0 {
		t.Fatalf("collect: %+v, %v; want nothing removed", r.c, r.err)
	}
	d2, err := up.u.Commit()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []ent{moved[0], moved[len(moved)-1]} {
		if got, err := os.ReadFile(filepath.Join(s.Dir(d2), e.name)); err != nil || string(got) != e.body {
			t.Errorf("%s: %q, %v", e.name, got, err)
		}
	}
}

// Uploads and imports, each relying on content of a release just dropped,
// commit while Collect runs in a loop: every tree stays whole, every blob
// a tree links stays in blobs/, and no garbage is left once it settles.
func TestCollectRacesUploads(t *testing.T) {
	s := openStore(t)
	var (
		mu   sync.Mutex
		kept = map[string][]ent{} // digest -> its files, as Refs
	)
	refs := func() Refs {
		mu.Lock()
		defer mu.Unlock()
		r := Refs{Digests: map[string]bool{}}
		for d := range kept {
			r.Digests[d] = true
		}
		return r
	}
	// tick is closed at the end of each Collect of the loop, and renewed.
	var tickMu sync.Mutex
	tick := make(chan struct{})
	stop, stopped := make(chan struct{}), make(chan struct{})
	var stopOnce sync.Once
	halt := func() {
		stopOnce.Do(func() { close(stop) })
		<-stopped
	}
	t.Cleanup(halt) // before the store is removed, also after a t.Fatal
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			unpinAll(s) // fresh trees unprotected: only refs keep them
			if _, err := s.Collect(refs()); err != nil {
				t.Errorf("collect: %v", err)
				return
			}
			tickMu.Lock()
			close(tick)
			tick = make(chan struct{})
			tickMu.Unlock()
		}
	}()
	// waitCollects returns once n whole Collects ran after its call.
	waitCollects := func(n int) {
		t.Helper()
		for range n + 1 {
			tickMu.Lock()
			c := tick
			tickMu.Unlock()
			select {
			case <-c:
			case <-stopped:
				t.Fatal("the Collect loop ended")
			}
		}
	}

	release := func(i int) []ent {
		ents := []ent{exe("bin/run", "#!/bin/sh\nexec ./app\n"), file("new", fmt.Sprintf("round %d\n", i))}
		for j := range 20 {
			ents = append(ents, file(fmt.Sprintf("lib/c%02d", j), fmt.Sprintf("common %d\n", j)))
		}
		if i > 0 {
			// The content of the release dropped this round.
			ents = append(ents, file("old", fmt.Sprintf("round %d\n", i-1)))
		}
		return ents
	}
	const n = 200
	prev := ""
	for i := range n {
		ents := release(i)
		entries, staged, err := scanTree(writeTree(t, ents...))
		if err != nil {
			t.Fatal(err)
		}
		tr, err := checkManifest(entries, s.lim)
		if err != nil {
			t.Fatal(err)
		}
		want := tr.digest()
		mu.Lock()
		kept[want] = ents // named before it exists, as a deploy's state does
		delete(kept, prev)
		mu.Unlock()
		var got string
		if i%3 == 2 {
			// A .tar.gz: build links blobs it finds, with no pin.
			got, err = s.ImportTarGz(bytes.NewReader(targz(t, ents...)))
			if err != nil {
				t.Fatalf("round %d: import: %v", i, err)
			}
		} else {
			u, res, err := s.NewUpload(entries)
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			if i%3 == 1 {
				// Whole Collects run while the upload pins what it found.
				waitCollects(2)
			}
			for _, h := range res.Missing {
				f, err := os.Open(staged[h])
				if err != nil {
					t.Fatal(err)
				}
				err = u.Put(h, f)
				f.Close()
				if err != nil {
					t.Fatalf("round %d: put: %v", i, err)
				}
			}
			if got, err = u.Commit(); err != nil {
				t.Fatalf("round %d: commit: %v", i, err)
			}
		}
		if got != want {
			t.Fatalf("round %d: digest %s, want %s", i, got, want)
		}
		checkTree(t, s, got, ents)
		prev = want
	}
	halt()
	if t.Failed() {
		return
	}
	if _, err := s.Collect(refs()); err != nil {
		t.Fatal(err)
	}
	trees, blobs := contents(t, s)
	if len(trees) != len(kept) {
		t.Errorf("trees %v, want the %d kept", trees, len(kept))
	}
	linked := map[string]bool{}
	for d, ents := range kept {
		for _, p := range checkTree(t, s, d, ents) {
			linked[p] = true
		}
	}
	if len(blobs) != len(linked) {
		t.Errorf("%d blobs, want the %d the kept trees link: %v", len(blobs), len(linked), blobs)
	}
}

// countWalks counts the prefix directories Collect walks from now on.
func countWalks(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	collectWalked = func() { n.Add(1) }
	t.Cleanup(func() { collectWalked = nil })
	return &n
}

// A Collect after which no link to a blob went skips the walk of the
// blobs; one after a tree was removed does not, and finds its garbage.
func TestCollectSkipsWalkWhenNothingWent(t *testing.T) {
	s := openStore(t)
	walks := countWalks(t)
	v1 := []ent{file("Procfile", "web: ./app\n"), file("changed", "v1\n")}
	d1, _ := upload(t, s, writeTree(t, v1...))
	if _, err := s.Collect(Refs{Digests: map[string]bool{d1: true}}); err != nil || walks.Load() == 0 {
		t.Fatalf("the first Collect after Open walked %d prefix directories (%v), want all", walks.Load(), err)
	}
	v2 := []ent{file("Procfile", "web: ./app\n"), file("changed", "v2\n")}
	d2, _ := upload(t, s, writeTree(t, v2...))
	walks.Store(0)
	both := Refs{Digests: map[string]bool{d1: true, d2: true}}
	if c, err := s.Collect(both); err != nil || walks.Load() != 0 || c != (Collected{}) {
		t.Errorf("a Collect after a deploy that removed nothing: %+v, %v, walked %d", c, err, walks.Load())
	}
	unpinAll(s)
	c, err := s.Collect(Refs{Digests: map[string]bool{d2: true}})
	if err != nil || c.Trees != 1 || c.Blobs != 1 || walks.Load() == 0 {
		t.Errorf("a Collect that removes v1: %+v, %v, walked %d; want v1's tree and its own blob", c, err, walks.Load())
	}
	checkTree(t, s, d2, v2)
	if _, blobs := contents(t, s); len(blobs) != 2 {
		t.Errorf("blobs %v, want v2's two", blobs)
	}
}

// Every way a link to a blob goes outside Collect makes the next Collect
// walk: an upload aborted after its prelink linked a blob whose tree was
// removed meanwhile, and a build that fails after adopting new blobs.
func TestCollectFindsGarbageLeftByUploads(t *testing.T) {
	s := openStore(t)
	walks := countWalks(t)
	upload(t, s, writeTree(t, file("only-a", "a\n"), file("other", "other\n")))
	// An upload relying on only-a, under another name: its prelink
	// links only-a's blob into its scratch tree.
	entries, _, err := scanTree(writeTree(t, file("x", "a\n"), file("new", "not yet sent\n")))
	if err != nil {
		t.Fatal(err)
	}
	u, res, err := s.NewUpload(entries)
	if err != nil || len(res.Missing) != 1 {
		t.Fatalf("upload: %+v, %v", res, err)
	}
	u.pre.wg.Wait()
	unpinAll(s)
	c, err := s.Collect(Refs{})
	if err != nil || c.Trees != 1 || c.Blobs != 1 {
		t.Fatalf("collect of a: %+v, %v; want its tree and the blob of other (only-a is prelinked)", c, err)
	}
	walks.Store(0)
	if c, err := s.Collect(Refs{}); err != nil || c.Blobs != 0 || walks.Load() != 0 {
		t.Errorf("collect with nothing gone: %+v, %v, walked %d", c, err, walks.Load())
	}
	u.Abort()
	if c, err := s.Collect(Refs{}); err != nil || c.Blobs != 1 {
		t.Errorf("collect after the abort: %+v, %v; want only-a's blob", c, err)
	}
	if _, blobs := contents(t, s); len(blobs) != 0 {
		t.Errorf("left %v", blobs)
	}

	// A build that fails linking its tree, after the new content became
	// a blob.
	link = func(old, new string) error {
		if filepath.Base(new) == "last" {
			return &os.LinkError{Op: "link", Old: old, New: new, Err: syscall.EIO}
		}
		return os.Link(old, new)
	}
	t.Cleanup(func() { link = os.Link })
	entries, staged, err := scanTree(writeTree(t, file("first", "1\n"), file("last", "2\n")))
	if err != nil {
		t.Fatal(err)
	}
	u, res, err = s.NewUpload(entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range res.Missing {
		f, err := os.Open(staged[h])
		if err != nil {
			t.Fatal(err)
		}
		err = u.Put(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := u.Commit(); err == nil {
		t.Fatal("commit succeeded with a failing link")
	}
	if _, blobs := contents(t, s); len(blobs) == 0 {
		t.Fatal("the failed build adopted no blob: nothing tested")
	}
	if c, err := s.Collect(Refs{}); err != nil || c.Blobs != 2 {
		t.Errorf("collect after the failed build: %+v, %v; want its 2 blobs", c, err)
	}
}

// A blob kept only because an upload pinned it is looked at again: the
// upload may end without linking it (here, it needed the content under
// another mtime, a copy).
func TestCollectFindsBlobsKeptForAPin(t *testing.T) {
	s := openStore(t)
	upload(t, s, writeTree(t, file("p", "same bytes\n")))
	dir := writeTree(t, file("p", "same bytes\n"))
	rebuilt := testMtime.Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "p"), rebuilt, rebuilt); err != nil {
		t.Fatal(err)
	}
	entries, _, err := scanTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, res, err := s.NewUpload(entries)
	if err != nil || len(res.Missing) != 0 {
		t.Fatalf("upload: %+v, %v", res, err)
	}
	unpinAll(s)
	if c, err := s.Collect(Refs{}); err != nil || c.Trees != 1 || c.Blobs != 0 {
		t.Fatalf("collect: %+v, %v; want the old tree, not its pinned blob", c, err)
	}
	d, err := u.Commit()
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Collect(Refs{Digests: map[string]bool{d: true}})
	if err != nil || c.Blobs != 1 {
		t.Errorf("collect after the commit: %+v, %v; want the old mtime's blob", c, err)
	}
	if _, blobs := contents(t, s); len(blobs) != 1 || blobs[0] != s.blobPath(sha("same bytes\n"), false, rebuilt.UnixNano()) {
		t.Errorf("blobs %v, want the new mtime's only", blobs)
	}
}

// checkTree checks that every file of the tree reads as ents says and is
// a link to its blob, and returns those blobs.
func checkTree(t *testing.T, s *Store, digest string, ents []ent) []string {
	t.Helper()
	var out []string
	for _, e := range ents {
		p := filepath.Join(s.Dir(digest), e.name)
		if got, err := os.ReadFile(p); err != nil || string(got) != e.body {
			t.Errorf("%s of %s: %q, %v", e.name, digest, got, err)
			continue
		}
		bp := s.blobPath(sha(e.body), e.mode&0o111 != 0, testMtime.UnixNano())
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		bi, err := os.Lstat(bp)
		if err != nil || !os.SameFile(fi, bi) {
			t.Errorf("%s of %s: its blob %s: %v (same file: %v)", e.name, digest, bp, err, err == nil && os.SameFile(fi, bi))
			continue
		}
		out = append(out, bp)
	}
	return out
}

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
