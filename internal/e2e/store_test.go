package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// The manifest-first upload end to end, with the real agentd and hctl
// (docs/concepts.md, "The release store"). TestReleaseTreeImmutable and
// TestAllowRootWritesStayPrivate pass once the core runs processes in
// ag.ReleaseDir and adds ag.DataEnv to their environment.

var sentRE = regexp.MustCompile(`upload: sent (\d+) of (\d+) files \(([^;]+) of`)

// uploadLine returns the files and bytes hctl says it sent.
func uploadLine(t *testing.T, r harness.Result) (files int, sent string) {
	t.Helper()
	m := sentRE.FindStringSubmatch(r.Stderr)
	if m == nil {
		t.Fatalf("no manifest-first upload (did agentd fall back to the .tar.gz?):\n%s", r)
	}
	n, _ := strconv.Atoi(m[1])
	return n, m[3]
}

// ageTree sets every file of dir an hour back, as a build's output is by
// its deploy.
func ageTree(t *testing.T, dir string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// storeRelease is a release directory: the test app, the Procfile and a
// 2 MB data file.
func (e *env) storeRelease(name string) string {
	e.t.Helper()
	dir := filepath.Join(e.dir, name)
	if _, err := harness.Release(dir, "web: "+bins.TestApp+"\n", nil); err != nil {
		e.t.Fatal(err)
	}
	// More than hctl hashes itself (hashHereBytes, 2 MiB): a deploy that
	// cannot trust its cache stages the tree.
	if err := os.WriteFile(filepath.Join(dir, "data.bin"), []byte(strings.Repeat("d", 3_000_000)), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

func (e *env) deployR(app, dir string, args ...string) (api.OpResult, harness.Result) {
	e.t.Helper()
	var res api.OpResult
	r := e.ag.HctlJSON(&res, append([]string{"deploy", app, dir}, args...)...)
	if r.Code != 0 || !res.OK {
		e.t.Fatalf("deploy %s: %s", dir, r)
	}
	return res, r
}

// A second deploy of an unchanged tree sends no file bytes; a one-file
// change sends that file alone; a .tar.gz of the active content is
// "nothing to do" (one digest for both paths); rollback and config
// changes work from releases made by uploads.
func TestDeployDirSendsOnlyChanges(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	e := start(t)
	url := e.createApp("web", "--readiness", "web=notify")
	dir := e.storeRelease("tree")
	// Built a while ago: hctl's cache trusts what it hashed of them.
	ageTree(t, dir)

	res, r := e.deployR("web", dir)
	if files, _ := uploadLine(t, r); files != 2 || !res.Changed || res.Release != "v1" {
		t.Fatalf("first deploy: sent %d files, %+v", files, res)
	}
	res, r = e.deployR("web", dir)
	if files, sent := uploadLine(t, r); files != 0 || sent != "0 B" || res.Changed {
		t.Errorf("unchanged tree: sent %d files (%s), changed %v", files, sent, res.Changed)
	}

	if err := os.WriteFile(filepath.Join(dir, "VERSION"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	staged := strings.Count(e.ag.Log(), `msg="upload: staged files read"`)
	res, r = e.deployR("web", dir)
	if files, sent := uploadLine(t, r); files != 1 || sent != "1 B" || !res.Changed || res.Release != "v2" {
		t.Errorf("one new file: sent %d files (%s), %+v", files, sent, res)
	}
	// A small change is hashed by hctl, and the manifest goes first.
	if !strings.Contains(r.Stderr, "hashed 1 files (1 B) in") || strings.Contains(r.Stderr, "as agentd read them") ||
		strings.Count(e.ag.Log(), `msg="upload: staged files read"`) != staged {
		t.Errorf("a one-byte change was staged, not hashed by hctl:\n%s", r)
	}
	if got := get(t, url); !strings.Contains(got, "release=v2") {
		t.Errorf("after the upload deploy the app answers %q", got)
	}

	// hctl's hash cache lost (a fresh checkout of the same build): agentd
	// reads every file once to hash it, keeps none, and nothing changes.
	if err := os.RemoveAll(filepath.Join(e.ag.Dir, "cache", "hctl")); err != nil {
		t.Fatal(err)
	}
	res, r = e.deployR("web", dir)
	if files, sent := uploadLine(t, r); files != 0 || sent != "0 B" || res.Changed || !strings.Contains(r.Stderr, "hashed 3 files (3.0 MB) in") || !strings.Contains(r.Stderr, "as agentd read them") {
		t.Errorf("a cold hash cache: sent %d files (%s), changed %v:\n%s", files, sent, res.Changed, r)
	}

	// The same content as a .tar.gz: the digest is the same.
	tgz := filepath.Join(e.dir, "tree.tar.gz")
	f, err := os.Create(tgz)
	if err != nil {
		t.Fatal(err)
	}
	if err := api.PackDir(f, dir); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if res, _ := e.deployR("web", tgz); res.Changed {
		t.Errorf("the .tar.gz of the active tree made a new release: %+v", res)
	}

	if res := e.mustHctl("rollback", "web"); !strings.Contains(res.Stdout, "v3 is live") {
		t.Errorf("rollback: %s", res)
	}
	if res := e.mustHctl("config", "set", "web", "A=b"); !strings.Contains(res.Stdout, "v4") {
		t.Errorf("config set: %s", res)
	}
	if got := get(t, url); !strings.Contains(got, "release=v4") {
		t.Errorf("after rollback and config the app answers %q", got)
	}
}

// A lying upload is refused through the real control API, and the app
// keeps serving its release.
func TestLyingUploadRefused(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	e := start(t)
	url := e.createApp("web", "--readiness", "web=notify")
	dir := e.storeRelease("tree")
	e.deployR("web", dir)
	c := api.NewClient(e.ag.Socket)
	ctx := t.Context()
	body := "web: ./x\n"
	up, err := c.CreateUpload(ctx, &api.UploadManifest{Entries: []api.ManifestEntry{
		{Path: "Procfile", Type: api.EntryFile, Mode: 0o644, Size: int64(len(body)), SHA256: strings.Repeat("ab", 32)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(e.dir, "lie")
	os.WriteFile(p, []byte(body), 0o644)
	_, err = c.SendBlobs(ctx, up.ID, []api.BlobRef{{SHA256: up.Missing[0], Size: int64(len(body)), Path: p}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest {
		t.Errorf("lying content: %v, want a bad request", err)
	}
	if _, err := c.DeployUpload(ctx, "web", up.ID, api.DeployOptions{}, nil); err == nil {
		t.Error("a deploy of the lying upload succeeded")
	}
	// A lie found while more is still being sent: agentd answers before
	// it has read the rest, and the client still reports its answer.
	big := make([]byte, 8<<20)
	bigSum := sha256.Sum256(big)
	up, err = c.CreateUpload(ctx, &api.UploadManifest{Entries: []api.ManifestEntry{
		{Path: "Procfile", Type: api.EntryFile, Mode: 0o644, Size: int64(len(body)), SHA256: strings.Repeat("cd", 32)},
		{Path: "big", Type: api.EntryFile, Mode: 0o644, Size: int64(len(big)), SHA256: hex.EncodeToString(bigSum[:])},
	}})
	if err != nil {
		t.Fatal(err)
	}
	bp := filepath.Join(e.dir, "big")
	os.WriteFile(bp, big, 0o644)
	_, err = c.SendBlobs(ctx, up.ID, []api.BlobRef{
		{SHA256: strings.Repeat("cd", 32), Size: int64(len(body)), Path: p},
		{SHA256: hex.EncodeToString(bigSum[:]), Size: int64(len(big)), Path: bp},
	})
	if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || !strings.Contains(ae.Message, "hash to") {
		t.Errorf("lying content followed by 8 MiB: %v, want agentd's refusal", err)
	}
	// A file that shrank after it was hashed fails on this side, at once
	// (not after agentd's idle timeout), and the upload still lacks it.
	up, err = c.CreateUpload(ctx, &api.UploadManifest{Entries: []api.ManifestEntry{
		{Path: "Procfile", Type: api.EntryFile, Mode: 0o644, Size: 100, SHA256: strings.Repeat("ef", 32)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = c.SendBlobs(ctx, up.ID, []api.BlobRef{{SHA256: strings.Repeat("ef", 32), Size: 100, Path: p}}); err == nil || !strings.Contains(err.Error(), "shrank") {
		t.Errorf("a file shorter than its manifest entry: %v, want it reported as shrunk", err)
	}
	if _, err := c.DeployUpload(ctx, "web", up.ID, api.DeployOptions{}, nil); err == nil {
		t.Error("a deploy of the upload that lacks a file succeeded")
	}
	if got := get(t, url); !strings.Contains(got, "release=v1") {
		t.Errorf("after the refused upload the app answers %q", got)
	}
	for _, m := range []*api.UploadManifest{
		{Entries: []api.ManifestEntry{{Path: "../x", Type: api.EntryFile, SHA256: strings.Repeat("ab", 32)}}},
		{Entries: []api.ManifestEntry{{Path: "l", Type: api.EntrySymlink, Target: "/etc/passwd"}}},
		{Entries: []api.ManifestEntry{{Path: "dev", Type: "chardev"}}},
	} {
		if _, err := c.CreateUpload(ctx, m); !errors.As(err, &ae) || ae.Code != api.CodeBadRequest {
			t.Errorf("hostile manifest %+v: %v", m.Entries[0], err)
		}
	}
}

// Processes run in a release tree they cannot change: an --allow-root
// app in a private copy, every app with HOME and TMPDIR in its data dir.
func TestReleaseTreeImmutable(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	e := start(t)
	e.createApp("web", "--readiness", "web=notify")
	dir := e.storeRelease("tree")
	e.deployR("web", dir)
	pid := e.ps("web")[0].PID
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		t.Fatal(err)
	}
	trees := filepath.Join(e.ag.StateDir, "store", "trees")
	if strings.HasPrefix(cwd, trees) {
		t.Errorf("an --allow-root app runs in the shared tree %s", cwd)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(e.ag.StateDir, "data", "web")
	for _, want := range []string{"HOME=" + data, "TMPDIR=" + filepath.Join(data, "tmp")} {
		if !strings.Contains("\x00"+string(environ)+"\x00", "\x00"+want+"\x00") {
			t.Errorf("process environment lacks %s", want)
		}
	}
	entries, _ := os.ReadDir(trees)
	for _, t2 := range entries {
		fi, err := os.Stat(filepath.Join(trees, t2.Name(), "data.bin"))
		if err != nil || fi.Mode().Perm() != 0o444 {
			t.Errorf("blob %s: %v %v, want read-only", t2.Name(), fi, err)
		}
	}
}

// An --allow-root release that writes, truncates and chmods its own files
// changes nothing another release sees, nor a rollback to the same
// content: each release runs in a copy of its own.
func TestAllowRootWritesStayPrivate(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	e := start(t)
	e.createApp("web", "--readiness", "web=notify")
	write := func(name, version string) string {
		dir := filepath.Join(e.dir, name)
		procfile := `web: cat VERSION > "$TMPDIR/seen-$AGENTD_RELEASE"; echo hacked > VERSION; chmod 777 Procfile; : > data.bin; exec ` + bins.TestApp + "\n"
		if _, err := harness.Release(dir, procfile, map[string]string{"VERSION": version, "data.bin": "data"}); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	e.deployR("web", write("a", "1"))
	e.deployR("web", write("b", "2"))
	if r := e.mustHctl("rollback", "web", "v1"); !strings.Contains(r.Stdout, "v3 is live") {
		t.Fatalf("rollback: %s", r)
	}
	tmp := filepath.Join(e.ag.StateDir, "data", "web", "tmp")
	for v, want := range map[string]string{"v1": "1", "v2": "2", "v3": "1"} {
		if b, err := os.ReadFile(filepath.Join(tmp, "seen-"+v)); err != nil || string(b) != want {
			t.Errorf("%s saw VERSION %q (%v), want %q", v, b, err, want)
		}
	}
	trees, _ := os.ReadDir(filepath.Join(e.ag.StateDir, "store", "trees"))
	for _, tr := range trees {
		dir := filepath.Join(e.ag.StateDir, "store", "trees", tr.Name())
		if b, _ := os.ReadFile(filepath.Join(dir, "VERSION")); string(b) == "hacked\n" {
			t.Errorf("shared tree %s was written", tr.Name())
		}
		if fi, err := os.Stat(filepath.Join(dir, "Procfile")); err != nil || fi.Mode().Perm() != 0o444 {
			t.Errorf("shared tree %s Procfile: %v %v", tr.Name(), fi, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, "data.bin")); err != nil || fi.Size() != 4 {
			t.Errorf("shared tree %s data.bin: %v %v", tr.Name(), fi, err)
		}
	}
}

// An --allow-root release's private copy is made while the release is
// prepared, not by its first process's start: there it was copied inside
// the switch, while the old and new processes ran side by side (20-30 ms
// for an 8.5 MiB binary here). Held at the end of prepare (the test pause
// "prepare"), before any process of it starts, the copy is there.
func TestAllowRootCopyMadeInPrepare(t *testing.T) {
	e := startEnv(t, []string{"AGENTD_TEST_PAUSE=prepare"})
	e.createApp("pc", "--readiness", "web=notify") // --allow-root
	e.deploy("pc", e.release(""))
	wait := e.deployUntil("test pause at prepare", "pc", e.release(""), "-m", "[pause]")
	private := filepath.Join(e.ag.StateDir, "store", "private")
	if _, err := os.Stat(filepath.Join(private, "pc-v2", "Procfile")); err != nil {
		entries, _ := os.ReadDir(private)
		t.Errorf("v2's private copy is not made by the end of prepare: %v (store/private holds %v)", err, entries)
	}
	if n := len(runningOfRelease(e, "pc", "v2")); n != 0 {
		t.Errorf("%d process(es) of v2 running at the end of prepare", n)
	}

	e.ag.Kill()
	wait()
	e.ag.Env = nil
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, e, "pc", "v1")
	checkNoOrphans(t, e, "pc")
}
