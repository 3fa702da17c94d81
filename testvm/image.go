package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// hostTools maps a command testvm runs on the host to the Debian package
// that ships it.
var hostTools = []struct{ cmd, pkg string }{
	{"qemu-system-x86_64", "qemu-system-x86"},
	{"debootstrap", "debootstrap"},
	{"ssh", "openssh-client"},
	{"scp", "openssh-client"},
	{"ssh-keygen", "openssh-client"},
	{"curl", "curl"},
	{"mkfs.ext4", "e2fsprogs"},
	{"promtool", "prometheus"},
	{"tar", "tar"},
	{"make", "make"},
}

// ensureHostTools installs the Debian packages of the missing host tools.
func ensureHostTools() error {
	var need []string
	seen := map[string]bool{}
	for _, t := range hostTools {
		if _, err := exec.LookPath(t.cmd); err != nil && !seen[t.pkg] {
			seen[t.pkg] = true
			need = append(need, t.pkg)
		}
	}
	if len(need) == 0 {
		fmt.Println("   all present")
		return nil
	}
	fmt.Printf("   apt-get install %s\n", strings.Join(need, " "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	up := exec.Command("apt-get", "update", "-q")
	up.Env = env
	if out, err := up.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %v\n%s", err, tail(string(out), 20))
	}
	args := append([]string{"install", "-y", "-q", "--no-install-recommends"}, need...)
	in := exec.Command("apt-get", args...)
	in.Env = env
	if out, err := in.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install: %v\n%s", err, tail(string(out), 20))
	}
	return nil
}

const suiteName = "bookworm"

// guestPackages are installed into the guest by debootstrap (minbase).
// prometheus is not among them: promtool runs on the host.
var guestPackages = []string{
	"systemd", "systemd-sysv", "udev", "dbus", "linux-image-amd64",
	"openssh-server", "curl", "iproute2", "procps",
}

// guestSetup configures the root file system after debootstrap, in a
// chroot. It is part of the cache key: a change here builds a new rootfs.
const guestSetup = `set -eu
echo testvm >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 testvm\n' >/etc/hosts
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >/etc/fstab
# qemu's user network: static, so boot never waits for DHCP.
mkdir -p /etc/systemd/network
printf '[Match]\nName=en* eth*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' >/etc/systemd/network/10-qemu.network
systemctl enable systemd-networkd.service ssh.service
systemctl set-default multi-user.target
# Nothing in the guest may spend the emulated CPU on housekeeping.
for t in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do
	systemctl mask "$t" >/dev/null 2>&1 || true
done
printf 'PasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n' >/etc/ssh/sshd_config.d/testvm.conf

# The host's ssh key comes on the kernel command line (testvm.sshkey=BASE64),
# generated per run, so the cached image holds no key.
cat >/usr/local/sbin/testvm-sshkey <<'EOF'
#!/bin/sh
for w in $(cat /proc/cmdline); do
	case "$w" in
	testvm.sshkey=*)
		install -d -m 0700 /root/.ssh
		echo "${w#testvm.sshkey=}" | base64 -d >/root/.ssh/authorized_keys
		chmod 0600 /root/.ssh/authorized_keys ;;
	esac
done
EOF
cat >/etc/systemd/system/testvm-sshkey.service <<'EOF'
[Unit]
Description=testvm: the host's ssh key from the kernel command line
Before=ssh.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/testvm-sshkey
[Install]
WantedBy=multi-user.target
EOF
# The boot marker on the serial console: the host waits for it.
cat >/usr/local/sbin/testvm-booted <<'EOF'
#!/bin/sh
echo "TESTVM-BOOT-MARKER:$(cat /proc/sys/kernel/random/boot_id)" >/dev/ttyS0
EOF
cat >/etc/systemd/system/testvm-booted.service <<'EOF'
[Unit]
Description=testvm: tell the host on the serial console that the guest is up
After=multi-user.target ssh.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/testvm-booted
[Install]
WantedBy=multi-user.target
EOF
chmod 0755 /usr/local/sbin/testvm-sshkey /usr/local/sbin/testvm-booted
systemctl enable testvm-sshkey.service testvm-booted.service
passwd -l root >/dev/null
# An app user for the example app.
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hello
rm -f /var/cache/apt/archives/*.deb /etc/machine-id /var/lib/dbus/machine-id
: >/etc/machine-id
`

// cacheKey names the cached rootfs after everything that goes into it.
func cacheKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", suiteName, strings.Join(guestPackages, ","), guestSetup)
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// debianMirror is the first URI of a bookworm stanza in apt's deb822
// sources (what packaging/chroot.sh reads), else a one-line source, else
// deb.debian.org.
func debianMirror() string {
	if m := os.Getenv("DEB_MIRROR"); m != "" {
		return m
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, stanza := range strings.Split(string(b), "\n\n") {
			uri, ok := "", false
			for _, line := range strings.Split(stanza, "\n") {
				k, v, found := strings.Cut(line, ":")
				if !found {
					continue
				}
				fields := strings.Fields(v)
				switch strings.TrimSpace(k) {
				case "URIs":
					if len(fields) > 0 {
						uri = fields[0]
					}
				case "Suites":
					for _, s := range fields {
						if s == suiteName {
							ok = true
						}
					}
				}
			}
			if ok && uri != "" {
				return uri
			}
		}
	}
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	for _, f := range append([]string{"/etc/apt/sources.list"}, lists...) {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 3 && fs[0] == "deb" {
				for i, w := range fs[1:] {
					if strings.Contains(w, "://") && i+2 < len(fs) && fs[i+2] == suiteName {
						fh.Close()
						return w
					}
				}
			}
		}
		fh.Close()
	}
	return "http://deb.debian.org/debian"
}

// guestRootfs returns the cached root file system, building it with
// debootstrap first when it is not cached.
func guestRootfs(ctx context.Context, cache string) (string, error) {
	dir := filepath.Join(cache, suiteName+"-"+cacheKey())
	if _, err := os.Stat(filepath.Join(dir, "etc", "systemd", "system", "testvm-booted.service")); err == nil {
		fmt.Printf("   cached: %s\n", dir)
		return dir, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	work, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	mirror := debianMirror()
	fmt.Printf("   debootstrap --variant=minbase %s from %s (cached in %s)\n", suiteName, mirror, cache)
	start := time.Now()
	log := filepath.Join(work, "debootstrap.log")
	lf, err := os.Create(log)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(guestPackages, ","), suiteName, root, mirror)
	cmd.Stdout, cmd.Stderr = lf, lf
	err = cmd.Run()
	lf.Close()
	if err != nil {
		b, _ := os.ReadFile(log)
		return "", fmt.Errorf("debootstrap: %v\n%s", err, tail(string(b), 30))
	}
	fmt.Printf("   debootstrap: %.0fs\n", time.Since(start).Seconds())
	setup := exec.CommandContext(ctx, "chroot", root, "/bin/sh", "-c", guestSetup)
	// systemctl enable/mask on files only: no /proc, no running systemd.
	setup.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_OFFLINE=1", "LC_ALL=C"}
	if out, err := setup.CombinedOutput(); err != nil {
		return "", fmt.Errorf("configuring the guest: %v\n%s", err, tail(string(out), 30))
	}
	if _, err := kernelFiles(root); err != nil {
		return "", err
	}
	// Other builds of the cache are of other package lists or setups.
	old, _ := filepath.Glob(filepath.Join(cache, suiteName+"-*"))
	for _, o := range old {
		os.RemoveAll(o)
	}
	if err := os.Rename(root, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// kernelFiles returns the guest's kernel and initrd.
func kernelFiles(root string) ([2]string, error) {
	ks, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	is, _ := filepath.Glob(filepath.Join(root, "boot", "initrd.img-*"))
	if len(ks) != 1 || len(is) != 1 {
		return [2]string{}, fmt.Errorf("want one kernel and one initrd in %s/boot, found %v and %v", root, ks, is)
	}
	return [2]string{ks[0], is[0]}, nil
}

// makeImage writes the rootfs into a fresh raw ext4 image without a loop
// mount.
func makeImage(ctx context.Context, rootfs, dir string) (string, error) {
	img := filepath.Join(dir, "image.raw")
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "testvm", "-d", rootfs, img, "2G")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.ext4 -d: %v\n%s", err, out)
	}
	return img, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
