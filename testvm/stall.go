package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// heartbeatMark starts each line the guest's heartbeat writes to the
// serial console, followed by the guest's uptime (/proc/uptime).
const heartbeatMark = "TESTVM-HEARTBEAT "

// stallMin is the gap between two heartbeats (sent once a second) from
// which the guest counts as stalled, and is logged to console.log. On a
// busy host (load 20 on 2 cores) gaps of 3-5 s come every minute or so;
// stallLoud and longer ones are also printed as they end.
const (
	stallMin  = 5 * time.Second
	stallLoud = 15 * time.Second
)

// A stall is a gap between two heartbeats of the guest as the host saw
// them on the serial console.
type stall struct {
	end   time.Time     // host time of the heartbeat that ended it
	host  time.Duration // how long the host waited for that heartbeat
	guest time.Duration // how far the guest's uptime advanced meanwhile
}

func (s stall) String() string {
	return fmt.Sprintf("%.1fs (guest clock +%.1fs) ending %s", s.host.Seconds(), s.guest.Seconds(), s.end.UTC().Format("15:04:05.0"))
}

// stallWatch follows the guest's heartbeat. The guest writes a line to
// its serial console every second, from a process at the highest
// priority: a gap of many seconds means the emulated machine as a whole
// did not run (or qemu's main loop, which also carries the ssh
// connection through slirp, did not), not that the guest was busy.
type stallWatch struct {
	mu sync.Mutex
	// armed: startHeartbeat started this boot's heartbeat. Lines from a
	// heartbeat still running during a reboot's shutdown are ignored, so
	// that watchHung does not count the boot's CPU time against it.
	armed    bool
	lastHost time.Time
	lastUp   float64
	beats    int
	stalls   []stall
}

// beat records a heartbeat line seen now; it returns the stall that it
// ended, if the gap was stallMin or more.
func (w *stallWatch) beat(line string, now time.Time) (stall, bool) {
	i := strings.Index(line, heartbeatMark)
	if i < 0 {
		return stall{}, false
	}
	f := strings.Fields(line[i+len(heartbeatMark):])
	if len(f) == 0 {
		return stall{}, false
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return stall{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.armed {
		return stall{}, false
	}
	last, lastUp := w.lastHost, w.lastUp
	w.lastHost, w.lastUp = now, up
	w.beats++
	// The first beat, or the first after a reboot (uptime went back):
	// nothing to compare with.
	if last.IsZero() || up < lastUp {
		return stall{}, false
	}
	gap := now.Sub(last)
	if gap < stallMin {
		return stall{}, false
	}
	s := stall{end: now, host: gap, guest: time.Duration((up - lastUp) * float64(time.Second))}
	w.stalls = append(w.stalls, s)
	return s, true
}

// since returns the longest stall that ended after t, and how many
// stalls ended after t.
func (w *stallWatch) since(t time.Time) (longest stall, n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.stalls {
		if s.end.After(t) {
			n++
			if s.host > longest.host {
				longest = s
			}
		}
	}
	return longest, n
}

// state describes the heartbeat for an error: when the guest was last
// heard from, and the longest stall so far.
func (w *stallWatch) state() string {
	w.mu.Lock()
	last, beats := w.lastHost, w.beats
	w.mu.Unlock()
	if beats == 0 {
		return "no heartbeat from the guest yet"
	}
	longest, n := w.since(time.Time{})
	msg := fmt.Sprintf("last heartbeat %.1fs ago", time.Since(last).Seconds())
	if n > 0 {
		msg += fmt.Sprintf("; %d stall(s) of %s or more, the longest %s", n, stallMin, longest)
	}
	return msg
}

// summary counts the beats and stalls of the whole run, for its end.
func (w *stallWatch) summary() string {
	w.mu.Lock()
	beats := w.beats
	w.mu.Unlock()
	longest, n := w.since(time.Time{})
	if n == 0 {
		return fmt.Sprintf("%d beats, no stall of %s or more", beats, stallMin)
	}
	return fmt.Sprintf("%d beats, %d stall(s) of %s or more, the longest %s", beats, n, stallMin, longest)
}

// reset forgets the last beat and ignores beats until arm: the guest
// reboots, or its heartbeat is being started.
func (w *stallWatch) reset() {
	w.mu.Lock()
	w.armed, w.lastHost, w.lastUp = false, time.Time{}, 0
	w.mu.Unlock()
}

// arm takes beats from now on.
func (w *stallWatch) arm() {
	w.mu.Lock()
	w.armed = true
	w.mu.Unlock()
}

// heartbeatScript writes the guest's uptime to the serial console once a
// second. Shell builtins only, but for sleep.
const heartbeatScript = `while :; do read up idle </proc/uptime; echo "` + heartbeatMark + `$up" >/dev/ttyS0; sleep 1; done`

// startHeartbeat starts the guest's heartbeat as a transient unit (it
// does not survive a reboot: awaitBoot starts it after each boot). It
// runs at the highest real-time priority, so that only the emulated
// machine stopping, not work inside it, delays a beat.
func (vm *VM) startHeartbeat(ctx context.Context) error {
	vm.stalls.reset()
	// From a file: systemd-run writes a command line given inline into
	// the transient unit with escapes (\$) that every daemon-reload then
	// warns about in the journal.
	_, err := vm.Run(ctx, "printf '%s\\n' "+shellQuote(heartbeatScript)+" >/run/testvm-heartbeat.sh &&"+
		" systemd-run --quiet --collect --unit=testvm-heartbeat"+
		" -p CPUSchedulingPolicy=fifo -p CPUSchedulingPriority=99 /bin/sh /run/testvm-heartbeat.sh")
	if err != nil {
		return err
	}
	vm.stalls.arm()
	return nil
}

// hungCPU is how much CPU time qemu may use without a heartbeat from the
// guest before the guest counts as hung. It is counted in qemu's CPU
// time, not in wall time: a guest that is not given the CPU (a busy
// host, qemu stopped) is stalled, not hung, and waits as long as that
// lasts; a guest that runs (qemu burns CPU) but never schedules its
// highest-priority task for this long is hung. Two vCPUs run a second
// of guest time for up to 2 s of qemu's CPU.
const hungCPU = 120 * time.Second

// lastBeat is the host time of the last heartbeat (zero before the first
// after a boot).
func (w *stallWatch) lastBeat() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastHost
}

// qemuCPU is the CPU time the process pid has used (all its threads).
func qemuCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command (which may hold spaces) in parens.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// utime and stime, fields 14 and 15 of stat(5), in clock ticks: 100
	// a second on Linux (sysconf(_SC_CLK_TCK), fixed by the kernel ABI).
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * (time.Second / 100), nil
}

// watchHung ends the ssh master when the guest is hung: no heartbeat
// while qemu used hungCPU of CPU time. Commands then end with ssh's
// exit 255, and their error says why (hungMsg). A stall (the host does
// not run qemu) never ends it, however long; a dead qemu closes the
// forward's socket, which ends the master by itself. It returns when
// qemu exits.
func (vm *VM) watchHung(pid int) {
	var beat time.Time
	var cpuAtBeat time.Duration
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-vm.exited:
			return
		case <-tick.C:
		}
		cpu, err := qemuCPU(pid)
		if err != nil {
			continue
		}
		last := vm.stalls.lastBeat()
		if last.IsZero() {
			// Booting, or rebooting: no heartbeat to wait for.
			beat = time.Time{}
			continue
		}
		if !last.Equal(beat) {
			beat, cpuAtBeat = last, cpu
			continue
		}
		if used := cpu - cpuAtBeat; used >= hungCPU {
			msg := fmt.Sprintf("the guest hung: no heartbeat for %.0fs while qemu used %.0fs of CPU", time.Since(last).Seconds(), used.Seconds())
			fmt.Println("   " + msg + ": ending the ssh master")
			vm.mu.Lock()
			vm.hung = msg
			vm.mu.Unlock()
			vm.stopMaster()
			vm.stalls.reset()
		}
	}
}
