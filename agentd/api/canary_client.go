package api

// The canary's routes (types in canary.go):
//
//	POST   /v1/apps/{app}/deploys?canary=P     a deploy as a canary of P % (also on uploads/{id}/deploy)
//	GET    /v1/apps/{app}/canary               Canary (404, ReasonNoCanary, when none)
//	POST   /v1/apps/{app}/promote              CanaryRequest -> event stream
//	POST   /v1/apps/{app}/canary/abort         CanaryRequest -> event stream

import (
	"context"
	"net/http"
	"time"

	"github.com/agentd/agentd/grammar"
)

// canaryQuery is a canary share as the deploy's canary= query value.
func canaryQuery(p float64) string { return grammar.FormatCanaryPercent(p) }

// Canary describes app's canary: its release, the split of new
// connections, both releases' processes. An app without one answers an
// [*Error] with CodeNotFound and ReasonNoCanary.
func (c *Client) Canary(ctx context.Context, app string) (*Canary, error) {
	var out Canary
	if err := c.getJSON(ctx, appPath(app)+"/canary", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Promote finishes app's canary: its release takes the whole formation
// and the old release's processes drain, as at a deploy's cutover. Like
// [Client.Rollback] it streams the operation's events to onEvent and
// returns its result.
func (c *Client) Promote(ctx context.Context, app string, req CanaryRequest, onEvent func(Event)) (*OpResult, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, app, http.MethodPost, appPath(app)+"/promote", nil, body, "application/json", onEvent)
}

// AbortCanary stops app's canary without downtime: its share of new
// connections goes back to the active release, its processes drain, its
// release is marked failed.
func (c *Client) AbortCanary(ctx context.Context, app string, req CanaryRequest, onEvent func(Event)) (*OpResult, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, app, http.MethodPost, appPath(app)+"/canary/abort", nil, body, "application/json", onEvent)
}

// WaitDrainRequest is a CanaryRequest that waits at most d for the
// retired processes (0: agentd's default, 30s).
func WaitDrainRequest(d time.Duration) CanaryRequest {
	return CanaryRequest{WaitDrainSeconds: d.Seconds()}
}
