package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
)

// The bounds artifact.Unpack applies to a .tar.gz, applied to manifests.
const (
	maxPath         = 4096
	maxSymlinkHops  = 40
	maxSymlinkSteps = 1024
)

// tree is a checked manifest: every path clean and unique, every parent a
// directory (implied ones added), every symlink resolving inside.
type tree struct {
	nodes map[string]*node // by clean relative path; "." is the root
	files []*node          // regular files, in manifest order
	bytes int64
}

type node struct {
	path     string
	typ      string // api.Entry*
	exec     bool
	size     int64
	hash     string
	mtimeNs  int64
	target   string
	children []string // base names, for directories
}

func invalidf(p, format string, args ...any) error {
	return fmt.Errorf("%w: entry %q: %s", ErrInvalid, p, fmt.Sprintf(format, args...))
}

// checkManifest applies the artifact rules to a manifest and returns the
// tree it describes. Nothing is touched on disk.
func checkManifest(entries []api.ManifestEntry, lim artifact.Limits) (*tree, error) {
	lim = lim.WithDefaults()
	t := &tree{nodes: map[string]*node{".": {path: ".", typ: api.EntryDir}}}
	var symlinks []*node
	for _, e := range entries {
		name, err := cleanName(e.Path)
		if err != nil {
			return nil, invalidf(e.Path, "%v", err)
		}
		if e.Mode&0o7000 != 0 {
			return nil, invalidf(e.Path, "setuid, setgid or sticky bit set (mode %#o)", e.Mode&0o7777)
		}
		if name == "." {
			if e.Type != api.EntryDir {
				return nil, invalidf(e.Path, "the release root must be a directory")
			}
			continue
		}
		n := &node{path: name, typ: e.Type}
		switch e.Type {
		case api.EntryDir:
			if old, ok := t.nodes[name]; ok && old.typ == api.EntryDir {
				continue // implied by an earlier entry, as tar allows
			}
		case api.EntryFile:
			if e.Size < 0 {
				return nil, invalidf(e.Path, "negative size")
			}
			if !validHash(e.SHA256) {
				return nil, invalidf(e.Path, "sha256 %q is not 64 lowercase hex digits", e.SHA256)
			}
			if e.Size > lim.MaxBytes-t.bytes {
				return nil, fmt.Errorf("%w: entry %q: unpacked size exceeds the limit of %d bytes", artifact.ErrTooLarge, e.Path, lim.MaxBytes)
			}
			t.bytes += e.Size
			n.exec, n.size, n.hash, n.mtimeNs = e.Mode&0o111 != 0, e.Size, e.SHA256, e.MTimeNs
		case api.EntrySymlink:
			if err := checkTarget(name, e.Target); err != nil {
				return nil, invalidf(e.Path, "%v", err)
			}
			n.target = e.Target
			symlinks = append(symlinks, n)
		default:
			return nil, invalidf(e.Path, "type %q is not allowed (only dir, file and symlink: no devices, FIFOs or sockets)", e.Type)
		}
		if old, ok := t.nodes[name]; ok {
			return nil, invalidf(e.Path, "duplicate entry (already listed as a %s)", old.typ)
		}
		if err := t.addParents(e.Path, name, lim.MaxFiles); err != nil {
			return nil, err
		}
		if len(t.nodes) >= lim.MaxFiles+1 {
			return nil, fmt.Errorf("%w: entry %q: more than %d files (directories and links included)", artifact.ErrTooLarge, e.Path, lim.MaxFiles)
		}
		t.nodes[name] = n
		parent := t.nodes[path.Dir(name)]
		parent.children = append(parent.children, path.Base(name))
		if n.typ == api.EntryFile {
			t.files = append(t.files, n)
		}
	}
	for _, l := range symlinks {
		if err := t.resolve(l); err != nil {
			return nil, invalidf(l.path, "symlink target %q %v", l.target, err)
		}
	}
	return t, nil
}

func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty name")
	case strings.IndexByte(name, 0) >= 0:
		return "", errors.New("name contains a NUL byte")
	case strings.HasPrefix(name, "/"):
		return "", errors.New("absolute path")
	case len(name) > maxPath:
		return "", fmt.Errorf("path longer than %d bytes", maxPath)
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errors.New("path escapes the release directory")
	}
	return c, nil
}

func checkTarget(name, target string) error {
	switch {
	case target == "":
		return errors.New("symlink with an empty target")
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("symlink target contains a NUL byte")
	case len(target) > maxPath:
		return fmt.Errorf("symlink target longer than %d bytes", maxPath)
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("symlink to absolute path %q (only relative links inside the release are allowed)", target)
	}
	if r := path.Join(path.Dir(name), target); r == ".." || strings.HasPrefix(r, "../") {
		return fmt.Errorf("symlink target %q points outside the release", target)
	}
	return nil
}

// addParents adds the implied directories above name, refusing a parent
// that is a file or a symlink: writing through a symlink is how an
// archive escapes its root.
func (t *tree) addParents(orig, name string, maxFiles int) error {
	dir := path.Dir(name)
	var missing []string
	for ; dir != "."; dir = path.Dir(dir) {
		n, ok := t.nodes[dir]
		if ok {
			if n.typ != api.EntryDir {
				return invalidf(orig, "%s is a %s, not a directory", dir, n.typ)
			}
			break
		}
		missing = append(missing, dir)
	}
	for _, d := range slices.Backward(missing) {
		if len(t.nodes) >= maxFiles+1 {
			return fmt.Errorf("%w: entry %q: more than %d files (directories and links included)", artifact.ErrTooLarge, orig, maxFiles)
		}
		t.nodes[d] = &node{path: d, typ: api.EntryDir}
		p := t.nodes[path.Dir(d)]
		p.children = append(p.children, path.Base(d))
	}
	return nil
}

// resolve follows a symlink as the kernel would, through the other
// symlinks of the tree, and fails if it ends up outside the root (as
// artifact.Unpack's final check does).
func (t *tree) resolve(l *node) error {
	var cur []string
	if d := path.Dir(l.path); d != "." {
		cur = strings.Split(d, "/")
	}
	queue := strings.Split(l.target, "/")
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
		n := t.nodes[p]
		if n == nil || n.typ != api.EntrySymlink {
			cur = append(cur, c)
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return errors.New("has too many levels of symbolic links")
		}
		queue = append(strings.Split(n.target, "/"), queue...)
	}
	return nil
}

// digest computes artifact.Digest of the tree without reading a file: the
// same encoding, in the same order (filepath.WalkDir's: depth first, each
// directory's names sorted), from the manifest's sizes and hashes.
func (t *tree) digest() string {
	h := sha256.New()
	io.WriteString(h, "agentd-artifact-digest-v1\x00")
	var walk func(dir string)
	walk = func(dir string) {
		kids := slices.Clone(t.nodes[dir].children)
		slices.Sort(kids)
		for _, k := range kids {
			p := k
			if dir != "." {
				p = dir + "/" + k
			}
			n := t.nodes[p]
			switch n.typ {
			case api.EntryDir:
				record(h, 'd', p)
				walk(p)
			case api.EntrySymlink:
				record(h, 'l', p)
				writeField(h, n.target)
			case api.EntryFile:
				typ := byte('f')
				if n.exec {
					typ = 'x'
				}
				record(h, typ, p)
				var b [8]byte
				binary.BigEndian.PutUint64(b[:], uint64(n.size))
				h.Write(b[:])
				raw, _ := hex.DecodeString(n.hash)
				h.Write(raw)
			}
		}
	}
	walk(".")
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func record(h io.Writer, typ byte, rel string) {
	h.Write([]byte{typ})
	writeField(h, rel)
}

func writeField(h io.Writer, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	io.WriteString(h, s)
}
