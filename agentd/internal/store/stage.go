package store

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/internal/artifact"
	"golang.org/x/sys/unix"
)

// A stage holds contents read before anyone knew their hashes. A manifest
// must list every file's hash before agentd can say what it lacks, so a
// client whose hash cache is cold (a fresh build) read the whole tree
// once to hash it, and agentd then read the part it lacked a second time:
// for 256 MiB of new files, hctl's 100 ms of hashing came before agentd
// wrote the first byte. A client on agentd's socket can instead hand over
// the files it has no hash for, with the mode and mtime their manifest
// entries will give; the stage reads each once, hashes what it writes, and
// answers with the hashes.
//
// What the store holds already, as the very blob (content, mode and
// mtime) its manifest entry will name, is dropped before it is written
// out; what it holds under another mode or mtime only waits, unwritten,
// for Finish. What it lacks is treated as an upload treats a received
// file: sealed (mode, mtime), synced while the rest arrives, then named
// in blobs/, pinned by the stage against Collect. The upload whose
// manifest names the stage then finds those blobs as it finds any (and
// pins them itself) before the stage lets go of them; a content the stage
// could not name is adopted from the stage's directory (Upload.Adopt) as
// if just received. A stage that ends unused removes the blobs it named
// that nothing else links.

// StageTTL is how long a stage may wait for its upload before Collect
// forgets it.
const StageTTL = 15 * time.Minute

// Stage is a set of contents read ahead of their upload's manifest.
type Stage struct {
	ID  string
	s   *Store
	dir string

	mu    sync.Mutex
	files map[string]staged // by hash
	// later are contents the store holds under another mode or mtime
	// only, kept unwritten until Finish knows whether the release needs
	// them (see Finish).
	later map[string]staged
	// claimed are the contents read so far, kept or not.
	claimed map[string]bool
	named   map[string]string // hash -> blob relative to blobs/, pinned
	bytes   int64             // read so far, kept or not (bounded by the limits)
	count   int
	used    time.Time
	done    bool
	// syncs are the kept files' fsyncs, begun as each is whole, as an
	// upload's are (earlysync.go); each names its file once synced.
	syncs syncJob
}

// staged is a content the stage kept, at dir/SHA256, with the mode and
// mtime of the file it came from.
type staged struct {
	size    int64
	exec    bool
	mtimeNs int64
}

// NewStage starts an empty stage.
func (s *Store) NewStage() (*Stage, error) {
	dir, err := os.MkdirTemp(s.tmp, "stage-")
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	st := &Stage{ID: randomID(), s: s, dir: dir, files: map[string]staged{}, later: map[string]staged{}, claimed: map[string]bool{}, named: map[string]string{}, used: time.Now()}
	st.syncs.after = st.nameBlob
	s.mu.Lock()
	s.stages[st.ID] = st
	s.mu.Unlock()
	return st, nil
}

// Put reads exactly size bytes from r and returns their sha256. kept
// reports whether the stage kept them: false when the store holds that
// content already (or the stage does). exec and mtimeNs are the file's,
// as its manifest entry will give them.
func (st *Stage) Put(size int64, exec bool, mtimeNs int64, r io.Reader) (hash string, kept bool, err error) {
	lim := st.s.lim.WithDefaults()
	st.mu.Lock()
	done := st.done
	st.bytes += size
	st.count++
	bytes, count := st.bytes, st.count
	st.used = time.Now()
	st.mu.Unlock()
	// Refused in the words of a manifest's or a .tar.gz's limits.
	switch {
	case done:
		return "", false, fmt.Errorf("stage %s: %w: already used or forgotten", st.ID, ErrInvalid)
	case size < 0:
		return "", false, fmt.Errorf("%w: a content of size %d", ErrInvalid, size)
	case bytes > lim.MaxBytes:
		return "", false, fmt.Errorf("%w: unpacked size exceeds the limit of %d bytes", artifact.ErrTooLarge, lim.MaxBytes)
	case count > lim.MaxFiles:
		return "", false, fmt.Errorf("%w: more than %d files", artifact.ErrTooLarge, lim.MaxFiles)
	}
	f, n, hash, err := receiveFile(st.dir, size, r)
	if err != nil {
		return "", false, fmt.Errorf("stage: reading a file: %w", err)
	}
	defer os.Remove(f.Name())
	if n != size {
		f.Close()
		return "", false, fmt.Errorf("%w: a staged file of %d bytes held %s (changed while read?)", ErrInvalid, size, countOf(n, size))
	}
	// The first file of a content claims it: another of the same bytes,
	// read at the same moment by another worker, is not written (nor
	// counted) twice.
	st.mu.Lock()
	twice := st.claimed[hash]
	st.claimed[hash] = true
	st.mu.Unlock()
	var held unix.Stat_t
	if twice || st.s.statBlob(blobRel(hash, exec, mtimeNs), &held) == nil {
		// Never written out: removed before writeback, it costs the disk
		// nothing.
		f.Close()
		return hash, false, nil
	}
	if st.s.anyBlobRel(hash) != "" {
		// Held under another mode or mtime only: left unwritten, for
		// Finish to keep or drop.
		if err := f.Close(); err != nil {
			return "", false, fmt.Errorf("stage: %w", err)
		}
		if err := os.Rename(f.Name(), st.laterPath(hash)); err != nil {
			return "", false, fmt.Errorf("stage: %w", err)
		}
		st.mu.Lock()
		st.later[hash] = staged{size: size, exec: exec, mtimeNs: mtimeNs}
		st.mu.Unlock()
		return hash, false, nil
	}
	writeBack(f)
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("stage: %w", err)
	}
	if err := st.keep(f.Name(), hash, staged{size: size, exec: exec, mtimeNs: mtimeNs}); err != nil {
		return "", false, err
	}
	return hash, true, nil
}

// keep takes the written file at tmp as the stage's content hash: sealed,
// synced, then named (nameBlob).
func (st *Stage) keep(tmp, hash string, f staged) error {
	p := filepath.Join(st.dir, hash)
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	st.mu.Lock()
	st.files[hash] = f
	st.mu.Unlock()
	if seal(p, f.exec, f.mtimeNs) == nil {
		// (One that could not be sealed is left to the upload.)
		st.syncs.start(p)
	}
	return nil
}

func (st *Stage) laterPath(hash string) string { return filepath.Join(st.dir, "later-"+hash) }

// Finish decides, once every file is staged, what to do with the contents
// the store holds under another mode or mtime only (a binary rebuilt
// unchanged, a fresh checkout's files). When the stage kept a content the
// store lacks, the release is new and needs a new inode of each of those,
// with its own mtime: they are written out now, beside the new ones,
// instead of copied from their old blobs at the upload's Commit, after
// everything else. When it kept none, the release may well be one the
// store holds already (the same tree checked out again), and they are
// dropped unwritten; an upload that needs them copies them, as before.
// It returns how many contents, and bytes, it kept so.
func (st *Stage) Finish() (int, int64, error) {
	st.mu.Lock()
	later := st.later
	st.later = map[string]staged{}
	anyNew := len(st.files) > 0
	st.mu.Unlock()
	kept, bytes := 0, int64(0)
	for _, hash := range slices.Sorted(maps.Keys(later)) {
		p, f := st.laterPath(hash), later[hash]
		if !anyNew {
			os.Remove(p)
			continue
		}
		if fd, err := os.Open(p); err == nil {
			writeBack(fd)
			fd.Close()
		}
		if err := st.keep(p, hash, f); err != nil {
			return kept, bytes, err
		}
		kept++
		bytes += f.size
	}
	return kept, bytes, nil
}

// nameBlob names the kept file at p (dir/SHA256), sealed and now synced,
// in blobs/, pinned until the stage ends.
func (st *Stage) nameBlob(p string) {
	if !nameEarly {
		return // (a test of Adopt's taking of unnamed contents)
	}
	hash := filepath.Base(p)
	st.mu.Lock()
	f := st.files[hash]
	st.mu.Unlock()
	rel, ok := st.s.linkBlob(p, hash, f.exec, f.mtimeNs, true)
	if !ok {
		return
	}
	st.mu.Lock()
	st.named[hash] = rel
	st.mu.Unlock()
}

// Settle waits until every kept content is synced and named: an upload
// created after it finds them as blobs. A failed fsync fails the stage.
func (st *Stage) Settle() error {
	if _, err := st.syncs.wait(); err != nil {
		return fmt.Errorf("stage %s: %w", st.ID, err)
	}
	return nil
}

// Stage returns the stage with this id.
func (s *Store) Stage(id string) (*Stage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stages[id]
	if !ok {
		return nil, fmt.Errorf("stage %q: %w (used, forgotten after %v idle, or from an agentd since restarted)", id, ErrNotFound, StageTTL)
	}
	return st, nil
}

// Adopt ends the stage for the upload created after its Settle: the
// blobs it named are the upload's to pin (NewUpload did), and any content
// the upload still lacks that the stage holds unnamed is taken as if
// received by Put. It returns the contents so taken and their bytes.
func (u *Upload) Adopt(st *Stage) (map[string]bool, int64, error) {
	st.mu.Lock()
	if st.done {
		st.mu.Unlock()
		return nil, 0, fmt.Errorf("stage %s: %w: already used or forgotten", st.ID, ErrInvalid)
	}
	st.done = true
	files := st.files
	st.mu.Unlock()
	defer st.end()
	if err := st.Settle(); err != nil {
		return nil, 0, err
	}
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return nil, 0, fmt.Errorf("upload %s: %w: already committed or aborted", u.ID, ErrInvalid)
	}
	var take []string
	for hash, f := range files {
		if want, ok := u.want[hash]; ok && want == f.size {
			take = append(take, hash)
		}
	}
	u.used = time.Now()
	u.mu.Unlock()
	adopted := map[string]bool{}
	var bytes int64
	for _, hash := range take {
		f := files[hash]
		dst := filepath.Join(u.dir, hash)
		if err := os.Rename(filepath.Join(st.dir, hash), dst); err != nil {
			return adopted, bytes, fmt.Errorf("upload: adopting staged sha256 %s: %w", hash, err)
		}
		u.received(hash, dst)
		adopted[hash] = true
		bytes += f.size
	}
	return adopted, bytes, nil
}

// Forget ends a stage that no upload will use.
func (st *Stage) Forget() {
	st.mu.Lock()
	already := st.done
	st.done = true
	st.mu.Unlock()
	if !already {
		st.end()
	}
}

// end lets go of what the stage holds: its directory, and its pins of the
// blobs it named, each removed if nothing else links or pins it.
func (st *Stage) end() {
	st.syncs.drop()
	st.s.mu.Lock()
	delete(st.s.stages, st.ID)
	st.s.mu.Unlock()
	removeAll(st.dir)
	st.mu.Lock()
	named := st.named
	st.named = nil
	st.mu.Unlock()
	st.s.unname(named, true)
}

// expired reports whether the stage has been idle past StageTTL.
func (st *Stage) expired(now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return !st.done && now.Sub(st.used) > StageTTL
}
