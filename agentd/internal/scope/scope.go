// Package scope puts the processes of each release of an app into a
// systemd scope unit of their own, agentd-APP-vN.scope, through systemd's
// D-Bus API (its private socket: no dbus-daemon needed).
//
// Why: under systemd every process agentd starts would otherwise live in
// agentd.service's cgroup, mixed with agentd and every other app. A scope per
// release gives `systemctl status agentd-shop-v7.scope` (the release's
// process tree, memory, CPU, tasks), resource accounting per release, a
// SIGKILL at the end of a drain that reaches every process the release
// started (double-forked daemons included, which a process-group kill
// misses), and an orderly stop of the apps at shutdown: systemd stops each
// scope (SIGTERM to its processes, which drain), after agentd, instead of
// systemd-shutdown's kill-everything at the very end.
//
// A scope can only be created from processes that exist, so a process is
// started held (the exec shim waits on a pipe), placed, then let go: nothing
// it forks can land outside the scope.
package scope

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Unit is the scope unit of release version of app.
func Unit(app string, version int) string {
	return fmt.Sprintf("agentd-%s-v%d.scope", app, version)
}

// Manager creates scopes and moves processes into them.
type Manager struct {
	conn *sdbus.Conn
	// Scopes known to exist: their next processes are attached, not
	// created. A scope that emptied is gone (systemd collects it); a
	// failed attach falls back to creating it again.
	mu    sync.Mutex
	known map[string]bool
}

// callTimeout bounds each D-Bus call: a process is held until its
// placement ends, and must never be held for long.
const callTimeout = 10 * time.Second

// Connect connects to systemd (root only: /run/systemd/private). The
// connection lives as long as ctx: godbus closes it when ctx ends.
func Connect(ctx context.Context) (*Manager, error) {
	c, err := sdbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to systemd over D-Bus: %w", err)
	}
	// systemd sends JobRemoved (the end of a scope's start job) to every
	// client of its private socket; Subscribe makes sure of it.
	if err := c.Subscribe(); err != nil {
		c.Close()
		return nil, fmt.Errorf("subscribing to systemd's signals: %w", err)
	}
	return &Manager{conn: c, known: map[string]bool{}}, nil
}

// Close closes the connection.
func (m *Manager) Close() { m.conn.Close() }

// Options describe a scope when it is created.
type Options struct {
	// Description is shown by systemctl status.
	Description string
	// StopTimeout is how long systemd waits, when it stops the scope (at
	// shutdown), between its SIGTERM and its SIGKILL: the app's drain
	// timeout and a little more.
	StopTimeout time.Duration
	// Before orders the scope's stop after these units' stop: at
	// shutdown, agentd.service exits first, so that it does not take the
	// apps' exits for crashes and start them again.
	Before []string
	// After orders the scope's stop before these units' stop.
	After []string
}

// Place moves pid into the scope unit, creating the scope if needed, and
// returns when the process is in it.
func (m *Manager) Place(ctx context.Context, unit string, pid int, o Options) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	m.mu.Lock()
	known := m.known[unit]
	m.mu.Unlock()
	if known {
		if err := m.attach(ctx, unit, pid); err == nil {
			return nil
		}
	}
	err := m.create(ctx, unit, pid, o)
	if isExists(err) {
		err = m.attach(ctx, unit, pid)
	}
	m.mu.Lock()
	m.known[unit] = err == nil
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("placing pid %d in %s: %w", pid, unit, err)
	}
	return nil
}

func (m *Manager) attach(ctx context.Context, unit string, pid int) error {
	return m.conn.AttachProcessesToUnit(ctx, unit, "", []uint32{uint32(pid)})
}

// create starts the scope with pid in it and waits for the start job: the
// PID moves into the scope's cgroup when the job runs.
func (m *Manager) create(ctx context.Context, unit string, pid int, o Options) error {
	props := []sdbus.Property{
		sdbus.PropDescription(o.Description),
		sdbus.PropPids(uint32(pid)),
		// Gone once empty, failed or not: a release's scope is not reused
		// after its processes ended, and a later crash restart creates it
		// again.
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
		// systemd moves processes into a running unit
		// (AttachProcessesToUnit: the release's next processes) only when
		// the unit is delegated ("Process migration not available on
		// non-delegated units"). agentd creates no sub-cgroups in it.
		{Name: "Delegate", Value: dbus.MakeVariant(true)},
	}
	if o.StopTimeout > 0 {
		props = append(props, sdbus.Property{Name: "TimeoutStopUSec", Value: dbus.MakeVariant(uint64(o.StopTimeout / time.Microsecond))})
	}
	if len(o.Before) > 0 {
		props = append(props, sdbus.PropBefore(o.Before...))
	}
	if len(o.After) > 0 {
		props = append(props, sdbus.PropAfter(o.After...))
	}
	done := make(chan string, 1)
	if _, err := m.conn.StartTransientUnitContext(ctx, unit, "fail", props, done); err != nil {
		return err
	}
	select {
	case res := <-done:
		if res != "done" {
			return fmt.Errorf("start job of %s: %s", unit, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("start job of %s: %w", unit, ctx.Err())
	}
}

// isExists reports systemd's "Unit X already exists." error.
func isExists(err error) bool {
	var de dbus.Error
	return errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.UnitExists"
}

// Kill sends sig to every process left in the scope unit. A scope that no
// longer exists (it emptied) is not an error.
func (m *Manager) Kill(ctx context.Context, unit string, sig syscall.Signal) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	err := m.conn.KillUnitWithTarget(ctx, unit, sdbus.All, int32(sig))
	var de dbus.Error
	if errors.As(err, &de) && (de.Name == "org.freedesktop.systemd1.NoSuchUnit" || de.Name == "org.freedesktop.systemd1.UnitInactive") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s to %s: %w", sig, unit, err)
	}
	return nil
}
