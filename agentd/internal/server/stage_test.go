package server

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// stageTree is the tests' two files, to stage.
type stageTree struct {
	*twoFiles
	files  []api.StageFile
	bodies []string
}

func newStageTree(t *testing.T) *stageTree {
	t.Helper()
	s := &stageTree{twoFiles: newTwoFiles(t)}
	for _, f := range s.twoFiles.files {
		s.files = append(s.files, api.StageFile{Path: f.path, Size: int64(len(f.body)), Mode: 0o644})
		s.bodies = append(s.bodies, f.body)
	}
	return s
}

func (s *stageTree) manifest(hashes []string, stage string) *api.UploadManifest {
	m := &api.UploadManifest{Stage: stage}
	for i, f := range s.twoFiles.files {
		m.Entries = append(m.Entries, f.entry(hashes[i]))
	}
	return m
}

// Files handed over without hashes come back hashed, in order; the
// manifest that names their stage lacks nothing, and deploys as any.
func TestStageThenUpload(t *testing.T) {
	s := newStageTree(t)
	c := api.NewClient(s.sock)
	res, err := c.StageFiles(t.Context(), s.files)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Hashes) != 2 || res.Hashes[0] != sum(s.bodies[0]) || res.Hashes[1] != sum(s.bodies[1]) {
		t.Fatalf("hashes %v, want those of the files in order", res.Hashes)
	}
	if res.Files != 2 || res.Kept != 2 || res.KeptBytes != int64(len(s.bodies[0])+len(s.bodies[1])) || res.Stage == "" {
		t.Errorf("stage answer %+v", res)
	}
	up, err := c.CreateUpload(t.Context(), s.manifest(res.Hashes, res.Stage))
	if err != nil || len(up.Missing) != 0 || up.MissingBytes != 0 {
		t.Fatalf("the upload naming the stage: %+v, %v", up, err)
	}
	u, err := s.st.Upload(up.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(); err != nil {
		t.Fatal(err)
	}

	// Again: agentd holds both now and keeps neither; a manifest naming a
	// stage agentd no longer has (forgotten, or a restart between) lists
	// what it lacks, as if it named none.
	res, err = c.StageFiles(t.Context(), s.files)
	if err != nil || res.Kept != 0 || res.Files != 2 {
		t.Errorf("staged again: %+v, %v", res, err)
	}
	if err := os.WriteFile(s.files[0].Path, []byte("web: ./y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hashes := []string{sum("web: ./y\n"), res.Hashes[1]}
	up, err = c.CreateUpload(t.Context(), s.manifest(hashes, "no-such-stage"))
	if err != nil || len(up.Missing) != 1 || up.Missing[0] != hashes[0] {
		t.Errorf("an unknown stage: %+v, %v; want the new Procfile missing", up, err)
	}
}

// A file that is not what its line says, or not a regular file, is
// refused with agentd's reason, and nothing of the stage is kept.
func TestStageRefusals(t *testing.T) {
	s := newStageTree(t)
	c := api.NewClient(s.sock)
	lie := []api.StageFile{s.files[0], {Path: s.files[1].Path, Size: s.files[1].Size + 1}}
	_, err := c.StageFiles(t.Context(), lie)
	if !isCode(err, api.CodeBadRequest) || !strings.Contains(err.Error(), "staged file 2") {
		t.Errorf("a file shorter than its line: %v, want agentd's refusal naming it", err)
	}
	tmp := filepath.Join(filepath.Dir(filepath.Dir(s.st.Dir("sha256:"+strings.Repeat("0", 64)))), "tmp")
	if stages, _ := filepath.Glob(filepath.Join(tmp, "*", "stage-*")); len(stages) != 0 {
		t.Errorf("a refused stage left %v", stages)
	}
	if _, err := c.StageFiles(t.Context(), []api.StageFile{{Path: "/nonexistent/file", Size: 1}}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file hctl cannot open: %v, want its own error, at once", err)
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	var res api.StageResult
	rawFDs(t, s.sock, "/v1/stages", &res, func(uc *net.UnixConn) {
		uc.WriteMsgUnix([]byte("9 644 0\n"), unix.UnixRights(int(pr.Fd())), nil)
		uc.Write([]byte("\n"))
	})
	if res.Error == nil || !strings.Contains(res.Error.Message, "not a regular file") || res.Stage != "" {
		t.Errorf("a pipe: %+v, want it refused", res)
	}
}

// Where files cannot be handed over (a socket forwarded byte by byte, an
// agentd without stages), the client learns it and hashes them itself.
func TestStageUnsupported(t *testing.T) {
	s := newStageTree(t)
	relay, stop, err := harness.RelaySocket(t.TempDir(), s.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if _, err := api.NewClient(relay).StageFiles(t.Context(), s.files); !errors.Is(err, api.ErrFDsUnsupported) {
		t.Errorf("through a relay: %v, want ErrFDsUnsupported", err)
	}
	plain := serveUnix(t, http.NewServeMux())
	if _, err := api.NewClient(plain).StageFiles(t.Context(), s.files); !errors.Is(err, api.ErrFDsUnsupported) {
		t.Errorf("a server without the route: %v, want ErrFDsUnsupported", err)
	}
	older := http.NewServeMux()
	older.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, &api.Error{Code: api.CodeNotFound, Message: "no such endpoint"})
	})
	if _, err := api.NewClient(serveUnix(t, older)).StageFiles(t.Context(), s.files); !errors.Is(err, api.ErrFDsUnsupported) {
		t.Errorf("an agentd before stages: %v, want ErrFDsUnsupported", err)
	}
}
