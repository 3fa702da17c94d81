package sockets

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// ListenFdsStart is the first inherited fd (SD_LISTEN_FDS_START).
const ListenFdsStart = 3

// ShimArg, as argv[1] of agentd, turns agentd into the exec shim: it sets
// LISTEN_PID to its own PID and execs the rest of argv. A Go parent cannot
// set LISTEN_PID itself: os/exec has no hook between fork and exec, and the
// PID is only known after fork. exec keeps the PID, so the app sees its own.
const ShimArg = "__agentd_exec"

// Env returns the activation variables for fds 3.. named names, minus
// LISTEN_PID, which only the shim can know.
func Env(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	return []string{
		"LISTEN_FDS=" + strconv.Itoa(len(names)),
		"LISTEN_FDNAMES=" + strings.Join(names, ":"),
	}
}

// ShimArgv returns the argv that starts argv through the shim in exe.
func ShimArgv(exe string, argv []string) []string {
	return append([]string{exe, ShimArg, "--"}, argv...)
}

// IsShim reports whether args (os.Args) ask for the shim.
func IsShim(args []string) bool {
	return len(args) > 1 && args[1] == ShimArg
}

// RunShim is the shim's whole job, called with os.Args when IsShim is true:
// set LISTEN_PID=getpid() if fds were passed, apply the [ShimOptions] given
// before "--" (see [ShimArgvOpts]), then exec the command. It returns only
// when that fails.
func RunShim(args []string) error {
	opt, argv, err := parseShimArgs(args[2:])
	if err != nil {
		return fmt.Errorf("exec shim: %w", err)
	}
	if len(argv) == 0 {
		return fmt.Errorf("exec shim: no command")
	}
	opt.hold()
	if os.Getenv("LISTEN_FDS") != "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	} else {
		os.Unsetenv("LISTEN_PID")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("exec shim: %w", err)
	}
	// Last, right before exec: limits such as nproc may leave the Go
	// runtime unable to start a thread. no_new_privs and the seccomp filter
	// are the calling thread's: set them on the thread that execs.
	runtime.LockOSThread()
	if err := opt.apply(); err != nil {
		return fmt.Errorf("exec shim: %w", err)
	}
	return fmt.Errorf("exec shim: %s: %w", path, syscall.Exec(path, argv, os.Environ()))
}

// ShellArgv returns the argv that runs a Procfile command line. bash is
// preferred, as on Heroku, because it execs a lone simple command of "-c"
// in place (dash forks it), which keeps LISTEN_PID equal to the app's PID
// for "./server --port $PORT". Compound lines should end in "exec ./server"
// (docs/app-contract.md).
func ShellArgv(command string) []string {
	for _, sh := range []string{"/bin/bash", "/usr/bin/bash"} {
		if _, err := os.Stat(sh); err == nil {
			return []string{sh, "-c", command}
		}
	}
	return []string{"/bin/sh", "-c", command}
}
