package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// server is a real HTTP server on 127.0.0.1 that counts what reaches it, so
// tests can compare the server's view with loadgen's (seen == Sent proves
// that nothing was retried behind loadgen's back).
type server struct {
	URL   string
	srv   *http.Server
	seen  atomic.Int64 // requests that reached the handler
	conns atomic.Int64 // connections accepted
}

// connReqs is the context key of a per-connection request counter.
type connReqs struct{}

func startServer(t *testing.T, h func(s *server, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, ln, "http://"+ln.Addr().String()+"/", h)
}

func serve(t *testing.T, ln net.Listener, u string, h func(s *server, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{URL: u}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.seen.Add(1)
			h(s, w, r)
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.conns.Add(1)
			}
		},
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connReqs{}, new(atomic.Int64))
		},
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = s.srv.Close()
		<-served
	})
	return s
}

func okHandler(_ *server, w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	_, _ = io.WriteString(w, "ok\n")
}

// dropHandler answers requests normally except every n-th one on each
// connection, which it reads and then drops by closing the connection
// without a response, as a server being killed or shut down badly does.
func dropHandler(n int64) func(*server, http.ResponseWriter, *http.Request) {
	return func(_ *server, w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Context().Value(connReqs{}).(*atomic.Int64).Add(1)%n != 0 {
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		_ = conn.Close()
	}
}

// assertNoLeaks fails if goroutines started by loadgen or by its HTTP
// transports outlive the run. Connection goroutines exit just after their
// connection is closed, so it waits for that condition (bounded) rather than
// sampling once.
func assertNoLeaks(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaks := leakedGoroutines()
		if len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after the run:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
		}
		runtime.Gosched()
		<-time.After(2 * time.Millisecond)
	}
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaks []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/loadgen.(*Run)") ||
			strings.Contains(g, "net/http.(*persistConn)") ||
			strings.Contains(g, "net/http.(*Transport).dialConn") {
			leaks = append(leaks, g)
		}
	}
	return leaks
}

// onlyClasses fails unless every failure is in one of the allowed classes.
func onlyClasses(t *testing.T, res Result, allowed ...string) {
	t.Helper()
	var n int64
	for c, k := range res.ByClass {
		ok := false
		for _, a := range allowed {
			ok = ok || a == c
		}
		if !ok {
			t.Errorf("%d failures of class %q, want only %v: %v", k, c, allowed, res)
		}
		n += k
	}
	if n != res.Failed {
		t.Errorf("ByClass sums to %d, Failed = %d", n, res.Failed)
	}
}

// consistent checks the invariants of a finished run.
func consistent(t *testing.T, res Result) {
	t.Helper()
	if res.Sent != res.OK+res.Failed {
		t.Errorf("Sent %d != OK %d + Failed %d", res.Sent, res.OK, res.Failed)
	}
	if len(res.Errors) > maxErrors || len(res.Failures) > maxFailures {
		t.Errorf("unbounded lists: %d errors, %d failures", len(res.Errors), len(res.Failures))
	}
	if strings.Contains(res.String(), "\n") {
		t.Errorf("String has more than one line: %q", res.String())
	}
}

func TestHealthyAllKinds(t *testing.T) {
	for _, kind := range AllKinds {
		t.Run(string(kind), func(t *testing.T) {
			var badBody atomic.Int64
			s := startServer(t, func(_ *server, w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				if kind != DefaultGet && !bytes.Equal(b, defaultBody) || r.Method != map[bool]string{true: "GET", false: "POST"}[kind == DefaultGet] {
					badBody.Add(1)
				}
				_, _ = io.WriteString(w, "ok\n")
			})
			res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 4, MaxRequests: 300})
			t.Log(res)
			if err := res.Verify(); err != nil {
				t.Fatal(err)
			}
			consistent(t, res)
			if res.Kind != kind || res.Sent != 300 || res.OK != 300 || res.Retried != 0 || res.Late != 0 {
				t.Errorf("got %v, want 300 sent, 300 OK, none retried or late", res)
			}
			if n := s.seen.Load(); n != res.Sent {
				t.Errorf("server saw %d requests, loadgen sent %d", n, res.Sent)
			}
			if n := badBody.Load(); n > 0 {
				t.Errorf("%d requests had the wrong method or body", n)
			}
			switch conns := s.conns.Load(); kind {
			case NewConnPost:
				if conns != res.Sent {
					t.Errorf("new-conn-post used %d connections for %d requests", conns, res.Sent)
				}
			case KeepAlivePost:
				// Mostly one per worker; Go's transport may dial again when
				// a request starts before the previous connection is back
				// in the idle pool, which a loaded machine makes likelier.
				if conns > res.Sent/4 {
					t.Errorf("keepalive-post used %d connections for %d requests with 4 workers: not kept alive", conns, res.Sent)
				}
			}
			l := res.Latency
			if l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 {
				t.Errorf("latency not ordered: %+v", l)
			}
			assertNoLeaks(t)
		})
	}
}

// The server goes away mid-run (listener and connections closed): the
// requests after that must fail as refused, and none may be retried.
func TestServerClosedMidRun(t *testing.T) {
	for _, kind := range AllKinds {
		t.Run(string(kind), func(t *testing.T) {
			reached := make(chan struct{})
			var once sync.Once
			s := startServer(t, func(s *server, w http.ResponseWriter, r *http.Request) {
				if s.seen.Load() == 50 {
					once.Do(func() { close(reached) })
				}
				okHandler(s, w, r)
			})
			// MaxRequests, not time, bounds the part after the close, so
			// the test does not depend on the machine's speed.
			r, err := Start(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 4, MaxRequests: 400})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-reached:
			case <-r.Done():
				t.Fatalf("run ended before the server saw 50 requests: %v", r.Stop())
			}
			_ = s.srv.Close()
			<-r.Done()
			res := r.Stop()
			t.Log(res)
			consistent(t, res)
			if res.Sent != 400 || res.OK == 0 || res.ByClass[ClassRefused] == 0 {
				t.Errorf("got %v, want 400 sent, some OK and some refused", res)
			}
			onlyClasses(t, res, ClassRefused, ClassReset, ClassEOF)
			if kind != DefaultGet && res.Retried != 0 {
				t.Errorf("%d POSTs retried", res.Retried)
			}
			if res.Verify() == nil {
				t.Error("Verify accepted a run with failures")
			}
			assertNoLeaks(t)
		})
	}
}

// A server that reads every request and closes the connection without an
// answer: every request fails as eof (or reset), and the server saw exactly
// as many requests as were sent.
func TestDroppedConnections(t *testing.T) {
	for _, kind := range AllKinds {
		t.Run(string(kind), func(t *testing.T) {
			s := startServer(t, dropHandler(1))
			res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 4, MaxRequests: 200})
			t.Log(res)
			consistent(t, res)
			if res.Sent != 200 || res.Failed != 200 {
				t.Errorf("got %v, want 200 sent and failed", res)
			}
			onlyClasses(t, res, ClassEOF, ClassReset)
			if n := s.seen.Load(); n != res.Sent {
				t.Errorf("server saw %d requests, loadgen sent %d", n, res.Sent)
			}
			if len(res.Failures) != 200 || len(res.Errors) == 0 {
				t.Errorf("%d failures and %d errors recorded", len(res.Failures), len(res.Errors))
			}
			assertNoLeaks(t)
		})
	}
}

// The server drops the second request on every kept-alive connection, after
// reading it. This is where Go's transport retries idempotent requests on a
// new connection. The POST kinds must not be retried (the server sees
// exactly Sent requests, and the drops show up as failures); DefaultGet is,
// which hides the failures, and Retried must show it.
func TestNoRetryOnReusedConnection(t *testing.T) {
	for _, kind := range AllKinds {
		t.Run(string(kind), func(t *testing.T) {
			s := startServer(t, dropHandler(2))
			res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 4, MaxRequests: 200})
			t.Log(res, "; server saw", s.seen.Load())
			consistent(t, res)
			seen := s.seen.Load()
			switch kind {
			case NewConnPost: // every request is the first on its connection
				if res.Failed != 0 || seen != res.Sent || res.Retried != 0 {
					t.Errorf("got %v, server saw %d; want no failure or retry", res, seen)
				}
			case KeepAlivePost:
				if seen != res.Sent || res.Retried != 0 {
					t.Errorf("POSTs retried: sent %d, server saw %d, Retried %d", res.Sent, seen, res.Retried)
				}
				if res.Failed < 50 {
					t.Errorf("got %v; want about half (100) failed", res)
				}
				onlyClasses(t, res, ClassEOF, ClassReset)
			case DefaultGet:
				if res.Retried == 0 || seen <= res.Sent || res.Failed != 0 {
					t.Errorf("got %v, server saw %d; want silent retries, hidden failures", res, seen)
				}
			}
			assertNoLeaks(t)
		})
	}
}

func TestNon2xx(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTemporaryRedirect} {
		for _, kind := range AllKinds {
			t.Run(fmt.Sprint(status, kind), func(t *testing.T) {
				s := startServer(t, func(_ *server, w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					w.Header().Set("Location", "/elsewhere")
					w.WriteHeader(status)
					_, _ = io.WriteString(w, "not now\n")
				})
				res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 2, MaxRequests: 100})
				consistent(t, res)
				if res.Sent != 100 || res.ByClass[ClassNon2xx] != 100 {
					t.Errorf("got %v, want 100 sent and non2xx", res)
				}
				if n := s.seen.Load(); n != res.Sent {
					t.Errorf("server saw %d requests (redirect followed?), loadgen sent %d", n, res.Sent)
				}
				if len(res.Errors) != 1 || !strings.Contains(res.Errors[0], fmt.Sprint(status)) {
					t.Errorf("Errors = %q, want one naming status %d", res.Errors, status)
				}
				assertNoLeaks(t)
			})
		}
	}
}

func TestTimeout(t *testing.T) {
	for _, where := range []string{"headers", "body"} {
		for _, kind := range AllKinds {
			t.Run(where+"/"+string(kind), func(t *testing.T) {
				release := make(chan struct{})
				s := startServer(t, func(_ *server, w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					if where == "body" {
						w.Header().Set("Content-Length", "100")
						_, _ = io.WriteString(w, "0123456789")
						w.(http.Flusher).Flush()
					}
					select {
					case <-r.Context().Done():
					case <-release:
					}
				})
				t.Cleanup(func() { close(release) }) // runs before the server's Close
				res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 2, MaxRequests: 4, Timeout: 100 * time.Millisecond})
				t.Log(res)
				consistent(t, res)
				if res.Sent != 4 || res.ByClass[ClassTimeout] != 4 {
					t.Errorf("got %v, want 4 sent, 4 timeouts", res)
				}
				assertNoLeaks(t)
			})
		}
	}
}

// A body shorter than its Content-Length is a failure, not a success.
func TestShortBody(t *testing.T) {
	for _, kind := range AllKinds {
		t.Run(string(kind), func(t *testing.T) {
			s := startServer(t, func(_ *server, w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Length", "100")
				_, _ = io.WriteString(w, "0123456789")
			})
			res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 2, MaxRequests: 50})
			consistent(t, res)
			if res.Sent != 50 || res.ByClass[ClassEOF] != 50 {
				t.Errorf("got %v, want 50 sent, 50 eof", res)
			}
			assertNoLeaks(t)
		})
	}
}

func TestOpenLoopRate(t *testing.T) {
	for _, kind := range AllKinds {
		t.Run(string(kind), func(t *testing.T) {
			s := startServer(t, okHandler)
			const rate, dur = 200.0, time.Second
			res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 2, Rate: rate, Duration: dur})
			t.Log(res)
			if err := res.Verify(); err != nil {
				t.Fatal(err)
			}
			limit := int64(rate * dur.Seconds() * 1.5)
			if res.Sent < 20 || res.Sent+res.Late > limit {
				t.Errorf("got %v; want at least 20 sent and at most %d scheduled", res, limit)
			}
			if n := s.seen.Load(); n != res.Sent {
				t.Errorf("server saw %d requests, loadgen sent %d", n, res.Sent)
			}
			assertNoLeaks(t)
		})
	}
}

// A target slower than the rate: the in-flight bound holds, and the sends it
// prevented are counted as Late instead of disappearing.
func TestOpenLoopSlowTargetCountsLate(t *testing.T) {
	var inFlight, peak atomic.Int64
	s := startServer(t, func(_ *server, w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		_, _ = io.Copy(io.Discard, r.Body)
		select { // the target's slowness, not synchronisation
		case <-time.After(100 * time.Millisecond):
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	const rate, dur = 100.0, 500 * time.Millisecond
	res := Do(t.Context(), Config{URL: s.URL, Workers: 1, InFlightPerWorker: 2, Rate: rate, Duration: dur})
	t.Log(res)
	if err := res.Verify(); err != nil {
		t.Fatal(err)
	}
	if res.Late == 0 || res.Sent+res.Late > int64(rate*dur.Seconds()*1.5) {
		t.Errorf("got %v; want some late, at most %v scheduled", res, rate*dur.Seconds()*1.5)
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("%d requests in flight at once, bound is 2", p)
	}
	assertNoLeaks(t)
}

func TestMaxRequestsIsExact(t *testing.T) {
	s := startServer(t, okHandler)
	for _, rate := range []float64{0, 2000} {
		res := Do(t.Context(), Config{URL: s.URL, Workers: 3, Rate: rate, MaxRequests: 137})
		if res.Sent != 137 || res.OK != 137 {
			t.Errorf("rate %v: got %v, want exactly 137 sent and OK", rate, res)
		}
	}
	if n := s.seen.Load(); n != 2*137 {
		t.Errorf("server saw %d requests, want %d", n, 2*137)
	}
	assertNoLeaks(t)
}

func TestStopSnapshotMark(t *testing.T) {
	reached := make(chan struct{})
	var once sync.Once
	s := startServer(t, func(s *server, w http.ResponseWriter, r *http.Request) {
		if s.seen.Load() >= 20 {
			once.Do(func() { close(reached) })
		}
		okHandler(s, w, r)
	})
	r, err := Start(t.Context(), Config{URL: s.URL, Kind: KeepAlivePost, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	<-reached
	r.Mark("deploy 1 start")
	snap := r.Snapshot()
	if snap.Sent < 20 || snap.Sent < snap.OK+snap.Failed {
		t.Errorf("snapshot %v: want >= 20 sent, Sent >= OK+Failed", snap)
	}
	r.Mark("deploy 1 end")
	res := r.Stop()
	if err := res.Verify(); err != nil {
		t.Fatal(err)
	}
	if res.Sent < snap.Sent {
		t.Errorf("final %v has fewer sent than snapshot %v", res, snap)
	}
	if len(res.Marks) != 2 || res.Marks[0].Label != "deploy 1 start" || res.Marks[1].Label != "deploy 1 end" ||
		res.Marks[0].Sent < 20 || res.Marks[1].At < res.Marks[0].At {
		t.Errorf("marks = %+v", res.Marks)
	}
	if diff := cmp.Diff(res, r.Stop()); diff != "" {
		t.Errorf("second Stop differs (-first +second):\n%s", diff)
	}
	select {
	case <-r.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	assertNoLeaks(t)
}

func TestContextCancelEndsRun(t *testing.T) {
	reached := make(chan struct{})
	var once sync.Once
	s := startServer(t, func(s *server, w http.ResponseWriter, r *http.Request) {
		if s.seen.Load() >= 10 {
			once.Do(func() { close(reached) })
		}
		okHandler(s, w, r)
	})
	ctx, cancel := context.WithCancel(t.Context())
	r, err := Start(ctx, Config{URL: s.URL, Kind: NewConnPost})
	if err != nil {
		t.Fatal(err)
	}
	<-reached
	cancel()
	<-r.Done() // ends without Stop
	res := r.Stop()
	// Cancelling ends sending but lets requests in flight finish: no failure.
	if err := res.Verify(); err != nil {
		t.Fatal(err)
	}
	if n := s.seen.Load(); n != res.Sent {
		t.Errorf("server saw %d requests, loadgen sent %d", n, res.Sent)
	}
	assertNoLeaks(t)
}

// Config.Dial reaches a server on a unix socket, as agentd's control socket
// and socket-activated apps will need.
func TestDialOverrideUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, ln, "http://agentd.invalid/", okHandler)
	var dials atomic.Int64
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	for _, kind := range AllKinds {
		res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 2, MaxRequests: 50, Dial: dial})
		if err := res.Verify(); err != nil {
			t.Error(err)
		}
	}
	if n := s.seen.Load(); n != 150 || dials.Load() == 0 {
		t.Errorf("server saw %d requests (want 150) through %d dials", n, dials.Load())
	}
	assertNoLeaks(t)
}

// The request shape is what keeps Go's transport from retrying a POST: no
// GetBody (so the body cannot be rewound), a non-empty body, no
// Idempotency-Key. The transports match their kinds.
func TestRequestAndTransportShape(t *testing.T) {
	for _, kind := range AllKinds {
		t.Run(string(kind), func(t *testing.T) {
			r, err := newRun(t.Context(), Config{URL: "http://127.0.0.1:1/", Kind: kind, Body: []byte{}})
			if err != nil {
				t.Fatal(err)
			}
			defer r.cancel()
			req, err := r.newRequest(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != "" {
				t.Error("request carries an idempotency key")
			}
			if kind == DefaultGet {
				if req.Method != http.MethodGet || req.Body != nil {
					t.Errorf("got %s with body %v, want a bodiless GET", req.Method, req.Body)
				}
				if len(r.transports) != 1 || r.transports[0] == http.DefaultTransport || r.transports[0].DisableKeepAlives {
					t.Errorf("want one fresh keep-alive clone of http.DefaultTransport, got %d", len(r.transports))
				}
			} else {
				if req.Method != http.MethodPost || req.GetBody != nil || req.ContentLength != int64(len(defaultBody)) {
					t.Errorf("got %s, GetBody set %v, length %d; want a POST of %d bytes without GetBody",
						req.Method, req.GetBody != nil, req.ContentLength, len(defaultBody))
				}
				if len(r.transports) != r.cfg.Workers {
					t.Errorf("%d transports for %d workers", len(r.transports), r.cfg.Workers)
				}
				for _, tr := range r.transports {
					if tr.DisableKeepAlives != (kind == NewConnPost) {
						t.Errorf("DisableKeepAlives = %v", tr.DisableKeepAlives)
					}
				}
			}
			for _, tr := range r.transports {
				if tr.Proxy != nil {
					t.Error("transport may use a proxy")
				}
			}
		})
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, cfg := range []Config{
		{URL: ""},
		{URL: "127.0.0.1:8080"},
		{URL: "ftp://127.0.0.1/"},
		{URL: "http://127.0.0.1/", Kind: "carrier-pigeon"},
		{URL: "http://127.0.0.1/", Workers: -1},
		{URL: "http://127.0.0.1/", Rate: -1},
		{URL: "http://127.0.0.1/", MaxRequests: -1},
		{URL: "http://127.0.0.1/", Timeout: -1},
		{URL: "http://127.0.0.1/", Duration: -1},
	} {
		if _, err := Start(t.Context(), cfg); err == nil {
			t.Errorf("Start(%+v) accepted", cfg)
		}
		res := Do(t.Context(), cfg)
		if res.Err == nil || res.Verify() == nil || !strings.Contains(res.String(), "not started") {
			t.Errorf("Do(%+v) = %v, want an error that Verify reports", cfg, res)
		}
	}
}

func TestClassify(t *testing.T) {
	opErr := func(op string, errno syscall.Errno) error {
		return &url.Error{Op: "Post", URL: "http://127.0.0.1/", Err: &net.OpError{
			Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}}
	}
	for _, c := range []struct {
		err    error
		status int
		want   string
	}{
		{nil, 200, ""},
		{nil, 204, ""},
		{nil, 503, ClassNon2xx},
		{nil, 302, ClassNon2xx},
		{nil, 0, ClassNon2xx},
		{opErr("dial", syscall.ECONNREFUSED), 0, ClassRefused},
		{opErr("read", syscall.ECONNRESET), 0, ClassReset},
		{opErr("write", syscall.EPIPE), 0, ClassReset},
		{&url.Error{Op: "Post", URL: "u", Err: io.EOF}, 0, ClassEOF},
		{io.ErrUnexpectedEOF, 200, ClassEOF},
		{errors.New("http: server closed idle connection"), 0, ClassEOF},
		{&url.Error{Op: "Post", URL: "u", Err: os.ErrDeadlineExceeded}, 0, ClassTimeout},
		{context.DeadlineExceeded, 0, ClassTimeout},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), 0, ClassTimeout},
		{errors.New("malformed HTTP response"), 0, ClassOther},
	} {
		if got := Classify(c.err, c.status); got != c.want {
			t.Errorf("Classify(%v, %d) = %q, want %q", c.err, c.status, got, c.want)
		}
	}
}

func TestHistogramAccuracy(t *testing.T) {
	var h histogram
	// 1 µs .. 100 ms, uniform: the true p50 is 50 ms, p99 is 99 ms.
	for us := 1; us <= 100_000; us++ {
		h.record(time.Duration(us) * time.Microsecond)
	}
	s := h.summary()
	near := func(name string, got, want time.Duration) {
		if d := float64(got-want) / float64(want); d > 0.01 || d < -0.01 {
			t.Errorf("%s = %v, want %v ± 1%%", name, got, want)
		}
	}
	near("p50", s.P50, 50*time.Millisecond)
	near("p99", s.P99, 99*time.Millisecond)
	if s.Max != 100*time.Millisecond {
		t.Errorf("max = %v, want exactly 100ms", s.Max)
	}
	var one histogram
	one.record(42 * time.Microsecond)
	if s := one.summary(); s.P50 != s.Max || s.P99 != s.Max {
		t.Errorf("single sample: %+v", s)
	}
	if s := (&histogram{}).summary(); s != (LatencySummary{}) {
		t.Errorf("empty: %+v", s)
	}
}

func TestResultString(t *testing.T) {
	res := Result{
		Kind: KeepAlivePost, Sent: 12345, OK: 12340, Failed: 5, Late: 2,
		ByClass: map[string]int64{ClassRefused: 3, ClassEOF: 2},
		Errors:  []string{"dial tcp: connection refused"},
		Elapsed: 10 * time.Second,
		Latency: LatencySummary{P50: 512345 * time.Nanosecond, P99: 2123456 * time.Nanosecond, Max: 9876543 * time.Nanosecond},
	}
	want := "keepalive-post: 12345 sent, 5 failed (refused=3 eof=2), 2 late in 10s (1234/s) " +
		"p50=512µs p99=2.12ms max=9.88ms; first error: dial tcp: connection refused"
	if got := res.String(); got != want {
		t.Errorf("String() =\n%s\nwant\n%s", got, want)
	}
}
