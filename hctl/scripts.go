package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/agentd/agentd/agentd/api"
)

// writeScriptRun shows what became of an app.json script of a release
// (scripts.agentd.postdrain) in `hctl releases info`.
func writeScriptRun(w io.Writer, s *api.ScriptRun) {
	if s == nil {
		return
	}
	line := s.Status
	switch {
	case !s.Ended.IsZero() && !s.Started.IsZero():
		line += fmt.Sprintf(" (started %s, took %s)", fmtTime(s.Started), s.Ended.Sub(s.Started).Round(10e6))
	case !s.Started.IsZero():
		line += fmt.Sprintf(" (since %s)", fmtTime(s.Started))
	}
	fmt.Fprintf(w, "%s: %s\n", s.Script, line)
	if s.Error != "" {
		for l := range strings.SplitSeq(strings.TrimRight(s.Error, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}
