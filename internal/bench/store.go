package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// The store scenario (issue 14): from `hctl deploy` to the first response
// from the new code, minus the app's own boot, for releases of 8, 64 and
// 256 MB of new files and for a 256 MB release with one changed file;
// beside `cp -a` + `sync` of the same tree in the same run (the local
// physical reference), and the .tar.gz path (what a directory deploy was
// before: packed, sent, unpacked, digested) on the same content.

// storeResults is the scenario's output.
type storeResults struct {
	Runs int `json:"runs"`
	// OneFile is the number of one-file deploys per run (its .tar.gz
	// counterpart runs once a run).
	OneFile int `json:"one_file_deploys_per_run,omitempty"`
	// AppBoot is the app started directly (fork to its first answer): what
	// "minus the app's boot" subtracts.
	AppBoot Stat        `json:"app_boot_seconds"`
	Cases   []storeCase `json:"cases"`
	// StartChain is the process start chain against a direct fork+exec.
	StartChain []startCost `json:"process_start_chain"`
	// PeakRSSMiB is agentd's peak resident memory (VmHWM) over the
	// scenario: no file is held in memory whole.
	PeakRSSMiB float64 `json:"agentd_peak_rss_mib"`
	// WholeStart is the whole process start, as agentd times it
	// (wholestart.go).
	WholeStart *wholeStart `json:"whole_process_start,omitempty"`
	// Floor is what no deploy here goes below (storefloor.go).
	Floor *storeFloor `json:"machine_floor,omitempty"`
}

// storeCase is one release shape.
type storeCase struct {
	Name string `json:"name"`
	MiB  int    `json:"mib"`
	// CpA is `cp -a` of the same tree followed by `sync` (only for new
	// files: a one-file change has no cp -a equivalent).
	CpA Stat `json:"cp_a_sync_seconds"`
	// TarGz and Manifest are deploy → first new response, minus the app's
	// boot; Sent is the content hctl sent on the manifest path (MiB).
	TarGz    Stat `json:"targz_seconds"`
	Manifest Stat `json:"manifest_seconds"`
	Prepare  Stat `json:"manifest_prepare_seconds"`
	SentMiB  Stat `json:"manifest_sent_mib"`
	// Steps is where the manifest deploys' time went.
	Steps *storeSteps `json:"manifest_steps,omitempty"`
}

// storeBench is one agentd with one app, deployed from trees.
type storeBench struct {
	ag      *harness.Agentd
	bins    binaries
	dir     string
	url     string
	version int
	boot    float64
}

func storeScenario(o options, bins binaries, dir string) (*storeResults, error) {
	os.MkdirAll(dir, 0o755)
	// hctl's hash cache belongs to this run, not to the user running it.
	os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	ag, err := harness.Start(bins.Bins, filepath.Join(dir, "agentd"))
	if err != nil {
		return nil, err
	}
	atCleanup(ag.Stop)
	sb := &storeBench{ag: ag, bins: bins, dir: dir}
	args := []string{"apps", "create", "store", "--socket", "web=tcp://127.0.0.1:0", "--readiness", "web=notify"}
	if os.Geteuid() == 0 {
		// An app with its own user gets the shared read-only tree; an
		// --allow-root one would get a private copy per release.
		args = append(args, "--user", "nobody")
	}
	if r := ag.Hctl(args...); r.Code != 0 {
		return nil, fmt.Errorf("apps create: %s", r)
	}
	var info api.AppInfo
	if r := ag.HctlJSON(&info, "apps", "info", "store"); r.Code != 0 {
		return nil, fmt.Errorf("apps info: %s", r)
	}
	sb.url = "http://" + info.Sockets[0].Bound + "/"

	out := &storeResults{Runs: o.runs, OneFile: o.oneFile}
	var boots []float64
	for range 5 {
		b, err := directBoot(bins.BenchApp)
		if err != nil {
			return nil, err
		}
		boots = append(boots, b)
	}
	out.AppBoot = stat(boots)
	sb.boot = out.AppBoot.Median
	say("store: app boot (direct) %s", fmtDur(sb.boot))

	sizes := []int{8, 64, 256}
	accs := make([]storeAcc, len(sizes)+1)
	for run := range o.runs {
		var last string
		for i, mib := range sizes {
			// Two different trees of the same shape: one per path, so
			// neither finds the other's content already there.
			a, err := sb.tree(fmt.Sprintf("r%d-%d-tgz", run, mib), mib)
			if err != nil {
				return nil, err
			}
			b, err := sb.tree(fmt.Sprintf("r%d-%d-dir", run, mib), mib)
			if err != nil {
				return nil, err
			}
			cpa, err := cpASync(b, filepath.Join(dir, "cp-a"))
			if err != nil {
				return nil, err
			}
			tgz, err := sb.deployTarGz(a)
			if err != nil {
				return nil, err
			}
			man, prep, sent, steps, err := sb.deployDir(b)
			if err != nil {
				return nil, err
			}
			say("store: run %d, %d MiB new: cp -a+sync %s, .tar.gz %s, manifest %s (prepare %s, sent %.1f MiB)", run+1, mib, fmtDur(cpa), fmtDur(tgz), fmtDur(man), fmtDur(prep), sent)
			accs[i].cpa = append(accs[i].cpa, cpa)
			accs[i].tgz = append(accs[i].tgz, tgz)
			accs[i].manifest(man, prep, sent, steps)
			os.RemoveAll(a)
			if mib == 256 {
				last = b
			} else {
				os.RemoveAll(b)
			}
		}
		// One changed file in the 256 MiB tree deployed last (hctl's
		// hash cache warm), several times (one sample a run is too few
		// for a figure this close to its target), then the same change
		// as a .tar.gz once (seconds each).
		k := len(sizes)
		for i := range o.oneFile {
			if err := changeOne(last, run*100+i); err != nil {
				return nil, err
			}
			man, prep, sent, steps, err := sb.deployDir(last)
			if err != nil {
				return nil, err
			}
			say("store: run %d, 256 MiB one file changed: manifest %s (prepare %s, sent %.1f MiB)", run+1, fmtDur(man), fmtDur(prep), sent)
			accs[k].manifest(man, prep, sent, steps)
		}
		if err := changeOne(last, run+1000); err != nil {
			return nil, err
		}
		tgz, err := sb.deployTarGz(last)
		if err != nil {
			return nil, err
		}
		say("store: run %d, 256 MiB one file changed: .tar.gz %s", run+1, fmtDur(tgz))
		accs[k].tgz = append(accs[k].tgz, tgz)
		os.RemoveAll(last)
	}
	for i, mib := range sizes {
		a := accs[i]
		out.Cases = append(out.Cases, storeCase{Name: fmt.Sprintf("%d MiB of new files", mib), MiB: mib,
			CpA: stat(a.cpa), TarGz: stat(a.tgz), Manifest: stat(a.man), Prepare: stat(a.prep), SentMiB: stat(a.sent), Steps: stepStats(a.steps)})
	}
	a := accs[len(sizes)]
	out.Cases = append(out.Cases, storeCase{Name: "256 MiB, one 1 MiB file changed", MiB: 256,
		TarGz: stat(a.tgz), Manifest: stat(a.man), Prepare: stat(a.prep), SentMiB: stat(a.sent), Steps: stepStats(a.steps)})
	if out.Floor, err = measureFloor(bins.Hctl, dir, 20); err != nil {
		return nil, err
	}
	say("store: this machine's floor: hctl --version %s, write+fsync of a new 1 MiB file %s", fmtDur(out.Floor.HctlStart.Median), fmtDur(out.Floor.Fsync1MiB.Median))
	v := strings.Fields(firstField(fmt.Sprintf("/proc/%d/status", ag.PID()), "VmHWM"))
	if len(v) > 0 {
		kb, _ := strconv.ParseFloat(v[0], 64)
		out.PeakRSSMiB = kb / 1024
	}
	starts := 200
	if o.quick {
		starts = 50
	}
	if out.WholeStart, err = sb.wholeStarts(starts); err != nil {
		return nil, err
	}
	ws := out.WholeStart
	say("store: whole process start (%d): median %s, p99 %s (setup %s, fork+exec %s, place %s, wait %s, record %s)",
		ws.Total.N, fmtDur(ws.Total.Median), fmtDur(ws.Total.P99), fmtDur(ws.Setup.Median), fmtDur(ws.Fork.Median),
		fmtDur(ws.Place.Median), fmtDur(ws.Wait.Median), fmtDur(ws.Record.Median))
	n := 300
	if o.quick {
		n = 100
	}
	out.StartChain = startChainCosts(bins, n)
	return out, nil
}

// storeAcc gathers one case's figures over the runs.
type storeAcc struct {
	cpa, tgz, man, prep, sent []float64
	steps                     []storeStep
}

// manifest adds one manifest deploy's figures.
func (a *storeAcc) manifest(man, prep, sent float64, steps storeStep) {
	a.man = append(a.man, man)
	a.prep = append(a.prep, prep)
	a.sent = append(a.sent, sent)
	a.steps = append(a.steps, steps)
}

// tree writes a release: the app, its Procfile and mib files of 1 MiB of
// random bytes (incompressible, as jars and wheels mostly are).
func (sb *storeBench) tree(name string, mib int) (string, error) {
	dir := filepath.Join(sb.dir, name)
	if err := os.MkdirAll(filepath.Join(dir, "lib"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: ./benchapp\n"), 0o644); err != nil {
		return "", err
	}
	if err := harness.CopyFile(sb.bins.BenchApp, filepath.Join(dir, "benchapp")); err != nil {
		return "", err
	}
	rng := rand.New(rand.NewChaCha8([32]byte([]byte(fmt.Sprintf("%-32s", name))[:32])))
	buf := make([]byte, 1<<20)
	for i := range mib {
		for j := 0; j < len(buf); j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "lib", fmt.Sprintf("part%03d.bin", i)), buf, 0o644); err != nil {
			return "", err
		}
	}
	// Build output is older than the next deploy's scan by the time it
	// is deployed; and sync, so cp -a, the .tar.gz and the upload all
	// start from a clean page cache state.
	old := time.Now().Add(-time.Minute)
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	return dir, exec.Command("sync").Run()
}

func changeOne(dir string, seed int) error {
	p := filepath.Join(dir, "lib", "part007.bin")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	copy(b, fmt.Sprintf("changed %d", seed))
	return os.WriteFile(p, b, 0o644)
}

// cpASync is `cp -a SRC DST && sync`, timed, DST removed after.
func cpASync(src, dst string) (float64, error) {
	os.RemoveAll(dst)
	defer os.RemoveAll(dst)
	settle()
	t0 := time.Now()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("cp -a: %v: %s", err, out)
	}
	if err := exec.Command("sync").Run(); err != nil {
		return 0, err
	}
	return time.Since(t0).Seconds(), nil
}

// settle starts a timed step from a quiet disk: what the step before left
// (the removal of the last tree, of cp -a's copy, dirty pages) written
// out first, so that it is not charged to the next step.
func settle() { exec.Command("sync").Run() }

// deployTarGz is the path a directory took before: packed to a .tar.gz
// (counted), then deployed.
func (sb *storeBench) deployTarGz(dir string) (float64, error) {
	settle()
	t0 := time.Now()
	tgz := dir + ".tar.gz"
	f, err := os.Create(tgz)
	if err != nil {
		return 0, err
	}
	defer os.Remove(tgz)
	if err := api.PackDir(f, dir); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	live, _, _, _, err := sb.deploy(tgz, t0)
	return live, err
}

func (sb *storeBench) deployDir(dir string) (live, prepare, sentMiB float64, steps storeStep, err error) {
	live, prepare, sentMiB, steps, err = sb.deploy(dir, time.Time{})
	if err == nil && steps.Total == 0 {
		err = fmt.Errorf("deploy %s: no upload line in hctl's output", dir)
	}
	return live, prepare, sentMiB, steps, err
}

var sentRE = regexp.MustCompile(`upload: sent \d+ of \d+ files \(([\d.]+) ([kMG]?B) of`)

// deploy runs `hctl deploy APP PATH` and returns the time from t0 to the
// first answer from the new release, minus the app's boot.
func (sb *storeBench) deploy(path string, t0 time.Time) (live, prepare, sentMiB float64, steps storeStep, err error) {
	sb.version++
	if t0.IsZero() {
		settle()
		t0 = time.Now()
	}
	want := fmt.Sprintf("hello from v%d ", sb.version)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	first := make(chan time.Time, 1)
	// The poller starts when hctl says agentd's preboot began: the new
	// code cannot answer before its processes are started, and a
	// thousand connections a second to the old release while hctl scans
	// and uploads and agentd prepares would take CPU from what is
	// measured (2 cores). Starting late could only make the figure
	// worse, never better: it is when the first new answer arrives.
	preboot := make(chan struct{})
	go func() {
		select {
		case <-preboot:
		case <-ctx.Done():
		}
		first <- pollFor(ctx, sb.url, want)
	}()
	var res api.OpResult
	mark := &markWriter{mark: []byte("-----> preboot"), seen: preboot}
	r := sb.ag.HctlJSONWatch(ctx, &res, mark, opTimeout, opTimeoutValue, "deploy", "store", path)
	mark.close() // also when hctl failed before the line
	if r.Code != 0 || !res.OK || !res.Changed {
		cancel()
		<-first
		return 0, 0, 0, steps, fmt.Errorf("deploy %s: %s", path, r)
	}
	t1 := <-first
	if t1.IsZero() {
		return 0, 0, 0, steps, fmt.Errorf("deploy %s: no answer with %q", path, want)
	}
	if uploadLineRE.MatchString(r.Stderr) {
		if steps, err = parseSteps(r.Stderr, &res, t1.Sub(t0).Seconds()); err != nil {
			return 0, 0, 0, steps, err
		}
	}
	for _, p := range res.Phases {
		if p.Name == api.PhasePrepare {
			prepare = p.Seconds
		}
	}
	if m := sentRE.FindStringSubmatch(r.Stderr); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		mult := map[string]float64{"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m[2]]
		sentMiB = v * mult / (1 << 20)
	}
	return t1.Sub(t0).Seconds() - sb.boot, prepare, sentMiB, steps, nil
}

// pollFor asks url every millisecond, each time on a new connection,
// until an answer starts with want; it returns when that answer arrived
// (zero if ctx ended first).
func pollFor(ctx context.Context, url, want string) time.Time {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.HasPrefix(string(b), want) {
				return time.Now()
			}
		}
		if ctx.Err() != nil {
			return time.Time{}
		}
		time.Sleep(time.Millisecond)
	}
}

// directBoot starts the app on its own and times fork to first answer.
func directBoot(app string) (float64, error) {
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(app)
	cmd.Env = append(os.Environ(), "BENCH_LISTEN=port", "PORT="+strconv.Itoa(port), "AGENTD_RELEASE=direct")
	ch, err := startChild("benchapp direct", cmd)
	if err != nil {
		return 0, err
	}
	defer ch.stop(syscall.SIGTERM, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t1 := pollFor(ctx, fmt.Sprintf("http://127.0.0.1:%d/", port), "hello from direct")
	if t1.IsZero() {
		return 0, errors.New("the app started directly never answered")
	}
	return t1.Sub(ch.startAt).Seconds(), nil
}

// markWriter closes seen once what is written has a line that starts with
// mark (hctl's stderr, written as it comes).
type markWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	mark []byte
	seen chan struct{}
	once sync.Once
}

func (w *markWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	b := w.buf.Bytes()
	if bytes.HasPrefix(b, w.mark) || bytes.Contains(b, append([]byte("\n"), w.mark...)) {
		w.close()
	}
	return len(p), nil
}

func (w *markWriter) close() { w.once.Do(func() { close(w.seen) }) }
