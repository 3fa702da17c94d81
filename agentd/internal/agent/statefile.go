package agent

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/artifact"
	"github.com/agentd/agentd/agentd/internal/procfile"
	"github.com/agentd/agentd/agentd/internal/state"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/grammar"
	"github.com/agentd/agentd/sockets"
)

// One bad state file never stops the other apps. An app whose file cannot
// be read, parsed or trusted (checkAppState) is recovered from the
// previous generation of its file, or, when none is good, left broken:
// reported, not supervised, its processes never touched, until
// RepairApp rebuilds it from what runs.

// brokenApp is an app whose state file and its previous generation could
// not be used.
type brokenApp struct {
	file string
	err  error
	at   time.Time
}

// loadApp loads one app's state at start. Callers hold no lock; it runs
// before the agent serves.
func (ag *Agent) loadApp(name string) {
	a := &app{op: make(chan struct{}, 1), backoff: map[string]*time.Timer{}}
	path := ag.cfg.appFile(name)
	loaded, err := state.Load(path, &a.st, func() error { return checkAppState(&a.st, name) })
	var b *state.Broken
	if errors.As(err, &b) || err != nil {
		ag.broken[name] = &brokenApp{file: path, err: err, at: time.Now()}
		ag.log.Error("app state broken: the app is not supervised, its processes are left alone (hctl apps repair)",
			"app", name, "file", path, "err", err)
		return
	}
	if r := loaded.Recovered; r != nil {
		a.recovered = r
		ag.log.Warn("app state recovered from its previous generation", "app", name, "from", r.From,
			"quarantined", r.Quarantined, "lost_since", r.LostSince, "err", r.Err)
	}
	ag.apps[name] = a
	ag.recover(a)
}

// stateNote is what the API says of an app's state file: "recovered" with
// what was lost, or "" when it was read as written.
func (a *app) stateNote() (string, string) {
	r := a.recovered
	if r == nil {
		return "", ""
	}
	note := fmt.Sprintf("its state file was refused (%v); recovered from the previous generation, written %s: what changed since is lost",
		r.Err, r.LostSince.UTC().Format(time.RFC3339))
	if r.Quarantined != "" {
		note += "; the refused file is kept as " + r.Quarantined
	}
	return "recovered", note
}

func (b *brokenApp) api(name string) api.App {
	return api.App{Name: name, Formation: map[string]int{}, StateFile: "broken",
		StateNote: fmt.Sprintf("%s: %v; not supervised until repaired", b.file, b.err)}
}

// RepairApp brings a broken app back under supervision from what runs:
// its processes (found through /proc by AGENTD_APP), the code they run
// (their working directory), the sockets they hold, and their config (their
// environment). The processes are adopted, not restarted. The broken file
// is kept in the quarantine. Settings that only the lost file knew
// (timeouts, readiness, bake) are agentd's defaults again: the result says so.
func (ag *Agent) RepairApp(name string) (api.App, error) {
	ag.mu.Lock()
	b := ag.broken[name]
	ag.mu.Unlock()
	if b == nil {
		if _, err := ag.get(name); err == nil {
			return api.App{}, errf(api.CodeBadRequest, "app %s is not broken: nothing to repair", name)
		}
		return api.App{}, &Error{Code: api.CodeNotFound, Msg: fmt.Sprintf("no app named %q", name), Reason: api.ReasonNoSuchApp, App: name}
	}
	st, err := ag.rebuild(name)
	if err != nil {
		return api.App{}, err
	}
	if _, err := state.Quarantine(b.file, b.err); err != nil && !errors.Is(err, os.ErrNotExist) {
		return api.App{}, &Error{Code: api.CodeInternal, Msg: fmt.Sprintf("keeping the broken file of %s: %v", name, err), Err: err}
	}
	if err := state.WriteJSON(b.file, st); err != nil {
		return api.App{}, &Error{Code: api.CodeInternal, Msg: fmt.Sprintf("writing the state of %s: %v", name, err), Err: err}
	}
	ag.mu.Lock()
	delete(ag.broken, name)
	ag.loadApp(name)
	a := ag.apps[name]
	ag.mu.Unlock()
	if a == nil {
		return api.App{}, errf(api.CodeInternal, "app %s: the rebuilt state was refused too", name)
	}
	ag.log.Info("app repaired from its running processes", "app", name, "processes", len(st.Processes))
	a.mu.Lock()
	defer a.mu.Unlock()
	return ag.appAPI(a), nil
}

// runningOf is one process of an app as /proc shows it.
type runningOf struct {
	pid          int
	env          map[string]string
	dir          string
	typ, process string
	index        int
	release      int
}

// rebuild makes an app's state from its running processes.
func (ag *Agent) rebuild(name string) (*appState, error) {
	var found []runningOf
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pg, err := unix.Getpgid(pid); err != nil || pg != pid {
			continue // each process of an app leads its own group
		}
		env := procEnviron(pid)
		// This agentd's: its notify socket is under our runtime directory
		// (another agentd on the host may run an app of the same name).
		if env["AGENTD_APP"] != name || !strings.HasPrefix(env["NOTIFY_SOCKET"], ag.cfg.notifyDir()+"/") {
			continue
		}
		typ, index, err := grammar.ParseProcessName(env["AGENTD_PROCESS"])
		rel, rerr := grammar.ParseRelease(env["AGENTD_RELEASE"])
		dir, derr := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if strings.HasSuffix(dir, " (deleted)") {
			derr = fmt.Errorf("the code of pid %d was deleted", pid)
		}
		if err != nil || rerr != nil || derr != nil || index == 0 {
			continue
		}
		found = append(found, runningOf{pid: pid, env: env, dir: dir, typ: typ, process: env["AGENTD_PROCESS"], index: index, release: rel})
	}
	if len(found) == 0 {
		return nil, errf(api.CodeConflict, "app %s: no process of it runs to rebuild it from; destroy it and create it again (its broken file stays in the quarantine)", name)
	}
	st := &appState{Name: name, Formation: map[string]int{}, Readiness: map[string]string{},
		BootTimeout: duration(DefaultBootTimeout), DrainTimeout: duration(DefaultDrainTimeout),
		CreatedAt: time.Now().UTC(), Config: map[string]string{}}
	releases := map[int]*releaseState{}
	for _, f := range found {
		r := releases[f.release]
		if r == nil {
			digest, err := artifact.Digest(f.dir)
			if err != nil {
				return nil, errf(api.CodeInternal, "app %s: the code of %s in %s: %v", name, vname(f.release), f.dir, err)
			}
			pf, err := procfile.ParseFile(filepath.Join(f.dir, "Procfile"))
			if err != nil {
				return nil, errf(api.CodeInternal, "app %s: the Procfile of %s: %v", name, vname(f.release), err)
			}
			r = &releaseState{Version: f.release, Status: api.StatusRetired, Source: "repair", Digest: digest,
				Procfile: pf.Map(), Order: pf.Types(), Config: configOf(f.env), CreatedAt: time.Now().UTC(),
				Message: "rebuilt by hctl apps repair from its running processes"}
			releases[f.release] = r
		}
		if uid, ok := procUID(f.pid); ok && uid != os.Geteuid() && st.User == "" {
			if u, err := lookupUID(uid); err == nil {
				st.User = u
			}
		} else if ok && uid == 0 {
			st.AllowRoot = true
		}
		start, _ := supervisor.StartTime(f.pid)
		st.Processes = append(st.Processes, procRecord{Name: f.process, Type: f.typ, Index: f.index, Release: f.release,
			PID: f.pid, StartedAt: start, State: api.StateReady, Notify: f.env["NOTIFY_SOCKET"],
			Log: filepath.Join(ag.cfg.logsDir(), name, vname(f.release)+"."+f.process+".log")})
	}
	versions := slices.Sorted(maps.Keys(releases))
	active := versions[len(versions)-1]
	for _, v := range versions {
		st.Releases = append(st.Releases, releases[v])
	}
	releases[active].Status = api.StatusActive
	st.Active, st.LastVersion = active, active
	st.Config = maps.Clone(releases[active].Config)
	// The formation is what runs of the active release; its sockets, what
	// its processes were given.
	seen := map[string]bool{}
	var why []string
	for _, f := range found {
		if f.release != active {
			continue
		}
		st.Formation[f.typ] = max(st.Formation[f.typ], f.index)
		names, _ := sockets.ParseFDNames(f.env["LISTEN_FDNAMES"], strings.Count(f.env["LISTEN_FDNAMES"], ":")+1)
		// An app moves its fds (go-systemd dups each into a listener and
		// closes the original), so its sockets are found among all its
		// listening sockets; the one on $PORT is the first that agentd
		// passed (procEnv sets PORT from it), the probe is the one left.
		listening, err := listeningSockets(f.pid)
		if err != nil {
			why = append(why, fmt.Sprintf("%s (pid %d): %v", f.process, f.pid, err))
			continue
		}
		var want []string
		for _, n := range names {
			if n != "probe" {
				want = append(want, n)
			}
		}
		port := ":" + f.env["PORT"]
		slices.SortStableFunc(listening, func(x, y string) int {
			switch {
			case f.env["PORT"] != "" && strings.HasSuffix(x, port) && !strings.HasSuffix(y, port):
				return -1
			case f.env["PORT"] != "" && strings.HasSuffix(y, port) && !strings.HasSuffix(x, port):
				return 1
			}
			return 0
		})
		for i, n := range want {
			if i >= len(listening) || seen[n] {
				continue
			}
			addr := listening[i]
			spec, err := sockets.ParseSpec(fmt.Sprintf("%s/%s=%s", f.typ, n, addr))
			if err != nil {
				why = append(why, fmt.Sprintf("%s (pid %d) %s: %v", f.process, f.pid, addr, err))
				continue
			}
			seen[n] = true
			st.Sockets = append(st.Sockets, spec)
			st.Bound = append(st.Bound, spec.Address)
		}
	}
	if len(st.Sockets) == 0 {
		return nil, errf(api.CodeConflict, "app %s: its running processes hold no socket agentd could take back (%d of them, of %s: %s)",
			name, len(found), vname(active), strings.Join(why, "; "))
	}
	if err := checkAppState(st, name); err != nil {
		return nil, errf(api.CodeInternal, "app %s: the state rebuilt from its processes does not hold together: %v", name, err)
	}
	return st, nil
}

// procEnviron reads a process's environment.
func procEnviron(pid int) map[string]string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil
	}
	env := map[string]string{}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	return env
}

// configOf is the config vars in a process's environment: what agentd
// did not set itself.
func configOf(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		switch k {
		case "PATH", "LANG", "HOME", "USER", "LOGNAME", "TMPDIR":
			continue
		}
		if grammar.Reserved(k) {
			continue
		}
		out[k] = v
	}
	return out
}

func procUID(pid int) (int, bool) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d", pid), &st); err != nil {
		return 0, false
	}
	return int(st.Uid), true
}

// listeningSockets lists the addresses of the listening sockets pid holds,
// as a socket spec's ADDR, in the order of its fds, each socket once.
func listeningSockets(pid int) ([]string, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	var nums []int
	for _, e := range fds {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	var out []string
	seen := map[string]bool{}
	for _, n := range nums {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, n))
		if err != nil || !strings.HasPrefix(link, "socket:") || seen[link] {
			continue
		}
		addr, err := listeningAddr(pfd, n)
		if err != nil {
			continue
		}
		seen[link] = true
		out = append(out, addr)
	}
	return out, nil
}

// listeningAddr is the address of fd of the process behind pidfd when it
// is a listening socket.
func listeningAddr(pidfd, fd int) (string, error) {
	cp, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(cp)
	if v, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 {
		return "", fmt.Errorf("fd %d: not listening", fd)
	}
	sa, err := unix.Getsockname(cp)
	if err != nil {
		return "", err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return fmt.Sprintf("tcp://%s:%d", net.IP(a.Addr[:]).String(), a.Port), nil
	case *unix.SockaddrInet6:
		return fmt.Sprintf("tcp6://[%s]:%d", net.IP(a.Addr[:]).String(), a.Port), nil
	case *unix.SockaddrUnix:
		return "unix://" + a.Name, nil
	}
	return "", fmt.Errorf("fd %d: not a socket agentd binds", fd)
}

func lookupUID(uid int) (string, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

// destroyBroken forgets a broken app: its file goes to the quarantine (it
// is kept, as every refused file is); its processes, which agentd never
// supervised, are left alone: they are the operator's to stop.
func (ag *Agent) destroyBroken(name, confirm string, b *brokenApp) error {
	if confirm != name {
		return &Error{Code: api.CodeBadRequest, Msg: fmt.Sprintf("destroying %s stops it and deletes its releases: confirm by repeating its name", name), Reason: api.ReasonConfirm, App: name}
	}
	if _, err := state.Quarantine(b.file, b.err); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &Error{Code: api.CodeInternal, Msg: fmt.Sprintf("keeping the broken file of %s: %v", name, err), Err: err}
	}
	os.Remove(state.Prev(b.file))
	ag.mu.Lock()
	delete(ag.broken, name)
	ag.mu.Unlock()
	ag.log.Info("broken app destroyed", "app", name)
	return nil
}
