// Package harness builds agentd, hctl and the example apps, starts a real
// agentd on private directories and drives it through the real hctl. The
// end-to-end tests, `make demo` and `make bench` share it, so what they
// exercise is exactly what a user runs.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/internal/shimbuild"
)

// Bins are the built binaries. Shim is the C exec shim, built beside
// agentd, where agentd finds and uses it, as in the packages.
type Bins struct {
	Agentd, Hctl, TestApp, GoApp, Shim string
}

// ModuleRoot finds the repository root (the directory with go.mod).
func ModuleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the module root")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles the binaries into dir.
func Build(dir string) (Bins, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Bins{}, err
	}
	b := Bins{
		Agentd:  filepath.Join(dir, "agentd"),
		Hctl:    filepath.Join(dir, "hctl"),
		TestApp: filepath.Join(dir, "testapp"),
		GoApp:   filepath.Join(dir, "goapp"),
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/",
		"./agentd", "./hctl", "./internal/testapp", "./examples/goapp")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Bins{}, fmt.Errorf("go build: %v\n%s", err, out)
	}
	if b.Shim, err = shimbuild.Build(dir); err != nil {
		return Bins{}, err
	}
	return b, nil
}

// Agentd is a running agentd. After an upgrade (tableflip) it is another
// process, which Agentd follows through `hctl status`.
type Agentd struct {
	Bins     Bins
	Dir      string
	Socket   string
	StateDir string
	Env      []string // extra environment for agentd
	cmd      *exec.Cmd
	pid      int
	mu       sync.Mutex
	log      bytes.Buffer
}

// Start starts agentd with its state and control socket under dir, and
// returns once it announced it is ready (its log line, not a sleep).
func Start(bins Bins, dir string, args ...string) (*Agentd, error) {
	return StartEnv(bins, dir, nil, args...)
}

// StartEnv is Start with extra environment variables for agentd.
func StartEnv(bins Bins, dir string, env []string, args ...string) (*Agentd, error) {
	a := &Agentd{Bins: bins, Dir: dir, Socket: filepath.Join(dir, "agentd.sock"), StateDir: filepath.Join(dir, "state"), Env: env}
	if err := a.start(args...); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agentd) start(args ...string) error {
	argv := append([]string{"--state-dir", a.StateDir, "--control-socket", a.Socket, "--stop-apps-on-exit", "--log-level", "debug"}, args...)
	cmd := exec.Command(a.Bins.Agentd, argv...)
	a.cmd = cmd
	cmd.Env = append(os.Environ(), a.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A pipe of our own, not StderrPipe: Wait would close the read end
	// when the first agentd exits, and an upgraded agentd writing to it
	// would die of SIGPIPE.
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return err
	}
	w.Close()
	a.pid = cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(r)
		once := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			a.mu.Lock()
			a.log.WriteString(sc.Text() + "\n")
			a.mu.Unlock()
			if strings.Contains(sc.Text(), "agentd ready") {
				once()
			}
		}
		r.Close()
	}()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("agentd exited at start:\n%s", a.Log())
	case <-time.After(60 * time.Second):
		a.Kill()
		return fmt.Errorf("agentd did not become ready within 60s:\n%s", a.Log())
	}
}

// Restart stops agentd (SIGTERM) and starts it again on the same state.
func (a *Agentd) Restart(args ...string) error {
	a.Stop()
	return a.start(args...)
}

// StartAgain starts agentd on the same state after it was killed.
func (a *Agentd) StartAgain(args ...string) error {
	return a.start(args...)
}

// Log returns what agentd has logged so far.
func (a *Agentd) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.String()
}

// PID is the PID of the agentd serving now (it changes on upgrade).
func (a *Agentd) PID() int {
	var st struct {
		PID int `json:"pid"`
	}
	if r := a.HctlJSON(&st, "status"); r.Code == 0 && st.PID != 0 {
		a.pid = st.PID
	}
	return a.pid
}

// Stop sends SIGTERM to the agentd serving now and waits for it to exit.
// It was started with --stop-apps-on-exit, so it drains and stops every
// app process first.
func (a *Agentd) Stop() {
	pid := a.PID()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return
	}
	if !waitGone(pid, 90*time.Second) {
		a.Kill()
	}
}

// Kill kills the agentd serving now with SIGKILL; its app processes are
// not in its process group and live on.
func (a *Agentd) Kill() {
	pid := a.pid
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid, 30*time.Second)
}

// waitGone waits until pid has exited, through a pidfd (agentd after an
// upgrade is not our child).
func waitGone(pid int, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true // already gone
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, err := unix.Poll(fds, int(time.Until(deadline)/time.Millisecond)+1)
		if n > 0 {
			return true
		}
		if err != nil && err != unix.EINTR {
			return false
		}
	}
	return false
}

// Result is what an hctl run gave.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
}

// Hctl runs hctl against this agentd.
func (a *Agentd) Hctl(args ...string) Result {
	return a.HctlContext(context.Background(), args...)
}

// HctlContext runs hctl with a context.
func (a *Agentd) HctlContext(ctx context.Context, args ...string) Result {
	return a.hctl(ctx, nil, args...)
}

// hctl runs hctl; its stderr also goes to watch, as it is written, when
// watch is not nil.
func (a *Agentd) hctl(ctx context.Context, watch io.Writer, args ...string) Result {
	cmd := exec.CommandContext(ctx, a.Bins.Hctl, args...)
	// hctl's hash cache for directory deploys: the test's own, never the
	// runner's ~/.cache.
	cmd.Env = append(os.Environ(), "HCTL_SOCKET="+a.Socket, "XDG_CACHE_HOME="+filepath.Join(a.Dir, "cache"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if watch != nil {
		cmd.Stderr = io.MultiWriter(&errb, watch)
	}
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// HctlJSON runs hctl --json and decodes its stdout into v.
func (a *Agentd) HctlJSON(v any, args ...string) Result {
	return a.HctlJSONWatch(context.Background(), v, nil, args...)
}

// HctlJSONWatch is HctlJSON with a context, and with hctl's stderr (its
// progress lines) also written to watch as they come, when not nil.
func (a *Agentd) HctlJSONWatch(ctx context.Context, v any, watch io.Writer, args ...string) Result {
	r := a.hctl(ctx, watch, append([]string{"--json"}, args...)...)
	if r.Code == 0 && v != nil {
		if err := json.Unmarshal([]byte(r.Stdout), v); err != nil {
			r.Code = -1
			r.Stderr += "\ndecoding --json output: " + err.Error()
		}
	}
	return r
}

// Release writes a release directory: a Procfile and extra files.
func Release(dir, procfile string, files map[string]string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "Procfile"), []byte(procfile), 0o644); err != nil {
		return "", err
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// CopyFile copies a file (e.g. a binary into a release directory).
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
