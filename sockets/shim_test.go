package sockets

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// shimChildEnv makes the test binary, exec'd by the shim, report what the
// shim's options did to it (see init below).
const shimChildEnv = "SOCKETS_TEST_SHIM_CHILD"

func init() {
	if os.Getenv(shimChildEnv) != "1" || IsShim(os.Args) {
		return
	}
	// no_new_privs, the limits, and shutdown(2) on fds 3 and 4 (the
	// guarded socket, and an unguarded one past the range).
	status, _ := os.ReadFile("/proc/self/status")
	nnp := "?"
	for l := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "NoNewPrivs:"); ok {
			nnp = strings.TrimSpace(v)
		}
	}
	var nofile, core unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
	unix.Getrlimit(unix.RLIMIT_CORE, &core)
	errs := func(fd int, how int) string {
		if err := unix.Shutdown(fd, how); err != nil {
			return err.Error()
		}
		return "ok"
	}
	// The soft nofile limit is not shown: the Go runtime of this child
	// raises it to the hard one at start, as any Go program does.
	fmt.Printf("nnp=%s nofile=%d core=%d:%d fd3rd=%q fd3wr=%q fd4rdwr=%q\n", nnp, nofile.Max, core.Cur, core.Max,
		errs(3, unix.SHUT_RD), errs(3, unix.SHUT_WR), errs(4, unix.SHUT_RDWR))
	os.Exit(0)
}

func TestParseRlimit(t *testing.T) {
	good := map[string]Rlimit{
		"nofile=4096":        {"nofile", 4096, 4096},
		"nproc=512:1024":     {"nproc", 512, 1024},
		"AS=2G":              {"as", 2 << 30, 2 << 30},
		"core=0":             {"core", 0, 0},
		"cpu=infinity":       {"cpu", RlimInfinity, RlimInfinity},
		"stack=8M:unlimited": {"stack", 8 << 20, RlimInfinity},
	}
	for in, want := range good {
		got, err := ParseRlimit(in)
		if err != nil || got != want {
			t.Errorf("ParseRlimit(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"nofile":                  "NAME=SOFT",
		"files=1":                 "unknown resource",
		"nofile=2:1":              "soft limit is above",
		"nofile=1K":               "number",
		"nofile=-1":               "number",
		"as=99999999999T":         "too large",
		"nproc=":                  "number",
		"nproc=1:2:3":             "number",
		"nofile=+5":               "number",
		"as=18446744073709551615": "too large",
	}
	for in, want := range bad {
		if _, err := ParseRlimit(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRlimit(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

func FuzzParseRlimit(f *testing.F) {
	for _, s := range []string{"nofile=4096", "nproc=1:2", "as=1G:infinity", "core=0", "x=", "=", "stack=8m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ParseRlimit(in)
		if err != nil {
			return
		}
		if r.Soft > r.Hard {
			t.Fatalf("%q: soft %d above hard %d", in, r.Soft, r.Hard)
		}
		r2, err := ParseRlimit(r.String())
		if err != nil || r2 != r {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", in, r, r.String(), r2, err)
		}
	})
}

func FuzzShimArgs(f *testing.F) {
	f.Add("--no-new-privs\x00--rlimit=nofile=1:2\x00--guard-fds=2\x00--\x00/bin/true")
	f.Add("--\x00sh\x00-c\x00x")
	f.Add("sh\x00--\x00x")
	f.Fuzz(func(t *testing.T, in string) {
		args := strings.Split(in, "\x00")
		opt, argv, err := parseShimArgs(args)
		if err != nil {
			return
		}
		// What ShimArgvOpts writes, parseShimArgs reads back the same.
		again := ShimArgvOpts("exe", opt, argv)
		opt2, argv2, err := parseShimArgs(again[2:])
		if err != nil || !reflect.DeepEqual(opt, opt2) || !slicesEqual(argv, argv2) {
			t.Fatalf("round trip of %q: %+v %q -> %q -> %+v %q, %v", args, opt, argv, again, opt2, argv2, err)
		}
	})
}

func slicesEqual(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

// TestShimOptions runs a real child through the shim with every option and
// checks what the child sees: no_new_privs, its limits, and shutdown(2)
// refused on the guarded socket but allowed elsewhere.
func TestShimOptions(t *testing.T) {
	if _, _, err := shutdownABI(); err != nil {
		t.Skip("no seccomp guard on", err)
	}
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) { testShimOptions(t, sh.Path) })
	}
}

func testShimOptions(t *testing.T, shim string) {
	guarded, _ := ParseSpec("web=tcp://127.0.0.1:0")
	h, err := Listen(guarded)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	other, err := Listen(guarded)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cur unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &cur)
	opt := ShimOptions{NoNewPrivs: true, GuardFDs: 1, Rlimits: []Rlimit{
		{Name: "nofile", Soft: 100, Hard: min(200, cur.Max)},
		{Name: "core", Soft: 0, Hard: 0},
	}}
	argv := ShimArgvOpts(shim, opt, []string{exe, "-test.run=^$"})
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), shimChildEnv+"=1")
	cmd.Env = append(cmd.Env, Env([]string{"web"})...)
	cmd.ExtraFiles = []*os.File{h.File, other.File}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v (said %q)", err, line)
	}
	// SHUT_WR on a listening socket does nothing, so it is let through.
	want := fmt.Sprintf("nnp=1 nofile=%d core=0:0 fd3rd=%q fd3wr=%q fd4rdwr=%q\n",
		min(200, cur.Max), unix.EPERM.Error(), "ok", "ok")
	if line != want {
		t.Fatalf("child said  %q\nwant        %q", line, want)
	}
	// The guarded socket still listens; the unguarded one was shut down.
	for _, c := range []struct {
		h    *Held
		want int
	}{{h, 1}, {other, 0}} {
		if v, err := unix.GetsockoptInt(Fd(c.h.File), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != c.want {
			t.Errorf("%s: SO_ACCEPTCONN %d, %v; want %d", c.h.Bound(), v, err, c.want)
		}
	}
}

// TestShimBadOption: a shim that cannot apply an option does not run the
// command.
func TestShimBadOption(t *testing.T) {
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) {
			for opt, want := range map[string]string{
				"--rlimit=bogus=1":                     "unknown resource",
				"--rlimit=nofile=2:1":                  "soft limit is above",
				"--rlimit=nofile=x":                    "number",
				"--hold-fd=1":                          "bad --hold-fd",
				"--guard-fds=-1":                       "bad --guard-fds",
				"--no-such-option":                     "unknown option",
				"--rlimit=nofile=1:2:":                 "number",
				"--rlimit=nofile":                      "want NAME=SOFT",
				"--rlimit=nofile=":                     "number",
				"--rlimit=nofile=1:":                   "number",
				"--rlimit=nofile=99999999999999999999": "number",
				"--rlimit=nofile=infinity:1":           "soft limit is above",
				"--guard-fds=65537":                    "bad --guard-fds",
				"--hold-fd=x":                          "bad --hold-fd",
			} {
				argv := []string{sh.Path, ShimArg, opt, "--", "/bin/true"}
				out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 127 || !strings.Contains(string(out), want) {
					t.Errorf("shim with %s: %v, %q; want exit status 127 and %q", opt, err, out, want)
				}
			}
		})
	}
}
