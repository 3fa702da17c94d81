// Command goapp is agentd's example Go app: it speaks the whole app
// contract (docs/app-contract.md) and nothing more.
//
//   - Sockets: every fd agentd passes (systemd socket activation: LISTEN_FDS,
//     LISTEN_FDNAMES, LISTEN_PID), including the private "probe" socket used
//     by http/tcp readiness. Started by hand, it listens on :$PORT instead.
//   - Readiness: READY=1 (with STATUS=) to $NOTIFY_SOCKET once serving.
//   - Stop: on SIGTERM, STOPPING=1 and the drain of package graceful.
//
// Endpoints: GET / (who answered), POST / (the body's length), GET /healthz,
// GET /slow?ms=N (answers after N ms, at most a minute: for drain tests).
// BOOT_DELAY (a Go duration) delays serving and readiness, like a slow boot.
//
// Build it into a release directory next to the Procfile:
//
//	CGO_ENABLED=0 go build -trimpath -o release/goapp ./examples/goapp
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
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/agentd/agentd/examples/goapp/graceful"
)

// maxSlow caps /slow, so a typo cannot hold a drain for hours.
const maxSlow = time.Minute

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	// SIGTERM starts the drain; SIGINT too, for Ctrl-C when run by hand.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	listeners, names, err := listen()
	if err != nil {
		return err
	}

	if d := os.Getenv("BOOT_DELAY"); d != "" {
		delay, err := time.ParseDuration(d)
		if err != nil {
			return fmt.Errorf("BOOT_DELAY: %w", err)
		}
		log.Info("booting slowly", "delay", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
	}

	done := make(chan error, 1)
	go func() {
		done <- graceful.Serve(ctx, listeners, handler(), graceful.Options{
			// Under agentd's default 30s drain timeout, so a stuck request
			// is reported here before the SIGKILL.
			ShutdownTimeout: 25 * time.Second,
			OnDrainStart: func() {
				log.Info("draining")
				notify(log, daemon.SdNotifyStopping+"\nSTATUS=draining")
			},
		})
	}()
	// The sockets are listening already (the kernel queues connections), so
	// readiness need not wait for the Serve goroutines to be scheduled.
	log.Info("serving", "sockets", strings.Join(names, " "))
	notify(log, daemon.SdNotifyReady+"\nSTATUS=serving "+strings.Join(names, " "))

	if err := <-done; err != nil {
		return err
	}
	log.Info("drained")
	return nil
}

// listen returns the inherited listeners, or a listener on :$PORT (default
// 8080) when run by hand without any, and a "name=addr" label for each.
func listen() ([]net.Listener, []string, error) {
	if os.Getenv("LISTEN_FDS") != "" && os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		// The activation protocol says to ignore such fds: they were meant
		// for another process, usually because the Procfile command forked
		// (a pipeline, "&", a wrapper script without exec). Falling back to
		// binding $PORT would only fail with "address in use": say why.
		return nil, nil, fmt.Errorf("LISTEN_FDS=%s but LISTEN_PID=%s is not this process (%d): start the app with exec",
			os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getpid())
	}
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, err
	}
	var ls []net.Listener
	var names []string
	for name, group := range byName {
		for _, l := range group {
			ls = append(ls, l)
			names = append(names, name+"="+l.Addr().String())
		}
	}
	if len(ls) > 0 {
		return ls, names, nil
	}
	if p := os.Getenv("AGENTD_PROCESS"); p != "" {
		// Under agentd $PORT is the web socket's port, which agentd holds:
		// binding it would fail with a less helpful message.
		return nil, nil, fmt.Errorf("agentd passed %s no socket: goapp is a web process; give its type a socket (hctl apps create --socket TYPE/NAME=ADDR)", p)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return nil, nil, err
	}
	return []net.Listener{l}, []string{"port=" + l.Addr().String()}, nil
}

// notify sends state to $NOTIFY_SOCKET; without one (run by hand) it does
// nothing.
func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify", "err", err)
	}
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s %s %s pid %d\n",
			os.Getenv("AGENTD_APP"), os.Getenv("AGENTD_RELEASE"), os.Getenv("AGENTD_PROCESS"), os.Getpid())
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
	mux.HandleFunc("GET /slow", slow)
	return mux
}

// slow answers after ?ms=N milliseconds (capped at maxSlow): a request that
// is still in flight when the drain starts.
func slow(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 {
		http.Error(w, "want ?ms=N", http.StatusBadRequest)
		return
	}
	d := min(time.Duration(ms)*time.Millisecond, maxSlow)
	select {
	case <-time.After(d):
		fmt.Fprintf(w, "slept %v\n", d)
	case <-r.Context().Done():
		// The client left: nobody to answer.
	}
}
