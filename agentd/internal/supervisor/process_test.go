package supervisor

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/internal/shimbuild"
	"github.com/agentd/agentd/sockets"
)

// TestMain makes the test binary the exec shim and the child processes.
func TestMain(m *testing.M) {
	if sockets.IsShim(os.Args) {
		fmt.Fprintln(os.Stderr, sockets.RunShim(os.Args))
		os.Exit(127)
	}
	switch os.Getenv("SUPERVISOR_CHILD") {
	case "stubborn":
		// Ignore SIGTERM, fork a grandchild that ignores it too, and say
		// both PIDs once both run.
		signal.Ignore(syscall.SIGTERM)
		gc := exec.Command(os.Args[0], "-test.run=^$")
		gc.Env = append(os.Environ(), "SUPERVISOR_CHILD=grandchild")
		out, _ := gc.StdoutPipe()
		gc.Start()
		bufio.NewReader(out).ReadString('\n')
		fmt.Printf("%d %d\n", os.Getpid(), gc.Process.Pid)
		select {}
	case "grandchild":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("up")
		select {}
	case "polite":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("up")
		<-c
		os.Exit(0)
	case "exit3":
		os.Exit(3)
	case "holder":
		holderMain()
	}
	code := m.Run()
	shimbuild.RemoveCached()
	os.Exit(code)
}

func start(t *testing.T, mode string) (*Process, *bufio.Reader) {
	t.Helper()
	exe, _ := os.Executable()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(Spec{Shim: exe, Argv: []string{exe, "-test.run=^$"}, Env: append(os.Environ(), "SUPERVISOR_CHILD="+mode), Output: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		<-p.Done()
		r.Close()
	})
	return p, bufio.NewReader(r)
}

func TestStopKillsGroupAfterTimeout(t *testing.T) {
	p, out := start(t, "stubborn")
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var pid, gc int
	fmt.Sscan(line, &pid, &gc)
	if pid != p.PID() {
		t.Fatalf("child pid %d, supervisor says %d: the shim must keep the PID", pid, p.PID())
	}
	start := time.Now()
	if !p.Stop(300 * time.Millisecond) {
		t.Fatal("a process that ignores SIGTERM was not reported killed")
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("killed after %s, before the timeout", d)
	}
	if ex := p.Exit(); ex.Signal != syscall.SIGKILL {
		t.Fatalf("exit %v, want killed by SIGKILL", ex)
	}
	// The grandchild was in the group: it dies too. SIGKILL lands
	// asynchronously, so wait for its exit through a pidfd (bounded).
	if fd, err := unix.PidfdOpen(gc, 0); err == nil {
		n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10_000)
		unix.Close(fd)
		if n == 0 {
			t.Fatalf("grandchild %d survived the group SIGKILL", gc)
		}
	}
}

func TestStopPolite(t *testing.T) {
	p, out := start(t, "polite")
	if _, err := out.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if p.Stop(10 * time.Second) {
		t.Fatal("a process that exits on SIGTERM was killed")
	}
	if ex := p.Exit(); ex.Code != 0 || ex.Signal != 0 {
		t.Fatalf("exit %v, want status 0", ex)
	}
}

func TestExitStatus(t *testing.T) {
	p, _ := start(t, "exit3")
	<-p.Done()
	if ex := p.Exit(); ex.Code != 3 || ex.String() != "exited with status 3" {
		t.Fatalf("exit %+v %q", ex, ex)
	}
}

// OnExit functions run once the process has exited, with its exit status
// known, whether registered before the exit or after it.
func TestOnExit(t *testing.T) {
	p, r := start(t, "polite")
	r.ReadString('\n') // up
	before := make(chan Exit, 1)
	p.OnExit(func() {
		select {
		case <-p.Done():
		default:
			t.Error("OnExit ran before Done was closed")
		}
		before <- p.Exit()
	})
	p.Signal(syscall.SIGTERM)
	if ex := <-before; ex.Code != 0 {
		t.Errorf("registered before the exit: saw %+v, want status 0", ex)
	}
	after := make(chan Exit, 1)
	p.OnExit(func() { after <- p.Exit() })
	if ex := <-after; ex.Code != 0 {
		t.Errorf("registered after the exit: saw %+v", ex)
	}
}

// TestPlaceHoldsTheProcess: with Spec.Place, the process is held in the
// shim until Place returns (that is when agentd moves it into its scope):
// during Place it has not exec'ed the command yet, and the hold pipe does
// not leak into the app.
func TestPlaceHoldsTheProcess(t *testing.T) {
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) { testPlaceHoldsTheProcess(t, sh.Path) })
	}
}

func testPlaceHoldsTheProcess(t *testing.T, exe string) {
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	var during, runs, holdPipe string
	p, err := Start(Spec{
		Shim: exe, Argv: []string{"/bin/sh", "-c", "exec ls -l /proc/self/fd/"}, Env: os.Environ(), Output: out,
		Place: func(pid int) {
			// The exec of the shim may still be setting up the new image
			// (its argv not yet in place: an empty cmdline). Held, it
			// cannot get any further than the shim while this runs.
			for deadline := time.Now().Add(10 * time.Second); during == "" && time.Now().Before(deadline); {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				during = string(b)
			}
			runs, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			// fd 3: the first after stdio, as there are no sockets.
			holdPipe, _ = os.Readlink(fmt.Sprintf("/proc/%d/fd/3", pid))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if !strings.Contains(during, sockets.ShimArg) || runs != exe {
		t.Errorf("during Place the process ran %q (%s), want the shim %s still holding it", during, runs, exe)
	}
	if ex := p.Exit(); ex.Code != 0 {
		t.Fatalf("exit %v", ex)
	}
	b, _ := os.ReadFile(out.Name())
	if !strings.HasPrefix(holdPipe, "pipe:") {
		t.Fatalf("fd 3 of the held process is %q, want the hold pipe", holdPipe)
	}
	if strings.Contains(string(b), holdPipe) {
		t.Errorf("the hold pipe leaked into the app; its fds:\n%s", b)
	}
}
