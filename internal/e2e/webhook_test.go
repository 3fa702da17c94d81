package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Webhooks (docs/webhooks.md): a receiver on 127.0.0.1 gets every event of
// an app's deploys, once, signed, in order; retries reach a receiver that
// fails at first; a receiver that hangs slows no deploy.

// receiver is a webhook receiver: it records each delivery it accepts.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	got    chan api.WebhookEvent

	mu sync.Mutex
	// failFirst: answer 503 to the first N attempts of each delivery.
	failFirst int
	down      bool // answer 503 to everything
	attempts  map[string]int
	accepted  map[string]int
	hang      chan struct{} // when set, hold every request until it is closed
	held      int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, got: make(chan api.WebhookEvent, 100), attempts: map[string]int{}, accepted: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		r.mu.Lock()
		if r.hang != nil {
			close(r.hang)
			r.hang = nil
		}
		r.mu.Unlock()
		r.srv.Close()
	})
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	r.mu.Lock()
	hang := r.hang
	if hang != nil {
		r.held++
	}
	r.mu.Unlock()
	if hang != nil {
		<-hang
		return
	}
	id := req.Header.Get(api.WebhookDeliveryHeader)
	r.mu.Lock()
	r.attempts[id]++
	fail := r.down || r.attempts[id] <= r.failFirst
	if !fail {
		r.accepted[id]++
	}
	secret := r.secret
	r.mu.Unlock()
	if fail {
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	var ev api.WebhookEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("delivery %s: body is not an event: %v: %s", id, err, body)
	}
	if !api.VerifyWebhook(secret, body, req.Header.Get(api.WebhookSignatureHeader)) {
		r.t.Errorf("delivery %s (%s): bad signature %q", id, ev.Event, req.Header.Get(api.WebhookSignatureHeader))
	}
	if req.Header.Get(api.WebhookEventHeader) != ev.Event || id != ev.ID || req.Method != http.MethodPost {
		r.t.Errorf("delivery %s: %s with headers %v for event %+v", id, req.Method, req.Header, ev)
	}
	w.WriteHeader(http.StatusNoContent)
	r.got <- ev
}

// next waits for the next accepted event.
func (r *receiver) next(t *testing.T) api.WebhookEvent {
	t.Helper()
	select {
	case ev := <-r.got:
		return ev
	case <-time.After(2 * time.Minute):
		t.Fatal("no webhook event within 2 minutes")
		return api.WebhookEvent{}
	}
}

// expect receives len(want) events: "deploy.live v3" each.
func (r *receiver) expect(t *testing.T, want ...string) []api.WebhookEvent {
	t.Helper()
	var evs []api.WebhookEvent
	for i, w := range want {
		ev := r.next(t)
		evs = append(evs, ev)
		if got := ev.Event + " " + ev.Release; got != w {
			t.Errorf("event %d: got %s (%+v), want %s", i+1, got, ev, w)
		}
	}
	return evs
}

// createHooked creates app with the receiver as its webhook, keeping the
// secret agentd made.
func (e *env) createHooked(r *receiver, app string) string {
	e.t.Helper()
	res := e.mustHctl("--json", "apps", "create", app, "--socket", "web=tcp://127.0.0.1:0", "--allow-root",
		"--readiness", "web=notify", "--boot-timeout", "5s", "--webhook", r.srv.URL+"/hooks/"+app)
	var a api.App
	if err := json.Unmarshal([]byte(res.Stdout), &a); err != nil {
		e.t.Fatal(err)
	}
	if len(a.WebhookSecret) < 32 {
		e.t.Fatalf("apps create showed no webhook secret: %s", res.Stdout)
	}
	r.mu.Lock()
	r.secret = a.WebhookSecret
	r.mu.Unlock()
	var info api.AppInfo
	e.json(&info, "apps", "info", app)
	if info.WebhookSecret != "" {
		e.t.Errorf("apps info shows the webhook secret again")
	}
	return "http://" + a.Sockets[0].Bound + "/"
}

func TestWebhookEvents(t *testing.T) {
	e := start(t)
	r := newReceiver(t)
	e.createHooked(r, "hooked")
	e.deploy("hooked", e.release(""))
	if res := e.hctl("deploy", "hooked", e.release("crash-at-boot")); res.Code != 1 {
		t.Fatalf("bad deploy: want exit 1, got %s", res)
	}
	v3 := e.release("")
	e.deploy("hooked", v3)
	// Operations with nothing to do send no event.
	e.deploy("hooked", v3)
	e.mustHctl("config", "unset", "hooked", "NOT_SET")
	e.mustHctl("rollback", "hooked")
	evs := r.expect(t,
		"deploy.started v1", "deploy.live v1",
		"deploy.started v2", "deploy.failed v2",
		"deploy.started v3", "deploy.live v3",
		"deploy.started v4", "deploy.rolled_back v4")
	ids := map[string]bool{}
	for _, ev := range evs {
		if ids[ev.ID] {
			t.Errorf("event %s arrived twice", ev.ID)
		}
		ids[ev.ID] = true
		if ev.App != "hooked" || ev.Who == "" || ev.Time.IsZero() {
			t.Errorf("event lacks app, who or time: %+v", ev)
		}
		switch ev.Event {
		case api.WebhookLive, api.WebhookRolledBack:
			if len(ev.Phases) == 0 || ev.Error != "" {
				t.Errorf("%s: want phases and no error: %+v", ev.Event, ev)
			}
		case api.WebhookFailed:
			if !strings.Contains(ev.Error, "before it was ready") {
				t.Errorf("deploy.failed: error %q does not say why", ev.Error)
			}
		}
	}
	if evs[6].Operation != "rollback" || evs[7].Previous != "v3" {
		t.Errorf("rollback events: %+v, %+v", evs[6], evs[7])
	}
	var info api.AppInfo
	e.json(&info, "apps", "info", "hooked")
	d := info.LastDelivery
	if d == nil || d.ID != evs[7].ID || d.Status != api.DeliveryDelivered || d.Attempts != 1 || d.Pending != 0 {
		t.Errorf("apps info: last delivery %+v, want %s delivered after 1 attempt, none pending", d, evs[7].ID)
	}
	r.mu.Lock()
	for id, n := range r.accepted {
		if n != 1 {
			t.Errorf("delivery %s accepted %d times", id, n)
		}
	}
	if len(r.accepted) != 8 {
		t.Errorf("%d deliveries accepted, want 8", len(r.accepted))
	}
	r.mu.Unlock()
	out := e.mustHctl("apps", "info", "hooked").Stdout
	if !strings.Contains(out, "deploy.rolled_back "+evs[7].ID) || !strings.Contains(out, "delivered after 1 attempt") {
		t.Errorf("apps info does not show the last delivery:\n%s", out)
	}
}

// TestWebhookBakeFailed: a release whose bake is aborted sends
// bake_failed, then the automatic rollback's rolled_back.
func TestWebhookBakeFailed(t *testing.T) {
	e := start(t)
	r := newReceiver(t)
	e.createHooked(r, "baked")
	e.deploy("baked", e.release(""))
	e.mustHctl("apps", "set", "baked", "--bake", "10m")
	wait := e.deployUntil("-----> bake", "baked", e.release(""))
	e.mustHctl("bake", "baked", "abort")
	if err := wait(); err == nil {
		t.Fatal("the deploy whose bake was aborted succeeded")
	}
	evs := r.expect(t, "deploy.started v1", "deploy.live v1", "deploy.started v2", "deploy.bake_failed v2", "deploy.rolled_back v3")
	if evs[3].Error == "" || evs[4].Error == "" || evs[4].Who != "agentd" || evs[4].Previous != "v2" {
		t.Errorf("bake events: %+v, %+v", evs[3], evs[4])
	}
}

// TestWebhookRetries: a receiver that fails the first two attempts of
// every delivery gets each event at the third, in order.
func TestWebhookRetries(t *testing.T) {
	e := start(t)
	r := newReceiver(t)
	r.failFirst = 2
	e.createHooked(r, "retried")
	e.deploy("retried", e.release(""))
	evs := r.expect(t, "deploy.started v1", "deploy.live v1")
	r.mu.Lock()
	for _, ev := range evs {
		if r.attempts[ev.ID] != 3 || r.accepted[ev.ID] != 1 {
			t.Errorf("%s: %d attempts, accepted %d times; want 3 and 1", ev.Event, r.attempts[ev.ID], r.accepted[ev.ID])
		}
	}
	r.mu.Unlock()
	var info api.AppInfo
	e.json(&info, "apps", "info", "retried")
	if d := info.LastDelivery; d == nil || d.Attempts != 3 || d.Status != api.DeliveryDelivered {
		t.Errorf("last delivery %+v, want delivered at attempt 3", d)
	}
}

// TestWebhookHangingReceiver: a receiver that never answers holds no deploy
// back: the deploys end while it still holds the first delivery.
func TestWebhookHangingReceiver(t *testing.T) {
	e := start(t)
	r := newReceiver(t)
	r.hang = make(chan struct{})
	url := e.createHooked(r, "hung")
	e.deploy("hung", e.release(""))
	e.deploy("hung", e.release(""))
	if got := get(t, url); !strings.Contains(got, "release=v2") {
		t.Errorf("app answers %q, want v2", got)
	}
	r.mu.Lock()
	held, answered := r.held, len(r.accepted)
	r.mu.Unlock()
	if answered != 0 {
		t.Errorf("the hanging receiver answered %d deliveries", answered)
	}
	var info api.AppInfo
	e.json(&info, "apps", "info", "hung")
	t.Logf("two deploys done while the receiver holds %d request(s) unanswered; last delivery: %+v", held, info.LastDelivery)
}

// TestWebhookSurvivesRestart: events not yet delivered when agentd stops
// are delivered, in order, by the next agentd.
func TestWebhookSurvivesRestart(t *testing.T) {
	e := start(t)
	r := newReceiver(t)
	r.down = true
	e.createHooked(r, "kept")
	e.deploy("kept", e.release(""))
	var info api.AppInfo
	e.json(&info, "apps", "info", "kept")
	if d := info.LastDelivery; d == nil || d.Pending != 2 && d.Status != api.DeliveryRetrying {
		t.Logf("before the restart: %+v", d)
	}
	if err := e.ag.Restart(); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.down = false
	r.mu.Unlock()
	r.expect(t, "deploy.started v1", "deploy.live v1")
	e.json(&info, "apps", "info", "kept")
	if d := info.LastDelivery; d == nil || d.Status != api.DeliveryDelivered || d.Pending != 0 {
		t.Errorf("after the restart: last delivery %+v", d)
	}
}
