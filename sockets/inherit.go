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
	err = syscall.Exec(path, argv, os.Environ())
	if err == syscall.ENOEXEC {
		// An executable script without "#!": a shell runs it, as bash -c
		// and execvp(3) do, so a direct exec changes nothing for it.
		sh := ShellArgv("")[0]
		err = syscall.Exec(sh, append([]string{sh, path}, argv[1:]...), os.Environ())
	}
	return fmt.Errorf("exec shim: %s: %w", path, err)
}

// ShellArgv returns the argv that runs a Procfile command line. A line
// without shell syntax is split on blanks and exec'd directly, as systemd's
// ExecStart does: no shell between the shim and the app's first
// instruction. Anything a shell would interpret (see [NeedsShell]) runs
// under bash, preferred as on Heroku because it execs a lone simple
// command of "-c" in place (dash forks it), which keeps LISTEN_PID equal to
// the app's PID for "./server --port $PORT". Compound lines should end in
// "exec ./server" (docs/app-contract.md).
func ShellArgv(command string) []string {
	if argv, ok := directArgv(command); ok {
		return argv
	}
	for _, sh := range []string{"/bin/bash", "/usr/bin/bash"} {
		if _, err := os.Stat(sh); err == nil {
			return []string{sh, "-c", command}
		}
	}
	return []string{"/bin/sh", "-c", command}
}

// shellChars are the characters that make a command line need a shell:
// expansions, quoting, redirections, pipes, lists, globs, comments,
// history and brace expansion, and line breaks.
const shellChars = "$;&|<>()\\`*?[]{}~#!'\"\n\r"

// shellWords are bash's builtins and keywords: as a command's first word
// they mean something only bash knows, even where a program of the same
// name exists ("exec", "cd", "ulimit", "source").
var shellWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(". : [ alias bg bind break builtin caller cd command compgen complete compopt " +
		"continue declare dirs disown echo enable eval exec exit export false fc fg getopts hash help history " +
		"jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly return set shift " +
		"shopt source suspend test times trap true type typeset ulimit umask unalias unset wait if then else " +
		"elif fi case esac for select while until do done in function time coproc") {
		shellWords[w] = true
	}
}

// NeedsShell reports whether a Procfile command line needs a shell to
// mean what it says: any of shellChars, a first word that is a shell
// builtin or keyword, or an environment assignment ("A=b ./server").
func NeedsShell(command string) bool {
	_, ok := directArgv(command)
	return !ok
}

func directArgv(command string) ([]string, bool) {
	if strings.ContainsAny(command, shellChars) {
		return nil, false
	}
	argv := strings.FieldsFunc(command, func(r rune) bool { return r == ' ' || r == '\t' })
	if len(argv) == 0 || shellWords[argv[0]] || strings.Contains(argv[0], "=") {
		return nil, false
	}
	return argv, true
}
