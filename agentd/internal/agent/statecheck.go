package agent

import (
	"errors"
	"fmt"
	"sort"

	"github.com/agentd/agentd/grammar"

	"github.com/agentd/agentd/agentd/internal/readiness"
	"github.com/agentd/agentd/agentd/internal/rollout"
	"github.com/agentd/agentd/sockets"
)

// errIncoherent marks a state file that is valid JSON but does not hold
// together: agentd would act on it wrongly (start what cannot exist,
// serve a socket it would have refused), so it is refused like a torn file.
var errIncoherent = errors.New("the state does not hold together")

// checkAppState refuses an app's state that parsed but does not hold
// together, saying every reason at once. name is the app the file is named
// after. It is the check given to state.Load at start.
//
// A process record whose PID now runs something else is not refused here:
// that is a process that ended, not a bad file. supervisor.Adopt opens a
// pidfd and then compares the kernel's start time of the PID with the one
// recorded (within 1.5 s, the precision /proc gives), and refuses a
// stranger; recover then reports the process gone and reconcile starts a
// new one.
func checkAppState(st *appState, name string) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if st.Name != name {
		bad("the file of app %q holds app %q", name, st.Name)
	}
	if grammar.CheckAppName(st.Name) != nil {
		bad("app name %q is not a valid app name", st.Name)
	}

	// Sockets: each one agentd would accept from `apps create`, with the
	// meaning the stored fields give it, and no name twice.
	if len(st.Sockets) == 0 {
		bad("no socket (an app has at least one)")
	}
	names := map[string]bool{}
	for _, sp := range st.Sockets {
		parsed, err := sockets.ParseSpec(sp.Type + "/" + sp.Name + "=" + sp.Addr)
		switch {
		case err != nil:
			bad("socket %s: %w", sp.Name, err)
		case parsed.Network != sp.Network || parsed.Address != sp.Address || parsed.Mode != sp.Mode || parsed.Owner != sp.Owner:
			bad("socket %s: stored as %s %s (mode %o, owner %q) but its address %s means %s %s (mode %o, owner %q)",
				sp.Name, sp.Network, sp.Address, sp.Mode, sp.Owner, sp.Addr, parsed.Network, parsed.Address, parsed.Mode, parsed.Owner)
		}
		if names[sp.Name] {
			bad("socket name %q twice", sp.Name)
		}
		names[sp.Name] = true
	}
	if len(st.Bound) > len(st.Sockets) {
		bad("%d bound addresses for %d sockets", len(st.Bound), len(st.Sockets))
	}
	for typ, kind := range st.Readiness {
		if _, err := readiness.Parse(kind); err != nil {
			bad("readiness of %s: %w", typ, err)
		}
	}

	// Releases: numbered once each, never above the last version given out
	// (the next release would reuse a number), the active one among them.
	releases := map[int]*releaseState{}
	for _, r := range st.Releases {
		if r == nil {
			bad("an empty release entry")
			continue
		}
		if r.Version <= 0 {
			bad("release version %d", r.Version)
		}
		if releases[r.Version] != nil {
			bad("release %s twice", vname(r.Version))
		}
		releases[r.Version] = r
		if r.Version > st.LastVersion {
			bad("release %s is newer than the last version given out, %s", vname(r.Version), vname(st.LastVersion))
		}
	}
	active := releases[st.Active]
	switch {
	case st.Active < 0:
		bad("active release %d", st.Active)
	case st.Active > 0 && active == nil:
		bad("the active release %s is not in the release list", vname(st.Active))
	}

	// Formation: counts agentd would accept from `scale`, and only for types
	// that exist. A type the active release lacks is tolerated while an
	// older release kept has it: it was scaled then, and stays idle now.
	for _, typ := range checkSortedKeys(st.Formation) {
		n := st.Formation[typ]
		if n < 0 || n > 100 {
			bad("formation %s=%d: a count is 0 to 100", typ, n)
		}
		if n == 0 || active == nil || releaseHasType(active, typ) {
			continue
		}
		older := false
		for _, r := range st.Releases {
			older = older || (r != nil && releaseHasType(r, typ))
		}
		if !older {
			bad("formation %s=%d: no release has a process type %q (the active %s has %v)", typ, n, typ, vname(active.Version), active.Order)
		}
	}

	// Processes: each of a release that exists, of a type that release
	// has, with a PID, and no PID twice. A name may be there twice: a
	// restart runs the new web.1 of a release beside its old one.
	pids := map[int]string{}
	for _, p := range st.Processes {
		r := releases[p.Release]
		switch {
		case r == nil:
			bad("process %s (pid %d) of release %s, which is not in the release list", p.Name, p.PID, vname(p.Release))
		case !releaseHasType(r, p.Type) && !runsReleasePhase(r, p.Type) && !runsScript(r, p.Type) && p.Type != rollout.Responder && !p.Cron:
			// The release phase, the responder (agentd itself), a cron run
			// and an app.json script are recorded too, none of them a
			// process type of the formation.
			bad("process %s (pid %d): release %s has no process type %q", p.Name, p.PID, vname(p.Release), p.Type)
		}
		if p.PID <= 1 {
			bad("process %s: pid %d", p.Name, p.PID)
		} else if other, ok := pids[p.PID]; ok {
			bad("pid %d recorded for both %s and %s", p.PID, other, p.Name)
		}
		pids[p.PID] = p.Name
	}

	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", errIncoherent, errors.Join(errs...))
	}
	return nil
}

// releaseHasType: r's Procfile runs typ ("release" is the release phase, no
// process type).
// runsReleasePhase reports whether a process named typ is r's release
// phase (the Procfile's release: line, or app.json's dokku predeploy put
// there), recorded while it runs so that a restarted agentd finds it.
func runsReleasePhase(r *releaseState, typ string) bool {
	_, ok := r.Procfile[typ]
	return ok && typ == "release"
}

func releaseHasType(r *releaseState, typ string) bool {
	_, ok := r.Procfile[typ]
	return ok && typ != "release"
}

func checkSortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
