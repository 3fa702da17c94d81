package server

import (
	"net/http"

	"github.com/agentd/agentd/agentd/api"
)

func (s *Server) maintenance(w http.ResponseWriter, r *http.Request) {
	var req api.MaintenanceRequest
	name := r.PathValue("app")
	if !decode(w, r, &req) || !s.preflight(w, name) {
		return
	}
	by := peerName(peerOf(r))
	s.stream(w, r, func(emit func(api.Event)) api.OpResult {
		return s.Agent.Maintenance(name, req.On, req.Page, by, emit)
	})
}
