package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// ErrUploadUnsupported is returned by [Client.CreateUpload] when the agentd
// answering cannot take a manifest-first upload (an older agentd, or one
// whose deploys cannot start from one): send the .tar.gz instead.
var ErrUploadUnsupported = errors.New("this agentd does not take manifest-first uploads")

// BlobRef is one content to send: its hash, its size, and where the
// client reads it from.
type BlobRef struct {
	SHA256 string
	Size   int64
	Path   string
}

// CreateUpload sends a manifest and returns what agentd lacks of it.
func (c *Client) CreateUpload(ctx context.Context, m *UploadManifest) (*UploadCreated, error) {
	var out UploadCreated
	err := c.sendJSON(ctx, http.MethodPost, "/v1/uploads", m, &out)
	var e *Error
	// The route is not under an app, so a 404 means no such endpoint.
	if errors.As(err, &e) && (e.Code == CodeNotFound || e.Code == CodeUnavailable) {
		return nil, fmt.Errorf("%w: %w", ErrUploadUnsupported, err)
	}
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeployUpload deploys the release an upload describes, as [Client.Deploy]
// does a .tar.gz: same options, same event stream and result.
func (c *Client) DeployUpload(ctx context.Context, app, id string, opt DeployOptions, onEvent func(Event)) (*OpResult, error) {
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
	return c.streamUntil(ctx, app, http.MethodPost, appPath(app)+"/uploads/"+url.PathEscape(id)+"/deploy", q, nil, "", onEvent, opt.detachAt())
}

// AbortUpload forgets an upload (after a failure on the client's side).
func (c *Client) AbortUpload(ctx context.Context, id string) error {
	resp, err := c.do(ctx, http.MethodDelete, "/v1/uploads/"+url.PathEscape(id), nil, nil, "")
	if err != nil {
		return err
	}
	drainClose(resp.Body)
	return nil
}

// openNoFollow opens a file to send, never through a symlink swapped in
// since the scan.
