package api

import (
	"os"
	"path/filepath"
	"strconv"
)

// SystemSocketPath is the control socket of agentd run as a system service.
const SystemSocketPath = "/run/agentd/agentd.sock"

// DefaultSocketPath is where agentd listens and hctl connects when neither
// is told otherwise: /run/agentd/agentd.sock for root, else
// $XDG_RUNTIME_DIR/agentd/agentd.sock (or /tmp/agentd-UID/agentd.sock when
// XDG_RUNTIME_DIR is unset).
func DefaultSocketPath() string {
	return filepath.Join(DefaultRuntimeDir(), "agentd.sock")
}

// ClientSocketPath is where hctl looks when not told: the per-user agentd's
// socket if one runs, else the system agentd's (a member of the agentd
// group using the service needs no HCTL_SOCKET).
func ClientSocketPath() string {
	p := DefaultSocketPath()
	if _, err := os.Stat(p); err != nil {
		if _, err := os.Stat(SystemSocketPath); err == nil {
			return SystemSocketPath
		}
	}
	return p
}

// DefaultRuntimeDir is the directory for agentd's sockets.
func DefaultRuntimeDir() string {
	if os.Geteuid() == 0 {
		return "/run/agentd"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "agentd")
	}
	return filepath.Join(os.TempDir(), "agentd-"+strconv.Itoa(os.Geteuid()))
}

// DefaultStateDir is /var/lib/agentd for root, else
// $XDG_STATE_HOME/agentd (~/.local/state/agentd).
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/agentd"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "agentd")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "agentd-state-"+strconv.Itoa(os.Geteuid()))
	}
	return filepath.Join(home, ".local", "state", "agentd")
}
