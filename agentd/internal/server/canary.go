package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
)

// Handlers of the canary (routes in agentd/api/canary_client.go): show
// it, promote it, abort it; and the canary= value of the deploy routes.
// Whether an app may have a canary (kernel steering, no other rollout) is
// the core's to say: these map its answers.

func (s *Server) canary(w http.ResponseWriter, r *http.Request) {
	c, err := s.Agent.Canary(r.PathValue("app"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("app")
	wait, ok := s.canaryRequest(w, r, name)
	if !ok {
		return
	}
	by := peerName(peerOf(r))
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.Promote(name, by, wait, emit) })
}

func (s *Server) abortCanary(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("app")
	wait, ok := s.canaryRequest(w, r, name)
	if !ok {
		return
	}
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.AbortCanary(name, wait, emit) })
}

// canaryRequest reads a promote's or an abort's body and answers 404
// before a stream starts for an unknown app.
func (s *Server) canaryRequest(w http.ResponseWriter, r *http.Request, name string) (time.Duration, bool) {
	var req api.CanaryRequest
	if !decode(w, r, &req) {
		return 0, false
	}
	if req.WaitDrainSeconds < 0 {
		writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest,
			Message: fmt.Sprintf("bad wait_drain_seconds %v: want 0 (the default, 30s) or more", req.WaitDrainSeconds)})
		return 0, false
	}
	if !s.preflight(w, name) {
		return 0, false
	}
	return time.Duration(req.WaitDrainSeconds * float64(time.Second)), true
}

// canaryParam reads a deploy's ?canary=P, the share of new connections
// its release gets as a canary (grammar.ParseCanaryPercent: 10, 10%,
// 0.5%); 0 without it: a deploy of the whole formation.
func canaryParam(w http.ResponseWriter, r *http.Request) (float64, bool) {
	v := r.URL.Query().Get("canary")
	if v == "" {
		return 0, true
	}
	p, err := grammar.ParseCanaryPercent(v)
	if err != nil {
		writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest,
			Message: fmt.Sprintf("bad canary %q: %s", v, grammar.Reason(err))})
		return 0, false
	}
	return p, true
}
