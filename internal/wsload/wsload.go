// Package wsload is a fleet of WebSocket clients for tests and benchmarks
// of long-lived connections through a deploy: which release served each
// connection, when and how it closed, where it landed when it reconnected.
//
// It speaks to examples/wsapp (or any server that first sends the text
// message "hello RELEASE PROCESS PID" and then echoes every message). Each
// client dials, reads the hello, then sends a message every Config.Every
// and checks that the echo comes back unchanged. A reader is always
// waiting on every connection, so a close is timed when it happens, not at
// the next send.
//
// A run is bounded: loopback addresses only, at most MaxClients clients,
// Config.Duration (required), Config.MaxMessages in all, the context, and
// Stop. Clients connect at Config.ConnectRate, not all in one burst.
package wsload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on a Config.
const (
	MaxClients         = 20000
	MaxDuration        = 2 * time.Hour
	DefaultMaxMessages = 10_000_000
	DefaultConnectRate = 500.0 // clients per second
	// DialTimeout bounds a dial and the hello that follows it; EchoTimeout
	// an echo.
	DialTimeout = 10 * time.Second
	EchoTimeout = 10 * time.Second
	// redialEvery paces a reconnecting client whose dial failed, so a
	// server that is down is not hammered.
	redialEvery = 50 * time.Millisecond
)

// Config describes a run.
type Config struct {
	// URL is the WebSocket's address, ws://127.0.0.1:PORT/ws: loopback only.
	URL string
	// Clients is how many clients connect (1..MaxClients).
	Clients int
	// Every is how often each client sends a message; 0: none, the
	// clients only hold their connections.
	Every time.Duration
	// Reconnect makes a client whose connection closed connect again, at
	// once, and again every redialEvery while its dial fails.
	Reconnect bool
	// Duration bounds the run (required, at most MaxDuration).
	Duration time.Duration
	// MaxMessages bounds the messages sent by all clients together; once
	// reached, clients keep their connections but send no more. Zero
	// means DefaultMaxMessages.
	MaxMessages int64
	// ConnectRate is how many clients per second make their first dial;
	// zero means DefaultConnectRate.
	ConnectRate float64
	// OnConnect and OnClose, if set, are called (from the client's
	// goroutine) when a connection has read its hello, and when it has
	// closed: events tests synchronise on.
	OnConnect, OnClose func(Conn)
}

// Run is a run in progress.
type Run struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	client *http.Client
	start  time.Time

	sent      atomic.Int64
	wg        sync.WaitGroup
	connected chan struct{}
	pending   atomic.Int64 // clients not yet connected once (or given up)
	done      chan struct{}

	mu         sync.Mutex
	conns      []Conn
	dialFailed int
	dialErrs   []error
}

// Start validates cfg and starts the clients; they run until Duration has
// passed, ctx is done or Stop is called.
func Start(ctx context.Context, cfg Config) (*Run, error) {
	cfg, err := normalize(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	r := &Run{
		cfg: cfg, ctx: ctx, cancel: cancel, start: time.Now(),
		connected: make(chan struct{}), done: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{
			Proxy:       nil, // loopback only: never through a proxy
			DialContext: (&net.Dialer{Timeout: DialTimeout}).DialContext,
		}},
	}
	r.pending.Store(int64(cfg.Clients))
	interval := time.Duration(float64(time.Second) / cfg.ConnectRate)
	r.wg.Add(cfg.Clients)
	for i := range cfg.Clients {
		go r.runClient(i, r.start.Add(time.Duration(i)*interval))
	}
	go func() {
		r.wg.Wait()
		cancel()
		close(r.done)
	}()
	return r, nil
}

func normalize(cfg Config) (Config, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return cfg, fmt.Errorf("wsload: URL: %w", err)
	}
	if u.Scheme != "ws" {
		return cfg, fmt.Errorf("wsload: URL %q: want ws://", cfg.URL)
	}
	if a, err := netip.ParseAddr(u.Hostname()); u.Hostname() != "localhost" && (err != nil || !a.IsLoopback()) {
		return cfg, fmt.Errorf("wsload: URL %q: only loopback addresses (127.0.0.1, ::1, localhost)", cfg.URL)
	}
	switch {
	case cfg.Clients < 1 || cfg.Clients > MaxClients:
		return cfg, fmt.Errorf("wsload: %d clients: want 1..%d", cfg.Clients, MaxClients)
	case cfg.Duration <= 0 || cfg.Duration > MaxDuration:
		return cfg, fmt.Errorf("wsload: duration %v: want more than 0, at most %v", cfg.Duration, MaxDuration)
	case cfg.Every < 0:
		return cfg, fmt.Errorf("wsload: message interval %v is negative", cfg.Every)
	case cfg.MaxMessages < 0:
		return cfg, fmt.Errorf("wsload: max messages %d is negative", cfg.MaxMessages)
	case !(cfg.ConnectRate >= 0) || cfg.ConnectRate > 1e6:
		return cfg, fmt.Errorf("wsload: connect rate %v: want 0 (default) or a rate up to 1e6/s", cfg.ConnectRate)
	}
	if cfg.MaxMessages == 0 {
		cfg.MaxMessages = DefaultMaxMessages
	}
	if cfg.ConnectRate == 0 {
		cfg.ConnectRate = DefaultConnectRate
	}
	return cfg, nil
}

// Connected returns a channel closed once every client has connected once
// (or the run ended before it could).
func (r *Run) Connected() <-chan struct{} { return r.connected }

// Done returns a channel closed when the run has ended by itself.
func (r *Run) Done() <-chan struct{} { return r.done }

// Stop ends the run, closing every connection still open, and returns
// what happened.
func (r *Run) Stop() Result {
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return Result{
		Conns: append([]Conn(nil), r.conns...), DialFailed: r.dialFailed,
		DialErrors: append([]error(nil), r.dialErrs...),
		Start:      r.start, End: time.Now(),
	}
}

// record adds a finished connection, or a dial failure (c nil).
func (r *Run) record(c *Conn, dialErr error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c != nil {
		r.conns = append(r.conns, *c)
		return
	}
	r.dialFailed++
	if len(r.dialErrs) < 10 && !errors.Is(dialErr, context.Canceled) {
		r.dialErrs = append(r.dialErrs, dialErr)
	}
}

// firstDone counts a client's first connection (or its giving up).
func (r *Run) firstDone() {
	if r.pending.Add(-1) == 0 {
		close(r.connected)
	}
}
