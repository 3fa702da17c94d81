package graceful

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// eventTimeout bounds every wait for an event, so that a broken drain fails
// the test instead of hanging it.
const eventTimeout = 20 * time.Second

// dupListener returns a second listener on the same kernel socket as ln, as
// an inherited fd is: closing it leaves the socket open for the others.
func dupListener(t *testing.T, ln net.Listener) net.Listener {
	t.Helper()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// wait fails the test if ch is not closed or sent on within eventTimeout.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(eventTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// generation is one release's server: it answers a POST with the length of
// its body and counts what it served.
type generation struct {
	name   string
	served atomic.Int64
	// reached is closed once served reaches target (if target > 0).
	target  atomic.Int64
	reached chan struct{}
	once    sync.Once
}

func newGeneration(name string) *generation {
	return &generation{name: name, reached: make(chan struct{})}
}

func (g *generation) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Generation", g.name)
	fmt.Fprint(w, n)
	if s, t := g.served.Add(1), g.target.Load(); t > 0 && s >= t {
		g.once.Do(func() { close(g.reached) })
	}
}

// awaitMore arms g to signal once it has served n more requests.
func (g *generation) awaitMore(n int64) <-chan struct{} {
	g.target.Store(g.served.Load() + n)
	return g.reached
}

// served is a Serve running in the background.
type served struct {
	stop context.CancelFunc // cancels its context, as SIGTERM would
	done chan struct{}      // closed when Serve has returned
	err  error              // what it returned, once done is closed
}

// serve runs Serve in the background; cleanup stops it and waits for it.
func serve(t *testing.T, ls []net.Listener, h http.Handler, opt Options) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = Serve(ctx, ls, h, opt)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(eventTimeout):
			t.Error("Serve did not return after cleanup cancel")
		}
	})
	return s
}

// returned waits for Serve to return and gives its error.
func (s *served) returned(t *testing.T, what string) error {
	t.Helper()
	wait(t, s.done, what)
	return s.err
}

// load is a set of clients sending POSTs in a closed loop: most on
// kept-alive connections (the case stock Shutdown gets wrong), some with a
// new connection per request. POST, because Go's client silently retries a
// GET that failed on a reused connection and would hide the loss.
type load struct {
	ok, failed atomic.Int64
	// closedByDraining counts Connection: close answers to kept-alive
	// clients: only a draining server sends those.
	closedByDraining atomic.Int64
	mu               sync.Mutex
	firstErrs        []string
	stop             chan struct{}
	wg               sync.WaitGroup
	transports       []*http.Transport
	hardDeadline     time.Time
}

func startLoad(t *testing.T, url string, keepAlive, perRequest int) *load {
	t.Helper()
	ld := &load{stop: make(chan struct{}), hardDeadline: time.Now().Add(2 * time.Minute)}
	start := func(i int, tr *http.Transport) {
		keptAlive := !tr.DisableKeepAlives
		ld.transports = append(ld.transports, tr)
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-ld.stop:
					return
				default:
				}
				if time.Now().After(ld.hardDeadline) {
					return
				}
				body := bytes.Repeat([]byte("x"), 1+(i*7+n)%512)
				ld.do(client, url, body, keptAlive)
			}
		}()
	}
	for i := range keepAlive {
		start(i, &http.Transport{MaxIdleConnsPerHost: 1})
	}
	for i := range perRequest {
		start(keepAlive+i, &http.Transport{DisableKeepAlives: true})
	}
	t.Cleanup(ld.finish)
	return ld
}

func (ld *load) do(client *http.Client, url string, body []byte, keptAlive bool) {
	resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err == nil {
		var got []byte
		got, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
		case resp.StatusCode != http.StatusOK:
			err = fmt.Errorf("status %s", resp.Status)
		case string(got) != strconv.Itoa(len(body)):
			err = fmt.Errorf("answer %q, want %d", got, len(body))
		}
		if err == nil && resp.Close && keptAlive {
			ld.closedByDraining.Add(1)
		}
	}
	if err != nil {
		ld.failed.Add(1)
		ld.mu.Lock()
		if len(ld.firstErrs) < 10 {
			ld.firstErrs = append(ld.firstErrs, err.Error())
		}
		ld.mu.Unlock()
		return
	}
	ld.ok.Add(1)
}

func (ld *load) finish() {
	select {
	case <-ld.stop:
	default:
		close(ld.stop)
	}
	ld.wg.Wait()
	for _, tr := range ld.transports {
		tr.CloseIdleConnections()
	}
}

// TestDeployLosesNoRequest plays deploys as agentd runs them: one kernel
// socket held by "agentd"; a generation serving it under load; the next
// generation started on the same socket; then the previous one drained.
// Not one POST may fail.
func TestDeployLosesNoRequest(t *testing.T) {
	const deploys = 3
	agentdSocket, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer agentdSocket.Close()
	url := "http://" + agentdSocket.Addr().String() + "/"

	start := func(name string, opt Options) (*generation, *served) {
		g := newGeneration(name)
		return g, serve(t, []net.Listener{dupListener(t, agentdSocket)}, g, opt)
	}
	cur, curSrv := start("v1", Options{})
	warm := cur.awaitMore(300)
	ld := startLoad(t, url, 8, 2)
	wait(t, warm, "the first generation to serve load")

	for i := range deploys {
		drainStarted := make(chan struct{})
		// Preboot: the next generation accepts on the same socket.
		next, nextSrv := start(fmt.Sprint("v", i+2), Options{
			Grace:        300 * time.Millisecond,
			OnDrainStart: func() { close(drainStarted) },
		})
		// Cutover: SIGTERM to the current one.
		curSrv.stop()
		if err := curSrv.returned(t, "the drained generation's Serve to return"); err != nil {
			t.Fatalf("deploy %d: Serve: %v", i, err)
		}
		// Keep the load on until the new generation has clearly taken over.
		wait(t, next.awaitMore(300), "the new generation to serve load")
		select {
		case <-nextSrv.done:
			t.Fatalf("deploy %d: new Serve returned early: %v", i, nextSrv.err)
		case <-drainStarted:
			t.Fatalf("deploy %d: new generation started draining", i)
		default:
		}
		cur, curSrv = next, nextSrv
	}
	ld.finish()

	t.Logf("%d deploys: ok=%d failed=%d, Connection: close answers while draining=%d",
		deploys, ld.ok.Load(), ld.failed.Load(), ld.closedByDraining.Load())
	if n := ld.failed.Load(); n != 0 {
		t.Errorf("%d requests failed during %d deploys; first errors: %q", n, deploys, ld.firstErrs)
	}
	if ld.closedByDraining.Load() == 0 {
		t.Error("no draining generation ever answered with Connection: close")
	}
}

// TestGraceAnswersOnOpenConnection: a request sent on a kept-alive
// connection after the drain began is answered, with Connection: close, and
// the grace ends as soon as that last connection is gone.
func TestGraceAnswersOnOpenConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/"
	drainStarted := make(chan struct{})
	s := serve(t, []net.Listener{ln}, newGeneration("v1"), Options{
		Grace:        time.Hour, // must end early, when the last connection closes
		OnDrainStart: func() { close(drainStarted) },
	})

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	post := func() (*http.Response, bool) {
		t.Helper()
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			http.MethodPost, url, bytes.NewReader([]byte("abc")))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "3" {
			t.Fatalf("got %s %q", resp.Status, body)
		}
		return resp, reused
	}

	if resp, _ := post(); resp.Close {
		t.Fatal("Connection: close before the drain")
	}
	s.stop()
	wait(t, drainStarted, "the drain to start")
	resp, reused := post()
	if !reused {
		t.Fatal("second request did not reuse the kept-alive connection")
	}
	if !resp.Close {
		t.Error("answer during the grace lacks Connection: close")
	}
	if err := s.returned(t, "Serve to return once no connection is left"); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownWaitsForInFlight: a request still running when the grace ends
// is waited for, answered with Connection: close, and only then does Serve
// return.
func TestShutdownWaitsForInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		fmt.Fprint(w, "done")
	})
	shutdownBegan := make(chan struct{})
	s := serve(t, []net.Listener{ln}, h, Options{
		Grace:      10 * time.Millisecond,
		OnShutdown: func() { close(shutdownBegan) },
	})

	type result struct {
		resp *http.Response
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Post("http://"+ln.Addr().String()+"/", "text/plain", nil)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{resp, string(b), err}
	}()
	wait(t, entered, "the request to reach the handler")
	s.stop()
	wait(t, shutdownBegan, "the grace to end")
	select {
	case <-s.done:
		t.Fatalf("Serve returned with a request in flight: %v", s.err)
	default:
	}
	close(release)
	r := wait(t, res, "the in-flight answer")
	if r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request: %v %q", r.err, r.body)
	}
	if !r.resp.Close {
		t.Error("in-flight answer written during the drain lacks Connection: close")
	}
	if err := s.returned(t, "Serve to return"); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownTimeoutCuts: a handler that never finishes is cut at
// ShutdownTimeout and Serve says so.
func TestShutdownTimeoutCuts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})
	s := serve(t, []net.Listener{ln}, h, Options{
		Grace:           10 * time.Millisecond,
		ShutdownTimeout: 200 * time.Millisecond,
	})
	clientErr := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+ln.Addr().String()+"/", "text/plain", nil)
		if err == nil {
			resp.Body.Close()
		}
		clientErr <- err
	}()
	wait(t, entered, "the request to reach the handler")
	s.stop()
	if err := s.returned(t, "Serve to give up"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Serve = %v, want DeadlineExceeded", err)
	}
	if err := wait(t, clientErr, "the cut request"); err == nil {
		t.Error("the cut request got an answer")
	}
}

// brokenListener fails its first Accept with a permanent error.
type brokenListener struct {
	net.Listener
}

func (b brokenListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }

// TestListenerFailure: a listener that fails stops Serve with its error
// (after draining the others) without waiting for the context.
func TestListenerFailure(t *testing.T) {
	good, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, []net.Listener{good, brokenListener{other}}, newGeneration("x"), Options{})
	if err := s.returned(t, "Serve to return"); err == nil || !bytes.Contains([]byte(err.Error()), []byte("broken")) {
		t.Fatalf("Serve = %v, want the accept error", err)
	}
	if _, err := net.Dial("tcp", good.Addr().String()); err == nil {
		t.Error("the good listener is still open")
	}
}

func TestNoListeners(t *testing.T) {
	if err := Serve(context.Background(), nil, http.NotFoundHandler(), Options{}); err == nil {
		t.Fatal("Serve with no listeners returned nil")
	}
}
