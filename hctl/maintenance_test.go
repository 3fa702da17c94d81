package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

func TestMaintenanceUsage(t *testing.T) {
	f := newFake(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.html")
	big := filepath.Join(dir, "big.html")
	os.WriteFile(empty, nil, 0o644)
	os.WriteFile(big, []byte(strings.Repeat("x", 64<<10+1)), 0o644)
	for _, args := range [][]string{
		{"maintenance", "myapp"},
		{"maintenance", "myapp", "maybe"},
		{"maintenance", "myapp", "on", "extra"},
		{"maintenance", "Bad_App", "on"},
		{"maintenance", "myapp", "off", "--page", empty},
		{"maintenance", "myapp", "on", "--page", filepath.Join(dir, "missing.html")},
		{"maintenance", "myapp", "on", "--page", empty},
		{"maintenance", "myapp", "on", "--page", big},
	} {
		r := hctlRun(t, args...)
		if r.code != 2 || !strings.HasPrefix(lastLine(r.stderr), "hctl: ") {
			t.Errorf("hctl %s: %s", strings.Join(args, " "), r)
		}
	}
	if s := f.sent(); len(s) != 0 {
		t.Errorf("usage errors sent requests: %v", s)
	}
}

func TestMaintenanceOperations(t *testing.T) {
	f := newFake(t)
	f.events("POST /v1/apps/{app}/maintenance", api.Event{Type: "result", Result: &api.OpResult{OK: true, Changed: true, Release: "v3", SwitchSeconds: 1}})
	page := filepath.Join(t.TempDir(), "page.html")
	os.WriteFile(page, []byte("<h1>later</h1>"), 0o644)

	r := hctlRun(t, "maintenance", "myapp", "on", "--page", page)
	wantExit(t, r, 0)
	if want := "myapp is in maintenance: every request gets 503 (switch 1.00s)\n"; r.stdout != want {
		t.Errorf("on: stdout %q, want %q", r.stdout, want)
	}
	if got := strings.TrimSpace(f.lastBody()); got != `{"on":true,"page":"\u003ch1\u003elater\u003c/h1\u003e"}` {
		t.Errorf("on: sent %s", got)
	}
	r = hctlRun(t, "maintenance", "myapp", "off")
	wantExit(t, r, 0)
	if want := "myapp is out of maintenance: myapp v3 is live (switch 1.00s"; !strings.HasPrefix(r.stdout, want) {
		t.Errorf("off: stdout %q, want %q…", r.stdout, want)
	}
	if got := strings.TrimSpace(f.lastBody()); got != `{"on":false}` {
		t.Errorf("off: sent %s", got)
	}
}
