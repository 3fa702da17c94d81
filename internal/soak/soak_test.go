// Package soak is `make soak`: agentd killed with SIGKILL at random
// instants of every kind of operation under load, then a long run of
// deploys that watches agentd's memory, fds, goroutines and state
// directory. It drives the real agentd binary through the real hctl, so it
// holds agentd to what a user sees, whatever its insides. Never part of
// `make test`: it needs AGENTD_SOAK=1 and takes about 10 minutes.
package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/loadgen"
)

const gate = "AGENTD_SOAK"

// Sizes of the run (the acceptance).
const (
	kills       = 100
	perKind     = 10
	deploys     = 1000
	baselineAt  = 10 // deploys before the baseline is measured
	maxAttempts = 4  // ops that end before their kill instant, per kill, before it is forced
)

// Limits of the long run, against the baseline.
const (
	rssSlackKiB    = 5 << 10
	goroutineSlack = 10
	stateSlack     = 64 << 10 // bytes per state subdirectory
)

func TestSoak(t *testing.T) {
	if os.Getenv(gate) != "1" {
		t.Skipf("set %s=1 to run (make soak): about 10 minutes", gate)
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SOAK_SEED=%q: %v", v, err)
		}
	}
	fmt.Printf("soak: seed %d (replay the kill schedule with SOAK_SEED=%d make soak)\n", seed, seed)
	s := newSoak(t, seed)
	url := s.setUp()

	started := time.Now()
	ls := startLoads(t, url, 100)
	s.killRounds(ls)
	checkLoads(t, "kill rounds", ls)
	fmt.Printf("soak: %d kills in %s\n", kills, time.Since(started).Round(time.Second))

	// The long run watches agentd's resources, not requests: without load,
	// and with a short drain to keep it short. (The test app's drain loses
	// nothing only while each kept-alive connection sends more often than
	// its grace, 500 ms by default: at 250 ms, 1 request in 10,750 failed.)
	started = time.Now()
	s.must("config", "set", mainApp, "TESTAPP_GRACE=50ms")
	s.longRun()
	fmt.Printf("soak: %d deploys in %s\n", deploys, time.Since(started).Round(time.Second))
}

// soak is one run: an agentd on a private directory and its apps.
type soak struct {
	t    *testing.T
	bins harness.Bins
	ag   *harness.Agentd
	dir  string
	rng  *rand.Rand

	apps      map[string]bool // every app this run ever created
	transient string          // the app of the create and destroy kinds, "" when none
	appN      int
	relN      int
}

const mainApp = "soak"

func newSoak(t *testing.T, seed uint64) *soak {
	bins := soakBins(t)
	// Short: unix socket paths have at most 107 bytes.
	dir, err := os.MkdirTemp("", "soak-")
	if err != nil {
		t.Fatal(err)
	}
	ag, err := harness.Start(bins, dir, "--keep-releases", "10")
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	s := &soak{t: t, bins: bins, ag: ag, dir: dir, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), apps: map[string]bool{mainApp: true}}
	t.Cleanup(func() {
		var ps []api.Process
		s.ag.HctlJSON(&ps, "ps")
		s.ag.Stop() // --stop-apps-on-exit: drains and stops every app
		for _, p := range ps {
			if alive(p.PID) {
				t.Errorf("pid %d (%s %s) outlived agentd's stop", p.PID, p.App, p.Name)
				killGroup(p.PID)
			}
		}
		if t.Failed() {
			t.Logf("agentd log (last 200 lines):\n%s", tail(s.ag.Log(), 200))
		}
		os.RemoveAll(dir)
	})
	return s
}

// soakBins are prebuilt binaries from $SOAK_BINS (agentd, hctl, testapp),
// or the tree built now.
func soakBins(t *testing.T) harness.Bins {
	if d := os.Getenv("SOAK_BINS"); d != "" {
		return harness.Bins{Agentd: filepath.Join(d, "agentd"), Hctl: filepath.Join(d, "hctl"), TestApp: filepath.Join(d, "testapp")}
	}
	dir := t.TempDir()
	bins, err := harness.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	return bins
}

// setUp creates the app under load with a first release and returns its URL.
func (s *soak) setUp() string {
	s.must(s.createArgs(mainApp)...)
	// Two releases that served, so that a rollback has one to go back to.
	s.must("deploy", mainApp, s.release())
	s.must("deploy", mainApp, s.release())
	var info api.AppInfo
	if r := s.ag.HctlJSON(&info, "apps", "info", mainApp); r.Code != 0 || len(info.Sockets) == 0 {
		s.t.Fatalf("apps info %s: %s", mainApp, r)
	}
	return "http://" + info.Sockets[0].Bound + "/"
}

func (s *soak) createArgs(name string) []string {
	return []string{"apps", "create", name, "--socket", "web=tcp://127.0.0.1:0", "--allow-root",
		"--readiness", "web=notify", "--drain-timeout", "10s", "--boot-timeout", "30s"}
}

// release writes a release of the test app with content no other has.
func (s *soak) release() string {
	s.relN++
	dir := filepath.Join(s.dir, "release")
	procfile := fmt.Sprintf("web: exec %s\n", s.bins.TestApp)
	if _, err := harness.Release(dir, procfile, map[string]string{"VERSION": strconv.Itoa(s.relN)}); err != nil {
		s.t.Fatal(err)
	}
	return dir
}

func (s *soak) must(args ...string) harness.Result {
	s.t.Helper()
	r := s.ag.Hctl(args...)
	if r.Code != 0 {
		s.t.Fatalf("hctl %v: %s", args, r)
	}
	return r
}

// startLoads sends kept-alive and new-connection POSTs to url, rate per
// second each, until stopped.
func startLoads(t *testing.T, url string, rate float64) []*loadgen.Run {
	var ls []*loadgen.Run
	for _, k := range []loadgen.Kind{loadgen.KeepAlivePost, loadgen.NewConnPost} {
		r, err := loadgen.Start(context.Background(), loadgen.Config{URL: url, Kind: k, Workers: 2, Rate: rate, MaxRequests: 10_000_000})
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, r)
	}
	t.Cleanup(func() {
		for _, r := range ls {
			r.Stop()
		}
	})
	return ls
}

func failed(ls []*loadgen.Run) int64 {
	var n int64
	for _, r := range ls {
		n += r.Snapshot().Failed
	}
	return n
}

func checkLoads(t *testing.T, what string, ls []*loadgen.Run) {
	t.Helper()
	for _, r := range ls {
		res := r.Stop()
		fmt.Printf("soak: %s load: %s\n", what, res)
		if res.Failed != 0 || res.OK == 0 {
			t.Errorf("%s: %s: %d failed, %d ok: %v", what, res.Kind, res.Failed, res.OK, res.Errors)
		}
	}
}

func killGroup(pid int) {
	// By PID only: processes this run started (listed by its agentd).
	syscallKill(-pid)
}

func tail(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			if lines++; lines > n {
				return s[i+1:]
			}
		}
	}
	return s
}
