// Command wsapp is agentd's example app with long-lived connections: the
// app contract (docs/app-contract.md) of examples/goapp, plus WebSockets
// that outlive the drain.
//
//   - Sockets: every fd agentd passes (LISTEN_FDS, LISTEN_FDNAMES,
//     LISTEN_PID). Started by hand, it listens on :$PORT instead.
//   - Readiness: READY=1 (with STATUS=) to $NOTIFY_SOCKET once serving.
//   - Endpoints: GET / (who answered), POST / (the body's length),
//     GET /healthz, and GET /ws: a WebSocket that first sends the text
//     message "hello RELEASE PROCESS PID", then echoes every message.
//   - Stop: on SIGTERM, STOPPING=1; short requests drain as in goapp's
//     package graceful (stop accepting, answer with Connection: close, then
//     Shutdown). Every open WebSocket keeps being served until its peer
//     closes it or the kernel ends it (agentd's shedding shuts the socket
//     down at the drain deadline: the read fails and the handler returns);
//     wsapp exits once none is left. An upgrade asked during the drain (on
//     a connection kept alive from before) gets 503 and Connection: close.
//
// Build it into a release directory next to a Procfile:
//
//	CGO_ENABLED=0 go build -trimpath -o release/wsapp ./examples/wsapp
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
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
	sockets := newWebSockets(log)
	done := make(chan error, 1)
	go func() {
		done <- graceful.Serve(ctx, listeners, handler(sockets), graceful.Options{
			// Short requests only: a stuck one is cut well before agentd's
			// drain deadline. WebSockets are not bound by it (hijacked).
			ShutdownTimeout: 25 * time.Second,
			OnDrainStart: func() {
				sockets.draining.Store(true)
				n := sockets.open()
				log.Info("draining", "websockets", n)
				notify(log, daemon.SdNotifyStopping+"\nSTATUS=draining, "+strconv.Itoa(n)+" websockets open")
			},
		})
	}()
	log.Info("serving", "sockets", strings.Join(names, " "))
	notify(log, daemon.SdNotifyReady+"\nSTATUS=serving "+strings.Join(names, " "))

	httpErr := <-done
	// No new WebSocket can start now (Serve returned: no connection is left
	// to upgrade); wait for the open ones, however long: agentd's deadline
	// (its shedding, or its SIGKILL) bounds this, not wsapp.
	log.Info("short requests drained", "websockets", sockets.open(), "err", httpErr)
	<-sockets.zero()
	if httpErr != nil {
		return httpErr
	}
	log.Info("drained")
	return nil
}

// listen returns the inherited listeners, or a listener on :$PORT (default
// 8080) when run by hand without any, and a "name=addr" label for each.
// It is goapp's, which says why each check is there.
func listen() ([]net.Listener, []string, error) {
	if os.Getenv("LISTEN_FDS") != "" && os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil, fmt.Errorf("LISTEN_FDS=%s but LISTEN_PID=%s is not this process (%d): start the app with exec",
			os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getpid())
	}
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, fmt.Errorf("inherited sockets: %w", err)
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
		return nil, nil, fmt.Errorf("agentd passed %s no socket: wsapp is a web process; give its type a socket (hctl apps create --socket TYPE/NAME=ADDR)", p)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return nil, nil, fmt.Errorf("listen: %w", err)
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
