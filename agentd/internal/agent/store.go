package agent

// The agent's side of the release store (package store): preparing a
// release from an upload or a .tar.gz, finding a release's directory,
// collecting by reference, and each app's writable data directory.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
	"github.com/agentd/agentd/agentd/internal/procfile"
	"github.com/agentd/agentd/agentd/internal/store"
	"github.com/agentd/agentd/agentd/internal/supervisor"
)

// stores holds each Agent's store, opened on first use. (A field of Agent
// once the core takes it over; a map keeps this file the only one edited.)
var stores sync.Map // *Agent -> *storeOnce

type storeOnce struct {
	once sync.Once
	s    *store.Store
	err  error
}

// Store returns the agent's release store under STATE/store, opening it on
// first use.
func (ag *Agent) Store() (*store.Store, error) {
	v, _ := stores.LoadOrStore(ag, &storeOnce{})
	so := v.(*storeOnce)
	so.once.Do(func() {
		so.s, so.err = store.Open(filepath.Join(ag.cfg.StateDir, "store"), artifact.Limits{MaxBytes: ag.cfg.MaxArtifactBytes})
	})
	return so.s, so.err
}

// PrepareUpload is the DeployRequest.Prepare of a deploy from a committed
// manifest-first upload: it builds the release tree from the store and
// returns its digest. A refused upload wraps store.ErrInvalid.
func (ag *Agent) PrepareUpload(u *store.Upload) func() (string, error) {
	return func() (string, error) {
		d, err := u.Commit()
		if err != nil {
			return "", err
		}
		return d, ag.storeReady(d)
	}
}

// ImportArtifact stores a .tar.gz artifact (with artifact.Unpack's checks
// and limits, as before the store) and returns its digest.
func (ag *Agent) ImportArtifact(r io.Reader) (string, error) {
	s, err := ag.Store()
	if err != nil {
		return "", err
	}
	d, err := s.ImportTarGz(r)
	if err != nil {
		return "", err
	}
	return d, ag.storeReady(d)
}

// storeReady makes a freshly built tree safe to exec, and visible under
// slugs/ too, where agentd kept release content before the store.
func (ag *Agent) storeReady(digest string) error {
	// A process of another app forked while a blob was open for writing
	// could still hold it, and an exec of it would fail with ETXTBSY.
	supervisor.ForkFence()
	s, err := ag.Store()
	if err != nil {
		return err
	}
	// slugs/sha256-… names the tree as a symlink, for what still looks
	// there (pruneSlugs removes only the link; Collect owns the tree).
	slug := filepath.Join(ag.cfg.StateDir, "slugs", filepath.Base(s.Dir(digest)))
	if _, err := os.Lstat(slug); err == nil {
		return nil
	}
	if err := os.Symlink(s.Dir(digest), slug); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("linking release %s: %w", digest, err)
	}
	return nil
}

// ReleaseDir is the directory a release's processes run in (their Dir):
// the shared read-only tree, or for an --allow-root app a private copy per
// release, so that what root writes reaches no other release.
func (ag *Agent) ReleaseDir(app string, version int, digest string, allowRoot bool) (string, error) {
	s, err := ag.Store()
	if err != nil {
		return "", err
	}
	if !allowRoot {
		if !s.Has(digest) {
			return "", fmt.Errorf("release %s of %s: content %s: %w", "v"+strconv.Itoa(version), app, digest, store.ErrNotFound)
		}
		return s.Dir(digest), nil
	}
	dir, made, err := s.Private(digest, store.PrivateName(app, version))
	if made {
		// As after an unpack (storeReady): a process of another app
		// forked while the copy was written holds its files until it
		// execs, and this release's exec of one would fail (ETXTBSY).
		supervisor.ForkFence()
	}
	return dir, err
}

// CollectStore removes from the store what refs does not name: the digest
// of every release of every app's state (quarantined and previous
// generations included) and of every running or draining process, and
// store.PrivateName(app, version) of each such release of an --allow-root
// app (storeRefs). Uploads in progress are protected by the store itself.
func (ag *Agent) CollectStore(refs store.Refs) (store.Collected, error) {
	s, err := ag.Store()
	if err != nil {
		return store.Collected{}, err
	}
	return s.Collect(refs)
}

// StoreUsage is the store's part of `hctl status`, with the same refs as
// CollectStore.
func (ag *Agent) StoreUsage(refs store.Refs) (api.StoreUsage, error) {
	s, err := ag.Store()
	if err != nil {
		return api.StoreUsage{}, err
	}
	return s.Usage(refs)
}

// DataDir is an app's writable directory, STATE/data/APP: the release
// tree is read-only, so state an app keeps on disk goes here (and, with
// HOME and TMPDIR pointing into it, what libraries write by default).
func (ag *Agent) DataDir(app string) string {
	return filepath.Join(ag.cfg.StateDir, "data", app)
}

// DataEnv creates the app's data directory (owned by its user, mode 0700)
// and returns the variables that point into it: HOME=STATE/data/APP and
// TMPDIR=STATE/data/APP/tmp.
// procEnv adds it after the base variables and before the config vars
// (an app may set its own TMPDIR), for every process and the release
// phase. userName is the app's user ("" for agentd's own).
func (ag *Agent) DataEnv(app, userName string) ([]string, error) {
	dir := ag.DataDir(app)
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("data directory of %s: %w", app, err)
	}
	uid, gid := -1, -1
	if userName != "" && os.Geteuid() == 0 {
		u, err := lookupUser(userName)
		if err != nil {
			return nil, fmt.Errorf("data directory of %s: %w", app, err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	for _, d := range []string{dir, tmp} {
		// MkdirAll leaves an existing directory's mode; the app's data is
		// its own, never readable by other apps' users.
		if err := ensureDir(d, uid, gid, 0o700); err != nil {
			return nil, fmt.Errorf("data directory of %s: %w", app, err)
		}
	}
	return []string{"HOME=" + dir, "TMPDIR=" + tmp}, nil
}

// ensureDir makes the directory d owned by uid:gid (-1: left as it is)
// with mode perm, changing only what differs: every process start passes
// here, and a change of an inode costs a journal write where a stat does
// not.
func ensureDir(d string, uid, gid int, perm os.FileMode) error {
	fi, err := os.Lstat(d)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if uid >= 0 && (!ok || int(st.Uid) != uid || int(st.Gid) != gid) {
		if err := os.Lchown(d, uid, gid); err != nil {
			return err
		}
	}
	if fi.Mode().Perm() != perm || fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		return os.Chmod(d, perm)
	}
	return nil
}

// codeDir is the directory release r's processes run in: its tree in the
// store (a private copy for an --allow-root app), or the slug directory an
// agentd before the store unpacked it into. Callers must not hold a.mu: a
// private copy may take a while.
func (ag *Agent) codeDir(a *app, r *releaseState) (string, error) {
	a.mu.Lock()
	name, allowRoot := a.st.Name, a.st.AllowRoot
	a.mu.Unlock()
	if s, err := ag.Store(); err == nil && s.Has(r.Digest) {
		return ag.ReleaseDir(name, r.Version, r.Digest, allowRoot)
	}
	if fi, err := os.Stat(ag.cfg.slugDir(r.Digest)); err == nil && fi.IsDir() {
		return ag.cfg.slugDir(r.Digest), nil
	}
	return "", &Error{Code: api.CodeNotFound, Msg: fmt.Sprintf("the code of %s of %s (%s) is no longer kept", vname(r.Version), name, shortDigest(r.Digest))}
}

// hasCode reports whether the code of digest is still kept.
func (ag *Agent) hasCode(digest string) bool {
	if s, err := ag.Store(); err == nil && s.Has(digest) {
		return true
	}
	fi, err := os.Stat(ag.cfg.slugDir(digest))
	return err == nil && fi.IsDir()
}

// procfileOf parses the Procfile of the code of digest.
func (ag *Agent) procfileOf(digest string) (*procfile.Procfile, error) {
	dir := ag.cfg.slugDir(digest)
	if s, err := ag.Store(); err == nil && s.Has(digest) {
		dir = s.Dir(digest)
	}
	return procfile.ParseFile(filepath.Join(dir, "Procfile"))
}

// storeRefs is everything that refers to code: every release of every
// app (the previous generation of its state file and quarantined files
// included), and every process that runs or drains.
func (ag *Agent) storeRefs() store.Refs {
	refs := store.Refs{Digests: map[string]bool{}, Private: map[string]bool{}}
	add := func(app string, allowRoot bool, version int, digest string) {
		refs.Digests[digest] = true
		if allowRoot {
			refs.Private[store.PrivateName(app, version)] = true
		}
	}
	ag.mu.Lock()
	apps := make([]*app, 0, len(ag.apps))
	for _, a := range ag.apps {
		apps = append(apps, a)
	}
	ag.mu.Unlock()
	for _, a := range apps {
		a.mu.Lock()
		for _, r := range a.st.Releases {
			add(a.st.Name, a.st.AllowRoot, r.Version, r.Digest)
		}
		for _, p := range a.procs {
			if r := a.release(p.release); r != nil && !p.p.Exited() {
				add(a.st.Name, a.st.AllowRoot, r.Version, r.Digest)
			}
		}
		a.mu.Unlock()
	}
	// What a state file that is not loaded still names: a previous
	// generation, a quarantined file, an app left broken.
	for _, pat := range []string{"*.json", "*.json.prev", ".quarantine/*"} {
		files, _ := filepath.Glob(filepath.Join(ag.cfg.appsDir(), pat))
		for _, f := range files {
			var st appState
			b, err := os.ReadFile(f)
			if err != nil || json.Unmarshal(b, &st) != nil {
				continue
			}
			for _, r := range st.Releases {
				add(st.Name, st.AllowRoot, r.Version, r.Digest)
			}
			for _, p := range st.Processes {
				for _, r := range st.Releases {
					if r.Version == p.Release {
						add(st.Name, st.AllowRoot, r.Version, r.Digest)
					}
				}
			}
		}
	}
	return refs
}
