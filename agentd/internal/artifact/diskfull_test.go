package artifact

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestUnpackDiskFull: a disk that fills during the unpack leaves nothing
// behind, neither the release nor a half-written temporary tree, and the
// error says why. The disk is a 1 MiB tmpfs (root only).
func TestUnpackDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Skip("cannot mount a tmpfs:", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	parent := filepath.Join(mnt, "releases")
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789abcdef", (4<<20)/16) // 4 MiB, more than the disk
	data := tgz(t, file("Procfile", "web: ./x"), file("a/small", "hi"), file("a/big", big))
	err := Unpack(bytes.NewReader(data), filepath.Join(parent, "v1"), Limits{})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("unpack onto a full disk: %v, want ENOSPC", err)
	}
	if !strings.Contains(err.Error(), `unpacking entry "a/big"`) {
		t.Errorf("error does not name the entry: %v", err)
	}
	if got := names(t, parent); len(got) != 0 {
		t.Fatalf("left behind on the full disk: %q", got)
	}
	var st syscall.Statfs_t
	syscall.Statfs(mnt, &st)
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 64<<10 {
		t.Errorf("%d bytes still used on the disk after the failed unpack", used)
	}
}
