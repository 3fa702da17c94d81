package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Webhook events: what agentd POSTs to an app's webhook URL
// (docs/webhooks.md).
const (
	// WebhookStarted: an operation that makes a new release (deploy,
	// config, rollback) starts rolling it out.
	WebhookStarted = "deploy.started"
	// WebhookLive: the new release serves.
	WebhookLive = "deploy.live"
	// WebhookFailed: the operation failed; the release that served
	// before serves on.
	WebhookFailed = "deploy.failed"
	// WebhookRolledBack: a rollback (asked for, or automatic after a
	// failed bake) serves.
	WebhookRolledBack = "deploy.rolled_back"
	// WebhookBakeFailed: a release failed its bake window; an automatic
	// rollback follows.
	WebhookBakeFailed = "deploy.bake_failed"
)

// WebhookEvent is the JSON body of one webhook delivery.
type WebhookEvent struct {
	// ID names the event; a retried delivery carries the same ID (and
	// header X-Agentd-Delivery), so a receiver can drop a repeat.
	ID    string    `json:"id"`
	Event string    `json:"event"` // one of the Webhook* constants
	App   string    `json:"app"`
	Time  time.Time `json:"time"`
	// Release is the release the event is about ("v3"); Previous the one
	// that served before, if any.
	Release  string `json:"release,omitempty"`
	Previous string `json:"previous,omitempty"`
	// Operation is what ran: deploy, config, rollback.
	Operation string `json:"operation"`
	// Who asked for it: the deployer (hctl's user or --deployed-by), or
	// "agentd" for its own rollbacks.
	Who string `json:"who,omitempty"`
	// Phases are the phases done so far and how long each took.
	Phases []Phase `json:"phases,omitempty"`
	// Error says why it failed (deploy.failed, deploy.bake_failed, and a
	// rollback after a failed bake).
	Error string `json:"error,omitempty"`
	Host  string `json:"host,omitempty"`
}

// WebhookDelivery is the state of an app's latest webhook delivery.
type WebhookDelivery struct {
	ID    string `json:"id"`
	Event string `json:"event"`
	// Status is delivered, retrying (the last attempt failed, another
	// follows) or failed (given up after the last attempt).
	Status   string    `json:"status"`
	Attempts int       `json:"attempts"`
	Time     time.Time `json:"time"` // of the last attempt
	// HTTPStatus is the receiver's answer to the last attempt (0: none).
	HTTPStatus int    `json:"http_status,omitempty"`
	Error      string `json:"error,omitempty"`
	// Pending is how many events wait to be delivered, this one included
	// when it is not delivered yet.
	Pending int `json:"pending"`
}

// Delivery statuses.
const (
	DeliveryDelivered = "delivered"
	DeliveryRetrying  = "retrying"
	DeliveryFailed    = "failed"
)

// Headers of a webhook delivery.
const (
	// WebhookSignatureHeader is "sha256=" and the hex HMAC-SHA256 of the
	// body under the app's secret.
	WebhookSignatureHeader = "X-Agentd-Signature"
	WebhookEventHeader     = "X-Agentd-Event"    // the event, as in the body
	WebhookDeliveryHeader  = "X-Agentd-Delivery" // the event's ID, the same on a retry
)

// SignWebhook returns the WebhookSignatureHeader value for body under
// secret.
func SignWebhook(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifyWebhook reports, in constant time, whether sig (a
// WebhookSignatureHeader value) signs body under secret.
func VerifyWebhook(secret string, body []byte, sig string) bool {
	return hmac.Equal([]byte(SignWebhook(secret, body)), []byte(sig))
}
