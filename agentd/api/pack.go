package api

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// gzipMagic starts every gzip stream (RFC 1952).
var gzipMagic = []byte{0x1f, 0x8b}

// OpenArtifact returns a .tar.gz stream of path, for [Client.Deploy]: the
// file itself when path is a gzip'd tar (whatever its name, .tar.gz or
// .tgz), else a directory packed on the fly by [PackDir] (io.Pipe and a
// goroutine, so a large release is never held in memory or written to a
// temporary file). A missing path, a file that is not a gzip'd tar, and a
// directory holding something PackDir refuses (a socket, an absolute
// symlink) give an error here, before anything is sent; only a read error
// can still fail the stream. The caller must Close the stream, which also
// stops the packing goroutine.
func OpenArtifact(path string) (io.ReadCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("artifact: %w", err)
	}
	if fi.IsDir() {
		entries, err := scanDir(path)
		if err != nil {
			return nil, err
		}
		pr, pw := io.Pipe()
		go func() {
			// Closing the reader early makes the next write fail, so this
			// goroutine always ends.
			pw.CloseWithError(writeTarGz(pw, entries))
		}()
		return pr, nil
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("artifact %s: not a directory or a .tar.gz file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("artifact: %w", err)
	}
	if err := checkTarGz(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("artifact %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("artifact: %w", err)
	}
	return f, nil
}

// checkTarGz reads the start of f to tell a gzip'd tar from anything else
// (a zip, a plain tar, a binary) while the error can still be clear: agentd
// would only say the upload is corrupt.
func checkTarGz(f io.Reader) error {
	br := bufio.NewReader(f)
	magic, err := br.Peek(len(gzipMagic))
	if err != nil || !bytes.Equal(magic, gzipMagic) {
		return errors.New("not gzip-compressed (want a directory or a .tar.gz file)")
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("not a valid gzip file: %w", err)
	}
	// An empty archive (io.EOF) is a valid tar; agentd will say it has no
	// Procfile.
	if _, err := tar.NewReader(zr).Next(); err != nil && err != io.EOF {
		return fmt.Errorf("gzip-compressed, but not a tar archive: %w", err)
	}
	return nil
}

// PackDir writes a gzip'd tar of dir's content to w: names relative to dir
// (no "./" prefix, no leading directory), in a fixed order (each
// directory's names sorted), symlinks kept as symlinks. It refuses special
// files (sockets, devices, FIFOs) and symlinks that are absolute or point
// outside dir, all of which agentd refuses too; the check covers the whole
// tree before anything is written.
//
// Headers carry only what agentd uses: the type, 0755 or 0644 (the
// executable bit), the mtime (seconds); owners are left out, since files
// belong to the unpacking user. dir itself may be a symlink to a directory
// (a "current" link).
func PackDir(w io.Writer, dir string) error {
	entries, err := scanDir(dir)
	if err != nil {
		return err
	}
	return writeTarGz(w, entries)
}

// packEntry is one file of a directory to pack.
type packEntry struct {
	name  string // tar name: relative, slash-separated, "/" after a directory
	path  string // on disk
	typ   byte   // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	exec  bool
	size  int64
	mtime time.Time
	link  string
}

// scanDir lists and checks everything under dir, following no symlink but
// dir itself.
func scanDir(dir string) ([]packEntry, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("packing %s: %w", dir, err)
	}
	if fi, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("packing %s: %w", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("packing %s: not a directory", dir)
	}
	var entries []packEntry
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		// Messages name the file as the user knows it, under dir.
		shown := filepath.Join(dir, rel)
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := packEntry{name: rel, path: p, mtime: info.ModTime()}
		switch mode := info.Mode(); {
		case mode.IsDir():
			e.typ, e.name = tar.TypeDir, rel+"/"
		case mode.IsRegular():
			e.typ, e.size, e.exec = tar.TypeReg, info.Size(), mode&0o111 != 0
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := checkLink(rel, target); err != nil {
				return fmt.Errorf("%s: %w", shown, err)
			}
			e.typ, e.link = tar.TypeSymlink, target
		default:
			return fmt.Errorf("%s: cannot pack a %s: a release may hold only directories, regular files and symlinks", shown, kindOf(mode))
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("packing %s: %w", dir, err)
	}
	return entries, nil
}

// checkLink refuses the symlinks agentd refuses, with a message that says
// so before the upload. (agentd also resolves chains of links; a link that
// escapes only through another link is left for it to report.)
func checkLink(rel, target string) error {
	if strings.HasPrefix(target, "/") {
		return fmt.Errorf("symlink to absolute path %q: agentd accepts only relative symlinks that stay inside the release", target)
	}
	if r := path.Join(path.Dir(rel), target); r == ".." || strings.HasPrefix(r, "../") {
		return fmt.Errorf("symlink to %q points outside the directory, which agentd refuses", target)
	}
	return nil
}

func kindOf(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeSocket != 0:
		return "socket"
	case mode&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case mode&fs.ModeCharDevice != 0:
		return "character device"
	case mode&fs.ModeDevice != 0:
		return "device"
	}
	return "special file (" + mode.Type().String() + ")"
}

// writeTarGz writes entries as a gzip'd tar.
func writeTarGz(w io.Writer, entries []packEntry) error {
	// The artifact travels over a local unix socket: compression buys
	// little there, so spend as little CPU on it as gzip allows.
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		if err := writeEntry(tw, e); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func writeEntry(tw *tar.Writer, e packEntry) error {
	hdr := &tar.Header{Name: e.name, Typeflag: e.typ, ModTime: e.mtime}
	switch e.typ {
	case tar.TypeDir:
		hdr.Mode = 0o755
	case tar.TypeSymlink:
		hdr.Mode, hdr.Linkname = 0o777, e.link
	case tar.TypeReg:
		hdr.Mode, hdr.Size = 0o644, e.size
		if e.exec {
			hdr.Mode = 0o755
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("packing %s: %w", e.path, err)
	}
	if e.typ != tar.TypeReg {
		return nil
	}
	f, err := os.Open(e.path)
	if err != nil {
		return fmt.Errorf("packing: %w", err)
	}
	defer f.Close()
	// The header promised e.size bytes: a file that shrank since the scan
	// cannot be packed consistently.
	if _, err := io.CopyN(tw, f, e.size); err == io.EOF {
		return fmt.Errorf("packing %s: file shrank while being packed", e.path)
	} else if err != nil {
		return fmt.Errorf("packing %s: %w", e.path, err)
	}
	return nil
}
