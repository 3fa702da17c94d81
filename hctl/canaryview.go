package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
)

// writeCanary is `hctl canary APP`:
//
//	app        myapp
//	canary     v4: 10% of new connections asked, 10.3% steered (1,030 of 10,000)
//	active     v3
//	formation  web=1
//	running    3m12s (since 2026-12-04 21:40:00)
//	bake       until 2026-12-04 21:45:00 (1m48s left)
//	crashes    0
//
//	split:
//	RELEASE  ROLE    ASKED  STEERED  SHARE
//	…
//	processes:
//	RELEASE  PROCESS  STATE  PID  UPTIME  RESTARTS  READY  STATUS
func writeCanary(w io.Writer, c *api.Canary) {
	var total uint64
	for _, s := range c.Split {
		total += s.Steered
	}
	steered := ""
	for _, s := range c.Split {
		if s.Release == c.Release && total > 0 {
			steered = fmt.Sprintf(", %s steered (%s of %s)", share(s.Steered, total), count(s.Steered), count(total))
		}
	}
	bake := "none"
	if !c.BakeUntil.IsZero() {
		left := c.BakeUntil.Sub(now())
		if left > 0 {
			bake = fmt.Sprintf("until %s (%s left; a crash or failed probe until then aborts the canary)", fmtTime(c.BakeUntil), fmtAge(left))
		} else {
			bake = fmt.Sprintf("passed at %s", fmtTime(c.BakeUntil))
		}
	}
	writeFields(w,
		"app", c.App,
		"canary", fmt.Sprintf("%s: %s%% of new connections asked%s", c.Release, grammar.FormatCanaryPercent(c.Percent), steered),
		"active", c.Active,
		"formation", fmtFormation(c.Formation),
		"running", fmt.Sprintf("%s (since %s)", fmtAge(now().Sub(c.StartedAt)), fmtTime(c.StartedAt)),
		"bake", bake,
		"crashes", strconv.Itoa(c.Crashes),
	)

	fmt.Fprintln(w, "\nsplit:")
	tw := newTable(w)
	row(tw, "RELEASE", "ROLE", "ASKED", "STEERED", "SHARE")
	for _, s := range sortedSplit(c) {
		pct := ""
		if total > 0 {
			pct = share(s.Steered, total)
		}
		row(tw, s.Release, role(c, s.Release), grammar.FormatCanaryPercent(s.Percent)+"%", count(s.Steered), pct)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nprocesses:")
	tw = newTable(w)
	row(tw, "RELEASE", "PROCESS", "STATE", "PID", "UPTIME", "RESTARTS", "READY", "STATUS")
	ps := slices.Clone(c.Processes)
	slices.SortStableFunc(ps, func(a, b api.Process) int {
		return cmp.Or(cmp.Compare(rank(c, a.Release), rank(c, b.Release)), cmp.Compare(a.Type, b.Type), cmp.Compare(a.Index, b.Index))
	})
	for _, p := range ps {
		pid, uptime, ready := "", "", "no"
		if p.PID > 0 && p.State != api.StateExited && p.State != api.StateCrashed {
			pid = strconv.Itoa(p.PID)
		}
		if !p.StartedAt.IsZero() && pid != "" {
			uptime = fmtAge(now().Sub(p.StartedAt))
		}
		if !p.ReadyAt.IsZero() {
			ready = fmtTime(p.ReadyAt)
		}
		status := p.Status
		if p.ExitCode != nil {
			status = strings.TrimSpace(fmt.Sprintf("exit %d %s", *p.ExitCode, status))
		}
		row(tw, p.Release+" ("+role(c, p.Release)+")", p.Name, p.State, pid, uptime, strconv.Itoa(p.Restarts), ready, status)
	}
	tw.Flush()
}

// sortedSplit is the canary first, then the active release.
func sortedSplit(c *api.Canary) []api.CanaryShare {
	s := slices.Clone(c.Split)
	slices.SortStableFunc(s, func(a, b api.CanaryShare) int { return cmp.Compare(rank(c, a.Release), rank(c, b.Release)) })
	return s
}

func rank(c *api.Canary, rel string) int {
	switch rel {
	case c.Release:
		return 0
	case c.Active:
		return 1
	}
	return 2
}

func role(c *api.Canary, rel string) string {
	switch rel {
	case c.Release:
		return "canary"
	case c.Active:
		return "active"
	}
	return "other"
}

// share is n of total as a percentage with one decimal: "10.3%".
func share(n, total uint64) string {
	return strconv.FormatFloat(100*float64(n)/float64(total), 'f', 1, 64) + "%"
}

// count is n with thousands separated: 10,000.
func count(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// steeringCell is a socket's STEERING column: "kernel", or "shared: why".
func steeringCell(s api.Socket) string {
	if s.SteeringWhy == "" || s.Steering == api.SteeringKernel {
		return s.Steering
	}
	return s.Steering + ": " + s.SteeringWhy
}

// anySteering: agentd reports steering (an agentd from before it does
// not, and its tables keep their columns).
func anySteering(socks []api.Socket) bool {
	return slices.ContainsFunc(socks, func(s api.Socket) bool { return s.Steering != "" })
}
