package steer

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrUnsupported wraps every answer of Supported but nil, and New's errors
// when the kernel or the privileges are the reason.
var ErrUnsupported = errors.New("kernel steering unavailable")

var supported struct {
	once sync.Once
	err  error
}

// Supported reports whether this process can steer: nil, or an error that
// says why not and what to change (it wraps ErrUnsupported). It loads the
// program and its maps once, the real test, and keeps the answer.
func Supported() error {
	supported.once.Do(func() {
		g, err := New("agentd_probe")
		if err != nil {
			supported.err = err
			return
		}
		supported.err = g.Close()
	})
	return supported.err
}

// explain words a failure to create a map or load the program by its cause.
func explain(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		// The errno alone: the library's hint about RLIMIT_MEMLOCK is for
		// kernels before 5.11, which cannot steer anyway.
		errno := unix.EPERM
		if errors.Is(err, unix.EACCES) {
			errno = unix.EACCES
		}
		return fmt.Errorf("%w: needs root (CAP_BPF and CAP_NET_ADMIN): %s: %w", ErrUnsupported, what, errno)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%w: kernel %s has no bpf() (CONFIG_BPF_SYSCALL): %s: %w", ErrUnsupported, release(), what, err)
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.EINVAL):
		// EINVAL is also the verifier refusing the program: on a kernel
		// that has what the program needs that is a bug here, not the
		// kernel's lack, and must not read as "unsupported" (tests would
		// skip instead of failing).
		if !kernelAtLeast(5, 14) {
			return fmt.Errorf("%w: kernel %s lacks BPF_SK_REUSEPORT_SELECT_OR_MIGRATE (needs ≥ 5.14): %s: %w", ErrUnsupported, release(), what, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

func release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "(unknown)"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelAtLeast compares the running kernel's version ("6.18.44-…").
func kernelAtLeast(major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release(), "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
