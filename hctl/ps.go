package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/agentd/agentd/agentd/api"
	"github.com/urfave/cli/v3"
)

func (h *hctl) psCommand() *cli.Command {
	return &cli.Command{
		Name:      "ps",
		Usage:     "list the processes of one app, or of every app",
		UsageText: "hctl ps [APP]",
		Description: "A draining process also shows the connections it still holds open (CONNS) and the time\n" +
			"left before its SIGKILL (KILL IN).\n\n" +
			"Examples:\n" +
			"  hctl ps\n" +
			"  hctl ps myapp\n" +
			"  hctl --json ps myapp | jq '[.[] | select(.state == \"ready\")] | length'",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 0, 1)
			if err != nil {
				return err
			}
			app := ""
			if len(a) == 1 {
				app = a[0]
				if err := checkAppName(cmd, app); err != nil {
					return err
				}
			}
			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			ps, err := h.client().Ps(ctx, app)
			if err != nil {
				return err
			}
			if h.jsonMode() {
				if ps == nil {
					ps = []api.Process{}
				}
				h.writeJSON(ps)
				return nil
			}
			writeProcesses(h.stdout, ps)
			return nil
		},
	}
}

func (h *hctl) scaleCommand() *cli.Command {
	return &cli.Command{
		Name:      "scale",
		Usage:     "set how many processes of each type run",
		UsageText: "hctl scale APP TYPE=N ...",
		Description: "N is 0 or more; 0 stops a type. Types not named keep their count.\n\n" +
			"Examples:\n" +
			"  hctl scale myapp web=3\n" +
			"  hctl scale myapp web=2 worker=0",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 2, -1, "APP", "TYPE=N")
			if err != nil {
				return err
			}
			app := a[0]
			if err := checkAppName(cmd, app); err != nil {
				return err
			}
			formation, err := parseFormation(cmd, a[1:])
			if err != nil {
				return err
			}
			return h.runOp(ctx, "scale", app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					return h.client().Scale(ctx, app, formation, on)
				},
				func(res *api.OpResult) string {
					if !res.Changed {
						return fmt.Sprintf("%s already at %s, nothing to do", res.App, fmtFormation(formation))
					}
					return fmt.Sprintf("%s scaled to %s (%s)", res.App, fmtFormation(formation), orNone(res.Release))
				})
		},
	}
}

func (h *hctl) restartCommand() *cli.Command {
	return &cli.Command{
		Name:      "restart",
		Usage:     "replace an app's processes (of one type) with fresh ones, without downtime",
		UsageText: "hctl restart APP [TYPE]",
		Description: "The new processes start beside the old ones and take over once ready, as in a deploy.\n\n" +
			"Examples:\n" +
			"  hctl restart myapp\n" +
			"  hctl restart myapp worker",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 1, 2, "APP")
			if err != nil {
				return err
			}
			app, typ := a[0], ""
			if err := checkAppName(cmd, app); err != nil {
				return err
			}
			if len(a) == 2 {
				typ = a[1]
				if !procTypeRE.MatchString(typ) {
					return usagef(cmd, "bad process type %q", typ)
				}
			}
			return h.runOp(ctx, "restart", app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					return h.client().Restart(ctx, app, typ, on)
				},
				func(res *api.OpResult) string {
					what := res.App
					if typ != "" {
						what += " " + typ
					}
					if !res.Changed {
						return fmt.Sprintf("%s: nothing to restart", what)
					}
					return fmt.Sprintf("%s restarted, %s is live%s", what, orNone(res.Release), opTimes(res))
				})
		},
	}
}

func (h *hctl) configCommand() *cli.Command {
	return &cli.Command{
		Name:      "config",
		Usage:     "show an app's config vars; set or unset them (a new release)",
		UsageText: "hctl config APP | hctl config set APP K=V ... | hctl config unset APP K ...",
		Description: "Changing config makes a new release with the same code and rolls it out like a deploy.\n\n" +
			"Examples:\n" +
			"  hctl config myapp\n" +
			"  hctl config set myapp DATABASE_URL=postgres://db/myapp LOG_LEVEL=debug\n" +
			"  hctl config unset myapp LOG_LEVEL",
		Commands: []*cli.Command{
			{
				Name:      "set",
				Usage:     "set config vars and roll out a new release",
				UsageText: "hctl config set APP K=V ...",
				Description: "VALUE may be empty and may hold '='.\n\n" +
					"Examples:\n" +
					"  hctl config set myapp LOG_LEVEL=debug\n" +
					"  hctl config set myapp 'GREETING=hello world' EMPTY=",
				Action: func(ctx context.Context, cmd *cli.Command) error {
					a, err := needArgs(cmd, 2, -1, "APP", "K=V")
					if err != nil {
						return err
					}
					if err := checkAppName(cmd, a[0]); err != nil {
						return err
					}
					set, err := parseConfigSet(cmd, a[1:])
					if err != nil {
						return err
					}
					return h.configChange(ctx, a[0], api.ConfigRequest{Set: set})
				},
			},
			{
				Name:      "unset",
				Usage:     "remove config vars and roll out a new release",
				UsageText: "hctl config unset APP K ...",
				Description: "Examples:\n" +
					"  hctl config unset myapp LOG_LEVEL DEBUG",
				Action: func(ctx context.Context, cmd *cli.Command) error {
					a, err := needArgs(cmd, 2, -1, "APP", "K")
					if err != nil {
						return err
					}
					if err := checkAppName(cmd, a[0]); err != nil {
						return err
					}
					if err := checkConfigKeys(cmd, a[1:]); err != nil {
						return err
					}
					return h.configChange(ctx, a[0], api.ConfigRequest{Unset: a[1:]})
				},
			},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			cfg, err := h.client().Config(ctx, app)
			if err != nil {
				return err
			}
			if h.jsonMode() {
				if cfg == nil {
					cfg = map[string]string{}
				}
				h.writeJSON(cfg)
				return nil
			}
			writeConfig(h.stdout, cfg)
			return nil
		},
	}
}

func (h *hctl) configChange(ctx context.Context, app string, req api.ConfigRequest) error {
	keys := append(slices.Sorted(maps.Keys(req.Set)), req.Unset...)
	return h.runOp(ctx, "config change", app,
		func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
			return h.client().ConfigChange(ctx, app, req, on)
		},
		func(res *api.OpResult) string {
			what := "set"
			if len(req.Unset) > 0 {
				what = "unset"
			}
			switch {
			case !res.Changed:
				return fmt.Sprintf("%s config unchanged, nothing to do", res.App)
			case res.Release == "":
				return fmt.Sprintf("%s: %s %s (no release yet; the next deploy uses it)", res.App, what, strings.Join(keys, ", "))
			}
			return fmt.Sprintf("%s: %s %s, %s is live%s", res.App, what, strings.Join(keys, ", "), res.Release, opTimes(res))
		})
}
