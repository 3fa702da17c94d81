// Command agentd holds app sockets and switches releases without dropping
// a request. The model is in docs/concepts.md and the rollout engine's doc
// (agentd/internal/rollout/doc.go). This file only parses
// flags and wires the parts together: intake (what systemd passes),
// upgrade (tableflip), controlsock (hctl's socket), watchdog (sd_notify),
// the agent, the control API and metrics.
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
	"syscall"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/agent"
	"github.com/agentd/agentd/agentd/internal/controlsock"
	"github.com/agentd/agentd/agentd/internal/intake"
	"github.com/agentd/agentd/agentd/internal/journal"
	"github.com/agentd/agentd/agentd/internal/metrics"
	"github.com/agentd/agentd/agentd/internal/relay"
	"github.com/agentd/agentd/agentd/internal/responder"
	"github.com/agentd/agentd/agentd/internal/scope"
	"github.com/agentd/agentd/agentd/internal/server"
	"github.com/agentd/agentd/agentd/internal/steer"
	"github.com/agentd/agentd/agentd/internal/upgrade"
	"github.com/agentd/agentd/agentd/internal/watchdog"
	"github.com/agentd/agentd/agentd/internal/webhook"
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
	// `agentd respond`: the maintenance responder, started by agentd
	// through the shim (package responder).
	if responder.IsResponder(os.Args) {
		os.Exit(responder.Main())
	}
	// A one-off process's relay (hctl run): agentd re-executed too.
	if relay.Is(os.Args) {
		os.Exit(relay.Main(os.Args))
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
	steering := fs.String("steering", "auto", "steer new connections per release in the kernel (SO_REUSEPORT group and a BPF program), so old processes stop getting connections before SIGTERM: auto (TCP sockets, when agentd runs as root on a kernel that supports it) or off (one shared socket per app socket)")
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
	// store), and sd_notify.
	in, err := intake.Take(log)
	if err != nil {
		return err
	}
	mode := in.Mode
	sd := watchdog.NewNotifier(mode == intake.ModeSystemd, log)

	upg, err := upgrade.New(*pidFile, log, sd.Notify)
	if err != nil {
		return err
	}
	defer upg.Stop()
	ln, err := controlsock.Listen(upg.Fds(), in.Control, sp, *group)
	if err != nil {
		return err
	}
	upgraded := false
	defer func() {
		// Under systemd the socket file belongs to agentd.socket; after an
		// upgrade it belongs to the new agentd.
		if !upgraded && mode == intake.ModeEmbedded {
			os.Remove(sp)
		}
	}()

	var ag *agent.Agent
	m := metrics.New(version, func() []api.Process {
		ps, _ := ag.Ps("")
		return ps
	})
	m.WatchSteering(func() ([]api.SteeredCount, []api.CanaryShare) { return ag.SteeredCounts() })
	// The exec shim: the small static agentd-shim installed beside agentd
	// (a process start then costs about one extra exec), else agentd
	// itself, re-executed (a whole Go runtime's start-up per process, a
	// few milliseconds: fine for `go run` and tests).
	shim, self := exe, exe
	if path, err := os.Executable(); err == nil {
		if s := sockets.ShimBinary(path); s != path {
			// agentd-shim execs what it is given by name, so the processes
			// that run agentd itself (the maintenance responder, a run's
			// relay) name agentd's file: /proc/self/exe would be the shim.
			shim, self = s, path
		} else {
			log.Info("exec shim: no "+sockets.ShimBinaryName+" beside agentd, so agentd re-executes itself to start each process (slower starts)",
				"want", filepath.Join(filepath.Dir(path), sockets.ShimBinaryName))
		}
	}
	log.Debug("exec shim", "path", shim)
	cfg := agent.Config{
		StateDir: *stateDir, RuntimeDir: runtimeDir, Shim: shim, Self: self, Version: version, Log: log,
		KeepReleases: *keep, Metrics: m, MaxArtifactBytes: artifactBytes, MaxLogBytes: logBytes,
		Inherit:   upg.Inherit,
		TestPause: os.Getenv("AGENTD_TEST_PAUSE"),
		Mode:      mode,
		Claim:     in.Claim,
	}
	switch *steering {
	case "auto":
		if err := steer.Supported(); err != nil {
			cfg.SteerOff = err.Error()
			log.Info("kernel steering unavailable: each app socket is shared by all its releases", "why", err)
		} else {
			cfg.Steer = steerer{}
		}
	case "off":
		cfg.SteerOff = "agentd runs with --steering off"
	default:
		return fmt.Errorf("--steering %q: want auto or off", *steering)
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
		if mode == intake.ModeSystemd && os.Getenv("INVOCATION_ID") != "" && os.Geteuid() == 0 {
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
	cfg.Store, cfg.Unstore = in.FDStore()
	hooks := webhook.New(filepath.Join(*stateDir, "webhooks"), log)
	cfg.Webhooks = hooks
	defer hooks.Close()
	ag, err = agent.New(cfg)
	in.WarnUnclaimed()
	if err != nil {
		ln.Close()
		return err
	}
	if err := hooks.Start(); err != nil {
		log.Warn("webhook deliveries off", "err", err)
	}
	upgradeNow := func() error { return upg.Upgrade(ag) }
	srv := &server.Server{Agent: ag, Log: log, Metrics: m.Handler(), AdminGroup: *group, Upgrade: upgradeNow}
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
	// Signals are caught before anyone hears agentd is ready: their
	// default action would kill it (systemctl stop or reload right after
	// start), skipping the orderly stop.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	upg.OnSIGHUP(ag)
	sd.Ready(ag.Summary(), upg.HasParent())
	if err := upg.Ready(); err != nil {
		return err
	}
	log.Info("agentd ready", "version", version, "mode", mode, "control", sp, "state", *stateDir, "pid", os.Getpid(), "upgraded_from_parent", upg.HasParent())

	go sd.Supervise(context.Background(), ag)

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
		sd.Notify("STOPPING=1\nSTATUS=stopping")
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
