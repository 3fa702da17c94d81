package soak

import (
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/loadgen"
)

// kind is a kind of operation agentd is killed in: prep brings the apps to
// where the operation means something (run whole, not killed), args is the
// hctl command that is killed.
type kind struct {
	name string
	prep func(s *soak)
	args func(s *soak) []string
}

var kinds = []kind{
	{"deploy", nil, func(s *soak) []string { return []string{"deploy", mainApp, s.release()} }},
	{"rollback", nil, func(s *soak) []string { return []string{"rollback", mainApp} }},
	{"config-set", nil, func(s *soak) []string {
		return []string{"config", "set", mainApp, "SOAK_N=" + strconv.Itoa(s.rng.IntN(1e6))}
	}},
	{"config-unset", func(s *soak) { s.must("config", "set", mainApp, "SOAK_U=1") },
		func(s *soak) []string { return []string{"config", "unset", mainApp, "SOAK_U"} }},
	{"scale-up", func(s *soak) { s.must("scale", mainApp, "web=1") },
		func(s *soak) []string { return []string{"scale", mainApp, "web=2"} }},
	{"scale-down", func(s *soak) { s.must("scale", mainApp, "web=2") },
		func(s *soak) []string { return []string{"scale", mainApp, "web=1"} }},
	{"restart", nil, func(s *soak) []string { return []string{"restart", mainApp} }},
	{"apps-create", func(s *soak) {
		s.refreshTransient()
		if s.transient != "" {
			s.must("apps", "destroy", s.transient, "--confirm", s.transient)
			s.transient = ""
		}
		s.appN++
		s.transient = fmt.Sprintf("soak-t%d", s.appN)
		s.apps[s.transient] = true
	}, func(s *soak) []string { return s.createArgs(s.transient) }},
	{"apps-destroy", func(s *soak) {
		s.refreshTransient()
		if s.transient == "" {
			s.appN++
			s.transient = fmt.Sprintf("soak-t%d", s.appN)
			s.apps[s.transient] = true
			s.must(s.createArgs(s.transient)...)
		}
		if info := s.info(s.transient); info.ActiveRelease == "" {
			s.must("deploy", s.transient, s.release())
		}
	}, func(s *soak) []string { return []string{"apps", "destroy", s.transient, "--confirm", s.transient} }},
}

// killRounds kills agentd with SIGKILL 100 times, at least 10 times in each
// kind, each at an instant drawn at random over how long that kind of
// operation takes, and checks after each restart that the apps settle and
// nothing runs unsupervised. An operation that ends before its instant is
// not a kill: its duration becomes the range the next instant is drawn
// from, and after maxAttempts such misses the kill comes right after hctl
// started.
func (s *soak) killRounds(ls []*loadgen.Run) {
	var schedule []kind
	for _, k := range kinds {
		for range perKind {
			schedule = append(schedule, k)
		}
	}
	for len(schedule) < kills {
		schedule = append(schedule, kinds[s.rng.IntN(len(kinds))])
	}
	s.rng.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })
	byKind := map[string]int{} // kills after which something was wrong
	est := map[string]time.Duration{}
	for _, k := range kinds {
		est[k.name] = 2 * time.Second
	}
	for i, k := range schedule {
		var at time.Duration
		attempt := 1
		for ; ; attempt++ {
			if k.prep != nil {
				k.prep(s)
			}
			window := est[k.name]
			if attempt > maxAttempts {
				window = 0
			}
			var took time.Duration
			var hit bool
			at, took, hit = s.killDuring(k.args(s), window)
			if hit {
				break
			}
			est[k.name] = took
		}
		began := time.Now()
		if err := s.ag.StartAgain(); err != nil {
			s.t.Fatalf("kill %d (%s): agentd does not start again: %v", i+1, k.name, err)
		}
		restarted := time.Since(began)
		what := fmt.Sprintf("kill %d (%s at %s)", i+1, k.name, at.Round(time.Millisecond))
		why, orphans := s.settle()
		fmt.Printf("soak: kill %3d/%d %-12s %6.3fs into the op (try %d), agentd up in %4.2fs, settled in %5.2fs, failed requests so far %d\n",
			i+1, kills, k.name, at.Seconds(), attempt, restarted.Seconds(), time.Since(began).Seconds(), failed(ls))
		if why == "" && len(orphans) == 0 {
			continue
		}
		byKind[k.name]++
		if why != "" {
			s.t.Errorf("%s: %s", what, why)
		}
		for _, o := range orphans {
			s.t.Errorf("%s: unsupervised: %s", what, o.desc)
			// Ours (this run's agentd started it), and nobody else will
			// ever stop it: by PID, so the run can count the rest. SIGTERM
			// first: it shares the app's socket and may hold requests,
			// which a SIGKILL would fail.
			stopGroup(o.pid)
		}
		if total(byKind) > maxBadKills {
			s.t.Fatalf("more than %d kills left the apps unsettled or unsupervised (%v): stopping", maxBadKills, byKind)
		}
		if why != "" {
			// What an operator would do: restart the app, which replaces
			// every process; the run goes on from there to count the rest.
			s.must("restart", mainApp)
			if why, _ := s.settle(); why != "" {
				s.t.Fatalf("%s: not even an hctl restart settles the app: %s", what, why)
			}
		}
	}
	if len(byKind) > 0 {
		fmt.Printf("soak: kills that left the apps unsettled or unsupervised, by kind: %v\n", byKind)
	}
}

// maxBadKills bounds how many failed kills the run goes on past.
const maxBadKills = 25

func total(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

// killDuring runs hctl args and kills agentd at a random instant within
// window of its start. hit is false when hctl ended first (took is then how
// long it ran; it must have succeeded).
func (s *soak) killDuring(args []string, window time.Duration) (at, took time.Duration, hit bool) {
	cmd := exec.Command(s.bins.Hctl, args...)
	cmd.Env = append(cmd.Environ(), "HCTL_SOCKET="+s.ag.Socket)
	out := &limitedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	var delay time.Duration
	if window > 0 {
		delay = time.Duration(s.rng.Int64N(int64(window)))
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The random instant is the point of the test, not a synchronisation.
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			s.t.Fatalf("hctl %v (not killed): %v\n%s", args, err, out)
		}
		return 0, time.Since(start), false
	case <-timer.C:
	}
	at = time.Since(start)
	s.ag.Kill()
	<-done // hctl ends once agentd's socket closed; its status does not matter
	return at, 0, true
}

// settle waits until every app of this run runs its active release in
// formation, ready, with nothing else (why says what is not, if that never
// comes), then looks through /proc for processes of these apps that agentd
// does not list.
func (s *soak) settle() (why string, orphans []orphan) {
	deadline := time.Now().Add(settleTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		why = s.unsettled()
		if why == "" {
			break
		}
		if time.Now().After(deadline) {
			why = fmt.Sprintf("not settled %s after the restart: %s", settleTimeout, why)
			break
		}
		<-tick.C
	}
	var ps []api.Process
	if r := s.ag.HctlJSON(&ps, "ps"); r.Code != 0 {
		s.t.Fatalf("hctl ps: %s", r)
	}
	return why, unsupervised(s.dir, s.apps, ps)
}

// settleTimeout is past the longest a settled app needs: a boot (30 s
// boot timeout in the worst case) after a drain (10 s).
const settleTimeout = 45 * time.Second

// unsettled says why the apps are not settled yet, "" when they are. It
// also learns whether the transient app exists after the kill.
func (s *soak) unsettled() string {
	var apps []api.App
	if r := s.ag.HctlJSON(&apps, "apps"); r.Code != 0 {
		return "hctl apps: " + r.String()
	}
	s.transientGone(apps)
	for _, a := range apps {
		if !s.apps[a.Name] {
			continue
		}
		info := s.info(a.Name)
		var rels []api.Release
		if r := s.ag.HctlJSON(&rels, "releases", a.Name); r.Code != 0 {
			return "hctl releases: " + r.String()
		}
		if why := settled(info, rels); why != "" {
			return a.Name + ": " + why
		}
	}
	return ""
}

// refreshTransient learns whether the transient app still exists (an
// operation that ran whole may have destroyed it).
func (s *soak) refreshTransient() {
	var apps []api.App
	if r := s.ag.HctlJSON(&apps, "apps"); r.Code != 0 {
		s.t.Fatalf("hctl apps: %s", r)
	}
	s.transientGone(apps)
}

func (s *soak) transientGone(apps []api.App) {
	if s.transient == "" {
		return
	}
	for _, a := range apps {
		if a.Name == s.transient {
			return
		}
	}
	s.transient = ""
}

func (s *soak) info(app string) api.AppInfo {
	var info api.AppInfo
	if r := s.ag.HctlJSON(&info, "apps", "info", app); r.Code != 0 {
		s.t.Fatalf("apps info %s: %s", app, r)
	}
	return info
}

func syscallKill(pid int) { syscall.Kill(pid, syscall.SIGKILL) }

// stopGroup stops the process group of pid as agentd would: SIGTERM, and
// SIGKILL if it is still there after the drain timeout.
func stopGroup(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // gone
	}
	defer unix.Close(fd)
	syscall.Kill(-pid, syscall.SIGTERM)
	if n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 15_000); n == 0 {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}
