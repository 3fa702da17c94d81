// Package responder is the maintenance responder: `agentd respond`, the
// process that holds an app's sockets while the app is in maintenance and
// answers every HTTP request with 503, Retry-After and a page.
//
// agentd starts it as it starts any process of an app, through the exec
// shim and the same contract: the sockets inherited (LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID), READY=1 to $NOTIFY_SOCKET once it serves,
// and on SIGTERM the drain of package graceful (in-flight requests finish,
// kept-alive clients are told "Connection: close"). Being a process of its
// own, it keeps serving while agentd restarts, crashes or upgrades.
package responder

import (
	"context"
	_ "embed"
	"errors"
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

// The environment agentd gives the responder (AGENTD_* cannot be set as
// config vars, so an app's config never changes them).
const (
	// EnvPage holds the page to answer with; empty or unset: Default.
	EnvPage = "AGENTD_MAINTENANCE_PAGE"
	// EnvRetryAfter is the Retry-After value in seconds.
	EnvRetryAfter = "AGENTD_MAINTENANCE_RETRY_AFTER"
)

// Arg is the argument that turns agentd into the responder.
const Arg = "respond"

// DefaultRetryAfter is what Retry-After says when agentd gives no value.
const DefaultRetryAfter = 60

// maxBody bounds what a request body may send that the responder reads
// and throws away, so that the client reads its 503 on a connection that
// stays usable; past it the connection is closed after the answer.
const maxBody = 1 << 20

//go:embed page.html
var Default []byte

// IsResponder reports whether args (os.Args) ask for the responder.
func IsResponder(args []string) bool { return len(args) > 1 && args[1] == Arg }

// Main runs the responder until SIGTERM and its drain are over; it returns
// the process's exit status.
func Main() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("maintenance responder", "err", err)
		return 1
	}
	return 0
}

func run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ls, names, err := listeners()
	if err != nil {
		return err
	}
	page := []byte(os.Getenv(EnvPage))
	if len(page) == 0 {
		page = Default
	}
	retry := DefaultRetryAfter
	if s := os.Getenv(EnvRetryAfter); s != "" {
		if retry, err = strconv.Atoi(s); err != nil || retry < 0 {
			return fmt.Errorf("%s=%q: want a number of seconds", EnvRetryAfter, s)
		}
	}
	done := make(chan error, 1)
	go func() {
		done <- graceful.Serve(ctx, ls, Handler(page, retry), graceful.Options{
			ShutdownTimeout: 25 * time.Second,
			OnDrainStart: func() {
				log.Info("draining")
				notify(log, daemon.SdNotifyStopping+"\nSTATUS=draining")
			},
		})
	}()
	// The sockets listen already: the kernel queues what arrives until
	// the Serve goroutines accept it.
	log.Info("answering 503 for maintenance", "sockets", strings.Join(names, " "), "retry_after", retry, "page_bytes", len(page))
	notify(log, daemon.SdNotifyReady+"\nSTATUS=maintenance: answering 503 on "+strings.Join(names, " "))
	if err := <-done; err != nil {
		return err
	}
	log.Info("drained")
	return nil
}

// Handler answers every request with 503, Retry-After and page (no body
// for HEAD). Whatever body the request has is read first, up to maxBody.
func Handler(page []byte, retryAfter int) http.Handler {
	ra := strconv.Itoa(retryAfter)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n, _ := io.CopyN(io.Discard, r.Body, maxBody+1); n > maxBody {
			w.Header().Set("Connection", "close")
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Retry-After", ra)
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", strconv.Itoa(len(page)))
		w.WriteHeader(http.StatusServiceUnavailable)
		if r.Method != http.MethodHead {
			w.Write(page)
		}
	})
}

// listeners are the sockets agentd passed: refused when LISTEN_PID names
// another process, as the activation protocol says.
func listeners() ([]net.Listener, []string, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil, fmt.Errorf("LISTEN_PID=%q is not this process (%d): the responder runs only under agentd", os.Getenv("LISTEN_PID"), os.Getpid())
	}
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, err
	}
	var ls []net.Listener
	var names []string
	for name, group := range byName {
		for _, l := range group {
			if l == nil {
				continue // not a stream socket: nothing to answer on
			}
			ls = append(ls, l)
			names = append(names, name+"="+l.Addr().String())
		}
	}
	if len(ls) == 0 {
		return nil, nil, errors.New("agentd passed no socket to answer on")
	}
	return ls, names, nil
}

func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify", "err", err)
	}
}
