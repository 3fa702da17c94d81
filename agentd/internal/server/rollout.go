package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Handlers of the app settings and of the operation in progress: change
// settings, follow, cancel, end a bake.

func (s *Server) setApp(w http.ResponseWriter, r *http.Request) {
	var req api.AppSet
	if !decode(w, r, &req) {
		return
	}
	res, err := s.Agent.SetApp(r.PathValue("app"), req)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// attach streams the operation in progress: what it emitted so far, then
// the rest, to its result.
func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	past, next, detach, err := s.Agent.Attach(r.PathValue("app"))
	if err != nil {
		fail(w, err)
		return
	}
	defer detach()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	defer rc.SetWriteDeadline(time.Time{})
	write := func(e api.Event) bool {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := enc.Encode(e); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for _, e := range past {
		if !write(e) {
			return
		}
	}
	for {
		select {
		case e, ok := <-next:
			if !ok || !write(e) {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) {
	if err := s.Agent.Cancel(r.PathValue("app"), peerName(peerOf(r))); err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) endBake(w http.ResponseWriter, r *http.Request) {
	var req api.BakeRequest
	if !decode(w, r, &req) {
		return
	}
	if err := s.Agent.EndBake(r.PathValue("app"), req.Pass); err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) repairApp(w http.ResponseWriter, r *http.Request) {
	app, err := s.Agent.RepairApp(r.PathValue("app"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, app)
}

// waitDrain reads ?wait_drain=D: how long a deploy waits for its old
// processes to exit before it reports (they drain on after it).
func waitDrain(w http.ResponseWriter, r *http.Request) (time.Duration, bool) {
	v := r.URL.Query().Get("wait_drain")
	if v == "" {
		return 0, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("bad wait_drain %q: want a duration such as 30s", v)})
		return 0, false
	}
	return d, true
}
