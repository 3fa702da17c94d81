package readiness

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/grammar"
)

// parseBefore is Parse as it was before package grammar owned the syntax,
// kept verbatim so that the fuzz target below proves the move changed
// nothing: the same kinds accepted, the same values, the same messages.
func parseBefore(s string) (Kind, error) {
	name, arg, hasArg := strings.Cut(s, ":")
	switch name {
	case "notify", "tcp":
		if hasArg {
			return Kind{}, fmt.Errorf("readiness %q: %s takes no argument", s, name)
		}
		return Kind{Name: name}, nil
	case "http":
		if !strings.HasPrefix(arg, "/") || strings.ContainsAny(arg, " \r\n\t") {
			return Kind{}, fmt.Errorf("readiness %q: want http:/PATH, e.g. http:/healthz", s)
		}
		return Kind{Name: "http", Path: arg}, nil
	case "exec":
		if strings.TrimSpace(arg) == "" {
			return Kind{}, fmt.Errorf("readiness %q: want exec:COMMAND", s)
		}
		return Kind{Name: "exec", Cmd: arg}, nil
	case "uptime":
		if !hasArg {
			return Kind{Name: "uptime", Uptime: 5 * time.Second}, nil
		}
		d, err := time.ParseDuration(arg)
		if err != nil || d < 0 {
			return Kind{}, fmt.Errorf("readiness %q: want uptime:DURATION, e.g. uptime:5s", s)
		}
		return Kind{Name: "uptime", Uptime: d}, nil
	}
	return Kind{}, fmt.Errorf("readiness %q: unknown kind (notify, http:PATH, tcp, exec:CMD, uptime:DURATION)", s)
}

// FuzzParseUnchanged: Parse, now on package grammar, behaves exactly as
// parseBefore did. Seeds in testdata/fuzz.
func FuzzParseUnchanged(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		got, gotErr := Parse(s)
		want, wantErr := parseBefore(s)
		if got != want || (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("Parse(%q) = %+v, %v; before: %+v, %v", s, got, gotErr, want, wantErr)
		}
		if gotErr == nil {
			if got.String() != want.String() {
				t.Fatalf("Parse(%q).String() = %q; before: %q", s, got.String(), want.String())
			}
			return
		}
		if gotErr.Error() != wantErr.Error() {
			t.Fatalf("Parse(%q) says %q; before: %q", s, gotErr, wantErr)
		}
		if !errors.Is(gotErr, grammar.ErrBadReadiness) {
			t.Fatalf("Parse(%q): %v is not grammar.ErrBadReadiness", s, gotErr)
		}
	})
}

func TestParseErrorIsGrammars(t *testing.T) {
	_, err := Parse("http:healthz")
	g, ok := errors.AsType[*grammar.Error](err)
	if !ok || g.Field != grammar.FieldReadiness || g.Input != "http:healthz" {
		t.Fatalf("Parse error %v (%T) carries no grammar.Error for the input", err, err)
	}
	if want := `readiness "http:healthz": want http:/PATH, e.g. http:/healthz`; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}
