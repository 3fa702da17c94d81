package server

import (
	"net/http"

	"github.com/agentd/agentd/agentd/api"
)

// postdrain runs the active release's app.json postdrain (hctl postdrain).
func (s *Server) postdrain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("app")
	if _, err := s.Agent.AppInfo(name); err != nil {
		fail(w, err)
		return
	}
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.RunPostdrain(name, emit) })
}
