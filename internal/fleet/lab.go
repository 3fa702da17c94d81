// Package fleet builds a fleet of Linux hosts on one machine, for agentd's
// fleet test (`make fleet-test`, docs/fleet.md).
//
// A host is a network namespace on a private bridge (10.250.N.0/24, N chosen
// free) with a mount namespace of its own, in which /run/agentd,
// /var/lib/agentd, /var/tmp and /srv are private directories (and root's
// ~/.bashrc an empty file): its sshd, its agentd (started with the defaults
// a packaged agentd uses) and its apps see the paths of a machine of their
// own. haproxy on 127.0.0.1 balances over
// the hosts, and Ansible reaches them over ssh with a key and a known_hosts
// file of the lab's, as it would reach a fleet of VMs. Traffic goes only to
// 127.0.0.1 and to the lab's own 10.250.N.0/24.
//
// Up needs root, iproute2, util-linux (unshare, nsenter), openssh-server,
// openssh-client, haproxy and ansible (Tools lists them). Down removes what
// Up made, in reverse: processes by PID (never by name), the ssh control
// masters Ansible left (ssh -O exit), the namespaces, the bridge. A lab whose
// test binary died without Down is swept by the next Up, which finds its
// owner's PID gone.
package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentd/agentd/internal/harness"
)

// Tools are the commands Up needs, with the Debian package of each.
var Tools = map[string]string{
	"ip":               "iproute2",
	"unshare":          "util-linux",
	"nsenter":          "util-linux",
	"/usr/sbin/sshd":   "openssh-server",
	"ssh":              "openssh-client",
	"ssh-keygen":       "openssh-client",
	"haproxy":          "haproxy",
	"ansible-playbook": "ansible",
	"ansible-lint":     "ansible-lint",
}

// MissingTools lists the Debian packages of the Tools not installed.
func MissingTools() []string {
	var pkgs []string
	for tool, pkg := range Tools {
		if _, err := exec.LookPath(tool); err != nil && !slices.Contains(pkgs, pkg) {
			pkgs = append(pkgs, pkg)
		}
	}
	slices.Sort(pkgs)
	return pkgs
}

// The directories each host gets privately, by their name under Host.Root.
var privateDirs = []struct{ name, at string }{
	{"run", "/run/agentd"},
	{"lib", "/var/lib/agentd"},
	{"tmp", "/var/tmp"},
	{"srv", "/srv"},
}

// registry holds one file per lab slot in use, holding its owner's PID.
const registry = "/run/agentd-fleet-lab"

// Config describes a lab.
type Config struct {
	Dir   string       // work directory: keys, configs, logs, the hosts' private directories
	Bins  harness.Bins // agentd and hctl run on the hosts
	Hosts int          // how many hosts; default 3
	// Balance maps a haproxy frontend name to the port of the hosts it
	// balances over; Lab.URLs has the frontend's URL under the same name.
	Balance map[string]int
	Logf    func(format string, args ...any) // progress; default none
}

// Lab is a running fleet.
type Lab struct {
	Dir       string
	Net       string // "10.250.N"
	Hosts     []*Host
	URLs      map[string]string // haproxy frontends: name -> http://127.0.0.1:PORT/
	Inventory string            // Ansible inventory of the hosts (group "agentd")
	cfg       Config
	slot      int
	haproxy   *Proc
	ansCfg    string

	mu    sync.Mutex
	undo  []func() error // Down runs these in reverse
	downd bool
}

// Host is one host of the lab.
type Host struct {
	Name string // host1
	Addr string // 10.250.N.11
	NS   string // its network namespace
	Root string // on disk: its private directories (Path maps them)
	lab  *Lab
	sshd *Proc
	// Agentd is its agentd, with the defaults of a packaged one:
	// /var/lib/agentd and /run/agentd/agentd.sock.
	Agentd *Proc
}

// Up builds the lab. On error it undoes what it did.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the fleet lab needs root (network and mount namespaces)")
	}
	if m := MissingTools(); len(m) > 0 {
		return nil, fmt.Errorf("missing Debian packages: %s (make fleet-test installs them)", strings.Join(m, " "))
	}
	if cfg.Hosts == 0 {
		cfg.Hosts = 3
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	l := &Lab{Dir: cfg.Dir, cfg: cfg, URLs: map[string]string{}}
	if err := l.up(ctx); err != nil {
		l.Down()
		return nil, err
	}
	return l, nil
}

func (l *Lab) up(ctx context.Context) error {
	start := time.Now()
	if err := l.claimSlot(); err != nil {
		return err
	}
	l.Net = fmt.Sprintf("10.250.%d", l.slot)
	for _, d := range []string{"/run/sshd"} {
		if err := l.ensureDir(d, 0o755); err != nil {
			return err
		}
	}
	for _, d := range privateDirs {
		if err := l.ensureDir(d.at, 0o755); err != nil {
			return err
		}
	}
	if err := l.keys(); err != nil {
		return err
	}
	if err := l.network(ctx); err != nil {
		return err
	}
	for _, h := range l.Hosts {
		if err := l.startHost(h); err != nil {
			return err
		}
	}
	if err := l.startHaproxy(); err != nil {
		return err
	}
	if err := l.writeAnsibleConfig(); err != nil {
		return err
	}
	l.cfg.Logf("fleet lab up in %.1fs: %d hosts on %s.0/24, haproxy %v", time.Since(start).Seconds(), len(l.Hosts), l.Net, l.URLs)
	return nil
}

// atDown registers f to run at Down (in reverse order of registration).
func (l *Lab) atDown(f func() error) {
	l.mu.Lock()
	l.undo = append(l.undo, f)
	l.mu.Unlock()
}

// Down stops and removes everything the lab made. It is idempotent and
// returns every error it met (it goes on after one).
func (l *Lab) Down() error {
	l.mu.Lock()
	if l.downd {
		l.mu.Unlock()
		return nil
	}
	l.downd = true
	undo := l.undo
	l.mu.Unlock()
	var errs []error
	for i := len(undo) - 1; i >= 0; i-- {
		if err := undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// run runs a command to its end and returns its combined output.
func run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// claimSlot picks N for 10.250.N.0/24: a slot no live lab holds and no
// address of this machine uses. A slot whose owner is dead is swept first.
func (l *Lab) claimSlot() error {
	if err := os.MkdirAll(registry, 0o755); err != nil {
		return err
	}
	first := os.Getpid()%250 + 1
	for i := range 250 {
		slot := (first+i-1)%250 + 1
		file := filepath.Join(registry, strconv.Itoa(slot))
		if b, err := os.ReadFile(file); err == nil {
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if pid > 0 && syscall.Kill(pid, 0) == nil {
				continue // a live lab
			}
			l.cfg.Logf("sweeping the lab of slot %d left by PID %d", slot, pid)
			sweep(slot)
			os.Remove(file)
		}
		if out, _ := run(context.Background(), "ip", "-4", "-o", "addr", "show", "to", fmt.Sprintf("10.250.%d.0/24", slot)); strings.TrimSpace(out) != "" {
			continue // in use by something else
		}
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			continue // another lab was quicker
		}
		fmt.Fprintln(f, os.Getpid())
		f.Close()
		l.slot = slot
		l.atDown(func() error {
			err := os.Remove(file)
			os.Remove(registry) // once no lab is left
			return err
		})
		return nil
	}
	return errors.New("no free 10.250.N.0/24 for the fleet lab")
}

// sweep removes what a dead lab of the slot left: the processes still in
// its namespaces (apps outlive a killed agentd, sessions a killed sshd), the
// namespaces and the bridge.
func sweep(slot int) {
	prefix := fmt.Sprintf("afl%d-", slot)
	out, _ := run(context.Background(), "ip", "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			killNetns(f[0])
			run(context.Background(), "ip", "netns", "del", f[0])
		}
	}
	run(context.Background(), "ip", "link", "del", prefix+"br")
}

// killNetns sends SIGKILL to every process left in a network namespace, by
// PID, and returns how many there were.
func killNetns(ns string) int {
	out, _ := run(context.Background(), "ip", "netns", "pids", ns)
	n := 0
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
			n++
		}
	}
	return n
}

// ensureDir makes dir if it is missing, and removes it at Down if it made it
// and no other lab is up (another lab's hosts may be mounted on it).
func (l *Lab) ensureDir(dir string, mode os.FileMode) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.Mkdir(dir, mode); err != nil {
		return err
	}
	l.atDown(func() error {
		if ents, _ := os.ReadDir(registry); len(ents) > 1 {
			return nil
		}
		os.Remove(dir) // only if still empty
		return nil
	})
	return nil
}

// keys makes the client key Ansible logs in with.
func (l *Lab) keys() error {
	if _, err := run(context.Background(), "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-lab", "-f", filepath.Join(l.Dir, "id_ed25519")); err != nil {
		return err
	}
	pub, err := os.ReadFile(filepath.Join(l.Dir, "id_ed25519.pub"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.Dir, "authorized_keys"), pub, 0o600)
}

// network makes the bridge (the lab's gateway, 10.250.N.1) and one network
// namespace per host, joined to it by a veth pair.
func (l *Lab) network(ctx context.Context) error {
	br := fmt.Sprintf("afl%d-br", l.slot)
	l.atDown(func() error {
		_, err := run(context.Background(), "ip", "link", "del", br)
		return err
	})
	for _, c := range [][]string{
		{"ip", "link", "add", br, "type", "bridge"},
		{"ip", "addr", "add", l.Net + ".1/24", "dev", br},
		{"ip", "link", "set", br, "up"},
	} {
		if _, err := run(ctx, c...); err != nil {
			return err
		}
	}
	for i := 1; i <= l.cfg.Hosts; i++ {
		h := &Host{
			Name: fmt.Sprintf("host%d", i),
			Addr: fmt.Sprintf("%s.%d", l.Net, 10+i),
			NS:   fmt.Sprintf("afl%d-host%d", l.slot, i),
			Root: filepath.Join(l.Dir, fmt.Sprintf("host%d", i)),
			lab:  l,
		}
		l.Hosts = append(l.Hosts, h)
		if _, err := run(ctx, "ip", "netns", "add", h.NS); err != nil {
			return err
		}
		l.atDown(func() error {
			// Everything the lab started in the host is stopped by now:
			// a process left is a leak, reported and killed.
			var err error
			// sshd's sessions end shortly after their ssh master exited.
			for range 40 {
				if out, _ := run(context.Background(), "ip", "netns", "pids", h.NS); strings.TrimSpace(out) == "" {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if n := killNetns(h.NS); n > 0 {
				err = fmt.Errorf("%s: %d process(es) left in the host at the end, killed", h.Name, n)
			}
			if _, e := run(context.Background(), "ip", "netns", "del", h.NS); e != nil {
				err = errors.Join(err, e)
			}
			return err
		})
		for _, c := range [][]string{
			{"ip", "link", "add", h.NS, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			{"ip", "link", "set", h.NS, "master", br, "up"},
			{"ip", "-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
			{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
			{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		} {
			if _, err := run(ctx, c...); err != nil {
				return err
			}
		}
	}
	return nil
}

// startHost starts the host's sshd, which creates and holds its mount
// namespace, then its agentd inside both namespaces.
func (l *Lab) startHost(h *Host) error {
	for _, d := range privateDirs {
		if err := os.MkdirAll(filepath.Join(h.Root, d.name), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(h.Root, "tmp"), 0o1777)
	key := filepath.Join(h.Root, "ssh_host_ed25519_key")
	if _, err := run(context.Background(), "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.Name, "-f", key); err != nil {
		return err
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return err
	}
	f := strings.Fields(string(pub))
	kh, err := os.OpenFile(filepath.Join(l.Dir, "known_hosts"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(kh, "%s %s %s\n", h.Addr, f[0], f[1])
	kh.Close()
	sshdConfig := filepath.Join(h.Root, "sshd_config")
	conf := fmt.Sprintf(`# sshd of the fleet lab's %s: key-only root login from the lab's key.
ListenAddress %s:22
HostKey %s
PidFile none
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile %s
StrictModes no
Subsystem sftp internal-sftp
MaxStartups 100
MaxSessions 100
`, h.Name, h.Addr, key, filepath.Join(l.Dir, "authorized_keys"))
	if err := os.WriteFile(sshdConfig, []byte(conf), 0o600); err != nil {
		return err
	}
	// Bash sources ~/.bashrc for every command sshd runs, and root's on a
	// development machine can be slow (pyenv init: 0.45s per command here):
	// the hosts' root gets an empty one, as on a fresh machine.
	if err := os.WriteFile(filepath.Join(h.Root, "bashrc"), nil, 0o644); err != nil {
		return err
	}
	script := `set -e
for d in ` + privateDirNames() + `; do mount --bind "$1/${d%%:*}" "${d#*:}"; done
home=$(getent passwd root | cut -d: -f6)
if [ -f "$home/.bashrc" ]; then mount --bind "$1/bashrc" "$home/.bashrc"; fi
exec /usr/sbin/sshd -D -e -f "$1/sshd_config"`
	h.sshd, err = startProc(h.Name+" sshd", filepath.Join(h.Root, "sshd.log"), "Server listening on", 30*time.Second, os.Environ(),
		"ip", "netns", "exec", h.NS, "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", h.Root)
	if err != nil {
		return err
	}
	l.atDown(func() error {
		err := h.sshd.Stop(10 * time.Second)
		l.cfg.Logf("%s: CPU %.1fs in sshd and the sessions Ansible ran, %.1fs in agentd and its apps",
			h.Name, h.sshd.CPU().Seconds(), h.Agentd.CPU().Seconds())
		return err
	})

	h.Agentd, err = startProc(h.Name+" agentd", filepath.Join(h.Root, "agentd.log"), "agentd ready", 60*time.Second, env(),
		h.nsenter(l.cfg.Bins.Agentd, "--state-dir", "/var/lib/agentd", "--control-socket", "/run/agentd/agentd.sock",
			"--stop-apps-on-exit")...)
	if err != nil {
		return err
	}
	l.atDown(func() error { return h.stopAgentd() })
	return nil
}

func privateDirNames() string {
	var s []string
	for _, d := range privateDirs {
		s = append(s, d.name+":"+d.at)
	}
	return strings.Join(s, " ")
}

// env is this process's environment without what would redirect hctl.
func env() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "HCTL_SOCKET=") })
}

// nsenter is argv run inside the host: its network and mount namespaces.
func (h *Host) nsenter(argv ...string) []string {
	return append([]string{"nsenter", "--target", strconv.Itoa(h.sshd.PID()), "--net", "--mount", "--"}, argv...)
}

// stopAgentd stops agentd, which drains and stops the apps
// (--stop-apps-on-exit), then kills by PID any app process that outlived it.
func (h *Host) stopAgentd() error {
	var ps []struct {
		PID int `json:"pid"`
	}
	if r := h.Hctl(context.Background(), "--json", "ps"); r.Code == 0 {
		json.Unmarshal([]byte(r.Stdout), &ps)
	}
	err := h.Agentd.Stop(60 * time.Second)
	for _, p := range ps {
		if p.PID > 0 && syscall.Kill(p.PID, 0) == nil {
			syscall.Kill(-p.PID, syscall.SIGKILL)
			syscall.Kill(p.PID, syscall.SIGKILL)
			err = errors.Join(err, fmt.Errorf("%s: app process %d outlived agentd", h.Name, p.PID))
		}
	}
	return err
}

// Hctl runs hctl on the host, as root there would: with the default
// control socket, /run/agentd/agentd.sock.
func (h *Host) Hctl(ctx context.Context, args ...string) harness.Result {
	argv := h.nsenter(append([]string{h.lab.cfg.Bins.Hctl}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return harness.Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// HctlJSON runs hctl --json on the host and decodes its stdout into v.
func (h *Host) HctlJSON(ctx context.Context, v any, args ...string) error {
	r := h.Hctl(ctx, append([]string{"--json"}, args...)...)
	if r.Code != 0 {
		return fmt.Errorf("%s: hctl %s: %s", h.Name, strings.Join(args, " "), r)
	}
	if err := json.Unmarshal([]byte(r.Stdout), v); err != nil {
		return fmt.Errorf("%s: hctl %s: %v\n%s", h.Name, strings.Join(args, " "), err, r)
	}
	return nil
}

// Start starts a process inside the host (its network and mount
// namespaces), logging to NAME.log beside the host's directories, and waits
// for a line of output holding ready ("" = do not wait). Stop it with
// Proc.Stop; Down stops it too.
func (h *Host) Start(name, ready string, environ []string, argv ...string) (*Proc, error) {
	p, err := startProc(h.Name+" "+name, filepath.Join(h.Root, name+".log"), ready, 30*time.Second,
		append(env(), environ...), h.nsenter(argv...)...)
	if err != nil {
		return nil, err
	}
	h.lab.atDown(func() error { return p.Stop(10 * time.Second) })
	return p, nil
}

// Path is where a path under one of the host's private directories
// (/run/agentd, /var/lib/agentd, /var/tmp, /srv) is on disk.
func (h *Host) Path(p string) string {
	for _, d := range privateDirs {
		if p == d.at || strings.HasPrefix(p, d.at+"/") {
			return filepath.Join(h.Root, d.name, strings.TrimPrefix(p, d.at))
		}
	}
	panic("fleet: " + p + " is not a private directory of the host")
}

// startHaproxy starts haproxy on 127.0.0.1 with one frontend per
// Config.Balance entry, round-robin over the hosts, with `retries 0` (a
// connection error is the client's error, not hidden by a retry) and no
// health checks (no host is ever taken out of rotation).
func (l *Lab) startHaproxy() error {
	var b strings.Builder
	b.WriteString(`global
    maxconn 4096

defaults
    mode http
    retries 0
    timeout connect 2s
    timeout client 30s
    timeout server 30s
`)
	names := make([]string, 0, len(l.cfg.Balance))
	for name := range l.cfg.Balance {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		port, err := freePort()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "\nfrontend %s\n    bind 127.0.0.1:%d\n    default_backend %s\n\nbackend %s\n    balance roundrobin\n", name, port, name, name)
		for _, h := range l.Hosts {
			fmt.Fprintf(&b, "    server %s %s:%d\n", h.Name, h.Addr, l.cfg.Balance[name])
		}
		l.URLs[name] = fmt.Sprintf("http://127.0.0.1:%d/", port)
	}
	conf := filepath.Join(l.Dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if out, err := run(context.Background(), "haproxy", "-c", "-q", "-f", conf); err != nil {
		return fmt.Errorf("haproxy config: %v\n%s", err, out)
	}
	p, err := startProc("haproxy", filepath.Join(l.Dir, "haproxy.log"), "", 0, os.Environ(), "haproxy", "-db", "-f", conf)
	if err != nil {
		return err
	}
	l.haproxy = p
	l.atDown(func() error {
		err := p.Stop(10 * time.Second)
		l.cfg.Logf("haproxy: CPU %.1fs", p.CPU().Seconds())
		return err
	})
	// Ready when every frontend accepts.
	deadline := time.Now().Add(10 * time.Second)
	for _, u := range l.URLs {
		addr := strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/")
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if p.Exited() || time.Now().After(deadline) {
				return fmt.Errorf("haproxy does not listen on %s: %v\n%s", addr, err, p.Tail())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
