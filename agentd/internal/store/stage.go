package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/internal/artifact"
)

// A stage holds contents read before anyone knew their hashes. A manifest
// must list every file's hash before agentd can say what it lacks, so a
// client whose hash cache is cold (a fresh build) read the whole tree
// once to hash it, and agentd then read the part it lacked a second time:
// for 256 MiB of new files, hctl's 100 ms of hashing came before agentd
// wrote the first byte. A client on agentd's socket can instead hand over
// the files it has no hash for; the stage reads each one once, hashes
// what it writes, and answers with the hashes. The manifest that follows
// names the stage, and the upload adopts what it lacks from it
// (Upload.Adopt) as if it had been received.
//
// What the store holds already is not kept (nor written out): a stage
// holds only new contents, in its own directory under the scratch
// directory, so Collect has nothing of it to spare, and a crash leaves
// nothing but that directory, which Open removes.

// StageTTL is how long a stage may wait for its upload before Collect
// forgets it.
const StageTTL = 15 * time.Minute

// Stage is a set of contents read ahead of their upload's manifest.
type Stage struct {
	ID  string
	s   *Store
	dir string

	mu    sync.Mutex
	files map[string]int64 // hash -> size, kept in dir/SHA256
	bytes int64            // read so far, kept or not (bounded by the limits)
	count int
	used  time.Time
	done  bool
}

// NewStage starts an empty stage.
func (s *Store) NewStage() (*Stage, error) {
	dir, err := os.MkdirTemp(s.tmp, "stage-")
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	st := &Stage{ID: randomID(), s: s, dir: dir, files: map[string]int64{}, used: time.Now()}
	s.mu.Lock()
	s.stages[st.ID] = st
	s.mu.Unlock()
	return st, nil
}

// Put reads exactly size bytes from r and returns their sha256. kept
// reports whether the stage kept them: false when the store holds that
// content already (or the stage does).
func (st *Stage) Put(size int64, r io.Reader) (hash string, kept bool, err error) {
	lim := st.s.lim.WithDefaults()
	st.mu.Lock()
	done := st.done
	st.bytes += size
	st.count++
	over := st.bytes > lim.MaxBytes || st.count > lim.MaxFiles
	st.used = time.Now()
	st.mu.Unlock()
	switch {
	case done:
		return "", false, fmt.Errorf("stage %s: %w: already used or forgotten", st.ID, ErrInvalid)
	case size < 0:
		return "", false, fmt.Errorf("%w: a content of size %d", ErrInvalid, size)
	case over:
		return "", false, fmt.Errorf("%w: the staged files exceed the limits of a release (%d files, %d bytes)", artifact.ErrTooLarge, lim.MaxFiles, lim.MaxBytes)
	}
	f, err := os.CreateTemp(st.dir, ".part-")
	if err != nil {
		return "", false, fmt.Errorf("stage: %w", err)
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	buf := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(r, size+1), *buf)
	copyBufs.Put(buf)
	if err != nil {
		f.Close()
		return "", false, fmt.Errorf("stage: reading a file: %w", err)
	}
	if n != size {
		f.Close()
		return "", false, fmt.Errorf("%w: a staged file of %d bytes held %s (changed while read?)", ErrInvalid, size, countOf(n, size))
	}
	hash = hex.EncodeToString(h.Sum(nil))
	st.mu.Lock()
	_, twice := st.files[hash]
	st.mu.Unlock()
	if twice || st.s.anyBlobRel(hash) != "" {
		// Never written out: removed before writeback, it costs the disk
		// nothing.
		f.Close()
		return hash, false, nil
	}
	// Written out now, as Put's received files are: the disk works while
	// the rest arrives.
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("stage: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(st.dir, hash)); err != nil {
		return "", false, fmt.Errorf("stage: %w", err)
	}
	st.mu.Lock()
	st.files[hash] = size
	st.mu.Unlock()
	return hash, true, nil
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

// Adopt takes from the stage every content the upload lacks, as if each
// had been received by Put, and ends the stage. It returns the contents
// adopted and their bytes; the upload still lacks the rest.
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
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return nil, 0, fmt.Errorf("upload %s: %w: already committed or aborted", u.ID, ErrInvalid)
	}
	var take []string
	for hash, size := range files {
		if want, ok := u.want[hash]; ok && want == size {
			take = append(take, hash)
		}
	}
	u.used = time.Now()
	u.mu.Unlock()
	adopted := map[string]bool{}
	var bytes int64
	for _, hash := range take {
		dst := filepath.Join(u.dir, hash)
		if err := os.Rename(filepath.Join(st.dir, hash), dst); err != nil {
			return adopted, bytes, fmt.Errorf("upload: adopting staged sha256 %s: %w", hash, err)
		}
		u.received(hash, dst)
		adopted[hash] = true
		bytes += files[hash]
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

func (st *Stage) end() {
	st.s.mu.Lock()
	delete(st.s.stages, st.ID)
	st.s.mu.Unlock()
	removeAll(st.dir)
}

// expired reports whether the stage has been idle past StageTTL.
func (st *Stage) expired(now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return !st.done && now.Sub(st.used) > StageTTL
}
