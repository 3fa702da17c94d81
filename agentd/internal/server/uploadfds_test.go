package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/harness"
)

// serveUnix serves h on a unix socket of its own, as agentd does (peer
// credentials from the socket), and returns its path.
func serveUnix(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agentd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ConnContext: ConnContext}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

// fdUpload is an upload of two contents, written to files to hand over.
type fdUpload struct {
	u     *store.Upload
	refs  []api.BlobRef
	sock  string
	total int64
}

// twoFiles is agentd's server on a unix socket of its own, its store, and
// the two files the tests hand over: in this order, as the tests name them
// (files[0] the small Procfile, files[1] 1 MiB), never a map's.
type twoFiles struct {
	sock  string
	st    *store.Store
	files []testFile
}

type testFile struct{ name, body, path string }

func newTwoFiles(t *testing.T) *twoFiles {
	t.Helper()
	ag := newAgent(t)
	st, err := ag.Store()
	if err != nil {
		t.Fatal(err)
	}
	tf := &twoFiles{sock: serveUnix(t, newServer(ag).Handler()), st: st}
	dir := t.TempDir()
	for _, f := range []testFile{{name: "Procfile", body: "web: ./x\n"}, {name: "big", body: strings.Repeat("0123456789abcdef", 1<<16)}} {
		f.path = filepath.Join(dir, f.name)
		if err := os.WriteFile(f.path, []byte(f.body), 0o644); err != nil {
			t.Fatal(err)
		}
		tf.files = append(tf.files, f)
	}
	return tf
}

// entry is f's manifest entry, with this hash.
func (f testFile) entry(hash string) api.ManifestEntry {
	return api.ManifestEntry{Path: f.name, Type: api.EntryFile, Mode: 0o644, Size: int64(len(f.body)), SHA256: hash}
}

func newFDUpload(t *testing.T) *fdUpload {
	t.Helper()
	tf := newTwoFiles(t)
	f := &fdUpload{sock: tf.sock}
	var entries []api.ManifestEntry
	for _, c := range tf.files {
		entries = append(entries, c.entry(sum(c.body)))
		f.refs = append(f.refs, api.BlobRef{SHA256: sum(c.body), Size: int64(len(c.body)), Path: c.path})
		f.total += int64(len(c.body))
	}
	u, res, err := tf.st.NewUpload(entries)
	if err != nil || len(res.Missing) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	f.u = u
	return f
}

// Handed-over files are read by agentd, which counts what it received.
func TestHandOverBlobs(t *testing.T) {
	f := newFDUpload(t)
	c := api.NewClient(f.sock)
	n, err := c.HandOverBlobs(t.Context(), f.u.ID, f.refs)
	if err != nil || n != f.total {
		t.Fatalf("handed over: %d bytes, %v; want %d", n, err, f.total)
	}
	if f.u.Missing() != 0 {
		t.Errorf("%d contents still missing", f.u.Missing())
	}
	// Every file received is closed once stored: 40 more hand-overs of
	// the same two (each stored already) leave no descriptor behind.
	before := openFDs(t)
	for range 40 {
		if _, err := c.HandOverBlobs(t.Context(), f.u.ID, f.refs); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFDs(t); after-before >= 20 {
		t.Errorf("%d descriptors open after 80 files were handed over, %d before", after, before)
	}
	if _, err := c.HandOverBlobs(t.Context(), "nope", f.refs); !isCode(err, api.CodeNotFound) {
		t.Errorf("an unknown upload: %v, want not found", err)
	}
}

// A file whose bytes do not match the hash it was handed over as is
// refused, with agentd's reason, and the upload still lacks it.
func TestHandOverLyingFile(t *testing.T) {
	f := newFDUpload(t)
	lie := f.refs[0]
	if err := os.WriteFile(lie.Path, []byte("web: ./y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := api.NewClient(f.sock).HandOverBlobs(t.Context(), f.u.ID, []api.BlobRef{lie})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || !strings.Contains(ae.Message, "hash to") {
		t.Fatalf("lying file: %v, want agentd's refusal", err)
	}
	if f.u.Missing() != 2 {
		t.Errorf("the refused file changed the upload: %d missing, want 2", f.u.Missing())
	}
	// A file shorter than its manifest entry says is refused too.
	short := f.refs[1]
	if err := os.Truncate(short.Path, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := api.NewClient(f.sock).HandOverBlobs(t.Context(), f.u.ID, []api.BlobRef{short}); !isCode(err, api.CodeBadRequest) {
		t.Errorf("short file: %v, want a bad request", err)
	}
}

// Only a regular file is read: a pipe could hold agentd for ever.
func TestHandOverRefusesAPipe(t *testing.T) {
	f := newFDUpload(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	res := rawHandOver(t, f.sock, f.u.ID, func(uc *net.UnixConn) {
		uc.WriteMsgUnix([]byte(f.refs[0].SHA256+" 9\n"), unix.UnixRights(int(pr.Fd())), nil)
		uc.Write([]byte("\n"))
	})
	if res.Error == nil || res.Error.Code != api.CodeBadRequest || !strings.Contains(res.Error.Message, "not a regular file") {
		t.Errorf("a pipe: %+v, want it refused", res)
	}
	if f.u.Missing() != 2 {
		t.Errorf("%d missing, want 2", f.u.Missing())
	}
}

// A line without its descriptor (a socket forwarded byte by byte, as
// ssh does) gets CodeFDsNotCarried, which the client turns into
// ErrFDsUnsupported so that it sends the bytes instead; so does an agentd
// without the route.
func TestHandOverWithoutDescriptors(t *testing.T) {
	f := newFDUpload(t)
	res := rawHandOver(t, f.sock, f.u.ID, func(uc *net.UnixConn) {
		uc.Write([]byte(f.refs[0].SHA256 + " 9\n\n"))
	})
	if res.Error == nil || res.Error.Code != api.CodeFDsNotCarried || res.Files != 0 {
		t.Errorf("a line without a descriptor: %+v", res)
	}
	relay, stop, err := harness.RelaySocket(t.TempDir(), f.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if _, err := api.NewClient(relay).HandOverBlobs(t.Context(), f.u.ID, f.refs); !errors.Is(err, api.ErrFDsUnsupported) {
		t.Errorf("through a relay: %v, want ErrFDsUnsupported", err)
	}
	if n, err := api.NewClient(relay).SendBlobs(t.Context(), f.u.ID, f.refs); err != nil || n != f.total {
		t.Errorf("the bytes through the relay: %d, %v", n, err)
	}
	if f.u.Missing() != 0 {
		t.Errorf("%d missing after the bytes were sent", f.u.Missing())
	}
	older := serveUnix(t, http.NewServeMux())
	if _, err := api.NewClient(older).HandOverBlobs(t.Context(), f.u.ID, f.refs); !errors.Is(err, api.ErrFDsUnsupported) {
		t.Errorf("an agentd without the route: %v, want ErrFDsUnsupported", err)
	}
}

// rawHandOver upgrades a connection for handing over files, lets send
// write what it wants, and returns agentd's answer.
func rawHandOver(t *testing.T, sock, id string, send func(*net.UnixConn)) api.FDResult {
	t.Helper()
	var res api.FDResult
	rawFDs(t, sock, "/v1/uploads/"+id+"/fds", &res, send)
	return res
}

// rawFDs upgrades a connection to POST target for handing over files,
// lets send write what it wants, and decodes agentd's answer into answer.
func rawFDs(t *testing.T, sock, target string, answer any, send func(*net.UnixConn)) {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST "+target+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "+api.FDUpgrade+"\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	send(conn.(*net.UnixConn))
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("agentd's answer: %v", err)
	}
	if err := json.Unmarshal([]byte(line), answer); err != nil {
		t.Fatalf("agentd's answer %q: %v", line, err)
	}
}

func isCode(err error, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}
