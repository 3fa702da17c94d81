package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/agentd/agentd/agentd/api"
)

// writeScriptRun shows what became of an app.json script of a release
// (scripts.agentd.postdrain) in `hctl releases info`.
func writeScriptRun(w io.Writer, s *api.ScriptRun) {
	if s == nil {
		return
	}
	line := s.Status
	switch {
	case !s.Ended.IsZero() && !s.Started.IsZero():
		line += fmt.Sprintf(" (started %s, took %s)", fmtTime(s.Started), s.Ended.Sub(s.Started).Round(10e6))
	case !s.Started.IsZero():
		line += fmt.Sprintf(" (since %s)", fmtTime(s.Started))
	}
	fmt.Fprintf(w, "%s: %s\n", s.Script, line)
	if s.Error != "" {
		for l := range strings.SplitSeq(strings.TrimRight(s.Error, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

func (h *hctl) postdrainCommand() *cli.Command {
	return &cli.Command{
		Name:      "postdrain",
		Usage:     "run app.json's scripts.agentd.postdrain of the active release (once per fleet)",
		UsageText: "hctl postdrain APP",
		Description: "Runs the active release's scripts.agentd.postdrain once no process of an older release\n" +
			"is left on this host, and waits for it; exits 1 when it fails. A deploy runs it by itself;\n" +
			"a fleet deploys every host with --skip-postdrain and runs this on one host once every\n" +
			"host has drained. One that succeeded is not run again.\n\n" +
			"Examples:\n" +
			"  hctl deploy myapp ./build --skip-postdrain   # on every host\n" +
			"  hctl postdrain myapp                         # then on one host",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			return h.runOp(ctx, "postdrain", app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					return h.client().Postdrain(ctx, app, on)
				},
				func(res *api.OpResult) string {
					if !res.Changed {
						return fmt.Sprintf("%s %s: scripts.agentd.postdrain succeeded already, or there is none", res.App, res.Release)
					}
					return fmt.Sprintf("%s %s: scripts.agentd.postdrain succeeded", res.App, res.Release)
				})
		},
	}
}
