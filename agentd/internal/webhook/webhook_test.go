package webhook

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// hits records what a test receiver saw, and answers by a rule.
type hits struct {
	mu     sync.Mutex
	events []string // event of each attempt, in arrival order
	ok     func(event string) bool
	got    chan string // accepted events
}

func receiver(t *testing.T, ok func(string) bool) (*hits, string) {
	h := &hits{ok: ok, got: make(chan string, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev := r.Header.Get(api.WebhookEventHeader)
		if !api.VerifyWebhook("0123456789abcdef", body, r.Header.Get(api.WebhookSignatureHeader)) {
			t.Errorf("%s: bad signature", ev)
		}
		h.mu.Lock()
		h.events = append(h.events, ev)
		h.mu.Unlock()
		if !h.ok(ev) {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		h.got <- ev
	}))
	t.Cleanup(srv.Close)
	return h, srv.URL
}

func (h *hits) wait(t *testing.T) string {
	t.Helper()
	select {
	case ev := <-h.got:
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery in 30 s")
		return ""
	}
}

func newSender(t *testing.T, dir string) *Sender {
	s := New(dir, slog.New(slog.DiscardHandler))
	s.Attempts, s.Backoff = 3, time.Millisecond
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestGiveUpThenNext: an event the receiver keeps refusing is given up
// after the last attempt, and the next one goes, in order.
func TestGiveUpThenNext(t *testing.T) {
	h, url := receiver(t, func(ev string) bool { return ev != "bad" })
	s := newSender(t, t.TempDir())
	defer s.Close()
	for _, ev := range []string{"bad", "good1", "good2"} {
		if err := s.Send("app", url, "0123456789abcdef", api.WebhookEvent{Event: ev}); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := h.wait(t), h.wait(t); a != "good1" || b != "good2" {
		t.Fatalf("delivered %s, %s; want good1, good2", a, b)
	}
	h.mu.Lock()
	if want := []string{"bad", "bad", "bad", "good1", "good2"}; !equal(h.events, want) {
		t.Errorf("attempts %v, want %v", h.events, want)
	}
	h.mu.Unlock()
	// The receiver saw good2 before its answer reached the sender, which
	// records the delivery only then: wait for that record.
	if d := waitLast(t, s, "app", "good2"); d.Status != api.DeliveryDelivered {
		t.Errorf("last %+v", d)
	}
}

// waitLast polls s.Last until it names event (polling: the sender has no
// event to wait on for its record), failing after 30 s.
func waitLast(t *testing.T, s *Sender, app, event string) *api.WebhookDelivery {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := s.Last(app)
		if d != nil && d.Event == event {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("last delivery %+v, want %s within 30 s", d, event)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestResume: events spooled by one Sender are delivered by the next one
// on the same directory.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	var up sync.Mutex
	open := false
	h, url := receiver(t, func(string) bool { up.Lock(); defer up.Unlock(); return open })
	s := newSender(t, dir)
	s.Attempts = 1000
	for _, ev := range []string{"e1", "e2", "e3"} {
		s.Send("app", url, "0123456789abcdef", api.WebhookEvent{Event: ev})
	}
	s.Close()
	if n := len(pending(filepath.Join(dir, "app"))); n != 3 {
		t.Fatalf("%d events spooled after Close, want 3", n)
	}
	up.Lock()
	open = true
	up.Unlock()
	s2 := newSender(t, dir)
	defer s2.Close()
	for _, want := range []string{"e1", "e2", "e3"} {
		if got := h.wait(t); got != want {
			t.Fatalf("delivered %s, want %s", got, want)
		}
	}
	s2.Forget("app")
	if _, err := os.Stat(filepath.Join(dir, "app")); !os.IsNotExist(err) {
		t.Errorf("Forget left the spool: %v", err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
