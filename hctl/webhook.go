package main

import (
	"fmt"
	"io"
	"net/url"

	"github.com/urfave/cli/v3"

	"github.com/agentd/agentd/agentd/api"
)

// An app's webhook (docs/webhooks.md): apps create and apps set take
// --webhook and --webhook-secret; apps info shows the last delivery.

func webhookFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{
			Name: "webhook", Local: true,
			Usage: "POST the app's deploy events (started, live, failed, rolled back, bake failed) to `URL`, " +
				"signed with its secret (apps set: \"\" removes it)",
		},
		&cli.StringFlag{
			Name: "webhook-secret", Local: true,
			Usage: "sign webhook events with `SECRET` (16 characters or more); without it agentd makes one and " +
				"shows it once (apps set: \"\" makes a new one)",
		},
	}
}

// webhookSettings reads --webhook and --webhook-secret: nil when not
// given.
func webhookSettings(cmd *cli.Command) (hook, secret *string, err error) {
	if cmd.IsSet("webhook") {
		v := cmd.String("webhook")
		if v != "" {
			u, perr := url.Parse(v)
			if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, nil, usagef(cmd, "--webhook %q: want an http:// or https:// URL", v)
			}
		}
		hook = &v
	}
	if cmd.IsSet("webhook-secret") {
		v := cmd.String("webhook-secret")
		if v != "" && len(v) < 16 {
			return nil, nil, usagef(cmd, "--webhook-secret: want at least 16 characters")
		}
		secret = &v
	}
	return hook, secret, nil
}

// writeSecret shows a secret agentd made, the only time it is shown.
func writeSecret(w io.Writer, a api.App) {
	if a.WebhookSecret != "" {
		fmt.Fprintf(w, "webhook secret (shown once, keep it): %s\n", a.WebhookSecret)
	}
}

// fmtDelivery says how the last webhook delivery went.
func fmtDelivery(d *api.WebhookDelivery) string {
	if d == nil {
		return "none yet"
	}
	s := fmt.Sprintf("%s %s at %s, %s after %d attempt(s)", d.Event, d.ID, fmtTime(d.Time), d.Status, d.Attempts)
	if d.HTTPStatus != 0 {
		s += fmt.Sprintf(" (HTTP %d)", d.HTTPStatus)
	}
	if d.Error != "" && d.Status != api.DeliveryDelivered {
		s += ": " + d.Error
	}
	if d.Pending > 0 {
		s += fmt.Sprintf("; %d pending", d.Pending)
	}
	return s
}
