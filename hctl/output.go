package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/urfave/cli/v3"
)

// now is the clock for uptimes; tests replace it.
var now = time.Now

// progress writes one event of an operation's stream to w as a plain line,
// Heroku-style:
//
//	-----> prepare: unpacked 3 files
//	       web.1: ready
func progress(w io.Writer, ev api.Event) {
	msg := strings.TrimRight(ev.Message, "\n")
	switch ev.Type {
	case "result":
		return
	case "phase":
		if ev.Phase != "" {
			fmt.Fprintf(w, "-----> %s: %s\n", ev.Phase, msg)
		} else {
			fmt.Fprintf(w, "-----> %s\n", msg)
		}
	case "info":
		fmt.Fprintf(w, "-----> %s\n", msg)
	case "process":
		if ev.Process != "" && !strings.Contains(msg, ev.Process) {
			fmt.Fprintf(w, "       %s: %s\n", ev.Process, msg)
		} else {
			fmt.Fprintf(w, "       %s\n", msg)
		}
	case "output":
		// a line the app's own command printed (the release phase)
		fmt.Fprintf(w, "       %s| %s\n", ev.Process, msg)
	default:
		fmt.Fprintf(w, "       %s\n", msg)
	}
}

// opTimes is " (switch 1.23s, drain 0.41s)" plus the processes killed at
// the drain timeout.
func opTimes(res *api.OpResult) string {
	s := fmt.Sprintf("switch %s, drain %s", secs(res.SwitchSeconds), secs(res.DrainSeconds))
	if len(res.Killed) > 0 {
		s += "; killed at the drain timeout: " + strings.Join(res.Killed, ", ")
		if res.ConnectionsCut > 0 {
			s += fmt.Sprintf(", cutting %d open connection(s)", res.ConnectionsCut)
		}
	}
	return " (" + s + ")"
}

func secs(s float64) string { return strconv.FormatFloat(s, 'f', 2, 64) + "s" }

// stillServes says what serves after a failed operation.
func stillServes(res *api.OpResult) string {
	if res == nil {
		return ""
	}
	// After a failure agentd reports the release that was active in
	// Previous; Release may name the new release that failed.
	cur := res.Previous
	if cur == "" {
		cur = res.Release
	}
	if cur == "" {
		return "; nothing changed"
	}
	return fmt.Sprintf("; %s %s still serves", res.App, cur)
}

// opFailure turns the error of a streaming operation that returned a failed
// result into the error hctl reports: it says what still serves, and is
// always exit status 1 (a failed operation, whatever its code).
func opFailure(what, app string, res *api.OpResult, err error) error {
	var apiErr *api.Error
	if res == nil || !errors.As(err, &apiErr) {
		return err
	}
	if res.App == "" {
		res.App = app
	}
	if rw, ok := reword(apiErr).(*api.Error); ok {
		apiErr = rw // hctl's advice for what agentd's Reason names
	}
	msg := fmt.Sprintf("%s of %s failed: %s", what, app, apiErr.Message)
	if res.RolledBack {
		// agentd's message names the rollback release that serves.
		return &opError{msg: msg, code: apiErr.Code}
	}
	if what == "release phase" {
		msg += "; nothing running was touched"
	} else {
		msg += stillServes(res)
	}
	return &opError{msg: msg, code: apiErr.Code}
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// row writes one table row; empty cells show as "-".
func row(tw io.Writer, cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		} else {
			cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
		}
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// fmtAge is a compact duration: 45s, 3m12s, 5h02m, 3d4h.
func fmtAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

func shortDigest(d string) string {
	if _, after, ok := strings.Cut(d, ":"); ok {
		d = after
	}
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func truncate(s string, n int) string {
	s = firstLine(s)
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// fmtFormation is "web=2 worker=1", sorted by type.
func fmtFormation(f map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(f)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, f[k]))
	}
	return strings.Join(parts, " ")
}

// fmtSocket is "web/http=tcp://127.0.0.1:8080".
func fmtSocket(s api.Socket) string {
	name := s.Name
	if s.Type != "" {
		name = s.Type + "/" + s.Name
	}
	return name + "=" + s.Addr
}

func fmtKV(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

func writeApps(w io.Writer, apps []api.App) {
	tw := newTable(w)
	row(tw, "NAME", "RELEASE", "FORMATION", "SOCKETS", "DEPLOYING", "STATE")
	for _, a := range apps {
		var socks []string
		for _, s := range a.Sockets {
			socks = append(socks, fmtSocket(s))
		}
		deploying := "no"
		if a.Deploying {
			deploying = "yes"
		}
		stateFile := "ok"
		if a.StateFile != "" {
			stateFile = a.StateFile
		}
		rel := a.ActiveRelease
		if a.Maintenance != nil {
			rel += " (maintenance)"
		}
		row(tw, a.Name, rel, fmtFormation(a.Formation), strings.Join(socks, " "), deploying, stateFile)
	}
	tw.Flush()
}

func writeReleases(w io.Writer, rels []api.Release) {
	tw := newTable(w)
	head := []string{"VERSION", "STATUS", "CREATED", "SOURCE", "MESSAGE", "DIGEST", "DEPLOYED BY"}
	for _, ph := range phaseOrder {
		head = append(head, strings.ToUpper(ph))
	}
	row(tw, head...)
	for _, r := range rels {
		name := r.Name
		if name == "" {
			name = "v" + strconv.Itoa(r.Version)
		}
		status := r.Status
		if r.CodeGone {
			status += " (code gone)"
		}
		cells := []string{name, status, fmtTime(r.CreatedAt), r.Source, truncate(r.Message, 40), shortDigest(r.Digest), r.DeployedBy}
		row(tw, append(cells, phaseCells(r.Phases)...)...)
	}
	tw.Flush()
}

// phaseOrder is the order of a deploy's phases, one column each in
// `hctl releases`.
var phaseOrder = []string{api.PhasePrepare, api.PhaseRelease, api.PhasePreboot, api.PhaseReadiness, api.PhaseCutover, api.PhaseDrain}

// phaseCells is how long each phase of phaseOrder took, "" for a phase
// the release did not go through.
func phaseCells(phases []api.Phase) []string {
	cells := make([]string, len(phaseOrder))
	for _, p := range phases {
		if i := slices.Index(phaseOrder, p.Name); i >= 0 {
			cells[i] = secs(p.Seconds)
		}
	}
	return cells
}

func writeProcesses(w io.Writer, ps []api.Process) {
	tw := newTable(w)
	row(tw, "APP", "PROCESS", "RELEASE", "STATE", "PID", "UPTIME", "RESTARTS", "CONNS", "KILL IN", "STATUS")
	for _, p := range ps {
		// CONNS and KILL IN: a draining process's open connections and
		// the time left before its SIGKILL.
		pid, uptime, conns, killIn := "", "", "", ""
		status := p.Status
		switch p.State {
		case api.StateExited, api.StateCrashed:
			if p.ExitCode != nil {
				status = strings.TrimSpace(fmt.Sprintf("exit %d %s", *p.ExitCode, status))
			}
		default:
			if p.PID > 0 {
				pid = strconv.Itoa(p.PID)
			}
			if !p.StartedAt.IsZero() {
				uptime = fmtAge(now().Sub(p.StartedAt))
			}
			if p.State == api.StateDraining && !p.KillAt.IsZero() {
				killIn = fmtAge(p.KillAt.Sub(now()))
			}
			if p.State == api.StateDraining && p.Connections != nil {
				conns = strconv.Itoa(*p.Connections)
			}
		}
		row(tw, p.App, p.Name, p.Release, p.State, pid, uptime, strconv.Itoa(p.Restarts), conns, killIn, status)
	}
	tw.Flush()
}

func writeConfig(w io.Writer, cfg map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		fmt.Fprintf(w, "%s=%s\n", k, cfg[k])
	}
}

// writeFields writes "key  value" pairs aligned, skipping empty values.
func writeFields(w io.Writer, kv ...string) {
	tw := newTable(w)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\n", kv[i], strings.ReplaceAll(kv[i+1], "\n", " "))
	}
	tw.Flush()
}

func writeRelease(w io.Writer, r *api.Release) {
	var phases []string
	total := 0.0
	for _, p := range r.Phases {
		phases = append(phases, p.Name+" "+secs(p.Seconds))
		total += p.Seconds
	}
	if len(phases) > 1 {
		phases[len(phases)-1] += " (" + secs(total) + " in all)"
	}
	name := r.Name
	if name == "" {
		name = "v" + strconv.Itoa(r.Version)
	}
	writeFields(w,
		"app", r.App,
		"release", name,
		"status", r.Status,
		"created", fmtTime(r.CreatedAt),
		"source", r.Source,
		"message", r.Message,
		"digest", r.Digest,
		"release id", r.ReleaseID,
		"deployed by", r.DeployedBy,
		"config keys", strings.Join(r.ConfigKeys, " "),
		"phases", strings.Join(phases, ", "),
	)
	if r.Error != "" {
		// Why it failed, with the failing process's last lines of output,
		// one per line as it wrote them.
		fmt.Fprintln(w, "error:")
		for l := range strings.SplitSeq(strings.TrimRight(r.Error, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	writeScriptRun(w, r.Postdrain)
	if len(r.Procfile) > 0 {
		fmt.Fprintln(w, "procfile:")
		for _, k := range slices.Sorted(maps.Keys(r.Procfile)) {
			fmt.Fprintf(w, "  %s: %s\n", k, r.Procfile[k])
		}
	}
}

func writeAppInfo(w io.Writer, info *api.AppInfo) {
	a := info.App
	deploying := ""
	if a.Deploying {
		deploying = "yes"
	}
	writeFields(w,
		"app", a.Name,
		"release", a.ActiveRelease,
		"deploying", deploying,
		"formation", fmtFormation(a.Formation),
		"readiness", fmtKV(a.Readiness),
		"boot timeout", time.Duration(a.BootTimeout).String(),
		"drain timeout", time.Duration(a.DrainTimeout).String(),
		"bake", fmtBake(a.Bake),
		"max surge", fmtSurge(a.MaxSurge),
		"strategy", fmtKV(a.Strategy),
		"user", a.User,
		"cron", a.Cron,
		"created", fmtTime(a.CreatedAt),
	)
	if !a.BakeUntil.IsZero() {
		fmt.Fprintf(w, "baking until %s\n", fmtTime(a.BakeUntil))
	}
	if a.Maintenance != nil {
		fmt.Fprintf(w, "in maintenance %s\n", fmtMaintenance(a.Maintenance))
	}
	if a.Webhook != "" {
		writeFields(w, "webhook", a.Webhook, "last delivery", fmtDelivery(a.LastDelivery))
	}
	if len(a.Sockets) > 0 {
		fmt.Fprintln(w, "\nsockets:")
		writeSockets(w, a.Sockets, false)
	}
	if info.Release != nil {
		r := info.Release
		fmt.Fprintf(w, "\nactive release %s: %s, %s, %s\n", r.Name, r.Source, fmtTime(r.CreatedAt), shortDigest(r.Digest))
		if r.Message != "" {
			fmt.Fprintf(w, "  %s\n", firstLine(r.Message))
		}
	}
	if len(info.Processes) > 0 {
		fmt.Fprintln(w, "\nprocesses:")
		writeProcesses(w, info.Processes)
	}
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func fmtBake(d api.Duration) string {
	if d == 0 {
		return "none"
	}
	return time.Duration(d).String()
}

func fmtSurge(n int) string {
	if n == 0 {
		return "the whole formation"
	}
	return strconv.Itoa(n)
}

func writeSockets(w io.Writer, socks []api.Socket, withApp bool) {
	tw := newTable(w)
	// STEERING: kernel, or shared and why (canaryview.go).
	steer := anySteering(socks)
	head := []string{"TYPE", "NAME", "ADDR", "BOUND", "IN USE"}
	if withApp {
		head = append([]string{"APP"}, head...)
	}
	if steer {
		head = append(head, "STEERING")
	}
	row(tw, head...)
	for _, s := range socks {
		// In use: a running process of the app holds it and accepts.
		inUse := "no"
		if s.InUse {
			inUse = "yes"
		}
		cells := []string{s.Type, s.Name, s.Addr, s.Bound, inUse}
		if withApp {
			cells = append([]string{s.App}, cells...)
		}
		if steer {
			cells = append(cells, steeringCell(s))
		}
		row(tw, cells...)
	}
	tw.Flush()
}

func writeStatus(w io.Writer, s *api.Status) {
	writeFields(w,
		"agentd", s.Version,
		"pid", strconv.Itoa(s.PID),
		"mode", s.Mode,
		"started", fmtTime(s.StartedAt),
		"uptime", fmtAge(time.Duration(s.UptimeSeconds*float64(time.Second))),
		"control socket", s.ControlSocket,
		"state dir", s.StateDir,
		"apps", strconv.Itoa(s.Apps),
		"processes", strconv.Itoa(s.Processes),
	)
	if st := s.Store; st != nil {
		writeFields(w, "release store", fmt.Sprintf("%s in %d blobs, %d trees; %s reclaimable (keeps %d releases per app)",
			fmtBytes(st.Bytes), st.Blobs, st.Trees, fmtBytes(st.Reclaimable), s.KeepReleases))
	}
	if len(s.Sockets) > 0 {
		fmt.Fprintln(w, "\nsockets:")
		writeSockets(w, s.Sockets, true)
	}
}

func writeLogLine(w io.Writer, l api.LogLine) {
	var b strings.Builder
	if !l.Time.IsZero() {
		b.WriteString(l.Time.Local().Format("2006-01-02T15:04:05.000"))
		b.WriteByte(' ')
	}
	if l.Release != "" {
		b.WriteString(l.Release)
		b.WriteByte(' ')
	}
	b.WriteString(l.Process)
	b.WriteString(": ")
	b.WriteString(strings.TrimRight(l.Line, "\n"))
	b.WriteByte('\n')
	_, _ = io.WriteString(w, b.String())
}

// showApp is the action of a command that asks agentd one thing about its
// APP argument and shows it: the JSON with --json, else what write makes
// of it.
func showApp[T any](h *hctl, get func(c *api.Client, ctx context.Context, app string) (T, error), write func(io.Writer, T)) cli.ActionFunc {
	return func(ctx context.Context, cmd *cli.Command) error {
		app, err := appArg(cmd)
		if err != nil {
			return err
		}
		ctx, cancel := h.withTimeout(ctx, queryTimeout)
		defer cancel()
		v, err := get(h.client(), ctx, app)
		if err != nil {
			return err
		}
		if h.jsonMode() {
			h.writeJSON(v)
			return nil
		}
		write(h.stdout, v)
		return nil
	}
}
