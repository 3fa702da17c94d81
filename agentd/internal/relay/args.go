// Package relay is the process that stands between a one-off process
// (`hctl run`) and its client: agentd's own binary re-executed in relay
// mode, started by agentd like any app process (through the exec shim, as
// the app's user, with its limits, no_new_privs, the seccomp guard, in its
// release's scope) and recorded before it runs. It is the parent of the
// command: it holds the pty or the pipes and the exit status, so that
// neither lives in agentd and an agentd restart or upgrade hangs nothing
// up. agentd connects to the relay's socket and passes the frames of
// package api's run stream between it and hctl; after a restart the next
// agentd adopts the relay and hctl re-attaches through it.
//
// Client gone or agentd restarting: agentd sends FrameHangup when hctl's
// connection ends without FrameAck, and the relay hangs the command up at
// once (SIGHUP to its process group, SIGKILL KillAfter later). A
// connection that ends without FrameHangup is agentd going away: the relay
// keeps the command running and buffers its output for Grace, the window
// in which a new agentd re-attaches hctl; past it, it hangs up as if the
// client were gone. So a command never outlives its client by more than
// Grace + KillAfter.
package relay

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Arg, as argv[1] of agentd, turns agentd into a relay.
const Arg = "__agentd_relay"

// Is reports whether args (os.Args) ask for the relay.
func Is(args []string) bool { return len(args) > 1 && args[1] == Arg }

// Defaults of Options.
const (
	DefaultGrace     = 30 * time.Second
	DefaultKillAfter = 5 * time.Second
)

// Options are the relay's: what it passes on to the command and how long
// it waits.
type Options struct {
	// Sockets is how many of the relay's fds from 3 are the app's sockets,
	// passed on to the command as LISTEN_FDS with Names; the relay's own
	// listening socket (agentd's way in) is the fd after them.
	Sockets int
	Names   []string
	// TTY gives the command a pty of Rows x Cols; else pipes.
	TTY        bool
	Rows, Cols int
	// Grace is how long the relay waits for a client to (re-)attach.
	Grace time.Duration
	// KillAfter is how long after SIGHUP the command's group is SIGKILLed.
	KillAfter time.Duration
	// Argv is the command.
	Argv []string
}

// Args is the argv that starts the relay with o from agentd's binary exe.
func Args(exe string, o Options) []string {
	out := []string{exe, Arg, "--sockets=" + strconv.Itoa(o.Sockets)}
	if len(o.Names) > 0 {
		out = append(out, "--names="+strings.Join(o.Names, ":"))
	}
	if o.TTY {
		out = append(out, fmt.Sprintf("--tty=%dx%d", o.Rows, o.Cols))
	}
	if o.Grace > 0 {
		out = append(out, "--grace="+o.Grace.String())
	}
	if o.KillAfter > 0 {
		out = append(out, "--kill-after="+o.KillAfter.String())
	}
	return append(append(out, "--"), o.Argv...)
}

// parseArgs reads the relay's options from os.Args[2:].
func parseArgs(args []string) (Options, error) {
	o := Options{Grace: DefaultGrace, KillAfter: DefaultKillAfter}
	end := slices.Index(args, "--")
	if end < 0 || end == len(args)-1 {
		return o, errors.New("no command (want OPTIONS -- COMMAND...)")
	}
	for _, a := range args[:end] {
		k, v, _ := strings.Cut(a, "=")
		var err error
		switch k {
		case "--sockets":
			o.Sockets, err = strconv.Atoi(v)
			if err == nil && (o.Sockets < 0 || o.Sockets > 1<<16) {
				err = errors.New("out of range")
			}
		case "--names":
			o.Names = strings.Split(v, ":")
		case "--tty":
			o.TTY = true
			r, c, ok := strings.Cut(v, "x")
			if !ok {
				err = errors.New("want ROWSxCOLS")
				break
			}
			if o.Rows, err = strconv.Atoi(r); err == nil {
				o.Cols, err = strconv.Atoi(c)
			}
		case "--grace":
			o.Grace, err = time.ParseDuration(v)
		case "--kill-after":
			o.KillAfter, err = time.ParseDuration(v)
		default:
			err = errors.New("unknown option")
		}
		if err != nil {
			return o, fmt.Errorf("bad relay option %q: %w", a, err)
		}
	}
	if len(o.Names) > 0 && len(o.Names) != o.Sockets {
		return o, fmt.Errorf("%d socket names for %d sockets", len(o.Names), o.Sockets)
	}
	o.Argv = args[end+1:]
	return o, nil
}
