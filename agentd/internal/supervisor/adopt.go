package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Adopt takes over supervision of a running process that a previous agentd
// started (after an upgrade, a restart or a crash of agentd). It is not our
// child, so it is watched through a pidfd: the pidfd becomes readable when
// the process exits, and signals sent through it cannot hit a recycled PID.
// startedAt is the start time recorded for it; a process with that PID but
// another start time is a different process, and Adopt refuses it.
func Adopt(pid int, startedAt time.Time) (*Process, error) {
	pidfd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", pid, err)
	}
	// Checked after the pidfd is open: from here on the PID cannot be
	// reused behind our back.
	if st, err := StartTime(pid); err != nil || !sameStart(st, startedAt) {
		unix.Close(pidfd)
		return nil, fmt.Errorf("adopt pid %d: not the process started at %s", pid, startedAt.Format(time.RFC3339))
	}
	p := &Process{pid: pid, startedAt: startedAt, kernelStart: startedAt, done: make(chan struct{}), adopted: true, pidfd: pidfd}
	f := os.NewFile(uintptr(pidfd), "pidfd:"+strconv.Itoa(pid))
	go p.watchPidfd(f)
	return p, nil
}

// watchPidfd waits in the runtime's poller for the pidfd to become
// readable (the process ended), then kills what the process left in its
// group. The exit status of a process that is not our child cannot be
// known: it is reported as -1.
func (p *Process) watchPidfd(f *os.File) {
	raw, err := f.SyscallConn()
	if err == nil {
		err = raw.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 0)
			return err == nil && n > 0
		})
	}
	if err != nil {
		// No poller for this fd: fall back to a blocking poll.
		for {
			fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
			if n, err := unix.Poll(fds, -1); n > 0 || (err != nil && err != unix.EINTR) {
				break
			}
		}
	}
	unix.Kill(-p.pid, unix.SIGKILL)
	// The pidfd is closed before the OnExit functions run: they may take
	// long, and nothing may signal through it any more.
	p.fdMu.Lock()
	f.Close()
	p.pidfd = -1
	p.fdMu.Unlock()
	p.end(Exit{Code: -1, At: time.Now(), Unknown: true})
}

// signalLeader signals an adopted process through its pidfd.
func (p *Process) signalLeader(sig syscall.Signal) error {
	p.fdMu.Lock()
	defer p.fdMu.Unlock()
	if p.pidfd < 0 {
		return nil
	}
	err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// Adopted reports whether the process was started by another agentd.
func (p *Process) Adopted() bool { return p.adopted }

var (
	btimeOnce sync.Once
	btime     time.Time
	btimeErr  error
)

func bootTime() (time.Time, error) {
	btimeOnce.Do(func() {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			btimeErr = err
			return
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "btime "); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				btime, btimeErr = time.Unix(n, 0), err
				return
			}
		}
		btimeErr = fmt.Errorf("no btime in /proc/stat")
	})
	return btime, btimeErr
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 100

// StartTime reads when pid started, from /proc/PID/stat (clock ticks since
// boot, so precise to 10 ms).
func StartTime(pid int) (time.Time, error) {
	var buf [1024]byte
	b, err := readProc("/proc/"+strconv.Itoa(pid)+"/stat", buf[:])
	if err != nil {
		return time.Time{}, err
	}
	// The command name is in parentheses and may contain spaces: fields
	// are counted after the last ')'. starttime is field 22, the 20th
	// after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return time.Time{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return time.Time{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return time.Time{}, fmt.Errorf("pid %d has exited", pid)
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	bt, err := bootTime()
	if err != nil {
		return time.Time{}, err
	}
	return bt.Add(time.Duration(ticks) * time.Second / clockTick), nil
}

// readProc reads a small file of /proc into buf with plain system calls:
// StartTime is on the way to every process start, and os.ReadFile's
// stat and poller registration cost as much as the read here.
func readProc(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			return buf[:n], nil
		}
		n += m
	}
	return nil, fmt.Errorf("%s: longer than %d bytes", path, len(buf))
}

// sameStart compares a /proc start time with a recorded one. btime has
// whole-second precision, so allow a little more than a second.
func sameStart(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -1500*time.Millisecond && d < 1500*time.Millisecond
}
