package rollout

import (
	"errors"
	"fmt"
)

// Memory is what the host can tell of memory before a preboot.
type Memory struct {
	// PerProcess estimates what one new process of a type needs, from the
	// old processes of that type (PSS, or their cgroup's memory.current:
	// RSS would count shared pages twice). Missing or 0: unknown.
	PerProcess map[string]int64
	// Available is what the machine, or the cgroup the apps run in, can
	// still give.
	Available int64
	// Holders says what holds the memory, for the message of a deploy
	// that cannot start even one process.
	Holders string
}

// ErrNoMemory is a rollout that cannot start even one new process.
var ErrNoMemory = errors.New("not enough memory")

// surge decides how many processes of a type beyond its formation the
// rollout may run at once: Target.MaxSurge (the whole formation when 0),
// lowered to what the memory holds.
func (r *run) surge(plan Plan) (int, string, error) {
	asked := r.t.MaxSurge
	if asked <= 0 {
		for _, tp := range plan.Types {
			asked = max(asked, len(tp.Start))
		}
		asked = max(asked, 1)
	}
	mem, ok := r.h.Memory()
	if !ok {
		return asked, "", nil
	}
	need := func(s int) int64 {
		var n int64
		for _, tp := range plan.Types {
			if tp.Strategy == StopFirst {
				continue // it frees what it needs first
			}
			n += int64(min(s, len(tp.Start))) * mem.PerProcess[tp.Type]
		}
		return n
	}
	if need(asked) <= mem.Available {
		return asked, "", nil
	}
	for s := asked - 1; s >= 1; s-- {
		if need(s) <= mem.Available {
			return s, fmt.Sprintf("memory: %s available, the new processes need about %s each; surge lowered from %d to %d",
				mib(mem.Available), perProcess(mem, plan), asked, s), nil
		}
	}
	msg := fmt.Sprintf("%s available, one new process needs about %s", mib(mem.Available), mib(need(1)))
	if mem.Holders != "" {
		msg += "; held by " + mem.Holders
	}
	return 0, "", fmt.Errorf("%w to start even one new process: %s", ErrNoMemory, msg)
}

func perProcess(m Memory, plan Plan) string {
	var top int64
	for _, tp := range plan.Types {
		top = max(top, m.PerProcess[tp.Type])
	}
	return mib(top)
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }
