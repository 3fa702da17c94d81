package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
)

// The readiness diagnostics (docs/app-contract.md, "When readiness
// fails"): a first deploy that falls into one of the socket-activation
// traps fails saying which, with the fix, well before its boot timeout.

// diagBoot is the boot timeout of the diagnostics tests: a trap must be
// reported in less than half of it.
const diagBoot = 20 * time.Second

// nodeServer is the README's own words: a Node server on fd 3, and only
// fd 3.
const nodeServer = `const http = require('http');
const server = http.createServer((req, res) => res.end('hello\n'));
server.listen({fd: 3}, () => console.log('listening on fd 3'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`

type trapCase struct {
	name      string
	readiness string
	procfile  string // the web line
	files     map[string]string
	reason    string
	want      []string
}

func TestReadinessTraps(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is needed (Debian's nodejs package; .ci/run installs it)")
	}
	cases := []trapCase{{
		name:      "node-fd3-only",
		readiness: "web=http:/",
		procfile:  "web: exec " + node + " server.js",
		files:     map[string]string{"server.js": nodeServer},
		reason:    api.ReasonProbeNotAccepted,
		want: []string{
			"web.1 never accepted on its probe socket, fd 4 (LISTEN_FDNAMES=web:probe): serve every fd from 3 to 3+LISTEN_FDS-1, or make web's readiness notify",
			"listening on fd 3",
			"hctl apps set node-fd3-only --readiness TYPE=notify changes",
		},
	}, {
		name:      "closes-fds",
		readiness: "web=http:/",
		procfile:  fmt.Sprintf("web: TESTAPP_MODE=close-sockets exec %s", bins.TestApp),
		reason:    api.ReasonSocketClosed,
		want:      []string{"web.1 closed its socket web, fd 3 (LISTEN_FDNAMES=web:probe), and no process of its group holds it"},
	}, {
		name:      "shell-forks",
		readiness: "web=notify",
		procfile:  fmt.Sprintf("web: TESTAPP_MODE=strict-listen-pid %s; echo exited", bins.TestApp),
		reason:    api.ReasonListenPIDRefused,
		want:      []string{"but the fds went to its child", "ignores them and listens on 127.0.0.1:", `with exec ("web: exec CMD")`},
	}, {
		name:      "own-port",
		readiness: "web=notify",
		procfile:  fmt.Sprintf("web: TESTAPP_MODE=own-port exec %s", bins.TestApp),
		reason:    api.ReasonOwnSocket,
		want:      []string{"web.1 listens on 127.0.0.1:", "a socket it bound itself, and not on the socket agentd passed it (web, fd 3, LISTEN_FDNAMES=web)"},
	}}
	e := start(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.createApp(c.name, "--readiness", c.readiness, "--boot-timeout", diagBoot.String())
			dir := filepath.Join(e.dir, "trap-"+c.name)
			if _, err := harness.Release(dir, c.procfile+"\n", c.files); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			r := e.hctl("deploy", c.name, dir)
			took := time.Since(t0)
			out := r.Stdout + r.Stderr
			t.Logf("%s: exit %d after %s:\n%s", c.name, r.Code, took.Round(time.Millisecond), r.Stderr)
			if r.Code != 1 {
				t.Fatalf("want exit 1, got %s", r)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("the deploy's message lacks %q", w)
				}
			}
			if took >= diagBoot/2 {
				t.Errorf("the deploy failed after %s, not within half its boot timeout of %s", took, diagBoot)
			}
			// Scripts get the reason (--json).
			var res api.OpResult
			r = e.hctl("--json", "deploy", c.name, dir)
			if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
				t.Fatalf("hctl --json deploy: %v: %s", err, r)
			}
			if res.Reason != c.reason {
				t.Errorf("--json: reason %q, want %q (%s)", res.Reason, c.reason, res.Error)
			}
		})
	}
}
