package agent

import (
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
)

// What the API shows of cron jobs, and the per-host cron setting.

// Cron lists app's cron jobs, from its active release, and their runs on
// this host.
func (ag *Agent) Cron(name string) (api.CronList, error) {
	a, err := ag.get(name)
	if err != nil {
		return api.CronList{}, err
	}
	a.mu.Lock()
	out := api.CronList{App: name, Enabled: !a.st.CronOff, Jobs: []api.CronJob{}}
	r := a.release(a.st.Active)
	a.mu.Unlock()
	if r == nil {
		return out, nil
	}
	out.Release = vname(r.Version)
	jobs, err := ag.jobsOf(a, r)
	if err != nil {
		out.Error = err.Error()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, j := range jobs {
		cj := api.CronJob{Name: j.name, Command: j.command, Schedule: j.schedule.String()}
		if rec := a.st.Cron[j.name]; rec != nil && rec.Command == j.command && rec.Schedule == j.schedule.String() {
			if !a.st.CronOff {
				cj.Next = rec.Next
			}
			cj.LastStart, cj.LastEnd, cj.LastExitCode, cj.LastResult = rec.LastStart, rec.LastEnd, rec.LastExit, rec.LastResult
			if rec.LastRelease != 0 {
				cj.LastRelease = vname(rec.LastRelease)
			}
			cj.Runs, cj.Failures, cj.Skipped = rec.Runs, rec.Failures, rec.Skipped
		} else if !a.st.CronOff {
			cj.Next = j.schedule.Next(time.Now())
		}
		if p := a.cronRunning(j.index); p != nil {
			cj.Running, cj.PID, cj.RunningRelease = true, p.p.PID(), vname(p.release)
		}
		out.Jobs = append(out.Jobs, cj)
	}
	return out, nil
}

// cronSetting reads the cron setting of apps create/set ("" is on).
func cronSetting(s string) (off bool, err error) {
	if s == "" {
		return false, nil
	}
	on, err := grammar.ParseCronSetting(s)
	if err != nil {
		return false, badRequest(err)
	}
	return !on, nil
}

func cronWord(off bool) string {
	if off {
		return "off"
	}
	return "on"
}
