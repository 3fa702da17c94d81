// Package journal sends app processes' output to the systemd journal,
// one entry per line, with fields that say whose line it is:
// AGENTD_APP, AGENTD_RELEASE, AGENTD_PROCESS, SYSLOG_IDENTIFIER (the app)
// and SYSLOG_PID. It speaks journald's native protocol (through
// go-systemd), the only one that carries fields of our own: the stream
// protocol has a fixed header.
package journal

import (
	"fmt"
	"os"
	"strconv"

	"github.com/coreos/go-systemd/v22/journal"
)

// Socket is journald's native socket.
const Socket = "/run/systemd/journal/socket"

// Writer sends lines to the journal.
type Writer struct {
	send func(msg string, vars map[string]string) error
}

// Open returns a Writer according to mode: "on" (fails without a journal),
// "off" (nil), or "auto" (a Writer when journald's socket is there, else
// nil).
func Open(mode string) (*Writer, error) {
	switch mode {
	case "off":
		return nil, nil
	case "on", "auto":
	default:
		return nil, fmt.Errorf("--journal %q: want auto, on or off", mode)
	}
	fi, err := os.Stat(Socket)
	if err != nil || fi.Mode().Type() != os.ModeSocket || !journal.Enabled() {
		if mode == "on" {
			return nil, fmt.Errorf("--journal on: journald's socket %s is not there", Socket)
		}
		return nil, nil
	}
	return &Writer{send: func(msg string, vars map[string]string) error {
		return journal.Send(msg, journal.PriInfo, vars)
	}}, nil
}

// Origin says whose output a line is.
type Origin struct {
	App     string
	Release string // "v3"
	Process string // "web.1", "release"
	PID     int
}

// Line sends one line of output.
func (w *Writer) Line(o Origin, line string) error {
	vars := map[string]string{
		"SYSLOG_IDENTIFIER": o.App,
		"AGENTD_APP":        o.App,
		"AGENTD_RELEASE":    o.Release,
		"AGENTD_PROCESS":    o.Process,
	}
	if o.PID > 0 {
		vars["SYSLOG_PID"] = strconv.Itoa(o.PID)
	}
	if err := w.send(line, vars); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}
