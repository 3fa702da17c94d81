package api

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agentd/agentd/agentd/internal/artifact"
	"github.com/google/go-cmp/cmp"
)

// makeRelease creates a small release directory: a subdirectory, an
// executable, a relative symlink, an empty directory.
func makeRelease(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]struct {
		body string
		mode os.FileMode
	}{
		"Procfile":        {"web: bin/server\n", 0o644},
		"bin/server":      {"#!/bin/sh\nexec sleep 1\n", 0o700},
		"lib/app/main.rb": {"puts 1\n", 0o600},
		"lib/app/util.rb": {"", 0o644},
		"README":          {"hello", 0o664},
	}
	for name, f := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
		// WriteFile is subject to the umask; the test wants exact modes.
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("lib/app", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../bin/server", filepath.Join(dir, "lib/app/server")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// hdrInfo is what the tests check of a tar header.
type hdrInfo struct {
	Name     string
	Type     byte
	Mode     int64
	Linkname string
	Body     string
}

func readTarGz(t *testing.T, data []byte) []hdrInfo {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []hdrInfo
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d/%d %q/%q, want none", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, hdrInfo{h.Name, h.Typeflag, h.Mode, h.Linkname, string(body)})
	}
	return out
}

func TestPackDir(t *testing.T) {
	dir := makeRelease(t)
	var buf bytes.Buffer
	if err := PackDir(&buf, dir); err != nil {
		t.Fatal(err)
	}
	want := []hdrInfo{
		{"Procfile", tar.TypeReg, 0o644, "", "web: bin/server\n"},
		{"README", tar.TypeReg, 0o644, "", "hello"},
		{"bin/", tar.TypeDir, 0o755, "", ""},
		{"bin/server", tar.TypeReg, 0o755, "", "#!/bin/sh\nexec sleep 1\n"},
		{"current", tar.TypeSymlink, 0o777, "lib/app", ""},
		{"lib/", tar.TypeDir, 0o755, "", ""},
		{"lib/app/", tar.TypeDir, 0o755, "", ""},
		{"lib/app/main.rb", tar.TypeReg, 0o644, "", "puts 1\n"},
		{"lib/app/server", tar.TypeSymlink, 0o777, "../../bin/server", ""},
		{"lib/app/util.rb", tar.TypeReg, 0o644, "", ""},
		{"tmp/", tar.TypeDir, 0o755, "", ""},
	}
	if diff := cmp.Diff(want, readTarGz(t, buf.Bytes())); diff != "" {
		t.Errorf("packed entries (-want +got):\n%s", diff)
	}

	// Same tree, same bytes: the order and the headers are fixed.
	var again bytes.Buffer
	if err := PackDir(&again, dir); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("packing the same directory twice gave different bytes")
	}
}

// PackDir's output is what agentd unpacks, and the content digest survives
// the trip.
func TestPackDirRoundTrip(t *testing.T) {
	dir := makeRelease(t)
	var buf bytes.Buffer
	if err := PackDir(&buf, dir); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "v1")
	if err := artifact.Unpack(&buf, dst, artifact.Limits{}); err != nil {
		t.Fatalf("Unpack of PackDir output: %v", err)
	}
	want, err := artifact.Digest(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := artifact.Digest(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("digest after the round trip = %s, want %s", got, want)
	}
}

// A "current" symlink to a release directory packs the directory.
func TestPackDirRootSymlink(t *testing.T) {
	dir := makeRelease(t)
	link := filepath.Join(t.TempDir(), "current")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	var viaLink, direct bytes.Buffer
	if err := PackDir(&viaLink, link); err != nil {
		t.Fatal(err)
	}
	if err := PackDir(&direct, dir); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaLink.Bytes(), direct.Bytes()) {
		t.Error("packing through a symlink differs from packing the directory")
	}
}

func TestPackDirRefused(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"fifo", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "lib/pipe"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "lib/pipe: cannot pack a named pipe (FIFO)"},
		{"socket", func(t *testing.T, dir string) {
			l, err := net.Listen("unix", filepath.Join(dir, "app.sock"))
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
		}, "app.sock: cannot pack a socket"},
		{"absolute symlink", func(t *testing.T, dir string) {
			if err := os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")); err != nil {
				t.Fatal(err)
			}
		}, `passwd: symlink to absolute path "/etc/passwd"`},
		{"escaping symlink", func(t *testing.T, dir string) {
			if err := os.Symlink("../../..", filepath.Join(dir, "lib/up")); err != nil {
				t.Fatal(err)
			}
		}, `lib/up: symlink to "../../.." points outside the directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "lib"), 0o755); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, dir)
			var buf bytes.Buffer
			err := PackDir(&buf, dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("PackDir = %v, want an error containing %q", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("PackDir wrote %d bytes before failing", buf.Len())
			}
			// OpenArtifact reports it before streaming anything.
			if rc, err := OpenArtifact(dir); err == nil || !strings.Contains(err.Error(), tt.want) {
				if rc != nil {
					rc.Close()
				}
				t.Fatalf("OpenArtifact = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if err := PackDir(io.Discard, filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("PackDir(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestOpenArtifact(t *testing.T) {
	dir := makeRelease(t)
	var packed bytes.Buffer
	if err := PackDir(&packed, dir); err != nil {
		t.Fatal(err)
	}

	t.Run("directory", func(t *testing.T) {
		rc, err := OpenArtifact(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, packed.Bytes()) {
			t.Error("OpenArtifact(dir) differs from PackDir")
		}
	})

	t.Run("tarball as is", func(t *testing.T) {
		for _, name := range []string{"app.tar.gz", "app.tgz", "app.bin"} {
			p := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(p, packed.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			rc, err := OpenArtifact(p)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, packed.Bytes()) {
				t.Errorf("%s: OpenArtifact changed the file's bytes", name)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		tmp := t.TempDir()
		write := func(name string, data []byte) string {
			p := filepath.Join(tmp, name)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		var gzNotTar bytes.Buffer
		zw := gzip.NewWriter(&gzNotTar)
		fmt.Fprint(zw, strings.Repeat("this is not a tar archive\n", 100))
		zw.Close()
		var plainTar bytes.Buffer
		tw := tar.NewWriter(&plainTar)
		tw.WriteHeader(&tar.Header{Name: "Procfile", Mode: 0o644})
		tw.Close()

		fifo := filepath.Join(tmp, "fifo")
		if err := syscall.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		tests := []struct{ path, want string }{
			{filepath.Join(tmp, "missing"), "no such file or directory"},
			{write("app.zip", []byte("PK\x03\x04 zip")), "app.zip: not gzip-compressed"},
			{write("app.tar.gz", plainTar.Bytes()), "app.tar.gz: not gzip-compressed"},
			{write("empty.tar.gz", nil), "empty.tar.gz: not gzip-compressed"},
			{write("bad.tgz", append([]byte{0x1f, 0x8b}, "garbage"...)), "bad.tgz: not a valid gzip file"},
			{write("text.gz", gzNotTar.Bytes()), "text.gz: gzip-compressed, but not a tar archive"},
			{fifo, "fifo: not a directory or a .tar.gz file"},
		}
		for _, tt := range tests {
			rc, err := OpenArtifact(tt.path)
			if err == nil {
				rc.Close()
				t.Errorf("OpenArtifact(%s) succeeded", tt.path)
				continue
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenArtifact(%s) = %q, want it to contain %q", tt.path, err, tt.want)
			}
		}
	})

	// Closing the stream early stops the packing goroutine instead of
	// leaving it blocked on the pipe.
	t.Run("early close", func(t *testing.T) {
		big := t.TempDir()
		data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, poorly compressible enough to fill the pipe
		for i := range data {
			data[i] ^= byte(i * 7919 >> 3)
		}
		if err := os.WriteFile(filepath.Join(big, "blob"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		rc, err := OpenArtifact(big)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rc, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
		// Further reads fail rather than block.
		if _, err := rc.Read(make([]byte, 1)); err == nil {
			t.Error("read after Close succeeded")
		}
	})
}
