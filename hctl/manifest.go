package main

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"github.com/agentd/agentd/agentd/api"
)

// scannedFile is a regular file of a scanned tree.
type scannedFile struct {
	entry int // its manifest entry
	path  string
	st    syscall.Stat_t
}

// scanManifest lists dir as an upload manifest, with the hash of each
// file the cache knows (cache is called once the tree is listed: it may
// still be loading meanwhile), and returns its regular files. The rest
// are hashed later, by agentd as it reads them (stage) or here
// (hashFiles). It refuses what agentd refuses (special files, symlinks
// out of the tree) with a message before anything is sent. dir itself
// may be a symlink.
func scanManifest(dir string, cacheOf func() *hashCache) (*api.UploadManifest, []scannedFile, string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err == nil {
		root, err = filepath.Abs(root)
	}
	if err != nil {
		return nil, nil, "", fmt.Errorf("reading %s: %w", dir, err)
	}
	m := &api.UploadManifest{}
	var files []scannedFile
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		shown := filepath.Join(dir, rel)
		rel = filepath.ToSlash(rel)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: shown, Err: err}
		}
		e := api.ManifestEntry{Path: rel, Mode: st.Mode & 0o777}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			e.Type = api.EntryDir
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := checkTarget(rel, target); err != nil {
				return fmt.Errorf("%s: %w", shown, err)
			}
			e.Type, e.Target = api.EntrySymlink, target
		case syscall.S_IFREG:
			e.Type, e.Size, e.MTimeNs = api.EntryFile, st.Size, st.Mtim.Nano()
			files = append(files, scannedFile{len(m.Entries), p, st})
		default:
			return fmt.Errorf("%s: cannot deploy a special file (socket, FIFO or device): a release may hold only directories, regular files and symlinks", shown)
		}
		m.Entries = append(m.Entries, e)
		return nil
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("reading %s: %w", dir, err)
	}
	cache := cacheOf()
	for _, f := range files {
		m.Entries[f.entry].SHA256 = cache.lookup(f.path, &f.st)
	}
	return m, files, root, nil
}

// hashFiles hashes files through the cache, on every core, into their
// manifest entries.
func hashFiles(m *api.UploadManifest, files []scannedFile, cache *hashCache) error {
	sums := make([]string, len(files))
	errs := make([]error, len(files))
	next := make(chan int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				sums[i], errs[i] = cache.sum(files[i].path, &files[i].st)
			}
		})
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, f := range files {
		if errs[i] != nil {
			return errs[i]
		}
		m.Entries[f.entry].SHA256 = sums[i]
	}
	return nil
}

// blobRefs is where each content of the manifest can be read from.
func blobRefs(m *api.UploadManifest, files []scannedFile) map[string]api.BlobRef {
	blobs := map[string]api.BlobRef{}
	for _, f := range files {
		h := m.Entries[f.entry].SHA256
		if _, ok := blobs[h]; !ok {
			blobs[h] = api.BlobRef{SHA256: h, Size: f.st.Size, Path: f.path}
		}
	}
	return blobs
}

// checkTarget refuses the symlinks agentd refuses, before the upload.
func checkTarget(rel, target string) error {
	if strings.HasPrefix(target, "/") {
		return fmt.Errorf("symlink to absolute path %q: agentd accepts only relative symlinks that stay inside the release", target)
	}
	if r := path.Join(path.Dir(rel), target); r == ".." || strings.HasPrefix(r, "../") {
		return fmt.Errorf("symlink to %q points outside the directory, which agentd refuses", target)
	}
	return nil
}
