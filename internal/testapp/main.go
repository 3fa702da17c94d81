// Command testapp is the app agentd's own integration tests deploy: goapp's
// contract plus misbehaviours chosen by TESTAPP_MODE, a comma-separated list
// of:
//
//	(empty)           serve on every inherited fd, then READY=1
//	never-ready       serve, but never send READY=1 and never accept on the
//	                  "probe" fd (kept open, so probes hang instead of being
//	                  refused)
//	crash-at-boot     print "crashing on purpose" to stderr, exit 3
//	ignore-sigterm    ignore SIGTERM and serve forever (until SIGKILL)
//	fork-child        start a child (testapp in mode child-sleep) in the same
//	                  process group that ignores SIGTERM and sleeps; its pid
//	                  goes to $TESTAPP_CHILD_PIDFILE if set, before readiness
//	notify-child      do not send READY=1 itself; run
//	                  "systemd-notify --ready --status=ready-from-child"
//	slow-boot         wait $TESTAPP_BOOT_DELAY before serving and READY=1
//	exit-after-ready  exit 1 right after READY=1 (after $TESTAPP_EXIT_DELAY,
//	                  default 0, if set)
//	child-sleep       internal: the fork-child child
//
// the hostile modes of hostile.go (hold, close-sockets,
// shutdown-sockets, bind-port, notify-flood, stdout-flood, fork-bomb), and
// the trap modes of traps.go (own-port, strict-listen-pid).
//
// Without inherited sockets it serves nothing under agentd (a process type
// without sockets, such as a worker: PORT is the web socket's, held by
// agentd) and listens on a free 127.0.0.1 port when run by hand.
//
// Endpoints: GET /env (the contract as seen by the process, JSON), GET /
// ("release=... process=..."), POST / (200, the body's length), GET
// /healthz, GET /slow?ms=N.
//
// Contract checks: if LISTEN_FDS is set but LISTEN_PID is not this process,
// testapp prints why and exits 4 (a broken exec shim would otherwise go
// unnoticed: the fds would be silently ignored). Unknown modes exit 2.
//
// Build: go build -o testapp ./internal/testapp
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/agentd/agentd/examples/goapp/graceful"
)

// Exit codes tests can tell apart.
const (
	exitUsage     = 2 // bad TESTAPP_MODE or TESTAPP_* value
	exitCrash     = 3 // crash-at-boot
	exitListenPID = 4 // LISTEN_FDS meant for another process
)

// knownModes are the values TESTAPP_MODE may list.
var knownModes = map[string]bool{
	"never-ready": true, "crash-at-boot": true, "ignore-sigterm": true, "fork-child": true,
	"notify-child": true, "slow-boot": true, "exit-after-ready": true, "child-sleep": true,
}

// childReadyFd is where a child-sleep child reports that it ignores SIGTERM
// (the first ExtraFiles entry).
const childReadyFd = 3

// contract is the activation environment as the process received it, kept
// before go-systemd's activation unsets it.
type contract struct {
	Pid           int               `json:"pid"`
	Pgid          int               `json:"pgid"`
	ListenPID     string            `json:"listen_pid"`
	ListenFDs     string            `json:"listen_fds"`
	ListenFDNames string            `json:"listen_fdnames"`
	NotifySocket  string            `json:"notify_socket"`
	Listeners     []listenerInfo    `json:"listeners"`
	Modes         []string          `json:"modes"`
	Env           map[string]string `json:"env"`
}

type listenerInfo struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

func main() {
	code := run()
	lifeLog("exit")
	os.Exit(code)
}

func run() int {
	modes, err := parseModes(os.Getenv("TESTAPP_MODE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return exitUsage
	}
	if modes["child-sleep"] {
		return childSleep()
	}

	c := contract{
		Pid:           os.Getpid(),
		Pgid:          syscall.Getpgrp(),
		ListenPID:     os.Getenv("LISTEN_PID"),
		ListenFDs:     os.Getenv("LISTEN_FDS"),
		ListenFDNames: os.Getenv("LISTEN_FDNAMES"),
		NotifySocket:  os.Getenv("NOTIFY_SOCKET"),
		Env:           map[string]string{},
	}
	c.Modes = slices.Sorted(maps.Keys(modes))
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AGENTD_") || k == "PORT" || strings.HasPrefix(k, "TEST") {
			c.Env[k] = v
		}
	}
	if refusesFDs(modes) {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		fmt.Fprintf(os.Stderr, "testapp: LISTEN_PID=%s is not my pid %d: ignoring the fds, as sd_listen_fds does\n", c.ListenPID, c.Pid)
		return serveOwnPort(ctx, "strict-listen-pid")
	}
	if c.ListenFDs != "" && c.ListenPID != strconv.Itoa(c.Pid) {
		fmt.Fprintf(os.Stderr, "testapp: LISTEN_FDS=%s is set but LISTEN_PID=%q is not my pid %d: the fds would be ignored (broken exec shim?)\n",
			c.ListenFDs, c.ListenPID, c.Pid)
		return exitListenPID
	}
	fmt.Printf("testapp: started pid=%d release=%s process=%s modes=%s\n",
		c.Pid, os.Getenv("AGENTD_RELEASE"), os.Getenv("AGENTD_PROCESS"), os.Getenv("TESTAPP_MODE"))

	if modes["crash-at-boot"] {
		fmt.Fprintln(os.Stderr, "crashing on purpose")
		return exitCrash
	}

	ctx := context.Background()
	if modes["ignore-sigterm"] {
		signal.Ignore(syscall.SIGTERM)
		// Only SIGINT (by hand) or SIGKILL end it.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt)
		defer stop()
	} else {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
		defer stop()
	}

	ctx, exitCode, err := rolloutSetup(ctx, modes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return exitUsage
	}
	if modes["own-port"] {
		return serveOwnPort(ctx, "own-port")
	}
	if code, stop := beforeListen(modes); stop {
		return code
	}
	var serveOn, probe []net.Listener
	if !modes["close-sockets"] {
		serveOn, probe, err = listen(&c, modes["never-ready"])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return 1
	}
	if modes["hold"] || modes["shutdown-sockets"] {
		probe, serveOn = append(probe, serveOn...), nil
	}
	// never-ready holds the probe socket without accepting: keep it
	// reachable so no finalizer closes it.
	defer runtime.KeepAlive(probe)

	if modes["slow-boot"] {
		delay, err := durationEnv("TESTAPP_BOOT_DELAY")
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			return exitUsage
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return 0
		}
	}
	exitDelay, err := durationEnv("TESTAPP_EXIT_DELAY")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return exitUsage
	}

	if modes["fork-child"] {
		if err := forkChild(); err != nil {
			fmt.Fprintln(os.Stderr, "testapp: fork-child:", err)
			return 1
		}
	}
	if err := startHostile(modes); err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return 1
	}

	done := make(chan error, 1)
	go func() {
		if len(serveOn) == 0 {
			// A worker under agentd, or never-ready given only a probe
			// socket: nothing to serve, only SIGTERM to wait for.
			<-ctx.Done()
			done <- nil
			return
		}
		grace := 500 * time.Millisecond
		if g, err := time.ParseDuration(os.Getenv("TESTAPP_GRACE")); err == nil {
			grace = g // a slow but correct drain
		}
		done <- graceful.Serve(ctx, serveOn, handler(&c), graceful.Options{
			Grace: grace,
			OnDrainStart: func() {
				fmt.Fprintln(os.Stderr, "testapp: draining")
				notify("STOPPING=1\nSTATUS=draining")
			},
		})
	}()

	switch {
	case modes["never-ready"]:
	case modes["notify-child"]:
		go notifyFromChild()
	default:
		notify("READY=1\nSTATUS=serving")
		fmt.Println("testapp: ready")
	}
	if modes["exit-after-ready"] {
		time.Sleep(exitDelay) // The delay is what the test asked for.
		fmt.Fprintln(os.Stderr, "testapp: exiting after ready on purpose")
		return 1
	}

	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "testapp: drained")
	return exitCode()
}

func parseModes(s string) (map[string]bool, error) {
	modes := map[string]bool{}
	for m := range strings.SplitSeq(s, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if !knownModes[m] {
			return nil, fmt.Errorf("unknown TESTAPP_MODE %q", m)
		}
		modes[m] = true
	}
	return modes, nil
}

// durationEnv parses the Go duration in env var k; unset means 0.
func durationEnv(k string) (time.Duration, error) {
	v := os.Getenv(k)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", k, err)
	}
	return d, nil
}

// listen returns the listeners to serve on and, with withholdProbe, the
// probe listeners left unserved. Without inherited fds it serves nothing
// under agentd, and a free 127.0.0.1 port when run by hand.
func listen(c *contract, withholdProbe bool) (serveOn, probe []net.Listener, err error) {
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, err
	}
	for name, group := range byName {
		for _, l := range group {
			c.Listeners = append(c.Listeners, listenerInfo{Name: name, Addr: l.Addr().String()})
			if withholdProbe && name == "probe" {
				probe = append(probe, l)
				continue
			}
			serveOn = append(serveOn, l)
		}
	}
	if len(c.Listeners) > 0 {
		return serveOn, probe, nil
	}
	// Under agentd a process type without sockets (a worker) serves
	// nothing; PORT belongs to the web process. By hand, listen anywhere.
	if os.Getenv("AGENTD_APP") != "" {
		return nil, nil, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintln(os.Stderr, "testapp: no inherited sockets, listening on", l.Addr())
	c.Listeners = append(c.Listeners, listenerInfo{Name: "port", Addr: l.Addr().String()})
	return []net.Listener{l}, nil, nil
}

func notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		fmt.Fprintln(os.Stderr, "testapp: sd_notify:", err)
	}
}

// notifyFromChild has systemd-notify send READY=1, so that readiness sent
// by a child of the process is exercised.
func notifyFromChild() {
	cmd := exec.Command("systemd-notify", "--ready", "--status=ready-from-child")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "testapp: systemd-notify:", err)
		return
	}
	fmt.Println("testapp: ready (from child)")
}

// forkChild starts testapp again in mode child-sleep, in this process group
// (exec's default), and waits until it ignores SIGTERM: a test that
// SIGTERMs the group right after readiness must find it ignoring. The
// child's pid goes to $TESTAPP_CHILD_PIDFILE, written atomically.
func forkChild() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "TESTAPP_MODE=child-sleep")
	// Like a real forking app, the child shares stdout/stderr, so log
	// readers see EOF only when the whole group is gone.
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w} // childReadyFd
	err = cmd.Start()
	w.Close()
	if err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // Reap it if it ever exits.
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || line != "ignoring SIGTERM\n" {
		return fmt.Errorf("child %d did not report ready: %q %v", cmd.Process.Pid, line, err)
	}
	if f := os.Getenv("TESTAPP_CHILD_PIDFILE"); f != "" {
		tmp := f + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, f); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "testapp: forked child pid=%d\n", cmd.Process.Pid)
	return nil
}

// childSleep is the fork-child child: ignore SIGTERM, tell the parent, and
// sleep until killed.
func childSleep() int {
	signal.Ignore(syscall.SIGTERM)
	if f := os.NewFile(childReadyFd, "ready"); f != nil {
		_, _ = io.WriteString(f, "ignoring SIGTERM\n")
		f.Close()
	}
	for {
		time.Sleep(time.Hour)
	}
}

func handler(c *contract) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(c)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "release=%s process=%s\n", os.Getenv("AGENTD_RELEASE"), os.Getenv("AGENTD_PROCESS"))
	})
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, n)
	})
	mux.HandleFunc("GET /healthz", healthzHandler)
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "want ?ms=N", http.StatusBadRequest)
			return
		}
		d := min(time.Duration(ms)*time.Millisecond, time.Minute)
		select {
		case <-time.After(d):
			fmt.Fprintf(w, "slept %v\n", d)
		case <-r.Context().Done():
		}
	})
	return mux
}
