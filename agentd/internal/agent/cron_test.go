package agent

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/grammar"
)

// TestCheckAppStateCronRun: a recorded cron run (cron.N, of a type no
// Procfile has) is coherent; the same record without its cron mark is
// not, so the mark is what a restarted agentd trusts.
func TestCheckAppStateCronRun(t *testing.T) {
	st := coherent(t)
	st.Processes = append(st.Processes, procRecord{Name: "cron.1", Type: cronType, Index: 1, Release: 2, PID: 4250, State: api.StateRunning, Cron: true})
	if err := checkAppState(st, "a1"); err != nil {
		t.Fatalf("a cron run refused: %v", err)
	}
	st.Processes[len(st.Processes)-1].Cron = false
	if err := checkAppState(st, "a1"); !errors.Is(err, errIncoherent) {
		t.Fatalf("a process of a type no release has, not marked cron: %v, want errIncoherent", err)
	}
}

// TestCronSettingCreateAndSet: --cron on|off at create and set, bad input
// refused with the grammar's error and nothing changed.
func TestCronSettingCreateAndSet(t *testing.T) {
	dir := t.TempDir()
	ag, err := New(Config{StateDir: dir, RuntimeDir: dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close(false) })
	if _, err := ag.CreateApp(api.AppCreate{Name: "a1", Sockets: []string{"web=tcp://127.0.0.1:0"}, AllowRoot: true, Cron: "sometimes"}); !errors.Is(err, grammar.ErrBadCronSetting) {
		t.Fatalf("create --cron sometimes: %v, want ErrBadCronSetting", err)
	}
	a, err := ag.CreateApp(api.AppCreate{Name: "a1", Sockets: []string{"web=tcp://127.0.0.1:0"}, AllowRoot: true, Cron: "off"})
	if err != nil || a.Cron != "off" {
		t.Fatalf("create --cron off: %+v, %v", a, err)
	}
	bad := "maybe"
	if _, err := ag.SetApp("a1", api.AppSet{Cron: &bad}); !errors.Is(err, grammar.ErrBadCronSetting) {
		t.Fatalf("set --cron maybe: %v, want ErrBadCronSetting", err)
	}
	on := "on"
	res, err := ag.SetApp("a1", api.AppSet{Cron: &on})
	if err != nil || res.App.Cron != "on" || len(res.Changed) != 1 || res.Changed[0] != "cron" {
		t.Fatalf("set --cron on: %+v, %v", res, err)
	}
	list, err := ag.Cron("a1")
	if err != nil || !list.Enabled || list.Release != "" || len(list.Jobs) != 0 {
		t.Fatalf("cron of an app with no release: %+v, %v", list, err)
	}
}
