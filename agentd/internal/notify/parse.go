// Package notify implements the receiving side of the sd_notify(3) readiness
// protocol for app processes run by agentd.
//
// agentd binds one notify socket per app process and hands its path to that
// process only, as NOTIFY_SOCKET. The socket a datagram arrives on therefore
// identifies the process, and the SCM_CREDENTIALS PID is informational only:
// it cannot be trusted for identity because `systemd-notify` reports its
// *parent's* PID, any child of the app may send on its behalf, and a PID can
// be reused once the process that owned it has exited (the PID race systemd
// itself works around with NotifyAccess= and cgroup checks).
package notify

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxMessageSize is the largest datagram accepted. systemd's manager uses the
// same bound (PIPE_BUF); real notifications are a few dozen bytes.
const MaxMessageSize = 4096

var (
	// ErrTooLarge is returned by Parse for a datagram over MaxMessageSize.
	ErrTooLarge = errors.New("notify: message larger than 4096 bytes")
	// ErrNUL is returned by Parse for a datagram with an embedded NUL byte,
	// which systemd also rejects: sd_notify messages are C strings.
	ErrNUL = errors.New("notify: message contains a NUL byte")
)

// Message is one parsed sd_notify datagram.
type Message struct {
	Ready, Stopping, Reloading, Watchdog bool

	Status        string            // STATUS=
	ExtendTimeout time.Duration     // EXTEND_TIMEOUT_USEC=
	MainPID       int               // MAINPID=
	Errno         int               // ERRNO=
	Fields        map[string]string // every KEY=VALUE, raw
	SenderPID     int               // from SCM_CREDENTIALS, 0 if absent
	Barrier       bool              // BARRIER=1
	// WatchdogTrigger: WATCHDOG=trigger, the service's own "I am broken"
	// (systemd ≥ 249).
	WatchdogTrigger bool
}

// important reports whether m carries a state change that must reach the
// consumer even when the queue overflows.
func (m *Message) important() bool { return m.Ready || m.Stopping || m.Reloading }

// kind groups important messages for de-duplication under overflow.
func (m *Message) kind() int {
	k := 0
	if m.Ready {
		k |= 1
	}
	if m.Stopping {
		k |= 2
	}
	if m.Reloading {
		k |= 4
	}
	return k
}

// Parse parses a datagram: newline-separated KEY=VALUE assignments (see
// sd_notify(3)). Lines without '=' (or with an empty key) are ignored and
// unknown keys are kept in Fields. As in systemd, flags such as READY=1 count
// if any line says so, while for a key given twice the first value wins
// (systemd looks values up with strv_find_startswith). A malformed number or
// a STATUS that is not UTF-8 is ignored, as systemd ignores it, rather than
// failing the whole message: a bad MAINPID must not hide READY=1. Parse fails
// only for datagrams over MaxMessageSize or containing NUL.
func Parse(b []byte) (Message, error) {
	if len(b) > MaxMessageSize {
		return Message{}, ErrTooLarge
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return Message{}, ErrNUL
	}
	m := Message{Fields: make(map[string]string)}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		switch line {
		case "READY=1":
			m.Ready = true
		case "STOPPING=1":
			m.Stopping = true
		case "RELOADING=1":
			m.Reloading = true
		case "WATCHDOG=1":
			m.Watchdog = true
		case "BARRIER=1":
			m.Barrier = true
		case "WATCHDOG=trigger":
			m.WatchdogTrigger = true
		}
		if _, dup := m.Fields[k]; dup {
			continue
		}
		m.Fields[k] = v
		switch k {
		case "STATUS":
			if utf8.ValidString(v) {
				m.Status = v
			}
		case "EXTEND_TIMEOUT_USEC":
			if us, err := strconv.ParseUint(v, 10, 64); err == nil {
				m.ExtendTimeout = usecToDuration(us)
			}
		case "MAINPID":
			if pid, err := strconv.ParseInt(v, 10, 32); err == nil && pid > 0 {
				m.MainPID = int(pid)
			}
		case "ERRNO":
			if e, err := strconv.ParseInt(v, 10, 32); err == nil && e >= 0 {
				m.Errno = int(e)
			}
		}
	}
	return m, nil
}

// statusOf reports the STATUS= of m and whether it was validly set, so an
// explicit empty "STATUS=" (which clears the status) is told apart from none.
func statusOf(m *Message) (string, bool) {
	v, ok := m.Fields["STATUS"]
	if !ok || !utf8.ValidString(v) {
		return "", false
	}
	return v, true
}

// usecToDuration converts microseconds, saturating instead of overflowing
// (systemd treats huge values as "infinity").
func usecToDuration(us uint64) time.Duration {
	if us > uint64(math.MaxInt64/int64(time.Microsecond)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(us) * time.Microsecond
}
