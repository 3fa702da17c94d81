// Command agentd holds app sockets and switches releases without dropping
// a request. See DESIGN.md and docs/ for the model; this file only wires
// flags to the agent, the control API and metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/agent"
	"github.com/agentd/agentd/agentd/internal/journal"
	"github.com/agentd/agentd/agentd/internal/metrics"
	"github.com/agentd/agentd/agentd/internal/scope"
	"github.com/agentd/agentd/agentd/internal/server"
	"github.com/agentd/agentd/sockets"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// The exec shim must act before anything else: it is agentd re-executed
	// between fork and the app's exec, to set LISTEN_PID.
	if sockets.IsShim(os.Args) {
		fmt.Fprintln(os.Stderr, "agentd:", sockets.RunShim(os.Args))
		os.Exit(127)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agentd:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("agentd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: agentd [flags]

agentd holds your apps' listening sockets and deploys new releases beside the
old ones, switching only once the new processes are ready: no dropped request.
Drive it with hctl.

Flags:
`)
		fs.PrintDefaults()
	}
	stateDir := fs.String("state-dir", api.DefaultStateDir(), "where apps, releases and logs are kept")
	control := fs.String("control-socket", api.DefaultSocketPath(), "unix socket for the control API (hctl)")
	metricsAddr := fs.String("metrics-listen", "", "also serve Prometheus /metrics on this TCP address, e.g. 127.0.0.1:9273")
	group := fs.String("group", "agentd", "members of this group may change apps through the control socket")
	stopApps := fs.Bool("stop-apps-on-exit", false, "drain and stop every app process when agentd exits (by default apps keep serving)")
	keep := fs.Int("keep-releases", 10, "releases kept per app")
	maxArtifact := fs.String("max-artifact-size", "1G", "refuse an artifact that unpacks to more than this many bytes (K, M, G suffixes)")
	maxLog := fs.String("max-log-size", "256M", "cut a process's log file back to its last MiB when it grows past this size")
	scopesMode := fs.String("release-scopes", "auto", "put each release's processes in a systemd scope unit of their own, agentd-APP-vN.scope (systemctl status, accounting, the end-of-drain SIGKILL and the shutdown reach every process of a release): auto (when agentd runs as a systemd service, as root) or off")
	journalMode := fs.String("journal", "auto", "send app output to the systemd journal too, with AGENTD_APP, AGENTD_RELEASE and AGENTD_PROCESS fields: auto (when journald runs), on or off")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	pidFile := fs.String("pid-file", "", "write agentd's PID here (and the new PID after an upgrade)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println("agentd", version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see agentd --help)", fs.Arg(0))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	artifactBytes, err := agent.ParseSize(*maxArtifact)
	if err != nil {
		return fmt.Errorf("--max-artifact-size: %w", err)
	}
	logBytes, err := agent.ParseSize(*maxLog)
	if err != nil {
		return fmt.Errorf("--max-log-size: %w", err)
	}
	jw, err := journal.Open(*journalMode)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	// The exec shim is this very binary as it runs, not the file on disk:
	// /proc/self/exe, opened in the child after fork, is agentd's image even
	// when the file was replaced by a newer (or broken) build meanwhile.
	exe := "/proc/self/exe"
	if _, err := os.Stat(exe); err != nil {
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("finding agentd's own binary for the exec shim: %w", err)
		}
	}
	sp, err := filepath.Abs(*control)
	if err != nil {
		return err
	}
	runtimeDir := filepath.Dir(sp)
	if err := os.MkdirAll(runtimeDir, 0o755); err != nil {
		return fmt.Errorf("runtime directory: %w", err)
	}
	// Under systemd: sockets passed by name (socket units and the fd
	// store), and sd_notify. "control" is the control socket; the others
	// are app sockets named APP.NAME, claimed when their app is loaded or
	// created, and kept meanwhile.
	mode := "embedded"
	if os.Getenv("NOTIFY_SOCKET") != "" {
		mode = "systemd"
	}
	activated, err := sockets.TakeActivated()
	if err != nil {
		return fmt.Errorf("socket activation: %w", err)
	}
	var controlFile *os.File
	pool := map[string]*os.File{}
	var poolMu sync.Mutex
	for _, a := range activated {
		if a.Name == "control" {
			controlFile = a.File
		} else {
			pool[a.Name] = a.File
		}
	}
	claim := func(name string) *os.File {
		poolMu.Lock()
		defer poolMu.Unlock()
		f := pool[name]
		delete(pool, name)
		return f
	}
	notify := func(state string) {
		if mode == "systemd" {
			if err := sockets.Notify(state); err != nil {
				log.Warn("sd_notify", "err", err)
			}
		}
	}

	// tableflip passes the control socket and every app socket to a new
	// agentd on SIGHUP (or `hctl agent upgrade`): the sockets never close,
	// and the app processes, adopted by the new agentd, never stop.
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: 2 * time.Minute, PIDFile: *pidFile})
	if err != nil {
		return fmt.Errorf("upgrader: %w", err)
	}
	defer upg.Stop()
	ln, err := controlListener(upg, controlFile, sp, *group)
	if err != nil {
		return err
	}
	upgraded := false
	defer func() {
		// Under systemd the socket file belongs to agentd.socket; after an
		// upgrade it belongs to the new agentd.
		if !upgraded && mode == "embedded" {
			os.Remove(sp)
		}
	}()

	var ag *agent.Agent
	m := metrics.New(version, func() []api.Process {
		ps, _ := ag.Ps("")
		return ps
	})
	cfg := agent.Config{
		StateDir: *stateDir, RuntimeDir: runtimeDir, Shim: exe, Version: version, Log: log,
		KeepReleases: *keep, Metrics: m, MaxArtifactBytes: artifactBytes, MaxLogBytes: logBytes,
		Inherit: func(key string) *os.File {
			f, err := upg.Fds.File(key)
			if err != nil {
				log.Warn("inherited socket", "key", key, "err", err)
			}
			return f
		},
		TestPause: os.Getenv("AGENTD_TEST_PAUSE"),
		Mode:      mode,
		Claim:     claim,
	}
	if jw != nil {
		cfg.Journal = func(o agent.LineOrigin, line string) error {
			return jw.Line(journal.Origin(o), line)
		}
		log.Info("app output goes to the journal too", "socket", journal.Socket)
	}
	switch *scopesMode {
	case "off":
	case "auto":
		// INVOCATION_ID: systemd runs agentd as a service (not merely a
		// NOTIFY_SOCKET from a test harness or systemd-socket-activate).
		if mode == "systemd" && os.Getenv("INVOCATION_ID") != "" && os.Geteuid() == 0 {
			if sm, err := scope.Connect(context.Background()); err != nil {
				log.Warn("release scopes off: app processes stay in agentd's cgroup", "err", err)
			} else {
				defer sm.Close()
				cfg.Scopes = releaseScopes{sm}
				log.Info("each release's processes go in a scope unit of their own", "unit", scope.Unit("APP", 1))
			}
		}
	default:
		return fmt.Errorf("--release-scopes %q: want auto or off", *scopesMode)
	}
	if mode == "systemd" {
		cfg.Store = func(name string, f *os.File) {
			if err := sockets.Store(name, f); err != nil {
				log.Warn("fd store", "socket", name, "err", err)
			}
		}
		cfg.Unstore = func(name string) {
			if err := sockets.Unstore(name); err != nil {
				log.Warn("fd store", "socket", name, "err", err)
			}
		}
	}
	ag, err = agent.New(cfg)
	poolMu.Lock()
	for name := range pool {
		// Kept, not closed: an app created later with this name gets it.
		log.Warn("socket from systemd matches no app yet; kept for an app of that name", "fdname", name)
	}
	poolMu.Unlock()
	if err != nil {
		ln.Close()
		return err
	}
	var upgradeMu sync.Mutex
	upgrade := func() error {
		upgradeMu.Lock()
		defer upgradeMu.Unlock()
		log.Info("upgrade: waiting for operations in progress, then starting a new agentd")
		notify("RELOADING=1\nSTATUS=upgrading: handing over to a new agentd")
		files, thaw := ag.Freeze()
		for key, f := range files {
			if err := upg.Fds.AddFile(key, f); err != nil {
				thaw()
				notify("READY=1\nSTATUS=upgrade failed, carrying on: " + err.Error())
				return fmt.Errorf("passing socket %s: %w", key, err)
			}
		}
		if err := upg.Upgrade(); err != nil {
			thaw()
			log.Error("upgrade failed; this agentd carries on", "err", err)
			notify("READY=1\nSTATUS=upgrade failed, carrying on: " + err.Error())
			return err
		}
		return nil
	}
	srv := &server.Server{Agent: ag, Log: log, Metrics: m.Handler(), AdminGroup: *group, Upgrade: upgrade}
	// Each connection has its own goroutine; these bound how long an idle or
	// slow client holds one (uploads: server.DefaultUploadIdle).
	hs := &http.Server{Handler: srv.Handler(), ConnContext: server.ConnContext, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	var ms *http.Server
	if *metricsAddr != "" {
		mln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			ag.Close(false)
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		ms = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- ms.Serve(mln) }()
	}
	// READY=1 once state is loaded, every socket held and the API serving.
	// A new agentd after an upgrade also tells systemd its PID, and does so
	// before tableflip lets the old one exit: systemd must never see the
	// unit without a main process. The watchdog is then ours to feed.
	if upg.HasParent() {
		if os.Getenv("WATCHDOG_USEC") != "" {
			os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
		}
		notify(fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=%s", os.Getpid(), ag.Summary()))
	} else {
		notify("READY=1\nSTATUS=" + ag.Summary())
	}
	if err := upg.Ready(); err != nil {
		return fmt.Errorf("upgrader: %w", err)
	}
	log.Info("agentd ready", "version", version, "mode", mode, "control", sp, "state", *stateDir, "pid", os.Getpid(), "upgraded_from_parent", upg.HasParent())

	go supervise(ag, notify, mode)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			upgrade()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String(), "stop_apps", *stopApps)
	case <-upg.Exit():
		// The new agentd is ready and owns the state and sockets: leave
		// the apps running, serving, for it.
		upgraded = true
		*stopApps = false
		log.Info("handed over to the new agentd; exiting")
	case err := <-errc:
		log.Error("server failed", "err", err)
	}
	if !upgraded {
		notify("STOPPING=1\nSTATUS=stopping")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(ctx)
	if ms != nil {
		ms.Shutdown(ctx)
	}
	ag.Close(*stopApps)
	return nil
}

// supervise feeds systemd's watchdog from a loop that takes every lock a
// request takes (so a deadlocked agentd stops feeding it and systemd
// restarts it, which the apps survive), and keeps STATUS= current.
func supervise(ag *agent.Agent, notify func(string), mode string) {
	if mode != "systemd" {
		return
	}
	interval := 5 * time.Second
	wd, err := daemon.SdWatchdogEnabled(false)
	if err == nil && wd > 0 {
		interval = min(interval, wd/2)
	}
	last := ""
	t := time.NewTicker(interval)
	defer t.Stop()
	for range t.C {
		ag.Ping()
		msg := ""
		if wd > 0 {
			msg = "WATCHDOG=1"
		}
		if s := ag.Summary(); s != last {
			last = s
			msg += "\nSTATUS=" + s
		}
		if msg != "" {
			notify(strings.TrimPrefix(msg, "\n"))
		}
	}
}

// controlKey names the control socket among the files tableflip passes to a
// new agentd on upgrade.
const controlKey = "control"

// controlListener returns the control socket: the one a parent agentd
// handed over on upgrade, else systemd's (agentd.socket), else one bound at
// path. It is registered with tableflip as a plain file, not as a unix
// listener: on a stop without upgrade tableflip unlinks the path of every
// unix listener it holds, which would delete agentd.socket's file under
// systemd (hctl then finds no socket until agentd.socket restarts), and,
// because tableflip does it from a goroutine racing the exit, only
// sometimes. agentd removes the file itself where it is agentd's to remove
// (embedded mode, see run).
func controlListener(upg *tableflip.Upgrader, fromSystemd *os.File, path, group string) (net.Listener, error) {
	inherited, err := upg.Fds.File(controlKey)
	if err != nil {
		return nil, fmt.Errorf("control socket from the previous agentd: %w", err)
	}
	if inherited != nil {
		if fromSystemd != nil {
			fromSystemd.Close()
		}
		ln, err := net.FileListener(inherited)
		inherited.Close()
		if err != nil {
			return nil, fmt.Errorf("control socket from the previous agentd: %w", err)
		}
		return ln, nil
	}
	var ln net.Listener
	if fromSystemd != nil {
		ln, err = net.FileListener(fromSystemd)
		fromSystemd.Close()
		if err != nil {
			return nil, fmt.Errorf("control socket from systemd: %w", err)
		}
	} else if ln, err = server.Listen(path, group); err != nil {
		return nil, err
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: not a unix stream socket", path)
	}
	// Closing the listener must never remove the path: the next agentd
	// (after an upgrade) serves on it.
	ul.SetUnlinkOnClose(false)
	f, err := ul.File()
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	defer f.Close()
	if err := upg.Fds.AddFile(controlKey, f); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// releaseScopes gives the deploy engine a scope unit per release.
type releaseScopes struct{ m *scope.Manager }

func (s releaseScopes) Place(app string, release, pid int, drainTimeout time.Duration) error {
	return s.m.Place(context.Background(), scope.Unit(app, release), pid, scope.Options{
		Description: fmt.Sprintf("agentd: app %s, release v%d", app, release),
		// systemd's stop of the scope (at shutdown) is the app's drain: the
		// same time, and a little more, before its SIGKILL.
		StopTimeout: drainTimeout + 5*time.Second,
		Before:      []string{"agentd.service"},
		// Stopped before the network goes, so that draining connections
		// can still finish.
		After: []string{"network.target"},
	})
}

func (s releaseScopes) KillRelease(app string, release int) error {
	return s.m.Kill(context.Background(), scope.Unit(app, release), syscall.SIGKILL)
}
