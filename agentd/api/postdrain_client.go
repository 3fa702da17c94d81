package api

import (
	"context"
	"net/http"
)

// Postdrain runs the active release's app.json scripts.agentd.postdrain
// on this host, once no process of an older release is left here, and
// reports how it went: for a fleet deployed with
// [DeployOptions.SkipPostdrain], on one host once every host has drained.
// A release whose postdrain succeeded already is not run again.
func (c *Client) Postdrain(ctx context.Context, app string, onEvent func(Event)) (*OpResult, error) {
	return c.stream(ctx, app, http.MethodPost, appPath(app)+"/postdrain", nil, nil, "", onEvent)
}
