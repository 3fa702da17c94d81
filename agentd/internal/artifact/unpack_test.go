package artifact

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// ent describes one tar entry for the tests.
type ent struct {
	name  string
	typ   byte // tar.TypeReg when zero
	body  string
	mode  int64 // a sensible default when zero
	link  string
	mtime time.Time
}

func file(name, body string) ent        { return ent{name: name, body: body} }
func exe(name, body string) ent         { return ent{name: name, body: body, mode: 0o755} }
func dir(name string) ent               { return ent{name: name, typ: tar.TypeDir} }
func symlink(name, target string) ent   { return ent{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) ent  { return ent{name: name, typ: tar.TypeLink, link: target} }
func special(name string, typ byte) ent { return ent{name: name, typ: typ} }

// tarball builds an uncompressed tar of ents.
func tarball(tb testing.TB, ents ...ent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, ModTime: e.mtime}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			switch h.Typeflag {
			case tar.TypeDir:
				h.Mode = 0o755
			case tar.TypeSymlink:
				h.Mode = 0o777
			default:
				h.Mode = 0o644
			}
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatalf("tar header %q: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func gz(tb testing.TB, data []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func tgz(tb testing.TB, ents ...ent) []byte { return gz(tb, tarball(tb, ents...)) }

// sandbox is outer/parent/dst: anything written outside dst shows up in
// parent or outer.
type sandbox struct{ outer, parent, dst string }

func newSandbox(tb testing.TB) sandbox {
	outer := tb.TempDir()
	parent := filepath.Join(outer, "releases")
	if err := os.Mkdir(parent, 0o755); err != nil {
		tb.Fatal(err)
	}
	return sandbox{outer, parent, filepath.Join(parent, "v1")}
}

func names(tb testing.TB, dir string) []string {
	tb.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var ns []string
	for _, d := range des {
		ns = append(ns, d.Name())
	}
	return ns
}

// check verifies that nothing but dst (if wantDst) exists around it: no
// temp dir left, nothing written through an escape.
func (s sandbox) check(tb testing.TB, wantDst bool) {
	tb.Helper()
	if got := names(tb, s.outer); len(got) != 1 || got[0] != "releases" {
		tb.Fatalf("outside the parent: %q", got)
	}
	got := names(tb, s.parent)
	var want []string
	if wantDst {
		want = []string{"v1"}
	}
	if !cmp.Equal(got, want) {
		tb.Fatalf("parent holds %q, want %q", got, want)
	}
}

func TestUnpackRefused(t *testing.T) {
	big := strings.Repeat("x", 1000)
	tests := []struct {
		name string
		data []byte
		lim  Limits
		is   error  // ErrInvalid, ErrTooLarge, or nil for "any error"
		want string // in the error message
	}{
		{"absolute path", tgz(t, file("Procfile", "web: x"), file("/etc/evil", "x")), Limits{}, ErrInvalid, `entry "/etc/evil": absolute path`},
		{"dot-dot", tgz(t, file("../evil", "x")), Limits{}, ErrInvalid, `entry "../evil": path escapes the release directory`},
		{"dot-dot inside", tgz(t, file("a/b/../../../evil", "x")), Limits{}, ErrInvalid, `entry "a/b/../../../evil": path escapes`},
		{"dot-slash dot-dot", tgz(t, file("./../evil", "x")), Limits{}, ErrInvalid, "path escapes"},
		{"empty name", tgz(t, file("", "x")), Limits{}, ErrInvalid, `entry "": empty name`},
		{"symlink absolute", tgz(t, symlink("etc", "/etc")), Limits{}, ErrInvalid, `entry "etc": symlink to absolute path "/etc"`},
		{"symlink up", tgz(t, symlink("up", "..")), Limits{}, ErrInvalid, `entry "up": symlink target ".." points outside`},
		{"symlink up from subdir", tgz(t, dir("a/"), symlink("a/l", "../../x")), Limits{}, ErrInvalid, `entry "a/l": symlink target "../../x" points outside`},
		{"symlink empty", tgz(t, symlink("l", "")), Limits{}, ErrInvalid, "empty target"},
		{
			"symlink escaping through another symlink",
			tgz(t, dir("a/b/"), symlink("a/b/up", "../.."), symlink("x", "a/b/up/..")),
			Limits{}, ErrInvalid, `entry "x": symlink target "a/b/up/.." resolves to a path outside the release`,
		},
		{
			"symlink escaping through a link created later",
			tgz(t, symlink("x", "a/up/../.."), dir("a/"), symlink("a/up", "..")),
			Limits{}, ErrInvalid, `entry "x"`,
		},
		{"symlink loop", tgz(t, symlink("a", "b"), symlink("b", "a")), Limits{}, ErrInvalid, "too many levels of symbolic links"},
		{"write through symlink to dir", tgz(t, dir("sub/"), symlink("l", "sub"), file("l/x", "x")), Limits{}, ErrInvalid, `entry "l/x": l is a symlink; refusing to write through it`},
		{"write through symlink to root", tgz(t, symlink("l", "."), file("l/Procfile", "x")), Limits{}, ErrInvalid, "refusing to write through it"},
		{"replace symlink by file", tgz(t, symlink("l", "x"), file("l", "x")), Limits{}, ErrInvalid, `entry "l": duplicate entry (already unpacked as a symlink)`},
		{"hardlink absolute", tgz(t, hardlink("p", "/etc/passwd")), Limits{}, ErrInvalid, `entry "p": hard link target "/etc/passwd": absolute path`},
		{"hardlink escaping", tgz(t, hardlink("p", "../x")), Limits{}, ErrInvalid, `hard link target "../x": path escapes`},
		{"hardlink to nothing", tgz(t, hardlink("p", "later"), file("later", "x")), Limits{}, ErrInvalid, `entry "p": hard link target "later" is not a regular file unpacked earlier`},
		{"hardlink to dir", tgz(t, dir("d/"), hardlink("p", "d")), Limits{}, ErrInvalid, "is not a regular file"},
		{"hardlink to symlink", tgz(t, symlink("s", "x"), hardlink("p", "s")), Limits{}, ErrInvalid, "is not a regular file"},
		{"hardlink to root", tgz(t, hardlink("p", "./")), Limits{}, ErrInvalid, "is not a regular file"},
		{"char device", tgz(t, special("null", tar.TypeChar)), Limits{}, ErrInvalid, `entry "null": device files are not allowed`},
		{"block device", tgz(t, special("sda", tar.TypeBlock)), Limits{}, ErrInvalid, `entry "sda": device files are not allowed`},
		{"fifo", tgz(t, special("pipe", tar.TypeFifo)), Limits{}, ErrInvalid, `entry "pipe": named pipes (FIFOs) are not allowed`},
		{"unsupported type", tgz(t, special("v", 'V')), Limits{}, ErrInvalid, `entry "v": unsupported entry type 'V'`},
		{"setuid", tgz(t, ent{name: "su", body: "x", mode: 0o4755}), Limits{}, ErrInvalid, `entry "su": setuid, setgid or sticky bit set (mode 04755)`},
		{"setgid dir", tgz(t, ent{name: "d/", typ: tar.TypeDir, mode: 0o2755}), Limits{}, ErrInvalid, "setgid"},
		{"sticky dir", tgz(t, ent{name: "t/", typ: tar.TypeDir, mode: 0o1777}), Limits{}, ErrInvalid, "sticky"},
		{"root as file", tgz(t, file(".", "x")), Limits{}, ErrInvalid, "the release root must be a directory"},
		{"root as symlink", tgz(t, symlink(".", "x")), Limits{}, ErrInvalid, "the release root must be a directory"},
		{"duplicate file", tgz(t, file("a", "1"), file("a", "2")), Limits{}, ErrInvalid, `entry "a": duplicate entry`},
		{"duplicate via dot-slash", tgz(t, file("a", "1"), file("./a", "2")), Limits{}, ErrInvalid, `entry "./a": duplicate entry`},
		{"dir over file", tgz(t, file("a", "1"), dir("a/")), Limits{}, ErrInvalid, `entry "a/": duplicate entry (already unpacked as a regular file)`},
		{"file under file", tgz(t, file("a", "1"), file("a/b", "2")), Limits{}, ErrInvalid, `entry "a/b": a is a regular file, not a directory`},
		{"too many bytes", tgz(t, file("a", big), file("b", big)), Limits{MaxBytes: 1500}, ErrTooLarge, `entry "b": unpacked size exceeds the limit of 1500 bytes`},
		{"too many files", tgz(t, file("a", ""), file("b", ""), file("c", "")), Limits{MaxFiles: 2}, ErrTooLarge, `entry "c": more than 2 files`},
		{"too many implied dirs", tgz(t, file("a/b/c/d", "")), Limits{MaxFiles: 3}, ErrTooLarge, "more than 3 files"},
		{"not gzip", []byte("PK\x03\x04 this is a zip"), Limits{}, ErrInvalid, "not a gzip stream"},
		{"empty upload", nil, Limits{}, ErrInvalid, "empty upload"},
		{"gzip of garbage", gz(t, bytes.Repeat([]byte("garbage!"), 100)), Limits{}, ErrInvalid, "corrupt tar"},
		{"truncated gzip", tgz(t, file("a", big))[:60], Limits{}, ErrInvalid, ""},
		{"truncated tar", gz(t, tarball(t, file("Procfile", "web: x"), file("a", big))[:1800]), Limits{}, ErrInvalid, `entry "a"`},
		{"bad gzip checksum", badChecksum(t), Limits{}, ErrInvalid, "checksum"},
		{"trailing data", gz(t, append(tarball(t, file("a", "x")), make([]byte, maxTrailing+1)...)), Limits{}, ErrInvalid, "after the end of the tar archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			err := Unpack(bytes.NewReader(tt.data), s.dst, tt.lim)
			if err == nil {
				t.Fatal("Unpack succeeded")
			}
			t.Log(err)
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			s.check(t, false)
		})
	}
}

// badChecksum is a valid tarball whose gzip CRC is wrong. The damage is in
// the gzip trailer, after the tar's end: only reading to the end of the
// stream finds it.
func badChecksum(tb testing.TB) []byte {
	b := tgz(tb, file("Procfile", "web: x"))
	b[len(b)-8] ^= 0xff
	return b
}

// failingReader delivers data, then fails like a dropped connection.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestUnpackClientGone(t *testing.T) {
	data := tgz(t, file("Procfile", "web: x"), file("big", strings.Repeat("abc", 100000)))
	s := newSandbox(t)
	gone := errors.New("connection reset by peer")
	err := Unpack(&failingReader{bytes.NewReader(data[:len(data)/2]), gone}, s.dst, Limits{})
	if !errors.Is(err, gone) {
		t.Fatalf("Unpack = %v, want the reader's error", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Errorf("a read error is reported as an invalid artifact: %v", err)
	}
	s.check(t, false)
}

func TestUnpackDstExists(t *testing.T) {
	s := newSandbox(t)
	if err := os.Mkdir(s.dst, 0o755); err != nil {
		t.Fatal(err)
	}
	err := Unpack(bytes.NewReader(tgz(t, file("Procfile", "web: x"))), s.dst, Limits{})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Unpack = %v, want fs.ErrExist", err)
	}
	s.check(t, true)
	if got := names(t, s.dst); len(got) != 0 {
		t.Errorf("existing dst was written to: %q", got)
	}
}

// tree describes an unpacked tree: path -> "dir 755", "file 644 CONTENT",
// "link TARGET".
func tree(tb testing.TB, root string) map[string]string {
	tb.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := info.Mode().Perm()
		switch {
		case d.IsDir():
			m[rel] = "dir " + perm.String()
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = "link " + target
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = "file " + perm.String() + " " + string(b)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func TestUnpackRoundTrip(t *testing.T) {
	// A restrictive umask must not leak into the release: the app may run
	// as another user than agentd.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	mtime := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	data := tgz(t,
		dir("./"),
		file("./Procfile", "web: bin/server\nrelease: bin/migrate\n"),
		ent{name: "./bin/server", body: "#!/bin/sh\nexec true\n", mode: 0o700, mtime: mtime}, // implied dir, odd mode
		exe("./bin/migrate", "#!/bin/sh\n"),
		ent{name: "./secret", body: "s", mode: 0o600},
		file("./lib/deep/x.txt", "deep"), // file before its dir entry
		ent{name: "./lib/", typ: tar.TypeDir, mode: 0o700},
		dir("./empty/"),
		symlink("./current", "lib/deep"),
		symlink("./lib/deep/up", "../../bin/server"),
		symlink("./dangling", "not/there"),
		symlink("./a-root", "."),
		hardlink("./bin/server2", "./bin/server"),
		ent{name: "./old/", typ: tar.TypeDir},
		file("old/../new", "cleaned"), // a ".." that stays inside
	)
	s := newSandbox(t)
	if err := Unpack(bytes.NewReader(data), s.dst, Limits{MaxBytes: 1 << 20, MaxFiles: 20}); err != nil {
		t.Fatal(err)
	}
	s.check(t, true)
	want := map[string]string{
		".":              "dir -rwxr-xr-x",
		"Procfile":       "file -rw-r--r-- web: bin/server\nrelease: bin/migrate\n",
		"bin":            "dir -rwxr-xr-x",
		"bin/server":     "file -rwxr-xr-x #!/bin/sh\nexec true\n",
		"bin/server2":    "file -rwxr-xr-x #!/bin/sh\nexec true\n",
		"bin/migrate":    "file -rwxr-xr-x #!/bin/sh\n",
		"secret":         "file -rw-r--r-- s",
		"lib":            "dir -rwxr-xr-x",
		"lib/deep":       "dir -rwxr-xr-x",
		"lib/deep/x.txt": "file -rw-r--r-- deep",
		"lib/deep/up":    "link ../../bin/server",
		"empty":          "dir -rwxr-xr-x",
		"current":        "link lib/deep",
		"dangling":       "link not/there",
		"a-root":         "link .",
		"old":            "dir -rwxr-xr-x",
		"new":            "file -rw-r--r-- cleaned",
	}
	if diff := cmp.Diff(want, tree(t, s.dst)); diff != "" {
		t.Errorf("unpacked tree (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(filepath.Join(s.dst, "bin/server"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(mtime) {
		t.Errorf("mtime = %v, want %v", fi.ModTime(), mtime)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Nlink != 2 {
		t.Errorf("bin/server has %d links, want 2 (hard link)", st.Nlink)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Geteuid() {
		t.Errorf("owner %d, want the unpacking user %d", st.Uid, os.Geteuid())
	}
}

// `git archive` starts with a global PAX header holding the commit id.
func TestUnpackGitArchive(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "pax_global_header", Typeflag: tar.TypeXGlobalHeader,
		PAXRecords: map[string]string{"comment": "0123456789abcdef0123456789abcdef01234567"}}); err != nil {
		t.Fatal(err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: "Procfile", Mode: 0o644, Size: 6}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(tw, "web: x")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	s := newSandbox(t)
	if err := Unpack(bytes.NewReader(gz(t, buf.Bytes())), s.dst, Limits{}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s.dst); !cmp.Equal(got, []string{"Procfile"}) {
		t.Errorf("dst holds %q, want [Procfile]", got)
	}
}

// Archives made by tar(1), as a user would, unpack to the same content.
func TestUnpackTarCommand(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar command")
	}
	src := t.TempDir()
	for name, mode := range map[string]os.FileMode{"Procfile": 0o644, "bin/run": 0o755, "lib/a/b.txt": 0o600} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(name), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("lib/a", filepath.Join(src, "cur")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "bin/run"), filepath.Join(src, "bin/run2")); err != nil {
		t.Fatal(err)
	}
	want, err := Digest(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-C", src, "."}, // "./" prefix
		{"-C", src, "Procfile", "bin", "lib", "cur"}, // bare names
	} {
		out := filepath.Join(t.TempDir(), "a.tgz")
		cmd := exec.Command("tar", append([]string{"-czf", out}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tar: %v\n%s", err, b)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		s := newSandbox(t)
		err = Unpack(f, s.dst, Limits{})
		f.Close()
		if err != nil {
			t.Fatalf("tar %q: %v", args, err)
		}
		if got, err := Digest(s.dst); err != nil || got != want {
			t.Errorf("tar %q: digest %s, %v; want %s", args, got, err, want)
		}
	}
}

// The limits are inclusive, and implied directories count as files.
func TestUnpackAtLimits(t *testing.T) {
	s := newSandbox(t)
	data := tgz(t, file("a/b", "0123456789"))
	if err := Unpack(bytes.NewReader(data), s.dst, Limits{MaxBytes: 10, MaxFiles: 2}); err != nil {
		t.Fatal(err)
	}
	s2 := newSandbox(t)
	if err := Unpack(bytes.NewReader(data), s2.dst, Limits{MaxBytes: 10, MaxFiles: 1}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("with MaxFiles 1: %v, want ErrTooLarge", err)
	}
	s3 := newSandbox(t)
	if err := Unpack(bytes.NewReader(data), s3.dst, Limits{MaxBytes: 9}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("with MaxBytes 9: %v, want ErrTooLarge", err)
	}
	s3.check(t, false)
}

// A top-level directory other than "./" is content, not a prefix to strip.
func TestUnpackKeepsTopDir(t *testing.T) {
	s := newSandbox(t)
	if err := Unpack(bytes.NewReader(tgz(t, dir("app/"), file("app/Procfile", "web: x"))), s.dst, Limits{}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s.dst); !cmp.Equal(got, []string{"app"}) {
		t.Errorf("dst holds %q, want [app]", got)
	}
}

func TestUnpackEmptyArchive(t *testing.T) {
	s := newSandbox(t)
	if err := Unpack(bytes.NewReader(tgz(t)), s.dst, Limits{}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s.dst); len(got) != 0 {
		t.Errorf("dst holds %q", got)
	}
}

func TestDigest(t *testing.T) {
	unpack := func(ents ...ent) string {
		t.Helper()
		s := newSandbox(t)
		if err := Unpack(bytes.NewReader(tgz(t, ents...)), s.dst, Limits{}); err != nil {
			t.Fatal(err)
		}
		d, err := Digest(s.dst)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(d, "sha256:") || len(d) != len("sha256:")+64 {
			t.Fatalf("digest %q is not sha256:HEX", d)
		}
		return d
	}
	t1 := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	t2 := time.Date(2022, 2, 2, 0, 0, 0, 0, time.UTC)
	base := unpack(dir("bin/"), exe("bin/run", "run"), file("Procfile", "web: bin/run"), symlink("cur", "bin"), dir("empty/"))

	same := map[string]string{
		"reordered, other mtimes and modes": unpack(
			file("./Procfile", "web: bin/run"), symlink("./cur", "bin"),
			ent{name: "./bin/run", body: "run", mode: 0o700, mtime: t1},
			ent{name: "./empty/", typ: tar.TypeDir, mode: 0o700, mtime: t2}),
		"implied dirs": unpack(exe("bin/run", "run"), symlink("cur", "bin"), file("Procfile", "web: bin/run"), dir("empty")),
	}
	for name, d := range same {
		if d != base {
			t.Errorf("%s: digest %s, want %s", name, d, base)
		}
	}
	different := map[string]string{
		"one byte":         unpack(dir("bin/"), exe("bin/run", "ruN"), file("Procfile", "web: bin/run"), symlink("cur", "bin"), dir("empty/")),
		"exec bit":         unpack(dir("bin/"), file("bin/run", "run"), file("Procfile", "web: bin/run"), symlink("cur", "bin"), dir("empty/")),
		"symlink target":   unpack(dir("bin/"), exe("bin/run", "run"), file("Procfile", "web: bin/run"), symlink("cur", "bin/"), dir("empty/")),
		"no empty dir":     unpack(dir("bin/"), exe("bin/run", "run"), file("Procfile", "web: bin/run"), symlink("cur", "bin")),
		"renamed":          unpack(dir("bin/"), exe("bin/run2", "run"), file("Procfile", "web: bin/run"), symlink("cur", "bin"), dir("empty/")),
		"file for symlink": unpack(dir("bin/"), exe("bin/run", "run"), file("Procfile", "web: bin/run"), file("cur", "bin"), dir("empty/")),
		"file for dir":     unpack(dir("bin/"), exe("bin/run", "run"), file("Procfile", "web: bin/run"), symlink("cur", "bin"), file("empty", "")),
		// Length prefixes: moving bytes between a name and content changes it.
		"shifted bytes": unpack(dir("bin/"), exe("bin/run", "run"), file("Procfile", "web: bin/ru"), symlink("cur", "bin"), dir("empty/")),
	}
	seen := map[string]string{base: "base"}
	keys := make([]string, 0, len(different))
	for k := range different {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, name := range keys {
		d := different[name]
		if prev, dup := seen[d]; dup {
			t.Errorf("%s: same digest as %s", name, prev)
		}
		seen[d] = name
	}
}

func TestDigestErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Digest(filepath.Join(dir, "f")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Digest(file) = %v", err)
	}
	if _, err := Digest(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Digest(missing) = %v", err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Digest(dir); err == nil || !strings.Contains(err.Error(), "unsupported file type") {
		t.Errorf("Digest(dir with fifo) = %v", err)
	}
}

// The root may be given through a symlink (a "current" link to a release).
func TestDigestRootSymlink(t *testing.T) {
	s := newSandbox(t)
	if err := Unpack(bytes.NewReader(tgz(t, file("Procfile", "web: x"))), s.dst, Limits{}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "current")
	if err := os.Symlink(s.dst, link); err != nil {
		t.Fatal(err)
	}
	d1, err := Digest(s.dst)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := Digest(link)
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("Digest through a symlink = %s, want %s", d2, d1)
	}
}

// fuzzSeeds are tarballs that reach the interesting paths of Unpack.
func fuzzSeeds(tb testing.TB) [][]byte {
	return [][]byte{
		tgz(tb, dir("./"), file("./Procfile", "web: x"), exe("./bin/x", "#!"), symlink("./l", "bin"), hardlink("./h", "./bin/x")),
		tgz(tb, file("../evil", "x")),
		tgz(tb, symlink("l", "."), file("l/x", "x")),
		tgz(tb, dir("a/b/"), symlink("a/b/up", "../.."), symlink("x", "a/b/up/..")),
		tgz(tb, symlink("a", "b"), symlink("b", "a")),
		tgz(tb, hardlink("h", "/etc/passwd")),
		tgz(tb, special("null", tar.TypeChar)),
		tgz(tb, file("a", "1"), file("a/b", "2")),
		badChecksum(tb),
		tarball(tb, file("plain", "tar")),
	}
}

func FuzzUnpack(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSandbox(t)
		err := Unpack(bytes.NewReader(data), s.dst, Limits{MaxBytes: 1 << 20, MaxFiles: 200})
		s.check(t, err == nil)
		if err != nil {
			return
		}
		// Every symlink must stay inside: resolve them with the kernel (when
		// they resolve at all) and compare.
		root, err := filepath.EvalSymlinks(s.dst)
		if err != nil {
			t.Fatal(err)
		}
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			if d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			r, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil // dangling or a loop: nothing outside is reached
			}
			if r != root && !strings.HasPrefix(r, root+"/") {
				t.Fatalf("symlink %s resolves to %s, outside %s", p, r, root)
			}
			return nil
		})
		if _, err := Digest(s.dst); err != nil {
			t.Fatalf("Digest of an unpacked tree: %v", err)
		}
	})
}
