package agent

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/relay"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/grammar"
	"github.com/agentd/agentd/sockets"
)

// One-off processes (`hctl run`). Each is a relay process (package relay)
// that agentd starts, records and adopts like any process, and that is the
// parent of the command: the pty or pipes and the exit status live there,
// not in agentd. agentd only passes the run stream's frames between the
// client and the relay's socket (Pump). A run is listed as run.N but is
// no part of the formation: the rollout engine never sees it (host.Live),
// and deploys never retire it.

// runRecord is what a restarted agentd needs to adopt a run.
type runRecord struct {
	procRecord
	// Relay is the path of the relay's socket, where a client re-attaches.
	Relay string `json:"relay"`
}

// runInfo marks a proc as a one-off process.
type runInfo struct {
	relay string // its socket
}

// runGrace is the relay's re-attach window (see package relay); hctl
// retries for less than that.
var runGrace = relay.DefaultGrace

func (ag *Agent) runsDir() string { return filepath.Join(ag.cfg.RuntimeDir, "runs") }

// StartRun starts a one-off process of app and returns a connection to its
// relay: the run stream (package api) of the new process run.N. Bad input
// (unknown app, no active release, unknown release or type, bad variables)
// is refused before anything changes.
func (ag *Agent) StartRun(name string, req api.RunRequest) (api.RunInfo, io.ReadWriteCloser, error) {
	a, err := ag.get(name)
	if err != nil {
		return api.RunInfo{}, nil, err
	}
	if len(req.Command) == 0 || req.Command[0] == "" {
		return api.RunInfo{}, nil, errf(api.CodeBadRequest, "no command to run")
	}
	extra := map[string]string{}
	for _, kv := range req.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return api.RunInfo{}, nil, errf(api.CodeBadRequest, "bad variable %q: want KEY=VALUE", kv)
		}
		if err := grammar.CheckSettableConfigKey(k); err != nil {
			return api.RunInfo{}, nil, errf(api.CodeBadRequest, "bad variable %q: %v", k, err)
		}
		if err := grammar.CheckConfigValue(k, v); err != nil {
			return api.RunInfo{}, nil, errf(api.CodeBadRequest, "bad variable %q: %v", k, err)
		}
		extra[k] = v
	}
	if ag.frozen.Load() {
		return api.RunInfo{}, nil, errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade): try again")
	}

	a.mu.Lock()
	r, err := ag.oneOffRelease(a, req)
	if err != nil {
		a.mu.Unlock()
		return api.RunInfo{}, nil, err
	}
	var files []*os.File
	var names []string
	if req.Type != "" {
		for _, h := range a.held {
			if h.Spec.Type == req.Type {
				files = append(files, h.File)
				names = append(names, h.Spec.Name)
			}
		}
	}
	a.st.LastRun++
	index := a.st.LastRun
	pr := &proc{typ: "run", index: index, release: r.Version, state: api.StateRunning,
		extend: make(chan time.Duration, 1)}
	procName := pr.name()
	env, err := ag.procEnv(a, r, procName)
	userName := a.st.User
	shimOpt := a.shimOptions(len(files))
	drainTimeout := time.Duration(a.st.DrainTimeout)
	a.mu.Unlock()
	if err != nil {
		return api.RunInfo{}, nil, err
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	cred, err := credential(userName)
	if err != nil {
		return api.RunInfo{}, nil, err
	}
	dir, err := ag.codeDir(a, r)
	if err != nil {
		return api.RunInfo{}, nil, err
	}

	// The relay's socket: bound here, its fd passed to the relay, its path
	// kept for re-attaching. The directory is agentd's alone.
	if err := os.MkdirAll(ag.runsDir(), 0o700); err != nil {
		return api.RunInfo{}, nil, fmt.Errorf("runs directory: %w", err)
	}
	sockPath := filepath.Join(ag.runsDir(), name+"-"+procName+"-"+randomID()+".sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sockPath, Net: "unix"})
	if err != nil {
		return api.RunInfo{}, nil, fmt.Errorf("relay socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	lf, err := ln.File()
	ln.Close()
	if err != nil {
		os.Remove(sockPath)
		return api.RunInfo{}, nil, fmt.Errorf("relay socket: %w", err)
	}
	defer lf.Close()

	logDir := filepath.Join(ag.cfg.logsDir(), a.st.Name)
	os.MkdirAll(logDir, 0o750)
	pr.log = filepath.Join(logDir, vname(r.Version)+"."+procName+".log")
	out, err := os.OpenFile(pr.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		os.Remove(sockPath)
		return api.RunInfo{}, nil, fmt.Errorf("log file for %s: %w", procName, err)
	}
	defer out.Close()

	argv := req.Command
	if len(argv) == 1 {
		argv = sockets.ShellArgv(argv[0])
	}
	opt := relay.Options{Sockets: len(files), Names: names, TTY: req.TTY, Rows: req.Rows, Cols: req.Cols,
		Grace: runGrace, Argv: argv}
	spec := supervisor.Spec{
		Shim: ag.cfg.Shim, Argv: relay.Args(ag.self(), opt), Dir: dir, Env: env,
		Files: append(files, lf), Names: append(names, "relay"), Output: out, Credential: cred,
		ShimOptions: shimOpt, Held: true,
	}
	if sc := ag.cfg.Scopes; sc != nil {
		spec.Place = func(pid int) {
			if err := sc.Place(a.st.Name, r.Version, pid, drainTimeout); err != nil {
				ag.log.Warn("release cgroup", "app", a.st.Name, "process", procName, "err", err)
			}
		}
	}
	pr.p, err = supervisor.Start(spec)
	if err != nil {
		os.Remove(sockPath)
		return api.RunInfo{}, nil, fmt.Errorf("starting %s: %w", procName, err)
	}
	pr.run = &runInfo{relay: sockPath}
	// Recorded before it runs anything: an agentd that dies now finds it.
	a.mu.Lock()
	a.procs = append(a.procs, pr)
	err = ag.save(a)
	if err == nil && ag.frozen.Load() {
		err = errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade): try again")
	}
	a.mu.Unlock()
	if err != nil {
		pr.p.Cancel()
		os.Remove(sockPath)
		return api.RunInfo{}, nil, err
	}
	pr.p.Release()
	ag.log.Info("one-off process started", "app", a.st.Name, "release", vname(r.Version), "process", procName,
		"pid", pr.p.PID(), "command", strings.Join(req.Command, " "), "tty", req.TTY)
	pr.p.OnExit(func() { ag.runExited(a, pr) })
	conn, err := net.Dial("unix", sockPath)
	if err != nil {
		// It runs, and re-attaching may still work.
		return api.RunInfo{}, nil, fmt.Errorf("connecting to the relay of %s: %w", procName, err)
	}
	return api.RunInfo{App: a.st.Name, Process: procName, Release: vname(r.Version)}, conn, nil
}

// oneOffRelease is the release a run asks for, checked. Callers hold a.mu.
func (ag *Agent) oneOffRelease(a *app, req api.RunRequest) (*releaseState, error) {
	v := a.st.Active
	if req.Release != "" {
		n, err := grammar.ParseRelease(req.Release)
		if err != nil {
			return nil, errf(api.CodeBadRequest, "bad release %q: %v", req.Release, err)
		}
		v = n
	} else if v == 0 {
		return nil, &Error{Code: api.CodeConflict, App: a.st.Name,
			Msg: fmt.Sprintf("%s has no active release: deploy one first, or name a release with --release", a.st.Name)}
	}
	r := a.release(v)
	if r == nil {
		return nil, &Error{Code: api.CodeNotFound, Reason: api.ReasonNoSuchRelease, App: a.st.Name,
			Msg: fmt.Sprintf("%s has no release %s (hctl releases %s lists the kept ones)", a.st.Name, vname(v), a.st.Name)}
	}
	if r.Digest != "" && !ag.hasCode(r.Digest) {
		return nil, errf(api.CodeConflict, "the code of %s of %s is no longer kept", vname(v), a.st.Name)
	}
	if req.Type != "" {
		if err := grammar.CheckProcessType(req.Type); err != nil {
			return nil, errf(api.CodeBadRequest, "bad process type %q: %v", req.Type, err)
		}
		if _, ok := r.Procfile[req.Type]; !ok || req.Type == "release" {
			return nil, errf(api.CodeNotFound, "%s of %s has no process type %q (its types: %s)", vname(v), a.st.Name, req.Type, strings.Join(r.Order, ", "))
		}
	}
	return r, nil
}

// AttachRun connects to the relay of app's running one-off process
// (run.N) again: after hctl's connection to agentd was lost (an agentd
// restart or upgrade).
func (ag *Agent) AttachRun(name, process string) (io.ReadWriteCloser, error) {
	a, err := ag.get(name)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	var path string
	for _, p := range a.procs {
		if p.run != nil && p.name() == process && !p.p.Exited() {
			path = p.run.relay
		}
	}
	a.mu.Unlock()
	if path == "" {
		return nil, errf(api.CodeNotFound, "%s has no running one-off process %s", name, process)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to the relay of %s: %w", process, err)
	}
	return conn, nil
}

// runExited records a run's end. Its relay's exit status is the command's
// (unknown for an adopted relay: it went to the agentd that started it).
func (ag *Agent) runExited(a *app, p *proc) {
	ag.forward(a.st.Name, p, true)
	ex := p.p.Exit()
	a.mu.Lock()
	defer a.mu.Unlock()
	p.state = api.StateExited
	if p.run != nil {
		os.Remove(p.run.relay)
	}
	how := ex.String()
	if !ex.Unknown && ex.Signal == 0 {
		how = relay.ExitName(ex.Code)
	}
	ag.log.Info("one-off process ended", "app", a.st.Name, "process", p.name(), "pid", p.p.PID(), "how", how)
	if !a.gone {
		ag.save(a)
	}
}

// recordRuns puts a's running one-offs in its state. Callers hold a.mu.
func (a *app) recordRuns() {
	a.st.Runs = a.st.Runs[:0]
	for _, p := range a.procs {
		if p.run == nil || p.p.Exited() {
			continue
		}
		a.st.Runs = append(a.st.Runs, runRecord{Relay: p.run.relay, procRecord: procRecord{
			Name: p.name(), Type: p.typ, Index: p.index, Release: p.release, PID: p.p.PID(),
			StartedAt: p.p.KernelStart(), State: p.state, Log: p.log, LogSent: p.fwd.sent(),
		}})
	}
}

// adoptRuns finds the one-offs a previous agentd started. Their relays
// keep their commands running meanwhile; clients re-attach through
// AttachRun.
func (ag *Agent) adoptRuns(a *app) {
	for _, rec := range a.st.Runs {
		sp, err := supervisor.Adopt(rec.PID, rec.StartedAt)
		if err != nil {
			ag.log.Info("one-off process from before is gone", "app", a.st.Name, "process", rec.Name, "pid", rec.PID)
			os.Remove(rec.Relay)
			continue
		}
		pr := &proc{typ: "run", index: rec.Index, release: rec.Release, p: sp, state: api.StateRunning,
			log: rec.Log, extend: make(chan time.Duration, 1), run: &runInfo{relay: rec.Relay}}
		pr.fwd.off = rec.LogSent
		a.procs = append(a.procs, pr)
		ag.log.Info("adopted one-off process", "app", a.st.Name, "process", rec.Name, "pid", rec.PID)
		sp.OnExit(func() { ag.runExited(a, pr) })
	}
}

// Pump passes the run stream between a client and a relay until either
// ends. A client that goes away without having acknowledged the exit gets
// its process hung up (FrameHangup); agentd's own end (a restart) sends
// nothing, and the relay waits for a re-attach.
func Pump(client, relayConn io.ReadWriteCloser) {
	defer client.Close()
	defer relayConn.Close()
	down := make(chan struct{})
	go func() {
		io.Copy(client, relayConn)
		close(down) // before the close that ends the read below
		client.Close()
	}()
	fr := api.NewFrameReader(client)
	fw := api.NewFrameWriter(relayConn)
	acked := false
	for {
		f, err := fr.Read()
		if err != nil {
			select {
			case <-down:
				// The relay ended first: nothing to hang up.
			default:
				if !acked {
					fw.Write(api.FrameHangup, nil)
				}
			}
			return
		}
		if f.Type == api.FrameHangup {
			continue // only agentd says that
		}
		if f.Type == api.FrameAck {
			acked = true
		}
		if err := fw.Write(f.Type, f.Data); err != nil {
			return // the relay ended; its output's end closes the client
		}
	}
}
