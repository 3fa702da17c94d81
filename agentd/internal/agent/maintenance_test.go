package agent

import (
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/rollout"
)

// An app in maintenance as agentd leaves it: the responder alone runs,
// recorded under the active release whose Procfile has no such type, and
// a release deployed meanwhile is pending.
func TestCheckAppStateAcceptsMaintenance(t *testing.T) {
	st := coherent(t)
	st.Processes = []procRecord{{Name: "maintenance.1", Type: rollout.Responder, Index: 1, Release: 2, PID: 4250, State: "ready"}}
	st.Releases = append(st.Releases, &releaseState{Version: 3, Status: api.StatusPending, Procfile: st.Releases[1].Procfile, Order: []string{"web", "worker"}})
	st.LastVersion = 3
	st.Maintenance = &maintState{On: true, Since: time.Now(), Pending: 3}
	if err := checkAppState(st, "a1"); err != nil {
		t.Fatal(err)
	}
	// Any other type the release lacks is still refused.
	st.Processes[0].Type, st.Processes[0].Name = "clock", "clock.1"
	if err := checkAppState(st, "a1"); err == nil {
		t.Fatal("a process of a type no release has was accepted")
	}
}

func TestMaintenanceTargets(t *testing.T) {
	a := &app{st: appState{Active: 2, Maintenance: &maintState{On: true, Pending: 3}}}
	a.st.Releases = []*releaseState{{Version: 2, Status: api.StatusActive}, {Version: 3, Status: api.StatusPending}}
	tg, ok := a.maintenanceTarget()
	if !ok || !tg.Maintenance() || tg.Release != 2 {
		t.Fatalf("maintenanceTarget = %+v, %v; want the responder of v2", tg, ok)
	}
	if !a.heldForMaintenance(a.release(3)) || a.heldForMaintenance(a.release(2)) {
		t.Error("heldForMaintenance: want v3 held, v2 not")
	}
	if m := a.maintenanceAPI(); m == nil || m.Pending != "v3" || m.Page != "built-in" {
		t.Errorf("maintenanceAPI = %+v", m)
	}
	a.st.Maintenance = nil
	if _, ok := a.maintenanceTarget(); ok || a.maintenanceAPI() != nil {
		t.Error("out of maintenance, a maintenance target or view was given")
	}
}
