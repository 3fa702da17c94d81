package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
)

// UploadTTL is how long an upload may go untouched before a Collect
// forgets it (and unpins what it relied on).
const UploadTTL = 15 * time.Minute

// Upload is a manifest-first upload in progress: its manifest is checked,
// the content it lacked is arriving, and everything it relies on is pinned
// against Collect until it is committed or aborted.
type Upload struct {
	ID string
	s  *Store
	t  *tree
	// dir holds the files received so far, named by their hash.
	dir string

	mu   sync.Mutex
	want map[string]int64 // missing hash -> size, until received
	got  map[string]string
	// replace: contents whose blob did not match (see NewUpload), to be
	// stored afresh from what this upload received.
	replace map[string]bool
	// first is the first file of each missing content in the manifest:
	// the one whose mode and mtime its received file takes (see build);
	// sealed, the received files that took them already.
	first  map[string]*node
	sealed map[string]bool
	pins   []string
	used   time.Time
	done   bool
	// copies are the contents the store holds under another mode or
	// mtime only, copied into dir while the rest arrives (prepareCopies).
	copies copyJob
	// pre is the tree begun while the rest arrives (prelink.go).
	pre *prelink
	// syncs are the received files' fsyncs, begun as each is whole
	// (earlysync.go).
	syncs syncJob
	// named: the received contents named in blobs/ once synced
	// (earlyname.go), hash -> blob relative to blobs/.
	named map[string]string
	// kept: Commit's build linked into its tree every file of dir it
	// adopted as a blob, so removing dir leaves no garbage (gcflag.go).
	kept bool
}

// NewUpload checks a manifest (the artifact rules, see checkManifest) and
// starts an upload of it. The answer lists the content hashes the store
// has no blob of. Nothing is stored for a refused manifest.
func (s *Store) NewUpload(entries []api.ManifestEntry) (*Upload, api.UploadCreated, error) {
	t, err := checkManifest(entries, s.lim)
	if err != nil {
		return nil, api.UploadCreated{}, err
	}
	u := &Upload{ID: randomID(), s: s, t: t, want: map[string]int64{}, got: map[string]string{}, replace: map[string]bool{},
		first: map[string]*node{}, sealed: map[string]bool{}, used: time.Now()}
	u.syncs.after = u.nameBlob
	res := api.UploadCreated{ID: u.ID, Missing: []string{}, Files: len(t.files), Bytes: t.bytes}
	sizes := map[string]int64{}
	exact := map[string]string{} // hash -> the blob of its first entry, relative to blobs/
	firsts := map[string]*node{} // hash -> its first entry
	for _, n := range t.files {
		if sz, ok := sizes[n.hash]; ok && sz != n.size {
			return nil, api.UploadCreated{}, invalidf(n.path, "size %d, but another entry with sha256 %s has size %d", n.size, n.hash, sz)
		}
		if _, ok := sizes[n.hash]; !ok {
			exact[n.hash] = blobRel(n.hash, n.exec, n.mtimeNs)
			firsts[n.hash] = n
		}
		sizes[n.hash] = n.size
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.dir, err = os.MkdirTemp(s.tmp, "upload-"); err != nil {
		return nil, api.UploadCreated{}, fmt.Errorf("upload: %w", err)
	}
	var toCopy map[string]string // hash -> a blob of it under another mode or mtime
	for _, h := range slices.Sorted(maps.Keys(sizes)) {
		// The blob of the very same file, as in the last release, is the
		// common case: one stat, not a directory listing. Under s.mu, so
		// that what it finds is pinned before a Collect could remove it.
		b, same := exact[h], true
		var st unix.Stat_t
		err := s.statBlob(b, &st)
		if err != nil {
			if b, same = s.anyBlobRel(h), false; b != "" {
				err = s.statBlob(b, &st)
			}
		}
		if b != "" {
			if err != nil {
				removeAll(u.dir)
				return nil, api.UploadCreated{}, fmt.Errorf("upload: blobs/%s: %w", b, err)
			}
			if st.Size == sizes[h] {
				u.pins = append(u.pins, h)
				if !same {
					if toCopy == nil {
						toCopy = map[string]string{}
					}
					toCopy[h] = filepath.Join(s.dir, "blobs", b)
				}
				continue
			}
			// Either the manifest lies or the blob was changed on disk (a
			// root process writing a tree it shares). Never build on it:
			// ask for the content. A liar cannot send bytes of that hash
			// and another size, so Put refuses it; true content replaces
			// the damaged blob at Commit.
			u.replace[h] = true
		}
		u.want[h] = sizes[h]
		u.first[h] = firsts[h]
		res.Missing = append(res.Missing, h)
		res.MissingBytes += sizes[h]
	}
	for _, h := range u.pins {
		s.pinned[h]++
	}
	s.uploads[u.ID] = u
	if !s.Has(t.digest()) {
		// (A tree of this digest is reused as it is: no copy needed.)
		u.startCopies(toCopy)
		held := map[string]bool{}
		for _, h := range u.pins {
			held[h] = true
		}
		u.pre = s.startPrelink(t, held)
	}
	return u, res, nil
}

// Upload returns the upload in progress with this id.
func (s *Store) Upload(id string) (*Upload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.uploads[id]
	if !ok {
		return nil, fmt.Errorf("upload %q: %w (finished, expired after %v idle, or from an agentd since restarted)", id, ErrNotFound, UploadTTL)
	}
	return u, nil
}

// Put receives the content with this hash, which the upload listed as
// missing. Bytes that do not hash to it, or more or fewer than the
// manifest said, are refused and leave the upload as it was.
func (u *Upload) Put(hash string, r io.Reader) error {
	u.mu.Lock()
	size, ok := u.want[hash]
	_, have := u.got[hash]
	done := u.done
	u.used = time.Now()
	u.mu.Unlock()
	switch {
	case done:
		return fmt.Errorf("upload %s: %w: already committed or aborted", u.ID, ErrInvalid)
	case have:
		return nil // a retried PUT
	case !ok:
		return fmt.Errorf("%w: sha256 %q is not content this upload lacks", ErrInvalid, hash)
	}
	f, n, got, err := receiveFile(u.dir, size, r)
	if err != nil {
		return fmt.Errorf("upload: receiving sha256 %s: %w", hash, err)
	}
	defer os.Remove(f.Name())
	if n == size {
		writeBack(f)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("upload: receiving sha256 %s: %w", hash, err)
	}
	if n != size {
		return fmt.Errorf("%w: sha256 %s: received %s bytes, the manifest says %d", ErrInvalid, hash, countOf(n, size), size)
	}
	if got != hash {
		return fmt.Errorf("%w: the bytes sent as sha256 %s hash to %s", ErrInvalid, hash, got)
	}
	dst := filepath.Join(u.dir, hash)
	if err := os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	u.received(hash, dst)
	return nil
}

// received takes the whole, checked content with this hash, now at dst
// (dir/SHA256), as no longer missing.
func (u *Upload) received(hash, dst string) {
	// Its mode and mtime now, while the rest arrives, not at Commit (a
	// failure leaves it to build).
	sealed := false
	if n := u.first[hash]; n != nil {
		sealed = seal(dst, n.exec, n.mtimeNs) == nil
	}
	// Recorded before its fsync begins, which names it in blobs/ once
	// done if it is sealed (nameBlob).
	u.mu.Lock()
	u.sealed[hash] = sealed
	u.mu.Unlock()
	// Begun before the content counts as received: Commit, which waits
	// for the fsyncs, can only run once nothing is missing.
	u.syncs.start(dst)
	u.mu.Lock()
	delete(u.want, hash)
	u.got[hash] = dst
	u.mu.Unlock()
}

// receiveFile copies r into a new file in dir, at most size+1 bytes (the
// one more tells an input longer than said), and hashes what it writes.
// It returns the file, open, the bytes written and their sha256; the
// caller closes it and removes it unless it renames it. On an error
// nothing is left.
func receiveFile(dir string, size int64, r io.Reader) (*os.File, int64, string, error) {
	f, err := os.CreateTemp(dir, ".part-")
	if err != nil {
		return nil, 0, "", err
	}
	h := sha256.New()
	buf := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(r, size+1), *buf)
	copyBufs.Put(buf)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, n, "", err
	}
	return f, n, hex.EncodeToString(h.Sum(nil)), nil
}

// writeBack starts writing f out, without waiting: the disk works while
// the rest of an upload is still coming, and the fsync of each file then
// mostly finds it done.
func writeBack(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// copyBufs are receiveFile's buffers: 256 KiB, eight times io.Copy's, so
// a content is written with an eighth of the system calls; one per stream
// in use, so memory stays small.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func countOf(n, size int64) string {
	if n > size {
		return fmt.Sprintf("more than %d", size)
	}
	return fmt.Sprint(n)
}

// Missing is how many of the contents the store lacked are still to come.
func (u *Upload) Missing() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.want)
}

// Commit builds the release tree once every missing content has arrived,
// returns its digest and ends the upload. An incomplete upload is refused
// and stays open for the rest.
func (u *Upload) Commit() (string, error) {
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return "", fmt.Errorf("upload %s: %w: already committed or aborted", u.ID, ErrInvalid)
	}
	if len(u.want) > 0 {
		n := len(u.want)
		u.mu.Unlock()
		return "", fmt.Errorf("%w: upload %s still lacks %d of the files its manifest lists", ErrInvalid, u.ID, n)
	}
	u.done = true
	u.mu.Unlock()
	defer u.end()
	if err := u.copies.wait(); err != nil {
		return "", fmt.Errorf("upload %s: %w", u.ID, err)
	}
	// Every received file durable before any name refers to it (the
	// copies are already): most were synced while the rest arrived.
	synced, err := u.syncs.wait()
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", u.ID, err)
	}
	u.mu.Lock()
	got, sealed := maps.Clone(u.got), maps.Clone(u.sealed)
	for h := range u.named {
		// A blob now, found by build as any blob is: no longer staged
		// (another mode or mtime of it is a copy, as of any blob).
		delete(got, h)
	}
	u.mu.Unlock()
	var rest []string
	for _, p := range got {
		if !synced[p] {
			rest = append(rest, p)
		}
	}
	if err := syncFiles(rest); err != nil {
		return "", fmt.Errorf("upload %s: %w", u.ID, err)
	}
	d, kept, err := u.s.build(u.t, got, u.replace, sealed, u.pre)
	u.kept = kept // (read by end, deferred above, in this goroutine)
	return d, err
}

// syncFiles fsyncs files, several at once: the filesystem's journal then
// commits them together instead of one commit per file.
func syncFiles(paths []string) error {
	const workers = 8
	errs := make(chan error, len(paths))
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(workers, len(paths)) {
		wg.Go(func() {
			for p := range next {
				errs <- syncFile(p)
			}
		})
	}
	for _, p := range paths {
		next <- p
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// syncFile fsyncs one file; a variable so a test can make it fail.
var syncFile = func(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Abort forgets the upload and what it received.
func (u *Upload) Abort() {
	u.mu.Lock()
	already := u.done
	u.done = true
	u.mu.Unlock()
	if !already {
		u.end()
	}
}

func (u *Upload) end() {
	// The copies and the prelink read pinned blobs and write into dir
	// and the scratch directory: both must outlive them.
	u.copies.stop()
	u.pre.stop()
	u.syncs.drop()
	s := u.s
	s.mu.Lock()
	for _, h := range u.pins {
		if s.pinned[h]--; s.pinned[h] <= 0 {
			delete(s.pinned, h)
		}
	}
	u.pins = nil
	delete(s.uploads, u.ID)
	s.mu.Unlock()
	removeAll(u.dir)
	if !u.kept {
		u.unnameBlobs()
		// Aborted, expired or failed: what it adopted or pinned may be
		// linked by nothing now. (Marked after the removal: see gcflag.go.)
		s.maybeGarbage()
	}
}

// expired reports whether the upload has been idle past UploadTTL.
func (u *Upload) expired(now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return !u.done && now.Sub(u.used) > UploadTTL
}
