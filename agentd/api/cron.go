package api

import (
	"context"
	"time"
)

// CronList answers GET /v1/apps/{app}/cron: the cron jobs of the app's
// active release (its app.json "cron") and how each one ran on this host.
type CronList struct {
	App string `json:"app"`
	// Enabled: this host runs the app's cron jobs (apps set --cron).
	Enabled bool `json:"enabled"`
	// Release is the active release the jobs come from ("v3"), empty when
	// none; Error says why its app.json could not be read.
	Release string    `json:"release,omitempty"`
	Error   string    `json:"error,omitempty"`
	Jobs    []CronJob `json:"jobs"`
}

// CronJob is one cron job and its runs on this host.
type CronJob struct {
	Name     string `json:"name"` // cron.1: its process name
	Command  string `json:"command"`
	Schedule string `json:"schedule"`
	// Next is when it runs next (absent when cron is off on this host).
	Next time.Time `json:"next,omitzero"`
	// Running is the PID and release of a run alive now.
	Running        bool   `json:"running"`
	PID            int    `json:"pid,omitempty"`
	RunningRelease string `json:"running_release,omitempty"`
	// LastStart, LastEnd and LastRelease describe the last run;
	// LastExitCode is its exit status, absent when not known (a run
	// adopted across an agentd restart, whose status went to the agentd
	// that started it) or killed by a signal (LastResult says which).
	LastStart    time.Time `json:"last_start,omitzero"`
	LastEnd      time.Time `json:"last_end,omitzero"`
	LastRelease  string    `json:"last_release,omitempty"`
	LastExitCode *int      `json:"last_exit_code,omitempty"`
	LastResult   string    `json:"last_result,omitempty"` // "exited with status 0", "killed by SIGKILL"
	// Runs and Failures count the runs started and those that did not exit
	// 0 since the job (its command and schedule) was first seen on this
	// host; Skipped counts due times not run (a run still alive, or agentd
	// down for longer than an hour).
	Runs     int `json:"runs"`
	Failures int `json:"failures"`
	Skipped  int `json:"skipped"`
}

// Cron lists app's cron jobs and their runs on this host.
func (c *Client) Cron(ctx context.Context, app string) (*CronList, error) {
	var out CronList
	if err := c.getJSON(ctx, appPath(app)+"/cron", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// StateRunning is the state in `hctl ps` of a process of the app that is
// not part of the formation: a cron job's run (cron.N) or a one-off of
// hctl run (run.N).
const StateRunning = "running"
