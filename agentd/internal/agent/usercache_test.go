package agent

import (
	"os"
	"os/user"
	"path/filepath"
	"syscall"
	"testing"
)

// TestUserCache: a lookup is served from the cache while the files it
// was read from are unchanged, and read again once either changes, in
// place or by a new file renamed over it. Failures are not cached.
func TestUserCache(t *testing.T) {
	dir := t.TempDir()
	saved := userFiles
	t.Cleanup(func() { userFiles = saved })
	userFiles = [2]string{filepath.Join(dir, "passwd"), filepath.Join(dir, "group")}
	for _, f := range userFiles {
		if err := os.WriteFile(f, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := user.Lookup("root")
	if err != nil {
		t.Skip("no root user to look up:", err)
	}
	u1, _, err := cachedLookup("root")
	if err != nil || u1.Uid != want.Uid || u1.HomeDir != want.HomeDir {
		t.Fatalf("cachedLookup(root) = %+v, %v; want %+v", u1, err, want)
	}
	if u2, _, _ := cachedLookup("root"); u2 != u1 {
		t.Errorf("second lookup with the files unchanged was not served from the cache")
	}
	// An edit in place (appended: another size).
	f, err := os.OpenFile(userFiles[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("y\n")
	f.Close()
	u3, _, _ := cachedLookup("root")
	if u3 == u1 {
		t.Errorf("lookup after /etc/passwd changed was served from the cache")
	}
	// A new file of the same size renamed over the other (useradd's way).
	tmp := filepath.Join(dir, "group.new")
	if err := os.WriteFile(tmp, []byte("z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, userFiles[1]); err != nil {
		t.Fatal(err)
	}
	if u4, _, _ := cachedLookup("root"); u4 == u3 {
		t.Errorf("lookup after /etc/group was replaced was served from the cache")
	}
	if _, _, err := cachedLookup("no-such-user-agentd-test"); err == nil {
		t.Errorf("a user that does not exist was found")
	}
}

// TestEnsureDir: mode and owner are set where they differ, the special
// bits cleared, and a directory that is right is left alone.
func TestEnsureDir(t *testing.T) {
	d := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 65534, 65534
	}
	if err := ensureDir(d, uid, gid, 0o700); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(d)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != os.ModeDir|0o700 {
		t.Errorf("mode %v, want drwx------", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); uid >= 0 && (int(st.Uid) != uid || int(st.Gid) != gid) {
		t.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
	}
	before := fi.Sys().(*syscall.Stat_t).Ctim
	if err := ensureDir(d, uid, gid, 0o700); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Lstat(d)
	if after := fi.Sys().(*syscall.Stat_t).Ctim; after != before {
		t.Errorf("a directory that was right was changed (ctime %v → %v)", before, after)
	}
}
