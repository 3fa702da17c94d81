/*
 * agentd-shim: agentd's exec shim as a small static C program.
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
 *   2. LISTEN_PID=getpid() when LISTEN_FDS is set (exec keeps the PID);
 *   3. find COMMAND in $PATH as Go's exec.LookPath does;
 *   4. setrlimit for each limit in order, PR_SET_NO_NEW_PRIVS, then the
 *      seccomp filter that refuses shutdown(2) (SHUT_RD, SHUT_RDWR) on the
 *      shared listening sockets, fds 3 .. 3+N-1;
 *   5. execve; a script without "#!" (ENOEXEC) runs under bash as bash -c
 *      would have run it.
 *
 * Why C: a Go binary spends about 1-2 ms of runtime start-up before main
 * on this kind of machine, which the budget (the exec chain within
 * 1 ms of a plain fork+exec) cannot afford. Built with -static: no dynamic
 * loader, no shared library to map, nothing between execve and main but
 * libc's own start. Any failure prints one line and exits 127 (the status
 * of a command that could not be run), as the Go shim does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SHIM_ARG "__agentd_exec"
#define EXIT_NOT_RELEASED 125 /* sockets.ExitNotReleased */
#define EXIT_CANNOT_RUN 127
#define LISTEN_FDS_START 3
#define MAX_RLIMITS 32

extern char **environ;

static void die(const char *fmt, const char *a, const char *b) {
	fprintf(stderr, "agentd-shim: exec shim: ");
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(EXIT_CANNOT_RUN);
}

/* The names agentd passes (sockets.rlimitResources). */
static const struct {
	const char *name;
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
	struct rlimit rl;
};

/* parse_uint reads a whole decimal number, "infinity" or "unlimited"
 * (Rlimit.String writes numbers and "infinity"). */
static int parse_value(const char *s, const char *end, rlim_t *out) {
	size_t n = (size_t)(end - s);
	if ((n == 8 && strncmp(s, "infinity", 8) == 0) || (n == 9 && strncmp(s, "unlimited", 9) == 0)) {
		*out = RLIM_INFINITY;
		return 0;
	}
	if (n == 0 || n > 20) return -1;
	unsigned long long v = 0;
	for (const char *p = s; p < end; p++) {
		if (*p < '0' || *p > '9') return -1;
		unsigned d = (unsigned)(*p - '0');
		if (v > (ULLONG_MAX - d) / 10) return -1;
		v = v * 10 + d;
	}
	*out = (rlim_t)v;
	return 0;
}

/* parse_rlimit reads NAME=SOFT:HARD or NAME=VALUE. */
static void parse_rlimit(const char *spec, struct limit *l) {
	l->spec = spec;
	const char *eq = strchr(spec, '=');
	if (!eq) die("limit \"%s\": want NAME=SOFT[:HARD]%s", spec, "");
	size_t nl = (size_t)(eq - spec);
	l->res = -1;
	for (size_t i = 0; i < sizeof resources / sizeof resources[0]; i++) {
		if (strlen(resources[i].name) == nl && strncmp(resources[i].name, spec, nl) == 0) {
			l->res = resources[i].res;
		}
	}
	if (l->res < 0) die("limit \"%s\": unknown resource%s", spec, "");
	const char *val = eq + 1, *end = val + strlen(val);
	const char *colon = strchr(val, ':');
	if (parse_value(val, colon ? colon : end, &l->rl.rlim_cur) != 0 ||
	    (colon && parse_value(colon + 1, end, &l->rl.rlim_max) != 0)) {
		die("limit \"%s\": want a number or infinity%s", spec, "");
	}
	if (!colon) l->rl.rlim_max = l->rl.rlim_cur;
	if (l->rl.rlim_cur > l->rl.rlim_max) die("limit \"%s\": the soft limit is above the hard limit%s", spec, "");
}

static int parse_fd(const char *s, int lo) {
	rlim_t v;
	if (parse_value(s, s + strlen(s), &v) != 0 || v == RLIM_INFINITY || v < (rlim_t)lo || v > (1 << 16)) return -1;
	return (int)v;
}

/* The seccomp program of sockets.shutdownFilter: shutdown(fd, how) with
 * lo <= fd < hi and how other than SHUT_WR fails with EPERM. Another ABI
 * of the same kernel (x32, i386 on amd64) is let through, as in Go. */
static int guard_shutdown(int lo, int hi) {
#if defined(__x86_64__)
	const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
	const unsigned arch = AUDIT_ARCH_AARCH64;
#else
	(void)lo;
	(void)hi;
	return 0; /* documented: no guard on other architectures */
#endif
#if defined(__x86_64__) || defined(__aarch64__)
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
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
#endif
}

/* executable is Go's findExecutable: a file, not a directory, that we may
 * execute. */
static int executable(const char *path) {
	struct stat st;
	if (stat(path, &st) != 0) return -1;
	if (S_ISDIR(st.st_mode)) {
		errno = EISDIR;
		return -1;
	}
	return faccessat(AT_FDCWD, path, X_OK, AT_EACCESS);
}

/* look_path is Go's exec.LookPath: a name with a slash is used as it is;
 * otherwise the first executable match in $PATH, and a match relative to
 * the working directory is refused (Go's ErrDot). */
static const char *look_path(const char *file) {
	if (strchr(file, '/')) {
		if (executable(file) != 0) die("%s: %s", file, strerror(errno));
		return file;
	}
	const char *path = getenv("PATH");
	if (path && *path) {
		static char buf[PATH_MAX];
		for (const char *p = path;;) {
			const char *colon = strchr(p, ':');
			size_t n = colon ? (size_t)(colon - p) : strlen(p);
			const char *dir = n ? p : ".";
			size_t dn = n ? n : 1;
			if (dn + 1 + strlen(file) < sizeof buf) {
				memcpy(buf, dir, dn);
				buf[dn] = '/';
				strcpy(buf + dn + 1, file);
				if (executable(buf) == 0) {
					if (buf[0] != '/') {
						die("%s: cannot run executable found relative to current directory (%s)", file, buf);
					}
					return buf;
				}
			}
			if (!colon) break;
			p = colon + 1;
		}
	}
	die("exec: \"%s\": executable file not found in $PATH%s", file, "");
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], SHIM_ARG) != 0) {
		fprintf(stderr, "agentd-shim: run by agentd only (%s %s -- COMMAND...)\n", argv[0], SHIM_ARG);
		return 2;
	}
	/* Options up to "--"; without "--" everything is the command, as an
	 * agentd from before options passed it. */
	int cmd = 2;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			cmd = i + 1;
			break;
		}
	}
	int nnp = 0, guard = 0, hold = -1, nlimits = 0;
	struct limit limits[MAX_RLIMITS];
	for (int i = 2; i < cmd - 1; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--no-new-privs") == 0) {
			nnp = 1;
		} else if (strncmp(a, "--rlimit=", 9) == 0) {
			if (nlimits == MAX_RLIMITS) die("too many limits%s%s", "", "");
			parse_rlimit(a + 9, &limits[nlimits++]);
		} else if (strncmp(a, "--guard-fds=", 12) == 0) {
			if ((guard = parse_fd(a + 12, 0)) < 0) die("bad %s%s", a, "");
		} else if (strncmp(a, "--hold-fd=", 10) == 0) {
			if ((hold = parse_fd(a + 10, 3)) < 0) die("bad %s%s", a, "");
		} else {
			die("unknown option \"%s\"%s", a, "");
		}
	}
	if (cmd >= argc) die("no command%s%s", "", "");

	/* 1. The hold, before anything else. */
	if (hold >= 0) {
		char b;
		ssize_t n;
		while ((n = read(hold, &b, 1)) < 0 && errno == EINTR) {
		}
		if (n < 0) die("hold pipe: %s%s", strerror(errno), "");
		if (n == 0) {
			fprintf(stderr, "agentd-shim: exec shim: agentd closed the hold without its go-ahead "
			                "(it ended before recording this process): not starting the app\n");
			return EXIT_NOT_RELEASED;
		}
		close(hold);
	}

	/* 2. LISTEN_PID: only this process knows it. */
	const char *fds = getenv("LISTEN_FDS");
	if (fds && *fds) {
		char pid[24];
		snprintf(pid, sizeof pid, "%ld", (long)getpid());
		setenv("LISTEN_PID", pid, 1);
	} else {
		unsetenv("LISTEN_PID");
	}

	/* 3. */
	const char *path = look_path(argv[cmd]);

	/* 4. Last, right before exec: a limit such as nproc or as must not
	 * stop the shim itself. */
	for (int i = 0; i < nlimits; i++) {
		if (setrlimit(limits[i].res, &limits[i].rl) != 0) die("setrlimit %s: %s", limits[i].spec, strerror(errno));
	}
	if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("prctl(PR_SET_NO_NEW_PRIVS): %s%s", strerror(errno), "");
	if (guard > 0 && guard_shutdown(LISTEN_FDS_START, LISTEN_FDS_START + guard) != 0) {
		die("seccomp filter for shutdown(2): %s%s", strerror(errno), "");
	}

	/* 5. */
	execve(path, argv + cmd, environ);
	if (errno == ENOEXEC) {
		/* A script without "#!": a shell runs it, as bash -c and
		 * execvp(3) do, so a direct exec changes nothing for it. */
		int n = argc - cmd;
		char **sh = calloc((size_t)n + 2, sizeof *sh);
		if (!sh) die("out of memory%s%s", "", "");
		const char *bash = access("/bin/bash", X_OK) == 0 ? "/bin/bash" : access("/usr/bin/bash", X_OK) == 0 ? "/usr/bin/bash" : "/bin/sh";
		sh[0] = (char *)bash;
		sh[1] = (char *)path;
		for (int i = 1; i < n; i++) sh[i + 1] = argv[cmd + i];
		execve(bash, sh, environ);
	}
	die("%s: %s", path, strerror(errno));
	return EXIT_CANNOT_RUN;
}
