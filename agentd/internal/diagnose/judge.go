package diagnose

import (
	"fmt"
	"strings"
)

// The traps, as carried in a Finding (and in the API's error Reason).
const (
	// ProbeNotAccepted: the process serves its app sockets but never
	// accepts on the private probe socket of an http or tcp readiness.
	ProbeNotAccepted = "probe_not_accepted"
	// SocketClosed: no process of the group holds a socket it was given.
	SocketClosed = "socket_closed"
	// ListenPIDRefused: the fds went to a process that LISTEN_PID does not
	// name (a shell forked it), so it ignores them.
	ListenPIDRefused = "listen_pid_refused"
	// OwnSocket: the process listens on a socket it bound itself, not on
	// those it was given.
	OwnSocket = "own_socket"
	// NotServed: the process waits on other files, never on the sockets
	// it was given (a likely cause only: it may still be booting).
	NotServed = "not_served"
)

// Input is what the judge knows of the process besides what a look saw.
type Input struct {
	Process string   // "web.1"
	Type    string   // "web"
	Passed  []Socket // every socket passed, in fd order, the probe included
	// Probe is the private readiness socket among Passed, if any.
	Probe *Socket
	// ProbeQueued is how many connections wait, unaccepted, on the probe.
	ProbeQueued int
}

// Finding is a trap the judge saw.
type Finding struct {
	Trap string
	// Certain: as it is, the process can never become ready, however long
	// it is given (a caller still waits for it to stay so a moment: a
	// process may take its sockets one after the other). Otherwise it is
	// the likely cause, to name when readiness failed.
	Certain bool
	// Msg says what agentd saw and the fix, in one line, naming the
	// process first.
	Msg string
}

func (in Input) fdNames() string {
	var n []string
	for _, s := range in.Passed {
		n = append(n, s.Name)
	}
	return strings.Join(n, ":")
}

const serveAll = "serve every fd from 3 to 3+LISTEN_FDS-1"

// Judge returns the trap s shows, if any.
func Judge(in Input, s Seen) (Finding, bool) {
	if s.Members == 0 {
		return Finding{}, false
	}
	var app []Socket // the app's own sockets, the probe left out
	polled := false
	for _, p := range in.Passed {
		if in.Probe == nil || p.Inode != in.Probe.Inode {
			app = append(app, p)
		}
		polled = polled || s.Polled[p.Inode]
	}
	for _, p := range in.Passed {
		if !s.Held[p.Inode] {
			what := "its socket " + p.Name
			if in.Probe != nil && p.Inode == in.Probe.Inode {
				what = "its probe socket"
			}
			return Finding{Trap: SocketClosed, Certain: true, Msg: fmt.Sprintf(
				"%s closed %s, fd %d (LISTEN_FDNAMES=%s), and no process of its group holds it: it can never serve it; "+
					"keep and %s (a wrapper that closes inherited fds, such as close_fds or a process manager, loses them)",
				in.Process, what, p.FD, in.fdNames(), serveAll)}, true
		}
	}
	if f := s.Forked; f != nil && !polled && len(in.Passed) > 0 {
		what := "ignores them"
		if len(s.Own) > 0 {
			what = "ignores them and listens on " + s.Own[0] + " itself"
		}
		return Finding{Trap: ListenPIDRefused, Certain: len(s.Own) > 0 && s.Epoll, Msg: fmt.Sprintf(
			"%s: LISTEN_PID=%d names %s, but the fds went to its child, pid %d (%s), which %s (LISTEN_PID is not its pid, "+
				"as sd_listen_fds checks): the command forks; run the server as the command's only process, "+
				"with exec (\"%s: exec CMD\"), so that it keeps the pid agentd started",
			in.Process, f.ListenPID, procName(f.ListenPID, f.ListenComm), f.PID, f.Comm, what, in.Type)}, true
	}
	if len(s.Own) > 0 && len(app) > 0 && !polled && s.Epoll {
		return Finding{Trap: OwnSocket, Certain: true, Msg: fmt.Sprintf(
			"%s listens on %s, a socket it bound itself, and not on the socket agentd passed it (%s, fd %d, LISTEN_FDNAMES=%s): "+
				"%s instead of binding a port",
			in.Process, s.Own[0], app[0].Name, app[0].FD, in.fdNames(), serveAll)}, true
	}
	if in.Probe != nil && !s.Polled[in.Probe.Inode] && polled && in.ProbeQueued > 0 {
		return Finding{Trap: ProbeNotAccepted, Certain: true, Msg: fmt.Sprintf(
			"%s never accepted on its probe socket, fd %d (LISTEN_FDNAMES=%s): %s, or make %s's readiness notify",
			in.Process, in.Probe.FD, in.fdNames(), serveAll, in.Type)}, true
	}
	if len(app) > 0 && !polled && s.Epoll {
		return Finding{Trap: NotServed, Msg: fmt.Sprintf(
			"%s waits on other files but never on the sockets agentd passed it (LISTEN_FDNAMES=%s): %s",
			in.Process, in.fdNames(), serveAll)}, true
	}
	return Finding{}, false
}

func procName(pid int, comm string) string {
	if comm == "" {
		return fmt.Sprintf("pid %d", pid)
	}
	return fmt.Sprintf("pid %d (%s)", pid, comm)
}
