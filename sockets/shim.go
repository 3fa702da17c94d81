package sockets

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ShimOptions are what the exec shim does to itself, after agentd's fork
// dropped to the app's user and before it execs the app: everything here
// is inherited across exec and by every child the app forks.
type ShimOptions struct {
	// NoNewPrivs sets PR_SET_NO_NEW_PRIVS: setuid and setgid bits and file
	// capabilities of anything the app execs grant nothing.
	NoNewPrivs bool
	// Rlimits are set with setrlimit(2), in order.
	Rlimits []Rlimit
	// GuardFDs, when more than 0, installs a seccomp filter that makes
	// shutdown(2) with SHUT_RD or SHUT_RDWR fail with EPERM on fds 3 to
	// 3+GuardFDs-1: the listening sockets shared with agentd and every
	// other release. Shutting down a listening socket stops it listening
	// for every process that holds it, not just the caller (see
	// docs/security.md). Ignored on architectures other than amd64 and
	// arm64. Needs NoNewPrivs (or CAP_SYS_ADMIN).
	GuardFDs int
	// HoldFD, when more than 2, is a pipe the shim reads one byte from,
	// then closes, before anything else: agentd holds the process there
	// until it has placed it (in its release's scope, so that nothing the
	// app forks starts outside) and recorded it in its state. Only the byte
	// lets it exec the app. End of file (agentd died first, or gave it up)
	// makes the shim exit with ExitNotReleased without exec'ing: a held
	// process never hangs, and never runs unrecorded.
	HoldFD int
}

// Rlimit is one resource limit of an app: "NAME=SOFT[:HARD]".
type Rlimit struct {
	Name       string
	Soft, Hard uint64 // RlimInfinity for no limit
}

// RlimInfinity is RLIM_INFINITY: no limit.
const RlimInfinity = math.MaxUint64

// rlimitResources maps the names agentd accepts (systemd's LimitNAME= in
// lower case) to resources, and says which count bytes (which take K, M, G
// and T suffixes).
var rlimitResources = map[string]struct {
	res   int
	bytes bool
}{
	"as":         {unix.RLIMIT_AS, true},
	"core":       {unix.RLIMIT_CORE, true},
	"cpu":        {unix.RLIMIT_CPU, false},
	"data":       {unix.RLIMIT_DATA, true},
	"fsize":      {unix.RLIMIT_FSIZE, true},
	"locks":      {unix.RLIMIT_LOCKS, false},
	"memlock":    {unix.RLIMIT_MEMLOCK, true},
	"msgqueue":   {unix.RLIMIT_MSGQUEUE, true},
	"nice":       {unix.RLIMIT_NICE, false},
	"nofile":     {unix.RLIMIT_NOFILE, false},
	"nproc":      {unix.RLIMIT_NPROC, false},
	"rss":        {unix.RLIMIT_RSS, true},
	"rtprio":     {unix.RLIMIT_RTPRIO, false},
	"rttime":     {unix.RLIMIT_RTTIME, false},
	"sigpending": {unix.RLIMIT_SIGPENDING, false},
	"stack":      {unix.RLIMIT_STACK, true},
}

// RlimitNames lists the resource names ParseRlimit accepts, sorted.
func RlimitNames() []string {
	var out []string
	for n := range rlimitResources {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ParseRlimit parses "NAME=SOFT[:HARD]", e.g. "nofile=4096",
// "nproc=512:1024", "as=2G", "core=0", "cpu=infinity". One value sets both
// limits. Byte-sized resources (as, core, data, fsize, memlock, msgqueue,
// rss, stack) take the suffixes K, M, G and T (powers of 1024).
func ParseRlimit(s string) (Rlimit, error) {
	name, val, ok := strings.Cut(s, "=")
	if !ok {
		return Rlimit{}, fmt.Errorf("limit %q: want NAME=SOFT[:HARD], e.g. nofile=4096", s)
	}
	name = strings.ToLower(strings.TrimSpace(name))
	r, ok := rlimitResources[name]
	if !ok {
		return Rlimit{}, fmt.Errorf("limit %q: unknown resource %q (one of %s)", s, name, strings.Join(RlimitNames(), ", "))
	}
	softS, hardS, two := strings.Cut(val, ":")
	soft, err := parseRlimitValue(softS, r.bytes)
	if err != nil {
		return Rlimit{}, fmt.Errorf("limit %q: %w", s, err)
	}
	hard := soft
	if two {
		if hard, err = parseRlimitValue(hardS, r.bytes); err != nil {
			return Rlimit{}, fmt.Errorf("limit %q: %w", s, err)
		}
	}
	if soft > hard {
		return Rlimit{}, fmt.Errorf("limit %q: the soft limit is above the hard limit", s)
	}
	return Rlimit{Name: name, Soft: soft, Hard: hard}, nil
}

func parseRlimitValue(s string, bytes bool) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "infinity" || s == "unlimited" {
		return RlimInfinity, nil
	}
	mult := uint64(1)
	if bytes && s != "" {
		switch s[len(s)-1] {
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
			s = s[:len(s)-1]
		}
	}
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, fmt.Errorf("want a number or infinity")
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want a number or infinity")
	}
	if v > (RlimInfinity-1)/mult {
		return 0, fmt.Errorf("value too large")
	}
	return v * mult, nil
}

// String renders the limit so that ParseRlimit reads it back.
func (r Rlimit) String() string {
	f := func(v uint64) string {
		if v == RlimInfinity {
			return "infinity"
		}
		return strconv.FormatUint(v, 10)
	}
	return r.Name + "=" + f(r.Soft) + ":" + f(r.Hard)
}

// Shim argv options, between ShimArg and "--".
const (
	optNoNewPrivs = "--no-new-privs"
	optRlimit     = "--rlimit="
	optGuardFDs   = "--guard-fds="
	optHoldFD     = "--hold-fd="
)

// ShimArgvOpts is ShimArgv with options for the shim to apply before exec.
func ShimArgvOpts(exe string, opt ShimOptions, argv []string) []string {
	out := []string{exe, ShimArg}
	if opt.NoNewPrivs {
		out = append(out, optNoNewPrivs)
	}
	for _, r := range opt.Rlimits {
		out = append(out, optRlimit+r.String())
	}
	if opt.GuardFDs > 0 {
		out = append(out, optGuardFDs+strconv.Itoa(opt.GuardFDs))
	}
	if opt.HoldFD > 2 {
		out = append(out, optHoldFD+strconv.Itoa(opt.HoldFD))
	}
	return append(append(out, "--"), argv...)
}

// parseShimArgs splits the shim's arguments (os.Args[2:]) into options and
// the command. Without "--" everything is the command, as an agentd from
// before options passed it.
func parseShimArgs(args []string) (ShimOptions, []string, error) {
	var opt ShimOptions
	end := slices.Index(args, "--")
	if end < 0 {
		return opt, args, nil
	}
	for _, a := range args[:end] {
		switch {
		case a == optNoNewPrivs:
			opt.NoNewPrivs = true
		case strings.HasPrefix(a, optRlimit):
			r, err := ParseRlimit(strings.TrimPrefix(a, optRlimit))
			if err != nil {
				return opt, nil, err
			}
			opt.Rlimits = append(opt.Rlimits, r)
		case strings.HasPrefix(a, optGuardFDs):
			n, err := strconv.Atoi(strings.TrimPrefix(a, optGuardFDs))
			if err != nil || n < 0 || n > 1<<16 {
				return opt, nil, fmt.Errorf("bad %s", a)
			}
			opt.GuardFDs = n
		case strings.HasPrefix(a, optHoldFD):
			n, err := strconv.Atoi(strings.TrimPrefix(a, optHoldFD))
			if err != nil || n < 3 || n > 1<<16 {
				return opt, nil, fmt.Errorf("bad %s", a)
			}
			opt.HoldFD = n
		default:
			return opt, nil, fmt.Errorf("unknown option %q", a)
		}
	}
	return opt, args[end+1:], nil
}

// apply does what opt asks to the calling thread and process. The caller
// must have locked its OS thread and exec from it: no_new_privs and a
// seccomp filter set with prctl(2) belong to the thread, and exec passes
// on the calling thread's.
func (opt ShimOptions) apply() error {
	for _, r := range opt.Rlimits {
		res := rlimitResources[r.Name].res
		// syscall.Setrlimit, not unix's: for RLIMIT_NOFILE it also stops
		// the Go runtime from restoring the soft limit it found at start
		// when it execs.
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: r.Soft, Max: r.Hard}); err != nil {
			return fmt.Errorf("setrlimit %s: %w", r, err)
		}
	}
	if opt.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
		}
	}
	if opt.GuardFDs > 0 {
		if err := guardShutdown(ListenFdsStart, ListenFdsStart+opt.GuardFDs); err != nil {
			return fmt.Errorf("seccomp filter for shutdown(2): %w", err)
		}
	}
	return nil
}

// errGuardUnsupported: no filter for this architecture.
var errGuardUnsupported = errors.New("unsupported architecture")

// shutdownFilter returns the seccomp program: shutdown(fd, how) with
// lo <= fd < hi and how other than SHUT_WR fails with EPERM; every other
// system call is allowed. arch is the AUDIT_ARCH_ value of the running
// kernel ABI and nr the number of shutdown(2) on it.
func shutdownFilter(arch, nr uint32, lo, hi int) []unix.SockFilter {
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
		// struct seccomp_data: int nr; __u32 arch; __u64 ip; __u64 args[6].
		// Both architectures are little-endian: an arg's low half is first.
		offNr   = 0
		offArch = 4
		offArg0 = 16
		offArg1 = 24
	)
	// Jump offsets count the instructions to skip; every "allow" jumps to
	// the last instruction (index 10).
	return []unix.SockFilter{
		/* 0 */ {Code: ldAbs, K: offArch},
		/* 1 */ {Code: jeq, K: arch, Jt: 0, Jf: 8}, // another ABI (x32, i386): allow
		/* 2 */ {Code: ldAbs, K: offNr},
		/* 3 */ {Code: jeq, K: nr, Jt: 0, Jf: 6},
		/* 4 */ {Code: ldAbs, K: offArg0},
		/* 5 */ {Code: jge, K: uint32(lo), Jt: 0, Jf: 4}, // fd < lo: allow
		/* 6 */ {Code: jge, K: uint32(hi), Jt: 3, Jf: 0}, // fd >= hi: allow
		/* 7 */ {Code: ldAbs, K: offArg1},
		/* 8 */ {Code: jeq, K: unix.SHUT_WR, Jt: 1, Jf: 0}, // half-close of writes: allow
		/* 9 */ {Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		/* 10 */ {Code: ret, K: unix.SECCOMP_RET_ALLOW},
	}
}

// shutdownABI is the audit architecture and the number of shutdown(2) of
// the running binary's ABI.
func shutdownABI() (arch, nr uint32, err error) {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, 48, nil
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, 210, nil
	}
	return 0, 0, errGuardUnsupported
}

func guardShutdown(lo, hi int) error {
	arch, nr, err := shutdownABI()
	if err != nil {
		return nil // documented: no guard there
	}
	prog := shutdownFilter(arch, nr, lo, hi)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	err = unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0)
	runtime.KeepAlive(prog)
	return err
}

// ExitNotReleased is the exit status of a held shim whose hold pipe
// reached end of file without agentd's go-ahead byte: agentd died (or gave
// the process up) before it recorded it, so the app is never exec'd and no
// process can run that no state file knows of.
const ExitNotReleased = 125

// ErrNotReleased is hold's error when the pipe closed without the go-ahead.
var ErrNotReleased = errors.New("agentd closed the hold without its go-ahead (it ended before recording this process): not starting the app")

// hold waits for agentd's go-ahead on opt.HoldFD (see waitGoAhead). Without
// it the shim exits here with ExitNotReleased, its own status rather than
// the 127 of a command that could not be run, so that agentd and tests
// tell "never started, as intended" from a failed exec.
func (opt ShimOptions) hold() {
	if err := opt.waitGoAhead(); err != nil {
		fmt.Fprintln(os.Stderr, "agentd: exec shim:", err)
		os.Exit(ExitNotReleased)
	}
}

// waitGoAhead reads agentd's go-ahead byte from opt.HoldFD, then closes it
// so that the app does not inherit it. End of file (agentd died, or gave
// the process up) returns ErrNotReleased.
func (opt ShimOptions) waitGoAhead() error {
	if opt.HoldFD <= 2 {
		return nil
	}
	defer unix.Close(opt.HoldFD)
	var b [1]byte
	for {
		n, err := unix.Read(opt.HoldFD, b[:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("hold pipe: %w", err)
		case n == 0:
			return ErrNotReleased
		}
		return nil
	}
}
