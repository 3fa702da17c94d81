package fleet_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/fleet"
	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/loadgen"
)

// gate is the environment variable that turns the fleet test on: it needs
// root, makes network namespaces and installs nothing itself.
const gate = "AGENTD_FLEET_TEST"

// Procfiles of the releases. The release phase appends to a file of the host
// it runs on, so the test sees where and how often it ran. needsConf is a
// release whose web process exits at boot on a host without /srv/web.conf
// (a file each host is provisioned with): it fails on the host that lacks it.
const (
	migrate      = `release: echo "migrated to $(cat VERSION)" >> /srv/migrations.log` + "\n"
	goodProcfile = "web: ./goapp\n" + migrate
	needsConf    = `web: if [ ! -r /srv/web.conf ]; then echo "/srv/web.conf is missing on this host" >&2; exit 3; fi; exec ./goapp` + "\n" + migrate
	// failsBake serves, then 4 s after its start stops the way it would on
	// SIGTERM (the shell's pid is goapp's after exec): a release that
	// passes readiness and fails its bake window, losing no request.
	failsBake = `web: (sleep 4; kill -TERM $$) & exec ./goapp` + "\n" + migrate
)

// The load through haproxy during each play: an open loop of POSTs on
// kept-alive connections (the strictest kind), bounded in time and count.
const (
	loadRate    = 400
	loadWorkers = 8
	maxLoad     = 10 * time.Minute // a bound; a play is over long before
)

// TestFleet is the fleet test of docs/fleet.md: three hosts with their own
// sshd and agentd, haproxy in front, and Debian's Ansible running
// packaging/ansible/deploy.yml while a load client counts failed requests.
func TestFleet(t *testing.T) {
	if os.Getenv(gate) != "1" {
		t.Skipf("set %s=1 to run (make fleet-test): needs root, ansible, haproxy and sshd", gate)
	}
	began := time.Now()
	// Registered first, so it runs last, once every process of the lab was
	// reaped: the CPU the whole test cost, its own and its children's.
	t.Cleanup(func() {
		var self, children syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &self)
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
		cpu := func(r syscall.Rusage) float64 {
			return time.Duration(r.Utime.Nano() + r.Stime.Nano()).Seconds()
		}
		t.Logf("whole test: %.1fs wall; CPU %.1fs in the test binary (load client), %.1fs in its children (builds, lab, Ansible, apps)",
			time.Since(began).Seconds(), cpu(self), cpu(children))
	})
	ctx := t.Context()
	// A short directory: ssh control sockets live under it.
	dir, err := os.MkdirTemp("", "fleet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("FLEET_KEEP") != "" {
			t.Logf("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bins, err := harness.Build(filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	// The app of the releases, built as a release build would be: stripped,
	// so the artifact Ansible copies to each host is small.
	app := filepath.Join(dir, "app", "goapp")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", app, "./examples/goapp")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	lintPlaybook(t, filepath.Join(root, "packaging", "ansible"), dir)

	lab, err := fleet.Up(ctx, fleet.Config{
		Dir: dir, Bins: bins, Hosts: 3,
		Balance: map[string]int{"web": 8080, "plain": 8081},
		Logf:    t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Down(); err != nil {
			t.Errorf("fleet lab down: %v", err)
		}
	})
	h1, h2, h3 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	f := &fixture{t: t, ctx: ctx, lab: lab, bins: bins, app: app, dir: dir,
		playbook: filepath.Join(root, "packaging", "ansible", "deploy.yml")}

	// The negative control first: the same fleet, haproxy, load and
	// Ansible, with a plain restart instead of agentd's switch.
	control := f.plainRestart(filepath.Join(root, "internal", "fleet", "testdata", "plain-restart.yml"))
	if control.load.Failed == 0 {
		t.Fatalf("negative control: a plain restart of each host dropped no request (%s): the test cannot see drops", control.load)
	}

	relA := f.release("A", goodProcfile)
	relB := f.release("B", goodProcfile)
	relC := f.release("C", goodProcfile)
	relD := f.release("D", needsConf)

	// The first deploy creates the app on every host. No load: nothing
	// served before it.
	// It also tries the role's HTTP gate (the other plays skip it, to save
	// time: it is the dearest task).
	first := f.play("first deploy, creating the app (no load)", relA, "100%", false,
		map[string]any{"agentd_health_url": "http://127.0.0.1:8080/healthz"})
	f.wantExit(first, 0)
	f.wantReport(first, report{Moved: []string{"host1", "host2", "host3"}})
	f.wantServing(relA, h1, h2, h3)
	// Hosts 1 and 3 have the file release D needs; host 2 lacks it.
	for _, h := range []*fleet.Host{h1, h3} {
		if err := os.WriteFile(h.Path("/srv/web.conf"), []byte("provisioned\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// It also tries staging: the release copied to every host before the
	// first batch.
	rolling := f.play("rolling deploy, one host at a time", relB, 1, true, map[string]any{"agentd_stage": true})
	f.wantExit(rolling, 0)
	f.wantNoDrops(rolling)
	f.wantReport(rolling, report{Moved: []string{"host1", "host2", "host3"}})
	f.wantBatches(rolling, [][]string{{"host1"}, {"host2"}, {"host3"}})
	f.wantServing(relB, h1, h2, h3)

	allAtOnce := f.play("deploy to all hosts at once", relC, "100%", true)
	f.wantExit(allAtOnce, 0)
	f.wantNoDrops(allAtOnce)
	f.wantReport(allAtOnce, report{Moved: []string{"host1", "host2", "host3"}})
	f.wantBatches(allAtOnce, [][]string{{"host1", "host2", "host3"}})
	f.wantServing(relC, h1, h2, h3)

	// Release D fails on host 2: the play stops there, host 2 keeps serving
	// C, host 3 is not touched (not even a failed release recorded, not even
	// the artifact copied).
	h3Releases := len(f.releases(h3))
	h3Artifact := h3.Path("/var/tmp/agentd-deploy/web.tar.gz")
	failing := f.play("release that fails on host 2", relD, 1, true)
	if failing.play.Code == 0 {
		t.Fatalf("%s: the play succeeded:\n%s", failing.name, failing.play.Tail(40))
	}
	f.wantNoDrops(failing)
	rep := f.wantReport(failing, report{Moved: []string{"host1"}, Failed: []string{"host2"}, NotReached: []string{"host3"}})
	f.wantBatches(failing, [][]string{{"host1"}, {"host2"}})
	if o := rep.Hosts["host2"]; !strings.Contains(o.Error, "exited") {
		t.Errorf("%s: host2's failure in the report does not say the process exited: %+v", failing.name, o)
	}
	f.wantServing(relD, h1)
	f.wantServing(relC, h2, h3)
	if rels := f.releases(h2); rels[0].Status != api.StatusFailed || rels[0].ReleaseID != f.id(relD) {
		t.Errorf("host2's newest release is not the failed D: %+v", rels[0])
	}
	if n := len(f.releases(h3)); n != h3Releases {
		t.Errorf("host3 was touched: %d releases before the play, %d after", h3Releases, n)
	}
	if got := f.id(h3Artifact); got != f.id(relC) {
		t.Errorf("host3 was touched: its artifact is %s, not C's %s", got, f.id(relC))
	}
	if !regexp.MustCompile(`(?m)^host3\s+: ok=\d+\s+changed=0\s`).MatchString(failing.play.Output) {
		t.Errorf("%s: host3 does not report changed=0 in the recap:\n%s", failing.name, failing.play.Tail(12))
	}

	// The cause fixed on host 2 (its missing file provisioned), the same
	// play again moves only hosts 2 and 3; host 1 reports unchanged.
	if err := os.WriteFile(h2.Path("/srv/web.conf"), []byte("provisioned\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rerun := f.play("re-run after the fix", relD, 1, true)
	f.wantExit(rerun, 0)
	f.wantNoDrops(rerun)
	f.wantReport(rerun, report{Moved: []string{"host2", "host3"}, Unchanged: []string{"host1"}})
	f.wantBatches(rerun, [][]string{{"host1"}, {"host2"}, {"host3"}})
	if !regexp.MustCompile(`(?m)^host1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0`).MatchString(rerun.play.Output) {
		t.Errorf("%s: host1 does not report changed=0 in the recap:\n%s", rerun.name, rerun.play.Tail(8))
	}
	f.wantServing(relD, h1, h2, h3)

	// The release phase ran once per release, on host 1 only, and not again
	// on the re-run.
	if b, err := os.ReadFile(h1.Path("/srv/migrations.log")); err != nil {
		t.Error(err)
	} else if got, want := string(b), "migrated to A\nmigrated to B\nmigrated to C\nmigrated to D\n"; got != want {
		t.Errorf("host1 ran the release phases\n%s\nwant\n%s", got, want)
	}
	for _, h := range []*fleet.Host{h2, h3} {
		if _, err := os.Stat(h.Path("/srv/migrations.log")); err == nil {
			t.Errorf("%s ran a release phase", h.Name)
		}
	}

	// Release E fails its bake window on host 1: agentd rolls it back there
	// by itself (host 1 serves D's code again), the play stops, hosts 2
	// and 3 never get E.
	relE := f.release("E", failsBake)
	h2Releases, h3Releases := len(f.releases(h2)), len(f.releases(h3))
	baking := f.play("release that fails its bake on host 1", relE, 1, true, map[string]any{"agentd_bake": "20s"})
	if baking.play.Code == 0 {
		t.Fatalf("%s: the play succeeded:\n%s", baking.name, baking.play.Tail(40))
	}
	f.wantNoDrops(baking)
	rep = f.wantReport(baking, report{Failed: []string{"host1"}, NotReached: []string{"host2", "host3"}})
	if o := rep.Hosts["host1"]; !strings.Contains(o.Error, "rolled back automatically") {
		t.Errorf("%s: host1's failure in the report does not say it was rolled back: %+v", baking.name, o)
	}
	f.wantServing(relD, h1, h2, h3)
	if rels := f.releases(h1); rels[0].Source != "auto-rollback" || rels[1].Status != api.StatusFailed || rels[1].ReleaseID != f.id(relE) {
		t.Errorf("host1's newest releases are not E failed then its rollback: %+v", rels[:2])
	}
	if n2, n3 := len(f.releases(h2)), len(f.releases(h3)); n2 != h2Releases || n3 != h3Releases {
		t.Errorf("hosts 2 and 3 were touched: %d and %d releases before the play, %d and %d after", h2Releases, h3Releases, n2, n3)
	}

	t.Logf("summary (whole test %.1fs):", time.Since(began).Seconds())
	for _, s := range append([]*scenario{control, first}, rolling, allAtOnce, failing, rerun, baking) {
		t.Logf("  %-44s ansible exit %d in %5.1fs (%4.1fs CPU); %s", s.name, s.play.Code, s.play.Took.Seconds(), s.play.CPU.Seconds(), s.loadLine())
	}
}

// fixture is what the steps of TestFleet share.
type fixture struct {
	t        *testing.T
	ctx      context.Context
	lab      *fleet.Lab
	bins     harness.Bins
	app      string // goapp, for the releases
	dir      string
	playbook string
	ids      map[string]string // artifact -> release id
}

// scenario is one play, with the load that ran during it.
type scenario struct {
	name     string
	artifact string
	play     fleet.Play
	report   string // the role's report file
	loaded   bool
	load     loadgen.Result
}

func (s *scenario) loadLine() string {
	if !s.loaded {
		return "no load"
	}
	return s.load.String()
}

// release writes a release (goapp, a Procfile, VERSION) and packs it as a
// .tar.gz, as a build would.
func (f *fixture) release(name, procfile string) string {
	f.t.Helper()
	d := filepath.Join(f.dir, "releases", name)
	if _, err := harness.Release(d, procfile, map[string]string{"VERSION": name + "\n"}); err != nil {
		f.t.Fatal(err)
	}
	if err := harness.CopyFile(f.app, filepath.Join(d, "goapp")); err != nil {
		f.t.Fatal(err)
	}
	art := d + ".tar.gz"
	out, err := os.Create(art)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := api.PackDir(out, d); err != nil {
		f.t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		f.t.Fatal(err)
	}
	return art
}

// id is the release id the role gives an artifact: its sha256. It also
// serves to compare a file on a host with an artifact.
func (f *fixture) id(artifact string) string {
	if id, ok := f.ids[artifact]; ok && strings.HasPrefix(artifact, filepath.Join(f.dir, "releases")) {
		return id
	}
	in, err := os.Open(artifact)
	if err != nil {
		f.t.Fatal(err)
	}
	defer in.Close()
	h := sha256.New()
	if _, err := io.Copy(h, in); err != nil {
		f.t.Fatal(err)
	}
	if f.ids == nil {
		f.ids = map[string]string{}
	}
	f.ids[artifact] = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return f.ids[artifact]
}

// startLoad starts the load client on a haproxy frontend and returns once
// requests are answered.
func (f *fixture) startLoad(url string) *loadgen.Run {
	f.t.Helper()
	run, err := loadgen.Start(f.ctx, loadgen.Config{
		URL: url, Kind: loadgen.KeepAlivePost, Workers: loadWorkers, Rate: loadRate,
		Duration: maxLoad, MaxRequests: int(maxLoad.Seconds()) * loadRate, Timeout: 10 * time.Second,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for run.Snapshot().OK < loadRate/10 {
		if s := run.Snapshot(); s.Failed > 0 || time.Now().After(deadline) {
			f.t.Fatalf("load on %s before the play: %s", url, run.Stop())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return run
}

// play runs deploy.yml with the artifact and batch size, under load if
// loaded, with more extra variables if given.
func (f *fixture) play(name, artifact string, serial any, loaded bool, more ...map[string]any) *scenario {
	f.t.Helper()
	s := &scenario{name: name, artifact: artifact, loaded: loaded,
		report: filepath.Join(f.dir, "report-"+strings.ReplaceAll(name, " ", "-")+".json")}
	var run *loadgen.Run
	if loaded {
		run = f.startLoad(f.lab.URLs["web"])
	}
	vars := map[string]any{
		"agentd_app":         "web",
		"agentd_artifact":    artifact,
		"agentd_serial":      serial,
		"agentd_message":     name,
		"agentd_sockets":     []string{"web=tcp://0.0.0.0:8080"},
		"agentd_readiness":   map[string]string{"web": "notify"},
		"agentd_allow_root":  true,
		"agentd_report_file": s.report,
	}
	for _, m := range more {
		maps.Copy(vars, m)
	}
	s.play = f.lab.Ansible(f.ctx, f.playbook, vars)
	if loaded {
		s.load = run.Stop()
		if s.load.Elapsed < s.play.Took {
			f.t.Errorf("%s: the load stopped after %s, before the play ended (%s)", name, s.load.Elapsed, s.play.Took)
		}
	}
	f.t.Logf("%s: ansible exit %d in %.1fs; %s", name, s.play.Code, s.play.Took.Seconds(), s.loadLine())
	return s
}

// plainRestart runs the negative control: goapp on port 8081 of every host,
// kept running by a supervisor that starts it again whenever it exits (as
// systemd's Restart=always would), behind haproxy's "plain" frontend; the
// play restarts it host by host while the same load runs.
func (f *fixture) plainRestart(playbook string) *scenario {
	f.t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	started := make(chan error, len(f.lab.Hosts))
	for _, h := range f.lab.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for {
				p, err := h.Start("plain", "msg=serving", []string{"PORT=8081"}, f.bins.GoApp)
				if err == nil {
					err = writeAtomic(h.Path("/srv/plain.pid"), fmt.Sprintln(p.PID()))
				}
				if first {
					started <- err
					first = false
				}
				if err != nil {
					return
				}
				select {
				case <-p.Done():
				case <-stop:
					p.Stop(10 * time.Second)
					return
				}
				// systemd's default RestartSec=100ms before Restart=
				// starts it again: without it the gap is only goapp's own
				// start, and a run could drop too few requests to count.
				select {
				case <-time.After(100 * time.Millisecond):
				case <-stop:
					return
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for range f.lab.Hosts {
		if err := <-started; err != nil {
			f.t.Fatal(err)
		}
	}
	s := &scenario{name: "negative control: plain restart, one at a time", loaded: true}
	run := f.startLoad(f.lab.URLs["plain"])
	s.play = f.lab.Ansible(f.ctx, playbook, nil)
	s.load = run.Stop()
	f.t.Logf("%s: ansible exit %d in %.1fs; %s", s.name, s.play.Code, s.play.Took.Seconds(), s.load)
	if s.play.Code != 0 {
		f.t.Fatalf("%s: ansible exit %d:\n%s", s.name, s.play.Code, s.play.Tail(40))
	}
	return s
}

func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (f *fixture) wantExit(s *scenario, code int) {
	f.t.Helper()
	if s.play.Code != code {
		f.t.Fatalf("%s: ansible exit %d, want %d:\n%s", s.name, s.play.Code, code, s.play.Tail(60))
	}
}

// switchTask matches the role's switch task and the hosts it ran on, in the
// play's output.
var switchTask = regexp.MustCompile(`(?m)^TASK \[agentd_deploy : Switch to the release\][^\n]*\n(?:[^\n]*\d{4}\s+\d\d:\d\d:\d\d[^\n]*\n)?((?:(?:ok|changed|fatal): \[host\d\][^\n]*\n)+)`)

// wantBatches checks on which hosts, batch after batch, the switch ran.
func (f *fixture) wantBatches(s *scenario, want [][]string) {
	f.t.Helper()
	var got [][]string
	for _, m := range switchTask.FindAllStringSubmatch(s.play.Output, -1) {
		var batch []string
		for _, h := range regexp.MustCompile(`\[(host\d)\]`).FindAllStringSubmatch(m[1], -1) {
			batch = append(batch, h[1])
		}
		slices.Sort(batch)
		got = append(got, batch)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		f.t.Errorf("%s: the switch ran in batches %v, want %v", s.name, got, want)
	}
}

func (f *fixture) wantNoDrops(s *scenario) {
	f.t.Helper()
	if err := s.load.Verify(); err != nil {
		f.t.Errorf("%s: %v", s.name, err)
	}
}

// report is the role's fleet report (agentd_report_file).
type report struct {
	App        string                 `json:"app"`
	ReleaseID  string                 `json:"release_id"`
	Moved      []string               `json:"moved"`
	Unchanged  []string               `json:"unchanged"`
	Failed     []string               `json:"failed"`
	NotReached []string               `json:"not_reached"`
	Hosts      map[string]hostOutcome `json:"hosts"`
}

type hostOutcome struct {
	Outcome string `json:"outcome"`
	Before  string `json:"before"`
	Serves  string `json:"serves"`
	Task    string `json:"task"`
	Error   string `json:"error"`
}

// wantReport checks which hosts the role's report says moved, were
// unchanged, failed or were not reached.
func (f *fixture) wantReport(s *scenario, want report) report {
	f.t.Helper()
	var got report
	b, err := os.ReadFile(s.report)
	if err != nil {
		f.t.Fatalf("%s: no report: %v\n%s", s.name, err, s.play.Tail(40))
	}
	if err := json.Unmarshal(b, &got); err != nil {
		f.t.Fatalf("%s: report: %v\n%s", s.name, err, b)
	}
	norm := func(l []string) []string {
		if len(l) == 0 {
			return nil
		}
		return slices.Sorted(slices.Values(l))
	}
	for _, c := range []struct {
		what      string
		got, want []string
	}{
		{"moved", got.Moved, want.Moved},
		{"unchanged", got.Unchanged, want.Unchanged},
		{"failed", got.Failed, want.Failed},
		{"not reached", got.NotReached, want.NotReached},
	} {
		if !slices.Equal(norm(c.got), norm(c.want)) {
			f.t.Errorf("%s: report says %s %v, want %v\n%s", s.name, c.what, c.got, c.want, b)
		}
	}
	if got.ReleaseID != f.id(s.artifact) {
		f.t.Errorf("%s: report's release id %q, want %q", s.name, got.ReleaseID, f.id(s.artifact))
	}
	return got
}

// appStatus is `hctl status APP --json`.
type appStatus struct {
	Release   string `json:"release"`
	ReleaseID string `json:"release_id"`
	Healthy   bool   `json:"healthy"`
	Problem   string `json:"problem"`
}

// wantServing checks that each host serves the artifact's release, healthy.
func (f *fixture) wantServing(artifact string, hosts ...*fleet.Host) {
	f.t.Helper()
	for _, h := range hosts {
		var st appStatus
		if err := h.HctlJSON(f.ctx, &st, "status", "web"); err != nil {
			f.t.Fatal(err)
		}
		if st.ReleaseID != f.id(artifact) || !st.Healthy {
			f.t.Errorf("%s serves %s (release id %s, healthy %v %s), want the release of %s",
				h.Name, st.Release, st.ReleaseID, st.Healthy, st.Problem, filepath.Base(artifact))
		}
	}
}

// releases lists a host's releases, newest first.
func (f *fixture) releases(h *fleet.Host) []api.Release {
	f.t.Helper()
	var rels []api.Release
	if err := h.HctlJSON(f.ctx, &rels, "releases", "web"); err != nil {
		f.t.Fatal(err)
	}
	if len(rels) == 0 {
		f.t.Fatalf("%s has no release", h.Name)
	}
	return rels
}

// lintPlaybook runs ansible-lint (production profile) on the playbook and
// its role, keeping its caches under dir.
func lintPlaybook(t *testing.T, playbookDir, dir string) {
	t.Helper()
	home := filepath.Join(dir, "lint-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ansible-lint", "--nocolor", "--profile", "production", "deploy.yml")
	cmd.Dir = playbookDir
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, "cache"),
		"ANSIBLE_HOME="+filepath.Join(home, "ansible"), "ANSIBLE_LOCAL_TEMP="+filepath.Join(home, "tmp"), "NO_COLOR=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ansible-lint: %v\n%s", err, out)
	}
	t.Logf("ansible-lint (production profile) passed in %.1fs", time.Since(start).Seconds())
}
