package main

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/agentd/agentd/agentd/api"
	"github.com/urfave/cli/v3"
)

func (h *hctl) logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "show an app's output (stdout and stderr of its processes)",
		UsageText: "hctl logs APP [-f] [-n N] [--process web.1] [--release vN]",
		Description: "With --json, prints one JSON array of lines; with --json -f, one JSON object per line\n" +
			"as they come (newline-delimited), since the stream has no end. Ctrl-C ends -f with status 0.\n\n" +
			"Examples:\n" +
			"  hctl logs myapp\n" +
			"  hctl logs myapp -f --process web.1\n" +
			"  hctl logs myapp -n 500 --release v3",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new lines", Local: true},
			&cli.IntFlag{Name: "num", Aliases: []string{"n"}, Usage: "show the last `N` lines", Value: 100, Local: true},
			&cli.StringFlag{Name: "process", Usage: "only lines of one process (web.1) or type (web)", Local: true},
			&cli.StringFlag{Name: "release", Usage: "only lines of one release (`vN`)", Local: true},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			opt := api.LogOptions{N: cmd.Int("num"), Follow: cmd.Bool("follow"), Process: cmd.String("process")}
			if opt.N < 0 {
				return usagef(cmd, "-n must be 0 or more")
			}
			if opt.Process != "" && !procNameRE.MatchString(opt.Process) {
				return usagef(cmd, "bad --process %q: want a process such as web.1 or a type such as web", opt.Process)
			}
			if r := cmd.String("release"); r != "" {
				if opt.Release, err = releaseVersion(cmd, r); err != nil {
					return err
				}
			}

			ctx, cancel := h.withTimeout(ctx, 0)
			defer cancel()
			c := h.client()
			switch {
			case !h.jsonMode():
				err = c.Logs(ctx, app, opt, func(l api.LogLine) error {
					writeLogLine(h.stdout, l)
					return nil
				})
			case opt.Follow:
				enc := json.NewEncoder(h.stdout)
				err = c.Logs(ctx, app, opt, func(l api.LogLine) error { return enc.Encode(l) })
			default:
				lines := []api.LogLine{}
				err = c.Logs(ctx, app, opt, func(l api.LogLine) error {
					lines = append(lines, l)
					return nil
				})
				if err == nil {
					h.writeJSON(lines)
				}
			}
			if opt.Follow && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				return nil // Ctrl-C or --timeout ends following; that is success
			}
			return err
		},
	}
}
