package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// maxMessage caps one WebSocket message, so a client cannot make wsapp
// hold an unbounded buffer.
const maxMessage = 1 << 20

func handler(sockets *webSockets) http.Handler {
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
	mux.HandleFunc("GET /ws", sockets.serve)
	return mux
}

// webSockets serves WebSockets and counts the open ones, so that wsapp
// exits only when the last has closed.
type webSockets struct {
	log *slog.Logger
	// draining refuses new WebSockets: a client that connects now would
	// hold a connection to a process that is going away.
	draining atomic.Bool
	mu       sync.Mutex
	n        int
	none     chan struct{} // closed while n == 0
}

func newWebSockets(log *slog.Logger) *webSockets {
	s := &webSockets{log: log, none: make(chan struct{})}
	close(s.none)
	return s
}

func (s *webSockets) add(d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 && d > 0 {
		s.none = make(chan struct{})
	}
	s.n += d
	if s.n == 0 {
		close(s.none)
	}
}

func (s *webSockets) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// zero returns a channel closed once no WebSocket is open.
func (s *webSockets) zero() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.none
}

// serve upgrades to a WebSocket, says who serves it, then echoes until
// the connection ends.
func (s *webSockets) serve(w http.ResponseWriter, r *http.Request) {
	// Counted before the upgrade, while the HTTP server still counts the
	// connection too: there is no moment when neither does, so wsapp
	// cannot exit under an upgrade in progress.
	s.add(1)
	defer s.add(-1)
	if s.draining.Load() {
		// An upgrade asked on a connection kept alive from before the
		// drain. The answer carries Connection: close (package graceful):
		// the client reconnects, and the new release answers.
		http.Error(w, "draining: reconnect", http.StatusServiceUnavailable)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the client
	}
	defer c.CloseNow()
	c.SetReadLimit(maxMessage)
	// Not the request's context, nor the drain's: a WebSocket lives on
	// through the drain, until its peer or the kernel ends it.
	ctx := context.WithoutCancel(r.Context())
	hello := fmt.Sprintf("hello %s %s %d", os.Getenv("AGENTD_RELEASE"), os.Getenv("AGENTD_PROCESS"), os.Getpid())
	if err := c.Write(ctx, websocket.MessageText, []byte(hello)); err != nil {
		return
	}
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			s.ended(err)
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			s.ended(err)
			return
		}
	}
}

// ended logs how a WebSocket ended, unless by a normal close from its
// peer or at end-of-file (a shutdown by agentd, or a peer gone).
func (s *webSockets) ended(err error) {
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway:
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return
	}
	s.log.Info("websocket ended", "err", err)
}
