package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/wsload"
)

// Long-lived connections (WebSockets) through deploys: drains that outlive
// the deploy, several generations at once, paced shedding at the deadline.

var wsappOnce struct {
	sync.Once
	path string
	err  error
}

// wsapp builds examples/wsapp once for the package's tests.
func wsapp(t *testing.T) string {
	t.Helper()
	wsappOnce.Do(func() {
		root, err := harness.ModuleRoot()
		if err != nil {
			wsappOnce.err = err
			return
		}
		dir := filepath.Dir(bins.TestApp)
		wsappOnce.path = filepath.Join(dir, "wsapp")
		cmd := exec.Command("go", "build", "-o", wsappOnce.path, "./examples/wsapp")
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			wsappOnce.err = fmt.Errorf("go build ./examples/wsapp: %v\n%s", err, out)
		}
	})
	if wsappOnce.err != nil {
		t.Fatal(wsappOnce.err)
	}
	return wsappOnce.path
}

// wsRelease writes a release of wsapp; every call gives new content.
func (e *env) wsRelease(t *testing.T) string {
	t.Helper()
	releaseN++
	dir := filepath.Join(e.dir, fmt.Sprintf("ws%d", releaseN))
	if _, err := harness.Release(dir, "web: ./wsapp\n", map[string]string{"VERSION": fmt.Sprint(releaseN)}); err != nil {
		t.Fatal(err)
	}
	if err := harness.CopyFile(wsapp(t), filepath.Join(dir, "wsapp")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func wsURL(url string) string {
	return "ws" + strings.TrimPrefix(strings.TrimSuffix(url, "/"), "http") + "/ws"
}

// TestDrainsOutliveTheDeploy: 1,000 WebSocket clients on v1; v2, v3 and v4
// deployed one right after the other with --wait-drain 1s: each hctl
// deploy returns within the boot + 2 s, v1's and v2's clients keep
// exchanging messages until their generation's deadline, clients that
// reconnect land on the newest release, short requests lose nothing.
// Without a shed rate each generation's connections end together at its
// deadline.
func TestDrainsOutliveTheDeploy(t *testing.T) {
	e := start(t)
	const drain = 8 * time.Second
	url := e.createApp("ws", "--readiness", "web=notify", "--drain-timeout", "30s", "--drain-timeout", "web="+drain.String())
	e.deploy("ws", e.wsRelease(t))
	run, err := wsload.Start(context.Background(), wsload.Config{URL: wsURL(url), Clients: 1000, Every: 500 * time.Millisecond,
		Reconnect: true, Duration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Stop() })
	select {
	case <-run.Connected():
	case <-time.After(60 * time.Second):
		t.Fatal("1,000 clients did not connect within 60s")
	}
	ls := startLoads(t, url)

	retired := map[string]time.Time{} // when each release was retired
	prev := "v1"
	var second *wsload.Run
	for i := range 3 {
		began := time.Now()
		r := e.mustHctl("deploy", "ws", e.wsRelease(t), "--wait-drain", "1s")
		took := time.Since(began)
		retired[prev] = began
		// It returns without waiting for the drain (8s): how much sooner
		// is the machine's speed (figures in the log).
		t.Logf("hctl deploy --wait-drain 1s returned after %s", took.Round(10*time.Millisecond))
		if took > drain-time.Second {
			t.Errorf("hctl deploy took %s with --wait-drain 1s: it waited for the %s drain", took, drain)
		}
		if i < 2 && !strings.Contains(r.Stdout, "the drain goes on in the background") {
			t.Errorf("hctl deploy does not say the drain goes on: %s", r)
		}
		var info api.AppInfo
		e.json(&info, "apps", "info", "ws")
		prev = info.ActiveRelease
		if i == 0 {
			// 300 more clients, on v2: it has connections of its own to
			// drain when v3 comes.
			second, err = wsload.Start(context.Background(), wsload.Config{URL: wsURL(url), Clients: 300, Every: 500 * time.Millisecond,
				Reconnect: true, Duration: 2 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { second.Stop() })
			<-second.Connected()
		}
	}
	// Every earlier generation drains now, each with its own deadline.
	draining := map[string]bool{}
	for _, p := range e.ps("ws") {
		if p.State == api.StateDraining && p.Connections != nil && !p.KillAt.IsZero() {
			draining[p.Release] = true
		}
	}
	if !draining["v1"] || !draining["v2"] {
		t.Errorf("hctl ps does not show v1 and v2 draining with connections and a deadline: %+v", e.ps("ws"))
	}
	// Wait until v3's deadline has passed and its clients came back.
	waitFor(t, "v2's clients back on v4", func() bool {
		if time.Since(retired["v2"]) < drain+3*time.Second {
			return false
		}
		for _, p := range e.ps("ws") {
			if p.Release != "v4" {
				return false
			}
		}
		return true
	})
	ls.stopAndCheck(t)
	res := run.Stop()
	res2 := second.Stop()
	res.Conns = append(res.Conns, res2.Conns...)
	for _, v := range []string{"v1", "v2"} {
		c := res.Closes(v)
		if c.Count == 0 {
			t.Fatalf("no connection of %s closed: %v", v, res.ByRelease())
		}
		deadline := retired[v].Add(drain)
		if early := deadline.Sub(c.First); early > 500*time.Millisecond {
			t.Errorf("%s's connections began to close %s before its deadline", v, early)
		}
		if c.Spread > 2*time.Second {
			t.Errorf("without a shed rate %s's connections should end together at the deadline; they spread over %s", v, c.Spread)
		}
		t.Logf("%s: %d connections closed %s after the deploy that retired it, spread %s, peak %d/s",
			v, c.Count, c.First.Sub(retired[v]).Round(10*time.Millisecond), c.Spread.Round(10*time.Millisecond), c.PeakPerSecond)
	}
	back := 0
	for _, c := range res.Conns {
		if c.Attempt > 0 {
			back++
			if c.Release != "v4" {
				t.Errorf("client %d reconnected to %s, want the newest release v4", c.Client, c.Release)
				break
			}
		}
		if c.Release == "v1" && c.Messages < 4 {
			t.Errorf("a v1 client exchanged only %d messages before its deadline", c.Messages)
			break
		}
	}
	if back < 1200 {
		t.Errorf("%d clients reconnected, want about 1,300", back)
	}
	t.Logf("websockets: %d messages, by release %v, by how they ended %v", res.Messages(), res.ByRelease(), res.ByHow())
}

// TestShedRate: with --shed-rate 100 and a 10s drain timeout, v1's 1,000
// connections are closed over no less than 10 s at about 100 a second,
// across a kill -9 of agentd while they drain: the deadline and the
// shedding survive the restart.
func TestShedRate(t *testing.T) {
	e := start(t)
	const drain = 10 * time.Second
	url := e.createApp("sh", "--readiness", "web=notify", "--drain-timeout", drain.String(), "--shed-rate", "100")
	e.deploy("sh", e.wsRelease(t))
	run, err := wsload.Start(context.Background(), wsload.Config{URL: wsURL(url), Clients: 1000, Every: time.Second,
		Reconnect: true, Duration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Stop() })
	select {
	case <-run.Connected():
	case <-time.After(60 * time.Second):
		t.Fatal("1,000 clients did not connect within 60s")
	}
	ls := startLoads(t, url)
	began := time.Now()
	e.mustHctl("deploy", "sh", e.wsRelease(t), "--wait-drain", "1s")
	// agentd dies and comes back while v1 drains.
	e.ag.Kill()
	if err := e.ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "v1 gone", func() bool {
		if time.Since(began) < drain {
			return false
		}
		for _, p := range e.ps("sh") {
			if p.Release == "v1" {
				return false
			}
		}
		return true
	})
	ls.stopAndCheck(t)
	res := run.Stop()
	c := res.Closes("v1")
	t.Logf("v1: %d connections closed from %s after the deploy, over %s, peak %d/s (shed rate 100/s); by how %v",
		c.Count, c.First.Sub(began).Round(10*time.Millisecond), c.Spread.Round(10*time.Millisecond), c.PeakPerSecond, res.ByHow())
	if c.Count < 990 {
		t.Fatalf("%d of v1's connections closed, want 1,000", c.Count)
	}
	if early := began.Add(drain).Sub(c.First); early > 500*time.Millisecond {
		t.Errorf("shedding began %s before the deadline", early)
	}
	if c.Spread < 9*time.Second {
		t.Errorf("1,000 connections at 100/s closed over %s, want about 10s", c.Spread)
	}
	// The rate over the whole shedding is the pacing's; the peak of one
	// second (closes a starved client goroutine saw bunched) only has to
	// show no herd: without a shed rate it is the whole generation.
	if avg := float64(c.Count-1) / c.Spread.Seconds(); avg < 80 || avg > 120 || c.PeakPerSecond > 200 {
		t.Errorf("closes at %.0f/s on average, peak %d/s; want the average within 20%% of 100 and no burst", avg, c.PeakPerSecond)
	}
	m := e.scrape()
	if v := m.val("agentd_drain_connections_shed_total", `app="sh"`); v < 990 {
		t.Errorf("agentd_drain_connections_shed_total{app=sh} = %v", v)
	}
}
