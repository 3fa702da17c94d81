// Package webhook delivers an app's deploy events to its webhook URL: a
// JSON POST signed with an HMAC-SHA256 of the body under the app's secret
// (header X-Agentd-Signature: sha256=HEX, api.SignWebhook), retried with backoff, in order
// per app, one at a time. The core hands it events through Send and never
// waits for a delivery.
//
// Each event is written to a spool directory (one file per event, under
// agentd's state directory) before Send returns, and deleted once
// delivered or given up: an agentd restart, crash or upgrade resumes the
// deliveries that were pending. The files are not fsynced: a machine that
// loses power may lose the events of its last seconds, and an event whose
// delivery was under way when agentd died is sent again (same ID).
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Defaults of a Sender.
const (
	DefaultAttempts = 8                // 1 s, 2 s, 4 s … 64 s apart: about 2 min
	DefaultTimeout  = 10 * time.Second // per attempt
	maxBackoff      = time.Minute
)

// Hook is where an app's events go.
type Hook struct {
	URL    string
	Secret string
}

// Sender delivers the events of every app. It is safe for concurrent use.
type Sender struct {
	dir string
	log *slog.Logger
	// Attempts, Timeout and Backoff (the first retry's delay, doubled
	// each time up to a minute) may be changed before Start.
	Attempts int
	Timeout  time.Duration
	Backoff  time.Duration
	client   *http.Client

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	apps   map[string]*queue
	seq    uint64
	wg     sync.WaitGroup
}

// queue is one app's pending events and its delivery goroutine.
type queue struct {
	dir  string
	wake chan struct{}
	stop context.CancelFunc

	mu   sync.Mutex
	last *api.WebhookDelivery
}

// spooled is one event as written to the spool.
type spooled struct {
	Hook  Hook            `json:"hook"`
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Body  json.RawMessage `json:"body"`
}

// New returns a Sender that spools under dir (created 0700: the spool
// holds the apps' secrets). Nothing is sent before Start.
func New(dir string, log *slog.Logger) *Sender {
	ctx, cancel := context.WithCancel(context.Background())
	return &Sender{dir: dir, log: log, Attempts: DefaultAttempts, Timeout: DefaultTimeout, Backoff: time.Second,
		client: &http.Client{}, ctx: ctx, cancel: cancel, apps: map[string]*queue{}}
}

// Start resumes the deliveries left pending by a previous agentd.
func (s *Sender) Start() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("webhook spool: %w", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("webhook spool: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			s.mu.Lock()
			q := s.queueLocked(e.Name())
			s.mu.Unlock()
			q.poke()
		}
	}
	return nil
}

// Close stops the deliveries; those pending stay in the spool for the next
// Start.
func (s *Sender) Close() {
	s.cancel()
	s.wg.Wait()
}

// Send queues ev for app's webhook url, signed with secret. It returns
// once the event is in the spool: it never waits for the receiver. ev.ID
// is set when empty.
func (s *Sender) Send(app, url, secret string, ev api.WebhookEvent) error {
	if url == "" {
		return nil
	}
	h := Hook{URL: url, Secret: secret}
	s.mu.Lock()
	s.seq++
	seq := s.seq
	q := s.queueLocked(app)
	s.mu.Unlock()
	if ev.ID == "" {
		ev.ID = newID()
	}
	ev.App = app
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	b, err := json.Marshal(spooled{Hook: h, ID: ev.ID, Event: ev.Event, Body: body})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		return fmt.Errorf("webhook spool: %w", err)
	}
	// Named by time then sequence: the order of Send, across restarts.
	name := fmt.Sprintf("%020d-%06d.json", time.Now().UnixNano(), seq%1000000)
	tmp := filepath.Join(q.dir, "."+name)
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("webhook spool: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(q.dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("webhook spool: %w", err)
	}
	q.poke()
	return nil
}

// Last returns the state of app's latest delivery, nil before the first.
func (s *Sender) Last(app string) *api.WebhookDelivery {
	s.mu.Lock()
	q := s.apps[app]
	s.mu.Unlock()
	if q == nil {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.last == nil {
		return nil
	}
	d := *q.last
	d.Pending = len(pending(q.dir))
	return &d
}

// Forget drops app's pending events (the app was destroyed).
func (s *Sender) Forget(app string) {
	s.mu.Lock()
	q := s.apps[app]
	delete(s.apps, app)
	s.mu.Unlock()
	if q != nil {
		q.stop()
	}
	os.RemoveAll(filepath.Join(s.dir, app))
}

func (s *Sender) queueLocked(app string) *queue {
	if q := s.apps[app]; q != nil {
		return q
	}
	ctx, cancel := context.WithCancel(s.ctx)
	q := &queue{dir: filepath.Join(s.dir, app), wake: make(chan struct{}, 1), stop: cancel}
	if b, err := os.ReadFile(filepath.Join(q.dir, "last")); err == nil {
		var d api.WebhookDelivery
		if json.Unmarshal(b, &d) == nil {
			q.last = &d
		}
	}
	s.apps[app] = q
	s.wg.Go(func() { s.run(ctx, app, q) })
	return q
}

func (q *queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pending lists the spooled events of a queue, oldest first.
func pending(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
			out = append(out, filepath.Join(dir, n))
		}
	}
	slices.Sort(out)
	return out
}

// run delivers q's events one at a time, in order, until ctx ends.
func (s *Sender) run(ctx context.Context, app string, q *queue) {
	for {
		for _, f := range pending(q.dir) {
			if !s.deliver(ctx, app, q, f) {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		}
	}
}

// deliver sends the event in file f until it is delivered or given up,
// then removes f. It returns false when ctx ended first (f stays).
func (s *Sender) deliver(ctx context.Context, app string, q *queue, f string) bool {
	b, err := os.ReadFile(f)
	var ev spooled
	if err == nil {
		err = json.Unmarshal(b, &ev)
	}
	if err != nil {
		s.log.Warn("webhook: unreadable spooled event dropped", "app", app, "file", f, "err", err)
		os.Remove(f)
		return true
	}
	delay := s.Backoff
	for attempt := 1; ; attempt++ {
		code, err := s.post(ctx, ev)
		if ctx.Err() != nil { // stopped, not failed: f stays
			return false
		}
		d := api.WebhookDelivery{ID: ev.ID, Event: ev.Event, Attempts: attempt, Time: time.Now().UTC(), HTTPStatus: code}
		switch {
		case err == nil:
			d.Status = api.DeliveryDelivered
		case attempt >= s.Attempts:
			d.Status, d.Error = api.DeliveryFailed, err.Error()
			s.log.Warn("webhook: delivery given up", "app", app, "event", ev.Event, "id", ev.ID, "attempts", attempt, "err", err)
		default:
			d.Status, d.Error = api.DeliveryRetrying, err.Error()
		}
		q.setLast(d)
		if d.Status != api.DeliveryRetrying {
			os.Remove(f)
			return true
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		delay = min(delay*2, maxBackoff)
	}
}

func (q *queue) setLast(d api.WebhookDelivery) {
	q.mu.Lock()
	q.last = &d
	q.mu.Unlock()
	if b, err := json.Marshal(d); err == nil {
		tmp := filepath.Join(q.dir, ".last")
		if os.WriteFile(tmp, b, 0o600) == nil {
			os.Rename(tmp, filepath.Join(q.dir, "last"))
		}
	}
}

// post makes one attempt; a 2xx answer is a delivery.
func (s *Sender) post(ctx context.Context, ev spooled) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ev.Hook.URL, bytes.NewReader(ev.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "agentd-webhook")
	req.Header.Set(api.WebhookEventHeader, ev.Event)
	req.Header.Set(api.WebhookDeliveryHeader, ev.ID)
	req.Header.Set(api.WebhookSignatureHeader, api.SignWebhook(ev.Hook.Secret, ev.Body))
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, errors.New("the receiver answered " + resp.Status)
	}
	return resp.StatusCode, nil
}
