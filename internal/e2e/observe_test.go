package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// scrape reads agentd's metrics on the control socket.
func (e *env) scrape() metrics {
	e.t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", e.ag.Socket)
		},
	}}
	return scrapeWith(e.t, c, "http://agentd/metrics")
}

func scrapeWith(t *testing.T, c *http.Client, url string) metrics {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, b)
	}
	return metrics(b)
}

// metrics is a scrape in the Prometheus text format.
type metrics string

// get sums the samples of name whose labels include every one of labels
// (`app="x"`); found is false when there is none.
func (m metrics) get(name string, labels ...string) (sum float64, found bool) {
	for line := range strings.Lines(string(m)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		n, ls, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains("{"+ls, "{"+l+",") && !strings.Contains("{"+ls, ","+l+",") &&
				!strings.Contains("{"+ls, "{"+l+"}") && !strings.Contains("{"+ls, ","+l+"}") {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			continue
		}
		sum, found = sum+v, true
	}
	return sum, found
}

func (m metrics) val(name string, labels ...string) float64 {
	v, _ := m.get(name, labels...)
	return v
}

// promtool runs `promtool check metrics` on a scrape.
func promtool(t *testing.T, m metrics) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: apt-get install prometheus); CI installs it")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(m))
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// accepted counts the TCP connections on port that some process has
// accepted (a socket with an inode: one still in the accept queue has
// none), from /proc/net/tcp{,6}.
func accepted(t *testing.T, port int) int {
	t.Helper()
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "01" || fs[9] == "0" {
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
				n++
			}
		}
	}
	return n
}

func urlPort(t *testing.T, url string) int {
	t.Helper()
	port, err := strconv.Atoi(url[strings.LastIndexByte(strings.TrimSuffix(url, "/"), ':')+1 : len(url)-1])
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// waitAccepted waits until n connections on port have been accepted.
func waitAccepted(t *testing.T, port, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for accepted(t, port) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the app accepted %d connections, want %d", accepted(t, port), n)
		}
		<-tick.C
	}
}

// TestMetrics: a scrape after a successful deploy, a SIGKILLed drain that
// cut two requests in flight, a failed deploy and a crash restart passes
// `promtool check metrics`, and each event moves the counters it must,
// by exactly as much.
func TestMetrics(t *testing.T) {
	maddr := freePort(t)
	e := start(t, "--metrics-listen", maddr)
	url := e.createApp("obs", "--readiness", "web=notify", "--boot-timeout", "5s", "--drain-timeout", "2s")
	app := `app="obs"`
	deploys := func(m metrics, result string) float64 {
		return m.val("agentd_deploys_total", app, `kind="deploy"`, `result="`+result+`"`)
	}

	m0 := e.scrape()
	if _, ok := m0.get("agentd_deploys_total", app, `kind="deploy"`, `result="failed"`); !ok {
		t.Errorf("a new app's deploy counters do not start at 0:\n%s", m0)
	}
	if v, ok := m0.get("agentd_build_info"); !ok || v != 1 {
		t.Errorf("no agentd_build_info")
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if _, ok := m0.get(name); !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
	if _, ok := m0.get("agentd_app_active_release_info", app); ok {
		t.Errorf("an app with no release has an active release")
	}

	// A successful deploy (of a release that will ignore SIGTERM).
	e.deploy("obs", e.release("ignore-sigterm"))
	m1 := e.scrape()
	if d := deploys(m1, "ok") - deploys(m0, "ok"); d != 1 {
		t.Errorf("a successful deploy moved deploys_total{result=ok} by %v", d)
	}
	for _, ph := range []string{"prepare", "preboot", "readiness", "cutover", "drain"} {
		if d := m1.val("agentd_deploy_phase_duration_seconds_count", app, `phase="`+ph+`"`) -
			m0.val("agentd_deploy_phase_duration_seconds_count", app, `phase="`+ph+`"`); d != 1 {
			t.Errorf("phase %s observed %v times, want 1", ph, d)
		}
	}
	if v := m1.val("agentd_process_ready_duration_seconds_count", app, `type="web"`); v != 1 {
		t.Errorf("time to readiness observed %v times, want 1", v)
	}
	if v := m1.val("agentd_process_start_seconds_count", app, `type="web"`); v != 1 {
		t.Errorf("the whole process start observed %v times, want 1", v)
	}
	if v := m1.val("agentd_process_start_seconds_sum", app, `type="web"`); v <= 0 {
		t.Errorf("the whole process start took %vs", v)
	}
	if v := m1.val("agentd_app_active_release_info", app, `release="v1"`); v != 1 {
		t.Errorf("active release info for v1: %v", v)
	}
	if v := m1.val("agentd_processes", app, `type="web"`, `release="v1"`, `state="ready"`); v != 1 {
		t.Errorf("processes{web,v1,ready} = %v, want 1", v)
	}

	// A drain cut off: v1 ignores SIGTERM with two requests in flight
	// (uploads that never end); SIGKILL at the 2s drain timeout cuts both.
	_, wait := holdRequests(t, url, 2)
	res := e.deploy("obs", e.release(""))
	if len(res.Killed) != 1 || res.ConnectionsCut != 2 {
		t.Errorf("deploy over a SIGTERM-ignoring v1: killed %v, cut %d; want 1 killed, 2 cut", res.Killed, res.ConnectionsCut)
	}
	for i, err := range wait() {
		if err == nil {
			t.Errorf("request %d survived the SIGKILL of the process serving it", i)
		}
	}
	m2 := e.scrape()
	for _, c := range []struct {
		name string
		want float64
	}{
		{"agentd_processes_killed_total", 1},
		{"agentd_drain_connections_cut_total", 2},
		{"agentd_drain_duration_seconds_count", 1},
	} {
		if d := m2.val(c.name, app) - m1.val(c.name, app); d != c.want {
			t.Errorf("the SIGKILLed drain moved %s by %v, want %v", c.name, d, c.want)
		}
	}
	if d := deploys(m2, "ok") - deploys(m1, "ok"); d != 1 {
		t.Errorf("second deploy moved deploys_total{result=ok} by %v", d)
	}
	if v, ok := m2.get("agentd_drain_duration_seconds_sum", app); !ok || v-m1.val("agentd_drain_duration_seconds_sum", app) < 2 {
		t.Errorf("drain duration sum %v: the drain lasted the 2s timeout", v)
	}
	if _, ok := m2.get("agentd_app_active_release_info", app, `release="v1"`); ok {
		t.Errorf("v1 still has an active release series after v2's cutover")
	}
	if v := m2.val("agentd_app_active_release_info", app, `release="v2"`); v != 1 {
		t.Errorf("active release info for v2: %v", v)
	}

	// A failed deploy.
	if r := e.hctl("deploy", "obs", e.release("crash-at-boot")); r.Code != 1 {
		t.Fatalf("deploy of a release that crashes at boot: %s", r)
	}
	m3 := e.scrape()
	if d := deploys(m3, "failed") - deploys(m2, "failed"); d != 1 {
		t.Errorf("a failed deploy moved deploys_total{result=failed} by %v", d)
	}
	if d := deploys(m3, "ok") - deploys(m2, "ok"); d != 0 {
		t.Errorf("a failed deploy moved deploys_total{result=ok} by %v", d)
	}
	if v := m3.val("agentd_app_active_release_info", app, `release="v2"`); v != 1 {
		t.Errorf("after a failed deploy the active release is not v2: %v", v)
	}
	if d := m3.val("agentd_processes_killed_total", app) - m2.val("agentd_processes_killed_total", app); d != 0 {
		t.Errorf("a failed deploy killed %v processes", d)
	}

	// A crash restart.
	victim := e.ps("obs")[0]
	syscall.Kill(victim.PID, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for restarted := false; !restarted; {
		ps := e.ps("obs")
		for _, p := range ps {
			restarted = restarted || (p.PID != victim.PID && p.State == api.StateReady && p.Restarts == 1)
		}
		if time.Now().After(deadline) {
			t.Fatalf("web.1 not restarted: %+v", ps)
		}
		if !restarted {
			<-tick.C
		}
	}
	m4 := e.scrape()
	if d := m4.val("agentd_process_restarts_total", app, `type="web"`) - m3.val("agentd_process_restarts_total", app, `type="web"`); d != 1 {
		t.Errorf("a crash restart moved restarts_total by %v", d)
	}

	// Every label set is bounded: no PID, no request path.
	for line := range strings.Lines(string(m4)) {
		if strings.HasPrefix(line, "agentd_") && (strings.Contains(line, "pid=") || strings.Contains(line, "path=") ||
			strings.Contains(line, strconv.Itoa(victim.PID))) {
			t.Errorf("unbounded label: %s", line)
		}
	}
	// The same metrics on --metrics-listen.
	mm := scrapeWith(t, http.DefaultClient, "http://"+maddr+"/metrics")
	if v := mm.val("agentd_drain_connections_cut_total", app); v != 2 {
		t.Errorf("--metrics-listen: connections cut %v, want 2", v)
	}
	// docs/metrics.md names every metric.
	doc := readDoc(t, "metrics.md")
	for line := range strings.Lines(string(m4)) {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "TYPE" && strings.HasPrefix(f[2], "agentd_") &&
			!strings.Contains(doc, "`"+f[2]+"`") {
			t.Errorf("docs/metrics.md does not describe %s", f[2])
		}
	}
	for i, m := range []metrics{m1, m2, m3, m4} {
		t.Logf("promtool on scrape %d", i+1)
		promtool(t, m)
	}
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMetricsDocAlerts: the example alerts of docs/metrics.md are valid
// rules (`promtool check rules`).
func TestMetricsDocAlerts(t *testing.T) {
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: apt-get install prometheus); CI installs it")
	}
	var rules strings.Builder
	in := false
	for line := range strings.Lines(readDoc(t, "metrics.md")) {
		switch {
		case strings.HasPrefix(line, "```yaml"):
			in = true
		case strings.HasPrefix(line, "```"):
			in = false
		case in:
			rules.WriteString(line)
		}
	}
	f := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, "check", "rules", f).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS: 4 rules found") {
		t.Errorf("promtool check rules on the alerts of docs/metrics.md: %v\n%s", err, out)
	}
}

// holdRequests sends n POST / requests, each on a connection of its own,
// whose bodies the test streams: each stays in flight until end(i) ends its
// body. It returns once the app has accepted them all; wait ends the bodies
// still open (a request whose connection was cut waits for its body to end
// before it reports the error) and returns each request's outcome.
func holdRequests(t *testing.T, url string, n int) (end func(i int), wait func() []error) {
	t.Helper()
	port := urlPort(t, url)
	before := accepted(t, port)
	errs := make([]error, n)
	bodies := make([]*io.PipeWriter, n)
	var wg sync.WaitGroup
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range n {
		pr, pw := io.Pipe()
		bodies[i] = pw
		wg.Go(func() {
			resp, err := c.Post(url, "text/plain", pr)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			pr.CloseWithError(err)
			errs[i] = err
		})
		go pw.Write([]byte("the first part of a long upload\n"))
	}
	t.Cleanup(func() {
		for _, b := range bodies {
			b.Close()
		}
		wg.Wait()
	})
	waitAccepted(t, port, before+n)
	return func(i int) { bodies[i].Close() }, func() []error {
		for _, b := range bodies {
			b.Close()
		}
		wg.Wait()
		return errs
	}
}

// TestDrainConnections: while an old process drains with requests in
// flight, `hctl ps --json` shows its open connections falling to 0 as they
// finish, and the deploy's progress stream and agentd_drain_open_connections
// report them. Each request is an upload that ends when the test says, so
// the test steps the count down and waits for ps to follow. The old process
// ignores SIGTERM, so it outlives its last connection and ps can show the 0
// (a process that drains well exits at that very moment); SIGKILL at the
// drain timeout then cuts nothing.
func TestDrainConnections(t *testing.T) {
	e := start(t)
	url := e.createApp("drn", "--readiness", "web=notify", "--drain-timeout", "15s")
	e.deploy("drn", e.release("ignore-sigterm"))
	old := e.ps("drn")[0]
	end, wait := holdRequests(t, url, 3)

	type outcome struct {
		r   string
		res api.Release
	}
	done := make(chan outcome, 1)
	next := e.release("")
	go func() {
		r := e.ag.Hctl("deploy", "drn", next)
		var res api.Release
		if r2 := e.ag.HctlJSON(&res, "releases", "info", "drn", "v2"); r2.Code != 0 {
			res.Error = r2.String()
		}
		done <- outcome{r.Stdout + r.Stderr, res}
	}()

	var seen []int
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// waitConns polls ps until the draining v1 web.1 shows want open
	// connections, as a user would.
	waitConns := func(want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var p *api.Process
			for _, q := range e.ps("drn") {
				if q.PID == old.PID {
					p = &q
				}
			}
			if p == nil {
				t.Fatalf("v1 web.1 is gone while waiting for %d open connections (seen %v)", want, seen)
			}
			if p.State == api.StateDraining && p.Connections != nil {
				if p.KillAt.IsZero() {
					t.Errorf("a draining process has no kill_at")
				}
				if n := *p.Connections; len(seen) == 0 || seen[len(seen)-1] != n {
					seen = append(seen, n)
				}
				if *p.Connections == want {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("v1 web.1 never showed %d open connections (seen %v)", want, seen)
			}
			<-tick.C
		}
	}
	waitConns(3)
	table := e.mustHctl("ps", "drn").Stdout
	gauge := e.scrape().val("agentd_drain_open_connections", `app="drn"`)
	for i := 2; i >= 0; i-- {
		end(i)
		waitConns(i)
	}
	t.Logf("open connections of the draining v1 web.1, as hctl ps --json showed them: %v", seen)
	t.Logf("hctl ps drn during the drain:\n%s", table)
	if fmt.Sprint(seen) != "[3 2 1 0]" {
		t.Errorf("ps showed %v, want [3 2 1 0]", seen)
	}
	if !strings.Contains(table, "CONNS") || !strings.Contains(table, "KILL IN") || !strings.Contains(table, "draining") {
		t.Errorf("hctl ps lacks the drain columns:\n%s", table)
	}
	if gauge < 1 {
		t.Errorf("agentd_drain_open_connections was %v while connections were open", gauge)
	}
	for i, err := range wait() {
		if err != nil {
			t.Errorf("request %d failed: %v", i, err)
		}
	}
	out := <-done
	t.Logf("hctl deploy:\n%s", out.r)
	for _, want := range []string{"v1 web.1 draining: 3 connections open", "v1 web.1 draining: 0 connections open",
		"outlived the 15s drain timeout: SIGKILLed, with no connection open"} {
		if !strings.Contains(out.r, want) {
			t.Errorf("the progress stream lacks %q:\n%s", want, out.r)
		}
	}
	// The history has the whole deploy: who, phases, result.
	if out.res.Status != api.StatusActive || out.res.DeployedBy == "" || len(out.res.Phases) != 5 {
		t.Errorf("releases info v2: %+v", out.res)
	}
	if st := e.status(); len(st.Sockets) != 1 || !st.Sockets[0].InUse {
		t.Errorf("status sockets: %+v, want the web socket in use", st.Sockets)
	}
}

func (e *env) status() api.Status {
	e.t.Helper()
	var st api.Status
	e.json(&st, "status")
	return st
}
