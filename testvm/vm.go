package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const bootMarker = "TESTVM-BOOT-MARKER:"

// VM is the qemu guest: its process, its serial console, and ssh to it.
type VM struct {
	dir, rootfs, image string
	bootMax            time.Duration

	sshPort, httpPort int
	sshConfig         string

	mu      sync.Mutex
	qemu    *exec.Cmd
	exited  chan struct{} // closed when qemu exits
	exitErr error
	boots   chan string // boot IDs, one per marker seen on the console
	console *os.File
	master  *exec.Cmd // the ssh ControlMaster

	rebootAt time.Time // when Reboot asked the guest to reboot
	// The last shutdown, from the console: how long it took, and the
	// processes systemd-shutdown had to wait for (it gives them 90 s
	// after its SIGTERM, then SIGKILLs them).
	shutdownTook   time.Duration
	shutdownWaited []string

	stalls stallWatch // the guest's heartbeat on the serial console
	hung   string     // why watchHung ended the ssh master, if it did
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start boots the guest and returns once it answers over ssh.
func (vm *VM) Start(ctx context.Context) error {
	key := filepath.Join(vm.dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "agentd-testvm", "-f", key).CombinedOutput(); err != nil {
		return fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return err
	}
	if vm.sshPort, err = freePort(); err != nil {
		return err
	}
	if vm.httpPort, err = freePort(); err != nil {
		return err
	}
	vm.sshConfig = filepath.Join(vm.dir, "ssh_config")
	// ServerAlive: ssh gives up on a guest that has not answered for
	// 15 s x 40 = 10 minutes. Not less: an emulated guest on a busy host
	// can stop for over 30 s (once on CI; a 45 s SIGSTOP of qemu gives
	// the same symptom: docs/testvm.md, "What testvm found"), and with
	// 5 s x 6 the master took such a stall for a lost connection and the
	// command on it ended with exit 255. A
	// stall is waited out; a dead qemu closes the forward's socket, which
	// ssh reports at once; a hung guest is found by watchHung (stall.go)
	// long before these 10 minutes.
	cfg := fmt.Sprintf(`Host testvm
  HostName 127.0.0.1
  Port %d
  User root
  IdentityFile %s
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
  ConnectTimeout 10
  ServerAliveInterval 15
  ServerAliveCountMax 40
  ControlPath %s
`, vm.sshPort, key, filepath.Join(vm.dir, "cm.sock"))
	if err := os.WriteFile(vm.sshConfig, []byte(cfg), 0o600); err != nil {
		return err
	}

	kf, err := kernelFiles(vm.rootfs)
	if err != nil {
		return err
	}
	appendLine := "root=/dev/vda rw console=ttyS0 testvm.sshkey=" + base64.StdEncoding.EncodeToString(bytes.TrimSpace(pub))
	args := []string{
		"-nodefaults", "-no-user-config", "-name", "agentd-testvm",
		"-accel", "tcg,thread=multi", "-m", "2048", "-smp", "2",
		"-kernel", kf[0], "-initrd", kf[1], "-append", appendLine,
		// cache=unsafe: the guest's flushes (dpkg's, syncfs after an
		// unpack, journald) stop at qemu instead of waiting for this
		// host's disk; the image is a throwaway snapshot anyway.
		"-drive", "file=" + vm.image + ",format=raw,if=virtio,snapshot=on,cache=unsafe",
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22,hostfwd=tcp:127.0.0.1:%d-:8080", vm.sshPort, vm.httpPort),
		"-device", "virtio-net-pci,netdev=n0",
		"-device", "virtio-rng-pci",
		"-display", "none", "-monitor", "none", "-serial", "stdio",
	}
	vm.console, err = os.Create(filepath.Join(vm.dir, "console.log"))
	if err != nil {
		return err
	}
	q := exec.Command("qemu-system-x86_64", args...)
	out, err := q.StdoutPipe()
	if err != nil {
		return err
	}
	q.Stderr = vm.console
	// Its own process group: a Ctrl-C on the terminal reaches testvm, which
	// then stops qemu itself, by PID.
	q.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := q.Start(); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	vm.qemu = q
	vm.exited = make(chan struct{})
	vm.boots = make(chan string, 8)
	fmt.Printf("   qemu pid %d, ssh 127.0.0.1:%d, http 127.0.0.1:%d\n", q.Process.Pid, vm.sshPort, vm.httpPort)
	atExit(vm.Stop)
	go vm.watchHung(q.Process.Pid)
	consoleDone := make(chan struct{})
	go vm.watchConsole(out, consoleDone)
	go func() {
		<-consoleDone
		err := q.Wait()
		vm.mu.Lock()
		vm.exitErr = err
		vm.mu.Unlock()
		close(vm.exited)
	}()
	return vm.awaitBoot(ctx)
}

// watchConsole copies the serial console to console.log and reports each
// boot marker.
func (vm *VM) watchConsole(r io.Reader, done chan<- struct{}) {
	defer close(done)
	br := bufio.NewReader(r)
	start := time.Now()
	for {
		line, err := br.ReadString('\n')
		if strings.Contains(line, heartbeatMark) {
			// Once a second: only a stall goes to console.log.
			if st, ok := vm.stalls.beat(line, time.Now()); ok {
				fmt.Fprintf(vm.console, "[%7.2f] testvm: the guest stalled: no heartbeat for %s\n", time.Since(start).Seconds(), st)
				if st.host >= stallLoud {
					fmt.Printf("   the guest stalled: no heartbeat for %s\n", st)
				}
			}
			line = ""
		}
		if line != "" {
			// Host time since power-on in front of every line, to see where
			// a slow boot or shutdown spends its time.
			fmt.Fprintf(vm.console, "[%7.2f] %s", time.Since(start).Seconds(), line)
			if strings.Contains(line, "reboot: Restarting system") {
				vm.mu.Lock()
				vm.shutdownTook = time.Since(vm.rebootAt)
				took := vm.shutdownTook
				vm.mu.Unlock()
				fmt.Printf("   the guest's shutdown took %.1fs (systemctl reboot to the reset)\n", took.Seconds())
			}
			if strings.Contains(line, "systemd-shutdown") && strings.Contains(line, "Waiting for process") {
				msg := strings.TrimSpace(line[strings.Index(line, "systemd-shutdown"):])
				vm.mu.Lock()
				vm.shutdownWaited = append(vm.shutdownWaited, msg)
				vm.mu.Unlock()
				fmt.Printf("   console: %s\n", msg)
			}
			if i := strings.Index(line, bootMarker); i >= 0 {
				id := strings.TrimSpace(line[i+len(bootMarker):])
				select {
				case vm.boots <- id:
				default:
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// awaitBoot waits for the next boot marker, then for ssh to answer, and
// starts the ssh ControlMaster.
func (vm *VM) awaitBoot(ctx context.Context) error {
	start := time.Now()
	timer := time.NewTimer(vm.bootMax)
	defer timer.Stop()
	var id string
	select {
	case id = <-vm.boots:
	case <-vm.exited:
		return fmt.Errorf("qemu exited during the boot: %v", vm.exitErr)
	case <-timer.C:
		return fmt.Errorf("no boot marker on the serial console after %s", vm.bootMax)
	case <-ctx.Done():
		return ctx.Err()
	}
	fmt.Printf("   boot marker after %.1fs (boot id %s)\n", time.Since(start).Seconds(), id)
	// sshd was started before the marker (the unit is ordered after it); a
	// few tries cover the forward's first connection.
	deadline := time.Now().Add(60 * time.Second)
	for {
		c := exec.CommandContext(ctx, "ssh", "-F", vm.sshConfig, "-o", "ControlMaster=no", "-o", "ControlPath=none", "testvm", "true")
		out, err := c.CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ssh does not answer: %v: %s", err, out)
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// The master's own messages (at INFO: "Timeout, server not
	// responding", "Connection closed by remote host") go to a file: they
	// tell who ended a connection that commands report as exit 255.
	m := exec.Command("ssh", "-F", vm.sshConfig, "-M", "-N", "-o", "ControlPersist=no",
		"-o", "LogLevel=INFO", "-E", vm.masterLog(), "testvm")
	m.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.Start(); err != nil {
		return fmt.Errorf("ssh master: %w", err)
	}
	mdone := make(chan struct{})
	go func() { m.Wait(); close(mdone) }()
	vm.mu.Lock()
	vm.master = m
	vm.mu.Unlock()
	for i := 0; ; i++ {
		if exec.Command("ssh", "-F", vm.sshConfig, "-O", "check", "testvm").Run() == nil {
			break
		}
		select {
		case <-mdone:
			return fmt.Errorf("ssh master exited")
		case <-time.After(100 * time.Millisecond):
		}
		if i > 300 {
			return fmt.Errorf("ssh master: no control socket after 30s")
		}
	}
	fmt.Printf("   ssh answers %.1fs after power-on/reboot\n", time.Since(start).Seconds())
	if err := vm.startHeartbeat(ctx); err != nil {
		return fmt.Errorf("the guest's heartbeat: %w", err)
	}
	return nil
}

// connState says what the host knows of the guest when a command ends
// with ssh's exit 255: qemu's state, the heartbeat, watchHung's verdict.
func (vm *VM) connState() string {
	vm.mu.Lock()
	hung := vm.hung
	vm.mu.Unlock()
	qemu := "qemu runs"
	select {
	case <-vm.exited:
		qemu = fmt.Sprintf("qemu exited (%v)", vm.exitErr)
	default:
	}
	msg := qemu + "; " + vm.stalls.state()
	if hung != "" {
		msg += "; " + hung
	}
	return msg
}

// masterLog is where the ssh ControlMaster logs.
func (vm *VM) masterLog() string { return filepath.Join(vm.dir, "ssh-master.log") }

// masterSays is the end of the ControlMaster's log, for an error.
func (vm *VM) masterSays() string {
	b, err := os.ReadFile(vm.masterLog())
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "(nothing)"
	}
	return strings.TrimSpace(tail(string(b), 5))
}

// stopMaster ends the ssh ControlMaster this program started, by PID.
func (vm *VM) stopMaster() {
	vm.mu.Lock()
	m := vm.master
	vm.master = nil
	vm.mu.Unlock()
	if m != nil && m.Process != nil {
		m.Process.Signal(syscall.SIGTERM)
	}
}

// Stop stops the ssh master and qemu (SIGTERM, SIGKILL after 10 s), by PID.
func (vm *VM) Stop() {
	vm.stopMaster()
	vm.mu.Lock()
	q := vm.qemu
	vm.qemu = nil
	vm.mu.Unlock()
	if q == nil || q.Process == nil {
		return
	}
	select {
	case <-vm.exited:
		return
	default:
	}
	q.Process.Signal(syscall.SIGTERM)
	select {
	case <-vm.exited:
	case <-time.After(10 * time.Second):
		q.Process.Kill()
		<-vm.exited
	}
	fmt.Printf("   qemu (pid %d) stopped\n", q.Process.Pid)
}

// Reboot reboots the guest from inside (systemctl reboot) and waits for it
// to come back. The disk's snapshot lives in the qemu process, so the
// guest keeps its state across the reboot.
func (vm *VM) Reboot(ctx context.Context) error {
	vm.stopMaster()
	vm.stalls.reset() // no heartbeat until the guest is back
	vm.mu.Lock()
	vm.rebootAt = time.Now()
	vm.shutdownTook, vm.shutdownWaited = 0, nil
	vm.mu.Unlock()
	c := exec.CommandContext(ctx, "ssh", "-F", vm.sshConfig, "-o", "ControlMaster=no", "-o", "ControlPath=none", "testvm", "systemctl --no-block reboot")
	c.Run() // the connection may drop under it
	return vm.awaitBoot(ctx)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Run runs a shell command in the guest as root and returns its stdout. A
// non-zero exit is an error that carries stderr.
func (vm *VM) Run(ctx context.Context, script string) (string, error) {
	c := exec.CommandContext(ctx, "ssh", "-F", vm.sshConfig, "testvm", "bash -c "+shellQuote(script))
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(tail(stdout.String(), 10))
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ee.ExitCode() == 255 {
				// ssh's own status: the connection, not the command, ended.
				// The master's log says whether the guest closed it or
				// stopped answering.
				msg += "; the ssh master logged: " + vm.masterSays() + "; " + vm.connState()
			}
			return stdout.String(), fmt.Errorf("guest: %s: exit %d: %s", firstLine(script), ee.ExitCode(), msg)
		}
		return stdout.String(), fmt.Errorf("guest: %s: %v: %s", firstLine(script), err, msg)
	}
	return stdout.String(), nil
}

// Copy copies local files into a directory of the guest.
func (vm *VM) Copy(ctx context.Context, dst string, files ...string) error {
	args := append([]string{"-q", "-F", vm.sshConfig}, files...)
	args = append(args, "testvm:"+dst)
	if out, err := exec.CommandContext(ctx, "scp", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("scp %v: %v: %s", files, err, out)
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return s
}

// dumpConsole prints the end of the serial console.
func (vm *VM) dumpConsole(w io.Writer) {
	b, err := os.ReadFile(filepath.Join(vm.dir, "console.log"))
	if err != nil {
		return
	}
	fmt.Fprintln(w, "== serial console (last 80 lines)")
	fmt.Fprintln(w, tail(string(b), 80))
}

// keepOpen leaves the VM running until Ctrl-C.
func (vm *VM) keepOpen(ctx context.Context) {
	fmt.Printf("== -keep: the VM runs until Ctrl-C\n   ssh -F %s testvm\n   http://127.0.0.1:%d/\n   serial console: %s\n",
		vm.sshConfig, vm.httpPort, filepath.Join(vm.dir, "console.log"))
	select {
	case <-ctx.Done():
	case <-vm.exited:
	}
}

// LastShutdown reports how long the last reboot's shutdown took (0 if the
// console never said "reboot: Restarting system") and the processes
// systemd-shutdown waited for after its SIGTERM.
func (vm *VM) LastShutdown() (time.Duration, []string) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.shutdownTook, append([]string(nil), vm.shutdownWaited...)
}
