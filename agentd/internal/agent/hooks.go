package agent

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Deploy events to the outside: the core says what happened to an app's
// rollouts (started, live, failed, rolled back, bake failed) through the
// Hooks interface; package webhook delivers them. The core knows the URL
// and the secret only as settings of the app.

// Hooks takes an app's deploy events. Send must not wait for a delivery:
// it is called on the deploy's path.
type Hooks interface {
	Send(app string, url, secret string, ev api.WebhookEvent) error
	// Last is the state of the app's latest delivery (nil: none yet).
	Last(app string) *api.WebhookDelivery
	// Forget drops a destroyed app's pending events.
	Forget(app string)
}

// minSecret is the shortest secret accepted from a client.
const minSecret = 16

// setWebhook applies a webhook URL and secret to st (nil: unchanged). It
// returns the secret when agentd made one, to show once.
func setWebhook(st *appState, hook, secret *string) (made string, err error) {
	if hook != nil {
		if *hook != "" {
			u, err := url.Parse(*hook)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return "", errf(api.CodeBadRequest, "webhook %q: want an http:// or https:// URL with a host", *hook)
			}
		}
		st.Webhook = *hook
	}
	if secret != nil {
		if *secret != "" && len(*secret) < minSecret {
			return "", errf(api.CodeBadRequest, "webhook secret: want at least %d characters", minSecret)
		}
		st.WebhookSecret = *secret
	}
	if st.Webhook == "" {
		st.WebhookSecret = ""
		return "", nil
	}
	if st.WebhookSecret == "" {
		b := make([]byte, 32)
		rand.Read(b)
		st.WebhookSecret = hex.EncodeToString(b)
		made = st.WebhookSecret
	}
	return made, nil
}

// hooked reports whether the operation's events go out: those that make
// a new release.
func (o *op) hooked() bool {
	return o.ag.cfg.Webhooks != nil && slices.Contains([]string{"deploy", "config", "rollback"}, o.kind)
}

// hookStarted sends deploy.started for release r. Callers hold no lock.
func (o *op) hookStarted(r *releaseState, previous int) {
	if !o.hooked() || r == nil {
		return
	}
	o.mu.Lock()
	o.who, o.hookedStart = r.DeployedBy, true
	phases := slices.Clone(o.phases)
	o.mu.Unlock()
	o.hook(api.WebhookEvent{Event: api.WebhookStarted, Release: vname(r.Version), Previous: vnameOr(previous), Phases: phases})
}

// hookBakeFailed sends deploy.bake_failed. Callers hold no lock.
func (o *op) hookBakeFailed(release int, reason string) {
	if !o.hooked() {
		return
	}
	o.mu.Lock()
	phases := slices.Clone(o.phases)
	o.mu.Unlock()
	o.hook(api.WebhookEvent{Event: api.WebhookBakeFailed, Release: vname(release), Phases: phases, Error: reason})
}

// hookDone sends how the operation ended: an operation that started a
// rollout, or a deploy refused before it (a bad artifact). One that had
// nothing to do, or bad input, sends nothing. Callers hold no lock.
func (o *op) hookDone(res api.OpResult) {
	o.mu.Lock()
	started := o.hookedStart
	o.mu.Unlock()
	if !o.hooked() || !started && (res.OK || o.kind != "deploy") {
		return
	}
	ev := api.WebhookEvent{Event: api.WebhookLive, Release: res.Release, Previous: res.Previous, Phases: res.Phases, Error: res.Error}
	switch {
	case res.RolledBack:
		// Its own rollback, after a failed bake.
		ev.Event, ev.Who = api.WebhookRolledBack, "agentd"
	case res.OK && o.kind == "rollback":
		ev.Event = api.WebhookRolledBack
	case !res.OK:
		ev.Event = api.WebhookFailed
	}
	o.hook(ev)
}

func (o *op) hook(ev api.WebhookEvent) {
	a := o.a
	a.mu.Lock()
	name, hook, secret := a.st.Name, a.st.Webhook, a.st.WebhookSecret
	a.mu.Unlock()
	if hook == "" {
		return
	}
	if ev.Who == "" {
		o.mu.Lock()
		ev.Who = o.who
		o.mu.Unlock()
	}
	ev.Operation, ev.Time = o.kind, time.Now().UTC()
	ev.Host, _ = os.Hostname()
	if err := o.ag.cfg.Webhooks.Send(name, hook, secret, ev); err != nil {
		o.ag.log.Warn("webhook event not queued", "app", name, "event", ev.Event, "err", err)
	}
}

// webhookAPI fills what the API shows of an app's webhook. Callers hold
// a.mu.
func (ag *Agent) webhookAPI(a *app, out *api.App) {
	out.Webhook = a.st.Webhook
	if ag.cfg.Webhooks != nil && a.st.Webhook != "" {
		out.LastDelivery = ag.cfg.Webhooks.Last(a.st.Name)
	}
}
