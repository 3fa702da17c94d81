package main

import (
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// TestRewordProbe: agentd's message for a probe never accepted names no
// flag; hctl adds the one that changes readiness.
func TestRewordProbe(t *testing.T) {
	err := reword(&api.Error{Message: "web.1 never accepted on its probe socket, fd 4", Reason: api.ReasonProbeNotAccepted, App: "shop"})
	if !strings.HasSuffix(err.Error(), "; hctl apps set shop --readiness TYPE=notify changes a type's readiness") {
		t.Errorf("reworded: %q", err)
	}
	for _, r := range []string{api.ReasonSocketClosed, api.ReasonListenPIDRefused, api.ReasonOwnSocket, api.ReasonNotServed} {
		if err := reword(&api.Error{Message: "m", Reason: r, App: "shop"}); err.Error() != "m" {
			t.Errorf("%s: reworded to %q: its fix names no flag", r, err)
		}
	}
}

func TestFmtDelivery(t *testing.T) {
	at := time.Date(2026, 12, 4, 18, 50, 1, 0, time.UTC)
	for _, c := range []struct {
		d    *api.WebhookDelivery
		want string
	}{
		{nil, "none yet"},
		{&api.WebhookDelivery{ID: "ab", Event: "deploy.live", Status: "delivered", Attempts: 1, Time: at, HTTPStatus: 204}, "deploy.live ab at "},
		{&api.WebhookDelivery{ID: "cd", Event: "deploy.failed", Status: "retrying", Attempts: 3, Time: at, HTTPStatus: 503, Error: "the receiver answered 503", Pending: 2},
			"retrying after 3 attempt(s) (HTTP 503): the receiver answered 503; 2 pending"},
	} {
		if got := fmtDelivery(c.d); !strings.Contains(got, c.want) {
			t.Errorf("fmtDelivery(%+v) = %q, want it to hold %q", c.d, got, c.want)
		}
	}
}
