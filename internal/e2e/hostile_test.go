package e2e

// Hostile releases, hostile input and who may open the door
// (docs/security.md): each hostile release is deployed over a good one
// under load, and each test checks that the old release served every
// request, that agentd answered `hctl ps` within a second throughout, and
// that the deploy failed saying what the release did.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// psWatch runs `hctl ps APP` back to back and keeps the slowest answer,
// and the slowest of agentd's own answers to the same request (through the
// API client, without the start of an hctl process).
type psWatch struct {
	stop       chan struct{}
	done       chan struct{}
	n, fail    int
	slowest    time.Duration
	slowestAPI time.Duration
}

func watchPs(e *env, app string) *psWatch {
	w := &psWatch{stop: make(chan struct{}), done: make(chan struct{})}
	c := api.NewClient(e.ag.Socket)
	go func() {
		defer close(w.done)
		// One answer at least, however fast the deploy: stop is looked at
		// only between requests.
		for {
			t0 := time.Now()
			_, err := c.Ps(context.Background(), app)
			w.slowestAPI = max(w.slowestAPI, time.Since(t0))
			if err != nil {
				w.fail++
			}
			t0 = time.Now()
			r := e.ag.Hctl("--timeout", "10s", "ps", app)
			d := time.Since(t0)
			w.n++
			if r.Code != 0 {
				w.fail++
			}
			w.slowest = max(w.slowest, d)
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

// check stops the watch and fails t unless agentd answered every ps
// within a second and every `hctl ps` succeeded. The time of a whole `hctl
// ps` includes starting a process on a machine the hostile release may
// saturate (1000 forks on 2 cores: up to a second here), so it only has to
// stay under 3 s; agentd's own answer is what must take under a second.
func (w *psWatch) check(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	t.Logf("hctl ps during the hostile deploy: %d answered, %d failed, slowest %s (agentd's own answer: slowest %s)",
		w.n, w.fail, w.slowest.Round(time.Millisecond), w.slowestAPI.Round(time.Millisecond))
	if w.n == 0 || w.fail > 0 || w.slowestAPI > time.Second || w.slowest > 3*time.Second {
		t.Errorf("hctl ps: %d answered, %d failed, slowest %s, agentd's slowest answer %s; want agentd's within 1s",
			w.n, w.fail, w.slowest, w.slowestAPI)
	}
}

// hostile describes one hostile release.
type hostile struct {
	agentd   []string // agentd flags
	create   []string // hctl apps create flags, beside the defaults
	config   []string // K=V config vars set before the deploys
	mode     string   // TESTAPP_MODE of the hostile release
	procfile []string // extra Procfile lines of the hostile release
	want     []string // what the deploy's error must say
	// files, if set, adds to the hostile release's directory.
	files func(t *testing.T, dir string)
	// after runs last, with the deploy's output.
	after func(t *testing.T, e *env, out string)
}

// runHostile deploys a good v1, starts the load on it, deploys the hostile
// release while watching `hctl ps`, and checks the outcome.
func runHostile(t *testing.T, h hostile) {
	e := start(t, h.agentd...)
	args := append([]string{"--readiness", "web=notify", "--boot-timeout", "3s", "--drain-timeout", "2s"}, h.create...)
	url := e.createApp("victim", args...)
	if len(h.config) > 0 {
		e.mustHctl(append([]string{"config", "set", "victim"}, h.config...)...)
	}
	e.deploy("victim", e.release(""))
	before := pidsOf(e.ps("victim"))
	bad := e.release(h.mode, h.procfile...)
	if h.files != nil {
		h.files(t, bad)
	}

	ls := startLoads(t, url)
	ps := watchPs(e, "victim")
	t0 := time.Now()
	r := e.hctl("deploy", "victim", bad)
	took := time.Since(t0)
	ps.check(t)
	ls.stopAndCheck(t)

	out := r.Stdout + r.Stderr
	t.Logf("hostile deploy: exit %d after %s; %s", r.Code, took.Round(time.Millisecond), lastLine(r.Stderr))
	if r.Code != 1 {
		t.Errorf("hostile deploy: want exit 1, got %s", r)
	}
	for _, w := range h.want {
		if !strings.Contains(out, w) {
			t.Errorf("the deploy's message lacks %q:\n%s", w, out)
		}
	}
	if after := pidsOf(e.ps("victim")); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("processes changed from %v to %v", before, after)
	}
	if got := get(t, url); !strings.Contains(got, "release=v1") {
		t.Errorf("after the hostile deploy the app answers %q, want v1", got)
	}
	if h.after != nil {
		h.after(t, e, out)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// TestHostileForkBomb: a release that starts 1000 children which ignore
// SIGTERM, then exits leaving them behind. Every child dies with it.
// (Starting 1000 processes takes 2 to 20 s here, with the load running.)
func TestHostileForkBomb(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "children")
	runHostile(t, hostile{
		create: []string{"--boot-timeout", "60s"},
		config: []string{"TESTAPP_CHILD_PIDFILE=" + pidfile},
		mode:   "fork-bomb,hold,never-ready",
		want:   []string{"exited with status 1 before it was ready", "forked 1000 children that ignore SIGTERM"},
		after: func(t *testing.T, e *env, _ string) {
			b, err := os.ReadFile(pidfile)
			if err != nil {
				t.Fatal(err)
			}
			pids := strings.Fields(string(b))
			if len(pids) != 1000 {
				t.Fatalf("%d children recorded, want 1000", len(pids))
			}
			alive := 0
			for _, p := range pids {
				pid, _ := strconv.Atoi(p)
				if isAlive(pid) {
					alive++
				}
			}
			if alive > 0 {
				t.Errorf("%d of the 1000 children outlived the failed deploy", alive)
			}
		},
	})
}

// isAlive is alive, waiting a moment for a SIGKILL just sent to land.
func isAlive(pid int) bool {
	for range 50 {
		if !alive(pid) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// TestHostileIgnoresSIGTERM: a release that never becomes ready and
// ignores the SIGTERM that stops it is SIGKILLed at the drain timeout.
// (An old release that ignores SIGTERM: TestDrainTimeoutKillsGroup.)
func TestHostileIgnoresSIGTERM(t *testing.T) {
	runHostile(t, hostile{
		mode: "ignore-sigterm,hold,never-ready",
		want: []string{"not ready (notify) within the boot timeout of 3s", "v2 web.1 ignored SIGTERM and had to be SIGKILLed at the drain timeout of 2s"},
	})
}

// TestHostileClosesSockets: a release that closes the sockets it was
// given and then says it is ready could never serve: refused.
func TestHostileClosesSockets(t *testing.T) {
	runHostile(t, hostile{
		mode: "close-sockets",
		want: []string{"web.1 said it was ready but has closed its inherited socket web"},
	})
}

// TestHostileShutsDownSockets: shutdown(2) of a shared listening socket
// would stop it listening for every release; the exec shim's seccomp guard
// refuses it, and the socket serves on.
func TestHostileShutsDownSockets(t *testing.T) {
	runHostile(t, hostile{
		mode: "shutdown-sockets,never-ready",
		want: []string{"shutdown(3, SHUT_RDWR): operation not permitted", "not ready (notify) within the boot timeout"},
	})
}

// TestHostileBindsPort: a release that binds the app's port itself finds it
// taken (agentd holds it), and is told why.
func TestHostileBindsPort(t *testing.T) {
	runHostile(t, hostile{
		mode: "bind-port",
		want: []string{"address already in use", "agentd holds the app's sockets (PORT included)"},
	})
}

// TestHostileNotifyFlood: a release that floods its notify socket, asking
// for endless boot extensions, is cut off at ten times its boot timeout.
func TestHostileNotifyFlood(t *testing.T) {
	runHostile(t, hostile{
		create: []string{"--boot-timeout", "1s"},
		mode:   "notify-flood,hold,never-ready",
		want:   []string{"extended by EXTEND_TIMEOUT_USEC to 10s, the most it may be", "messages to its notify socket"},
	})
}

// TestHostileStdoutFlood: a release that writes 100 MB/s to stdout. Its log
// file stays near the log cap.
func TestHostileStdoutFlood(t *testing.T) {
	const capMiB = 16
	runHostile(t, hostile{
		agentd: []string{"--max-log-size", fmt.Sprintf("%dM", capMiB)},
		config: []string{"TESTAPP_FLOOD_FOR=2500ms"},
		mode:   "stdout-flood,hold,never-ready",
		want:   []string{"MiB of output in", "cut from its log by the 16 MiB log cap"},
		after: func(t *testing.T, e *env, out string) {
			log := filepath.Join(e.ag.StateDir, "logs", "victim", "v2.web.1.log")
			fi, err := os.Stat(log)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("log file after the flood: %d MiB (cap %d MiB)", fi.Size()>>20, capMiB)
			// The cap is checked twice a second: at 100 MB/s a file may
			// outgrow it by about 50 MB before it is cut.
			if fi.Size() > (capMiB+80)<<20 {
				t.Errorf("log file is %d MiB, want it kept near the %d MiB cap", fi.Size()>>20, capMiB)
			}
		},
	})
}

// TestHostileReleasePhaseSleeps: a release command that never ends is
// stopped at the app's release timeout.
func TestHostileReleasePhaseSleeps(t *testing.T) {
	runHostile(t, hostile{
		create:   []string{"--release-timeout", "2s"},
		procfile: []string{"release: echo migrating forever; sleep 3600"},
		want:     []string{`"echo migrating forever; sleep 3600" did not finish within the release timeout of 2s`},
	})
}

// TestArtifactTooLarge: an artifact over agentd's size limit is refused in
// prepare, before anything running is touched, and leaves no slug behind.
func TestArtifactTooLarge(t *testing.T) {
	runHostile(t, hostile{
		agentd: []string{"--max-artifact-size", "1M"},
		files: func(t *testing.T, dir string) {
			b := make([]byte, 2<<20)
			rand.Read(b)
			if err := os.WriteFile(filepath.Join(dir, "blob"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		},
		want: []string{"artifact too large", "exceeds the limit of 1048576 bytes"},
		after: func(t *testing.T, e *env, _ string) {
			entries, _ := os.ReadDir(filepath.Join(e.ag.StateDir, "slugs"))
			if len(entries) != 1 {
				var names []string
				for _, en := range entries {
					names = append(names, en.Name())
				}
				t.Errorf("slugs after a refused artifact: %v, want only v1's", names)
			}
		},
	})
}

// hctlAs runs hctl as uid/gid, with no supplementary groups.
func (e *env) hctlAs(uid, gid int, args ...string) harness.Result {
	cmd := exec.Command(e.ag.Bins.Hctl, args...)
	cmd.Env = append(os.Environ(), "HCTL_SOCKET="+e.ag.Socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return harness.Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// openToOthers lets another user reach this test's agentd: its directory
// (the control socket, notify sockets and state live there) and the
// test binaries.
func (e *env) openToOthers() {
	e.t.Helper()
	for _, d := range []string{e.dir, filepath.Dir(bins.TestApp)} {
		if err := os.Chmod(d, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
}

func nobody(t *testing.T) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs commands as another user")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// TestNonAdminCannotChange: a user who is neither root nor in the agentd
// group may read the apps and processes, but gets a clear permission error
// (exit 1) from hctl deploy, config set and the reading of config vars and
// logs, and the state is unchanged.
func TestNonAdminCannotChange(t *testing.T) {
	uid, gid := nobody(t)
	e := start(t)
	e.createApp("guarded", "--readiness", "web=notify")
	e.mustHctl("config", "set", "guarded", "TEST_SECRET=s3cret")
	e.deploy("guarded", e.release(""))
	e.openToOthers()
	if err := os.Chmod(e.ag.Socket, 0o666); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		var apps []api.App
		var rels []api.Release
		e.json(&apps, "apps")
		e.json(&rels, "releases", "guarded")
		return fmt.Sprint(apps, rels, pidsOf(e.ps("guarded")))
	}
	before := snapshot()

	if r := e.hctlAs(uid, gid, "ps", "guarded"); r.Code != 0 || !strings.Contains(r.Stdout, "web.1") {
		t.Errorf("hctl ps as nobody: want it to read, got %s", r)
	}
	rel := e.release("")
	// Big enough that hctl is still uploading when agentd refuses.
	blob := make([]byte, 32<<20)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(rel, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"deploy", "guarded", rel}, "permission denied: uid " + strconv.Itoa(uid) + " may read but not change anything; only root and members of group \"agentd\" may"},
		{[]string{"config", "set", "guarded", "X=1"}, "may read but not change anything"},
		{[]string{"apps", "destroy", "guarded", "--confirm", "guarded"}, "may read but not change anything"},
		{[]string{"config", "guarded"}, "may not read config vars or logs"},
		{[]string{"logs", "guarded"}, "may not read config vars or logs"},
	} {
		r := e.hctlAs(uid, gid, c.args...)
		if r.Code != 1 || !strings.Contains(r.Stderr, c.want) || strings.Contains(r.Stdout, "s3cret") {
			t.Errorf("hctl %s as nobody: want exit 1 and %q, got %s", strings.Join(c.args, " "), c.want, r)
		}
	}
	if after := snapshot(); after != before {
		t.Errorf("nobody's attempts changed the state:\nbefore %s\nafter  %s", before, after)
	}
}

// TestRootNeedsConsentAndAppUser: agentd as root refuses an app with no
// user unless it may run as root; an app with a user runs as that user,
// with its own groups only, no new privileges and its limits.
func TestRootNeedsConsentAndAppUser(t *testing.T) {
	uid, gid := nobody(t)
	e := start(t)
	r := e.hctl("apps", "create", "rooty", "--socket", "web=tcp://127.0.0.1:0")
	if r.Code == 0 || !strings.Contains(r.Stderr, "app rooty would run as root: give it a user to run as with --user USER") {
		t.Errorf("create without --user as root: %s", r)
	}
	r = e.hctl("apps", "create", "rooty", "--socket", "web=tcp://127.0.0.1:0", "--user", "root")
	if r.Code == 0 || !strings.Contains(r.Stderr, "--allow-root") {
		t.Errorf("create with --user root: %s", r)
	}
	var apps []api.App
	e.json(&apps, "apps")
	if len(apps) != 0 {
		t.Fatalf("refused creates left apps: %+v", apps)
	}

	e.openToOthers()
	e.mustHctl("apps", "create", "plain", "--socket", "web=tcp://127.0.0.1:0", "--readiness", "web=notify",
		"--user", "nobody", "--limit", "nofile=1000:2000", "--limit", "nproc=4000", "--limit", "core=0")
	e.deploy("plain", e.release(""))
	p := e.ps("plain")[0]
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		t.Fatal(err)
	}
	field := func(name string) string {
		for l := range strings.SplitSeq(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, name+":"); ok {
				return strings.Join(strings.Fields(v), " ")
			}
		}
		return ""
	}
	wantIDs := func(id int) string { return strings.TrimSpace(strings.Repeat(strconv.Itoa(id)+" ", 4)) }
	if got := field("Uid"); got != wantIDs(uid) {
		t.Errorf("Uid: %q, want %q", got, wantIDs(uid))
	}
	if got := field("Gid"); got != wantIDs(gid) {
		t.Errorf("Gid: %q, want %q", got, wantIDs(gid))
	}
	if got := field("Groups"); strings.Contains(" "+got+" ", " 0 ") {
		t.Errorf("Groups %q: root's group leaked into the app", got)
	}
	if got := field("NoNewPrivs"); got != "1" {
		t.Errorf("NoNewPrivs %q, want 1", got)
	}
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.PID))
	for _, want := range []string{`Max open files\s+\d+\s+2000`, `Max processes\s+4000\s+4000`, `Max core file size\s+0\s+0`} {
		if ok, _ := regexp.MatchString(want, string(limits)); !ok {
			t.Errorf("limits lack %s:\n%s", want, limits)
		}
	}
	var info api.AppInfo
	e.json(&info, "apps", "info", "plain")
	if info.User != "nobody" || len(info.Limits) != 3 || info.AllowRoot {
		t.Errorf("apps info: %+v", info.App)
	}
}

// TestSlowClientsBlockNobody: a client that connects and sends nothing,
// and one that uploads an artifact one byte a second, hold up neither
// hctl ps nor a deploy of the very same app.
func TestSlowClientsBlockNobody(t *testing.T) {
	e := start(t)
	url := e.createApp("busy", "--readiness", "web=notify")
	e.deploy("busy", e.release(""))

	idle, err := net.Dial("unix", e.ag.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	// A deploy whose upload trickles: headers, then a byte now and then.
	slow, err := net.Dial("unix", e.ag.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	art, err := api.OpenArtifact(e.release(""))
	if err != nil {
		t.Fatal(err)
	}
	gz, err := io.ReadAll(art)
	art.Close()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(slow, "POST /v1/apps/busy/deploys HTTP/1.1\r\nHost: agentd\r\nContent-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; i < len(gz); i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			fmt.Fprintf(slow, "1\r\n%s\r\n", gz[i:i+1])
		}
	})
	defer func() { close(stop); wg.Wait() }()
	// The slow deploy has started streaming: it is in prepare.
	br := bufio.NewReader(slow)
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if !strings.Contains(line, "receiving and unpacking") {
		t.Fatalf("slow deploy: %q", line)
	}

	ls := startLoads(t, url)
	ps := watchPs(e, "busy")
	t0 := time.Now()
	res := e.deploy("busy", e.release(""))
	took := time.Since(t0)
	ps.check(t)
	ls.stopAndCheck(t)
	t.Logf("deploy beside a trickling upload and an idle connection: %s in %s", res.Release, took.Round(time.Millisecond))
	if !res.OK || res.Release != "v2" || took > 15*time.Second {
		t.Errorf("deploy beside slow clients: %+v after %s", res, took)
	}
}
