package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/urfave/cli/v3"

	"github.com/agentd/agentd/grammar"
	"github.com/agentd/agentd/sockets"
)

// TestValidatorsAgreeWithGrammar: hctl's local checks accept exactly what
// package grammar (and sockets, for socket specs) accepts, which is what
// agentd accepts; a refusal is a usage error (exit 2). Each row is one
// input run through both sides.
func TestValidatorsAgreeWithGrammar(t *testing.T) {
	cmd := &cli.Command{Name: "test"}
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	type rule struct {
		name    string
		grammar func(string) error
		hctl    func(string) error
		inputs  []string
	}
	rules := []rule{
		{"app name", grammar.CheckAppName,
			func(s string) error { return checkAppName(cmd, s) },
			[]string{"web", "my-app-2", "a" + long("b", 29), "a" + long("b", 30), "", "Web", "2web", "-web", "my_app", "a.b", ".."}},
		{"release", func(s string) error { _, err := grammar.ParseRelease(s); return err },
			func(s string) error { _, err := releaseVersion(cmd, s); return err },
			[]string{"v3", "3", "v0", "0", "v03", "vv3", "+3", "v", "", "seven", "1234567890"}},
		{"formation", func(s string) error { _, _, err := grammar.ParseFormation(s); return err },
			func(s string) error { _, err := parseFormation(cmd, []string{s}); return err },
			[]string{"web=2", "web=0", "web=100", "web=101", "web=-1", "web=+1", "web=two", "web", "=1", "web.1=1", long("w", 31) + "=1"}},
		{"config key to set", grammar.CheckSettableConfigKey,
			func(s string) error { _, err := parseConfigSet(cmd, []string{s + "=v"}); return err },
			[]string{"A", "_x", "DATABASE_URL", long("K", 128), long("K", 129), "1BAD", "A-B", "PORT", "NOTIFY_SOCKET", "AGENTD_APP", "LISTEN_FDS", "AGENTD_X", "PORTS"}},
		{"config key to unset", grammar.CheckConfigKey,
			func(s string) error { return checkConfigKeys(cmd, []string{s}) },
			[]string{"A", "PORT", "AGENTD_APP", long("K", 128), long("K", 129), "1BAD", "A-B", ""}},
		{"config value", func(s string) error { return grammar.CheckConfigValue("K", s) },
			func(s string) error { _, err := parseConfigSet(cmd, []string{"K=" + s}); return err },
			[]string{"", "x", "a=b", "nul\x00", long("v", 64<<10), long("v", 64<<10+1)}},
		{"process type", grammar.CheckProcessType,
			// ps and logs test these two directly.
			func(s string) error {
				if !procTypeRE.MatchString(s) {
					return usagef(cmd, "refused")
				}
				return nil
			},
			[]string{"web", "Worker_2", long("w", 30), long("w", 31), "", "web.1", "a b"}},
		{"process name", func(s string) error { _, _, err := grammar.ParseProcessName(s); return err },
			func(s string) error {
				if !procNameRE.MatchString(s) {
					return usagef(cmd, "refused")
				}
				return nil
			},
			[]string{"web", "web.1", "worker.100", "web.0", "web.01", "web.", ".1", "web.x", "a b.1"}},
		{"readiness", func(s string) error { _, err := grammar.ParseReadiness(s); return err },
			func(s string) error { _, err := parseReadiness(cmd, []string{"web=" + s}); return err },
			[]string{"notify", "tcp", "http:/healthz", "exec:test -f x", "uptime", "uptime:2s", "notify:x", "tcp:80",
				"http:healthz", "http:/a b", "exec:", "uptime:-1s", "uptime:soon", "magic", ""}},
		{"canary", func(s string) error { _, err := grammar.ParseCanaryPercent(s); return err },
			func(s string) error { _, err := parseCanary(cmd, s); return err },
			[]string{"10%", "10", "0.5%", "99.9", "0", "100%", "-1", "1e1", ".5", "ten", ""}},
		{"socket", func(s string) error { _, err := sockets.ParseSpec(s); return err },
			func(s string) error { return checkSocketSpec(cmd, s) },
			[]string{"web=tcp://127.0.0.1:8080", "worker/q=unix:///run/q.sock", "web=tcp6://[::1]:0", "web:8080",
				"web=http://x:80", "web=tcp://127.0.0.1:70000", "probe=tcp://127.0.0.1:0", "web=unix://rel",
				"/run/agentd/agentd.sock", "a b=tcp://127.0.0.1:1"}},
	}
	for _, r := range rules {
		accepted, refused := 0, 0
		for _, in := range r.inputs {
			gerr, herr := r.grammar(in), r.hctl(in)
			if (gerr == nil) != (herr == nil) {
				t.Errorf("%s %.40q: grammar says %v, hctl says %v", r.name, in, gerr, herr)
				continue
			}
			if gerr == nil {
				accepted++
				continue
			}
			refused++
			if ue := (*usageError)(nil); !errors.As(herr, &ue) {
				t.Errorf("%s %.40q: hctl's refusal %v is no usage error (exit 2)", r.name, in, herr)
			}
		}
		// A table that only accepts, or only refuses, proves nothing.
		if accepted == 0 || refused == 0 {
			t.Errorf("%s: %d inputs accepted, %d refused: want some of each", r.name, accepted, refused)
		}
	}
}

// TestRefusedLocally: inputs that hctl used to send and agentd refused
// (the drift this package ends) now exit 2 without a request.
func TestRefusedLocally(t *testing.T) {
	f := newFake(t)
	for _, args := range [][]string{
		{"scale", "myapp", "web=101"},
		{"config", "set", "myapp", "PORT=80"},
		{"config", "set", "myapp", "LISTEN_FDS=3"},
		{"config", "set", "myapp", strings.Repeat("K", 129) + "=v"},
		{"rollback", "myapp", "v0"},
		{"apps", "create", "web", "--socket", "probe=tcp://127.0.0.1:0"},
		{"apps", "create", "web", "--socket", "web=tcp://127.0.0.1:8080", "--readiness", "web=http:/a b"},
		{"logs", "myapp", "--process", "web.0"},
	} {
		r := hctlRun(t, args...)
		if r.code != 2 || !strings.HasPrefix(lastLine(r.stderr), "hctl: ") {
			t.Errorf("hctl %s: %s", strings.Join(args, " "), r)
		}
	}
	if s := f.sent(); len(s) != 0 {
		t.Errorf("refused input sent requests: %v", s)
	}
}
