package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// writeAnsibleConfig writes the lab's ansible.cfg and inventory. Everything
// Ansible keeps goes under the lab's directory: its home, its local
// temporary files and its ssh control masters, which Down closes.
func (l *Lab) writeAnsibleConfig() error {
	dir := filepath.Join(l.Dir, "ansible")
	for _, d := range []string{"home", "local", "cp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	var inv strings.Builder
	inv.WriteString("# The fleet lab's hosts: network namespaces with their own sshd and agentd.\n[agentd]\n")
	for _, h := range l.Hosts {
		fmt.Fprintf(&inv, "%s ansible_host=%s\n", h.Name, h.Addr)
	}
	fmt.Fprintf(&inv, `
[agentd:vars]
ansible_user=root
ansible_ssh_private_key_file=%s
agentd_hctl=%s
`, filepath.Join(l.Dir, "id_ed25519"), l.cfg.Bins.Hctl)
	l.Inventory = filepath.Join(dir, "inventory.ini")
	if err := os.WriteFile(l.Inventory, []byte(inv.String()), 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`[defaults]
inventory = %s
forks = 10
host_key_checking = True
interpreter_python = /usr/bin/python3
retry_files_enabled = False
local_tmp = %s
remote_tmp = /var/tmp/.ansible
nocolor = True
callbacks_enabled = ansible.posix.profile_tasks

[ssh_connection]
ssh_args = -F /dev/null -o ControlMaster=auto -o ControlPersist=60s -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null -o Ciphers=aes128-gcm@openssh.com
control_path_dir = %s
pipelining = True
`, l.Inventory, filepath.Join(dir, "local"), filepath.Join(l.Dir, "known_hosts"), filepath.Join(dir, "cp"))
	l.ansCfg = filepath.Join(dir, "ansible.cfg")
	if err := os.WriteFile(l.ansCfg, []byte(cfg), 0o644); err != nil {
		return err
	}
	// Ansible's ssh masters outlive the play (ControlPersist): close them
	// before the hosts' sshd stop.
	l.atDown(func() error {
		socks, _ := filepath.Glob(filepath.Join(dir, "cp", "*"))
		var errs []error
		for _, s := range socks {
			if _, err := run(context.Background(), "ssh", "-F", "/dev/null", "-o", "ControlPath="+s, "-O", "exit", "lab"); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	return nil
}

// Play is the outcome of one ansible-playbook run.
type Play struct {
	Code   int           // ansible-playbook's exit status
	Output string        // its stdout and stderr
	Took   time.Duration // wall time
	// CPU is the user and system time of ansible-playbook and what it ran
	// on the controller (its workers, ssh); not what ran on the hosts.
	CPU time.Duration
}

// Tail is the last n lines of the play's output.
func (p Play) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Output, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Ansible runs ansible-playbook on the lab's inventory with extra variables
// (passed as JSON, so lists and numbers keep their type). Its output is also
// appended to ansible.log in the lab's directory.
func (l *Lab) Ansible(ctx context.Context, playbook string, extra map[string]any, args ...string) Play {
	vars, err := json.Marshal(extra)
	if err != nil {
		return Play{Code: -1, Output: err.Error()}
	}
	argv := append([]string{"ansible-playbook", "--extra-vars", string(vars)}, args...)
	argv = append(argv, playbook)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(env(),
		"ANSIBLE_CONFIG="+l.ansCfg,
		"ANSIBLE_HOME="+filepath.Join(l.Dir, "ansible", "home"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_FORCE_COLOR=0",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	p := Play{Output: out.String(), Took: time.Since(start)}
	if cmd.ProcessState != nil {
		p.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		p.Code = ee.ExitCode()
	case err != nil:
		p.Code = -1
		p.Output += "\n" + err.Error()
	}
	if f, err := os.OpenFile(filepath.Join(l.Dir, "ansible.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
		fmt.Fprintf(f, "==== %s (exit %d, %.1fs)\n%s\n", strings.Join(argv, " "), p.Code, p.Took.Seconds(), p.Output)
		f.Close()
	}
	return p
}
