package server

import "net/http"

// cron lists an app's cron jobs and their runs on this host.
func (s *Server) cron(w http.ResponseWriter, r *http.Request) {
	list, err := s.Agent.Cron(r.PathValue("app"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}
