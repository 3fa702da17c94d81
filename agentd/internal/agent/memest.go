package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/agentd/agentd/agentd/internal/diagnose"
	"github.com/agentd/agentd/agentd/internal/rollout"
)

// The memory check before a preboot (rollout.Host.Memory): what a new
// process of each type will need, estimated from the old processes of that
// type, against what the machine, or the cgroup agentd and its apps run
// in, can still give. PSS, not RSS: RSS counts every shared page (the
// code, a preloaded app's copy-on-write heap) once per process.

func (ag *Agent) memoryFor(a *app) (rollout.Memory, bool) {
	avail, ok := ag.memAvailable()
	if !ok {
		return rollout.Memory{}, false
	}
	m := rollout.Memory{Available: avail, PerProcess: map[string]int64{}}
	// A pass of its own, not the trap watches' shared one: the picture must
	// see processes started a moment ago. A shared pass up to 100 ms old,
	// taken by the check of the operation that then started them (agentd's
	// boot), showed none of them to the deploy right after it, and the
	// check let through a deploy that memory could not hold
	// (TestMaxSurge, 5 failures in 12 runs).
	groups := diagnose.Groups()
	a.mu.Lock()
	type acc struct{ n, pss int64 }
	byType := map[string]*acc{}
	byRelease := map[int]*acc{}
	for _, p := range a.procs {
		if p.p.Exited() {
			continue
		}
		pss := groupPSS(groups[p.p.PID()])
		if pss <= 0 {
			continue
		}
		if byRelease[p.release] == nil {
			byRelease[p.release] = &acc{}
		}
		byRelease[p.release].n++
		byRelease[p.release].pss += pss
		if p.release == a.st.Active && !p.retired {
			if byType[p.typ] == nil {
				byType[p.typ] = &acc{}
			}
			byType[p.typ].n++
			byType[p.typ].pss += pss
		}
	}
	a.mu.Unlock()
	for typ, x := range byType {
		m.PerProcess[typ] = x.pss / x.n
	}
	var vs []int
	for v := range byRelease {
		vs = append(vs, v)
	}
	sort.Ints(vs)
	var holders []string
	for _, v := range vs {
		x := byRelease[v]
		holders = append(holders, fmt.Sprintf("%s %s (%d processes, %d MiB)", a.st.Name, vname(v), x.n, x.pss>>20))
	}
	m.Holders = strings.Join(holders, ", ")
	return m, true
}

// memAvailable is MemAvailable, or less when agentd's cgroup has a
// memory limit closer than that. AGENTD_TEST_MEM_AVAILABLE (bytes), a test
// hook, stands in for both.
func (ag *Agent) memAvailable() (int64, bool) {
	if v := ag.cfg.TestMemAvailable; v > 0 {
		return v, true
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	avail := int64(-1)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := kBField(sc.Text(), "MemAvailable:"); ok {
			avail = v
		}
	}
	if avail < 0 {
		return 0, false
	}
	if left, ok := cgroupLeft(); ok && left < avail {
		avail = left
	}
	return avail, true
}

// cgroupLeft is memory.max - memory.current of agentd's own cgroup (v2),
// when it has a limit.
func cgroupLeft() (int64, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	path, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "0::")
	if !ok {
		return 0, false
	}
	dir := filepath.Join("/sys/fs/cgroup", path)
	read := func(name string) (int64, bool) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return 0, false
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return v, err == nil
	}
	limit, ok := read("memory.max") // "max" when unlimited: no number
	if !ok {
		return 0, false
	}
	cur, ok := read("memory.current")
	if !ok {
		return 0, false
	}
	return max(0, limit-cur), true
}

// groupPSS sums the PSS of a process group's members (each process of an
// app leads its own group: a server's forked workers count with it).
func groupPSS(members []int) int64 {
	var total int64
	for _, pid := range members {
		total += pss(pid)
	}
	return total
}

func pss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := kBField(line, "Pss:"); ok {
			return v
		}
	}
	return 0
}

// kBField reads the bytes of a "NAME:   1234 kB" line of /proc, as
// /proc/meminfo and smaps_rollup write them.
func kBField(line, name string) (int64, bool) {
	rest, ok := strings.CutPrefix(line, name)
	if !ok {
		return 0, false
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
	return kb << 10, err == nil
}
