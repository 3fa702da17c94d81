package agent

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/conns"
	"github.com/agentd/agentd/agentd/internal/rollout"
	"github.com/agentd/agentd/sockets"
)

// Kernel steering (docs/concepts.md, "How connections reach a
// generation"). With one shared socket, old and new processes accept from
// one queue, and an old process keeps getting connections until it handles
// SIGTERM: a server that closes what it accepted but has not read yet (a
// stock uvicorn, Go's http.Server.Shutdown) resets them. With steering, each
// release's processes get a listening socket of their own, all in one
// SO_REUSEPORT group on the app's address, and a BPF program attached to
// the group picks the socket for each new connection. At the cutover the
// program is pointed at the new release's socket, the old socket's accept
// queue empties into the old processes, and only then do they get SIGTERM.
//
// The app's socket (app.held) is always the socket of its active release:
// everything that runs with the active release (a crash restart, a scale,
// the maintenance responder, `hctl run --type`) gets it. Another release's
// processes (a deploy's, before its cutover; a canary's) get a sibling,
// bound when the first of them starts.

// SteerGroup steers the new connections of one reuseport group
// (steer.Group): every one to primary but a share to canary.
type SteerGroup interface {
	Attach(f *os.File) error
	Route(primary, canary *os.File, canaryPercent float64) error
	Steered() (map[uint64]uint64, error)
	// Files are the program's and maps' fds by name, for the fd store and
	// the hand-over to a new agentd; the caller closes them.
	Files() (map[string]*os.File, error)
	Close() error
}

// Steerer makes SteerGroups (steer.New, steer.Open, steer.Find).
type Steerer interface {
	// New loads a new program and maps for a group.
	New(name string) (SteerGroup, error)
	// Open steers on with a previous agentd's program and maps (Files).
	Open(files map[string]*os.File) (SteerGroup, error)
	// Find finds the program and maps whose map holds the socket with
	// cookie, from the kernel's list: a previous agentd's, when its Files
	// were lost with it (a crash without systemd's fd store).
	Find(cookie uint64) (SteerGroup, error)
}

// steerFileNames are the names of a SteerGroup's Files.
var steerFileNames = []string{"prog", "socks", "routes", "counts"}

func steerStoreName(app, socket, file string) string { return app + "." + socket + ".steer." + file }

// steering is one app socket's steering state. Guarded by app.mu.
type steering struct {
	group SteerGroup
	// gens are the sockets of releases other than the active one, by
	// release.
	gens map[int]*sockets.Held
	// retiring are sockets taken off the routes at a cutover, waiting for
	// their release's processes to be told to stop.
	retiring []retiredSocket
	// canary is the release that gets canaryPercent of new connections
	// (0: none).
	canary        int
	canaryPercent float64
	// releases names the release of each socket ever routed, by cookie,
	// for the steered counts (SteeredCounts).
	releases map[uint64]int
}

type retiredSocket struct {
	release int
	h       *sockets.Held
}

// Settle is how long an old socket's accept queue must stay empty before
// its processes get SIGTERM: the time for connections they accepted last
// to be read (a server that accepts in batches reads them a little later),
// and for handshakes the kernel placed on the old socket before the switch
// to finish there. AwaitAway is the most the wait takes.
var (
	steerSettle    = 50 * time.Millisecond
	steerAwaitAway = 5 * time.Second
	// steerAwaitRequest is how long a connection an old process accepted
	// may take to send its request (a client short of CPU, a far one)
	// before SIGTERM goes anyway: a browser's preconnect never sends.
	steerAwaitRequest = time.Second
)

// steerable says whether spec can be steered, and why not.
func (ag *Agent) steerable(spec sockets.Spec) (bool, string) {
	if ag.cfg.Steer == nil {
		why := ag.cfg.SteerOff
		if why == "" {
			why = "steering is off"
		}
		return false, why
	}
	if spec.Network == "unix" {
		return false, "a unix socket cannot form a reuseport group"
	}
	return true, ""
}

// bindApp binds a new app socket: in a reuseport group of its own where
// the socket can be steered, else as one shared socket.
func (ag *Agent) bindApp(app string, spec sockets.Spec) (*sockets.Held, error) {
	if ok, _ := ag.steerable(spec); !ok {
		return ag.listen(app, spec)
	}
	h, err := sockets.ListenReuse(spec, true)
	if err == nil && ag.cfg.Store != nil {
		ag.cfg.Store(app+"."+spec.Name, h.File)
	}
	return h, err
}

// startSteering attaches the steering program to the group of a's socket
// h (a new app, a socket added, or every socket after agentd started: the
// program a previous agentd attached is replaced, with routes rebuilt from
// the state). It logs which way connections reach the app. Callers hold
// a.mu.
func (ag *Agent) startSteering(a *app, h *sockets.Held) {
	name := h.Spec.Name
	ok, why := ag.steerable(h.Spec)
	if ok && !h.ReusePort() {
		ok, why = false, "the socket was bound without SO_REUSEPORT (by an agentd before 0.9, or a socket unit without ReusePort=yes), and cannot join a group; it is bound again with it when nothing holds it any more: at the next boot, or after `hctl apps set --remove-socket` and `--socket`"
	}
	if !ok {
		if h.Spec.Network != "unix" {
			ag.log.Info("one shared socket: old processes get new connections until they stop accepting", "app", a.st.Name, "socket", name, "why", why)
		}
		a.steerWhy = setKey(a.steerWhy, name, why)
		return
	}
	g, how, err := ag.steerGroup(a, h)
	if err == nil {
		err = g.Route(h.File, nil, 0)
		if err == nil {
			err = g.Attach(h.File)
		}
		if err != nil {
			g.Close()
		}
	}
	if err != nil {
		ag.log.Warn("one shared socket: the steering program could not be attached", "app", a.st.Name, "socket", name, "err", err)
		a.steerWhy = setKey(a.steerWhy, name, fmt.Sprintf("attaching the steering program: %v", err))
		return
	}
	if a.steer == nil {
		a.steer = map[string]*steering{}
	}
	a.steer[name] = &steering{group: g, gens: map[int]*sockets.Held{},
		releases: map[uint64]int{h.Cookie(): a.st.Active}}
	delete(a.steerWhy, name)
	if how == "new" || how == "found" {
		ag.storeSteerFiles(a, name, g, how == "found")
	}
	ag.log.Info("connections steered per release in the kernel", "app", a.st.Name, "socket", name, "bound", h.Bound(), "program", how)
}

// steerGroup gets the steering of h's group: the previous agentd's
// program and maps (handed over, or from systemd's fd store: "opened"),
// else found in the kernel by h's cookie ("found": the previous agentd
// crashed without an fd store), else new ones ("new"). The kernel lets a
// socket be in one steering map only, so the previous ones must be reused
// while they hold the group's sockets.
func (ag *Agent) steerGroup(a *app, h *sockets.Held) (SteerGroup, string, error) {
	name := h.Spec.Name
	files := map[string]*os.File{}
	for _, f := range steerFileNames {
		var got *os.File
		if ag.cfg.Inherit != nil {
			got = ag.cfg.Inherit(socketKey(a.st.Name, name) + "@steer." + f)
		}
		if got == nil && ag.cfg.Claim != nil {
			got = ag.cfg.Claim(steerStoreName(a.st.Name, name, f))
		}
		if got != nil {
			files[f] = got
		}
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) == len(steerFileNames) {
		g, err := ag.cfg.Steer.Open(files)
		if err == nil {
			return g, "opened", nil
		}
		ag.log.Warn("the previous agentd's steering program could not be reused", "app", a.st.Name, "socket", name, "err", err)
	}
	if g, err := ag.cfg.Steer.Find(h.Cookie()); err == nil {
		return g, "found", nil
	}
	g, err := ag.cfg.Steer.New(a.st.Name + "_" + name)
	return g, "new", err
}

// storeSteerFiles parks g's program and maps in systemd's fd store, so
// that a restarted agentd steers on with them. Callers hold a.mu.
func (ag *Agent) storeSteerFiles(a *app, name string, g SteerGroup, replace bool) {
	if ag.cfg.Store == nil {
		return
	}
	files, err := g.Files()
	if err != nil {
		ag.log.Warn("the steering program's fds are not in the fd store", "app", a.st.Name, "socket", name, "err", err)
		return
	}
	for f, file := range files {
		if replace {
			ag.cfg.Unstore(steerStoreName(a.st.Name, name, f))
		}
		ag.cfg.Store(steerStoreName(a.st.Name, name, f), file)
		file.Close()
	}
}

func setKey(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// socketFor is the socket process TYPE of release gets for app socket h:
// h itself, or with steering (and another release than the active one) its
// release's sibling, bound now if it is the first. Callers hold a.mu.
func (ag *Agent) socketFor(a *app, h *sockets.Held, release int) (*sockets.Held, error) {
	s := a.steer[h.Spec.Name]
	if s == nil || release == a.st.Active || a.st.Active == 0 {
		return h, nil
	}
	if g := s.gens[release]; g != nil {
		return g, nil
	}
	g, err := h.Sibling()
	if err != nil {
		return nil, fmt.Errorf("socket %s of %s: %w", h.Spec.Name, vname(release), err)
	}
	s.gens[release] = g
	return g, nil
}

// givenTo is the socket of app socket h that release's processes got.
// Callers hold a.mu.
func (a *app) givenTo(h *sockets.Held, release int) *sockets.Held {
	if s := a.steer[h.Spec.Name]; s != nil && release != a.st.Active {
		if g := s.gens[release]; g != nil {
			return g
		}
	}
	return h
}

// steerCutover points every steered socket of a at release r, now active
// (prev was): r's sibling becomes the app's socket and the program sends
// it every new connection; prev's socket waits for its processes' SIGTERM
// (steerAway). Callers hold a.mu, before saving the new active release
// (the cookies are saved with it).
func (ag *Agent) steerCutover(a *app, prev, r int) {
	for i, h := range a.held {
		s := a.steer[h.Spec.Name]
		if s == nil {
			continue
		}
		g := s.gens[r]
		if g == nil {
			continue // r has no process of this socket's type
		}
		delete(s.gens, r)
		if s.canary == r {
			// Promoted: its socket is the app's now.
			s.canary, s.canaryPercent = 0, 0
			if ag.cfg.Unstore != nil {
				ag.cfg.Unstore(canaryStoreName(a.st.Name, h.Spec.Name))
			}
		}
		var canary *os.File
		if c := s.gens[s.canary]; c != nil && s.canary != 0 {
			canary = c.File
		}
		if err := s.group.Route(g.File, canary, s.canaryPercent); err != nil {
			// The old socket stays where the program sends connections;
			// it closes with its processes, and the kernel then picks
			// among the rest of the group.
			ag.log.Error("steering to the new release failed: its processes share the old release's connections until those stop", "app", a.st.Name, "socket", h.Spec.Name, "err", err)
		}
		ag.retireSocket(a, s, retiredSocket{release: prev, h: h})
		a.held[i] = g
		ag.setCookie(a, h.Spec.Name, g.Cookie())
		s.releases[g.Cookie()] = r
		if ag.cfg.Store != nil {
			ag.cfg.Unstore(a.st.Name + "." + h.Spec.Name)
			ag.cfg.Store(a.st.Name+"."+h.Spec.Name, g.File)
		}
	}
}

// retireSocket takes a socket off the routes for good: it waits for its
// release's processes to be told to stop (steerAway), or, when none of
// them runs any more (they crashed), closes at once, so that what queued
// on it meanwhile moves to the routed socket instead of waiting for
// nobody. Callers hold a.mu.
func (ag *Agent) retireSocket(a *app, s *steering, rs retiredSocket) {
	if ag.liveOf(a, rs.release, rs.h.Spec.Type) {
		s.retiring = append(s.retiring, rs)
		return
	}
	rs.h.File.Close()
}

// setCookie records the SO_COOKIE of the app's socket name, saved with the
// state: after a restart the socket is taken back from the processes that
// hold it by this cookie, never by its address, which every generation's
// socket shares. Callers hold a.mu.
func (ag *Agent) setCookie(a *app, name string, c uint64) {
	if a.st.Cookies == nil {
		a.st.Cookies = map[string]uint64{}
	}
	a.st.Cookies[name] = c
}

// steerAway runs before procs get SIGTERM: for each socket taken off the
// routes for their release, it waits until the socket's accept queue is
// empty and the processes have started on what they accepted (awaitEmpty),
// then closes agentd's copy, so that the socket's last close (the
// processes') moves whatever still arrives on it to the group's routed
// socket instead of resetting it. A socket unit's socket stays open in
// systemd, unrouted.
func (ag *Agent) steerAway(a *app, procs []*proc) {
	a.mu.Lock()
	var waits []retiredSocket
	for _, s := range a.steer {
		keep := s.retiring[:0]
		for _, rs := range s.retiring {
			if slices.ContainsFunc(procs, func(p *proc) bool {
				return p.release == rs.release && (p.typ == rs.h.Spec.Type || p.typ == rollout.Responder)
			}) {
				waits = append(waits, rs)
				continue
			}
			if !ag.liveOf(a, rs.release, rs.h.Spec.Type) {
				// Nothing of its release serves it: nothing to wait for.
				waits = append(waits, rs)
				continue
			}
			keep = append(keep, rs)
		}
		s.retiring = keep
	}
	a.mu.Unlock()
	if len(waits) == 0 {
		return
	}
	start := time.Now()
	var pgids []int
	for _, p := range procs {
		pgids = append(pgids, p.p.PID()) // each process leads its group
	}
	for _, rs := range waits {
		port := rs.h.Port()
		ag.awaitEmpty(rs.h, start, func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			return ag.liveOf(a, rs.release, rs.h.Spec.Type)
		}, func() int {
			unread, waiting, err := conns.Unstarted([]int{port}, pgids)
			if err != nil {
				return 0 // no sock_diag: the settle time alone
			}
			if time.Since(start) < steerAwaitRequest {
				return unread + waiting
			}
			return unread
		})
	}
	for _, rs := range waits {
		// A socket unit's socket stays open in systemd (listening, in
		// the group, sent nothing by the program): shutting it down
		// would fail the unit. The others close for good with their
		// processes, and what arrives on them late moves.
		rs.h.File.Close()
	}
	ag.log.Debug("old sockets emptied before SIGTERM", "app", a.st.Name, "sockets", len(waits), "took", time.Since(start))
}

// awaitEmpty waits until h's accept queue has been empty, and its old
// processes have started on every connection they accepted (unread: how
// many they never read from), for steerSettle; or until
// steerAwaitAway has passed since start, or no process that could accept
// from it runs (served false: they all exited, a crash): what is queued
// then moves to the routed socket when agentd closes its copy.
func (ag *Agent) awaitEmpty(h *sockets.Held, start time.Time, served func() bool, unread func() int) {
	var emptySince time.Time
	for time.Since(start) < steerAwaitAway {
		if !served() {
			return
		}
		n, err := h.Queued()
		if err != nil {
			return
		}
		if n == 0 {
			// An asyncio server accepts in batches and reads later, and
			// a client short of CPU sends its request late: under load an
			// old process holds connections it has not started on.
			n = unread()
		}
		now := time.Now()
		switch {
		case n > 0:
			emptySince = time.Time{}
		case emptySince.IsZero():
			emptySince = now
		case now.Sub(emptySince) >= steerSettle:
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	ag.log.Warn("an old socket's accept queue did not empty: SIGTERM anyway", "socket", h.Spec.Name, "waited", steerAwaitAway)
}

// liveOf says whether a process of release and typ runs. Callers hold a.mu.
func (ag *Agent) liveOf(a *app, release int, typ string) bool {
	return slices.ContainsFunc(a.procs, func(p *proc) bool {
		return p.release == release && p.typ == typ && !p.p.Exited()
	})
}

// pruneGens closes the siblings left when a rollout ends: a successful one
// made its release's sibling the app's socket, so what is left is a failed
// or cancelled one's, whose processes are stopping. It was never routed:
// nothing is queued on it. A canary's stays. Callers hold a.mu.
func (ag *Agent) pruneGens(a *app) {
	for _, s := range a.steer {
		for r, g := range s.gens {
			if r != s.canary {
				g.File.Close()
				delete(s.gens, r)
			}
		}
	}
}

// stopSteering closes a's steering state for socket name (the socket is
// removed, the app destroyed). Callers hold a.mu.
func (ag *Agent) stopSteering(a *app, name string) {
	s := a.steer[name]
	if s == nil {
		return
	}
	for _, g := range s.gens {
		g.File.Close()
	}
	for _, rs := range s.retiring {
		rs.h.File.Close()
	}
	s.group.Close()
	delete(a.steer, name)
	if ag.cfg.Unstore != nil {
		for _, f := range steerFileNames {
			ag.cfg.Unstore(steerStoreName(a.st.Name, name, f))
		}
	}
}

// steeringAPI says how connections reach socket name.
func (a *app) steeringAPI(name string) (mode, why string) {
	if a.steer[name] != nil {
		return api.SteeringKernel, ""
	}
	return api.SteeringShared, a.steerWhy[name]
}

// SteeredCounts lists, per app socket and release, the new connections the
// steering program sent to the release's socket since agentd started (for
// metrics), and each app's canary share.
func (ag *Agent) SteeredCounts() (counts []api.SteeredCount, canaries []api.CanaryShare) {
	ag.mu.Lock()
	apps := make([]*app, 0, len(ag.apps))
	for _, a := range ag.apps {
		apps = append(apps, a)
	}
	ag.mu.Unlock()
	for _, a := range apps {
		a.mu.Lock()
		for name, s := range a.steer {
			got, err := s.group.Steered()
			if err != nil {
				continue
			}
			byRelease := map[int]uint64{}
			for cookie, n := range got {
				if r, ok := s.releases[cookie]; ok {
					byRelease[r] += n
				}
			}
			for r, n := range byRelease {
				rel := ""
				if r != 0 {
					rel = vname(r)
				}
				counts = append(counts, api.SteeredCount{App: a.st.Name, Socket: name, Release: rel, Connections: n})
			}
		}
		if c := a.st.Canary; c != nil {
			canaries = append(canaries, api.CanaryShare{Release: vname(c.Release), Percent: c.Percent, App: a.st.Name})
		}
		a.mu.Unlock()
	}
	return counts, canaries
}
