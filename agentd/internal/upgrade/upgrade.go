// Package upgrade replaces a running agentd by a new one without closing a
// socket (tableflip): on SIGHUP or `hctl agent upgrade` the control socket
// and every app socket pass to a new agentd, which adopts the running app
// processes; the old agentd exits once the new one is ready. The apps never
// stop and no connection is refused.
//
// The agent decides what to hand over (Freezer); this package only moves
// the files and runs tableflip's protocol, and says so to systemd.
package upgrade

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// Timeout is how long the new agentd has to become ready.
const Timeout = 2 * time.Minute

// Freezer hands over what a new agentd needs: Freeze waits for the
// operations in progress, stops new ones and returns every socket by key;
// thaw undoes it when the upgrade fails, so that this agentd carries on.
type Freezer interface {
	Freeze() (files map[string]*os.File, thaw func())
}

// Upgrader is agentd's end of tableflip.
type Upgrader struct {
	t      *tableflip.Upgrader
	log    *slog.Logger
	notify func(state string) // sd_notify
	mu     sync.Mutex         // one upgrade at a time
	ready  chan struct{}      // closed by Ready
}

// New starts tableflip; with pidFile it writes agentd's PID there (and a
// new agentd its own). There is one per process.
func New(pidFile string, log *slog.Logger, notify func(string)) (*Upgrader, error) {
	t, err := tableflip.New(tableflip.Options{UpgradeTimeout: Timeout, PIDFile: pidFile})
	if err != nil {
		return nil, fmt.Errorf("upgrader: %w", err)
	}
	return &Upgrader{t: t, log: log, notify: notify, ready: make(chan struct{})}, nil
}

// Fds is where sockets pass from one agentd to the next, by key.
func (u *Upgrader) Fds() *tableflip.Fds { return u.t.Fds }

// Inherit returns the socket a previous agentd passed under key, or nil.
func (u *Upgrader) Inherit(key string) *os.File {
	f, err := u.t.Fds.File(key)
	if err != nil {
		u.log.Warn("inherited socket", "key", key, "err", err)
	}
	return f
}

// HasParent reports whether this agentd was started by an upgrade.
func (u *Upgrader) HasParent() bool { return u.t.HasParent() }

// Ready tells the previous agentd, if any, that this one serves: it exits.
func (u *Upgrader) Ready() error {
	if err := u.t.Ready(); err != nil {
		return fmt.Errorf("upgrader: %w", err)
	}
	close(u.ready)
	return nil
}

// Exit is closed when a new agentd is ready and owns the state and the
// sockets: this one must leave the apps running for it and exit.
func (u *Upgrader) Exit() <-chan struct{} { return u.t.Exit() }

// Stop ends tableflip without an upgrade.
func (u *Upgrader) Stop() { u.t.Stop() }

// Upgrade starts a new agentd with every socket f hands over, and returns
// once it runs (Exit follows when it is ready). On failure this agentd
// carries on as before and says so to systemd.
func (u *Upgrader) Upgrade(f Freezer) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.log.Info("upgrade: waiting for operations in progress, then starting a new agentd")
	u.notify("RELOADING=1\nSTATUS=upgrading: handing over to a new agentd")
	files, thaw := f.Freeze()
	for key, file := range files {
		if err := u.t.Fds.AddFile(key, file); err != nil {
			thaw()
			u.notify("READY=1\nSTATUS=upgrade failed, carrying on: " + err.Error())
			return fmt.Errorf("passing socket %s: %w", key, err)
		}
	}
	if err := u.t.Upgrade(); err != nil {
		thaw()
		u.log.Error("upgrade failed; this agentd carries on", "err", err)
		u.notify("READY=1\nSTATUS=upgrade failed, carrying on: " + err.Error())
		return err
	}
	return nil
}

// OnSIGHUP upgrades on every SIGHUP, for as long as agentd runs (systemd's
// ExecReload= sends one). A failed upgrade is logged by Upgrade.
//
// Call it before telling anyone agentd is ready: SIGHUP's default action
// ends the process, so one sent right after READY=1 (systemctl reload)
// would otherwise kill agentd. A SIGHUP that comes before Ready waits for
// it: there is no handing over before this agentd has taken over.
func (u *Upgrader) OnSIGHUP(f Freezer) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		<-u.ready
		for range hup {
			u.Upgrade(f)
		}
	}()
}
