package agent

import (
	"slices"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

func versions(rs []*releaseState) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.Version)
	}
	return out
}

// TestKeptReleases: pruning drops failed releases first and never the
// active one, a pinned one, or the one a rollback would go to, however
// many deploys failed since (the soak once lost its rollback target to
// nine interrupted deploys in a row).
func TestKeptReleases(t *testing.T) {
	rel := func(v int, status string) *releaseState { return &releaseState{Version: v, Status: status} }
	none := func(int) bool { return false }
	cases := []struct {
		name   string
		rs     []*releaseState
		keep   int
		active int
		pinned func(int) bool
		want   []int
	}{
		{"oldest first", []*releaseState{rel(1, api.StatusRetired), rel(2, api.StatusRetired), rel(3, api.StatusRetired), rel(4, api.StatusActive)}, 3, 4, none, []int{2, 3, 4}},
		{"failed first", []*releaseState{rel(1, api.StatusRetired), rel(2, api.StatusFailed), rel(3, api.StatusRetired), rel(4, api.StatusActive)}, 3, 4, none, []int{1, 3, 4}},
		{"rollback target kept through failures", []*releaseState{rel(1, api.StatusRetired), rel(2, api.StatusActive),
			rel(3, api.StatusFailed), rel(4, api.StatusFailed), rel(5, api.StatusFailed), rel(6, api.StatusFailed)}, 3, 2, none, []int{1, 2, 6}},
		{"rollback target kept when all others served", []*releaseState{rel(1, api.StatusRetired), rel(2, api.StatusRetired), rel(3, api.StatusActive),
			rel(4, api.StatusPending), rel(5, api.StatusPending)}, 3, 3, none, []int{2, 3, 5}},
		{"pinned kept", []*releaseState{rel(1, api.StatusRetired), rel(2, api.StatusRetired), rel(3, api.StatusRetired), rel(4, api.StatusActive)}, 2, 4,
			func(v int) bool { return v == 1 }, []int{1, 3, 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := versions(keptReleases(c.rs, c.keep, c.active, c.pinned)); !slices.Equal(got, c.want) {
				t.Errorf("kept %v, want %v", got, c.want)
			}
		})
	}
}
