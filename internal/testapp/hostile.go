package main

// The hostile modes: releases that misbehave on purpose, for
// internal/e2e/hostile_test.go. Each does one thing a bad release could do
// to agentd or to the release it is meant to replace; the test checks that
// agentd stays responsive, the old release serves throughout, and the
// deploy fails saying what happened.
//
//	hold              keep the inherited sockets open but never accept on
//	                  them (a wedged process; combine with never-ready)
//	close-sockets     close fds 3.. at once, then say READY=1 and idle
//	shutdown-sockets  shutdown(2) each inherited fd (SHUT_RDWR), which
//	                  would stop the socket listening for every process
//	                  that shares it; print the outcome, then hold
//	bind-port         bind 127.0.0.1:$PORT itself; print the error, exit 1
//	notify-flood      send STATUS= and EXTEND_TIMEOUT_USEC=1h to
//	                  $NOTIFY_SOCKET as fast as it can, from 4 goroutines
//	stdout-flood      write about 100 MB/s to stdout for $TESTAPP_FLOOD_FOR
//	                  (default 2s)
//	fork-bomb         ignore SIGTERM, start $TESTAPP_FORKS (default 1000)
//	                  children "sleep 3600" that inherit the ignored
//	                  SIGTERM (their pids go to $TESTAPP_CHILD_PIDFILE, one
//	                  a line, as they start), then exit 1, leaving them
//	                  behind

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// hostileModes are the modes of this file.
var hostileModes = []string{"hold", "close-sockets", "shutdown-sockets", "bind-port", "notify-flood", "stdout-flood", "fork-bomb"}

func init() {
	for _, m := range hostileModes {
		knownModes[m] = true
	}
}

// inheritedFDs lists fds 3.. that LISTEN_FDS announces.
func inheritedFDs() []int {
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	var out []int
	for i := range n {
		out = append(out, 3+i)
	}
	return out
}

// beforeListen does what the hostile modes do before the sockets are
// taken: it may end the process (exit code, true).
func beforeListen(modes map[string]bool) (int, bool) {
	if modes["bind-port"] {
		addr := "127.0.0.1:" + os.Getenv("PORT")
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testapp: bind-port: %v\n", err)
			return 1, true
		}
		fmt.Fprintf(os.Stderr, "testapp: bind-port: bound %s myself\n", addr)
		l.Close()
	}
	if modes["close-sockets"] {
		fds := inheritedFDs()
		for _, fd := range fds {
			syscall.Close(fd)
		}
		fmt.Printf("testapp: close-sockets: closed fds %v\n", fds)
	}
	if modes["shutdown-sockets"] {
		for _, fd := range inheritedFDs() {
			err := syscall.Shutdown(fd, syscall.SHUT_RDWR)
			if err == nil {
				fmt.Printf("testapp: shutdown-sockets: shutdown(%d, SHUT_RDWR) succeeded\n", fd)
			} else {
				fmt.Printf("testapp: shutdown-sockets: shutdown(%d, SHUT_RDWR): %v\n", fd, err)
			}
		}
	}
	if modes["fork-bomb"] {
		// Before the children start, so that they inherit it (exec keeps
		// an ignored signal ignored).
		signal.Ignore(syscall.SIGTERM)
	}
	return 0, false
}

// startHostile starts the floods and the fork bomb, once the sockets are
// taken and before readiness.
func startHostile(modes map[string]bool) error {
	if modes["fork-bomb"] {
		if err := forkBomb(); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "testapp: fork-bomb: exiting, leaving the children behind")
		os.Exit(1)
	}
	if modes["notify-flood"] {
		if err := notifyFlood(); err != nil {
			return err
		}
	}
	if modes["stdout-flood"] {
		d := 2 * time.Second
		if v, err := durationEnv("TESTAPP_FLOOD_FOR"); err == nil && v > 0 {
			d = v
		}
		go stdoutFlood(d)
	}
	return nil
}

func forkBomb() error {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("TESTAPP_FORKS")); err == nil && v > 0 {
		n = v
	}
	pidfile := io.Discard
	if f := os.Getenv("TESTAPP_CHILD_PIDFILE"); f != "" {
		pf, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer pf.Close()
		pidfile = pf
	}
	started := 0
	for i := range n {
		cmd := exec.Command("sleep", "3600")
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "testapp: fork-bomb: child %d: %v\n", i, err)
			break
		}
		started++
		fmt.Fprintln(pidfile, cmd.Process.Pid)
	}
	fmt.Printf("testapp: fork-bomb: forked %d children that ignore SIGTERM\n", started)
	return nil
}

func notifyFlood() error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return fmt.Errorf("notify-flood: no NOTIFY_SOCKET")
	}
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	fmt.Println("testapp: notify-flood: flooding", path)
	for g := range 4 {
		c, err := net.DialUnix("unixgram", nil, addr)
		if err != nil {
			return err
		}
		go func() {
			for i := 0; ; i++ {
				msg := fmt.Sprintf("STATUS=flood %d.%d\nEXTEND_TIMEOUT_USEC=3600000000", g, i)
				if _, err := c.Write([]byte(msg)); err != nil {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	return nil
}

// stdoutFlood writes 1 MiB every 10 ms (about 100 MB/s) for d.
func stdoutFlood(d time.Duration) {
	line := strings.Repeat("x", 99) + "\n"
	chunk := []byte(strings.Repeat(line, (1<<20)/len(line)))
	end := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	written := 0
	for time.Now().Before(end) {
		n, err := os.Stdout.Write(chunk)
		written += n
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp: stdout-flood:", err)
			return
		}
		<-tick.C
	}
	fmt.Printf("testapp: stdout-flood: wrote %d MiB in %s\n", written>>20, d)
}
