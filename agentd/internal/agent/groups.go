package agent

import (
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/internal/diagnose"
)

// groupsMaxAge is how old a pass over /proc may be for the looks that
// share it: a trap watch ticks every trapLook.
const groupsMaxAge = 100 * time.Millisecond

// groups shares one pass over /proc (diagnose.Groups) between the trap
// watches of every process booting. A process's group is in its stat
// only, so finding one group's members reads every process's: with 400
// processes and 10 deploys at once, a pass per look was most of agentd's
// CPU. (A deploy's memory check takes one pass of its own: memest.go.)
type groups struct {
	mu sync.Mutex
	at time.Time
	m  map[int][]int
}

// members returns the members of every process group, from a pass at
// most groupsMaxAge old.
func (g *groups) members() map[int][]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil || time.Since(g.at) > groupsMaxAge {
		g.m, g.at = diagnose.Groups(), time.Now()
	}
	return g.m
}
