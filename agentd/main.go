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
	"syscall"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/agent"
	"github.com/agentd/agentd/agentd/internal/metrics"
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
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
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
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding agentd's own binary for the exec shim: %w", err)
	}
	sp, err := filepath.Abs(*control)
	if err != nil {
		return err
	}
	runtimeDir := filepath.Dir(sp)
	if err := os.MkdirAll(runtimeDir, 0o755); err != nil {
		return fmt.Errorf("runtime directory: %w", err)
	}
	ln, err := server.Listen(sp, *group)
	if err != nil {
		return err
	}
	defer os.Remove(sp)

	var ag *agent.Agent
	m := metrics.New(version, func() []api.Process {
		ps, _ := ag.Ps("")
		return ps
	})
	ag, err = agent.New(agent.Config{
		StateDir: *stateDir, RuntimeDir: runtimeDir, Shim: exe, Version: version, Log: log,
		KeepReleases: *keep, Metrics: m,
	})
	if err != nil {
		ln.Close()
		return err
	}
	srv := &server.Server{Agent: ag, Log: log, Metrics: m.Handler(), AdminGroup: *group}
	hs := &http.Server{Handler: srv.Handler(), ConnContext: server.ConnContext, ReadHeaderTimeout: 10 * time.Second}
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
	log.Info("agentd ready", "version", version, "control", sp, "state", *stateDir, "pid", os.Getpid())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String(), "stop_apps", *stopApps)
	case err := <-errc:
		log.Error("server failed", "err", err)
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
