package main

import (
	"context"
	"fmt"
	"os"

	"github.com/urfave/cli/v3"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
)

func (h *hctl) maintenanceCommand() *cli.Command {
	return &cli.Command{
		Name:      "maintenance",
		Usage:     "put an app in maintenance (every request gets 503 and a page) or take it out, without refusing a connection",
		UsageText: "hctl maintenance APP on|off [--page FILE]",
		Description: "on: a maintenance responder (agentd's own process) takes over the app's sockets the way a\n" +
			"new release does, and once it answers, the app's processes drain: in-flight requests finish,\n" +
			"workers and other types stop too. Every request then gets 503 with Retry-After and the page\n" +
			"(a built-in one, or FILE: at most 64 KiB of UTF-8, kept with the app's state). It outlives an\n" +
			"agentd restart. `on` again with another page replaces the page.\n\n" +
			"Meanwhile a deploy (or rollback, config change) prepares its release and runs its release\n" +
			"phase, then ends pending; scale saves the formation for later; restart is refused.\n\n" +
			"off: the formation starts with the newest pending release, or the release that was active,\n" +
			"and once it is ready the responder drains, as in a deploy. If it fails to become ready the\n" +
			"responder keeps answering and the app stays in maintenance.\n\n" +
			"Examples:\n" +
			"  hctl maintenance myapp on --page ./maintenance.html\n" +
			"  hctl deploy myapp ./build        # release phase (migrations) runs, nothing starts\n" +
			"  hctl maintenance myapp off       # the new release starts, the responder drains",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "page", Usage: "answer with the HTML page in `FILE` instead of the built-in one (on only)", Local: true},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 2, 2, "APP", "on|off")
			if err != nil {
				return err
			}
			app, mode := a[0], a[1]
			if err := checkAppName(cmd, app); err != nil {
				return err
			}
			req := api.MaintenanceRequest{}
			switch mode {
			case "on":
				req.On = true
			case "off":
				if cmd.IsSet("page") {
					return usagef(cmd, "--page goes with on, not off")
				}
			default:
				return usagef(cmd, "want on or off, not %q", mode)
			}
			if f := cmd.String("page"); f != "" {
				b, err := os.ReadFile(f)
				if err != nil {
					return usagef(cmd, "--page: %v", unwrapPathError(err))
				}
				if len(b) == 0 {
					return usagef(cmd, "--page %s is empty", f)
				}
				if err := grammar.CheckMaintenancePage(string(b)); err != nil {
					return usagef(cmd, "--page %s: %s", f, grammar.Reason(err))
				}
				req.Page = string(b)
			}
			return h.runOp(ctx, "maintenance "+mode, app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					return h.client().Maintenance(ctx, app, req, on)
				},
				func(res *api.OpResult) string {
					switch {
					case req.On && !res.Changed:
						return fmt.Sprintf("%s is in maintenance already", res.App)
					case req.On:
						return fmt.Sprintf("%s is in maintenance: every request gets 503 (switch %s)", res.App, secs(res.SwitchSeconds))
					case !res.Changed:
						return fmt.Sprintf("%s is not in maintenance: nothing to do", res.App)
					}
					return fmt.Sprintf("%s is out of maintenance: %s", res.App, liveSummary(res))
				})
		},
	}
}

// fmtMaintenance says since when and what an app in maintenance answers.
func fmtMaintenance(m *api.Maintenance) string {
	s := fmt.Sprintf("since %s, 503 with the %s page, Retry-After %ds", fmtTime(m.Since), m.Page, m.RetryAfter)
	if m.Pending != "" {
		s += "; " + m.Pending + " pending (hctl maintenance APP off rolls it out)"
	}
	return s
}
