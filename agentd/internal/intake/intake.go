// Package intake takes what systemd hands agentd when it starts: the
// sockets passed by name (agentd.socket's control socket, app sockets from
// socket units and from the fd store), and whether systemd supervises
// agentd at all (NOTIFY_SOCKET). It also parks sockets agentd bound itself
// in the fd store, so that they outlive a restart of agentd.
//
// It exists apart from the agent so that the agent never looks at
// LISTEN_FDS or the environment: it is handed a Claim function and, under
// systemd, Store and Unstore, and works the same with or without systemd.
package intake

import (
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/agentd/agentd/sockets"
)

// Modes: how agentd runs, as the agent reports it in status.
const (
	ModeSystemd  = "systemd"  // a service of systemd's, which listens for sd_notify
	ModeEmbedded = "embedded" // started by hand, a test or any other supervisor
)

// ControlName is the LISTEN_FDNAMES name of the control socket
// (agentd.socket's FileDescriptorName=).
const ControlName = "control"

// Intake is what systemd passed. Every other socket is an app socket named
// APP.NAME, claimed when its app is loaded or created, and kept meanwhile.
type Intake struct {
	// Mode is ModeSystemd when NOTIFY_SOCKET is set, else ModeEmbedded.
	Mode string
	// Control is the control socket systemd passed, or nil.
	Control *os.File

	log  *slog.Logger
	mu   sync.Mutex
	pool map[string]*os.File // app sockets not yet claimed, by fd name
}

// Take reads the environment and takes the passed sockets (with
// FD_CLOEXEC set, and the LISTEN_* variables cleared).
func Take(log *slog.Logger) (*Intake, error) {
	in := &Intake{Mode: ModeEmbedded, log: log, pool: map[string]*os.File{}}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		in.Mode = ModeSystemd
	}
	activated, err := sockets.TakeActivated()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	for _, a := range activated {
		if a.Name == ControlName {
			in.Control = a.File
		} else {
			in.pool[a.Name] = a.File
		}
	}
	return in, nil
}

// Claim hands over the passed socket named name (APP.NAME), or nil; a
// socket is handed over once.
func (in *Intake) Claim(name string) *os.File {
	in.mu.Lock()
	defer in.mu.Unlock()
	f := in.pool[name]
	delete(in.pool, name)
	return f
}

// WarnUnclaimed logs each passed socket no app has claimed. They are kept,
// not closed: an app created later with that name gets it.
func (in *Intake) WarnUnclaimed() {
	in.mu.Lock()
	defer in.mu.Unlock()
	for name := range in.pool {
		in.log.Warn("socket from systemd matches no app yet; kept for an app of that name", "fdname", name)
	}
}

// FDStore returns the functions that park a socket in systemd's fd store
// and remove it again, or nil ones when systemd does not supervise agentd.
// Failures are logged: the socket still serves, it only would not outlive
// a restart of agentd.
func (in *Intake) FDStore() (store func(name string, f *os.File), unstore func(name string)) {
	if in.Mode != ModeSystemd {
		return nil, nil
	}
	store = func(name string, f *os.File) {
		if err := sockets.Store(name, f); err != nil {
			in.log.Warn("fd store", "socket", name, "err", err)
		}
	}
	unstore = func(name string) {
		if err := sockets.Unstore(name); err != nil {
			in.log.Warn("fd store", "socket", name, "err", err)
		}
	}
	return store, unstore
}
