package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Log files are capped so that a process writing without pause (a
// hostile release, a log loop) cannot fill the state directory's disk.
// Processes write their output straight to their file (so it does not
// depend on agentd), which leaves agentd no way to slow a writer down:
// instead it checks every file's size each logCheckEvery and, past the
// cap, cuts the oldest output away, keeping the last logKeepBytes.
const (
	defaultMaxLogBytes = 256 << 20
	logKeepBytes       = 1 << 20
	logCheckEvery      = time.Second
)

func (ag *Agent) maxLogBytes() int64 {
	if ag.cfg.MaxLogBytes > 0 {
		return max(ag.cfg.MaxLogBytes, 2*logKeepBytes)
	}
	return defaultMaxLogBytes
}

// capLogs keeps every process's log file under the cap, and forwards
// new output to the journal when there is one, until agentd closes. One
// loop for all processes: a ticker per process would wake agentd hundreds
// of times a second on a host with hundreds of processes (the idle-CPU
// figure of docs/benchmarks.md).
func (ag *Agent) capLogs() {
	every := logCheckEvery
	if ag.cfg.Journal != nil {
		every = journalEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ag.closed:
			return
		case <-t.C:
		}
		if ag.frozen.Load() {
			// The new agentd owns the logs now.
			continue
		}
		check := time.Since(last) >= logCheckEvery
		if check {
			last = time.Now()
		}
		for _, l := range ag.liveLogs() {
			ag.forward(l.app, l.p, false)
			if check {
				ag.capLog(l.p)
			}
		}
	}
}

type liveLog struct {
	app string
	p   *proc
}

// liveLogs lists the processes still running that write to a log file.
func (ag *Agent) liveLogs() []liveLog {
	ag.mu.Lock()
	apps := make([]*app, 0, len(ag.apps))
	for _, a := range ag.apps {
		apps = append(apps, a)
	}
	ag.mu.Unlock()
	var out []liveLog
	for _, a := range apps {
		a.mu.Lock()
		for _, p := range a.procs {
			if p.log != "" && p.p != nil && !p.p.Exited() {
				out = append(out, liveLog{a.st.Name, p})
			}
		}
		a.mu.Unlock()
	}
	return out
}

// capLog cuts p's log file if it has grown past the cap.
func (ag *Agent) capLog(p *proc) {
	fi, err := os.Stat(p.log)
	if err != nil || fi.Size() <= ag.maxLogBytes() {
		return
	}
	// Under the forwarder's lock: the offset it reads from moves with the
	// cut.
	p.fwd.mu.Lock()
	n, err := cutLog(p.log, logKeepBytes)
	if err == nil {
		p.fwd.off = max(0, p.fwd.off-n)
	}
	p.fwd.mu.Unlock()
	if err != nil {
		ag.log.Warn("cutting a log file", "log", p.log, "err", err)
		return
	}
	p.logCut.Add(n)
	ag.log.Warn("process output over the log cap: oldest output cut", "log", p.log, "cut_bytes", n, "cap_bytes", ag.maxLogBytes())
}

// cutLog removes all but about the last keep bytes of the file at path,
// while its process may still be appending to it, and returns how many
// bytes it removed. It collapses the head of the file in place
// (FALLOC_FL_COLLAPSE_RANGE: ext4, xfs), which concurrent appends survive
// intact; where the filesystem cannot, it truncates the file and writes
// the tail it read back, losing what the process appended meanwhile.
func cutLog(path string, keep int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if size <= keep {
		return 0, nil
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err == nil && fs.Bsize > 0 {
		bs := int64(fs.Bsize)
		if cut := (size - keep) / bs * bs; cut > 0 {
			err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_COLLAPSE_RANGE, 0, cut)
			if err == nil {
				return cut, nil
			}
			if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
				return 0, err
			}
		}
	}
	tail := make([]byte, keep)
	n, err := f.ReadAt(tail, size-keep)
	if err != nil && err != io.EOF {
		return 0, err
	}
	if err := f.Truncate(0); err != nil {
		return 0, err
	}
	// O_APPEND writers continue at the new end; this write goes there too.
	msg := fmt.Sprintf("agentd: %d bytes of older output were cut here (the log cap)\n", size-keep)
	if _, err := f.WriteAt(append([]byte(msg), tail[:n]...), 0); err != nil {
		return 0, err
	}
	return size - keep, nil
}
