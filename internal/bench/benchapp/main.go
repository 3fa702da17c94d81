// Command benchapp is the one app every `make bench` scenario runs, so that
// agentd and the alternatives it is compared with serve exactly the same
// code. It is examples/goapp (same handler, same drain: package graceful,
// same notify readiness) with the ways of getting a socket that the
// alternatives need:
//
//   - inherited sockets (LISTEN_FDS…), as under agentd;
//   - BENCH_LISTEN=port: bind 127.0.0.1:$PORT itself, as a service restarted
//     by stop-then-start (systemctl restart) or run behind nginx does;
//   - BENCH_LISTEN=reuseport: the same with SO_REUSEPORT set, so a new
//     process can bind beside the old one (the SO_REUSEPORT handover).
//
// Readiness: READY=1 to $NOTIFY_SOCKET (agentd's, or the benchmark's own for
// the alternatives) once listening, with
// "STATUS=serving init=NS ready=NS": the wall-clock times (Unix ns) at which
// the program's package initialisation ran and READY was sent, so the
// benchmark can tell the app's own boot from what surrounds it.
// BOOT_DELAY (a Go duration) delays readiness, like a slower app.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/examples/goapp/graceful"
)

// initAt is taken while the program's packages initialise: after the Go
// runtime started, before main. The app's own boot is measured from here.
var initAt = time.Now()

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	listeners, err := listen()
	if err != nil {
		return err
	}
	if d := os.Getenv("BOOT_DELAY"); d != "" {
		delay, err := time.ParseDuration(d)
		if err != nil {
			return fmt.Errorf("BOOT_DELAY: %w", err)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
	}
	done := make(chan error, 1)
	go func() {
		done <- graceful.Serve(ctx, listeners, handler(), graceful.Options{
			ShutdownTimeout: 25 * time.Second,
			OnDrainStart: func() {
				daemon.SdNotify(false, daemon.SdNotifyStopping)
			},
		})
	}()
	status := fmt.Sprintf("STATUS=serving init=%d ready=%d", initAt.UnixNano(), time.Now().UnixNano())
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady+"\n"+status); err != nil {
		log.Warn("sd_notify", "err", err)
	}
	return <-done
}

// listen returns the inherited listeners, or binds 127.0.0.1:$PORT as
// BENCH_LISTEN says.
func listen() ([]net.Listener, error) {
	if os.Getenv("LISTEN_FDS") != "" {
		if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
			return nil, fmt.Errorf("LISTEN_PID=%s is not this process (%d)", os.Getenv("LISTEN_PID"), os.Getpid())
		}
		ls, err := activation.Listeners()
		if err != nil {
			return nil, err
		}
		var out []net.Listener
		for _, l := range ls {
			if l != nil {
				out = append(out, l)
			}
		}
		return out, nil
	}
	addr := "127.0.0.1:" + os.Getenv("PORT")
	switch mode := os.Getenv("BENCH_LISTEN"); mode {
	case "port":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return []net.Listener{l}, nil
	case "reuseport":
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		l, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, err
		}
		return []net.Listener{l}, nil
	default:
		return nil, fmt.Errorf("no inherited socket and BENCH_LISTEN=%q (want port or reuseport)", mode)
	}
}

// handler is examples/goapp's.
func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s %s pid %d\n", os.Getenv("AGENTD_RELEASE"), os.Getenv("AGENTD_PROCESS"), os.Getpid())
	})
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, n)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}
