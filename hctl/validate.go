package main

import (
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/agentd/agentd/grammar"
	"github.com/agentd/agentd/sockets"
)

// Local checks of arguments, so that obvious mistakes exit 2 before
// anything is sent. The rules are package grammar's (and sockets' for
// socket specs), the very ones agentd applies when it checks everything
// again; the wording, which may name hctl's flags, is hctl's.

// matcher gives a grammar check the MatchString method of the regexps
// these variables used to be, for the commands that test one directly.
type matcher func(string) error

func (m matcher) MatchString(s string) bool { return m(s) == nil }

var (
	procTypeRE = matcher(grammar.CheckProcessType)
	procNameRE = matcher(func(s string) error { _, _, err := grammar.ParseProcessName(s); return err })
)

// needArgs checks that cmd got between min and max positional arguments
// (max < 0: no limit) and returns them.
func needArgs(cmd *cli.Command, min, max int, names ...string) ([]string, error) {
	a := cmd.Args().Slice()
	if len(a) < min {
		missing := "arguments"
		if len(a) < len(names) {
			missing = strings.Join(names[len(a):min], " and ")
		}
		return nil, usagef(cmd, "missing %s", missing)
	}
	if max >= 0 && len(a) > max {
		return nil, usagef(cmd, "too many arguments: %s", strings.Join(a[max:], " "))
	}
	return a, nil
}

func checkAppName(cmd *cli.Command, name string) error {
	if err := grammar.CheckAppName(name); err != nil {
		return usagef(cmd, "bad app name %q: %s", name, grammar.Reason(err))
	}
	return nil
}

// releaseVersion normalises "3" and "v3" to "v3".
func releaseVersion(cmd *cli.Command, v string) (string, error) {
	n, err := grammar.ParseRelease(v)
	if err != nil {
		return "", usagef(cmd, "bad release %q: %s", v, grammar.Reason(err))
	}
	return grammar.ReleaseName(n), nil
}

// parseFormation parses TYPE=N arguments.
func parseFormation(cmd *cli.Command, specs []string) (map[string]int, error) {
	f := map[string]int{}
	for _, s := range specs {
		typ, count, err := grammar.ParseFormation(s)
		if err != nil {
			return nil, usagef(cmd, "bad formation %q: %s", s, grammar.Reason(err))
		}
		if _, dup := f[typ]; dup {
			return nil, usagef(cmd, "process type %q given twice", typ)
		}
		f[typ] = count
	}
	return f, nil
}

// parseConfigSet parses K=V arguments; V may be empty and may hold '='.
func parseConfigSet(cmd *cli.Command, pairs []string) (map[string]string, error) {
	set := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, usagef(cmd, "bad config var %q: want KEY=VALUE", p)
		}
		if err := grammar.CheckSettableConfigKey(k); err != nil {
			return nil, usagef(cmd, "bad config key %q: %s", k, grammar.Reason(err))
		}
		if err := grammar.CheckConfigValue(k, v); err != nil {
			return nil, usagef(cmd, "bad value for %s: %s", k, grammar.Reason(err))
		}
		if _, dup := set[k]; dup {
			return nil, usagef(cmd, "config key %q given twice", k)
		}
		set[k] = v
	}
	return set, nil
}

func checkConfigKeys(cmd *cli.Command, keys []string) error {
	for _, k := range keys {
		if strings.Contains(k, "=") {
			return usagef(cmd, "bad config key %q: unset takes keys only, no =VALUE", k)
		}
		if err := grammar.CheckConfigKey(k); err != nil {
			return usagef(cmd, "bad config key %q: %s", k, grammar.Reason(err))
		}
	}
	return nil
}

// checkSocketSpec checks the form "[TYPE/]NAME=ADDR" as agentd will parse
// it (sockets.ParseSpec).
func checkSocketSpec(cmd *cli.Command, spec string) error {
	if !strings.Contains(spec, "=") && strings.HasPrefix(spec, "/") {
		// A path: almost surely meant as agentd's control socket.
		return usagef(cmd, "bad socket %q: want [TYPE/]NAME=ADDR, such as web=tcp://0.0.0.0:8080; "+
			"to choose agentd's control socket, put --socket PATH before the command "+
			"(hctl --socket PATH apps create ...) or set HCTL_SOCKET", spec)
	}
	if _, err := sockets.ParseSpec(spec); err != nil {
		// ParseSpec's messages start with `socket "SPEC": `.
		return usagef(cmd, "bad %v", err)
	}
	return nil
}

// parseReadiness parses TYPE=KIND arguments.
func parseReadiness(cmd *cli.Command, specs []string) (map[string]string, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	r := map[string]string{}
	for _, s := range specs {
		typ, kind, ok := strings.Cut(s, "=")
		if !ok || grammar.CheckProcessType(typ) != nil {
			return nil, usagef(cmd, "bad readiness %q: want TYPE=KIND, such as web=http:/healthz", s)
		}
		if _, err := grammar.ParseReadiness(kind); err != nil {
			return nil, usagef(cmd, "bad readiness %q: %s", s, grammar.Reason(err))
		}
		r[typ] = kind
	}
	return r, nil
}

// appArg is the one APP argument of a command, checked by the grammar.
func appArg(cmd *cli.Command) (string, error) {
	a, err := needArgs(cmd, 1, 1, "APP")
	if err != nil {
		return "", err
	}
	if err := checkAppName(cmd, a[0]); err != nil {
		return "", err
	}
	return a[0], nil
}
