package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/loadgen"
)

// crossResults is the cross-check: the same kind of deploys under wrk and
// hey, each beside the benchmark's own client of the same kind, so that a
// failure loadgen missed (or invented) would show as a disagreement.
type crossResults struct {
	Deploys int                     `json:"deploys_per_window"`
	Windows []crossWindow           `json:"windows"`
	Summary map[string]crossSummary `json:"summary"` // "method tool"
}

// crossWindow is one tool against one method over Deploys deploys.
type crossWindow struct {
	Run     int    `json:"run"`
	Method  string `json:"method"`
	Tool    string `json:"tool"` // wrk (kept-alive POSTs) or hey (a new connection per POST)
	Deploys int    `json:"deploys"`
	// The tool's own counts.
	Requests int64  `json:"requests"`
	Errors   int64  `json:"errors"` // connection-level errors
	Non2xx   int64  `json:"non2xx"`
	Detail   string `json:"detail"` // the tool's error breakdown
	// loadgen's failed requests of the same kind, in the same window.
	LoadgenSent   int64  `json:"loadgen_sent"`
	LoadgenFailed int64  `json:"loadgen_failed"`
	Error         string `json:"error,omitempty"`
}

type crossSummary struct {
	Method        string `json:"method"`
	Tool          string `json:"tool"`
	ToolFailed    Stat   `json:"tool_failed_per_window"`
	ToolRequests  Stat   `json:"tool_requests_per_window"`
	LoadgenFailed Stat   `json:"loadgen_failed_per_window"`
}

// crossCheckScenario deploys with agentd and with stop-then-start while wrk
// or hey sends load beside loadgen.
func crossCheckScenario(o options, bins binaries, dir string, res *results) (*crossResults, error) {
	var tools []string
	if bins.Wrk != "" {
		tools = append(tools, "wrk")
	}
	if bins.Hey != "" {
		tools = append(tools, "hey")
	}
	if len(tools) == 0 {
		say("SKIP cross-check: neither wrk nor hey is installed")
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lua := filepath.Join(dir, "post.lua")
	if err := os.WriteFile(lua, []byte("wrk.method = \"POST\"\nwrk.body = \"agentd-bench\\n\"\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"), 0o644); err != nil {
		return nil, err
	}
	ag, err := harness.Start(bins.Bins, filepath.Join(dir, "agentd"), "--log-level", "info")
	if err != nil {
		return nil, err
	}
	atCleanup(ag.Stop)
	defer ag.Stop()
	am, err := newAgentdMethod(ag, bins, dir, "xcheck", o.bootDelay)
	if err != nil {
		return nil, err
	}
	pm, err := newPlainMethod(bins, mkdir(dir, "plain"), o.bootDelay)
	if err != nil {
		return nil, err
	}
	atCleanup(pm.close)
	defer pm.close()
	methods := []method{am, pm}
	seq := map[string]*int{am.name(): new(int), pm.name(): new(int)}
	out := &crossResults{Deploys: o.xDeploys, Summary: map[string]crossSummary{}}
	for run := 1; run <= o.runs; run++ {
		for _, m := range methods {
			for _, tool := range tools {
				w := crossWindowRun(m, tool, bins, lua, o.xDeploys, seq[m.name()])
				w.Run = run
				out.Windows = append(out.Windows, w)
				say("crosscheck run %d/%d %-16s %-3s %3d deploys: %s %d requests, %d errors, %d non-2xx (%s); loadgen %d failed of %d",
					run, o.runs, m.name(), tool, w.Deploys, tool, w.Requests, w.Errors, w.Non2xx, w.Detail, w.LoadgenFailed, w.LoadgenSent)
				if w.Error != "" {
					say("  error: %s", w.Error)
				}
			}
		}
	}
	for _, m := range methods {
		for _, tool := range tools {
			var tf, tr, lf []float64
			for _, w := range out.Windows {
				if w.Method == m.name() && w.Tool == tool {
					tf = append(tf, float64(w.Errors+w.Non2xx))
					tr = append(tr, float64(w.Requests))
					lf = append(lf, float64(w.LoadgenFailed))
				}
			}
			out.Summary[m.name()+" "+tool] = crossSummary{Method: m.name(), Tool: tool, ToolFailed: stat(tf), ToolRequests: stat(tr), LoadgenFailed: stat(lf)}
		}
	}
	return out, nil
}

// crossWindowRun runs tool (and loadgen's client of the same kind, at a
// moderate rate) during n deploys with m.
func crossWindowRun(m method, tool string, bins binaries, lua string, n int, seq *int) crossWindow {
	w := crossWindow{Method: m.name(), Tool: tool}
	var cmd *exec.Cmd
	kind := loadgen.KeepAlivePost
	switch tool {
	case "wrk":
		// A closed loop on 2 kept-alive connections: wrk has no rate limit.
		cmd = exec.Command(bins.Wrk, "-t1", "-c2", "-d600s", "--timeout", "5s", "-s", lua, m.url())
	case "hey":
		// 4 workers at 100 requests/s each, a new connection per POST.
		cmd = exec.Command(bins.Hey, "-z", "600s", "-c", "4", "-q", "100", "-t", "5", "-m", "POST",
			"-T", "application/octet-stream", "-d", "agentd-bench", "-disable-keepalive", m.url())
		kind = loadgen.NewConnPost
	}
	var outb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &outb
	c, err := startChild(tool, cmd)
	if err != nil {
		w.Error = err.Error()
		return w
	}
	lg, err := loadgen.Start(context.Background(), loadgen.Config{URL: m.url(), Kind: kind, Rate: 200, Workers: 2, Duration: 10 * time.Minute})
	if err != nil {
		c.stop(syscall.SIGKILL, 5*time.Second)
		w.Error = err.Error()
		return w
	}
	time.Sleep(300 * time.Millisecond)
	for range n {
		*seq++
		if _, err := m.deploy(*seq); err != nil {
			w.Error = err.Error()
			break
		}
		w.Deploys++
	}
	time.Sleep(300 * time.Millisecond)
	// Both tools print their report when interrupted.
	if _, killed := c.stop(syscall.SIGINT, 15*time.Second); killed {
		w.Error = tool + " did not stop on SIGINT"
	}
	lr := lg.Stop()
	w.LoadgenSent, w.LoadgenFailed = lr.Sent, lr.Failed
	switch tool {
	case "wrk":
		parseWrk(outb.String(), &w)
	case "hey":
		parseHey(outb.String(), &w)
	}
	return w
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	heyLine     = regexp.MustCompile(`^\s*\[(\d+)\]\s+(.*)$`)
)

// parseWrk reads wrk's report: its request count includes the failed
// ones; connect, read, write and timeout errors are counted apart.
func parseWrk(s string, w *crossWindow) {
	if m := wrkRequests.FindStringSubmatch(s); m != nil {
		w.Requests = atoi(m[1])
	}
	if m := wrkSocket.FindStringSubmatch(s); m != nil {
		w.Errors = atoi(m[1]) + atoi(m[2]) + atoi(m[3]) + atoi(m[4])
		w.Detail = fmt.Sprintf("connect %s, read %s, write %s, timeout %s", m[1], m[2], m[3], m[4])
	} else {
		w.Detail = "no socket errors"
	}
	if m := wrkNon2xx.FindStringSubmatch(s); m != nil {
		w.Non2xx = atoi(m[1])
	}
	if !wrkRequests.MatchString(s) {
		w.Error = "no wrk report: " + lastLines(s, 3)
	}
}

// parseHey reads hey's "Status code distribution" and "Error
// distribution" sections.
func parseHey(s string, w *crossWindow) {
	section := ""
	byClass := map[string]int64{}
	var classes []string
	for line := range strings.SplitSeq(s, "\n") {
		switch {
		case strings.HasPrefix(line, "Status code distribution"):
			section = "status"
			continue
		case strings.HasPrefix(line, "Error distribution"):
			section = "error"
			continue
		case strings.TrimSpace(line) == "":
			section = ""
			continue
		}
		m := heyLine.FindStringSubmatch(line)
		if m == nil || section == "" {
			continue
		}
		switch section {
		case "status": // "[200]	1234 responses"
			n := atoi(strings.Fields(m[2] + " 0")[0])
			w.Requests += n
			if !strings.HasPrefix(m[1], "2") {
				w.Non2xx += n
			}
		case "error": // "[12]	Post ...: connection refused"
			n := atoi(m[1])
			w.Requests += n
			w.Errors += n
			c := heyErrorClass(m[2])
			if byClass[c] == 0 {
				classes = append(classes, c)
			}
			byClass[c] += n
		}
	}
	var details []string
	for _, c := range classes {
		details = append(details, fmt.Sprintf("%d× %s", byClass[c], c))
	}
	if len(details) == 0 {
		w.Detail = "no errors"
	} else {
		w.Detail = strings.Join(details, ", ")
	}
	if !strings.Contains(s, "Summary:") {
		w.Error = "no hey report: " + lastLines(s, 3)
	}
}

// heyErrorClass shortens one of hey's error texts to its cause.
func heyErrorClass(text string) string {
	for _, c := range []string{"connection refused", "connection reset", "EOF", "timeout", "broken pipe"} {
		if strings.Contains(text, c) {
			return c
		}
	}
	if len(text) > 60 {
		return text[:60] + "…"
	}
	return text
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
