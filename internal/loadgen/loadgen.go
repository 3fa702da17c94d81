// Package loadgen is an exact HTTP load generator, used to prove that a
// deploy loses no request (tests, `make demo`, `make bench`).
//
// General-purpose load tools hide exactly the failures agentd must show to be
// absent: Go's http.Client silently retries an idempotent request (GET) when a
// kept-alive connection is closed under it, and proxies and tools retry on
// connect errors. loadgen never retries: every request counted in Result.Sent
// went out exactly once and ends as exactly one of OK or Failed. Strict
// checks therefore use the POST kinds. DefaultGet deliberately behaves like
// http.DefaultClient, retries included, because that is what users run;
// Result.Retried shows how often its transport retried behind its back.
//
// A run is bounded: by Duration, by MaxRequests (always set), by the context
// and by Stop, and every request by Timeout.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is how a client sends requests.
type Kind string

const (
	// NewConnPost opens a new TCP connection per POST (keep-alives off). It
	// exercises accept and the listen backlog: what is lost when nobody
	// accepts.
	NewConnPost Kind = "new-conn-post"
	// KeepAlivePost sends POSTs on kept-alive connections, one transport per
	// worker. It exercises a server closing idle connections under a client
	// that is sending on them: the hardest case for a draining server.
	KeepAlivePost Kind = "keepalive-post"
	// DefaultGet sends GETs through a client configured like
	// http.DefaultClient. Its transport may retry silently; that is what
	// users run, so it shows what users would see.
	DefaultGet Kind = "default-get"
)

// AllKinds lists every Kind, for tests and benchmarks that try them all.
var AllKinds = []Kind{NewConnPost, KeepAlivePost, DefaultGet}

const (
	defaultWorkers           = 4
	defaultMaxRequests       = 1_000_000
	defaultTimeout           = 5 * time.Second
	defaultInFlightPerWorker = 16
	maxErrors                = 20
	maxFailures              = 1000
	maxMarks                 = 1000
	userAgent                = "agentd-loadgen"
)

// defaultBody is sent when Config.Body is empty. A POST must have a body: Go's
// transport retries a request that has no body when nothing was written on a
// reused connection, even a POST.
var defaultBody = []byte("agentd-loadgen\n")

// Config describes a run. The zero value of every field but URL is usable.
type Config struct {
	URL  string // e.g. http://127.0.0.1:8080/; http or https only
	Kind Kind   // default KeepAlivePost, the strictest kind
	// Workers is the number of concurrent clients (default 4). In a closed
	// loop each sends its next request as soon as the previous one finished.
	Workers int
	// Rate is the total requests per second; 0 means a closed loop. With
	// Rate > 0 (open loop) sends are scheduled by the clock, whatever the
	// latency, with up to Workers*InFlightPerWorker requests in flight; a
	// send that finds no free slot is counted in Result.Late.
	Rate float64
	// InFlightPerWorker bounds each worker's concurrent requests in an open
	// loop (default 16). Ignored in a closed loop.
	InFlightPerWorker int
	Duration          time.Duration // stop sending after this long; 0 = until Stop, ctx or MaxRequests
	MaxRequests       int           // hard upper bound on requests sent; default 1,000,000
	Timeout           time.Duration // per request, including reading the body; default 5s
	Body              []byte        // POST body; default a small body (an empty one is replaced)
	// Dial, if set, replaces the TCP dialer (for example to reach a unix
	// socket; the URL's host then only fills the Host header).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Accept lists statuses outside 200–299 that are answers, not
	// failures: a complete response with one of them counts as OK (and in
	// Result.Accepted). A maintenance responder's 503 is one. Refused,
	// reset and cut connections stay failures whatever Accept says.
	Accept []int
}

// Run is a load run in progress. Its methods are safe for concurrent use.
type Run struct {
	cfg    Config
	method string
	body   []byte
	start  time.Time

	// ctx ends sending: it is done on Stop, on the caller's ctx, after
	// Duration and when MaxRequests is reached. Requests already sent use
	// reqCtx, which never ends early, so stopping never fails a request.
	ctx    context.Context
	cancel context.CancelFunc
	reqCtx context.Context

	perWorker  int // concurrent requests per worker: 1, or InFlightPerWorker in an open loop
	clients    []*http.Client
	transports []*http.Transport
	wg         sync.WaitGroup
	done       chan struct{}
	endNanos   atomic.Int64 // Elapsed once done

	stopOnce sync.Once
	final    Result

	claimed atomic.Int64 // requests allowed to be sent (<= MaxRequests)
	sent    atomic.Int64
	ok      atomic.Int64
	failed  atomic.Int64
	late    atomic.Int64
	retried atomic.Int64
	classes [len(classOrder)]atomic.Int64
	// statuses counts complete responses by status code (100–599).
	statuses [600]atomic.Int64
	accepted atomic.Int64
	hist     histogram

	mu       sync.Mutex // guards the slices below
	errs     []string
	errSeen  map[string]bool
	failures []Failure
	marks    []Mark
}

// Start validates cfg and begins sending in the background. The run ends on
// Stop, when ctx is done, after cfg.Duration or after cfg.MaxRequests
// requests, whichever comes first; Done reports it. Call Stop in any case to
// get the totals.
func Start(ctx context.Context, cfg Config) (*Run, error) {
	r, err := newRun(ctx, cfg)
	if err != nil {
		return nil, err
	}
	r.launch()
	return r, nil
}

// newRun validates cfg and prepares a run without sending anything.
func newRun(ctx context.Context, cfg Config) (*Run, error) {
	cfg, err := normalize(cfg)
	if err != nil {
		return nil, err
	}
	r := &Run{
		cfg:     cfg,
		method:  http.MethodPost,
		body:    cfg.Body,
		done:    make(chan struct{}),
		errSeen: make(map[string]bool),
		reqCtx:  context.WithoutCancel(ctx),
	}
	if cfg.Kind == DefaultGet {
		r.method, r.body = http.MethodGet, nil
	}
	if cfg.Duration > 0 {
		r.ctx, r.cancel = context.WithTimeout(ctx, cfg.Duration)
	} else {
		r.ctx, r.cancel = context.WithCancel(ctx)
	}

	r.perWorker = 1
	if cfg.Rate > 0 {
		r.perWorker = cfg.InFlightPerWorker
	}
	r.clients = r.newClients()
	return r, nil
}

// launch starts the senders and the goroutine that notices the end.
func (r *Run) launch() {
	cfg, perWorker, clients := r.cfg, r.perWorker, r.clients
	r.start = time.Now()
	if cfg.Rate > 0 {
		jobs := make([]chan struct{}, cfg.Workers)
		for w := range jobs {
			jobs[w] = make(chan struct{}) // unbuffered: a send succeeds only if a sender is idle
			for range perWorker {
				r.wg.Add(1)
				go r.sender(clients[w], jobs[w])
			}
		}
		r.wg.Add(1)
		go r.schedule(jobs)
	} else {
		for w := range cfg.Workers {
			r.wg.Add(1)
			go r.closedLoop(clients[w])
		}
	}
	go r.finish()
}

// Do runs cfg to its end (Duration, MaxRequests or ctx) and returns the
// totals. An invalid cfg yields a Result with Err set and nothing sent.
func Do(ctx context.Context, cfg Config) Result {
	r, err := Start(ctx, cfg)
	if err != nil {
		kind := cfg.Kind
		if kind == "" {
			kind = KeepAlivePost
		}
		return Result{Kind: kind, Err: err}
	}
	<-r.Done()
	return r.Stop()
}

// Done is closed when the run has ended and every request sent has finished.
func (r *Run) Done() <-chan struct{} { return r.done }

// Stop ends sending, waits for the requests in flight (each bounded by
// Timeout) and returns the totals. It is idempotent: later calls return the
// same Result.
func (r *Run) Stop() Result {
	r.stopOnce.Do(func() {
		r.cancel()
		<-r.done
		r.final = r.Snapshot()
	})
	return r.final
}

// Snapshot returns the totals so far without stopping the run.
func (r *Run) Snapshot() Result {
	// Finished counters are read before Sent so that Sent >= OK+Failed holds
	// in every snapshot: a request is counted as sent before it can finish.
	res := Result{
		Kind:    r.cfg.Kind,
		OK:      r.ok.Load(),
		Failed:  r.failed.Load(),
		Late:    r.late.Load(),
		Retried: r.retried.Load(),
		ByClass: make(map[string]int64),
		Latency: r.hist.summary(),
	}
	res.Accepted = r.accepted.Load()
	for code := range r.statuses {
		if n := r.statuses[code].Load(); n > 0 {
			if res.Statuses == nil {
				res.Statuses = map[int]int64{}
			}
			res.Statuses[code] = n
		}
	}
	res.Sent = r.sent.Load()
	for i, c := range classOrder {
		if n := r.classes[i].Load(); n > 0 {
			res.ByClass[c] = n
		}
	}
	if end := r.endNanos.Load(); end > 0 {
		res.Elapsed = time.Duration(end)
	} else {
		res.Elapsed = time.Since(r.start)
	}
	r.mu.Lock()
	res.Errors = append([]string(nil), r.errs...)
	res.Failures = append([]Failure(nil), r.failures...)
	res.Marks = append([]Mark(nil), r.marks...)
	r.mu.Unlock()
	return res
}

// Mark records a labelled marker (for example "deploy 3 start") with the
// totals at this moment, so that the failures of a window can be told from
// the rest. At most 1,000 markers are kept.
func (r *Run) Mark(label string) {
	m := Mark{Label: label, At: time.Since(r.start)}
	m.OK, m.Failed = r.ok.Load(), r.failed.Load()
	m.Sent = r.sent.Load()
	r.mu.Lock()
	if len(r.marks) < maxMarks {
		r.marks = append(r.marks, m)
	}
	r.mu.Unlock()
}

func normalize(cfg Config) (Config, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return cfg, fmt.Errorf("loadgen: bad URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cfg, fmt.Errorf("loadgen: URL %q: need http:// or https:// and a host", cfg.URL)
	}
	switch cfg.Kind {
	case "":
		cfg.Kind = KeepAlivePost
	case NewConnPost, KeepAlivePost, DefaultGet:
	default:
		return cfg, fmt.Errorf("loadgen: unknown kind %q (want one of %v)", cfg.Kind, AllKinds)
	}
	switch {
	case cfg.Workers < 0:
		return cfg, errors.New("loadgen: Workers < 0")
	case cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0):
		return cfg, fmt.Errorf("loadgen: bad Rate %v", cfg.Rate)
	case cfg.InFlightPerWorker < 0:
		return cfg, errors.New("loadgen: InFlightPerWorker < 0")
	case cfg.Duration < 0:
		return cfg, errors.New("loadgen: Duration < 0")
	case cfg.MaxRequests < 0:
		return cfg, errors.New("loadgen: MaxRequests < 0")
	case cfg.Timeout < 0:
		return cfg, errors.New("loadgen: Timeout < 0")
	}
	if cfg.Workers == 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.InFlightPerWorker == 0 {
		cfg.InFlightPerWorker = defaultInFlightPerWorker
	}
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = defaultMaxRequests
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if len(cfg.Body) == 0 {
		cfg.Body = defaultBody
	} else {
		cfg.Body = bytes.Clone(cfg.Body) // the caller may reuse its slice
	}
	return cfg, nil
}

// clients returns one client per worker. The POST kinds give every worker its
// own transport so a kept-alive connection really belongs to one worker and is
// reused by it; DefaultGet shares one transport between all workers, as
// programs sharing http.DefaultClient do.
func (r *Run) newClients() []*http.Client {
	dial := r.cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: r.cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext
	}
	newClient := func(t *http.Transport) *http.Client {
		r.transports = append(r.transports, t)
		return &http.Client{
			Transport: t,
			Timeout:   r.cfg.Timeout,
			// A redirect is an answer that is not a success, and following
			// it would send a request that is not counted: report it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	cs := make([]*http.Client, r.cfg.Workers)
	if r.cfg.Kind == DefaultGet {
		// A fresh clone, never the global: its idle connections must not be
		// shared with the rest of the process, and closing them at the end
		// must not affect it.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil // send only to the target the caller gave
		if r.cfg.Dial != nil {
			t.DialContext = r.cfg.Dial
		}
		c := newClient(t)
		for w := range cs {
			cs[w] = c
		}
		return cs
	}
	for w := range cs {
		cs[w] = newClient(&http.Transport{
			Proxy:               nil,
			DialContext:         dial,
			DisableKeepAlives:   r.cfg.Kind == NewConnPost,
			DisableCompression:  true,
			MaxIdleConnsPerHost: r.perWorker,
			IdleConnTimeout:     90 * time.Second,
		})
	}
	return cs
}

// claim reserves one request under MaxRequests; when the bound is reached it
// ends the run.
func (r *Run) claim() bool {
	if r.claimed.Add(1) > int64(r.cfg.MaxRequests) {
		r.claimed.Add(-1)
		r.cancel()
		return false
	}
	return true
}

// closedLoop sends one request after another until the run ends.
func (r *Run) closedLoop(c *http.Client) {
	defer r.wg.Done()
	for r.ctx.Err() == nil && r.claim() {
		r.send(c)
	}
}

// sender sends one request per job until the run ends. An open loop runs
// InFlightPerWorker senders per worker.
func (r *Run) sender(c *http.Client, jobs <-chan struct{}) {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-jobs:
			r.send(c)
		}
	}
}

// schedule is the open-loop clock: the i-th request is due at i/Rate after the
// start. It hands each due request to an idle sender, trying the workers in
// turn; when all are busy the request is counted as late instead of queued,
// so a slow target can neither hide behind a burst of catch-up sends nor make
// the run exceed its bounds. If the scheduler itself wakes late, the requests
// that fell due meanwhile are dispatched at once.
func (r *Run) schedule(jobs []chan struct{}) {
	defer r.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	rate := r.cfg.Rate
	var due int64 // requests scheduled so far (sent or late)
	next := 0     // worker to try first, for an even spread
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-timer.C:
		}
		for target := int64(time.Since(r.start).Seconds()*rate) + 1; due < target; due++ {
			if r.ctx.Err() != nil || !r.claim() {
				return
			}
			if !dispatch(jobs, &next) {
				r.claimed.Add(-1) // not sent, so it does not count against MaxRequests
				r.late.Add(1)
			}
		}
		at := time.Duration(float64(due) / rate * float64(time.Second))
		timer.Reset(at - time.Since(r.start))
	}
}

// dispatch hands one request to an idle sender, trying the workers from
// *next on, and reports whether one was idle.
func dispatch(jobs []chan struct{}, next *int) bool {
	for i := range jobs {
		w := (*next + i) % len(jobs)
		select {
		case jobs[w] <- struct{}{}:
			*next = w + 1
			return true
		default:
		}
	}
	return false
}

// newRequest builds one request. For POSTs GetBody is cleared: Go's transport
// retries a request that failed on a reused connection before anything was
// written if it can rewind the body (GetBody != nil), and http.NewRequest sets
// GetBody for a bytes.Reader. With no GetBody, a non-empty body and no
// Idempotency-Key header, a POST is never retried.
func (r *Run) newRequest(ctx context.Context) (*http.Request, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.cfg.URL, body)
	if err != nil {
		return nil, err
	}
	req.GetBody = nil
	req.Header.Set("User-Agent", userAgent+"/"+string(r.cfg.Kind))
	if r.body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	return req, nil
}

// send sends one request, reads and discards its whole body, and counts the
// outcome.
func (r *Run) send(c *http.Client) {
	r.sent.Add(1)
	// GotConn is reported each time the transport takes a connection for
	// this request; more than once means it retried silently.
	var gotConn atomic.Int32
	ctx := httptrace.WithClientTrace(r.reqCtx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { gotConn.Add(1) },
	})
	start := time.Now()
	status, statusText := 0, ""
	req, err := r.newRequest(ctx)
	if err == nil {
		var resp *http.Response
		resp, err = c.Do(req)
		if err == nil {
			status, statusText = resp.StatusCode, resp.Status
			// A body shorter than its Content-Length yields
			// io.ErrUnexpectedEOF here: a failure, not a success.
			_, err = io.Copy(io.Discard, resp.Body)
			if cerr := resp.Body.Close(); err == nil {
				err = cerr
			}
		}
	}
	took := time.Since(start)
	if gotConn.Load() > 1 {
		r.retried.Add(1)
	}
	class := Classify(err, status)
	if err == nil && status > 0 && status < len(r.statuses) {
		r.statuses[status].Add(1)
	}
	if class == ClassNon2xx && slices.Contains(r.cfg.Accept, status) {
		r.accepted.Add(1)
		class = ""
	}
	if class == "" {
		r.hist.record(took)
		r.ok.Add(1)
		return
	}
	text := ""
	if err != nil {
		text = err.Error()
	} else {
		text = fmt.Sprintf("%s %s: status %s", r.method, r.cfg.URL, statusText)
	}
	r.classes[classIndex(class)].Add(1)
	r.mu.Lock()
	if len(r.errs) < maxErrors && !r.errSeen[text] {
		r.errSeen[text] = true
		r.errs = append(r.errs, text)
	}
	if len(r.failures) < maxFailures {
		r.failures = append(r.failures, Failure{At: start.Sub(r.start), Took: took, Class: class})
	}
	r.mu.Unlock()
	r.failed.Add(1) // last, so a Snapshot that counts it also sees its class
}

// finish waits for every sender, then records the end, releases the
// transports' idle connections (and their goroutines) and closes done.
func (r *Run) finish() {
	r.wg.Wait()
	r.endNanos.Store(max(int64(time.Since(r.start)), 1))
	r.cancel() // release the Duration timer
	for _, t := range r.transports {
		t.CloseIdleConnections()
	}
	close(r.done)
}
