package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/agent"
)

// startRun starts a one-off process (hctl run) and switches the connection
// to its run stream (HTTP Upgrade: agentd-run). Errors come before the
// switch, as JSON like any other.
func (s *Server) startRun(w http.ResponseWriter, r *http.Request) {
	if !wantsRunUpgrade(w, r) {
		return
	}
	var req api.RunRequest
	if !decode(w, r, &req) {
		return
	}
	info, relay, err := s.Agent.StartRun(r.PathValue("app"), req)
	if err != nil {
		fail(w, err)
		return
	}
	s.Log.Info("one-off process", "app", info.App, "process", info.Process, "by", peerName(peerOf(r)))
	s.switchToRun(w, info, relay)
}

// attachRun re-attaches a client to a running one-off process: after its
// connection to agentd was lost (an agentd restart or upgrade).
func (s *Server) attachRun(w http.ResponseWriter, r *http.Request) {
	if !wantsRunUpgrade(w, r) {
		return
	}
	app, process := r.PathValue("app"), r.PathValue("process")
	relay, err := s.Agent.AttachRun(app, process)
	if err != nil {
		fail(w, err)
		return
	}
	s.switchToRun(w, api.RunInfo{App: app, Process: process}, relay)
}

func wantsRunUpgrade(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Upgrade") != api.RunUpgrade {
		writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest,
			Message: "a run needs the connection upgraded: send Connection: Upgrade and Upgrade: " + api.RunUpgrade})
		return false
	}
	return true
}

// switchToRun answers 101 and passes the run stream between the client and
// the relay until either ends (agent.Pump).
func (s *Server) switchToRun(w http.ResponseWriter, info api.RunInfo, relay io.ReadWriteCloser) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		relay.Close()
		s.Log.Error("run: hijacking the connection", "err", err)
		return
	}
	conn.SetDeadline(time.Time{})
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\nX-Agentd-Run: %s\r\nX-Agentd-Release: %s\r\n\r\n",
		api.RunUpgrade, info.Process, info.Release)
	if err := brw.Flush(); err != nil {
		conn.Close()
		relay.Close()
		return
	}
	go agent.Pump(&bufferedConn{Conn: conn, r: brw.Reader}, relay)
}

// bufferedConn reads through the server's buffer, which may hold bytes the
// client sent right after its request.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
