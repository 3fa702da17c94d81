package logs

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Journalctl is the journalctl agentd runs to read the journal.
var Journalctl = "journalctl"

// JournalAvailable reports whether journalctl can be run.
func JournalAvailable() bool {
	_, err := exec.LookPath(Journalctl)
	return err == nil
}

// ReadJournal calls fn with the app's lines that agentd sent to the
// journal (AGENTD_APP=app), oldest first: the last opt.N entries of the
// selection (of all its processes together, where Read takes N of each
// file), then, with opt.Follow, new ones until ctx ends.
func ReadJournal(ctx context.Context, app string, opt Options, fn func(api.LogLine) error) error {
	if opt.N == 0 && !opt.Follow {
		return nil
	}
	args := []string{"--no-pager", "--quiet", "-o", "json", "-n", strconv.Itoa(opt.N), "AGENTD_APP=" + app}
	if opt.Process != "" {
		// A type ("web") selects each of its processes: matches on one
		// field are ORed by journalctl.
		procs := []string{opt.Process}
		if !strings.Contains(opt.Process, ".") {
			procs = processesOfType(ctx, opt.Process)
		}
		for _, p := range procs {
			args = append(args, "AGENTD_PROCESS="+p)
		}
	}
	if opt.Release != "" {
		args = append(args, "AGENTD_RELEASE="+opt.Release)
	}
	if opt.Follow {
		args = append(args, "--follow")
	}
	cmd := exec.CommandContext(ctx, Journalctl, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("journalctl: %w", err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var fnErr error
	for sc.Scan() {
		var e struct {
			Message  any    `json:"MESSAGE"` // a string, or bytes as numbers
			Release  string `json:"AGENTD_RELEASE"`
			Process  string `json:"AGENTD_PROCESS"`
			Realtime string `json:"__REALTIME_TIMESTAMP"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		l := api.LogLine{Release: e.Release, Process: e.Process, Line: message(e.Message)}
		if us, err := strconv.ParseInt(e.Realtime, 10, 64); err == nil {
			l.Time = time.UnixMicro(us).UTC()
		}
		if fnErr = fn(l); fnErr != nil {
			break
		}
	}
	if fnErr != nil || ctx.Err() != nil {
		cmd.Cancel()
		cmd.Wait()
		if fnErr != nil {
			return fnErr
		}
		return ctx.Err()
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("journalctl: %w: %s", err, stderr.String())
	}
	return sc.Err()
}

// message decodes MESSAGE, which journalctl prints as an array of byte
// values when it is not valid UTF-8.
func message(v any) string {
	switch m := v.(type) {
	case string:
		return m
	case []any:
		b := make([]byte, 0, len(m))
		for _, x := range m {
			if f, ok := x.(float64); ok {
				b = append(b, byte(f))
			}
		}
		return string(b)
	}
	return ""
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// processesOfType lists the AGENTD_PROCESS values in the journal that are
// typ itself or typ.N.
func processesOfType(ctx context.Context, typ string) []string {
	out := []string{typ}
	b, err := exec.CommandContext(ctx, Journalctl, "--no-pager", "--quiet", "-F", "AGENTD_PROCESS").Output()
	if err != nil {
		return out
	}
	for _, v := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(v, typ+"."); ok && rest != "" {
			out = append(out, v)
		}
	}
	return out
}
