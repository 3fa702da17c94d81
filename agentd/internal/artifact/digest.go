package artifact

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// digestVersion starts every digest's input, so a future change of the
// encoding cannot produce a digest equal to an old one for other content.
const digestVersion = "agentd-artifact-digest-v1\x00"

// Digest is a content digest of a directory tree ("sha256:…"): sorted
// relative paths, entry type, the executable bit, file contents and symlink
// targets; independent of mtimes, owners, other mode bits and the order of
// the tarball the tree came from. agentd compares it with the active
// release's to make a deploy of the very same content a no-op.
//
// Paths are visited in filepath.WalkDir's order (each directory's names
// sorted), which is fixed for a given tree. The root itself may be a
// symlink to a directory; symlinks inside it are recorded, never followed.
// Hard links count as separate files. Anything that is not a directory,
// regular file or symlink (a socket, a FIFO) is an error: Unpack never
// creates one.
func Digest(dir string) (string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("digest: %s is not a directory", dir)
	}
	h := sha256.New()
	io.WriteString(h, digestVersion)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil // its mode is Unpack's choice, not content
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch t := d.Type(); {
		case t.IsDir():
			record(h, 'd', rel)
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			record(h, 'l', rel)
			writeField(h, target)
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			if info.Mode()&0o111 != 0 {
				record(h, 'x', rel)
			} else {
				record(h, 'f', rel)
			}
			if err := hashFile(h, p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, t)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// record writes an entry's type and path. Every variable-length field is
// length-prefixed, so no two different trees encode to the same bytes.
func record(h hash.Hash, typ byte, rel string) {
	h.Write([]byte{typ})
	writeField(h, rel)
}

func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	io.WriteString(h, s)
}

// hashFile appends the length and the sha256 of the file's content. The
// inner hash keeps the outer encoding unambiguous without knowing the size
// before reading.
func hashFile(h hash.Hash, p string) error {
	// O_NOFOLLOW|O_NONBLOCK: if the entry was swapped for a symlink or a
	// FIFO since the walk saw it, fail instead of following or blocking.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return err
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: changed while computing the digest", p)
	}
	fh := sha256.New()
	n, err := io.Copy(fh, f)
	if err != nil {
		return err
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
	h.Write(fh.Sum(nil))
	return nil
}
