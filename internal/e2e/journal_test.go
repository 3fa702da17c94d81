package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/harness"
)

const journald = "/lib/systemd/systemd-journald"

// journalWrapper runs agentd in a mount namespace of its own, with a real
// systemd-journald (Debian's) listening on a private /run: agentd finds
// /run/systemd/journal/socket there, as under systemd, and nothing of the
// host's /run or /var/log/journal is touched. The wrapper execs, so the
// PID the harness knows is agentd's; journald's PID goes to $JDIR.
const journalWrapper = `#!/bin/sh
exec unshare --mount --propagation private /bin/sh -c '
set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
` + journald + ` </dev/null >"$JDIR/journald.log" 2>&1 &
echo $! >"$JDIR/journald.pid"
i=0
while [ ! -S /run/systemd/journal/socket ]; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "journald did not start" >&2; exit 1; }
  sleep 0.05
done
exec "$AGENTD" "$@"' sh "$@"
`

// journalEntry is what journalctl -o json prints, the fields we check.
type journalEntry struct {
	Message    string `json:"MESSAGE"`
	App        string `json:"AGENTD_APP"`
	Release    string `json:"AGENTD_RELEASE"`
	Process    string `json:"AGENTD_PROCESS"`
	Identifier string `json:"SYSLOG_IDENTIFIER"`
	PID        string `json:"SYSLOG_PID"`
}

// TestAppOutputToJournal: with journald running, every line an app
// process writes, and every line of its release phase, reaches the
// journal with the fields that say whose it is; across a self-upgrade no
// line is lost or sent twice.
func TestAppOutputToJournal(t *testing.T) {
	e, ag := startWithJournald(t)
	// journalctl inside agentd's namespace, where the journal is.
	entries := func() []journalEntry {
		t.Helper()
		out, err := exec.Command("nsenter", "--mount", "--target", strconv.Itoa(ag.PID()),
			"journalctl", "--no-pager", "-o", "json", "AGENTD_APP=jrn").Output()
		if err != nil {
			t.Fatalf("journalctl: %v", err)
		}
		var es []journalEntry
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var je journalEntry
			if err := json.Unmarshal(sc.Bytes(), &je); err != nil {
				t.Fatalf("journalctl line %q: %v", sc.Text(), err)
			}
			es = append(es, je)
		}
		return es
	}
	// waitFor polls the journal (agentd forwards every 250 ms) until
	// every wanted message is there, then returns the entries.
	waitFor := func(want ...string) []journalEntry {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			es := entries()
			missing := ""
			for _, w := range want {
				found := false
				for _, je := range es {
					if strings.Contains(je.Message, w) {
						found = true
						break
					}
				}
				if !found {
					missing = w
					break
				}
			}
			if missing == "" {
				return es
			}
			if time.Now().After(deadline) {
				t.Fatalf("no journal entry with %q after 20s; the journal has:\n%+v", missing, es)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	count := func(es []journalEntry, s string) int {
		n := 0
		for _, je := range es {
			if strings.Contains(je.Message, s) {
				n++
			}
		}
		return n
	}

	e.createApp("jrn", "--readiness", "web=notify")
	e.deploy("jrn", e.release("", "release: echo migrating-v1"))
	pid := e.ps("jrn")[0].PID
	es := waitFor("migrating-v1", "testapp: ready", "release=v1 process=web.1")
	for _, je := range es {
		if je.App != "jrn" || je.Identifier != "jrn" || je.Release != "v1" {
			t.Errorf("entry without the app's fields: %+v", je)
		}
		switch {
		case strings.Contains(je.Message, "migrating-v1"):
			if je.Process != "release" {
				t.Errorf("release phase line: AGENTD_PROCESS=%q, want release", je.Process)
			}
		case strings.HasPrefix(je.Message, "testapp:"):
			if je.Process != "web.1" || je.PID != strconv.Itoa(pid) {
				t.Errorf("web.1's line %q: AGENTD_PROCESS=%q SYSLOG_PID=%q, want web.1 and %d", je.Message, je.Process, je.PID, pid)
			}
		}
	}

	// A self-upgrade: the new agentd resumes where the old one stopped.
	e.mustHctl("agent", "upgrade")
	e.deploy("jrn", e.release("", "release: echo migrating-v2"))
	es = waitFor("migrating-v2", "release=v2 process=web.1")
	for _, s := range []string{"migrating-v1", "release=v1 process=web.1", "migrating-v2", "release=v2 process=web.1"} {
		if n := count(es, s); n != 1 {
			t.Errorf("%d journal entries with %q, want exactly 1", n, s)
		}
	}
	t.Logf("journal entries of app jrn: %d; e.g. %+v", len(es), es[len(es)-1])

	// hctl logs reads the journal here: both releases, with times.
	out := e.mustHctl("logs", "jrn", "-n", "50").Stdout
	for _, s := range []string{"migrating-v1", "release=v2 process=web.1"} {
		if !strings.Contains(out, s) {
			t.Errorf("hctl logs lacks %q:\n%s", s, out)
		}
	}
	if out := e.mustHctl("logs", "jrn", "--process", "release", "--release", "v2").Stdout; !strings.Contains(out, "migrating-v2") || strings.Contains(out, "migrating-v1") || strings.Contains(out, "testapp:") {
		t.Errorf("hctl logs --process release --release v2:\n%s", out)
	}
	if out := e.mustHctl("logs", "jrn", "--process", "web").Stdout; !strings.Contains(out, "release=v2 process=web.1") || strings.Contains(out, "migrating") {
		t.Errorf("hctl logs --process web:\n%s", out)
	}
	t.Logf("hctl logs jrn -n 50:\n%s", out)
}

// waitExit waits until pid is gone (not our child: polls with signal 0).
func waitExit(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

// startWithJournald starts agentd (--journal on) in a mount namespace of
// its own beside a real journald (journalWrapper). It skips without root or
// the tools; its cleanup stops agentd and that journald.
func startWithJournald(t *testing.T) (*env, *harness.Agentd) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (a mount namespace for a private journald)")
	}
	for _, p := range []string{journald, "/usr/bin/unshare", "/usr/bin/nsenter", "/usr/bin/journalctl"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not installed (Debian: systemd, util-linux)", p)
		}
	}
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "agentd-in-ns")
	if err := os.WriteFile(wrapper, []byte(journalWrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	b := bins
	b.Agentd = wrapper
	ag, err := harness.StartEnv(b, dir, []string{"JDIR=" + dir, "AGENTD=" + bins.Agentd}, "--journal", "on")
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	e := &env{t: t, ag: ag, dir: dir}
	t.Cleanup(func() {
		ag.Stop()
		if b, err := os.ReadFile(filepath.Join(dir, "journald.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGTERM)
				waitExit(pid, 10*time.Second)
			}
		}
		if t.Failed() {
			t.Logf("agentd log:\n%s", ag.Log())
		}
		os.RemoveAll(dir)
	})
	return e, ag
}
