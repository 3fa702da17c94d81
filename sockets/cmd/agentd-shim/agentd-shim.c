/*
 * agentd-shim: agentd's exec shim as a small freestanding C program.
 *
 * It does exactly what sockets.RunShim (sockets/inherit.go, sockets/shim.go)
 * does when agentd re-executes itself as the shim, and reads the same argv
 * (sockets.ShimArgvOpts):
 *
 *   agentd-shim __agentd_exec [--hold-fd=N] [--no-new-privs]
 *       [--rlimit=NAME=SOFT:HARD]... [--guard-fds=N] -- COMMAND [ARG]...
 *
 *   1. the hold: read one byte from the hold pipe, then close it; end of
 *      file (agentd died, or gave the process up, before it recorded it)
 *      exits 125 without exec'ing, so no process runs that no state file
 *      knows of;
 *   2. LISTEN_PID=getpid() when LISTEN_FDS is set (exec keeps the PID),
 *      else LISTEN_PID removed from the environment;
 *   3. find COMMAND in $PATH as Go's exec.LookPath does;
 *   4. setrlimit for each limit in order, PR_SET_NO_NEW_PRIVS, then the
 *      seccomp filter that refuses shutdown(2) (SHUT_RD, SHUT_RDWR) on the
 *      shared listening sockets, fds 3 .. 3+N-1;
 *   5. execve; a script without "#!" (ENOEXEC) runs under bash as bash -c
 *      would have run it.
 *
 * Any failure prints one line and exits 127 (the status of a command that
 * could not be run), as the Go shim does.
 *
 * Why C: a Go binary spends about 1-2 ms of runtime start-up before main
 * on this kind of machine, which the budget (the exec chain within
 * 1 ms of a plain fork+exec) cannot afford.
 *
 * Why freestanding (no libc, its own _start, raw system calls): on these
 * VMs a page fault on fresh memory costs about 20-35 us, so an exec costs
 * roughly by the pages it touches. Static glibc's start-up alone (TLS,
 * IRELATIVE relocations, stdio, its .data and .bss) touched enough of them
 * that the shim cost 1.2-1.7 ms over a direct fork+exec of /bin/true; a
 * -nostdlib program that only execs cost 0.4 ms (posix_spawn, 300 runs
 * each, interleaved). So this program touches as little as it can: no
 * writable data at all (nothing in .data or .bss, one loadable segment),
 * the environment edited in place in the argv/envp arrays the kernel built
 * (see edit_env), and a PATH_MAX buffer on the stack only touched when
 * $PATH is searched. Measured so (400 posix_spawn each, interleaved, load
 * 1.9): direct /bin/true 1.90 ms, 50 minor faults; the glibc shim -> /bin/true
 * 3.18 ms (+1.29), 76 faults; this shim 2.34 ms (+0.45), 54 faults; the
 * bare -nostdlib exec'er 2.29 ms (+0.40), 53 faults. What is left is the
 * cost of a second exec itself.
 *
 * Architectures: x86_64 and aarch64 (the system-call stubs and _start
 * below); both are little-endian, which the seccomp filter relies on.
 * Build: see SHIM_CFLAGS in the Makefile (-nostdlib -static -ffreestanding
 * -fno-stack-protector ...); only kernel UAPI headers are included.
 */
#include <asm/stat.h>
#include <asm/unistd.h>
#include <linux/audit.h>
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/filter.h>
#include <linux/prctl.h>
#include <linux/resource.h>
#include <linux/seccomp.h>
#include <linux/uio.h>
#include <stdarg.h>
#include <stddef.h>

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "agentd-shim: system calls written for x86_64 and aarch64 only"
#endif

#define SHIM_ARG "__agentd_exec"
#define EXIT_NOT_RELEASED 125 /* sockets.ExitNotReleased */
#define EXIT_CANNOT_RUN 127
#define LISTEN_FDS_START 3
#define MAX_RLIMITS 32
#define PATH_BUF 4096 /* PATH_MAX */
#define X_OK 1
#define SHUT_WR 1
#define S_IFMT_ 0170000
#define S_IFDIR_ 0040000

/* ---- System calls: return the result, or -errno (-4095 .. -1). ---- */

#if defined(__x86_64__)
static inline long sys5(long n, long a, long b, long c, long d, long e) {
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	long r;
	__asm__ volatile("syscall"
	                 : "=a"(r)
	                 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
	                 : "rcx", "r11", "memory");
	return r;
}
/* The kernel enters with the stack pointer at argc (argv, envp and auxv
 * above it); the ABI wants it 16-byte aligned at a call. */
__asm__(".text\n"
        ".globl _start\n"
        ".type _start,@function\n"
        "_start:\n"
        "	xor %ebp,%ebp\n"
        "	mov %rsp,%rdi\n"
        "	and $-16,%rsp\n"
        "	call shim_main\n"
        "	hlt\n");
#elif defined(__aarch64__)
static inline long sys5(long n, long a, long b, long c, long d, long e) {
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4) : "memory");
	return x0;
}
/* sp is 16-byte aligned at entry, pointing at argc. */
__asm__(".text\n"
        ".globl _start\n"
        ".type _start,%function\n"
        "_start:\n"
        "	mov x29, #0\n"
        "	mov x30, #0\n"
        "	mov x0, sp\n"
        "	bl shim_main\n"
        "	brk #0\n");
#endif

#define sys0(n) sys5(n, 0, 0, 0, 0, 0)
#define sys1(n, a) sys5(n, (long)(a), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys5(n, (long)(a), (long)(b), (long)(c), 0, 0)
#define sys4(n, a, b, c, d) sys5(n, (long)(a), (long)(b), (long)(c), (long)(d), 0)

__attribute__((noreturn)) static void exit_now(int code) {
	for (;;) sys1(__NR_exit_group, code);
}

/* ---- What the compiler may call even in a freestanding program. ---- */

/* GCC and clang may emit calls to memcpy, memmove, memset and memcmp for
 * copies and initialisers; their own loops must not become such calls. */
#if defined(__clang__)
#define NO_LOOP_TO_CALL __attribute__((no_builtin))
#else
#define NO_LOOP_TO_CALL __attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif

NO_LOOP_TO_CALL void *memcpy(void *d, const void *s, size_t n) {
	unsigned char *dp = d;
	const unsigned char *sp = s;
	while (n--) *dp++ = *sp++;
	return d;
}

NO_LOOP_TO_CALL void *memmove(void *d, const void *s, size_t n) {
	unsigned char *dp = d;
	const unsigned char *sp = s;
	if (dp < sp) {
		while (n--) *dp++ = *sp++;
	} else {
		while (n--) dp[n] = sp[n];
	}
	return d;
}

NO_LOOP_TO_CALL void *memset(void *d, int c, size_t n) {
	unsigned char *dp = d;
	while (n--) *dp++ = (unsigned char)c;
	return d;
}

NO_LOOP_TO_CALL int memcmp(const void *a, const void *b, size_t n) {
	const unsigned char *ap = a, *bp = b;
	for (; n; n--, ap++, bp++) {
		if (*ap != *bp) return *ap - *bp;
	}
	return 0;
}

/* ---- Strings. ---- */

NO_LOOP_TO_CALL static size_t slen(const char *s) {
	size_t n = 0;
	while (s[n]) n++;
	return n;
}

static int streq(const char *a, const char *b) {
	while (*a && *a == *b) a++, b++;
	return *a == *b;
}

/* prefix returns the rest of s after p, or NULL when s does not start
 * with p. */
static const char *prefix(const char *s, const char *p) {
	while (*p) {
		if (*s++ != *p++) return NULL;
	}
	return s;
}

static const char *find(const char *s, char c) {
	for (; *s; s++) {
		if (*s == c) return s;
	}
	return NULL;
}

/* utoa writes v in decimal ending at end (exclusive) and returns its
 * start. */
static char *utoa(unsigned long v, char *end) {
	char *p = end;
	do *--p = (char)('0' + v % 10);
	while (v /= 10);
	return p;
}

/* errstr is glibc's strerror for the errors these system calls return,
 * so that messages read as they did when the shim used glibc. */
static const char *errstr(long e, char buf[32]) {
	switch (e) {
	case EPERM: return "Operation not permitted";
	case ENOENT: return "No such file or directory";
	case EINTR: return "Interrupted system call";
	case EIO: return "Input/output error";
	case E2BIG: return "Argument list too long";
	case ENOEXEC: return "Exec format error";
	case EBADF: return "Bad file descriptor";
	case EAGAIN: return "Resource temporarily unavailable";
	case ENOMEM: return "Cannot allocate memory";
	case EACCES: return "Permission denied";
	case EFAULT: return "Bad address";
	case EBUSY: return "Device or resource busy";
	case ENOTDIR: return "Not a directory";
	case EISDIR: return "Is a directory";
	case EINVAL: return "Invalid argument";
	case ENFILE: return "Too many open files in system";
	case EMFILE: return "Too many open files";
	case ETXTBSY: return "Text file busy";
	case EROFS: return "Read-only file system";
	case ENAMETOOLONG: return "File name too long";
	case ENOSYS: return "Function not implemented";
	case ELOOP: return "Too many levels of symbolic links";
	case EOVERFLOW: return "Value too large for defined data type";
	case ELIBBAD: return "Accessing a corrupted shared library";
	case ENXIO: return "No such device or address";
	case ENODEV: return "No such device";
	case ESTALE: return "Stale file handle";
	case EUCLEAN: return "Structure needs cleaning";
	}
	const char *u = "Unknown error ";
	char *p = buf;
	while (*u) *p++ = *u++;
	char num[24];
	char *q = utoa((unsigned long)(e < 0 ? -e : e), num + sizeof num);
	if (e < 0) *p++ = '-';
	while (q < num + sizeof num) *p++ = *q++;
	*p = 0;
	return buf;
}

/* ---- Messages: one line on stderr, then exit. ---- */

/* fail writes its NULL-terminated list of strings to stderr with one
 * writev (a partial write goes on with the rest), then exits with code. */
__attribute__((noreturn)) static void fail(int code, const char *s, ...) {
	struct iovec iov[12];
	int n = 0;
	va_list ap;
	va_start(ap, s);
	for (; s && n < 12; s = va_arg(ap, const char *)) {
		iov[n].iov_base = (void *)s;
		iov[n].iov_len = slen(s);
		n++;
	}
	va_end(ap);
	struct iovec *v = iov;
	while (n > 0) {
		long w = sys3(__NR_writev, 2, v, n);
		if (w == -EINTR) continue;
		if (w < 0) break;
		while (n > 0 && (size_t)w >= v->iov_len) {
			w -= (long)v->iov_len;
			v++;
			n--;
		}
		if (n > 0) {
			v->iov_base = (char *)v->iov_base + w;
			v->iov_len -= (size_t)w;
		}
	}
	exit_now(code);
}

/* die prints "agentd-shim: exec shim: " and its strings (at most nine),
 * and exits 127. */
#define die(...) fail(EXIT_CANNOT_RUN, "agentd-shim: exec shim: ", __VA_ARGS__, "\n", (const char *)NULL)

/* ---- Limits. ---- */

/* The names agentd passes (sockets.rlimitResources). */
static const struct {
	char name[12];
	int res;
} resources[] = {
	{"as", RLIMIT_AS},         {"core", RLIMIT_CORE},       {"cpu", RLIMIT_CPU},
	{"data", RLIMIT_DATA},     {"fsize", RLIMIT_FSIZE},     {"locks", RLIMIT_LOCKS},
	{"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
	{"nofile", RLIMIT_NOFILE}, {"nproc", RLIMIT_NPROC},     {"rss", RLIMIT_RSS},
	{"rtprio", RLIMIT_RTPRIO}, {"rttime", RLIMIT_RTTIME},   {"sigpending", RLIMIT_SIGPENDING},
	{"stack", RLIMIT_STACK},
};

struct limit {
	int res;
	const char *spec;
	struct rlimit64 rl;
};

/* parse_value reads a whole decimal number, "infinity" or "unlimited"
 * (Rlimit.String writes numbers and "infinity") from s up to end. */
static int parse_value(const char *s, const char *end, unsigned long long *out) {
	size_t n = (size_t)(end - s);
	if ((n == 8 && memcmp(s, "infinity", 8) == 0) || (n == 9 && memcmp(s, "unlimited", 9) == 0)) {
		*out = RLIM64_INFINITY;
		return 0;
	}
	if (n == 0 || n > 20) return -1;
	unsigned long long v = 0;
	for (const char *p = s; p < end; p++) {
		if (*p < '0' || *p > '9') return -1;
		unsigned d = (unsigned)(*p - '0');
		if (v > (~0ULL - d) / 10) return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* parse_rlimit reads NAME=SOFT:HARD or NAME=VALUE. */
static void parse_rlimit(const char *spec, struct limit *l) {
	l->spec = spec;
	const char *eq = find(spec, '=');
	if (!eq) die("limit \"", spec, "\": want NAME=SOFT[:HARD]");
	size_t nl = (size_t)(eq - spec);
	l->res = -1;
	for (size_t i = 0; i < sizeof resources / sizeof resources[0]; i++) {
		if (slen(resources[i].name) == nl && memcmp(resources[i].name, spec, nl) == 0) {
			l->res = resources[i].res;
		}
	}
	if (l->res < 0) die("limit \"", spec, "\": unknown resource");
	const char *val = eq + 1, *end = val + slen(val);
	const char *colon = find(val, ':');
	if (parse_value(val, colon ? colon : end, &l->rl.rlim_cur) != 0 ||
	    (colon && parse_value(colon + 1, end, &l->rl.rlim_max) != 0)) {
		die("limit \"", spec, "\": want a number or infinity");
	}
	if (!colon) l->rl.rlim_max = l->rl.rlim_cur;
	if (l->rl.rlim_cur > l->rl.rlim_max) die("limit \"", spec, "\": the soft limit is above the hard limit");
}

static int parse_fd(const char *s, int lo) {
	unsigned long long v;
	if (parse_value(s, s + slen(s), &v) != 0 || v == RLIM64_INFINITY || v < (unsigned long long)lo || v > (1 << 16)) {
		return -1;
	}
	return (int)v;
}

/* ---- The shutdown(2) guard. ---- */

/* The seccomp program of sockets.shutdownFilter: shutdown(fd, how) with
 * lo <= fd < hi and how other than SHUT_WR fails with EPERM. Another ABI
 * of the same kernel (x32, i386 on amd64) is let through, as in Go. */
static long guard_shutdown(int lo, int hi) {
#if defined(__x86_64__)
	const unsigned arch = AUDIT_ARCH_X86_64;
#else
	const unsigned arch = AUDIT_ARCH_AARCH64;
#endif
	/* struct seccomp_data: int nr; __u32 arch; __u64 ip; __u64 args[6].
	 * Both architectures are little-endian: an arg's low half is first. */
	struct sock_filter prog[] = {
		/* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4),
		/* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, 8),
		/* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
		/* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_shutdown, 0, 6),
		/* 4 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 16),
		/* 5 */ BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, (unsigned)lo, 0, 4),
		/* 6 */ BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, (unsigned)hi, 3, 0),
		/* 7 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 24),
		/* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SHUT_WR, 1, 0),
		/* 9 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		/* 10 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog fprog = {.len = sizeof prog / sizeof prog[0], .filter = prog};
	return sys5(__NR_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, (long)&fprog, 0, 0);
}

/* ---- exec.LookPath. ---- */

/* eaccess is faccessat(path, X_OK, AT_EACCESS): with the effective ids,
 * as Go's findExecutable asks. faccessat2 came in Linux 5.8; without it
 * (ENOSYS, or EPERM from a container's seccomp profile) plain faccessat,
 * with the real ids, as glibc falls back (the shim runs with real and
 * effective ids alike: agentd's fork sets both). */
static long eaccess(const char *path) {
	long r = sys4(__NR_faccessat2, AT_FDCWD, path, X_OK, AT_EACCESS);
	if (r == -ENOSYS || r == -EPERM) r = sys3(__NR_faccessat, AT_FDCWD, path, X_OK);
	return r;
}

/* executable is Go's findExecutable: a file, not a directory, that we may
 * execute. It returns 0 or -errno. */
static long executable(const char *path) {
	struct stat st;
	long r = sys4(__NR_newfstatat, AT_FDCWD, path, &st, 0);
	if (r < 0) return r;
	if ((st.st_mode & S_IFMT_) == S_IFDIR_) return -EISDIR;
	return eaccess(path);
}

/* env returns the value of the first name=value in envp, as getenv(3). */
static const char *env(char **envp, const char *name) {
	for (; *envp; envp++) {
		const char *v = prefix(*envp, name);
		if (v && *v == '=') return v + 1;
	}
	return NULL;
}

/* look_path is Go's exec.LookPath: a name with a slash is used as it is;
 * otherwise the first executable match in $PATH (built in buf), and a
 * match relative to the working directory is refused (Go's ErrDot). */
static const char *look_path(const char *file, char **envp, char buf[PATH_BUF]) {
	char eb[32];
	if (find(file, '/')) {
		long r = executable(file);
		if (r != 0) die(file, ": ", errstr(-r, eb));
		return file;
	}
	const char *path = env(envp, "PATH");
	if (path && *path) {
		size_t fl = slen(file);
		for (const char *p = path;;) {
			const char *colon = find(p, ':');
			size_t n = colon ? (size_t)(colon - p) : slen(p);
			const char *dir = n ? p : ".";
			size_t dn = n ? n : 1;
			if (dn + 1 + fl < PATH_BUF) {
				memcpy(buf, dir, dn);
				buf[dn] = '/';
				memcpy(buf + dn + 1, file, fl + 1);
				if (executable(buf) == 0) {
					if (buf[0] != '/') {
						die(file, ": cannot run executable found relative to current directory (", buf, ")");
					}
					return buf;
				}
			}
			if (!colon) break;
			p = colon + 1;
		}
	}
	die("exec: \"", file, "\": executable file not found in $PATH");
}

/* ---- The environment. ---- */

/* edit_env sets LISTEN_PID=pid (kept in pidvar) when LISTEN_FDS is set and
 * not empty, else removes every LISTEN_PID, as setenv(3) and unsetenv(3)
 * did, and returns the environment to exec with.
 *
 * It edits the arrays the kernel built on the stack, in place, so an
 * environment of any size needs no memory of its own: removing compacts
 * envp; replacing swaps the first LISTEN_PID's pointer; adding (appended
 * last, as setenv does) needs one more slot, which it takes from argv:
 * the command (argv[*cmd] .. argv[*argc-1], and its NULL) moves down one
 * slot over the shim's own "--" or "__agentd_exec", which frees argv's
 * terminating NULL, the slot just before envp[0], and envp moves down
 * into it. */
static char **edit_env(char **argv, long *argc, long *cmd, char **envp, char *pidvar) {
	const char *fds = env(envp, "LISTEN_FDS");
	if (!(fds && *fds)) {
		char **w = envp;
		for (char **r = envp; *r; r++) {
			const char *v = prefix(*r, "LISTEN_PID");
			if (!(v && *v == '=')) *w++ = *r;
		}
		*w = NULL;
		return envp;
	}
	size_t n = 0;
	for (; envp[n]; n++) {
		const char *v = prefix(envp[n], "LISTEN_PID");
		if (v && *v == '=') {
			envp[n] = pidvar;
			return envp;
		}
	}
	/* *cmd >= 2: argv[0] and argv[1] (__agentd_exec) come first. */
	for (long i = *cmd; i <= *argc; i++) argv[i - 1] = argv[i];
	(*cmd)--;
	(*argc)--;
	char **out = envp - 1; /* == &argv[old argc], free now */
	for (size_t i = 0; i < n; i++) out[i] = envp[i];
	out[n] = pidvar;
	out[n + 1] = NULL; /* envp[n]: it was NULL already */
	return out;
}

/* ---- main. ---- */

__attribute__((noreturn, used)) void shim_main(long *sp);

__attribute__((noreturn, used)) void shim_main(long *sp) {
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	char eb[32];

	if (argc < 2 || !streq(argv[1], SHIM_ARG)) {
		fail(2, "agentd-shim: run by agentd only (", argc > 0 ? argv[0] : "(null)", " " SHIM_ARG " -- COMMAND...)\n",
		     (const char *)NULL);
	}
	/* Options up to "--"; without "--" everything is the command, as an
	 * agentd from before options passed it. */
	long cmd = 2;
	for (long i = 2; i < argc; i++) {
		if (streq(argv[i], "--")) {
			cmd = i + 1;
			break;
		}
	}
	int nnp = 0, guard = 0, hold = -1, nlimits = 0;
	struct limit limits[MAX_RLIMITS];
	for (long i = 2; i < cmd - 1; i++) {
		const char *a = argv[i], *v;
		if (streq(a, "--no-new-privs")) {
			nnp = 1;
		} else if ((v = prefix(a, "--rlimit="))) {
			if (nlimits == MAX_RLIMITS) die("too many limits");
			parse_rlimit(v, &limits[nlimits++]);
		} else if ((v = prefix(a, "--guard-fds="))) {
			if ((guard = parse_fd(v, 0)) < 0) die("bad ", a);
		} else if ((v = prefix(a, "--hold-fd="))) {
			if ((hold = parse_fd(v, 3)) < 0) die("bad ", a);
		} else {
			die("unknown option \"", a, "\"");
		}
	}
	if (cmd >= argc) die("no command");

	/* 1. The hold, before anything else. */
	if (hold >= 0) {
		char b;
		long n;
		while ((n = sys3(__NR_read, hold, &b, 1)) == -EINTR) {
		}
		if (n < 0) die("hold pipe: ", errstr(-n, eb));
		if (n == 0) {
			fail(EXIT_NOT_RELEASED,
			     "agentd-shim: exec shim: agentd closed the hold without its go-ahead "
			     "(it ended before recording this process): not starting the app\n",
			     (const char *)NULL);
		}
		sys1(__NR_close, hold);
	}

	/* 2. LISTEN_PID: only this process knows it. */
	char pidvar[sizeof "LISTEN_PID=" + 20];
	{
		char num[20];
		char *d = utoa((unsigned long)sys0(__NR_getpid), num + sizeof num);
		char *p = pidvar;
		for (const char *s = "LISTEN_PID="; *s;) *p++ = *s++;
		while (d < num + sizeof num) *p++ = *d++;
		*p = 0;
	}
	envp = edit_env(argv, &argc, &cmd, envp, pidvar);

	/* 3. */
	char buf[PATH_BUF];
	const char *path = look_path(argv[cmd], envp, buf);

	/* 4. Last, right before exec: a limit such as nproc or as must not
	 * stop the shim itself. */
	for (int i = 0; i < nlimits; i++) {
		long r = sys4(__NR_prlimit64, 0, limits[i].res, &limits[i].rl, NULL);
		if (r != 0) die("setrlimit ", limits[i].spec, ": ", errstr(-r, eb));
	}
	if (nnp) {
		long r = sys5(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		if (r != 0) die("prctl(PR_SET_NO_NEW_PRIVS): ", errstr(-r, eb));
	}
	if (guard > 0) {
		long r = guard_shutdown(LISTEN_FDS_START, LISTEN_FDS_START + guard);
		if (r != 0) die("seccomp filter for shutdown(2): ", errstr(-r, eb));
	}

	/* 5. */
	long r = sys3(__NR_execve, path, argv + cmd, envp);
	if (r == -ENOEXEC) {
		/* A script without "#!": a shell runs it, as bash -c and
		 * execvp(3) do, so a direct exec changes nothing for it. Its
		 * argv is bash, path, then the command's arguments: built in
		 * place from the slot before the command (the shim's own "--"
		 * or "__agentd_exec", or argv[0] when edit_env moved it). */
		const char *bash = sys3(__NR_faccessat, AT_FDCWD, "/bin/bash", X_OK) == 0       ? "/bin/bash"
		                   : sys3(__NR_faccessat, AT_FDCWD, "/usr/bin/bash", X_OK) == 0 ? "/usr/bin/bash"
		                                                                                 : "/bin/sh";
		char **sh = argv + cmd - 1;
		sh[0] = (char *)bash;
		sh[1] = (char *)path;
		r = sys3(__NR_execve, bash, sh, envp);
	}
	die(path, ": ", errstr(-r, eb));
}
