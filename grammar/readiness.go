package grammar

import (
	"strings"
	"time"
)

// Readiness kinds: how agentd decides that a new process is ready.
const (
	KindNotify = "notify" // READY=1 on the process's NOTIFY_SOCKET
	KindHTTP   = "http"   // http:PATH, GET PATH answers 2xx or 3xx
	KindTCP    = "tcp"    // the app accepts a connection
	KindExec   = "exec"   // exec:CMD exits 0
	KindUptime = "uptime" // uptime:DURATION, the process stayed alive that long
)

// DefaultUptime is what a bare "uptime" waits for.
const DefaultUptime = 5 * time.Second

// Readiness is a parsed readiness kind.
type Readiness struct {
	Kind   string        // one of the Kind constants
	Path   string        // KindHTTP: the request path, starting with '/'
	Cmd    string        // KindExec: the command
	Uptime time.Duration // KindUptime
}

// ParseReadiness parses a readiness kind: notify, http:PATH, tcp,
// exec:CMD, uptime:DURATION or uptime (DefaultUptime). The reasons of its
// errors are the ones agentd has always given.
func ParseReadiness(s string) (Readiness, error) {
	bad := func(reason string) (Readiness, error) {
		return Readiness{}, newError(FieldReadiness, s, ErrBadReadiness, reason)
	}
	name, arg, hasArg := strings.Cut(s, ":")
	switch name {
	case KindNotify, KindTCP:
		if hasArg {
			return bad(name + " takes no argument")
		}
		return Readiness{Kind: name}, nil
	case KindHTTP:
		// No blanks: the path goes into a request line as it is.
		if !strings.HasPrefix(arg, "/") || strings.ContainsAny(arg, " \r\n\t") {
			return bad("want http:/PATH, e.g. http:/healthz")
		}
		return Readiness{Kind: KindHTTP, Path: arg}, nil
	case KindExec:
		if strings.TrimSpace(arg) == "" {
			return bad("want exec:COMMAND")
		}
		return Readiness{Kind: KindExec, Cmd: arg}, nil
	case KindUptime:
		if !hasArg {
			return Readiness{Kind: KindUptime, Uptime: DefaultUptime}, nil
		}
		d, err := ParseDuration(arg)
		if err != nil {
			return bad("want uptime:DURATION, e.g. uptime:5s")
		}
		return Readiness{Kind: KindUptime, Uptime: d}, nil
	}
	return bad("unknown kind (notify, http:PATH, tcp, exec:CMD, uptime:DURATION)")
}

// String renders r as ParseReadiness reads it: uptime:5s, http:/healthz.
func (r Readiness) String() string {
	switch r.Kind {
	case KindHTTP:
		return KindHTTP + ":" + r.Path
	case KindExec:
		return KindExec + ":" + r.Cmd
	case KindUptime:
		return KindUptime + ":" + r.Uptime.String()
	}
	return r.Kind
}

// ParseDuration parses a duration in Go's syntax (5s, 1m30s, 250ms), zero
// or more.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, newError(FieldDuration, s, ErrBadDuration, "want a duration such as 5s, 1m30s or 250ms, not negative")
	}
	return d, nil
}
