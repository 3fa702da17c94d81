package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Client talks to agentd's control API on its unix socket. It is safe for
// concurrent use. Every method takes a context: its deadline or cancellation
// ends the request (for a streaming operation the outcome is then unknown,
// see [OutcomeUnknownError]).
type Client struct {
	// SocketPath is the control socket the client connects to.
	SocketPath string
	// UserAgent, when set, is sent as the User-Agent header.
	UserAgent string

	hc *http.Client
}

// NewClient returns a client for the control socket at socketPath.
func NewClient(socketPath string) *Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // never send the control API through an HTTP proxy
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:       4,
		IdleConnTimeout:    30 * time.Second,
		DisableCompression: true,
	}
	return &Client{
		SocketPath: socketPath,
		hc:         &http.Client{Transport: tr},
	}
}

// UnreachableError is returned when the client cannot connect to agentd's
// control socket at all: the socket is missing, nobody listens on it, or the
// caller may not open it. Nothing was sent to agentd.
type UnreachableError struct {
	Socket string
	Err    error // the dial error, such as "connect: no such file or directory"
}

func (e *UnreachableError) Error() string {
	hint := "is agentd running? set --socket or HCTL_SOCKET"
	if errors.Is(e.Err, syscall.EACCES) || errors.Is(e.Err, syscall.EPERM) {
		hint = "only root and members of the agentd group may use it; set --socket or HCTL_SOCKET for another agentd"
	}
	return fmt.Sprintf("cannot reach agentd at %s: %v (%s)", e.Socket, e.Err, hint)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// OutcomeUnknownError is returned by a streaming operation (deploy,
// rollback, scale, restart, config change, release phase) whose event stream
// ended before its result arrived: the connection was lost, or the context
// ended while waiting. The operation may have succeeded, failed, or still be
// running on agentd.
type OutcomeUnknownError struct {
	App string
	Err error // why the stream ended: io.EOF, a read error, or the context's error
}

func (e *OutcomeUnknownError) Error() string {
	check := "check `hctl releases " + e.App + "`"
	if e.App == "" {
		check = "check `hctl releases`"
	}
	switch {
	case errors.Is(e.Err, context.DeadlineExceeded):
		return "timed out waiting for agentd; the operation may still be running and its outcome is unknown (" + check + ")"
	case errors.Is(e.Err, context.Canceled):
		return "stopped waiting for agentd; the operation may still be running and its outcome is unknown (" + check + ")"
	case e.Err == nil || errors.Is(e.Err, io.EOF) || errors.Is(e.Err, io.ErrUnexpectedEOF):
		return "the connection to agentd was lost before the operation finished; the outcome is unknown (" + check + ")"
	default:
		return fmt.Sprintf("the connection to agentd was lost before the operation finished (%v); the outcome is unknown (%s)", e.Err, check)
	}
}

func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// DeployOptions are the options of [Client.Deploy].
type DeployOptions struct {
	// Message describes the release, like a commit message.
	Message string
	// SkipReleasePhase skips the release: command (run it once per fleet
	// with [Client.ReleasePhase] instead).
	SkipReleasePhase bool
	// SkipPostdrain leaves app.json's scripts.agentd.postdrain to
	// [Client.Postdrain] (run it once per fleet).
	SkipPostdrain bool
	// ReleaseID is an opaque identifier of the build (a commit, a CI run),
	// kept with the release.
	ReleaseID string
	// Detach returns once the operation has started (the artifact is in
	// and the app's operation lock taken) instead of at its end; the
	// result then has Detached set. Follow it with [Client.Attach].
	Detach bool
	// WaitDrain bounds how long the deploy waits for the old processes to
	// exit once the new release is live (agentd's default: 30s); past it
	// the result says what still drains, and the drain goes on.
	WaitDrain time.Duration
	// Canary, when above 0, deploys the release as a canary that gets
	// this percentage of new connections beside the active release
	// (above 0, below 100), until [Client.Promote] or [Client.AbortCanary].
	Canary float64
}

// query adds the options agentd reads from the deploy's query string.
func (o DeployOptions) query(q url.Values) {
	if o.WaitDrain > 0 {
		q.Set("wait_drain", o.WaitDrain.String())
	}
	if o.Canary != 0 {
		q.Set("canary", canaryQuery(o.Canary))
	}
}

// detachAt is the stop condition of a detached deploy: the first phase
// after prepare, or the first event after the lock was taken.
func (o DeployOptions) detachAt() func(Event) bool {
	if !o.Detach {
		return nil
	}
	return func(e Event) bool { return e.Type == "phase" && e.Phase != PhasePrepare }
}

// LogOptions are the options of [Client.Logs].
type LogOptions struct {
	// N is how many past lines to show; 0 leaves the choice to agentd.
	N int
	// Follow keeps the stream open and sends new lines as they come.
	Follow bool
	// Process limits the lines to one process ("web.1") or type ("web").
	Process string
	// Release limits the lines to one release ("v3").
	Release string
}

// Status answers GET /v1/status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := c.getJSON(ctx, "/v1/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Apps lists every app.
func (c *Client) Apps(ctx context.Context) ([]App, error) {
	var apps []App
	if err := c.getJSON(ctx, "/v1/apps", nil, &apps); err != nil {
		return nil, err
	}
	return apps, nil
}

// CreateApp creates an app and binds its sockets.
func (c *Client) CreateApp(ctx context.Context, req AppCreate) (*App, error) {
	var app App
	if err := c.sendJSON(ctx, http.MethodPost, "/v1/apps", req, &app); err != nil {
		return nil, err
	}
	return &app, nil
}

// AppInfo returns an app's settings, its active release and its processes.
func (c *Client) AppInfo(ctx context.Context, name string) (*AppInfo, error) {
	var info AppInfo
	if err := c.getJSON(ctx, appPath(name), nil, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// DestroyApp stops an app's processes, closes its sockets and forgets it.
// confirm must repeat the app's name.
func (c *Client) DestroyApp(ctx context.Context, name, confirm string) error {
	q := url.Values{"confirm": {confirm}}
	resp, err := c.do(ctx, http.MethodDelete, appPath(name), q, nil, "")
	if err != nil {
		return err
	}
	drainClose(resp.Body)
	return nil
}

// Deploy uploads artifact (a .tar.gz stream, see [OpenArtifact]) as a new
// release of app and waits for the deploy to end, calling onEvent (if not
// nil) for each progress event. A failed deploy returns its result and an
// [*Error]; a lost stream returns an [*OutcomeUnknownError].
func (c *Client) Deploy(ctx context.Context, app string, artifact io.Reader, opt DeployOptions, onEvent func(Event)) (*OpResult, error) {
	q := url.Values{}
	if opt.Message != "" {
		q.Set("message", opt.Message)
	}
	if opt.SkipReleasePhase {
		q.Set("skip_release_phase", "1")
	}
	if opt.SkipPostdrain {
		q.Set("skip_postdrain", "1")
	}
	if opt.ReleaseID != "" {
		q.Set("release_id", opt.ReleaseID)
	}
	opt.query(q)
	return c.streamUntil(ctx, app, http.MethodPost, appPath(app)+"/deploys", q, artifact, "application/gzip", onEvent, opt.detachAt())
}

// ReleasePhase runs only the release: command of artifact with app's
// config, once, and reports how it went. Nothing running is touched.
func (c *Client) ReleasePhase(ctx context.Context, app string, artifact io.Reader, onEvent func(Event)) (*OpResult, error) {
	return c.stream(ctx, app, http.MethodPost, appPath(app)+"/release-phase", nil, artifact, "application/gzip", onEvent)
}

// Releases lists app's releases.
func (c *Client) Releases(ctx context.Context, app string) ([]Release, error) {
	var rels []Release
	if err := c.getJSON(ctx, appPath(app)+"/releases", nil, &rels); err != nil {
		return nil, err
	}
	return rels, nil
}

// Release returns one release of app; version is "v3" or "3".
func (c *Client) Release(ctx context.Context, app, version string) (*Release, error) {
	var rel Release
	if err := c.getJSON(ctx, appPath(app)+"/releases/"+url.PathEscape(releaseName(version)), nil, &rel); err != nil {
		return nil, err
	}
	return &rel, nil
}

// Rollback makes a new release from an earlier one's artifact and config
// and deploys it. An empty version means the release before the active one.
func (c *Client) Rollback(ctx context.Context, app, version string, onEvent func(Event)) (*OpResult, error) {
	body, err := jsonBody(RollbackRequest{Version: version})
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, app, http.MethodPost, appPath(app)+"/rollback", nil, body, "application/json", onEvent)
}

// Ps lists the processes of app, or of every app when app is "".
func (c *Client) Ps(ctx context.Context, app string) ([]Process, error) {
	var q url.Values
	if app != "" {
		q = url.Values{"app": {app}}
	}
	var ps []Process
	if err := c.getJSON(ctx, "/v1/ps", q, &ps); err != nil {
		return nil, err
	}
	return ps, nil
}

// Scale sets the number of processes of the given types.
func (c *Client) Scale(ctx context.Context, app string, formation map[string]int, onEvent func(Event)) (*OpResult, error) {
	body, err := jsonBody(ScaleRequest{Formation: formation})
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, app, http.MethodPost, appPath(app)+"/scale", nil, body, "application/json", onEvent)
}

// Restart replaces the processes of one type (every type when typ is "")
// with fresh ones, the new beside the old as in a deploy.
func (c *Client) Restart(ctx context.Context, app, typ string, onEvent func(Event)) (*OpResult, error) {
	body, err := jsonBody(RestartRequest{Type: typ})
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, app, http.MethodPost, appPath(app)+"/restart", nil, body, "application/json", onEvent)
}

// Config returns app's config vars.
func (c *Client) Config(ctx context.Context, app string) (map[string]string, error) {
	cfg := map[string]string{}
	if err := c.getJSON(ctx, appPath(app)+"/config", nil, &cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ConfigChange sets and unsets config vars, which makes a new release.
func (c *Client) ConfigChange(ctx context.Context, app string, req ConfigRequest, onEvent func(Event)) (*OpResult, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, app, http.MethodPatch, appPath(app)+"/config", nil, body, "application/json", onEvent)
}

// Logs reads app's output and calls onLine for each line, until the stream
// ends, the context ends (its error is returned) or onLine returns an error
// (which is returned).
func (c *Client) Logs(ctx context.Context, app string, opt LogOptions, onLine func(LogLine) error) error {
	q := url.Values{}
	if opt.N > 0 {
		q.Set("n", strconv.Itoa(opt.N))
	}
	if opt.Follow {
		q.Set("follow", "1")
	}
	if opt.Process != "" {
		q.Set("process", opt.Process)
	}
	if opt.Release != "" {
		q.Set("release", releaseName(opt.Release))
	}
	resp, err := c.do(ctx, http.MethodGet, appPath(app)+"/logs", q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var l LogLine
		if err := dec.Decode(&l); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading logs from agentd: %w", err)
		}
		if err := onLine(l); err != nil {
			return err
		}
	}
}

// appPath is /v1/apps/{app} with app escaped.
func appPath(app string) string { return "/v1/apps/" + url.PathEscape(app) }

// releaseName turns "3" into "v3" and leaves anything else alone.
func releaseName(v string) string {
	if v != "" && v[0] >= '0' && v[0] <= '9' {
		return "v" + v
	}
	return v
}

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

// do sends one request and returns the response if its status is 2xx. A
// non-2xx response is returned as an [*Error]; a failure to connect as an
// [*UnreachableError].
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string) (*http.Response, error) {
	u := "http://agentd" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.mapError(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// mapError turns a failure to connect into an *UnreachableError and strips
// the *url.Error wrapper (which repeats the meaningless http://agentd URL)
// from everything else.
func (c *Client) mapError(err error) error {
	for _, ctxErr := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, ctxErr) {
			return fmt.Errorf("talking to agentd at %s: %w", c.SocketPath, ctxErr)
		}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		inner := opErr.Err
		if inner == nil {
			inner = opErr
		}
		return &UnreachableError{Socket: c.SocketPath, Err: inner}
	}
	var uErr *url.Error
	if errors.As(err, &uErr) {
		return fmt.Errorf("talking to agentd at %s: %w", c.SocketPath, uErr.Err)
	}
	return err
}

// decodeError reads an [Error] body from a non-2xx response. A body that is
// not one still gives an *Error, with a code that fits the status.
func decodeError(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e Error
	if err := json.Unmarshal(b, &e); err != nil || e.Message == "" {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		e.Message = "agentd answered " + resp.Status
		if msg != "" {
			e.Message += ": " + msg
		}
	}
	if e.Code == "" {
		e.Code = codeForStatus(resp.StatusCode)
	}
	return &e
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge, http.StatusMethodNotAllowed:
		return CodeBadRequest
	case http.StatusUnauthorized, http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusServiceUnavailable:
		return CodeUnavailable
	default:
		return CodeInternal
	}
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, out any) error {
	resp, err := c.do(ctx, http.MethodGet, path, q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeBody(resp, out)
}

func (c *Client) sendJSON(ctx context.Context, method, path string, in, out any) error {
	body, err := jsonBody(in)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, method, path, nil, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeBody(resp, out)
}

func decodeBody(resp *http.Response, out any) error {
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("bad answer from agentd to %s %s: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	// The encoder's closing newline is still unread: a body closed before
	// its end closes the connection, and the next request (a deploy right
	// after its upload's manifest) would have to connect again.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	return nil
}

// stream sends a request whose answer is a stream of newline-delimited
// events, passes each to onEvent, and returns the result of the last one.
func (c *Client) stream(ctx context.Context, app, method, path string, q url.Values, body io.Reader, contentType string, onEvent func(Event)) (*OpResult, error) {
	return c.streamUntil(ctx, app, method, path, q, body, contentType, onEvent, nil)
}

// streamUntil is stream that, with detach, returns a result with Detached
// set at the first event for which detach is true: the operation goes on
// in agentd without the client.
func (c *Client) streamUntil(ctx context.Context, app, method, path string, q url.Values, body io.Reader, contentType string, onEvent func(Event), detach func(Event) bool) (*OpResult, error) {
	resp, err := c.do(ctx, method, path, q, body, contentType)
	if err != nil {
		if ctx.Err() != nil && !isUnreachable(err) {
			// The request may have reached agentd before the context ended.
			return nil, &OutcomeUnknownError{App: app, Err: ctx.Err()}
		}
		return nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, &OutcomeUnknownError{App: app, Err: err}
		}
		if onEvent != nil {
			onEvent(ev)
		}
		if ev.Type != "result" {
			if detach != nil && detach(ev) {
				return &OpResult{App: app, OK: true, Detached: true}, nil
			}
			continue
		}
		res := ev.Result
		if res == nil {
			return nil, &OutcomeUnknownError{App: app, Err: errors.New("agentd sent a result event without a result")}
		}
		if !res.OK {
			e := &Error{Code: res.Code, Message: res.Error, Reason: res.Reason, App: res.App}
			if e.Code == "" {
				e.Code = CodeDeployFailed
			}
			if e.Message == "" {
				e.Message = "the operation failed"
			}
			return res, e
		}
		return res, nil
	}
}

func isUnreachable(err error) bool {
	var u *UnreachableError
	return errors.As(err, &u)
}

func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
	_ = rc.Close()
}

// UpgradeResult answers POST /v1/agent/upgrade.
type UpgradeResult struct {
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// AgentUpgrade asks agentd to hand over to a new agentd started from its
// binary on disk (tableflip), as SIGHUP does. It returns once the new agentd
// is ready, or with why the upgrade failed (the old agentd then carries on).
func (c *Client) AgentUpgrade(ctx context.Context) (*UpgradeResult, error) {
	var out UpgradeResult
	if err := c.sendJSON(ctx, http.MethodPost, "/v1/agent/upgrade", struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
