package agent

import (
	"fmt"
	"math"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/sockets"
)

// maxReleaseTimeout bounds an app's own release timeout: a day is already
// more than any migration should hold a deploy.
const maxReleaseTimeout = 24 * time.Hour

// checkSecurity validates the settings of req that decide what an app's
// processes may do, and records them in st: who they run as, their limits,
// how long the release phase may run.
//
// The root rule: when agentd runs as root, an app runs as root only when it
// was created with AllowRoot. Without a user (or with one whose uid is 0)
// and without AllowRoot, creation is refused rather than defaulting to
// some shared account such as nobody, whose files and processes other
// services share: the operator names a user for the app, or consents.
func checkSecurity(req api.AppCreate, st *appState) error {
	if os.Geteuid() == 0 && !req.AllowRoot {
		if req.User == "" {
			return &Error{Code: api.CodeBadRequest, Reason: api.ReasonNeedsUser, App: req.Name,
				Msg: fmt.Sprintf("app %s would run as root: give it a user to run as (a dedicated one), or consent to root", req.Name)}
		}
		if u, err := user.Lookup(req.User); err == nil && u.Uid == "0" {
			return &Error{Code: api.CodeBadRequest, Reason: api.ReasonUserIsRoot, App: req.Name,
				Msg: fmt.Sprintf("app %s: user %s is root: consent to run it as root on purpose", req.Name, req.User)}
		}
	}
	st.AllowRoot = req.AllowRoot
	for _, s := range req.Limits {
		r, err := sockets.ParseRlimit(s)
		if err != nil {
			return errf(api.CodeBadRequest, "%v", err)
		}
		st.Limits = append(st.Limits, r.String())
	}
	if req.ReleaseTimeout < 0 || time.Duration(req.ReleaseTimeout) > maxReleaseTimeout {
		return errf(api.CodeBadRequest, "release timeout %s: want more than 0 and at most %s", time.Duration(req.ReleaseTimeout), maxReleaseTimeout)
	}
	st.ReleaseTimeout = duration(req.ReleaseTimeout)
	return nil
}

// shimOptions are what the exec shim applies to every process of a: no
// new privileges, the app's limits, and, when the process gets sockets,
// the guard that keeps it from shutting down the nfds listening sockets
// it gets. Callers hold a.mu.
func (a *app) shimOptions(nfds int) sockets.ShimOptions {
	opt := sockets.ShimOptions{NoNewPrivs: true, GuardFDs: nfds}
	for _, s := range a.st.Limits {
		if r, err := sockets.ParseRlimit(s); err == nil {
			opt.Rlimits = append(opt.Rlimits, r)
		}
	}
	return opt
}

// releaseTimeout is how long a's release phase may run. Callers hold a.mu.
func (ag *Agent) releaseTimeout(a *app) time.Duration {
	if a.st.ReleaseTimeout > 0 {
		return time.Duration(a.st.ReleaseTimeout)
	}
	return ag.cfg.ReleaseTimeout
}

// userGroups is the supplementary group list an app's processes get: the
// user's own groups from the group database, never agentd's (root's).
func userGroups(u *user.User) []uint32 {
	ids, err := u.GroupIds()
	out := []uint32{}
	if err != nil {
		return out
	}
	for _, id := range ids {
		if g, err := strconv.ParseUint(id, 10, 32); err == nil {
			out = append(out, uint32(g))
		}
	}
	return out
}

// endOutput waits for the copy of a release command's output to reach the
// end of its pipe, which comes when every process holding the pipe's write
// end is gone. A process that left the command's process group (setsid)
// can hold it for ever: after a grace period the read end is closed, which
// ends the copy, so the deploy never hangs on it.
func endOutput(copied <-chan struct{}, r *os.File) {
	select {
	case <-copied:
		return
	case <-time.After(5 * time.Second):
	}
	r.Close()
	<-copied
}

// ParseSize reads a byte size for agentd's flags: a number with an
// optional K, M, G or T suffix (powers of 1024, an "iB" or "B" after it
// allowed): "512M", "1GiB", "1048576".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "B"), "i")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K', 'k':
			mult = 1 << 10
		case 'M', 'm':
			mult = 1 << 20
		case 'G', 'g':
			mult = 1 << 30
		case 'T', 't':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q: want a number of bytes more than 0, with K, M, G or T, e.g. 512M", s)
	}
	return n * mult, nil
}
