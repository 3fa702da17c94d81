package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/agentd/agentd/agentd/api"
)

// appStatus is what `hctl status APP` answers: the few facts a health gate
// (an Ansible `until:`, a script's loop) needs about one app, computed from
// GET /v1/apps/{app}.
type appStatus struct {
	App string `json:"app"`
	// Release is the active release ("v3"), "" before the first deploy.
	Release   string `json:"release"`
	ReleaseID string `json:"release_id"` // as given to deploy --release-id
	Digest    string `json:"digest"`     // content digest of its artifact
	Deploying bool   `json:"deploying"`  // an operation is running
	// Wanted is how many processes the formation asks for, over the active
	// release's process types; Processes how many of them run (starting,
	// ready or crashed and waiting for a restart); Ready how many are ready.
	Wanted    int `json:"wanted"`
	Processes int `json:"processes"`
	Ready     int `json:"ready"`
	// Healthy: there is an active release, no operation is running, and
	// exactly the wanted number of its processes run, all of them ready.
	Healthy bool `json:"healthy"`
	// Problem says why Healthy is false ("" when it is true).
	Problem string `json:"problem,omitempty"`
	// StateFile is "recovered" or "broken" (agentd's start refused the
	// app's state file), StateNote what happened.
	StateFile string `json:"state_file,omitempty"`
	StateNote string `json:"state_note,omitempty"`
	// Maintenance is set while the app is in maintenance (not Healthy:
	// its formation does not run).
	Maintenance *api.Maintenance `json:"maintenance,omitempty"`
}

// newAppStatus derives an appStatus from an app's info.
func newAppStatus(info *api.AppInfo) appStatus {
	s := appStatus{App: info.Name, Release: info.ActiveRelease, Deploying: info.Deploying,
		StateFile: info.StateFile, StateNote: info.StateNote, Maintenance: info.Maintenance}
	if info.Release != nil {
		s.ReleaseID, s.Digest = info.Release.ReleaseID, info.Release.Digest
	}
	// The process types of the active release; without its Procfile, every
	// type of the formation.
	types := map[string]bool{}
	if info.Release != nil && len(info.Release.Procfile) > 0 {
		for t := range info.Release.Procfile {
			if t != "release" {
				types[t] = true
			}
		}
	} else {
		for t := range info.Formation {
			types[t] = true
		}
	}
	for t, n := range info.Formation {
		if types[t] {
			s.Wanted += n
		}
	}
	var notReady []string
	for _, p := range info.Processes {
		if s.Release == "" || p.Release != s.Release {
			continue // a process of an older release, draining
		}
		switch p.State {
		case api.StateReady:
			s.Processes++
			s.Ready++
		case api.StateStarting, api.StateCrashed:
			s.Processes++
			notReady = append(notReady, p.Name+" "+p.State)
		}
	}
	slices.Sort(notReady)
	switch {
	case s.StateFile == "broken":
		s.Problem = "not supervised: " + s.StateNote + " (hctl apps repair " + s.App + ")"
	case s.Release == "":
		s.Problem = "no release deployed yet"
	case s.Deploying:
		s.Problem = "an operation is in progress"
	case s.Maintenance != nil:
		s.Problem = "in maintenance: " + fmtMaintenance(s.Maintenance)
	case len(notReady) > 0:
		s.Problem = fmt.Sprintf("%d of %d processes ready (%s)", s.Ready, s.Wanted, strings.Join(notReady, ", "))
	case s.Ready != s.Wanted:
		s.Problem = fmt.Sprintf("%d of %d processes ready", s.Ready, s.Wanted)
	default:
		s.Healthy = true
	}
	return s
}

// appStatusAction answers `hctl status APP`.
func (h *hctl) appStatusAction(ctx context.Context, app string) error {
	ctx, cancel := h.withTimeout(ctx, queryTimeout)
	defer cancel()
	info, err := h.client().AppInfo(ctx, app)
	if err != nil {
		return err
	}
	s := newAppStatus(info)
	if h.jsonMode() {
		h.writeJSON(s)
		return nil
	}
	writeAppStatus(h.stdout, s)
	return nil
}

func writeAppStatus(w io.Writer, s appStatus) {
	digest := strings.TrimPrefix(s.Digest, "sha256:")
	digest = digest[:min(12, len(digest))]
	healthy := "yes"
	if !s.Healthy {
		healthy = "no: " + s.Problem
	}
	writeFields(w,
		"app", s.App,
		"release", orNone(s.Release),
		"release id", s.ReleaseID,
		"digest", digest,
		"processes", fmt.Sprintf("%d of %d ready", s.Ready, s.Wanted),
		"deploying", yesNo(s.Deploying),
		"healthy", healthy,
	)
	if s.Maintenance != nil {
		writeFields(w, "maintenance", fmtMaintenance(s.Maintenance))
	}
	if s.StateFile != "" {
		writeFields(w, "state file", s.StateFile+": "+s.StateNote)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
