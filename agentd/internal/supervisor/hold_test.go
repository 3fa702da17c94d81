package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/sockets"
)

// touchArgv is an app whose whole effect is creating marker: had it run,
// the file exists.
func touchArgv(marker string) []string { return []string{"/bin/sh", "-c", `touch "$0"`, marker} }

// holderMain is a stand-in agentd (SUPERVISOR_CHILD=holder): it starts a
// held process that would create $HOLD_MARKER, says its PID, and waits to
// be killed without ever releasing it.
func holderMain() {
	exe, _ := os.Executable()
	out, err := os.OpenFile(os.Getenv("HOLD_OUTPUT"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	shim := exe
	if s := os.Getenv("HOLD_SHIM"); s != "" {
		shim = s
	}
	p, err := Start(Spec{Shim: shim, Argv: touchArgv(os.Getenv("HOLD_MARKER")), Env: os.Environ(), Output: out, Held: true})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(p.PID())
	select {}
}

// TestHeldExecsOnlyOnRelease: a held process execs its command only once
// released; cancelled, it exits with sockets.ExitNotReleased and the
// command never ran. While held its PID and kernel start time, all a record
// needs, are known.
func TestHeldExecsOnlyOnRelease(t *testing.T) {
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) { testHeldExecsOnlyOnRelease(t, sh.Path) })
	}
}

func testHeldExecsOnlyOnRelease(t *testing.T, exe string) {
	for _, release := range []bool{true, false} {
		t.Run(map[bool]string{true: "released", false: "cancelled"}[release], func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "the-app-ran")
			placed := 0
			p, err := Start(Spec{Shim: exe, Argv: touchArgv(marker), Env: os.Environ(), Held: true,
				Place: func(pid int) { placed = pid }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Signal(syscall.SIGKILL); <-p.Done() })
			if placed != p.PID() || p.KernelStart().IsZero() {
				t.Fatalf("held: placed %d, pid %d, kernel start %v; want Place called and the record known", placed, p.PID(), p.KernelStart())
			}
			// Held, it is the shim asked for (once its exec is done), and
			// the command has not run.
			if got := heldExe(t, p.PID()); got != exe {
				t.Errorf("held process %d runs %s, want the shim %s", p.PID(), got, exe)
			}
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the command ran before the release (marker: %v)", err)
			}
			if release {
				if err := p.Release(); err != nil {
					t.Fatal(err)
				}
			} else {
				p.Cancel()
			}
			<-p.Done()
			_, statErr := os.Stat(marker)
			ex := p.Exit()
			switch {
			case release && (ex.Code != 0 || statErr != nil):
				t.Fatalf("released: %v, marker %v; want the command run", ex, statErr)
			case !release && (ex.Code != sockets.ExitNotReleased || !errors.Is(statErr, os.ErrNotExist)):
				t.Fatalf("cancelled: %v, marker %v; want exit %d and the command never run", ex, statErr, sockets.ExitNotReleased)
			}
			// Both are no-ops now.
			if err := p.Release(); err != nil {
				t.Errorf("second Release: %v", err)
			}
			p.Cancel()
		})
	}
}

// TestHolderDiesBeforeRecording: the stand-in agentd is killed with
// SIGKILL while its process is held (between fork and record). The shim
// sees the hold pipe close without the go-ahead and exits without
// exec'ing: the app never ran.
func TestHolderDiesBeforeRecording(t *testing.T) {
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) { testHolderDiesBeforeRecording(t, sh.Path) })
	}
}

func testHolderDiesBeforeRecording(t *testing.T, shim string) {
	exe, _ := os.Executable()
	dir := t.TempDir()
	marker, output := filepath.Join(dir, "the-app-ran"), filepath.Join(dir, "output")
	holder := exec.Command(exe, "-test.run=^$")
	holder.Env = append(os.Environ(), "SUPERVISOR_CHILD=holder", "HOLD_MARKER="+marker, "HOLD_OUTPUT="+output, "HOLD_SHIM="+shim)
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("holder said %q", line)
	}
	// The held shim, a grandchild: watched through a pidfd, as it will not
	// be ours to wait for once its parent is gone.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	t.Cleanup(func() { unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0) })

	holder.Process.Signal(syscall.SIGKILL)
	holder.Wait()
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 30_000); n != 1 {
		t.Fatalf("the held process %d still runs 30 s after its holder died (%v)", pid, err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the app ran although its holder died before releasing it (marker: %v)", err)
	}
	said, _ := os.ReadFile(output)
	if !strings.Contains(string(said), "without its go-ahead") {
		t.Errorf("the shim said %q, want why it did not start the app", said)
	}
}
