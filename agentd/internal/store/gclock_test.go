package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
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
	// Fresh trees unprotected (unpinAll): only refs keep them.
	halt, stopped := collectLoop(t, s, func() { unpinAll(s) }, refs, func() {
		tickMu.Lock()
		close(tick)
		tick = make(chan struct{})
		tickMu.Unlock()
	})
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
			putMissing(t, u, res.Missing, staged)
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

// collectLoop runs Collect over and over beside a test, each round after
// prep and followed by round, until stop; stop waits for the loop's end,
// and also runs at Cleanup (before the store is removed, also after a
// t.Fatal). stopped closes when the loop ended, stopped or failed.
func collectLoop(tb testing.TB, s *Store, prep func(), refs func() Refs, round func()) (stop func(), stopped <-chan struct{}) {
	quit, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stop = func() {
		once.Do(func() { close(quit) })
		<-done
	}
	tb.Cleanup(stop)
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			prep()
			if _, err := s.Collect(refs()); err != nil {
				tb.Errorf("collect: %v", err)
				return
			}
			round()
		}
	}()
	return stop, done
}
