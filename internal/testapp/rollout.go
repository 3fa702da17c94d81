package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// Modes and records for the tests of the rollout engine (bake windows,
// surge, stop-first):
//
//	unhealthy-after  GET /healthz answers 500 once $TESTAPP_UNHEALTHY_AFTER
//	                 has passed since the process started
//	exit-after       $TESTAPP_EXIT_AFTER after READY=1, drain as on SIGTERM
//	                 (stop accepting, finish what it holds), then exit 3
//	trigger-after    send WATCHDOG=trigger once $TESTAPP_TRIGGER_AFTER has
//	                 passed since the process started, and go on serving
//
// and, in any mode, $TESTAPP_LIFELOG: a file the process appends
// "start PID UNIXNANO TYPE" and "exit PID UNIXNANO TYPE" lines to, and, with
// $TESTAPP_LOCKFILE, "locked PID" or "conflict PID" after trying a
// non-blocking exclusive lock on that file (held until the process exits).

const exitAfterCode = 3

func init() {
	knownModes["unhealthy-after"] = true
	knownModes["exit-after"] = true
	knownModes["trigger-after"] = true
}

// unhealthyAt is when /healthz turns to 500 (unix nanoseconds; 0: never).
var unhealthyAt atomic.Int64

func healthy() bool {
	at := unhealthyAt.Load()
	return at == 0 || time.Now().UnixNano() < at
}

func healthzHandler(w http.ResponseWriter, r *http.Request) {
	if !healthy() {
		http.Error(w, "unhealthy on purpose", http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "ok")
}

// lifeLog appends one line to $TESTAPP_LIFELOG, if set.
func lifeLog(what string) {
	path := os.Getenv("TESTAPP_LIFELOG")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp: lifelog:", err)
		return
	}
	defer f.Close()
	// One write of one line: O_APPEND keeps lines of many processes whole.
	fmt.Fprintf(f, "%s %d %d %s\n", what, os.Getpid(), time.Now().UnixNano(), os.Getenv("AGENTD_PROCESS"))
}

// rolloutSetup applies the rollout modes at start; the context it returns
// ends at exit-after's moment, with the exit code to use then.
func rolloutSetup(ctx context.Context, modes map[string]bool) (context.Context, func() int, error) {
	lifeLog("start")
	if lf := os.Getenv("TESTAPP_LOCKFILE"); lf != "" {
		f, err := os.OpenFile(lf, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, nil, err
		}
		// Kept open for the life of the process: the lock with it.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			lifeLog("conflict")
		} else {
			lifeLog("locked")
		}
		keepOpen = append(keepOpen, f)
	}
	if modes["unhealthy-after"] {
		d, err := durationEnv("TESTAPP_UNHEALTHY_AFTER")
		if err != nil {
			return nil, nil, err
		}
		unhealthyAt.Store(time.Now().Add(d).UnixNano())
	}
	if modes["trigger-after"] {
		d, err := durationEnv("TESTAPP_TRIGGER_AFTER")
		if err != nil {
			return nil, nil, err
		}
		time.AfterFunc(d, func() { notify("WATCHDOG=trigger") })
	}
	code := func() int { return 0 }
	if modes["exit-after"] {
		d, err := durationEnv("TESTAPP_EXIT_AFTER")
		if err != nil {
			return nil, nil, err
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		var fired atomic.Bool
		time.AfterFunc(d, func() {
			fmt.Fprintln(os.Stderr, "testapp: exit-after: draining, then exiting with status 3")
			fired.Store(true)
			cancel()
		})
		code = func() int {
			if fired.Load() {
				return exitAfterCode
			}
			return 0
		}
	}
	return ctx, code, nil
}

var keepOpen []*os.File
