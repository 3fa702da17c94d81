package api

import (
	"context"
	"net/http"
	"time"
)

// MaintenanceRequest is the body of POST /v1/apps/{app}/maintenance.
type MaintenanceRequest struct {
	On bool `json:"on"`
	// Page is the page the responder answers with while on; "" for the
	// built-in one. At most 64 KiB of UTF-8 (grammar.CheckMaintenancePage).
	Page string `json:"page,omitempty"`
}

// Maintenance is an app's maintenance mode, while it is on.
type Maintenance struct {
	Since time.Time `json:"since"`
	// Page is "built-in" or "custom, N bytes".
	Page string `json:"page"`
	// RetryAfter is the Retry-After the responder answers with, in seconds.
	RetryAfter int `json:"retry_after"`
	// Pending names the newest release deployed meanwhile ("v4"), which
	// off rolls out; "" for none (off brings back the active release).
	Pending string `json:"pending,omitempty"`
}

// Maintenance puts app in maintenance (on) or takes it out: a stream of
// events like a deploy's.
func (c *Client) Maintenance(ctx context.Context, app string, req MaintenanceRequest, onEvent func(Event)) (*OpResult, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, app, http.MethodPost, appPath(app)+"/maintenance", nil, body, "application/json", onEvent)
}
