package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

// TestKillBeforeTheFirstRecordLeavesNoRelease: a deploy writes its new
// release, its operation and its first processes to the state in one
// write (issue 14: the release and the preboot phase were two durable
// writes of their own on the way to the first process). Held at the
// instant before that write (the test pause "record": the processes are
// forked and held in the exec shim), the state on disk still names
// nothing of the deploy; agentd killed there comes back with the old
// release serving, no trace of the new one and nothing of it running, and
// the next deploy takes the number the lost one had.
func TestKillBeforeTheFirstRecordLeavesNoRelease(t *testing.T) {
	e := startEnv(t, []string{"AGENTD_TEST_PAUSE=record"})
	ag := e.ag
	url := e.createApp("ow", "--readiness", "web=notify")
	e.deploy("ow", e.release(""))
	ls := startLoads(t, url)
	wait := e.deployUntil("test pause at record", "ow", e.release(""), "-m", "[pause]")

	// What a restarted agentd would read now.
	var onDisk struct {
		LastVersion int `json:"last_version"`
		Releases    []struct {
			Version int `json:"version"`
		} `json:"releases"`
		Op *struct {
			Release int `json:"release"`
		} `json:"op"`
	}
	b, err := os.ReadFile(filepath.Join(ag.StateDir, "apps", "ow.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &onDisk); err != nil {
		t.Fatal(err)
	}
	for _, r := range onDisk.Releases {
		if r.Version == 2 {
			t.Errorf("v2 is on disk before any of its processes is recorded: a state write the first process waits for")
		}
	}
	if onDisk.LastVersion != 1 || onDisk.Op != nil {
		t.Errorf("on disk before the first record: last_version %d, op %+v; want 1 and none", onDisk.LastVersion, onDisk.Op)
	}
	if len(runningOfRelease(e, "ow", "v2")) == 0 {
		t.Fatal("no v2 process held at the pause")
	}

	ag.Kill()
	wait()
	ag.Env = nil
	if err := ag.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, e, "ow", "v1")
	waitFor(t, "the held processes of v2 gone", func() bool { return len(runningOfRelease(e, "ow", "v2")) == 0 })
	var rels []api.Release
	e.json(&rels, "releases", "ow")
	for _, r := range rels {
		if r.Name != "v1" {
			t.Errorf("after the kill: release %s (%s) listed; want v1 alone", r.Name, r.Status)
		}
	}
	ls.stopAndCheck(t)
	checkNoOrphans(t, e, "ow")
	if res := e.deploy("ow", e.release("")); !res.OK || res.Release != "v2" {
		t.Errorf("the next deploy: %+v; want v2, ok", res)
	}
}
