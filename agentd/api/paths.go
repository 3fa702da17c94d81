package api

import (
	"os"
	"path/filepath"
	"strconv"
)

// DefaultSocketPath is where agentd listens and hctl connects when neither
// is told otherwise: /run/agentd/agentd.sock for root, else
// $XDG_RUNTIME_DIR/agentd/agentd.sock (or /tmp/agentd-UID/agentd.sock when
// XDG_RUNTIME_DIR is unset).
func DefaultSocketPath() string {
	return filepath.Join(DefaultRuntimeDir(), "agentd.sock")
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
