package soak

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// usage is what the long run watches of agentd: memory, fds, goroutines,
// and the state directory.
type usage struct {
	RSSKiB     int64
	FDs        int
	Goroutines int
	State      map[string]dirSize // apps, slugs, logs
}

type dirSize struct {
	Bytes   int64 // apparent size of the files
	Entries int   // files and directories
}

func (d dirSize) String() string { return fmt.Sprintf("%d KiB in %d entries", d.Bytes>>10, d.Entries) }

func (u usage) String() string {
	return fmt.Sprintf("RSS %d KiB, %d fds, %d goroutines, state: apps %s, slugs %s, logs %s",
		u.RSSKiB, u.FDs, u.Goroutines, u.State["apps"], u.State["slugs"], u.State["logs"])
}

// measure reads agentd's usage: /proc for RSS and fds, /metrics (through
// the control socket, as an operator's scraper would) for goroutines.
func measure(pid int, socket, stateDir string) (usage, error) {
	var u usage
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("agentd's status: %w", err)
	}
	for l := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			u.RSSKiB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, fmt.Errorf("agentd's fds: %w", err)
	}
	u.FDs = len(fds)
	if u.Goroutines, err = goroutines(socket); err != nil {
		return u, err
	}
	u.State = map[string]dirSize{}
	for _, sub := range []string{"apps", "slugs", "logs"} {
		var d dirSize
		err := filepath.WalkDir(filepath.Join(stateDir, sub), func(_ string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			d.Entries++
			if fi, err := e.Info(); err == nil && !e.IsDir() {
				d.Bytes += fi.Size()
			}
			return nil
		})
		if err != nil {
			return u, fmt.Errorf("state directory: %w", err)
		}
		u.State[sub] = d
	}
	return u, nil
}

// goroutines is go_goroutines from agentd's /metrics.
func goroutines(socket string) (int, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://agentd/metrics")
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("metrics: no go_goroutines (%v)", sc.Err())
}

// unsupervised lists the processes that run for one of apps (their
// environment has AGENTD_APP=) in a directory under dir (this soak's agentd,
// not another test's) and that agentd does not list in ps.
func unsupervised(dir string, apps map[string]bool, ps []api.Process) []orphan {
	known := map[int]bool{}
	for _, p := range ps {
		known[p.PID] = true
	}
	var out []orphan
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || known[pid] || !alive(pid) {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "environ"))
		if err != nil {
			continue
		}
		app := ""
		for kv := range strings.SplitSeq(string(environ), "\x00") {
			if v, ok := strings.CutPrefix(kv, "AGENTD_APP="); ok {
				app = v
			}
		}
		if !apps[app] {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", ent.Name(), "cwd")); err != nil || !strings.HasPrefix(cwd, dir) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		out = append(out, orphan{pid, fmt.Sprintf("pid %d of app %s (%s)", pid, app, strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")))})
	}
	return out
}

// orphan is a process of an app that agentd does not list.
type orphan struct {
	pid  int
	desc string
}

// alive: pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// settled says what keeps app from being settled ("" when it is): exactly
// one active release, the one the app names, and its formation running,
// ready, and nothing else.
func settled(info api.AppInfo, rels []api.Release) string {
	active := 0
	for _, r := range rels {
		if r.Status == api.StatusActive {
			active++
			if r.Name != info.ActiveRelease {
				return fmt.Sprintf("release %s is active, the app says %s", r.Name, info.ActiveRelease)
			}
		}
	}
	if info.ActiveRelease == "" {
		if active != 0 || len(info.Processes) != 0 {
			return fmt.Sprintf("no active release but %d active releases and %d processes", active, len(info.Processes))
		}
		return ""
	}
	if active != 1 {
		return fmt.Sprintf("%d active releases", active)
	}
	if info.Deploying {
		return "an operation is in progress"
	}
	want := map[string]int{}
	if info.Release != nil {
		for typ := range info.Release.Procfile {
			if typ != "release" {
				want[typ] = info.Formation[typ]
			}
		}
	}
	got := map[string]int{}
	for _, p := range info.Processes {
		if p.Release != info.ActiveRelease || p.State != api.StateReady {
			return fmt.Sprintf("%s of %s is %s", p.Name, p.Release, p.State)
		}
		got[p.Type]++
	}
	for typ, n := range want {
		if got[typ] != n {
			return fmt.Sprintf("%d %s processes, formation %d", got[typ], typ, n)
		}
	}
	return ""
}
