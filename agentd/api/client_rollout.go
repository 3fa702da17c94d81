package api

import (
	"context"
	"net/http"
)

// SetApp changes settings of an app without touching what runs.
func (c *Client) SetApp(ctx context.Context, name string, req AppSet) (*AppSetResult, error) {
	var res AppSetResult
	if err := c.sendJSON(ctx, http.MethodPatch, appPath(name), req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Attach follows the operation in progress on app from its start to its
// end, as the client that started it does. An app with no operation in
// progress answers an [*Error] with CodeNotFound.
func (c *Client) Attach(ctx context.Context, app string, onEvent func(Event)) (*OpResult, error) {
	return c.stream(ctx, app, http.MethodGet, appPath(app)+"/op", nil, nil, "", onEvent)
}

// Cancel aborts the operation in progress on app before its cutover; the
// operation's own stream reports the outcome.
func (c *Client) Cancel(ctx context.Context, app string) error {
	return c.sendJSON(ctx, http.MethodPost, appPath(app)+"/cancel", struct{}{}, &struct{}{})
}

// EndBake ends the bake window of app's new release: pass keeps it,
// !pass rolls it back.
func (c *Client) EndBake(ctx context.Context, app string, pass bool) error {
	return c.sendJSON(ctx, http.MethodPost, appPath(app)+"/bake", BakeRequest{Pass: pass}, &struct{}{})
}

// RepairApp brings an app whose state file is broken back under
// supervision from its running processes.
func (c *Client) RepairApp(ctx context.Context, name string) (*App, error) {
	var app App
	if err := c.sendJSON(ctx, http.MethodPost, appPath(name)+"/repair", struct{}{}, &app); err != nil {
		return nil, err
	}
	return &app, nil
}
