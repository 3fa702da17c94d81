package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/agentd/agentd/agentd/api"
)

// hctlCmd is hctl against e's agentd, not yet started.
func (e *env) hctlCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(bins.Hctl, args...)
	cmd.Env = append(os.Environ(), "HCTL_SOCKET="+e.ag.Socket)
	return cmd
}

// runOut runs hctl with stdin and returns stdout, stderr and the exit status.
func (e *env) runOut(stdin string, args ...string) (string, string, int) {
	e.t.Helper()
	cmd := e.hctlCmd(args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("hctl %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// liveRun is an hctl run in progress: its stdin kept open, its stdout read
// line by line.
type liveRun struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	mu    sync.Mutex
	out   strings.Builder
	errb  bytes.Buffer
	done  chan struct{}
}

func (e *env) startRun(args ...string) *liveRun {
	e.t.Helper()
	r := &liveRun{t: e.t, cmd: e.hctlCmd(append([]string{"run"}, args...)...), lines: make(chan string, 100), done: make(chan struct{})}
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		e.t.Fatal(err)
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	r.cmd.Stderr = &r.errb
	if err := r.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			r.mu.Lock()
			r.out.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			r.lines <- sc.Text()
		}
		close(r.lines)
	}()
	go func() { r.cmd.Wait(); close(r.done) }()
	e.t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-r.done
	})
	return r
}

// line waits for a line of output matching re and returns its submatches.
func (r *liveRun) line(re string) []string {
	r.t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				// Its stdout ended; stderr is whole once Wait returned.
				select {
				case <-r.done:
					r.t.Fatalf("hctl run ended (exit %d) without a line matching %q; output %q; stderr: %s",
						r.cmd.ProcessState.ExitCode(), re, r.output(), r.errb.String())
				case <-time.After(10 * time.Second):
					r.t.Fatalf("hctl run closed its output without a line matching %q, and did not end", re)
				}
			}
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			r.t.Fatalf("no line matching %q within 30s", re)
		}
	}
}

// exit waits for hctl to end and returns its exit status.
func (r *liveRun) exit() int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		r.t.Fatalf("hctl run did not end; stderr: %s", r.errb.String())
	}
	for range r.lines {
	}
	return r.cmd.ProcessState.ExitCode()
}

func (r *liveRun) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// waitWithin is waitFor with a deadline of its own.
func waitWithin(t *testing.T, d time.Duration, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, d)
		}
		<-tick.C
	}
}

func (e *env) runProcs(app string) []api.Process {
	var out []api.Process
	for _, p := range e.ps(app) {
		if p.Type == "run" {
			out = append(out, p)
		}
	}
	return out
}

// TestRun: exit statuses (0, 7, a signal) come back as hctl's; stdin is
// piped; the command has the release's config, AGENTD_PROCESS=run.N, the
// app's limits, no_new_privs, a process group of its own, no socket unless
// --type names one (then with the seccomp guard); --json; bad input is
// refused with a clear error and changes nothing.
func TestRun(t *testing.T) {
	e := start(t)
	e.createApp("con", "--readiness", "web=notify", "--limit", "nofile=1000:1001")
	e.deploy("con", e.release(""))
	e.mustHctl("config", "set", "con", "GREETING=hi")

	for _, tc := range []struct {
		cmd  []string
		code int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{[]string{"exit 3"}, 3}, // one string: a shell line, as in a Procfile
	} {
		if _, stderr, code := e.runOut("", append([]string{"run", "con", "--"}, tc.cmd...)...); code != tc.code {
			t.Errorf("hctl run con -- %q: exit %d, want %d; stderr: %s", tc.cmd, code, tc.code, stderr)
		}
	}

	if out, stderr, code := e.runOut("1\n", "run", "con", "--", "cat"); out != "1\n" || code != 0 {
		t.Errorf("echo 1 | hctl run con -- cat: %q, exit %d; stderr: %s", out, code, stderr)
	}

	script := `echo "$GREETING $EXTRA $AGENTD_PROCESS $AGENTD_RELEASE fds=${LISTEN_FDS:-none}:${LISTEN_FDNAMES:-} pid=${LISTEN_PID:-none} me=$$"
cut -d' ' -f5 /proc/$$/stat
ulimit -n
grep -E '^(NoNewPrivs|Seccomp):' /proc/$$/status | tr -d '\t'`
	out, stderr, code := e.runOut("", "run", "con", "-e", "EXTRA=x", "--", "sh", "-c", script)
	want := regexp.MustCompile(`^hi x run\.\d+ v2 fds=none: pid=none me=(\d+)\n(\d+)\n1000\nNoNewPrivs:1\nSeccomp:0\n$`)
	m := want.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("hctl run con -e EXTRA=x: exit %d, output %q does not match %s; stderr: %s", code, out, want, stderr)
	}
	if m[1] != m[2] {
		t.Errorf("the command (pid %s) is in process group %s, not one of its own", m[1], m[2])
	}
	out, stderr, code = e.runOut("", "run", "con", "--type", "web", "--", "sh", "-c", script)
	want = regexp.MustCompile(`^hi  run\.\d+ v2 fds=1:web pid=(\d+) me=(\d+)\n\d+\n1000\nNoNewPrivs:1\nSeccomp:2\n$`)
	if m := want.FindStringSubmatch(out); code != 0 || m == nil || m[1] != m[2] {
		t.Errorf("hctl run con --type web: exit %d, output %q does not match %s (LISTEN_PID the command's own); stderr: %s", code, out, want, stderr)
	}

	var res struct {
		Process  string `json:"process"`
		Release  string `json:"release"`
		ExitCode int    `json:"exit_code"`
		Stdout   string `json:"stdout"`
		Stderr   string `json:"stderr"`
	}
	out, _, code = e.runOut("", "--json", "run", "con", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 4 || res.ExitCode != 4 || res.Stdout != "out\n" || res.Stderr != "err\n" || res.Release != "v2" {
		t.Errorf("hctl --json run: exit %d, %q (%v)", code, out, err)
	}

	before := e.mustHctl("--json", "releases", "con").Stdout
	e.mustHctl("apps", "create", "empty", "--socket", "web=tcp://127.0.0.1:0", "--allow-root")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"run", "nope", "--", "true"}, 1, `no app named "nope"`},
		{[]string{"run", "empty", "--", "true"}, 1, "empty has no active release"},
		{[]string{"run", "con", "--release", "v99", "--", "true"}, 1, "con has no release v99"},
		{[]string{"run", "con", "--type", "worker", "--", "true"}, 1, `no process type "worker"`},
		{[]string{"run", "con", "-e", "AGENTD_APP=x", "--", "true"}, 2, "bad -e"},
		{[]string{"run", "con", "--release", "latest", "--", "true"}, 2, "bad release"},
		{[]string{"run", "con"}, 2, "missing APP and COMMAND"},
	} {
		_, stderr, code := e.runOut("", tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) {
			t.Errorf("hctl %s: exit %d, stderr %q; want exit %d saying %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.msg)
		}
	}
	if after := e.mustHctl("--json", "releases", "con").Stdout; after != before {
		t.Errorf("refused runs changed the releases:\n%s\nthen\n%s", before, after)
	}
	if rs := e.runProcs("con"); len(rs) != 0 {
		t.Errorf("ended runs still listed: %+v", rs)
	}
	if r := e.hctl("run", "--help"); r.Code != 0 || !strings.Contains(r.Stdout, "hctl run APP") || !strings.Contains(r.Stdout, "pty") {
		t.Errorf("hctl run --help: %s", r)
	}
}

// TestRunListedLoggedKilledWithClient: a running run.N is listed by hctl
// ps and counted in the metrics, its output reaches the logs, a deploy
// leaves it alone, and killing hctl hangs it up: it is gone soon after,
// even with input waiting that it never reads.
func TestRunListedLoggedKilledWithClient(t *testing.T) {
	e := start(t)
	e.createApp("con", "--readiness", "web=notify")
	e.deploy("con", e.release(""))
	r := e.startRun("con", "--", "sh", "-c", "echo pid=$$; exec sleep 1000")
	pid := 0
	fmt.Sscan(r.line(`^pid=(\d+)$`)[1], &pid)

	rs := e.runProcs("con")
	if len(rs) != 1 || !strings.HasPrefix(rs[0].Name, "run.") || rs[0].State != api.StateRunning || rs[0].Release != "v1" {
		t.Fatalf("hctl ps: runs %+v, want one run.N running on v1", rs)
	}
	name := rs[0].Name
	if v := e.scrape().val("agentd_processes", `app="con"`, `type="run"`, `state="running"`); v != 1 {
		t.Errorf("agentd_processes{type=run,state=running} = %v, want 1", v)
	}
	waitFor(t, "run output in hctl logs", func() bool {
		return strings.Contains(e.mustHctl("logs", "con", "--process", name).Stdout, fmt.Sprintf("pid=%d", pid))
	})

	e.deploy("con", e.release(""))
	if !alive(pid) {
		t.Fatalf("a deploy stopped %s", name)
	}
	if rs := e.runProcs("con"); len(rs) != 1 || rs[0].Name != name || rs[0].Release != "v1" {
		t.Fatalf("after a deploy: runs %+v, want %s on v1 still", rs, name)
	}

	// Input the command never reads, more than a pipe and hctl's window
	// hold: it must not hold up the hang-up.
	go r.stdin.Write(make([]byte, 4<<20))
	// Within the relay's 5 s SIGKILL delay and a margin, well before its
	// 30 s grace window (what would end it if agentd failed to tell it the
	// client was gone).
	killed := time.Now()
	r.cmd.Process.Kill()
	waitWithin(t, 15*time.Second, fmt.Sprintf("end of %s (pid %d) after its hctl was killed", name, pid), func() bool { return !alive(pid) })
	t.Logf("%s ended %s after its hctl was killed", name, time.Since(killed).Round(time.Millisecond))
	waitFor(t, name+" gone from hctl ps", func() bool { return len(e.runProcs("con")) == 0 })
	if !strings.Contains(e.mustHctl("logs", "con", "--process", name).Stdout, "the client is gone") {
		t.Errorf("the logs do not say why %s ended", name)
	}
}

// TestRunSurvivesAgentd: a kill -9 of agentd and an upgrade while a run
// waits for input: the command keeps running, hctl re-attaches, its input
// reaches the command, and hctl exits with the command's status.
func TestRunSurvivesAgentd(t *testing.T) {
	e := start(t)
	e.createApp("con", "--readiness", "web=notify")
	e.deploy("con", e.release(""))
	for _, how := range []string{"kill -9", "upgrade"} {
		r := e.startRun("con", "--", "sh", "-c", "echo ready pid=$$; read x; echo got $x; exit 3")
		pid := 0
		fmt.Sscan(r.line(`^ready pid=(\d+)$`)[1], &pid)
		switch how {
		case "kill -9":
			e.ag.Kill()
			if !alive(pid) {
				t.Fatalf("%s: the command died with agentd", how)
			}
			if err := e.ag.StartAgain(); err != nil {
				t.Fatal(err)
			}
		case "upgrade":
			e.mustHctl("agent", "upgrade")
		}
		back := time.Now()
		if _, err := io.WriteString(r.stdin, "hello\n"); err != nil {
			t.Fatal(err)
		}
		r.line(`^got hello$`)
		t.Logf("%s: input answered %s after agentd was back", how, time.Since(back).Round(time.Millisecond))
		if code := r.exit(); code != 3 {
			t.Errorf("%s: hctl run exited %d, want 3; output %q; stderr %s", how, code, r.output(), r.errb.String())
		}
	}
}

// TestRunInteractivePty: with a terminal on its stdin, hctl run gives the
// command a pty: an interactive bash answers a typed command, sees the
// terminal's size, Ctrl-C interrupts what it runs, and its exit status is
// hctl's.
func TestRunInteractivePty(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	e := start(t)
	e.createApp("con", "--readiness", "web=notify")
	e.deploy("con", e.release(""))
	cmd := e.hctlCmd("run", "con", "--", "bash", "--norc", "--noprofile", "-i")
	cmd.Env = append(cmd.Env, "TERM=dumb")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 90})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		tty.Close()
	})
	var mu sync.Mutex
	var screen strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	expect := func(s string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%q on the terminal", s), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return strings.Contains(screen.String(), s)
		})
	}
	io.WriteString(tty, "echo answer-$((6*7)) $(stty size) $AGENTD_PROCESS\r")
	expect("answer-42 30 90 run.")
	// The trap is set before "armed" is printed, by the foreground job:
	// the ^C that follows reaches it through the pty's line discipline.
	io.WriteString(tty, `sh -c 'trap "echo interrupted-\$((3*3)); exit 0" INT; echo armed-$((1+1)); while :; do sleep 0.1; done'`+"\r")
	expect("armed-2")
	io.WriteString(tty, "\x03")
	expect("interrupted-9")
	io.WriteString(tty, "exit 5\r")
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("hctl run did not end after exit")
	}
	if code := cmd.ProcessState.ExitCode(); code != 5 {
		mu.Lock()
		t.Errorf("hctl run -- bash: exit %d, want 5; terminal:\n%s", code, screen.String())
		mu.Unlock()
	}
}

// TestRunOutputToJournal: with journald running, a run's output reaches
// the journal with the fields of any process (AGENTD_PROCESS=run.N, its
// release, the relay's PID).
func TestRunOutputToJournal(t *testing.T) {
	e, ag := startWithJournald(t)
	e.createApp("jrun", "--readiness", "web=notify")
	e.deploy("jrun", e.release(""))
	out, stderr, code := e.runOut("", "run", "jrun", "--", "sh", "-c", "echo one-off-$((20+22)); echo pid=$PPID")
	if code != 0 || !strings.Contains(out, "one-off-42") {
		t.Fatalf("hctl run: exit %d, %q; stderr %s", code, out, stderr)
	}
	relayPID := strings.TrimSpace(out[strings.Index(out, "pid=")+4:])
	waitWithin(t, 20*time.Second, "run output in the journal", func() bool {
		got, err := exec.Command("nsenter", "--mount", "--target", strconv.Itoa(ag.PID()),
			"journalctl", "--no-pager", "-o", "json", "AGENTD_APP=jrun", "AGENTD_PROCESS=run.1").Output()
		if err != nil {
			t.Fatalf("journalctl: %v", err)
		}
		for line := range strings.Lines(string(got)) {
			var je journalEntry
			if json.Unmarshal([]byte(line), &je) == nil && strings.Contains(je.Message, "one-off-42") {
				if je.Release != "v1" || je.Identifier != "jrun" || je.PID != relayPID {
					t.Fatalf("journal entry %+v: want release v1, identifier jrun, SYSLOG_PID %s (the relay)", je, relayPID)
				}
				return true
			}
		}
		return false
	})
}
