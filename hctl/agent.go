package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v3"
)

func (h *hctl) agentCommand() *cli.Command {
	return &cli.Command{
		Name:      "agent",
		Usage:     "manage agentd itself",
		UsageText: "hctl agent upgrade",
		Description: "Examples:\n" +
			"  hctl agent upgrade",
		Commands: []*cli.Command{{
			Name:      "upgrade",
			Usage:     "hand over to the agentd binary on disk without stopping any app (like systemctl reload agentd)",
			UsageText: "hctl agent upgrade",
			Description: "agentd starts its binary anew, passes it the control socket and every app socket, and\n" +
				"exits once the new agentd has adopted the running app processes and is ready. App\n" +
				"processes keep their PIDs and keep serving. If the new agentd fails to start, the old\n" +
				"one carries on and this command exits 1.\n\n" +
				"Examples:\n" +
				"  hctl agent upgrade\n" +
				"  hctl --json agent upgrade",
			Action: func(ctx context.Context, cmd *cli.Command) error {
				if _, err := needArgs(cmd, 0, 0); err != nil {
					return err
				}
				res, err := h.client().AgentUpgrade(ctx)
				if err != nil {
					return err
				}
				if h.jsonMode() {
					h.writeJSON(res)
					return nil
				}
				fmt.Fprintln(h.stdout, res.Message)
				return nil
			},
		}},
	}
}
