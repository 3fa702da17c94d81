package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
)

// RunStream is a client's end of a one-off process's run stream.
type RunStream struct {
	Info RunInfo
	R    *FrameReader
	W    *FrameWriter
	conn io.ReadWriteCloser
}

// Close ends the stream. Without a FrameAck sent first, agentd takes it for
// the client going away and hangs the process up.
func (s *RunStream) Close() error { return s.conn.Close() }

// StartRun starts a one-off process of app and returns its stream: send
// FrameStdin, FrameEOF, FrameResize, FrameSignal; read output until
// FrameExit, then send FrameAck.
func (c *Client) StartRun(ctx context.Context, app string, req RunRequest) (*RunStream, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	s, err := c.upgrade(ctx, appPath(app)+"/runs", body)
	if err != nil {
		return nil, err
	}
	s.Info.App = app
	return s, nil
}

// AttachRun attaches to app's running one-off process (run.N) again, after
// the connection of its stream was lost (agentd restarted or upgraded).
func (c *Client) AttachRun(ctx context.Context, app, process string) (*RunStream, error) {
	s, err := c.upgrade(ctx, appPath(app)+"/runs/"+url.PathEscape(process)+"/attach", nil)
	if err != nil {
		return nil, err
	}
	s.Info.App, s.Info.Process = app, process
	return s, nil
}

func (c *Client) upgrade(ctx context.Context, path string, body io.Reader) (*RunStream, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agentd"+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", RunUpgrade)
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.mapError(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return nil, errors.New("agentd did not switch to the run stream (is it older than hctl run?)")
		}
		return nil, decodeError(resp)
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, errors.New("run stream: the connection cannot be written to")
	}
	return &RunStream{
		Info: RunInfo{Process: resp.Header.Get("X-Agentd-Run"), Release: resp.Header.Get("X-Agentd-Release")},
		R:    NewFrameReader(rw), W: NewFrameWriter(rw), conn: rw,
	}, nil
}
