// Package artifact unpacks release artifacts (gzip'd tarballs uploaded by
// hctl) into agentd's state directory and computes their content digest.
//
// An artifact comes from a client and agentd usually runs as root, so the
// unpacker trusts nothing in it: every path is checked before anything is
// created, and no path is ever resolved through a symlink while writing
// (each directory is opened with O_NOFOLLOW, relative to its parent's file
// descriptor), so no entry can make agentd write outside the release.
package artifact

import (
	"archive/tar"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Default limits, used for zero (or negative) fields of [Limits].
const (
	DefaultMaxBytes = 1 << 30
	DefaultMaxFiles = 100_000
)

// Errors that Unpack wraps, so the control API can tell a bad upload (the
// client's fault: 400) from a failure of the host (500).
var (
	// ErrInvalid is wrapped by every error about the artifact's content:
	// corrupt gzip or tar, and entries refused for safety.
	ErrInvalid = errors.New("invalid artifact")
	// ErrTooLarge is wrapped when the artifact exceeds a [Limits] field.
	ErrTooLarge = errors.New("artifact too large")
)

// Limits bound what one artifact may unpack to, so an upload (or a gzip
// bomb) cannot fill the disk or exhaust inodes.
type Limits struct {
	MaxBytes int64 // total size of the regular files; default 1 GiB
	MaxFiles int   // number of entries of any kind, implied directories included; default 100k
}

// WithDefaults is l with its zero fields at their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// TempPrefix starts the name of the temporary sibling directory Unpack
// writes into (".DSTNAME.unpack-RANDOM"). Unpack removes it on any error it
// sees; only a crash of the whole process can leave one behind, so agentd
// may delete such directories at startup.
const TempPrefix = ".unpack-"

// maxTrailing bounds the data read after the tar's end-of-archive marker:
// tar pads archives to a record size (10 KiB for GNU tar), but more than
// this is not padding, and reading it unbounded would let a gzip bomb hide
// behind a small archive.
const maxTrailing = 1 << 20

// maxPath is Linux's PATH_MAX. A longer name could not be used by the app
// anyway, and the cap bounds the directory walk done for each entry.
const maxPath = 4096

// These bound the work of resolving one symlink in the final escape check
// (links followed, path components visited), as the kernel gives up after
// 40 links: an archive of looping or absurd links fails fast.
const (
	maxSymlinkHops  = 40
	maxSymlinkSteps = 1024
)

// Unpack reads a gzip'd tar from r and writes it under dst, which must not
// exist yet. It unpacks into a temporary sibling directory and renames it to
// dst only when everything succeeded, so a failure (bad entry, limit, disk
// full, client gone) leaves nothing at dst and no temp dir.
//
// Accepted entries: directories, regular files, symlinks whose target stays
// inside the release, and hard links to regular files unpacked earlier in
// the archive. Names may start with "./"; no other leading directory is
// stripped. Files get mode 0755 if any executable bit is set, else 0644, and
// directories 0755, whatever the archive says, so the app's user (not
// necessarily the uploader) can read its code; ownership is the unpacking
// user's, and xattrs in the archive (such as file capabilities) are ignored.
// The unpacked tree is synced to disk before the rename, so after a crash
// dst is either absent or complete.
func Unpack(r io.Reader, dst string, lim Limits) (err error) {
	dst = filepath.Clean(dst)
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("unpacking artifact: %s: %w", dst, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unpacking artifact: %w", err)
	}
	parent := filepath.Dir(dst)
	// A sibling of dst, so the final rename is atomic (same filesystem) and
	// a partial tree is never visible under dst's name.
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dst)+TempPrefix)
	if err != nil {
		return fmt.Errorf("unpacking artifact: %w", err)
	}
	defer func() {
		if err != nil {
			// RemoveAll does not follow symlinks, so it cannot reach outside.
			os.RemoveAll(tmp)
		}
	}()
	root, err := unix.Open(tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unpacking artifact: %w", &os.PathError{Op: "open", Path: tmp, Err: err})
	}
	defer unix.Close(root)

	u := &unpacker{
		root:     root,
		lim:      lim.WithDefaults(),
		kinds:    map[string]kind{},
		targets:  map[string]string{},
		cacheDir: ".",
		cache:    dirFD{fd: root},
	}
	defer u.close()
	if err := u.unpack(r); err != nil {
		return err
	}
	if err := u.checkSymlinks(); err != nil {
		return err
	}
	// MkdirTemp made the root 0700; the app's user must be able to enter it.
	if err := unix.Fchmod(root, 0o755); err != nil {
		return fmt.Errorf("unpacking artifact: chmod %s: %w", tmp, err)
	}
	// One syncfs instead of an fsync per file: a release may have 100k
	// files, and all that matters is that everything is on disk before the
	// rename makes it visible.
	if err := unix.Syncfs(root); err != nil {
		return fmt.Errorf("unpacking artifact: sync: %w", err)
	}
	if err := renameNoReplace(tmp, dst); err != nil {
		return fmt.Errorf("unpacking artifact: %w", err)
	}
	if err := syncDir(parent); err != nil {
		// dst exists but its name may not survive a crash; report the
		// failure and leave nothing behind, as promised.
		os.RemoveAll(dst)
		return fmt.Errorf("unpacking artifact: %w", err)
	}
	return nil
}

// renameNoReplace renames oldpath to newpath, failing if newpath appeared
// since Unpack checked: a plain rename(2) would silently replace an empty
// directory there.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		// A filesystem (or kernel) without RENAME_NOREPLACE: fall back to a
		// check and a plain rename, racy only against another writer of the
		// state directory.
		if _, err := os.Lstat(newpath); err == nil {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
		}
		return os.Rename(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

func (k kind) String() string {
	switch k {
	case kindDir:
		return "directory"
	case kindFile:
		return "regular file"
	case kindSymlink:
		return "symlink"
	}
	return "nothing"
}

type unpacker struct {
	root  int // fd of the temporary release root
	lim   Limits
	bytes int64 // regular file bytes written so far
	files int   // entries created so far
	// kinds records every path created so far (clean, slash-separated,
	// relative to the root). The tree is fresh and private, so this is
	// exactly what is on disk; it decides duplicates, hard link targets and
	// symlink resolution without touching the filesystem.
	kinds    map[string]kind
	targets  map[string]string // symlink path -> target
	symlinks []string          // in archive order, for deterministic errors

	cacheDir string // the directory openParent opened last, and its fd
	cache    dirFD
}

func (u *unpacker) close() { u.cache.close() }

func (u *unpacker) unpack(r io.Reader) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return readErr("not a gzip stream", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// With GODEBUG=tarinsecurepath=0 the reader flags unsafe names
		// itself; the entry checks below refuse them with a better message.
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			return readErr("corrupt tar", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Read to the end of the gzip stream: only there does gzip verify its
	// checksum, so a corrupted or truncated upload is noticed even when the
	// damage is past the tar's end marker.
	n, err := io.Copy(io.Discard, io.LimitReader(zr, maxTrailing+1))
	if err != nil {
		return readErr("corrupt gzip stream", err)
	}
	if n > maxTrailing {
		return fmt.Errorf("%w: more than %d bytes of data after the end of the tar archive", ErrInvalid, maxTrailing)
	}
	return nil
}

// readErr classifies an error from the gzip or tar reader: format errors are
// the artifact's fault ([ErrInvalid]); anything else (a dropped connection)
// is passed on as a read error.
func readErr(what string, err error) error {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, io.EOF) && what == "not a gzip stream":
		return fmt.Errorf("%w: empty upload", ErrInvalid)
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum),
		errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrFieldTooLong),
		errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &corrupt):
		return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}
	return fmt.Errorf("reading artifact: %w", err)
}

func invalid(name, format string, args ...any) error {
	return fmt.Errorf("%w: entry %q: %s", ErrInvalid, name, fmt.Sprintf(format, args...))
}

// cleanName turns an archive name into a clean relative slash path ("." for
// the root itself), refusing names that are absolute or climb out of the
// release.
func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty name")
	case strings.IndexByte(name, 0) >= 0:
		return "", errors.New("name contains a NUL byte")
	case strings.HasPrefix(name, "/"):
		return "", errors.New("absolute path")
	}
	if len(name) > maxPath {
		return "", fmt.Errorf("path longer than %d bytes", maxPath)
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errors.New("path escapes the release directory")
	}
	return c, nil
}

func (u *unpacker) entry(hdr *tar.Header, body io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		// Archive-wide metadata, not a file: `git archive` stores the
		// commit id in one.
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return invalid(hdr.Name, "%v", err)
	}
	if hdr.Mode&(0o4000|0o2000|0o1000) != 0 {
		return invalid(hdr.Name, "setuid, setgid or sticky bit set (mode %#o)", hdr.Mode&0o7777)
	}
	if name == "." && hdr.Typeflag != tar.TypeDir {
		return invalid(hdr.Name, "the release root must be a directory")
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return u.dir(hdr.Name, name)
	case tar.TypeReg, tar.TypeGNUSparse: // the reader fills in a sparse file's holes
		return u.file(hdr.Name, name, hdr, body)
	case tar.TypeSymlink:
		return u.symlink(hdr.Name, name, hdr.Linkname)
	case tar.TypeLink:
		return u.hardlink(hdr.Name, name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return invalid(hdr.Name, "device files are not allowed")
	case tar.TypeFifo:
		return invalid(hdr.Name, "named pipes (FIFOs) are not allowed")
	}
	return invalid(hdr.Name, "unsupported entry type %q", hdr.Typeflag)
}

// count accounts for one more entry.
func (u *unpacker) count(name string) error {
	if u.files >= u.lim.MaxFiles {
		return fmt.Errorf("%w: entry %q: more than %d files (directories and links included)", ErrTooLarge, name, u.lim.MaxFiles)
	}
	u.files++
	return nil
}

// newEntry checks that name is not taken and accounts for it.
func (u *unpacker) newEntry(orig, name string) error {
	if k, ok := u.kinds[name]; ok {
		return invalid(orig, "duplicate entry (already unpacked as a %v)", k)
	}
	return u.count(orig)
}

// dirFD is a directory file descriptor that may be borrowed (the root).
type dirFD struct {
	fd    int
	owned bool
}

func (d dirFD) close() {
	if d.owned {
		unix.Close(d.fd)
	}
}

// openParent returns the directory that will hold name (see openDir) and
// name's last component. The descriptor belongs to the unpacker and stays
// valid until the next call: archives list a directory's files together, so
// caching the last directory saves walking the path again for each file.
func (u *unpacker) openParent(orig, name string) (int, string, error) {
	if dir := path.Dir(name); dir != u.cacheDir {
		d, err := u.openDir(orig, dir)
		if err != nil {
			return -1, "", err
		}
		u.setCache(dir, d)
	}
	return u.cache.fd, path.Base(name), nil
}

func (u *unpacker) setCache(dir string, d dirFD) {
	u.cache.close()
	u.cacheDir, u.cache = dir, d
}

// openDir opens directory dir of the release, creating missing directories
// (0755) on the way, as tar does for archives without explicit directory
// entries. Every component is opened with O_NOFOLLOW relative to its parent,
// and a component known to be a symlink is refused outright: writing
// "through" a symlink is how an archive escapes its root.
func (u *unpacker) openDir(orig, dir string) (dirFD, error) {
	cur := dirFD{fd: u.root}
	if dir == "." {
		return cur, nil
	}
	prefix := ""
	for _, c := range strings.Split(dir, "/") {
		prefix = path.Join(prefix, c)
		k := u.kinds[prefix]
		switch k {
		case 0:
			if err := u.count(orig); err != nil {
				cur.close()
				return dirFD{}, err
			}
			if err := unix.Mkdirat(cur.fd, c, 0o755); err != nil {
				cur.close()
				return dirFD{}, fmt.Errorf("unpacking entry %q: mkdir %s: %w", orig, prefix, err)
			}
			u.kinds[prefix] = kindDir
		case kindDir:
		case kindSymlink:
			cur.close()
			return dirFD{}, invalid(orig, "%s is a symlink; refusing to write through it", prefix)
		default:
			cur.close()
			return dirFD{}, invalid(orig, "%s is a %v, not a directory", prefix, k)
		}
		fd, err := unix.Openat(cur.fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		cur.close()
		if err != nil {
			return dirFD{}, fmt.Errorf("unpacking entry %q: open %s: %w", orig, prefix, err)
		}
		cur = dirFD{fd: fd, owned: true}
		if k != 0 {
			continue
		}
		// mkdirat applies the umask; set the mode agentd promises exactly.
		if err := unix.Fchmod(fd, 0o755); err != nil {
			cur.close()
			return dirFD{}, fmt.Errorf("unpacking entry %q: chmod %s: %w", orig, prefix, err)
		}
	}
	return cur, nil
}

func (u *unpacker) dir(orig, name string) error {
	if name == "." {
		return nil // the root exists; Unpack sets its mode at the end
	}
	switch k := u.kinds[name]; k {
	case kindDir:
		// Already created, explicitly or as the parent of an earlier entry
		// (archives need not list directories first).
		return nil
	case 0:
	default:
		return invalid(orig, "duplicate entry (already unpacked as a %v)", k)
	}
	// Created (and counted) exactly as an implied parent directory.
	d, err := u.openDir(orig, name)
	if err != nil {
		return err
	}
	// Its files most likely come next.
	u.setCache(name, d)
	return nil
}

// errReader remembers the error of the reader it wraps, so a failed copy can
// be blamed on the archive (corrupt, connection lost) or on the disk.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

func (u *unpacker) file(orig, name string, hdr *tar.Header, body io.Reader) error {
	if hdr.Size < 0 {
		return invalid(orig, "negative size")
	}
	if err := u.newEntry(orig, name); err != nil {
		return err
	}
	if hdr.Size > u.lim.MaxBytes-u.bytes {
		return fmt.Errorf("%w: entry %q: unpacked size exceeds the limit of %d bytes", ErrTooLarge, orig, u.lim.MaxBytes)
	}
	d, base, err := u.openParent(orig, name)
	if err != nil {
		return err
	}
	// O_EXCL|O_NOFOLLOW: never open something that is already there, least
	// of all through a symlink.
	fd, err := unix.Openat(d, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("unpacking entry %q: %w", orig, err)
	}
	u.kinds[name] = kindFile
	f := os.NewFile(uintptr(fd), name)
	er := &errReader{r: body}
	n, err := io.CopyN(f, er, hdr.Size)
	u.bytes += n
	if err != nil {
		f.Close()
		if er.err != nil {
			return readErr(fmt.Sprintf("entry %q", orig), er.err)
		}
		if err == io.EOF {
			return readErr(fmt.Sprintf("entry %q", orig), io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("unpacking entry %q: %w", orig, err)
	}
	perm := os.FileMode(0o644)
	if hdr.Mode&0o111 != 0 {
		perm = 0o755
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("unpacking entry %q: %w", orig, err)
	}
	// Keep the archive's mtime: some runtimes (Python's .pyc files) compare
	// it to decide whether caches shipped in the release are fresh. Only
	// best effort: a time the filesystem cannot store is no reason to fail
	// a deploy, and the digest ignores mtimes anyway.
	if !hdr.ModTime.IsZero() {
		if ts, err := unix.TimeToTimespec(hdr.ModTime); err == nil {
			_ = unix.UtimesNanoAt(d, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("unpacking entry %q: %w", orig, err)
	}
	return nil
}

func (u *unpacker) symlink(orig, name, target string) error {
	switch {
	case target == "":
		return invalid(orig, "symlink with an empty target")
	case strings.IndexByte(target, 0) >= 0:
		return invalid(orig, "symlink target contains a NUL byte")
	case strings.HasPrefix(target, "/"):
		return invalid(orig, "symlink to absolute path %q (only relative links inside the release are allowed)", target)
	}
	// A first, lexical check for a clear early error; checkSymlinks later
	// resolves through other symlinks too.
	if r := path.Join(path.Dir(name), target); r == ".." || strings.HasPrefix(r, "../") {
		return invalid(orig, "symlink target %q points outside the release", target)
	}
	if err := u.newEntry(orig, name); err != nil {
		return err
	}
	d, base, err := u.openParent(orig, name)
	if err != nil {
		return err
	}
	if err := unix.Symlinkat(target, d, base); err != nil {
		return fmt.Errorf("unpacking entry %q: symlink: %w", orig, err)
	}
	u.kinds[name] = kindSymlink
	u.targets[name] = target
	u.symlinks = append(u.symlinks, name)
	return nil
}

func (u *unpacker) hardlink(orig, name, target string) error {
	t, err := cleanName(target)
	if err != nil {
		return invalid(orig, "hard link target %q: %v", target, err)
	}
	// Only a regular file of this very archive: a link to a directory is
	// impossible, and one to a symlink would let a later check be bypassed.
	if u.kinds[t] != kindFile {
		return invalid(orig, "hard link target %q is not a regular file unpacked earlier in the archive", target)
	}
	if err := u.newEntry(orig, name); err != nil {
		return err
	}
	// The target's directory is opened on its own: openParent's cached
	// descriptor is replaced by the next call.
	od, err := u.openDir(orig, path.Dir(t))
	if err != nil {
		return err
	}
	defer od.close()
	nd, nbase, err := u.openParent(orig, name)
	if err != nil {
		return err
	}
	// Flags 0: linkat does not follow a symlink in the last component, and
	// the parents were opened without following any.
	if err := unix.Linkat(od.fd, path.Base(t), nd, nbase, 0); err != nil {
		return fmt.Errorf("unpacking entry %q: link: %w", orig, err)
	}
	u.kinds[name] = kindFile
	return nil
}

// checkSymlinks resolves every symlink the way the kernel would, following
// other symlinks of the release, and refuses the archive if one ends up
// outside the root. The lexical check at creation is not enough: with
// "a/b/up -> ../..", the link "x -> a/b/up/.." looks like it stays inside
// but resolves to the root's parent. The walk uses the record of what was
// created, which is exactly the private tree on disk.
func (u *unpacker) checkSymlinks() error {
	for _, name := range u.symlinks {
		if err := u.resolve(name); err != nil {
			return invalid(name, "symlink target %q %v", u.targets[name], err)
		}
	}
	return nil
}

func (u *unpacker) resolve(name string) error {
	var cur []string // resolved components so far, none of them a symlink
	if d := path.Dir(name); d != "." {
		cur = strings.Split(d, "/")
	}
	queue := strings.Split(u.targets[name], "/")
	hops, steps := 0, 0
	for len(queue) > 0 {
		if steps++; steps > maxSymlinkSteps {
			return errors.New("is too complex to resolve")
		}
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return errors.New("resolves to a path outside the release")
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := strings.Join(append(cur, c), "/")
		if u.kinds[p] != kindSymlink {
			// A directory, a file or nothing yet: whatever follows is
			// resolved from here (lexically, past a missing component).
			cur = append(cur, c)
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return errors.New("has too many levels of symbolic links")
		}
		// The link's own target was checked to be relative; it is resolved
		// from the directory holding it, which is cur.
		queue = append(strings.Split(u.targets[p], "/"), queue...)
	}
	return nil
}
