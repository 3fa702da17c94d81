package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v3"
)

// Local checks of arguments, so that obvious mistakes exit 2 before
// anything is sent. agentd checks everything again.

var (
	appNameRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,29}$`)
	procTypeRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)
	procNameRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}(\.[0-9]+)?$`)
	configKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	releaseRE   = regexp.MustCompile(`^v?[0-9]+$`)
	sockNameRE  = regexp.MustCompile(`^([A-Za-z0-9_-]+/)?[A-Za-z0-9_.-]+$`)
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
	if !appNameRE.MatchString(name) {
		return usagef(cmd, "bad app name %q: use a lowercase letter, then up to 29 lowercase letters, digits or '-'", name)
	}
	return nil
}

// releaseVersion normalises "3" and "v3" to "v3".
func releaseVersion(cmd *cli.Command, v string) (string, error) {
	if !releaseRE.MatchString(v) {
		return "", usagef(cmd, "bad release %q: want a version such as v3", v)
	}
	return "v" + strings.TrimPrefix(v, "v"), nil
}

// parseFormation parses TYPE=N arguments.
func parseFormation(cmd *cli.Command, specs []string) (map[string]int, error) {
	f := map[string]int{}
	for _, s := range specs {
		typ, n, ok := strings.Cut(s, "=")
		if !ok || !procTypeRE.MatchString(typ) {
			return nil, usagef(cmd, "bad formation %q: want TYPE=N, such as web=2", s)
		}
		count, err := strconv.Atoi(n)
		if err != nil || count < 0 {
			return nil, usagef(cmd, "bad count in %q: want a whole number 0 or more", s)
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
		if !configKeyRE.MatchString(k) {
			return nil, usagef(cmd, "bad config key %q: use letters, digits and '_', not starting with a digit", k)
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
		if !configKeyRE.MatchString(k) {
			return usagef(cmd, "bad config key %q: use letters, digits and '_', not starting with a digit", k)
		}
	}
	return nil
}

// checkSocketSpec checks the form "[TYPE/]NAME=ADDR".
func checkSocketSpec(cmd *cli.Command, spec string) error {
	name, addr, ok := strings.Cut(spec, "=")
	if !ok {
		hint := "want [TYPE/]NAME=ADDR, such as web=tcp://0.0.0.0:8080"
		if strings.HasPrefix(spec, "/") {
			hint += "; to choose agentd's control socket, put --socket PATH before the command (hctl --socket PATH apps create ...) or set HCTL_SOCKET"
		}
		return usagef(cmd, "bad socket %q: %s", spec, hint)
	}
	if !sockNameRE.MatchString(name) {
		return usagef(cmd, "bad socket name %q in %q: want [TYPE/]NAME", name, spec)
	}
	switch {
	case strings.HasPrefix(addr, "tcp://"), strings.HasPrefix(addr, "tcp6://"):
		hostport := addr[strings.Index(addr, "://")+3:]
		i := strings.LastIndex(hostport, ":")
		if i < 0 {
			return usagef(cmd, "bad socket address %q: want tcp://HOST:PORT", addr)
		}
		if p, err := strconv.Atoi(hostport[i+1:]); err != nil || p < 0 || p > 65535 {
			return usagef(cmd, "bad port in socket address %q", addr)
		}
	case strings.HasPrefix(addr, "unix://"):
		if !strings.HasPrefix(addr, "unix:///") {
			return usagef(cmd, "bad socket address %q: want unix:///absolute/path", addr)
		}
	default:
		return usagef(cmd, "bad socket address %q: want tcp://HOST:PORT, tcp6://[HOST]:PORT or unix:///path", addr)
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
		if !ok || !procTypeRE.MatchString(typ) {
			return nil, usagef(cmd, "bad readiness %q: want TYPE=KIND, such as web=http:/healthz", s)
		}
		if err := checkReadinessKind(kind); err != nil {
			return nil, usagef(cmd, "bad readiness %q: %v", s, err)
		}
		r[typ] = kind
	}
	return r, nil
}

func checkReadinessKind(kind string) error {
	name, arg, hasArg := strings.Cut(kind, ":")
	switch name {
	case "notify", "tcp":
		if hasArg {
			return fmt.Errorf("%s takes no argument", name)
		}
	case "http":
		if !strings.HasPrefix(arg, "/") {
			return fmt.Errorf("want http:/PATH")
		}
	case "exec":
		if strings.TrimSpace(arg) == "" {
			return fmt.Errorf("want exec:COMMAND")
		}
	case "uptime":
		if d, err := time.ParseDuration(arg); err != nil || d < 0 {
			return fmt.Errorf("want uptime:DURATION, such as uptime:5s")
		}
	default:
		return fmt.Errorf("unknown kind %q: want notify, http:PATH, tcp, exec:CMD or uptime:DURATION", name)
	}
	return nil
}
