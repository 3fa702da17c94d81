package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/grammar"
	"github.com/agentd/agentd/sockets"
)

// Releases: receiving an artifact, recording a release, its release
// phase, and what is pruned once releases are no longer kept.

// newRelease records a new pending release. Callers hold a.mu.
func (ag *Agent) newRelease(a *app, digest, source string, config map[string]string) *releaseState {
	a.st.LastVersion++
	r := &releaseState{
		Version: a.st.LastVersion, Status: api.StatusPending, Source: source, Digest: digest,
		Config: config, CreatedAt: time.Now().UTC(),
	}
	a.st.Releases = append(a.st.Releases, r)
	return r
}

// runRelease runs the release command to completion, streaming its output.
func (ag *Agent) runRelease(ctx context.Context, a *app, r *releaseState, command string, o *op) error {
	return ag.runScript(ctx, a, r, "release", command, o)
}

// runScript runs command once as process name of release r (the release
// phase, an app.json postdeploy script), streaming its output to o and the
// logs, and waits for it to end.
func (ag *Agent) runScript(ctx context.Context, a *app, r *releaseState, name, command string, o *op) error {
	a.mu.Lock()
	env, err := ag.procEnv(a, r, name)
	userName := a.st.User
	shimOpt := a.shimOptions(0)
	releaseTimeout := ag.releaseTimeout(a)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	cred, err := credential(userName)
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	logDir := filepath.Join(ag.cfg.logsDir(), a.st.Name)
	os.MkdirAll(logDir, 0o750)
	logf, err := os.OpenFile(filepath.Join(logDir, vname(r.Version)+"."+name+".log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		pr.Close()
		pw.Close()
		return err
	}
	defer logf.Close()
	dir, err := ag.codeDir(a, r)
	if err != nil {
		pr.Close()
		pw.Close()
		return err
	}
	p, err := supervisor.Start(supervisor.Spec{
		Shim: ag.cfg.Shim, Argv: sockets.ShellArgv(command), Dir: dir,
		Env: env, Output: pw, Credential: cred, ShimOptions: shimOpt, Held: true,
	})
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	// Tracked like any process, so that an agentd restarted meanwhile
	// finds it and stops it with the interrupted deploy.
	rp := &proc{typ: name, release: r.Version, p: p, state: api.StateStarting, retired: true, extend: make(chan time.Duration, 1)}
	a.mu.Lock()
	a.procs = append(a.procs, rp)
	err = ag.save(a)
	if err == nil && ag.frozen.Load() {
		err = errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade)")
	}
	a.mu.Unlock()
	if err != nil {
		p.Cancel() // recorded nowhere: it must not run
	} else {
		p.Release()
	}
	var tail []string
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		// agentd writes this log itself: past the log cap, lines are
		// streamed but no longer kept.
		kept, limit := int64(0), ag.maxLogBytes()
		for sc.Scan() {
			line := sc.Text()
			if kept < limit {
				n, _ := fmt.Fprintln(logf, line)
				if kept += int64(n); kept >= limit {
					fmt.Fprintf(logf, "agentd: the %s command's output past %d bytes (the log cap) is not kept\n", name, limit)
				}
			}
			o.event("output", name, line)
			if ag.cfg.Journal != nil {
				ag.sendLine(LineOrigin{App: a.st.Name, Release: vname(r.Version), Process: name, PID: p.PID()}, line)
			}
			tail = append(tail, line)
			if len(tail) > 5 {
				tail = tail[1:]
			}
		}
		io.Copy(io.Discard, pr)
		pr.Close()
	}()
	timeout := time.NewTimer(releaseTimeout)
	defer timeout.Stop()
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Stop(10 * time.Second)
		endOutput(copied, pr)
		return fmt.Errorf("%q was stopped: %w", command, context.Cause(ctx))
	case <-timeout.C:
		killed := p.Stop(10 * time.Second)
		endOutput(copied, pr)
		how := "was stopped (SIGTERM)"
		if killed {
			how = "ignored SIGTERM for 10s and was SIGKILLed"
		}
		return fmt.Errorf("%q did not finish within the release timeout of %s and %s", command, releaseTimeout, how)
	}
	endOutput(copied, pr)
	if ex := p.Exit(); ex.Code != 0 {
		msg := fmt.Sprintf("%q %s", command, ex)
		if len(tail) > 0 {
			msg += "; its last output:\n" + strings.Join(tail, "\n")
		}
		return errors.New(msg)
	}
	return nil
}

// tailLines returns the last n lines of a file, bounded to 4 KiB.
func tailLines(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4096
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max64(0, fi.Size()-max)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// RunReleasePhase runs only the release command of an artifact, with the
// app's current config, for fleets where migrations run once.
func (ag *Agent) RunReleasePhase(name string, art io.Reader, emit func(api.Event)) api.OpResult {
	a, err := ag.get(name)
	if err != nil {
		return failNoApp(name, err, emit)
	}
	o := ag.newOp(a, "release-phase", emit)
	o.enter(api.PhasePrepare, "receiving and unpacking the artifact")
	digest, err := ag.ImportArtifact(art)
	if err != nil {
		return o.finish(errf(api.CodeBadRequest, "prepare: %v", err))
	}
	pf, err := ag.procfileOf(digest)
	if err != nil {
		return o.finish(fmt.Errorf("prepare: %w", err))
	}
	cmd, ok := pf.Release()
	if !ok {
		// Dokku's scripts.dokku.predeploy is the release phase of a
		// Procfile without one, for fleets too.
		m, err := ag.appJSONOf(digest)
		if err != nil {
			return o.finish(errf(api.CodeBadRequest, "prepare: %v", err))
		}
		if m != nil && m.Scripts.DokkuPredeploy != "" {
			cmd, ok = m.Scripts.DokkuPredeploy, true
			o.info("app.json scripts.dokku.predeploy is the release phase: %s", cmd)
		}
	}
	if !ok {
		o.info("the Procfile has no release command: nothing to run")
		return o.finish(nil)
	}
	a.mu.Lock()
	r := &releaseState{Version: a.st.LastVersion + 1, Digest: digest, Config: maps.Clone(a.st.Config), Procfile: pf.Map()}
	r.Procfile["release"] = cmd
	a.mu.Unlock()
	o.enter(api.PhaseRelease, "running the release command: %s", cmd)
	if err := ag.runRelease(context.Background(), a, r, cmd, o); err != nil {
		return o.finish(fmt.Errorf("release phase: %w", err))
	}
	o.res.Changed = true
	return o.finish(nil)
}

// prune drops releases beyond the retention count (never the active one)
// and forgets ended processes. Callers hold a.mu.
func (ag *Agent) prune(a *app) {
	if len(a.st.Releases) > ag.cfg.KeepReleases {
		a.st.Releases = keptReleases(a.st.Releases, ag.cfg.KeepReleases, a.st.Active, a.hasLive)
		ag.pruneLogs(a)
		go ag.pruneSlugs()
	}
	live := a.procs[:0]
	for _, p := range a.procs {
		if !p.p.Exited() || (p.state == api.StateCrashed && !p.retired) {
			live = append(live, p)
		}
	}
	a.procs = live
}

var pruneMu sync.Mutex

// pruneSlugs removes the code nothing refers to any more, by reference:
// trees and blobs of the release store (storeRefs), and slug directories
// an agentd before the store left, with the links that name store trees.
func (ag *Agent) pruneSlugs() {
	pruneMu.Lock()
	defer pruneMu.Unlock()
	ag.mu.Lock()
	var broken []string
	for name := range ag.broken {
		broken = append(broken, name)
	}
	ag.mu.Unlock()
	if len(broken) > 0 {
		// What a broken app's processes run is named only in its file,
		// which agentd cannot read: nothing is collected until it is
		// repaired or destroyed.
		ag.log.Warn("not collecting the release store while an app's state is broken", "apps", strings.Join(broken, ","))
		return
	}
	refs := ag.storeRefs()
	if c, err := ag.CollectStore(refs); err != nil {
		ag.log.Warn("collecting the release store", "err", err)
	} else if c.Trees+c.Private+c.Blobs > 0 {
		ag.log.Info("release store collected", "trees", c.Trees, "private", c.Private, "blobs", c.Blobs, "bytes", c.Bytes)
	}
	entries, _ := os.ReadDir(ag.cfg.slugsDir())
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "tmp-") || refs.Digests[strings.Replace(name, "-", ":", 1)] {
			continue
		}
		os.RemoveAll(filepath.Join(ag.cfg.slugsDir(), name))
	}
}

// pruneLogs removes the log files of releases no longer kept that no
// process of the app still writes. Callers hold a.mu.
func (ag *Agent) pruneLogs(a *app) {
	kept := map[int]bool{}
	for _, r := range a.st.Releases {
		kept[r.Version] = true
	}
	for _, p := range a.procs {
		if !p.p.Exited() {
			kept[p.release] = true
		}
	}
	files, _ := filepath.Glob(filepath.Join(ag.cfg.logsDir(), a.st.Name, "v*.log"))
	for _, f := range files {
		v, err := grammar.ParseRelease(strings.SplitN(filepath.Base(f), ".", 2)[0])
		if err == nil && !kept[v] {
			os.Remove(f)
		}
	}
}

// hasLive reports whether a process of release v is still alive: one that
// drains, a cron run on it, one the reconcile after a restart has yet to
// stop. Its release stays listed while it runs (what it runs, its
// readiness and its exit are looked up there). Callers hold a.mu.
func (a *app) hasLive(v int) bool {
	return slices.ContainsFunc(a.procs, func(p *proc) bool { return p.release == v && !p.p.Exited() })
}

// keptReleases is what is left of releases (oldest first) when only keep
// of them are kept. Never dropped: the active release, those pinned (a
// live process still runs them), and the rollback target (the newest retired
// release older than the active one), so that a string of failed deploys
// cannot take away the release to roll back to. Failed releases go first,
// oldest first, since nothing can switch to them; then the oldest others.
func keptReleases(releases []*releaseState, keep, active int, pinned func(int) bool) []*releaseState {
	target := 0
	for i := len(releases) - 1; i >= 0; i-- {
		if r := releases[i]; r.Version < active && r.Status == api.StatusRetired {
			target = r.Version
			break
		}
	}
	drop := map[int]bool{}
	extra := len(releases) - keep
	for _, failedOnly := range []bool{true, false} {
		for _, r := range releases {
			if extra <= 0 {
				break
			}
			if drop[r.Version] || r.Version == active || r.Version == target || pinned(r.Version) ||
				failedOnly && r.Status != api.StatusFailed {
				continue
			}
			drop[r.Version] = true
			extra--
		}
	}
	var kept []*releaseState
	for _, r := range releases {
		if !drop[r.Version] {
			kept = append(kept, r)
		}
	}
	return kept
}
