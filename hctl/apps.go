package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/sockets"
	"github.com/urfave/cli/v3"
)

func (h *hctl) statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show agentd's version, mode, state and sockets; or whether one app is healthy",
		UsageText: "hctl status [APP]",
		Description: "With APP: its active release (version, release id, digest), how many of its processes\n" +
			"are ready out of how many the formation wants, whether an operation is running, and\n" +
			"\"healthy\": all of that in order. Exit status 0 whenever agentd answered, healthy or not.\n\n" +
			"Examples:\n" +
			"  hctl status\n" +
			"  hctl --json status | jq .version\n" +
			"  hctl status myapp\n" +
			"  hctl --json status myapp | jq -e .healthy",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 0, 1)
			if err != nil {
				return err
			}
			if len(a) == 1 {
				if err := checkAppName(cmd, a[0]); err != nil {
					return err
				}
				return h.appStatusAction(ctx, a[0])
			}
			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			st, err := h.client().Status(ctx)
			if err != nil {
				return err
			}
			if h.jsonMode() {
				h.writeJSON(st)
				return nil
			}
			writeStatus(h.stdout, st)
			return nil
		},
	}
}

func (h *hctl) appsCommand() *cli.Command {
	return &cli.Command{
		Name:      "apps",
		Usage:     "list apps; create, change, inspect, repair and destroy them",
		UsageText: "hctl apps [create|info|destroy] ...",
		Description: "With no subcommand, lists the apps.\n\n" +
			"Examples:\n" +
			"  hctl apps\n" +
			"  hctl apps create myapp --socket web=tcp://0.0.0.0:8080\n" +
			"  hctl apps info myapp\n" +
			"  hctl apps destroy myapp --confirm myapp",
		Commands: []*cli.Command{
			h.appsCreateCommand(),
			h.appsSetCommand(),
			h.appsInfoCommand(),
			h.appsRepairCommand(),
			h.appsDestroyCommand(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() > 0 {
				return usagef(cmd, "unknown apps command %q: want create, info or destroy", cmd.Args().First())
			}
			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			apps, err := h.client().Apps(ctx)
			if err != nil {
				return err
			}
			if h.jsonMode() {
				if apps == nil {
					apps = []api.App{}
				}
				h.writeJSON(apps)
				return nil
			}
			writeApps(h.stdout, apps)
			return nil
		},
	}
}

func (h *hctl) appsCreateCommand() *cli.Command {
	return &cli.Command{
		Name:  "create",
		Usage: "create an app and bind its listening sockets",
		UsageText: "hctl apps create APP --socket [TYPE/]NAME=ADDR ... [--readiness TYPE=KIND ...] " +
			"[--boot-timeout D] [--drain-timeout D] [--user U | --allow-root] [--limit NAME=N ...] [--release-timeout D] [--bake D] [--max-surge N] [--strategy TYPE=S ...] [--cron on|off] [--webhook URL [--webhook-secret S]]",
		Description: "ADDR is tcp://HOST:PORT, tcp6://[HOST]:PORT or unix:///path. TYPE is the process type\n" +
			"that receives the socket (web by default). KIND is notify, http:PATH, tcp, exec:CMD or\n" +
			"uptime:DURATION (the default, uptime:5s).\n\n" +
			"When agentd runs as root, an app must be given a --user to run as, or --allow-root to run\n" +
			"as root on purpose. Every process runs with no new privileges (setuid bits and file\n" +
			"capabilities grant nothing) and with the --limit resource limits: NAME is one of as, core,\n" +
			"cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime,\n" +
			"sigpending, stack; N is SOFT[:HARD], a number (K, M, G, T for sizes) or infinity.\n\n" +
			"Here --socket is the app's socket. To reach another agentd, set HCTL_SOCKET, or put the\n" +
			"global --socket before the command: hctl --socket /x apps create ...\n\n" +
			"Examples:\n" +
			"  hctl apps create myapp --socket web=tcp://0.0.0.0:8080\n" +
			"  hctl apps create api --socket http=tcp://127.0.0.1:9000 --socket admin=unix:///run/api/admin.sock \\\n" +
			"      --readiness web=http:/healthz --boot-timeout 2m --drain-timeout 45s --user api\n" +
			"  hctl apps create shop --socket web=tcp://0.0.0.0:8000 --user shop --limit nofile=8192 \\\n" +
			"      --limit nproc=256 --limit as=4G --release-timeout 10m\n" +
			"  HCTL_SOCKET=/tmp/agentd.sock hctl apps create worker-only",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{
				Name:  "socket",
				Usage: "a listening socket of the app, `SPEC` = [TYPE/]NAME=ADDR (repeatable)",
				Local: true,
			},
			&cli.StringSliceFlag{
				Name:  "readiness",
				Usage: "how a process type shows it is ready, `TYPE=KIND` (repeatable)",
				Local: true,
			},
			&cli.DurationFlag{
				Name:        "boot-timeout",
				Usage:       "how long new processes may take to become ready, a `DURATION` (agentd's default: 60s)",
				Local:       true,
				HideDefault: true,
			},
			drainTimeoutFlag(),
			&cli.StringFlag{
				Name:  "user",
				Usage: "run the app's processes as `USER` (with that user's own groups)",
				Local: true,
			},
			&cli.BoolFlag{
				Name:  "allow-root",
				Usage: "let the app run as root (when agentd runs as root, needed without --user)",
				Local: true,
			},
			&cli.StringSliceFlag{
				Name:  "limit",
				Usage: "a resource limit of every process, `NAME=SOFT[:HARD]`, e.g. nofile=4096 (repeatable)",
				Local: true,
			},
			&cli.DurationFlag{
				Name:        "release-timeout",
				Usage:       "how long the release: command may run, a `DURATION` (agentd's default: 15m)",
				Local:       true,
				HideDefault: true,
			},
		}, append(rolloutFlags(), webhookFlags()...)...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 1, 1, "APP")
			if err != nil {
				return err
			}
			req := api.AppCreate{Name: a[0], Sockets: cmd.StringSlice("socket"), User: cmd.String("user"),
				AllowRoot: cmd.Bool("allow-root"), Limits: cmd.StringSlice("limit")}
			if err := checkAppName(cmd, req.Name); err != nil {
				return err
			}
			for _, s := range req.Sockets {
				if err := checkSocketSpec(cmd, s); err != nil {
					return err
				}
			}
			if req.Readiness, err = parseReadiness(cmd, cmd.StringSlice("readiness")); err != nil {
				return err
			}
			for _, l := range req.Limits {
				if _, err := sockets.ParseRlimit(l); err != nil {
					return usagef(cmd, "--limit: %v", err)
				}
			}
			for _, name := range []string{"boot-timeout", "release-timeout"} {
				if cmd.IsSet(name) && cmd.Duration(name) <= 0 {
					return usagef(cmd, "--%s must be more than 0", name)
				}
			}
			req.BootTimeout = api.Duration(cmd.Duration("boot-timeout"))
			def, perType, err := parseDrainTimeouts(cmd)
			if err != nil {
				return err
			}
			if def != nil {
				req.DrainTimeout = *def
			}
			req.DrainTimeouts = perType
			req.ReleaseTimeout = api.Duration(cmd.Duration("release-timeout"))
			if err := rolloutSettings(cmd, &req); err != nil {
				return err
			}
			if req.Sockets == nil {
				req.Sockets = []string{}
			}
			hook, secret, err := webhookSettings(cmd)
			if err != nil {
				return err
			}
			if hook != nil {
				req.Webhook = *hook
			}
			if secret != nil {
				req.WebhookSecret = *secret
			}

			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			app, err := h.client().CreateApp(ctx, req)
			if err != nil {
				return err
			}
			if h.jsonMode() {
				h.writeJSON(app)
				return nil
			}
			fmt.Fprintf(h.stdout, "created %s\n", app.Name)
			if len(app.Sockets) > 0 {
				writeSockets(h.stdout, app.Sockets, false)
			}
			writeSecret(h.stdout, *app)
			fmt.Fprintf(h.stderr, "next: hctl deploy %s PATH\n", app.Name)
			return nil
		},
	}
}

func (h *hctl) appsInfoCommand() *cli.Command {
	return &cli.Command{
		Name:      "info",
		Usage:     "show an app's settings, active release and processes",
		UsageText: "hctl apps info APP",
		Description: "Examples:\n" +
			"  hctl apps info myapp\n" +
			"  hctl --json apps info myapp | jq .active_release",
		Action: showApp(h, (*api.Client).AppInfo, writeAppInfo),
	}
}

func (h *hctl) appsDestroyCommand() *cli.Command {
	return &cli.Command{
		Name:      "destroy",
		Usage:     "stop an app's processes, close its sockets and forget it",
		UsageText: "hctl apps destroy APP --confirm APP",
		Description: "There is no prompt: --confirm must repeat the app's name.\n\n" +
			"Examples:\n" +
			"  hctl apps destroy myapp --confirm myapp",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "confirm", Usage: "the app's name again, to confirm", Local: true},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			if confirm := cmd.String("confirm"); confirm != app {
				what := "missing --confirm"
				if confirm != "" {
					what = fmt.Sprintf("--confirm %s does not match %s", confirm, app)
				}
				return &usageError{msg: fmt.Sprintf("%s: destroying %s stops its processes and closes its sockets for good; "+
					"repeat its name to go ahead: hctl apps destroy %s --confirm %s", what, app, app, app)}
			}
			ctx, cancel := h.withTimeout(ctx, 0)
			defer cancel()
			if err := h.client().DestroyApp(ctx, app, cmd.String("confirm")); err != nil {
				return err
			}
			if h.jsonMode() {
				h.writeJSON(map[string]any{"app": app, "destroyed": true})
				return nil
			}
			fmt.Fprintf(h.stdout, "destroyed %s\n", strings.TrimSpace(app))
			return nil
		},
	}
}
