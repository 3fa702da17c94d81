package server

// Handlers of the manifest-first upload (routes in agentd/api/upload.go):
// the manifest, the missing contents, the deploy from the committed
// upload. Every check is the store's; these map its errors to statuses.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/agent"
	"github.com/agentd/agentd/agentd/internal/artifact"
	"github.com/agentd/agentd/agentd/internal/store"
)

// maxManifest bounds a manifest's JSON: 100,000 entries (artifact's file
// limit) of long paths fit.
const maxManifest = 64 << 20

func uploadErr(w http.ResponseWriter, err error) {
	status, e := uploadError(err)
	writeErr(w, status, e)
}

// uploadError is the status and the error that say err to the client.
func uploadError(err error) (int, *api.Error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, &api.Error{Code: api.CodeNotFound, Message: err.Error()}
	case errors.Is(err, artifact.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, &api.Error{Code: api.CodeBadRequest, Message: err.Error()}
	case errors.Is(err, store.ErrInvalid), errors.Is(err, artifact.ErrInvalid), errors.Is(err, errUploadStalled):
		return http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: err.Error()}
	default:
		return http.StatusInternalServerError, &api.Error{Code: api.CodeInternal, Message: err.Error()}
	}
}

func (s *Server) createUpload(w http.ResponseWriter, r *http.Request) {
	st, err := s.Agent.Store()
	if err != nil {
		uploadErr(w, err)
		return
	}
	var m api.UploadManifest
	body := newIdleBody(w, http.MaxBytesReader(w, r.Body, maxManifest), s.UploadIdle)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: "bad manifest: " + err.Error()})
		return
	}
	// Settled before the upload starts, so that it finds what was staged.
	stage, err := namedStage(st, m.Stage)
	if err != nil {
		uploadErr(w, err)
		return
	}
	u, res, err := st.NewUpload(m.Entries)
	if err != nil {
		if stage != nil {
			stage.Forget()
		}
		uploadErr(w, err)
		return
	}
	if stage != nil {
		if err := adoptStage(u, stage, &res); err != nil {
			u.Abort()
			uploadErr(w, err)
			return
		}
	}
	writeJSON(w, http.StatusCreated, res)
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) (*store.Upload, bool) {
	st, err := s.Agent.Store()
	if err == nil {
		var u *store.Upload
		if u, err = st.Upload(r.PathValue("id")); err == nil {
			return u, true
		}
	}
	uploadErr(w, err)
	return nil, false
}

// putBlobs reads frames "SHA256 SIZE\n" + SIZE bytes until the body ends.
func (s *Server) putBlobs(w http.ResponseWriter, r *http.Request) {
	u, ok := s.upload(w, r)
	if !ok {
		return
	}
	br := bufio.NewReaderSize(newIdleBody(w, http.MaxBytesReader(w, r.Body, s.MaxUpload), s.UploadIdle), 256<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			break
		}
		if err != nil {
			uploadErr(w, fmt.Errorf("%w: reading a content header: %w", store.ErrInvalid, err))
			return
		}
		hash, size, err := parseBlobHeader(strings.TrimSuffix(string(line), "\n"))
		if err != nil {
			uploadErr(w, err)
			return
		}
		if err := u.Put(hash, io.LimitReader(br, size)); err != nil {
			uploadErr(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseBlobHeader reads a content's line "SHA256 SIZE" (its newline
// removed): the same in the byte stream and among handed-over files.
func parseBlobHeader(line string) (string, int64, error) {
	hash, sz, _ := strings.Cut(line, " ")
	size, err := strconv.ParseInt(sz, 10, 64)
	if err != nil || size < 0 {
		return "", 0, fmt.Errorf("%w: content header %q: want \"SHA256 SIZE\"", store.ErrInvalid, line)
	}
	return hash, size, nil
}

func (s *Server) abortUpload(w http.ResponseWriter, r *http.Request) {
	u, ok := s.upload(w, r)
	if !ok {
		return
	}
	u.Abort()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deployUpload(w http.ResponseWriter, r *http.Request) {
	u, ok := s.upload(w, r)
	if !ok {
		return
	}
	if n := u.Missing(); n > 0 {
		writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest,
			Message: fmt.Sprintf("upload %s still lacks %d of the files its manifest lists", u.ID, n)})
		return
	}
	q := r.URL.Query()
	req := agent.DeployRequest{
		App: r.PathValue("app"), Message: q.Get("message"), SkipReleasePhase: boolParam(r, "skip_release_phase"),
		SkipPostdrain: boolParam(r, "skip_postdrain"),
		ReleaseID:     q.Get("release_id"), DeployedBy: peerName(peerOf(r)),
		// The core calls it instead of unpacking an artifact: the release
		// is built from the store.
		Prepare: s.Agent.PrepareUpload(u),
	}
	if req.WaitDrain, ok = waitDrain(w, r); !ok {
		return
	}
	if req.Canary, ok = canaryParam(w, r); !ok {
		return
	}
	if _, err := s.Agent.AppInfo(req.App); err != nil {
		fail(w, err)
		return
	}
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.Deploy(req, emit) })
}
