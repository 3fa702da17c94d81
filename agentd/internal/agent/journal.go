package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// App output to the journal. Processes write to their own log files, as
// in the embedded mode, so nothing they write waits for agentd; agentd
// forwards each new line to Config.Journal. A crash or restart of agentd
// loses no line (the next agentd resumes at the offset recorded with the
// process) but may send again what it sent since that offset was saved.
const (
	// journalEvery is how often the files are read for new lines.
	journalEvery = 250 * time.Millisecond
	// journalChunk bounds what one process gets forwarded per tick, so a
	// process writing without pause cannot keep agentd busy: 4 MiB/s.
	journalChunk = 1 << 20
	// journalBehind: a process further behind than this is skipped ahead
	// (the lines stay in its log file), with a line saying so.
	journalBehind = 16 << 20
	// journalMaxLine cuts longer lines into entries of this size.
	journalMaxLine = 16 << 10
)

// JournalOn reports whether app output goes to the journal.
func (ag *Agent) JournalOn() bool { return ag.cfg.Journal != nil }

// LineOrigin says whose output a line is.
type LineOrigin struct {
	App     string
	Release string // "v3"
	Process string // "web.1", "release"
	PID     int
}

// logForward is where a process's log file has been forwarded to.
type logForward struct {
	mu      sync.Mutex
	off     int64  // bytes of the file forwarded (or skipped)
	partial []byte // a line not yet ended
}

func (f *logForward) sent() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.off
}

// forward sends what p wrote since the last call. final (the process has
// exited) also sends a last line that has no newline.
func (ag *Agent) forward(app string, p *proc, final bool) {
	if ag.cfg.Journal == nil || p.log == "" {
		return
	}
	f := &p.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	o := LineOrigin{App: app, Release: vname(p.release), Process: p.name()}
	if p.p != nil {
		o.PID = p.p.PID()
	}
	file, err := os.Open(p.log)
	if err != nil {
		return
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return
	}
	size := fi.Size()
	if size < f.off {
		// Truncated by someone else: start again from the top.
		f.off, f.partial = 0, nil
	}
	if behind := size - f.off; behind > journalBehind {
		skip := behind - journalChunk
		ag.sendLine(o, fmt.Sprintf("agentd: %d bytes of this process's output not sent to the journal (it writes faster than agentd forwards); they are in %s", skip, p.log))
		f.off += skip
		f.partial = nil
	}
	buf := make([]byte, min(size-f.off, journalChunk))
	n, err := file.ReadAt(buf, f.off)
	if err != nil && err != io.EOF {
		return
	}
	f.off += int64(n)
	data := append(f.partial, buf[:n]...)
	f.partial = nil
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !final && len(data) < journalMaxLine {
				f.partial = bytes.Clone(data)
				break
			}
			i = min(len(data), journalMaxLine)
			ag.sendLine(o, string(data[:i]))
			data = data[i:]
			continue
		}
		line := data[:i]
		for len(line) > journalMaxLine {
			ag.sendLine(o, string(line[:journalMaxLine]))
			line = line[journalMaxLine:]
		}
		ag.sendLine(o, string(line))
		data = data[i+1:]
	}
}

func (ag *Agent) sendLine(o LineOrigin, line string) {
	if err := ag.cfg.Journal(o, line); err != nil {
		ag.journalErrs.Add(1)
		if ag.journalErrs.Load() == 1 {
			ag.log.Warn("sending app output to the journal", "app", o.App, "process", o.Process, "err", err)
		}
	}
}
