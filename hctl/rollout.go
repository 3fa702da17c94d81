package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
	"github.com/agentd/agentd/sockets"
	"github.com/urfave/cli/v3"
)

// The rollout settings (bake, surge, strategy), `apps set`, and the
// commands that steer the operation in progress: wait, cancel, bake.

func rolloutFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{
			Name: "bake", Local: true, HideDefault: true,
			Usage: "watch a new release for `DURATION` after its cutover; an exit, failed health probes or " +
				"WATCHDOG=trigger in that window roll it back by itself (default 0: no bake)",
		},
		&cli.IntFlag{
			Name: "max-surge", Local: true, HideDefault: true,
			Usage: "start at most `N` new processes of a type beyond its formation before old ones retire " +
				"(default 0: the whole formation at once)",
		},
		&cli.StringSliceFlag{
			Name: "strategy", Local: true,
			Usage: "how a type is replaced, `TYPE=overlap|stop-first` (stop-first: the old processes exit " +
				"before the new ones start; repeatable)",
		},
		&cli.FloatFlag{
			Name: "shed-rate", Local: true, HideDefault: true,
			Usage: "at a draining generation's deadline, close its connections at `N` per second, oldest first, " +
				"before the SIGKILL (default 0: SIGKILL at the deadline)",
		},
		cronFlag(),
	}
}

func drainTimeoutFlag() cli.Flag {
	return &cli.StringSliceFlag{
		Name: "drain-timeout", Local: true,
		Usage: "how long old processes may take to exit after SIGTERM: `D` for every type, or TYPE=D for one " +
			"(web=1h for WebSockets; repeatable; agentd's default: 30s)",
	}
}

// parseDrainTimeouts reads --drain-timeout D and TYPE=D.
func parseDrainTimeouts(cmd *cli.Command) (*api.Duration, map[string]api.Duration, error) {
	var def *api.Duration
	var perType map[string]api.Duration
	for _, s := range cmd.StringSlice("drain-timeout") {
		typ, v, hasType := strings.Cut(s, "=")
		if !hasType {
			v = s
		} else if grammar.CheckProcessType(typ) != nil {
			return nil, nil, usagef(cmd, "bad --drain-timeout %q: want D or TYPE=D, such as web=1h", s)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, nil, usagef(cmd, "bad --drain-timeout %q: want a duration more than 0, such as 30s or web=1h", s)
		}
		if !hasType {
			x := api.Duration(d)
			def = &x
			continue
		}
		if perType == nil {
			perType = map[string]api.Duration{}
		}
		perType[typ] = api.Duration(d)
	}
	return def, perType, nil
}

// parseStrategies parses --strategy TYPE=S; an empty S (with allowEmpty)
// resets the type to the default.
func parseStrategies(cmd *cli.Command, specs []string, allowEmpty bool) (map[string]string, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, s := range specs {
		typ, st, ok := strings.Cut(s, "=")
		if !ok || grammar.CheckProcessType(typ) != nil {
			return nil, usagef(cmd, "bad --strategy %q: want TYPE=overlap or TYPE=stop-first", s)
		}
		switch st {
		case api.StrategyOverlap, api.StrategyStopFirst:
		case "":
			if !allowEmpty {
				return nil, usagef(cmd, "bad --strategy %q: want TYPE=overlap or TYPE=stop-first", s)
			}
		default:
			return nil, usagef(cmd, "bad --strategy %q: %q is neither overlap nor stop-first", s, st)
		}
		out[typ] = st
	}
	return out, nil
}

// rolloutSettings reads the rollout flags into create's request.
func rolloutSettings(cmd *cli.Command, req *api.AppCreate) error {
	if cmd.Duration("bake") < 0 {
		return usagef(cmd, "--bake must not be negative")
	}
	if cmd.Int("max-surge") < 0 {
		return usagef(cmd, "--max-surge must not be negative")
	}
	s, err := parseStrategies(cmd, cmd.StringSlice("strategy"), false)
	if err != nil {
		return err
	}
	req.Bake, req.MaxSurge, req.Strategy = api.Duration(cmd.Duration("bake")), int(cmd.Int("max-surge")), s
	if cmd.Float("shed-rate") < 0 {
		return usagef(cmd, "--shed-rate must not be negative")
	}
	req.ShedRate = cmd.Float("shed-rate")
	c, err := cronSetting(cmd)
	if c != nil {
		req.Cron = *c
	}
	return err
}

func (h *hctl) appsSetCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.DurationFlag{Name: "boot-timeout", Local: true, HideDefault: true, Usage: "how long new processes may take to become ready (`DURATION`)"},
		drainTimeoutFlag(),
		&cli.DurationFlag{Name: "release-timeout", Local: true, HideDefault: true, Usage: "how long the release: command may run (`DURATION`; 0: agentd's default)"},
		&cli.StringSliceFlag{Name: "readiness", Local: true, Usage: "how a type shows it is ready, `TYPE=KIND`; TYPE= resets it to the default (repeatable)"},
		&cli.StringFlag{Name: "user", Local: true, Usage: "run the app's processes as `USER` from the next rollout on"},
		&cli.BoolFlag{Name: "allow-root", Local: true, Usage: "let the app run as root (--allow-root=false takes the consent back)"},
		&cli.StringSliceFlag{Name: "limit", Local: true, Usage: "set a resource limit, `NAME=SOFT[:HARD]` (repeatable; replaces that limit)"},
		&cli.BoolFlag{Name: "clear-limits", Local: true, Usage: "drop every resource limit first"},
		&cli.StringSliceFlag{Name: "add-socket", Local: true, Usage: "bind a new socket, `SPEC` = [TYPE/]NAME=ADDR (repeatable)"},
		&cli.StringSliceFlag{Name: "remove-socket", Local: true, Usage: "stop holding the socket `NAME` (repeatable)"},
	}
	rf := rolloutFlags()
	rf[2].(*cli.StringSliceFlag).Usage = "how a type is replaced, `TYPE=overlap|stop-first`; TYPE= resets it (repeatable)"
	flags = append(flags, rf...)
	flags = append(flags, webhookFlags()...)
	return &cli.Command{
		Name:      "set",
		Usage:     "change an app's settings without touching what runs",
		UsageText: "hctl apps set APP [--boot-timeout D] [--drain-timeout D] [--readiness TYPE=KIND ...] [--bake D] [--max-surge N] [--strategy TYPE=S ...] [--user U] [--limit NAME=N ...] [--add-socket SPEC ...] [--remove-socket NAME ...] [--cron on|off] [--webhook URL] [--webhook-secret S]",
		Description: "Every setting of apps create can be changed here; only the flags given change. Nothing\n" +
			"running is touched: timeouts, readiness, bake, surge and strategy apply to the next\n" +
			"rollout (deploy, rollback, config change, restart, scale, crash restart). What processes\n" +
			"get at their start (sockets, the user, limits, a probe socket) reaches the running ones\n" +
			"only when they are replaced: hctl says so; hctl restart APP applies it at once, without\n" +
			"downtime. A removed socket stays open in the running processes until they are replaced.\n\n" +
			"Examples:\n" +
			"  hctl apps set myapp --boot-timeout 2m --drain-timeout 1m\n" +
			"  hctl apps set myapp --bake 60s --max-surge 2 --strategy worker=stop-first\n" +
			"  hctl apps set myapp --readiness web=http:/healthz\n" +
			"  hctl apps set myapp --webhook https://chat.example.com/hooks/deploys\n" +
			"  hctl apps set myapp --add-socket admin=unix:///run/myapp/admin.sock && hctl restart myapp",
		Flags: flags,
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			var req api.AppSet
			dur := func(name string, min time.Duration) (*api.Duration, error) {
				if !cmd.IsSet(name) {
					return nil, nil
				}
				d := cmd.Duration(name)
				if d < min {
					return nil, usagef(cmd, "--%s must be at least %s", name, min)
				}
				v := api.Duration(d)
				return &v, nil
			}
			if req.BootTimeout, err = dur("boot-timeout", time.Nanosecond); err != nil {
				return err
			}
			if req.DrainTimeout, req.DrainTimeouts, err = parseDrainTimeouts(cmd); err != nil {
				return err
			}
			if cmd.IsSet("shed-rate") {
				v := cmd.Float("shed-rate")
				if v < 0 {
					return usagef(cmd, "--shed-rate must not be negative")
				}
				req.ShedRate = &v
			}
			if req.Cron, err = cronSetting(cmd); err != nil {
				return err
			}
			if req.ReleaseTimeout, err = dur("release-timeout", 0); err != nil {
				return err
			}
			if req.Bake, err = dur("bake", 0); err != nil {
				return err
			}
			if cmd.IsSet("max-surge") {
				n := int(cmd.Int("max-surge"))
				if n < 0 {
					return usagef(cmd, "--max-surge must not be negative")
				}
				req.MaxSurge = &n
			}
			for _, s := range cmd.StringSlice("readiness") {
				typ, kind, ok := strings.Cut(s, "=")
				if !ok || grammar.CheckProcessType(typ) != nil {
					return usagef(cmd, "bad readiness %q: want TYPE=KIND, such as web=http:/healthz (TYPE= resets it)", s)
				}
				if kind != "" {
					if _, err := grammar.ParseReadiness(kind); err != nil {
						return usagef(cmd, "bad readiness %q: %s", s, grammar.Reason(err))
					}
				}
				if req.Readiness == nil {
					req.Readiness = map[string]string{}
				}
				req.Readiness[typ] = kind
			}
			if req.Strategy, err = parseStrategies(cmd, cmd.StringSlice("strategy"), true); err != nil {
				return err
			}
			if cmd.IsSet("user") {
				u := cmd.String("user")
				req.User = &u
			}
			if cmd.IsSet("allow-root") {
				b := cmd.Bool("allow-root")
				req.AllowRoot = &b
			}
			for _, l := range cmd.StringSlice("limit") {
				if _, err := sockets.ParseRlimit(l); err != nil {
					return usagef(cmd, "--limit: %v", err)
				}
			}
			req.Limits, req.ClearLimits = cmd.StringSlice("limit"), cmd.Bool("clear-limits")
			for _, s := range cmd.StringSlice("add-socket") {
				if err := checkSocketSpec(cmd, s); err != nil {
					return err
				}
			}
			req.AddSockets, req.RemoveSockets = cmd.StringSlice("add-socket"), cmd.StringSlice("remove-socket")
			if req.Webhook, req.WebhookSecret, err = webhookSettings(cmd); err != nil {
				return err
			}

			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			res, err := h.client().SetApp(ctx, app, req)
			if err != nil {
				return err
			}
			if h.jsonMode() {
				h.writeJSON(res)
				return nil
			}
			if len(res.Changed) == 0 {
				fmt.Fprintf(h.stdout, "%s: nothing changed\n", app)
				return nil
			}
			fmt.Fprintf(h.stdout, "%s: changed %s\n", app, strings.Join(res.Changed, ", "))
			writeSecret(h.stdout, res.App)
			if len(res.NextRollout) > 0 {
				fmt.Fprintf(h.stdout, "running processes get %s at the next rollout (hctl restart %s applies it now, without downtime)\n",
					strings.Join(res.NextRollout, ", "), app)
			}
			return nil
		},
	}
}

func (h *hctl) waitCommand() *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "follow the operation in progress on an app to its end",
		UsageText: "hctl wait APP",
		Description: "Streams the operation in progress (a deploy started with --detach, or one another hctl\n" +
			"started) from its start to its end, and exits as that operation's hctl would: 0 when it\n" +
			"succeeded, 1 when it failed or was rolled back. With no operation in progress it says so\n" +
			"and exits 1.\n\n" +
			"Examples:\n" +
			"  hctl deploy myapp ./build --detach && hctl wait myapp",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			return h.runOp(ctx, "operation", app, func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
				return h.client().Attach(ctx, app, on)
			}, liveSummary)
		},
	}
}

func (h *hctl) cancelCommand() *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "abort the operation in progress on an app before its cutover",
		UsageText: "hctl cancel APP",
		Description: "The new release's processes are stopped the way a failed deploy stops them and the old\n" +
			"release serves on; the new release is failed, \"cancelled by USER\". The operation's own\n" +
			"hctl (or hctl wait) reports it and exits 1. Past the cutover there is nothing to cancel:\n" +
			"a release in its bake window is ended with hctl bake APP abort.\n\n" +
			"Examples:\n" +
			"  hctl cancel myapp",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			if err := h.client().Cancel(ctx, app); err != nil {
				return err
			}
			if h.jsonMode() {
				h.writeJSON(map[string]any{"app": app, "cancelled": true})
				return nil
			}
			fmt.Fprintf(h.stdout, "cancelling the operation in progress on %s\n", app)
			return nil
		},
	}
}

func (h *hctl) bakeCommand() *cli.Command {
	return &cli.Command{
		Name:      "bake",
		Usage:     "end the bake window of an app's new release: pass or abort",
		UsageText: "hctl bake APP pass|abort",
		Description: "pass keeps the new release now; abort rolls it back at once, as a failed bake would: the\n" +
			"release that served before is deployed again, without downtime, and the deploy's hctl\n" +
			"exits 1.\n\n" +
			"Examples:\n" +
			"  hctl bake myapp pass\n" +
			"  hctl bake myapp abort",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 2, 2, "APP", "pass|abort")
			if err != nil {
				return err
			}
			if err := checkAppName(cmd, a[0]); err != nil {
				return err
			}
			var pass bool
			switch a[1] {
			case "pass":
				pass = true
			case "abort":
			default:
				return usagef(cmd, "want pass or abort, not %q", a[1])
			}
			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			if err := h.client().EndBake(ctx, a[0], pass); err != nil {
				return err
			}
			if h.jsonMode() {
				h.writeJSON(map[string]any{"app": a[0], "pass": pass})
				return nil
			}
			what := "passed: the new release stays"
			if !pass {
				what = "aborted: rolling back"
			}
			fmt.Fprintf(h.stdout, "%s: bake %s\n", a[0], what)
			return nil
		},
	}
}

func (h *hctl) appsRepairCommand() *cli.Command {
	return &cli.Command{
		Name:      "repair",
		Usage:     "bring an app whose state file is broken back under supervision",
		UsageText: "hctl apps repair APP",
		Description: "An app whose state file (and its previous generation) agentd could not use at its start\n" +
			"is broken: listed by hctl apps and hctl status, not supervised, its processes left alone.\n" +
			"repair rebuilds its state from what runs: its processes (by AGENTD_APP), the code they run,\n" +
			"the sockets they hold and the config in their environment. They are adopted, not\n" +
			"restarted. The broken file is kept in the quarantine (STATE/apps/.quarantine/). Settings\n" +
			"only the lost file knew (timeouts, readiness, bake, surge, strategy) are agentd's defaults\n" +
			"again: set them with hctl apps set. With nothing running it fails: destroy the app and\n" +
			"create it again.\n\n" +
			"Examples:\n" +
			"  hctl apps repair myapp && hctl apps set myapp --readiness web=http:/healthz",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			repaired, err := h.client().RepairApp(ctx, app)
			if err != nil {
				return err
			}
			if h.jsonMode() {
				h.writeJSON(repaired)
				return nil
			}
			fmt.Fprintf(h.stdout, "%s repaired: %s serves, formation %s; timeouts, readiness and rollout settings are the defaults again (hctl apps set)\n",
				repaired.Name, orNone(repaired.ActiveRelease), fmtFormation(repaired.Formation))
			return nil
		},
	}
}
