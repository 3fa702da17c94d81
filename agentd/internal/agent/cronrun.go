package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/supervisor"
	"github.com/agentd/agentd/sockets"
)

// A cron run's start and end (the schedule is cron.go's).

// startCron starts a run of job j with release r: held in the exec shim
// until it is recorded, like any process, with the app's environment,
// user, limits and logs, and no socket.
func (ag *Agent) startCron(a *app, r *releaseState, j cronJob, now time.Time) error {
	dir, err := ag.codeDir(a, r)
	if err != nil {
		return err
	}
	a.mu.Lock()
	env, err := ag.procEnv(a, r, j.name)
	userName := a.st.User
	shimOpt := a.shimOptions(0)
	drainTimeout := time.Duration(a.st.DrainTimeout)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	cred, err := credential(userName)
	if err != nil {
		return err
	}
	logDir := filepath.Join(ag.cfg.logsDir(), a.st.Name)
	os.MkdirAll(logDir, 0o750)
	logPath := filepath.Join(logDir, vname(r.Version)+"."+j.name+".log")
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("log file for %s: %w", j.name, err)
	}
	defer out.Close()
	spec := supervisor.Spec{
		Shim: ag.cfg.Shim, Argv: sockets.ShellArgv(j.command), Dir: dir,
		Env: env, Output: out, Credential: cred, ShimOptions: shimOpt, Held: true,
	}
	if sc := ag.cfg.Scopes; sc != nil {
		spec.Place = func(pid int) {
			if err := sc.Place(a.st.Name, r.Version, pid, drainTimeout); err != nil {
				ag.log.Warn("release cgroup", "app", a.st.Name, "process", j.name, "err", err)
			}
		}
	}
	p, err := supervisor.Start(spec)
	if err != nil {
		return fmt.Errorf("starting %s: %w", j.name, err)
	}
	pr := &proc{typ: cronType, index: j.index, release: r.Version, p: p, state: api.StateRunning, cron: true,
		log: logPath, extend: make(chan time.Duration, 1)}
	a.mu.Lock()
	a.procs = append(a.procs, pr)
	rec := a.st.Cron[j.name]
	was := *rec
	rec.LastStart, rec.LastEnd, rec.LastRelease, rec.LastExit, rec.LastResult = now, time.Time{}, r.Version, nil, "running"
	rec.Runs++
	err = ag.save(a)
	if err == nil && ag.frozen.Load() {
		err = errf(api.CodeUnavailable, "agentd is handing over to a new agentd (upgrade)")
	}
	if err != nil {
		*rec = was
	}
	a.mu.Unlock()
	if err != nil {
		p.Cancel() // recorded nowhere: it must not run
	} else if err = p.Release(); err == nil {
		ag.log.Info("cron job started", "app", a.st.Name, "release", vname(r.Version), "process", j.name, "pid", p.PID(), "schedule", j.schedule.String())
		if o, ok := ag.obs.(cronObserver); ok {
			o.CronRun(a.st.Name, j.name)
		}
	}
	p.OnExit(func() { ag.cronExit(a, pr) })
	return err
}

// cronExit records how a run ended. It runs once the process has exited.
func (ag *Agent) cronExit(a *app, p *proc) {
	<-p.p.Done()
	ag.forward(a.st.Name, p, true)
	ex := p.p.Exit()
	a.mu.Lock()
	p.state, p.retired = api.StateExited, true
	if ex.Code == sockets.ExitNotReleased || a.gone {
		if !a.gone {
			ag.save(a)
		}
		a.mu.Unlock()
		return
	}
	failed := false
	rec := a.st.Cron[p.name()]
	if rec != nil && rec.LastRelease == p.release {
		rec.LastEnd = time.Now()
		rec.LastResult = ex.String()
		switch {
		case ex.Unknown:
			// Adopted: its status went to the agentd that started it.
			rec.LastResult = "exited (status unknown: agentd restarted during the run)"
		case ex.Signal != 0:
			failed = true
		default:
			c := ex.Code
			rec.LastExit = &c
			failed = c != 0
		}
		if failed {
			rec.Failures++
		}
	}
	ag.save(a)
	a.mu.Unlock()
	how := ex.String()
	if ex.Unknown {
		how = "exited (status unknown)"
	}
	ag.log.Info("cron job ended", "app", a.st.Name, "release", vname(p.release), "process", p.name(), "pid", p.p.PID(), "how", how)
	if o, ok := ag.obs.(cronObserver); ok && failed {
		o.CronFailed(a.st.Name, p.name())
	}
}
