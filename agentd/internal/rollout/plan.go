package rollout

import (
	"slices"
	"sort"
	"time"
)

// Strategy says how the processes of one type are replaced.
type Strategy string

const (
	// Overlap starts the new processes beside the old ones and retires the
	// old ones once the new ones are ready (Heroku's preboot).
	Overlap Strategy = "overlap"
	// StopFirst stops the old processes of the type, and waits until they
	// have exited, before the new ones start: for workers and clocks that
	// must never run twice.
	StopFirst Strategy = "stop-first"
)

// ParseStrategy accepts the names of the strategies.
func ParseStrategy(s string) (Strategy, bool) {
	switch Strategy(s) {
	case Overlap, StopFirst:
		return Strategy(s), true
	}
	return "", false
}

// Proc is a process as the engine sees it. The host's process type
// implements it.
type Proc interface {
	Type() string
	Index() int
	Release() int
	// Retired reports whether the process is being stopped already
	// (draining): it is never kept.
	Retired() bool
	// Done is closed when the process has exited.
	Done() <-chan struct{}
	// Name is TYPE.INDEX, for messages.
	Name() string
}

// Target is what the app should run once the rollout is done.
type Target struct {
	// Release is the release to run.
	Release int
	// Previous is the active release before the rollout (0 for none): the
	// one restored when the rollout fails before its cutover.
	Previous int
	// Types are the process types in scope, in Procfile order, and
	// Formation their counts.
	Types     []string
	Formation map[string]int
	// AllTypes: processes of types outside Types retire too (a deploy of
	// a release without that type). Otherwise they are left alone.
	AllTypes bool
	// Replace: processes of Release are replaced too (a restart).
	Replace bool
	// Renew names processes of Release that are replaced too, the others
	// kept (a process that failed its liveness checks).
	Renew []string
	// Strategy per type; Overlap when missing.
	Strategy map[string]Strategy
	// MaxSurge bounds how many processes of a type beyond its formation
	// belong to the rollout at once; 0 means the whole formation.
	MaxSurge int
	// Bake is how long the new release is watched after cutover.
	Bake time.Duration
	// ReleasePhase runs the release command first.
	ReleasePhase bool
	// ReleaseOnly: the release phase runs (when ReleasePhase) and the
	// rollout ends there: nothing starts, nothing retires, nothing is
	// activated (a deploy while the app is in maintenance).
	ReleaseOnly bool
	// Canary, above 0, makes the rollout a canary's (canary.go): Release's
	// processes start to Formation beside the active release's, which
	// stay; instead of a cutover the host sends them Canary percent of the
	// new connections (Host.Canary). Nothing retires but Release's own
	// surplus.
	Canary float64
}

func (t Target) strategy(typ string) Strategy {
	if s, ok := t.Strategy[typ]; ok && s != "" {
		return s
	}
	return Overlap
}

// TypePlan is the plan for one process type.
type TypePlan struct {
	Type     string
	Strategy Strategy
	// Want is the formation of the type.
	Want int
	// Keep are processes of the target release that stay.
	Keep []Proc
	// Start are the indexes of the processes to start.
	Start []int
	// Retire are the processes to stop.
	Retire []Proc
}

// Plan is what a rollout does, type by type in Procfile order (types that
// only retire come last).
type Plan struct {
	Types []TypePlan
}

// Starts counts the processes the plan starts.
func (p Plan) Starts() int {
	n := 0
	for _, t := range p.Types {
		n += len(t.Start)
	}
	return n
}

// Retires counts the processes the plan retires.
func (p Plan) Retires() int {
	n := 0
	for _, t := range p.Types {
		n += len(t.Retire)
	}
	return n
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool { return p.Starts() == 0 && p.Retires() == 0 }

// MakePlan compares the live processes (those not exited) with the target.
// A process is kept when it belongs to the target release, is not being
// stopped, is not to be replaced, and its index is within the formation;
// every index of the formation that no kept process has is started; every
// other process of a type in scope retires.
func MakePlan(live []Proc, t Target) Plan {
	byType := map[string][]Proc{}
	for _, p := range live {
		byType[p.Type()] = append(byType[p.Type()], p)
	}
	var plan Plan
	for _, typ := range t.Types {
		tp := TypePlan{Type: typ, Strategy: t.strategy(typ), Want: max(0, t.Formation[typ])}
		have := map[int]bool{}
		ps := byType[typ]
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].Index() < ps[j].Index() })
		for _, p := range ps {
			if t.Canary > 0 && p.Release() != t.Release {
				continue // the active release's: a canary leaves them be
			}
			keep := p.Release() == t.Release && !p.Retired() && !t.Replace && !slices.Contains(t.Renew, p.Name()) &&
				p.Index() >= 1 && p.Index() <= tp.Want && !have[p.Index()]
			if keep {
				have[p.Index()] = true
				tp.Keep = append(tp.Keep, p)
			} else if !p.Retired() {
				tp.Retire = append(tp.Retire, p)
			}
		}
		for i := 1; i <= tp.Want; i++ {
			if !have[i] {
				tp.Start = append(tp.Start, i)
			}
		}
		plan.Types = append(plan.Types, tp)
		delete(byType, typ)
	}
	if t.AllTypes && t.Canary == 0 {
		var rest []string
		for typ := range byType {
			rest = append(rest, typ)
		}
		slices.Sort(rest)
		for _, typ := range rest {
			tp := TypePlan{Type: typ, Strategy: t.strategy(typ)}
			for _, p := range byType[typ] {
				if !p.Retired() {
					tp.Retire = append(tp.Retire, p)
				}
			}
			if len(tp.Retire) > 0 {
				plan.Types = append(plan.Types, tp)
			}
		}
	}
	return plan
}
