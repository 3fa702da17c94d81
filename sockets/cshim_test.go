package sockets

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/internal/shimbuild"
)

// The shim tests run against both shims: agentd re-executed (here the
// test binary, whose TestMain is the shim) and the C agentd-shim that the
// packages install and agentd prefers. Both must behave the same.

// testShims are the shims to run a test against: "go" (the test binary)
// and "c" (agentd-shim, built once; TestMain removes it).
func testShims(t *testing.T) []shimbuild.Shim {
	t.Helper()
	shims, err := shimbuild.Both()
	if err != nil {
		t.Fatal(err)
	}
	return shims
}

// envChildEnv makes the test binary, exec'd by the shim, print what it
// was given (see init below).
const envChildEnv = "SOCKETS_TEST_ENV_CHILD"

// envReport is what such a child prints: its PID, its arguments, and its
// environment exactly as the kernel handed it over (/proc/self/environ:
// order and duplicates kept, which os.Environ would not show).
type envReport struct {
	PID  int
	Args []string
	Env  []string
}

func init() {
	if os.Getenv(envChildEnv) != "1" || IsShim(os.Args) {
		return
	}
	raw, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	if err := json.NewEncoder(os.Stdout).Encode(envReport{os.Getpid(), os.Args[1:], env}); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// TestShimEnvironment runs a real child through the shim with the
// environments it edits, and checks that the child got every variable, in
// order, with LISTEN_PID = its own PID when LISTEN_FDS is set (replaced in
// place, or added last) and without any LISTEN_PID otherwise, and its
// arguments intact. One environment is huge (about a quarter of what the
// kernel takes): the C shim edits the kernel's arrays in place and must
// neither lose a variable nor overflow anything.
func TestShimEnvironment(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "GORACE=") {
			base = append(base, kv)
		}
	}
	// GORACE: a child built with -race would otherwise sleep a second
	// before it exits.
	base = append(base, envChildEnv+"=1", "GORACE=atexit_sleep_ms=0", "LISTEN_PIDX=not-LISTEN_PID", "XLISTEN_PID=neither")
	// The kernel takes argv and envp up to a quarter of the stack limit
	// (at most 6 MiB), pointers included.
	var stack unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &stack); err != nil {
		t.Fatal(err)
	}
	budget := min(stack.Cur/4, 6<<20) / 4
	var huge []string
	for i := 0; uint64(len(huge)*(len("SHIM_HUGE_000000=v")+1+8)) < budget; i++ {
		huge = append(huge, fmt.Sprintf("SHIM_HUGE_%06d=v", i))
	}
	if len(huge) < 10000 {
		t.Fatalf("stack limit %d leaves room for only %d variables", stack.Cur, len(huge))
	}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }
	const pidVar = "LISTEN_PID=<pid>"
	args := []string{"-test.run=^$", "one", "two words", ""}
	for _, c := range []struct {
		name      string
		env, want []string
		noDashes  bool // argv as an agentd from before options passed it
		cOnly     bool // repeats variables, which Go's os.Environ drops
	}{
		{"LISTEN_FDS set: LISTEN_PID added last",
			cat(base, []string{"LISTEN_FDS=1"}), cat(base, []string{"LISTEN_FDS=1", pidVar}), false, false},
		{"LISTEN_FDS set, argv without --: LISTEN_PID added last",
			cat(base, []string{"LISTEN_FDS=1"}), cat(base, []string{"LISTEN_FDS=1", pidVar}), true, false},
		{"LISTEN_FDS set: LISTEN_PID replaced in place",
			cat(base[:1], []string{"LISTEN_PID=1"}, base[1:], []string{"LISTEN_FDS=2"}),
			cat(base[:1], []string{pidVar}, base[1:], []string{"LISTEN_FDS=2"}), false, false},
		{"LISTEN_FDS unset: every LISTEN_PID removed",
			cat([]string{"LISTEN_PID=1"}, base, []string{"LISTEN_PID=2"}), base, false, false},
		{"LISTEN_FDS empty: LISTEN_PID removed",
			cat(base, []string{"LISTEN_PID=1", "LISTEN_FDS="}), cat(base, []string{"LISTEN_FDS="}), true, false},
		{"huge, LISTEN_FDS set: LISTEN_PID added last",
			cat(base, huge, []string{"LISTEN_FDS=1"}), cat(base, huge, []string{"LISTEN_FDS=1", pidVar}), false, false},
		{"huge, LISTEN_FDS set: LISTEN_PID replaced in place",
			cat(base, huge, []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, huge[:1000]),
			cat(base, huge, []string{pidVar, "LISTEN_FDS=1"}, huge[:1000]), false, true},
		{"huge, LISTEN_FDS unset: LISTEN_PID removed",
			cat([]string{"LISTEN_PID=1"}, base, huge), cat(base, huge), true, false},
	} {
		for _, sh := range testShims(t) {
			if c.cOnly && sh.Name != "c" {
				continue
			}
			t.Run(c.name+"/"+sh.Name, func(t *testing.T) {
				argv := ShimArgv(sh.Path, append([]string{exe}, args...))
				if c.noDashes {
					argv = slices.Delete(argv, 2, 3)
				}
				// os.StartProcess, not exec.Cmd, which would drop repeated
				// variables before the shim sees them.
				out, pid, err := runWithEnv(t, argv, c.env)
				if err != nil {
					t.Fatal(err)
				}
				var got envReport
				if err := json.Unmarshal(out, &got); err != nil {
					t.Fatalf("child said %.200q: %v", out, err)
				}
				if got.PID != pid {
					t.Errorf("child PID %d, started %d", got.PID, pid)
				}
				if !slices.Equal(got.Args, args) {
					t.Errorf("child args %q, want %q", got.Args, args)
				}
				want := slices.Clone(c.want)
				if i := slices.Index(want, pidVar); i >= 0 {
					want[i] = "LISTEN_PID=" + strconv.Itoa(pid)
				}
				if !slices.Equal(got.Env, want) {
					t.Errorf("child's environment differs (%d variables, want %d):\n%s",
						len(got.Env), len(want), envDiff(got.Env, want))
				}
			})
		}
	}
}

// envDiff shows where two environments first part, and their ends.
func envDiff(got, want []string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	tail := func(s []string) []string { return s[max(0, len(s)-3):] }
	return fmt.Sprintf("first difference at %d: got %q, want %q\nlast got %q\nlast want %q",
		i, slices.Clone(got[i:min(i+3, len(got))]), slices.Clone(want[i:min(i+3, len(want))]), tail(got), tail(want))
}

// runWithEnv runs argv with exactly env (repeats kept) and returns its
// standard output and PID; an exit status other than 0 is an error with
// its standard error.
func runWithEnv(t *testing.T, argv, env []string) ([]byte, int, error) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outR.Close(); outW.Close(); errR.Close(); errW.Close() })
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Env: env, Files: []*os.File{os.Stdin, outW, errW}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); p.Wait() })
	outW.Close()
	errW.Close()
	stderr := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(errR); stderr <- b }()
	out, err := io.ReadAll(outR)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Success() {
		return out, p.Pid, fmt.Errorf("%v: %s", st, <-stderr)
	}
	return out, p.Pid, nil
}

// TestShimLookPath: the shim finds the command as Go's exec.LookPath does
// (directories, files it may not execute and missing or over-long PATH
// entries skipped; a match relative to the working directory refused), and
// a command it cannot run exits 127 without running anything.
func TestShimLookPath(t *testing.T) {
	dir := t.TempDir()
	mk := func(path, body string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "bin")
	mk(filepath.Join(bin, "prog"), "#!/bin/sh\necho \"ran $0 $*\"\n", 0o755)
	mk(filepath.Join(dir, "noexec", "prog"), "#!/bin/sh\necho noexec\n", 0o644)
	if err := os.MkdirAll(filepath.Join(dir, "isdir", "prog"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A script without "#!", found in $PATH: a shell runs it.
	mk(filepath.Join(bin, "noshebang"), "echo \"sh ran $0 $* listen=$LISTEN_PID\"\n", 0o755)
	long := "/" + strings.Repeat("x", 5000)
	for _, c := range []struct {
		name, path, cwd, cmd string
		env                  []string
		want                 string // the output, or with exit 127 a part of stderr
		fails                bool
	}{
		{"skips what it cannot run", strings.Join([]string{dir + "/noexec", dir + "/isdir", "/nonexistent", long, bin}, ":"), "/", "prog", nil,
			"ran " + bin + "/prog a b\n", false},
		{"script without #! in $PATH, LISTEN_PID replaced", bin, "/", "noshebang", []string{"LISTEN_FDS=1", "LISTEN_PID=1"},
			"sh ran " + bin + "/noshebang a b listen=<pid>\n", false},
		{"script without #! in $PATH, LISTEN_PID added", bin, "/", "noshebang", []string{"LISTEN_FDS=1"},
			"sh ran " + bin + "/noshebang a b listen=<pid>\n", false},
		{"empty PATH", "", "/", "prog", nil, "executable file not found in $PATH", true},
		{"no PATH", "-", "/", "prog", nil, "executable file not found in $PATH", true},
		{"empty entry is the working directory: refused", ":/nonexistent", bin, "prog", nil,
			"cannot run executable found relative to current directory", true},
		{"relative entry: refused", "bin", dir, "prog", nil,
			"cannot run executable found relative to current directory", true},
		{"a path: a directory", bin, "/", dir + "/isdir/prog", nil, "is a directory", true},
		{"a path: missing", bin, "/", dir + "/missing", nil, "no such file or directory", true},
		{"a path: not executable", bin, "/", dir + "/noexec/prog", nil, "permission denied", true},
	} {
		for _, sh := range testShims(t) {
			t.Run(c.name+"/"+sh.Name, func(t *testing.T) {
				argv := ShimArgv(sh.Path, []string{c.cmd, "a", "b"})
				cmd := exec.Command(argv[0], argv[1:]...)
				cmd.Dir = c.cwd
				cmd.Env = c.env
				if c.path != "-" {
					cmd.Env = append(cmd.Env, "PATH="+c.path)
				}
				var stdout, stderr strings.Builder
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				if !c.fails {
					want := strings.ReplaceAll(c.want, "<pid>", strconv.Itoa(cmd.Process.Pid))
					if err != nil || stdout.String() != want {
						t.Fatalf("%v, said %q (stderr %q); want %q", err, stdout.String(), stderr.String(), want)
					}
					return
				}
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 127 || stdout.Len() != 0 ||
					!strings.Contains(strings.ToLower(stderr.String()), strings.ToLower(c.want)) {
					t.Fatalf("%v, stdout %q, stderr %q; want exit status 127 and %q", err, stdout.String(), stderr.String(), c.want)
				}
			})
		}
	}
}

// TestShimFailsBeforeExec: a limit the kernel refuses, or no command,
// exits 127 with a message, and the command never runs (it would have
// created a file).
func TestShimFailsBeforeExec(t *testing.T) {
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) {
			for _, c := range []struct {
				opts []string
				cmd  bool
				want string
			}{
				// Above fs.nr_open: EPERM, even for root.
				{[]string{"--rlimit=nofile=2000000000:2000000000"}, true, "setrlimit nofile=2000000000:2000000000: operation not permitted"},
				{[]string{"--rlimit=nofile=1:1", "--rlimit=nofile=2000000000:2000000000"}, true, "setrlimit nofile=2000000000:2000000000"},
				{nil, false, "no command"},
				{[]string{"--no-new-privs"}, false, "no command"},
			} {
				marker := filepath.Join(t.TempDir(), "ran")
				argv := append(append([]string{sh.Path, ShimArg}, c.opts...), "--")
				if c.cmd {
					argv = append(argv, "/bin/sh", "-c", `: >"$0"`, marker)
				}
				out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 127 || !strings.Contains(strings.ToLower(string(out)), c.want) {
					t.Errorf("%q: %v, %q; want exit status 127 and %q", argv[1:], err, out, c.want)
				}
				if _, err := os.Stat(marker); err == nil {
					t.Errorf("%q: the command ran", argv[1:])
				}
			}
		})
	}
}
