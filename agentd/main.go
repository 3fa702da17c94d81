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
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"

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
	// tableflip passes the control socket and every app socket to a new
	// agentd on SIGHUP (or `hctl agent upgrade`): the sockets never close,
	// and the app processes, adopted by the new agentd, never stop.
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: 2 * time.Minute, PIDFile: *pidFile})
	if err != nil {
		return fmt.Errorf("upgrader: %w", err)
	}
	defer upg.Stop()
	ln, err := upg.Fds.ListenWithCallback("unix", sp, func(string, string) (net.Listener, error) {
		return server.Listen(sp, *group)
	})
	if err != nil {
		return err
	}
	upgraded := false
	defer func() {
		if !upgraded {
			os.Remove(sp)
		}
	}()

	var ag *agent.Agent
	m := metrics.New(version, func() []api.Process {
		ps, _ := ag.Ps("")
		return ps
	})
	ag, err = agent.New(agent.Config{
		StateDir: *stateDir, RuntimeDir: runtimeDir, Shim: exe, Version: version, Log: log,
		KeepReleases: *keep, Metrics: m,
		Inherit: func(key string) *os.File {
			f, err := upg.Fds.File(key)
			if err != nil {
				log.Warn("inherited socket", "key", key, "err", err)
			}
			return f
		},
		TestPause: os.Getenv("AGENTD_TEST_PAUSE"),
	})
	if err != nil {
		ln.Close()
		return err
	}
	var upgradeMu sync.Mutex
	upgrade := func() error {
		upgradeMu.Lock()
		defer upgradeMu.Unlock()
		log.Info("upgrade: waiting for operations in progress, then starting a new agentd")
		files, thaw := ag.Freeze()
		for key, f := range files {
			if err := upg.Fds.AddFile(key, f); err != nil {
				thaw()
				return fmt.Errorf("passing socket %s: %w", key, err)
			}
		}
		if err := upg.Upgrade(); err != nil {
			thaw()
			log.Error("upgrade failed; this agentd carries on", "err", err)
			return err
		}
		return nil
	}
	srv := &server.Server{Agent: ag, Log: log, Metrics: m.Handler(), AdminGroup: *group, Upgrade: upgrade}
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
	if err := upg.Ready(); err != nil {
		return fmt.Errorf("upgrader: %w", err)
	}
	log.Info("agentd ready", "version", version, "control", sp, "state", *stateDir, "pid", os.Getpid(), "upgraded_from_parent", upg.HasParent())

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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(ctx)
	if ms != nil {
		ms.Shutdown(ctx)
	}
	ag.Close(*stopApps)
	return nil
}
