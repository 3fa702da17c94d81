package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

// ImportTarGz reads a .tar.gz artifact and stores it as a release tree,
// returning its digest. artifact.Unpack checks it (size, path traversal,
// symlinks out of the tree, devices, setuid bits) exactly as before the
// store existed; its files then become blobs, each read once more to hash
// it. A refused artifact leaves nothing behind.
func (s *Store) ImportTarGz(r io.Reader) (string, error) {
	if r == nil {
		return "", fmt.Errorf("%w: no artifact", ErrInvalid)
	}
	work, err := os.MkdirTemp(s.tmp, "import-")
	if err != nil {
		return "", fmt.Errorf("importing artifact: %w", err)
	}
	kept := true // nothing adopted from work/ until build
	defer func() {
		removeAll(work)
		if !kept {
			s.maybeGarbage()
		}
	}()
	dir := filepath.Join(work, "t")
	if err := artifact.Unpack(r, dir, s.lim); err != nil {
		return "", err
	}
	entries, staged, err := scanTree(dir)
	if err != nil {
		return "", fmt.Errorf("importing artifact: %w", err)
	}
	t, err := checkManifest(entries, s.lim)
	if err != nil {
		return "", fmt.Errorf("importing artifact: %w", err)
	}
	d, kept, err := s.build(t, staged, nil, nil, nil)
	return d, err
}

// scanTree lists an unpacked tree as a manifest, hashing every file, and
// returns for each content one of its files to adopt as the blob.
func scanTree(root string) ([]api.ManifestEntry, map[string]string, error) {
	var entries []api.ManifestEntry
	staged := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := api.ManifestEntry{Path: filepath.ToSlash(rel), Mode: uint32(info.Mode().Perm())}
		switch {
		case info.IsDir():
			e.Type = api.EntryDir
		case info.Mode()&fs.ModeSymlink != 0:
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
			e.Type = api.EntrySymlink
		case info.Mode().IsRegular():
			sum, n, err := hashFile(p)
			if err != nil {
				return err
			}
			e.Type, e.Size, e.SHA256, e.MTimeNs = api.EntryFile, n, sum, info.ModTime().UnixNano()
			if _, ok := staged[sum]; !ok {
				staged[sum] = p
			}
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, info.Mode().Type())
		}
		entries = append(entries, e)
		return nil
	})
	return entries, staged, err
}

// hashFile returns the sha256 (hex) and size of a regular file.
func hashFile(p string) (string, int64, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
