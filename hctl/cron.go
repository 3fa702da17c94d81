package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
	"github.com/urfave/cli/v3"
)

// `hctl cron APP`, and the per-host cron setting of apps create/set.

func cronFlag() cli.Flag {
	return &cli.StringFlag{
		Name: "cron", Local: true,
		Usage: "whether this host runs the app's cron jobs (app.json \"cron\"), `on|off`; in a fleet, " +
			"on for one host and off for the others (default: on)",
	}
}

// cronSetting reads --cron: nil when not given.
func cronSetting(cmd *cli.Command) (*string, error) {
	if !cmd.IsSet("cron") {
		return nil, nil
	}
	v := cmd.String("cron")
	if _, err := grammar.ParseCronSetting(v); err != nil {
		return nil, usagef(cmd, "bad --cron %q: %s", v, grammar.Reason(err))
	}
	return &v, nil
}

func (h *hctl) cronCommand() *cli.Command {
	return &cli.Command{
		Name:      "cron",
		Usage:     "list an app's cron jobs with their last and next run",
		UsageText: "hctl cron APP",
		Description: "The jobs are the \"cron\" entries of the active release's app.json; each run is a process\n" +
			"cron.N (N: the entry's place, from 1) with the app's environment, user, limits and logs, and\n" +
			"shows in hctl ps while it runs. A job never runs twice at once: a due time that finds the\n" +
			"last run still alive is skipped. A deploy never stops a run; the next run uses the new\n" +
			"release. A run missed while agentd restarted runs once when it is back, if it was due at\n" +
			"most an hour ago. Times are this host's; the counts are this host's runs since the job\n" +
			"was first seen. hctl apps set APP --cron off stops starting runs on this host.\n\n" +
			"Examples:\n" +
			"  hctl cron myapp\n" +
			"  hctl --json cron myapp | jq '.jobs[] | select(.last_exit_code != 0)'",
		Action: showApp(h, (*api.Client).Cron, writeCron),
	}
}

func writeCron(w io.Writer, l *api.CronList) {
	switch {
	case l.Release == "":
		fmt.Fprintf(w, "%s has no active release: no cron jobs\n", l.App)
		return
	case l.Error != "":
		fmt.Fprintf(w, "the cron jobs of %s %s could not be read: %s\n", l.App, l.Release, l.Error)
		return
	case len(l.Jobs) == 0:
		fmt.Fprintf(w, "%s %s has no cron jobs (no \"cron\" in its app.json)\n", l.App, l.Release)
		return
	}
	if !l.Enabled {
		fmt.Fprintf(w, "cron is off for %s on this host (hctl apps set %s --cron on): no run starts here\n", l.App, l.App)
	}
	tw := newTable(w)
	row(tw, "JOB", "SCHEDULE", "NEXT", "LAST RUN", "RELEASE", "LAST RESULT", "RUNS", "FAILED", "COMMAND")
	for _, j := range l.Jobs {
		last, result, rel := fmtTime(j.LastStart), j.LastResult, j.LastRelease
		if j.LastExitCode != nil {
			result = "exit " + strconv.Itoa(*j.LastExitCode)
		}
		if j.Running {
			result, rel = fmt.Sprintf("running (pid %d)", j.PID), j.RunningRelease
		}
		row(tw, j.Name, j.Schedule, fmtTime(j.Next), last, rel, result, strconv.Itoa(j.Runs), strconv.Itoa(j.Failures), truncate(j.Command, 60))
	}
	tw.Flush()
}
