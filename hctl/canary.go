package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
)

// The canary: deploy --canary P%, hctl canary APP (and canary abort),
// hctl promote. Rendering is in canaryview.go.

// canaryAbout explains the canary in every command that deals with it.
const canaryAbout = "A canary is a new release that gets a share of new connections beside the active one, chosen\n" +
	"per connection by the kernel: hctl deploy APP PATH --canary 10% starts ceil(10% of the formation)\n" +
	"processes of each type with sockets. hctl promote APP finishes the rollout, hctl canary abort APP\n" +
	"stops it, both without downtime. It needs kernel steering: hctl apps info APP shows each socket's.\n"

func canaryFlag() cli.Flag {
	return &cli.StringFlag{Name: "canary", Local: true,
		Usage: "deploy as a canary that gets `P%` of new connections beside the active release (10%, 10, 0.5%); " +
			"then hctl promote APP or hctl canary abort APP"}
}

// canaryOption reads deploy's --canary: 0 without it.
func canaryOption(cmd *cli.Command) (float64, error) {
	if !cmd.IsSet("canary") {
		return 0, nil
	}
	return parseCanary(cmd, cmd.String("canary"))
}

// parseCanary checks a --canary value with the grammar agentd applies.
func parseCanary(cmd *cli.Command, v string) (float64, error) {
	p, err := grammar.ParseCanaryPercent(v)
	if err != nil {
		return 0, usagef(cmd, "bad --canary %q: %s", v, grammar.Reason(err))
	}
	return p, nil
}

// deploySummary is liveSummary, or for a canary what it started and how
// to go on.
func deploySummary(canary float64) func(res *api.OpResult) string {
	if canary == 0 {
		return liveSummary
	}
	return func(res *api.OpResult) string {
		if res.Detached || !res.Changed || res.Pending {
			return liveSummary(res)
		}
		rest := ""
		if res.Previous != "" {
			rest = ", " + res.Previous + " the rest"
		}
		return fmt.Sprintf("%s %s is a canary: it gets %s%% of new connections%s (switch %s); "+
			"hctl canary %s shows it, hctl promote %s finishes it, hctl canary abort %s stops it",
			res.App, orNone(res.Release), grammar.FormatCanaryPercent(canary), rest, secs(res.SwitchSeconds),
			res.App, res.App, res.App)
	}
}

// explainNoSteering adds to a ReasonNoSteering refusal why app's sockets
// are not steered, as agentd reports them (hctl apps info); reword adds
// how to get steering. Any other error is returned as it is.
func (h *hctl) explainNoSteering(ctx context.Context, app string, err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Reason != api.ReasonNoSteering {
		return err
	}
	info, ierr := h.client().AppInfo(ctx, app)
	if ierr != nil {
		return err // the refusal is what matters; its detail is lost
	}
	out := *ae
	if why := steeringWhys(info.Sockets); why != "" {
		out.Message += "; " + why
	}
	return &out
}

// steeringWhys is "socket web: shared (agentd runs with --steering off)"
// for each socket of the app that agentd does not steer.
func steeringWhys(socks []api.Socket) string {
	var parts []string
	for _, s := range socks {
		if s.Steering == api.SteeringKernel {
			continue
		}
		p := "socket " + s.Name + ": " + orDash(s.Steering)
		if s.SteeringWhy != "" {
			p += " (" + s.SteeringWhy + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// canaryWording is reword's advice for the canary's reasons.
func canaryWording(ae *api.Error) (string, bool) {
	switch ae.Reason {
	case api.ReasonCanaryRunning:
		return fmt.Sprintf("%s (hctl canary %s shows it; hctl promote %s or hctl canary abort %s ends it)",
			ae.Message, ae.App, ae.App, ae.App), true
	case api.ReasonNoCanary:
		return fmt.Sprintf("%s (hctl deploy %s PATH --canary 10%% starts one)", ae.Message, ae.App), true
	case api.ReasonNoSteering:
		return ae.Message + "; a canary needs kernel steering: agentd running as root (not --steering off) " +
			"on a kernel of 5.14 or later, TCP sockets (not unix), and ReusePort=yes in the .socket unit of a socket " +
			"systemd passes; hctl apps info " + ae.App + " shows each socket's steering (docs/concepts.md)", true
	}
	return "", false
}

func waitDrainFlag() cli.Flag {
	return &cli.DurationFlag{Name: "wait-drain", Local: true, HideDefault: true,
		Usage: "wait at most `D` for the retired processes to exit; they drain on after it (default 30s)"}
}

func canaryRequest(cmd *cli.Command) (api.CanaryRequest, error) {
	d := cmd.Duration("wait-drain")
	if d < 0 {
		return api.CanaryRequest{}, usagef(cmd, "--wait-drain must not be negative")
	}
	return api.WaitDrainRequest(d), nil
}

func (h *hctl) canaryCommand() *cli.Command {
	return &cli.Command{
		Name:      "canary",
		Usage:     "show an app's canary: the split of new connections, both releases' processes, crashes, bake",
		UsageText: "hctl canary APP | hctl canary abort APP [--wait-drain D]",
		Description: canaryAbout + "\n" +
			"hctl canary APP shows the share asked for and the connections steered to each release,\n" +
			"both releases' processes (state, pid, restarts, ready), the canary's crashes, its bake\n" +
			"window and how long it has run. With no canary it says so and exits 1.\n\n" +
			"Examples:\n" +
			"  hctl deploy myapp ./build --canary 10%\n" +
			"  hctl canary myapp\n" +
			"  hctl promote myapp            # or: hctl canary abort myapp\n" +
			"  hctl --json canary myapp | jq '.split'",
		Commands: []*cli.Command{h.canaryAbortCommand()},
		Action:   showApp(h, (*api.Client).Canary, writeCanary),
	}
}

func (h *hctl) canaryAbortCommand() *cli.Command {
	return &cli.Command{
		Name:      "abort",
		Usage:     "stop an app's canary without downtime: the active release takes every new connection again",
		UsageText: "hctl canary abort APP [--wait-drain D]",
		Description: "The canary's share of new connections goes back to the active release, what its sockets\n" +
			"queued is served by its processes, which then drain; its release is marked failed. Nothing\n" +
			"of the active release is touched.\n\n" +
			"Examples:\n" +
			"  hctl canary abort myapp\n" +
			"  hctl canary abort myapp --wait-drain 2m",
		Flags: []cli.Flag{waitDrainFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			req, err := canaryRequest(cmd)
			if err != nil {
				return err
			}
			return h.runOp(ctx, "canary abort", app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					return h.client().AbortCanary(ctx, app, req, on)
				},
				func(res *api.OpResult) string {
					return fmt.Sprintf("%s canary aborted: %s takes every new connection again (drain %s)",
						res.App, orNone(res.Release), secs(res.DrainSeconds)) + stillDraining(res)
				})
		},
	}
}

func (h *hctl) promoteCommand() *cli.Command {
	return &cli.Command{
		Name:      "promote",
		Usage:     "finish an app's canary: its release takes the whole formation and every new connection",
		UsageText: "hctl promote APP [--wait-drain D]",
		Description: canaryAbout + "\n" +
			"promote starts the rest of the canary release's formation (the canary's processes are\n" +
			"kept), steers every new connection to it, and the old release drains, as at a deploy's\n" +
			"cutover.\n\n" +
			"Examples:\n" +
			"  hctl promote myapp\n" +
			"  hctl --json promote myapp --wait-drain 2m | jq -r .release",
		Flags: []cli.Flag{waitDrainFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			req, err := canaryRequest(cmd)
			if err != nil {
				return err
			}
			return h.runOp(ctx, "promote", app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					return h.client().Promote(ctx, app, req, on)
				},
				func(res *api.OpResult) string {
					return fmt.Sprintf("%s promoted: %s is live%s", res.App, orNone(res.Release), opTimes(res)) + stillDraining(res)
				})
		},
	}
}

// stillDraining is liveSummary's note on a drain that goes on.
func stillDraining(res *api.OpResult) string {
	if res.StillDraining == 0 {
		return ""
	}
	return fmt.Sprintf("; the drain goes on in the background: %d old process(es) hold %d connection(s), until %s",
		res.StillDraining, res.DrainConnections, res.DrainDeadline.Local().Format("15:04:05"))
}
