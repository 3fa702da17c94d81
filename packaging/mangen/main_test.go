package main

import (
	"os/exec"
	"strings"
	"testing"
)

const agentdHelp = `Usage: agentd [flags]

agentd holds your apps' listening sockets.

Flags:
  -control-socket string
    	unix socket for the control API (hctl) (default "/tmp/agentd-1000/agentd.sock")
  -keep-releases int
    	releases kept per app (default 10)
  -stop-apps-on-exit
    	drain and stop every app process when agentd exits (by default apps keep serving)
`

func TestParseFlagUsage(t *testing.T) {
	flags, err := ParseFlagUsage(agentdHelp)
	if err != nil {
		t.Fatal(err)
	}
	want := []Flag{
		{Name: "control-socket", Type: "string", Usage: "unix socket for the control API (hctl)", Default: "/tmp/agentd-1000/agentd.sock"},
		{Name: "keep-releases", Type: "int", Usage: "releases kept per app", Default: "10"},
		{Name: "stop-apps-on-exit", Usage: "drain and stop every app process when agentd exits (by default apps keep serving)"},
	}
	if len(flags) != len(want) {
		t.Fatalf("got %+v", flags)
	}
	for i := range want {
		if flags[i] != want[i] {
			t.Errorf("flag %d: got %+v, want %+v", i, flags[i], want[i])
		}
	}
	if _, err := ParseFlagUsage("no flags here"); err == nil {
		t.Error("no error for a usage without flags")
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		`a-b \n`:                 `a\-b \en`,
		"wait\u2014really\u2026": `wait\(emreally...`,
	} {
		if got := esc(in); got != want {
			t.Errorf("esc(%q) = %q, want %q", in, got, want)
		}
	}
	if got := md("run **hctl --json**"); got != `run \fBhctl \-\-json\fR` {
		t.Errorf("md: %q", got)
	}
	if got := lineSafe(".hidden"); got != `\&.hidden` {
		t.Errorf("lineSafe: %q", got)
	}
}

func TestPages(t *testing.T) {
	root := DocCommand{
		Name: "hctl", Usage: "deploy apps", UsageText: "hctl [global options] COMMAND\n\nGlobal options first.",
		Description: "Exit status: 0.\n\nExamples:\n  hctl ps\n  .dotted",
		Flags: []DocFlag{
			{Names: []string{"socket"}, Placeholder: "PATH", Usage: "the socket PATH", TakesValue: true, Default: `"/tmp/x.sock"`, EnvVars: []string{"HCTL_SOCKET"}},
			{Names: []string{"help", "h"}, Usage: "show help"},
		},
		Commands: []DocCommand{{
			Name: "apps", Usage: "list apps", UsageText: "hctl apps",
			Commands: []DocCommand{{Name: "create", UsageText: "hctl apps create APP", Flags: []DocFlag{
				{Names: []string{"readiness"}, Placeholder: "TYPE=KIND", Usage: "readiness", TakesValue: true, Repeatable: true},
			}}},
		}},
	}
	flags, err := ParseFlagUsage(agentdHelp)
	if err != nil {
		t.Fatal(err)
	}
	pages := map[string]string{
		"hctl.1":   HctlPage(root, "1.2.3", "2026-01-02"),
		"agentd.8": AgentdPage(flags, "1.2.3", "2026-01-02"),
	}
	for name, want := range map[string][]string{
		"hctl.1": {
			`.TH HCTL 1 "2026-01-02" "agentd 1.2.3" "User Commands"`,
			`.SS "hctl apps create"`,
			`\fB\-\-socket\fR \fIPATH\fR`,
			// the caller's default is replaced by both users' defaults
			`/run/agentd/agentd.sock for root`,
			`\fB\-\-readiness\fR \fITYPE=KIND\fR`,
			"readiness (repeatable).",
			"\n\\&.dotted\n",
			`\fBHCTL_SOCKET\fR`,
		},
		"agentd.8": {
			`.TH AGENTD 8 "2026-01-02" "agentd 1.2.3" "System Administration"`,
			`\fB\-\-keep\-releases\fR int`,
			"default: 10.",
			"/run/agentd/agentd.sock for root",
			".SH \"SIGNALS\"",
		},
	} {
		for _, w := range want {
			if !strings.Contains(pages[name], w) {
				t.Errorf("%s lacks %q:\n%s", name, w, pages[name])
			}
		}
		if strings.Contains(pages[name], "/tmp/") {
			t.Errorf("%s shows the caller's default path:\n%s", name, pages[name])
		}
		if strings.Contains(pages[name], "--help") || strings.Contains(pages[name], `\-\-help`) {
			t.Errorf("%s documents --help", name)
		}
	}

	// groff, where installed, must render both pages without a warning.
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Log("groff not installed: pages not rendered")
		return
	}
	for name, p := range pages {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(p)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff %s: %v\n%s", name, err, out)
		}
	}
}
