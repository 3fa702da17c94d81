// Package watchdog keeps systemd told how agentd is, over sd_notify:
// READY=1 once agentd serves, STATUS= lines, and the WATCHDOG=1 keep-alive,
// fed from a loop that takes every lock a request takes. A deadlocked
// agentd therefore stops feeding the watchdog and systemd restarts it,
// which the apps survive, rather than it hanging with nobody noticing.
//
// Outside systemd (no NOTIFY_SOCKET) every call does nothing, so the
// daemon's code never asks which mode it runs in.
package watchdog

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/agentd/agentd/sockets"
)

// Notifier sends sd_notify states when systemd listens for them.
type Notifier struct {
	enabled bool
	log     *slog.Logger
}

// NewNotifier returns a Notifier that sends when enabled (agentd runs as a
// systemd service) and otherwise does nothing.
func NewNotifier(enabled bool, log *slog.Logger) *Notifier {
	return &Notifier{enabled: enabled, log: log}
}

// Notify sends state, such as "RELOADING=1\nSTATUS=…". A failure is
// logged, not returned: systemd not hearing a status is no reason to stop.
func (n *Notifier) Notify(state string) {
	if !n.enabled {
		return
	}
	if err := sockets.Notify(state); err != nil {
		n.log.Warn("sd_notify", "err", err)
	}
}

// Ready says READY=1 with status as STATUS=, once state is loaded, every
// socket held and the API serving. A new agentd after an upgrade
// (upgraded) also tells systemd its PID, and must do so before the old one
// exits: systemd must never see the unit without a main process. The
// watchdog is then the new agentd's to feed (WATCHDOG_PID).
func (n *Notifier) Ready(status string, upgraded bool) {
	if !upgraded {
		n.Notify("READY=1\nSTATUS=" + status)
		return
	}
	if os.Getenv("WATCHDOG_USEC") != "" {
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}
	n.Notify(fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=%s", os.Getpid(), status))
}

// Agent is what the loop checks: Ping takes every lock a request takes and
// returns; Summary is the one-line STATUS=.
type Agent interface {
	Ping()
	Summary() string
}

// Supervise feeds systemd's watchdog (at half its interval, at most every
// 5 s) and keeps STATUS= current, until ctx ends. It returns at once when
// systemd does not listen.
func (n *Notifier) Supervise(ctx context.Context, ag Agent) {
	if !n.enabled {
		return
	}
	interval := 5 * time.Second
	wd, err := daemon.SdWatchdogEnabled(false)
	if err == nil && wd > 0 {
		interval = min(interval, wd/2)
	}
	last := ""
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ag.Ping()
		msg := ""
		if wd > 0 {
			msg = "WATCHDOG=1"
		}
		if s := ag.Summary(); s != last {
			last = s
			msg += "\nSTATUS=" + s
		}
		if msg != "" {
			n.Notify(strings.TrimPrefix(msg, "\n"))
		}
	}
}
