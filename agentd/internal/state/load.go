package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"time"
)

// QuarantineDir is where refused state files are kept, beside the files,
// never deleted by agentd: apps/.quarantine/a1.json.20261203T134821.123456789Z.
const QuarantineDir = ".quarantine"

// Loaded says where the content Load returned came from.
type Loaded struct {
	// From is the file that was used: path itself, or its previous
	// generation (then Recovered is set).
	From string
	// Recovered is set when the current file was refused and the previous
	// generation was used instead.
	Recovered *Recovered
}

// Recovered tells why the current file was refused and what was lost.
type Recovered struct {
	// From is the previous generation that was used.
	From string
	// Quarantined is where the refused file is kept now ("" when it was
	// missing).
	Quarantined string
	// LostSince is when the generation used was written: changes made
	// after it are lost.
	LostSince time.Time
	// Err is why the current file was refused.
	Err error
}

// Broken is Load's error when neither the current file nor its previous
// generation is good. Nothing was moved: the file stays where it is, so
// the app is reported broken at every start until it is repaired.
type Broken struct {
	File string
	Err  error // why the current file was refused
	// PrevErr is why the previous generation was refused (wraps
	// fs.ErrNotExist when there was none).
	PrevErr error
}

func (b *Broken) Error() string {
	return fmt.Sprintf("%s: %v; previous generation: %v", b.File, b.Err, b.PrevErr)
}

func (b *Broken) Unwrap() []error { return []error{b.Err, b.PrevErr} }

// Load reads the JSON file path into v (a pointer) and asks check (may be
// nil) whether what v now holds hangs together. When path cannot be read or
// parsed, or check refuses it, the file is moved to the quarantine, v is
// reset, and the previous generation is tried the same way; when that one is
// good it is written back to path (so the next start finds it there) and
// Loaded.Recovered says what happened. When neither is good Load returns a
// *Broken and moves nothing (test for it with errors.As before anything
// else: it wraps both files' errors). When neither file exists it returns an error
// satisfying errors.Is(err, fs.ErrNotExist).
func Load(path string, v any, check func() error) (Loaded, error) {
	_, err := decode(path, v, check)
	if err == nil {
		return Loaded{From: path}, nil
	}
	reset(v)
	prev := Prev(path)
	b, perr := decode(prev, v, check)
	if perr != nil {
		reset(v)
		if errors.Is(err, fs.ErrNotExist) && errors.Is(perr, fs.ErrNotExist) {
			return Loaded{}, fmt.Errorf("read %s: %w", path, err)
		}
		return Loaded{}, &Broken{File: path, Err: err, PrevErr: perr}
	}
	rec := &Recovered{From: prev, Err: err}
	if fi, serr := os.Stat(prev); serr == nil {
		rec.LostSince = fi.ModTime()
	}
	if !errors.Is(err, fs.ErrNotExist) {
		q, qerr := Quarantine(path, err)
		if qerr != nil {
			// The refused file stays where it is: better a broken app than
			// the evidence overwritten.
			reset(v)
			return Loaded{}, &Broken{File: path, Err: errors.Join(err, qerr), PrevErr: nil}
		}
		rec.Quarantined = q
	}
	if err := restore(path, b); err != nil {
		return Loaded{}, fmt.Errorf("restore %s from %s: %w", path, prev, err)
	}
	return Loaded{From: prev, Recovered: rec}, nil
}

// restore writes b (the previous generation's content) as path, leaving
// the previous generation where it is: at every instant one of them holds
// it.
func restore(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	os.Remove(tmp)
	if err := writeTemp(tmp, b); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}

// decode reads path into v and checks it, returning the bytes read.
func decode(path string, v any, check func() error) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if check != nil {
		if err := check(); err != nil {
			return nil, fmt.Errorf("check %s: %w", path, err)
		}
	}
	return b, nil
}

// reset zeroes what v points to, so that a refused file leaves nothing in
// it (json.Unmarshal merges into maps and keeps fields the input lacks).
func reset(v any) {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv.Elem().SetZero()
	}
}

// Quarantine moves path into the quarantine beside it, under a name that
// says when, with why in a .why file beside it, and returns the new path.
// Callers that are about to replace a file nobody could load (a repair)
// call it first, so the file is kept.
func Quarantine(path string, why error) (string, error) {
	qdir := filepath.Join(filepath.Dir(path), QuarantineDir)
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", path, err)
	}
	q := filepath.Join(qdir, filepath.Base(path)+"."+time.Now().UTC().Format("20060102T150405.000000000Z"))
	if why != nil {
		// Written first: a crash leaves at worst a reason without a file,
		// never a quarantined file whose reason is unknown.
		if err := WriteFile(q+".why", []byte(why.Error()+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("quarantine %s: %w", path, err)
		}
	}
	if err := os.Rename(path, q); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", path, err)
	}
	if err := SyncDir(qdir); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", path, err)
	}
	return q, SyncDir(filepath.Dir(path))
}
