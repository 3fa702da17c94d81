// Package server is agentd's control API: HTTP/1.1 + JSON on a unix
// socket, as listed in package api. It maps requests to the agent and the
// agent's errors to status codes, streams operations as newline-delimited
// JSON events, and identifies callers by SO_PEERCRED.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/agent"
	"github.com/agentd/agentd/agentd/internal/logs"
)

// Server serves the control API for an agent.
type Server struct {
	Agent   *agent.Agent
	Log     *slog.Logger
	Metrics http.Handler
	// AdminGroup names the group whose members may change things (besides
	// root and agentd's own user).
	AdminGroup string
	// MaxUpload bounds an artifact upload.
	MaxUpload int64
	// UploadIdle is how long an upload may send nothing before it is cut
	// (default DefaultUploadIdle).
	UploadIdle time.Duration
	// Upgrade hands over to a new agentd binary (tableflip) and returns
	// once the new one is ready, or with why it failed.
	Upgrade func() error
}

type peerKey struct{}

// Peer is the process at the other end of a control connection.
type Peer struct {
	UID, GID, PID int
	Known         bool
}

// ConnContext records the peer's credentials for each connection.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid), Known: true})
}

func peerOf(r *http.Request) Peer {
	p, _ := r.Context().Value(peerKey{}).(Peer)
	return p
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	if s.MaxUpload <= 0 {
		s.MaxUpload = 2 << 30
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/status", s.status)
	m.HandleFunc("GET /v1/apps", s.apps)
	m.HandleFunc("POST /v1/apps", s.admin(s.createApp))
	m.HandleFunc("GET /v1/apps/{app}", s.appInfo)
	m.HandleFunc("DELETE /v1/apps/{app}", s.admin(s.destroyApp))
	m.HandleFunc("POST /v1/apps/{app}/deploys", s.admin(s.deploy))
	m.HandleFunc("POST /v1/apps/{app}/release-phase", s.admin(s.releasePhase))
	m.HandleFunc("POST /v1/apps/{app}/postdrain", s.admin(s.postdrain))
	m.HandleFunc("GET /v1/apps/{app}/releases", s.releases)
	m.HandleFunc("GET /v1/apps/{app}/cron", s.cron)
	m.HandleFunc("GET /v1/apps/{app}/releases/{version}", s.release)
	m.HandleFunc("POST /v1/apps/{app}/rollback", s.admin(s.rollback))
	m.HandleFunc("GET /v1/apps/{app}/canary", s.canary)
	m.HandleFunc("POST /v1/apps/{app}/promote", s.admin(s.promote))
	m.HandleFunc("POST /v1/apps/{app}/canary/abort", s.admin(s.abortCanary))
	m.HandleFunc("GET /v1/ps", s.ps)
	m.HandleFunc("GET /v1/apps/{app}/ps", s.ps)
	m.HandleFunc("POST /v1/apps/{app}/scale", s.admin(s.scale))
	m.HandleFunc("POST /v1/apps/{app}/restart", s.admin(s.restart))
	m.HandleFunc("POST /v1/apps/{app}/maintenance", s.admin(s.maintenance))
	m.HandleFunc("GET /v1/apps/{app}/config", s.private(s.config))
	m.HandleFunc("PATCH /v1/apps/{app}/config", s.admin(s.changeConfig))
	m.HandleFunc("GET /v1/apps/{app}/logs", s.private(s.logs))
	m.HandleFunc("PATCH /v1/apps/{app}", s.admin(s.setApp))
	m.HandleFunc("POST /v1/apps/{app}/repair", s.admin(s.repairApp))
	m.HandleFunc("GET /v1/apps/{app}/op", s.attach)
	m.HandleFunc("POST /v1/apps/{app}/cancel", s.admin(s.cancel))
	m.HandleFunc("POST /v1/apps/{app}/bake", s.admin(s.endBake))
	m.HandleFunc("POST /v1/apps/{app}/runs", s.admin(s.startRun))
	m.HandleFunc("POST /v1/apps/{app}/runs/{process}/attach", s.admin(s.attachRun))
	m.HandleFunc("POST /v1/agent/upgrade", s.admin(s.upgrade))
	m.HandleFunc("POST /v1/uploads", s.admin(s.createUpload))
	m.HandleFunc("POST /v1/uploads/{id}/blobs", s.admin(s.putBlobs))
	m.HandleFunc("POST /v1/uploads/{id}/fds", s.admin(s.putBlobFDs))
	m.HandleFunc("POST /v1/stages", s.admin(s.stageFDs))
	m.HandleFunc("DELETE /v1/uploads/{id}", s.admin(s.abortUpload))
	m.HandleFunc("POST /v1/apps/{app}/uploads/{id}/deploy", s.admin(s.deployUpload))
	if s.Metrics != nil {
		m.Handle("GET /metrics", s.Metrics)
	}
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return m
}

// admin lets a request through only from root, agentd's own user, or a
// member of the admin group. Everyone who can connect may read, except
// config vars and logs (private).
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := peerOf(r)
		if !s.mayChange(p) {
			writeErr(w, http.StatusForbidden, &api.Error{Code: api.CodeForbidden,
				Message: fmt.Sprintf("permission denied: uid %d may read but not change anything; only root and members of group %q may", p.UID, s.AdminGroup)})
			return
		}
		h(w, r)
	}
}

func (s *Server) mayChange(p Peer) bool {
	if !p.Known {
		return false
	}
	if p.UID == 0 || p.UID == os.Geteuid() {
		return true
	}
	if s.AdminGroup == "" {
		return false
	}
	g, err := user.LookupGroup(s.AdminGroup)
	if err != nil {
		return false
	}
	if strconv.Itoa(p.GID) == g.Gid {
		return true
	}
	u, err := user.LookupId(strconv.Itoa(p.UID))
	if err != nil {
		return false
	}
	gids, err := u.GroupIds()
	return err == nil && slices.Contains(gids, g.Gid)
}

func peerName(p Peer) string {
	if !p.Known {
		return ""
	}
	if u, err := user.LookupId(strconv.Itoa(p.UID)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(p.UID)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, status int, e *api.Error) {
	writeJSON(w, status, e)
}

var codeStatus = map[string]int{
	api.CodeBadRequest:   http.StatusBadRequest,
	api.CodeNotFound:     http.StatusNotFound,
	api.CodeConflict:     http.StatusConflict,
	api.CodeForbidden:    http.StatusForbidden,
	api.CodeDeployFailed: http.StatusUnprocessableEntity,
	api.CodeUnavailable:  http.StatusServiceUnavailable,
}

func fail(w http.ResponseWriter, err error) {
	var ae *agent.Error
	if errors.As(err, &ae) {
		st, ok := codeStatus[ae.Code]
		if !ok {
			st = http.StatusInternalServerError
		}
		writeErr(w, st, &api.Error{Code: ae.Code, Message: ae.Msg, Reason: ae.Reason, App: ae.App})
		return
	}
	writeErr(w, http.StatusInternalServerError, &api.Error{Code: api.CodeInternal, Message: err.Error()})
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(bodyTimeout))
	defer rc.SetReadDeadline(time.Time{})
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: "bad request body: " + err.Error()})
		return false
	}
	return true
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Agent.Status())
}

func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) {
	if s.Upgrade == nil {
		writeErr(w, http.StatusNotImplemented, &api.Error{Code: api.CodeUnavailable, Message: "this agentd cannot upgrade itself"})
		return
	}
	if err := s.Upgrade(); err != nil {
		writeErr(w, http.StatusInternalServerError, &api.Error{Code: api.CodeInternal, Message: "upgrade failed, the running agentd carries on: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "a new agentd has taken over"})
}

func (s *Server) apps(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Agent.Apps())
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var req api.AppCreate
	if !decode(w, r, &req) {
		return
	}
	if p := peerOf(r); req.AllowRoot && os.Geteuid() == 0 && p.UID != 0 {
		// Members of the admin group deploy code; only root gives it root.
		writeErr(w, http.StatusForbidden, &api.Error{Code: api.CodeForbidden,
			Message: fmt.Sprintf("permission denied: only root may create an app that runs as root (--allow-root); uid %d may create it with --user", p.UID)})
		return
	}
	a, err := s.Agent.CreateApp(req)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, a)
}

func (s *Server) appInfo(w http.ResponseWriter, r *http.Request) {
	info, err := s.Agent.AppInfo(r.PathValue("app"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) destroyApp(w http.ResponseWriter, r *http.Request) {
	if err := s.Agent.DestroyApp(r.PathValue("app"), r.URL.Query().Get("confirm")); err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// stream runs an operation and streams its events. The operation runs to
// its end even if the client goes away: a deploy half done because a
// terminal closed would be worse than one finished unwatched.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, run func(emit func(api.Event)) api.OpResult) {
	rc := http.NewResponseController(w)
	// A deploy streams progress while it still reads the upload. Without
	// full duplex, net/http discards the unread body (up to 256 KiB) when
	// the headers go out, corrupting a chunked artifact.
	if err := rc.EnableFullDuplex(); err != nil {
		s.Log.Warn("full duplex unavailable", "err", err)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	events := make(chan api.Event, streamBuffer)
	done := make(chan struct{})
	// The result never goes through events: a client that stopped reading
	// may lose progress lines, but one that reads on must get the outcome.
	var (
		mu      sync.Mutex
		final   *api.Event
		dropped int
	)
	go func() {
		defer close(done)
		res := run(func(e api.Event) {
			if e.Type == "result" {
				mu.Lock()
				final = &e
				mu.Unlock()
				return
			}
			select {
			case events <- e:
			default:
				// A client that stopped reading loses progress lines, never
				// the operation.
				mu.Lock()
				dropped++
				mu.Unlock()
			}
		})
		mu.Lock()
		if final == nil {
			// Every operation emits its result; this keeps the promise of
			// a last "result" event should one ever return without.
			final = &api.Event{Time: time.Now().UTC(), Type: "result", Message: "failed", Result: &res}
			if res.OK {
				final.Message = "ok"
			}
		}
		mu.Unlock()
	}()
	enc := json.NewEncoder(w)
	// Write deadlines are per write; none may outlive this answer on a
	// kept-alive connection.
	defer rc.SetWriteDeadline(time.Time{})
	gone := false
	write := func(e api.Event) {
		if gone {
			return
		}
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := enc.Encode(e); err != nil {
			gone = true
			return
		}
		rc.Flush()
	}
	for {
		select {
		case e := <-events:
			write(e)
		case <-done:
			drain(events, write)
			// done closed after final was set; the lock orders the read.
			mu.Lock()
			e, n := *final, dropped
			mu.Unlock()
			if n > 0 {
				// Say so, so that a reader does not take the gap for
				// phases that did not happen.
				write(api.Event{Time: time.Now().UTC(), Type: "info",
					Message: fmt.Sprintf("%d progress lines were not sent: the client read too slowly", n)})
			}
			write(e)
			return
		}
	}
}

// streamBuffer is how many progress lines an operation may be ahead of a
// slow client before lines are dropped.
const streamBuffer = 4096

// drain writes what events holds now, without waiting for more.
func drain(events <-chan api.Event, write func(api.Event)) {
	for {
		select {
		case e := <-events:
			write(e)
		default:
			return
		}
	}
}

func boolParam(r *http.Request, k string) bool {
	v, _ := strconv.ParseBool(r.URL.Query().Get(k))
	return v
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := agent.DeployRequest{
		App: r.PathValue("app"), Artifact: newIdleBody(w, http.MaxBytesReader(w, r.Body, s.MaxUpload), s.UploadIdle),
		Message: q.Get("message"), SkipReleasePhase: boolParam(r, "skip_release_phase"),
		SkipPostdrain: boolParam(r, "skip_postdrain"),
		ReleaseID:     q.Get("release_id"), DeployedBy: peerName(peerOf(r)),
	}
	var ok bool
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

func (s *Server) releasePhase(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("app")
	if _, err := s.Agent.AppInfo(name); err != nil {
		fail(w, err)
		return
	}
	body := newIdleBody(w, http.MaxBytesReader(w, r.Body, s.MaxUpload), s.UploadIdle)
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.RunReleasePhase(name, body, emit) })
}

func (s *Server) releases(w http.ResponseWriter, r *http.Request) {
	rs, err := s.Agent.Releases(r.PathValue("app"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rs)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	rel, err := s.Agent.Release(r.PathValue("app"), r.PathValue("version"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rel)
}

// preflight answers 404 before a stream starts, so a client sees a plain
// error for an unknown app.
func (s *Server) preflight(w http.ResponseWriter, name string) bool {
	if _, err := s.Agent.AppInfo(name); err != nil {
		fail(w, err)
		return false
	}
	return true
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	var req api.RollbackRequest
	name := r.PathValue("app")
	if !decode(w, r, &req) || !s.preflight(w, name) {
		return
	}
	by := peerName(peerOf(r))
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.Rollback(name, req.Version, by, emit) })
}

func (s *Server) ps(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("app")
	if name == "" {
		name = r.URL.Query().Get("app")
	}
	ps, err := s.Agent.Ps(name)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ps)
}

func (s *Server) scale(w http.ResponseWriter, r *http.Request) {
	var req api.ScaleRequest
	name := r.PathValue("app")
	if !decode(w, r, &req) || !s.preflight(w, name) {
		return
	}
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.Scale(name, req.Formation, emit) })
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	var req api.RestartRequest
	name := r.PathValue("app")
	if !decode(w, r, &req) || !s.preflight(w, name) {
		return
	}
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.Restart(name, req.Type, emit) })
}

func (s *Server) config(w http.ResponseWriter, r *http.Request) {
	c, err := s.Agent.ConfigVars(r.PathValue("app"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) changeConfig(w http.ResponseWriter, r *http.Request) {
	var req api.ConfigRequest
	name := r.PathValue("app")
	if !decode(w, r, &req) || !s.preflight(w, name) {
		return
	}
	by := peerName(peerOf(r))
	s.stream(w, r, func(emit func(api.Event)) api.OpResult { return s.Agent.ChangeConfig(name, req, by, emit) })
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	dir, err := s.Agent.LogDir(r.PathValue("app"))
	if err != nil {
		fail(w, err)
		return
	}
	q := r.URL.Query()
	opt := logs.Options{N: 100, Follow: boolParam(r, "follow"), Process: q.Get("process"), Release: q.Get("release")}
	if n := q.Get("n"); n != "" {
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 {
			writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: "n must be a number of lines >= 0"})
			return
		}
		opt.N = v
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	defer rc.SetWriteDeadline(time.Time{})
	enc := json.NewEncoder(w)
	read := func(ctx context.Context, opt logs.Options, fn func(api.LogLine) error) error {
		return logs.Read(ctx, dir, opt, fn)
	}
	if s.Agent.JournalOn() && logs.JournalAvailable() {
		// The journal has the lines with their times; the files stay the
		// source where there is no journald.
		read = func(ctx context.Context, opt logs.Options, fn func(api.LogLine) error) error {
			return logs.ReadJournal(ctx, r.PathValue("app"), opt, fn)
		}
	}
	err = read(r.Context(), opt, func(l api.LogLine) error {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := enc.Encode(l); err != nil {
			return err
		}
		if opt.Follow {
			return rc.Flush()
		}
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		s.Log.Debug("logs", "err", err)
	}
}

// Listen binds the control socket at path with mode 0660 (and the admin
// group as its group when that group exists), replacing a stale socket
// file but refusing to take over one that another agentd answers on.
func Listen(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another agentd is listening on it", path)
		}
		os.Remove(path)
	}
	old := unix.Umask(0o117)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The path must survive this listener: after an upgrade the new agentd
	// serves on the same socket. agentd removes it when it really stops.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			gid, _ := strconv.Atoi(g.Gid)
			os.Chown(path, -1, gid)
		}
	}
	return ln, nil
}
