// Command mangen writes the man pages of the packages from the code, so they
// say what --help says:
//
//	hctl _doc-tree | mangen -version V -date 2026-01-02 hctl   > hctl.1
//	agentd --help  | mangen -version V -date 2026-01-02 agentd > agentd.8
//
// hctl's page is rendered from its urfave/cli command tree (printed as JSON by
// the hidden `hctl _doc-tree`); agentd's from its flag package usage, plus the
// sections below that --help has no room for.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

func main() {
	version := flag.String("version", "", "version for the page footer")
	date := flag.String("date", "", "date for the page footer, YYYY-MM-DD")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: hctl _doc-tree | mangen [-version V] [-date D] hctl\n       agentd --help | mangen [-version V] [-date D] agentd")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fatal(err)
	}
	var out string
	switch flag.Arg(0) {
	case "hctl":
		var root DocCommand
		if err := json.Unmarshal(in, &root); err != nil {
			fatal(fmt.Errorf("reading hctl _doc-tree output: %w", err))
		}
		out = HctlPage(root, *version, *date)
	case "agentd":
		flags, err := ParseFlagUsage(string(in))
		if err != nil {
			fatal(err)
		}
		out = AgentdPage(flags, *version, *date)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if _, err := io.WriteString(os.Stdout, out); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mangen:", err)
	os.Exit(1)
}

// DocCommand and DocFlag mirror the JSON of `hctl _doc-tree` (hctl/doctree.go).
type DocCommand struct {
	Name        string       `json:"name"`
	Aliases     []string     `json:"aliases"`
	Usage       string       `json:"usage"`
	UsageText   string       `json:"usage_text"`
	ArgsUsage   string       `json:"args_usage"`
	Description string       `json:"description"`
	Flags       []DocFlag    `json:"flags"`
	Commands    []DocCommand `json:"commands"`
}

type DocFlag struct {
	Names       []string `json:"names"`
	Placeholder string   `json:"placeholder"`
	Usage       string   `json:"usage"`
	TakesValue  bool     `json:"takes_value"`
	Repeatable  bool     `json:"repeatable"`
	Default     string   `json:"default"`
	EnvVars     []string `json:"env_vars"`
}

// Defaults that depend on who runs the program: --help shows the caller's,
// the page states both.
var userDefaults = map[string]string{
	"hctl --socket":           "/run/agentd/agentd.sock for root, $XDG_RUNTIME_DIR/agentd/agentd.sock for other users",
	"agentd --control-socket": "/run/agentd/agentd.sock for root, $XDG_RUNTIME_DIR/agentd/agentd.sock for other users",
	"agentd --state-dir":      "/var/lib/agentd for root, $XDG_STATE_HOME/agentd (~/.local/state/agentd) for other users",
}

// HctlPage renders hctl(1).
func HctlPage(root DocCommand, version, date string) string {
	var w page
	w.header("HCTL", "1", date, version, "User Commands")
	w.section("NAME")
	w.text(md("hctl - " + root.Usage))
	w.section("SYNOPSIS")
	w.text(md("**hctl** [global options] COMMAND [options] [ARGS]"))
	w.section("DESCRIPTION")
	w.md("hctl is the command-line client of **agentd**(8): it creates apps, deploys releases " +
		"without downtime, rolls back, scales, restarts, changes config and shows processes and " +
		"logs, all through agentd's control socket. Root and members of the group agentd may " +
		"change things; other users who can connect may only read.")
	// The root usage text's first line is the synopsis; the rest is prose.
	if _, rest, ok := strings.Cut(root.UsageText, "\n"); ok {
		w.prose(rest)
	}
	w.md("Every command takes **--json**: exactly one JSON value on stdout, progress on stderr, " +
		"never a prompt.")
	w.prose(root.Description)
	w.section("GLOBAL OPTIONS")
	w.flags("hctl", filterFlags(root.Flags, false))
	w.section("COMMANDS")
	for _, c := range root.Commands {
		w.command([]string{"hctl"}, c)
	}
	w.section("ENVIRONMENT")
	for _, f := range root.Flags {
		for _, e := range f.EnvVars {
			w.tp(md("**" + e + "**"))
			w.text(md("Used when **--" + f.Names[0] + "** is not given."))
		}
	}
	w.section("FILES")
	w.tp(`\fI/run/agentd/agentd.sock\fR`)
	w.text(md("agentd's control socket (mode 0660, group agentd) when agentd runs as a " +
		"service; other users reach it with **--socket** or HCTL_SOCKET."))
	w.section("SEE ALSO")
	w.text(md("**agentd**(8), **systemctl**(1)"))
	return w.String()
}

func (w *page) command(path []string, c DocCommand) {
	path = append(path, c.Name)
	w.ss(strings.Join(path, " "))
	usage := firstLine(c.UsageText)
	if usage == "" {
		usage = strings.Join(path, " ") + " " + c.ArgsUsage
	}
	w.literal(usage)
	if c.Usage != "" {
		w.prose(upperFirst(c.Usage) + ".")
	}
	w.prose(c.Description)
	if fl := filterFlags(c.Flags, true); len(fl) > 0 {
		w.raw(".PP\nOptions:")
		w.raw(".RS 4")
		w.flags(strings.Join(path, " "), fl)
		w.raw(".RE")
	}
	for _, sub := range c.Commands {
		w.command(path, sub)
	}
}

// filterFlags drops --help everywhere and --version below the root.
func filterFlags(fl []DocFlag, sub bool) []DocFlag {
	var out []DocFlag
	for _, f := range fl {
		if len(f.Names) == 0 || f.Names[0] == "help" || sub && f.Names[0] == "version" {
			continue
		}
		out = append(out, f)
	}
	return out
}

func (w *page) flags(cmd string, fl []DocFlag) {
	for _, f := range fl {
		var names []string
		for _, n := range f.Names {
			d := "--"
			if len(n) == 1 {
				d = "-"
			}
			s := `\fB` + esc(d+n) + `\fR`
			if f.TakesValue {
				ph := f.Placeholder
				if ph == "" {
					ph = "VALUE"
				}
				s += ` \fI` + esc(ph) + `\fR`
			}
			names = append(names, s)
		}
		w.tp(strings.Join(names, ", "))
		text := f.Usage
		if f.Repeatable && !strings.Contains(text, "repeatable") {
			text += " (repeatable)"
		}
		def := strings.Trim(f.Default, `"`)
		if d, ok := userDefaults[cmd+" --"+f.Names[0]]; ok {
			def = d
		}
		if def != "" {
			text += "; default: " + def
		}
		w.text(esc(text) + ".")
	}
}

// Flag is one flag of a Go flag package usage message.
type Flag struct {
	Name, Type, Usage, Default string
}

var defaultRE = regexp.MustCompile(` \(default (.*)\)$`)

// ParseFlagUsage reads the flags out of a flag.PrintDefaults listing:
//
//	-name type
//	  	usage (default "x")
func ParseFlagUsage(help string) ([]Flag, error) {
	var flags []Flag
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "  -"):
			name, typ, _ := strings.Cut(strings.TrimPrefix(line, "  -"), " ")
			// A boolean with a one-letter name shares the line with its usage.
			name, usage, _ := strings.Cut(name, "\t")
			flags = append(flags, Flag{Name: name, Type: strings.TrimSpace(typ), Usage: usage})
		case strings.HasPrefix(line, "    \t") && len(flags) > 0:
			f := &flags[len(flags)-1]
			f.Usage = strings.TrimSpace(f.Usage + " " + strings.TrimSpace(line))
		}
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("no flags found in the usage message")
	}
	for i := range flags {
		if m := defaultRE.FindStringSubmatch(flags[i].Usage); m != nil {
			flags[i].Default = strings.Trim(m[1], `"`)
			flags[i].Usage = strings.TrimSuffix(flags[i].Usage, m[0])
		}
	}
	return flags, nil
}

// AgentdPage renders agentd(8).
func AgentdPage(flags []Flag, version, date string) string {
	var w page
	w.header("AGENTD", "8", date, version, "System Administration")
	w.section("NAME")
	w.text(md("agentd - hold apps' listening sockets and switch releases without downtime"))
	w.section("SYNOPSIS")
	w.text(md("**agentd** [options]"))
	w.section("DESCRIPTION")
	w.md("agentd runs the apps of one machine and deploys new releases of them without refusing " +
		"or resetting a connection. It binds every app's listening sockets and holds them for the " +
		"app's whole life. A deploy starts the new release's processes beside the old ones with " +
		"the very same sockets inherited (the systemd socket-activation protocol: LISTEN_FDS, " +
		"LISTEN_FDNAMES, LISTEN_PID), waits until every new process is ready, then sends the old " +
		"processes SIGTERM; they drain and exit, and whatever outlives the drain timeout is " +
		"killed. A release that fails its release phase, crashes at boot or never becomes ready " +
		"is stopped, and the old one keeps serving.")
	w.md("agentd is driven with **hctl**(1) over its control socket (HTTP/1.1 and JSON on a " +
		"unix socket). Root, agentd's own user and members of the group given by **--group** " +
		"may change things; anyone else who can connect may only read.")
	w.md("Installed from the package, agentd runs as the systemd service agentd.service, with " +
		"its control socket from agentd.socket. It also runs without systemd, binding its " +
		"sockets itself, as root or as any user.")
	w.section("OPTIONS")
	for _, f := range flags {
		head := "**--" + f.Name + "**"
		if f.Type != "" {
			head += " " + f.Type
		}
		w.tp(md(head))
		text := f.Usage
		def := f.Default
		if d, ok := userDefaults["agentd --"+f.Name]; ok {
			def = d
		}
		if def != "" {
			text += "; default: " + def
		}
		w.text(esc(text) + ".")
	}
	w.section("SIGNALS")
	w.tp(md("**SIGTERM**, **SIGINT**"))
	w.text(md("Exit. App processes keep running and serving; the next agentd re-adopts them. " +
		"With **--stop-apps-on-exit** agentd drains and stops every app first."))
	w.tp(md("**SIGHUP**"))
	w.text(md("Self-upgrade: agentd executes its binary again (the newly installed one after a " +
		"package upgrade), hands the new process every socket and exits once the new one is " +
		"ready. App processes are not touched. **systemctl reload agentd** and " +
		"**hctl agent upgrade** do this."))
	w.section("SYSTEMD")
	w.md("agentd.service is Type=notify with a watchdog. Stopping or restarting it signals " +
		"agentd's main process only (KillMode=process), so the apps keep serving through " +
		"**systemctl restart agentd**; package upgrades reload agentd rather than restart it. " +
		"To stop the apps too, scale them to zero with **hctl scale**, or set " +
		"AGENTD_OPTS=--stop-apps-on-exit and restart agentd once, after which " +
		"**systemctl stop agentd** drains and stops them; **systemctl kill agentd** signals " +
		"every process of the unit at once.")
	w.md("App sockets may also come from socket units with Service=agentd.service and " +
		"FileDescriptorName=APP.NAME; agentd matches each to the socket NAME of the app APP. " +
		"Sockets agentd binds itself are kept in systemd's file descriptor store, so a restarted " +
		"agentd gets the same sockets back. An example unit is in " +
		"/usr/share/doc/agentd/examples/agentd-example-web.socket.")
	w.section("FILES")
	for _, f := range [][2]string{
		{"/etc/default/agentd", "AGENTD_OPTS: options for agentd.service (/etc/sysconfig/agentd on RPM-based systems)."},
		{"/var/lib/agentd", "State: apps/NAME.json, release content under slugs/, process output under logs/."},
		{"/run/agentd/agentd.sock", "The control socket (mode 0660, group agentd)."},
		{"/run/agentd/notify/", "The apps' per-process notify sockets."},
		{"/usr/lib/systemd/system/agentd.service", "The service unit, and agentd.socket beside it."},
	} {
		w.tp(`\fI` + esc(f[0]) + `\fR`)
		w.text(esc(f[1]))
	}
	w.section("SEE ALSO")
	w.text(md("**hctl**(1), **systemd.socket**(5), **sd_notify**(3), **sd_listen_fds**(3)"))
	return w.String()
}

// page accumulates roff.
type page struct{ b strings.Builder }

func (w *page) String() string { return w.b.String() }

func (w *page) raw(s string) { w.b.WriteString(s + "\n") }

func (w *page) header(name, section, date, version, manual string) {
	src := "agentd"
	if version != "" {
		src += " " + version
	}
	w.raw(fmt.Sprintf(".TH %s %s %s %s %s", name, section, quote(date), quote(src), quote(manual)))
	w.raw(".nh")
	w.raw(".ad l")
}

func (w *page) section(s string) { w.raw(".SH " + quote(s)) }
func (w *page) ss(s string)      { w.raw(".SS " + quote(esc(s))) }
func (w *page) tp(head string)   { w.raw(".TP\n" + head) }

// text writes already-escaped text as one filled line.
func (w *page) text(s string) { w.raw(lineSafe(s)) }

// md writes a paragraph of hand-written text (see md).
func (w *page) md(s string) { w.raw(".PP\n" + lineSafe(md(s))) }

// literal writes one unfilled line.
func (w *page) literal(s string) {
	w.raw(".PP\n.nf\n.RS 4\n" + lineSafe(`\fB`+esc(s)+`\fR`) + "\n.RE\n.fi")
}

// prose renders plain text the way --help shows it: paragraphs separated by
// blank lines; lines indented by two or more spaces are kept as they are
// (examples, lists).
func (w *page) prose(s string) {
	s = strings.Trim(s, "\n")
	if strings.TrimSpace(s) == "" {
		return
	}
	for _, para := range strings.Split(s, "\n\n") {
		var text []string
		var lit []string
		flushText := func() {
			if len(text) > 0 {
				w.raw(".PP\n" + lineSafe(esc(strings.Join(text, " "))))
				text = nil
			}
		}
		flushLit := func() {
			if len(lit) > 0 {
				w.raw(".PP\n.nf\n.RS 4")
				for _, l := range lit {
					w.raw(lineSafe(esc(l)))
				}
				w.raw(".RE\n.fi")
				lit = nil
			}
		}
		for _, l := range strings.Split(para, "\n") {
			if strings.HasPrefix(l, "  ") {
				flushText()
				lit = append(lit, strings.TrimPrefix(l, "  "))
				continue
			}
			flushLit()
			text = append(text, strings.TrimSpace(l))
		}
		flushText()
		flushLit()
	}
}

var replacer = strings.NewReplacer(
	`\`, `\e`,
	"-", `\-`,
	"\u2014", `\(em`,
	"\u2013", `\(en`,
	"\u2026", "...",
	"\u2018", "'", "\u2019", "'",
	"\u201c", `"`, "\u201d", `"`,
	"\u2192", `\(->`,
	"\u2265", `\(>=`,
	"\u2264", `\(<=`,
)

// esc escapes text for roff: backslashes and hyphens (so that options and
// commands copy as typed), and a few typographic characters.
func esc(s string) string { return replacer.Replace(s) }

var boldRE = regexp.MustCompile(`\*\*(.+?)\*\*`)

// md escapes hand-written text in which **x** is bold.
func md(s string) string { return boldRE.ReplaceAllString(esc(s), `\fB$1\fR`) }

// lineSafe keeps a text line from being read as a request: a leading . or '.
func lineSafe(s string) string {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		return `\&` + s
	}
	return s
}

func quote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `\(dq`) + `"`
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
