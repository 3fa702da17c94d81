#!/usr/bin/env bash
# make package-test: checks the packages that `make package` built in dist/.
#   1. lintian (pedantic, info tags too) and rpmlint (packaging/rpmlint.toml) report nothing;
#   2. each package holds exactly the expected files, with their modes and owners, conffiles,
#      maintainer scripts, and binaries of the right architecture;
#   3. systemd-analyze verify passes on the packaged units, with the packaged binary and man
#      pages in place of the installed ones;
#   4. in a Debian bookworm chroot (debootstrap minbase, cached: packaging/chroot.sh), without
#      systemd as PID 1: dpkg -i, reinstall (the upgrade path), remove (state kept), purge
#      (state removed); then the same with a stand-in systemctl that records what the
#      maintainer scripts ask of systemd (start on install, reload, never restart, on upgrade,
#      stop on remove); and the RPM's scriptlets through rpm --root on the same tree.
# Needs root for step 4 (skipped with a message otherwise), and lintian, rpm, rpmlint,
# debootstrap (.ci/run installs them).
set -uo pipefail
cd "$(dirname "$0")/.."

pass=0
fail=0
start=$(date +%s)
section() { echo "== $* ($(($(date +%s) - start))s)"; }
ok() { pass=$((pass + 1)); echo "PASS: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
	echo
	echo "package-test: $(($(date +%s) - start))s"
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
	exit
}

shopt -s nullglob
debs=(dist/agentd_*.deb)
rpms=(dist/agentd-*.rpm)
if [ ${#debs[@]} -eq 0 ] || [ ${#rpms[@]} -eq 0 ]; then
	echo "package-test: no packages in dist/; run make package first" >&2
	exit 1
fi
for tool in lintian rpmlint rpm rpm2cpio cpio dpkg-deb file; do
	command -v $tool >/dev/null || { echo "package-test: $tool is missing (apt-get install lintian rpm rpmlint file cpio)" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/agentd-package-test.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

section "1. lintian and rpmlint"
for deb in "${debs[@]}"; do
	lintian --pedantic --display-info --display-experimental --fail-on error,warning,info,pedantic,experimental "$deb" >"$work/lintian.out" 2>&1
	rc=$?
	# Lintian's spelling check reads every printable run of bytes in a binary. In the Go
	# binaries (agentd, hctl) that includes the symbol table and the pclntab, where runs such
	# as "proccessM9" turn up by chance and come and go with the build's layout (an override
	# would be unused, itself a warning, on the builds without them). Those hints are
	# dropped; the C shim's, and every other tag, are not.
	noise='^I: agentd: spelling-error-in-binary .* \[usr/bin/(agentd|hctl)\]$'
	dropped=$(grep -Ec "$noise" "$work/lintian.out")
	out=$(grep -v 'running with root privileges' "$work/lintian.out" | grep -Ev "$noise")
	[ -n "$out" ] && echo "$out"
	[ "$dropped" -gt 0 ] && echo "lintian: $dropped spelling hint(s) in a Go binary's symbol data dropped"
	if [ "$rc" -ne 0 ] && [ -z "$out" ] && [ "$dropped" -gt 0 ]; then rc=0; fi
	check "lintian $(basename "$deb"): no tags" test "$rc" -eq 0 -a -z "$out"
done
# rpmlint 2.4 run as root writes the packages' files into the host's / (seen here: an
# arm64 /usr/bin/agentd and /etc/sysconfig/agentd on the build machine). As root, run it as
# nobody, with a home and temporary directory of its own, so it can write nowhere else.
# The packages and the config are copied there: the checkout may not be readable by nobody.
lint=(rpmlint -c packaging/rpmlint.toml "${rpms[@]}")
if [ "$(id -u)" = 0 ]; then
	h=$work/rpmlint
	mkdir -p "$h/dist" "$h/packaging"
	cp "${rpms[@]}" "$h/dist/" && cp packaging/rpmlint.toml "$h/packaging/"
	chown -R nobody "$h" && chmod o+x "$work"
	lint=(setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$h" TMPDIR="$h" sh -c 'cd "$HOME" && exec "$@"' sh "${lint[@]}")
fi
out=$("${lint[@]}" 2>&1)
rc=$?
echo "$out" | grep -E '^agentd|packages and' || true
check "rpmlint ${#rpms[@]} rpms: 0 errors, 0 warnings" test "$rc" -eq 0 -a -n "$(echo "$out" | grep ' 0 errors, 0 warnings')"

section "2. contents"
# mode owner group path, files only (directories are checked by being there).
common_files="
-rwxr-xr-x root root /usr/bin/agentd
-rwxr-xr-x root root /usr/bin/agentd-shim
-rwxr-xr-x root root /usr/bin/hctl
-rw-r--r-- root root /usr/lib/systemd/system/agentd.service
-rw-r--r-- root root /usr/lib/systemd/system/agentd.socket
-rw-r--r-- root root /usr/lib/sysusers.d/agentd.conf
-rw-r--r-- root root /usr/share/bash-completion/completions/hctl
-rw-r--r-- root root /usr/share/doc/agentd/examples/agentd-example-web.socket
-rw-r--r-- root root /usr/share/man/man1/hctl.1.gz
-rw-r--r-- root root /usr/share/man/man8/agentd.8.gz"
deb_files="$common_files
-rw-r--r-- root root /etc/default/agentd
-rw-r--r-- root root /usr/share/doc/agentd/changelog.Debian.gz
-rw-r--r-- root root /usr/share/doc/agentd/copyright
-rw-r--r-- root root /usr/share/lintian/overrides/agentd
-rw-r--r-- root root /usr/share/zsh/vendor-completions/_hctl"
rpm_files="$common_files
-rw-r--r-- root root /etc/sysconfig/agentd
-rw-r--r-- root root /usr/share/licenses/agentd/copyright
-rw-r--r-- root root /usr/share/zsh/site-functions/_hctl"

elf_arch() { # the file(1) words for a Go binary of $1
	case $1 in
	amd64 | x86_64) echo "x86-64" ;;
	arm64 | aarch64) echo "ARM aarch64" ;;
	esac
}

for deb in "${debs[@]}"; do
	name=$(basename "$deb")
	arch=$(dpkg-deb -f "$deb" Architecture)
	# dpkg-deb -c: "-rw-r--r-- root/root 393 2026-01-01 00:00 ./etc/default/agentd"; nfpm
	# writes the generated changelog as 0/0, the same owner by number.
	got=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { split($2, o, "/"); u = o[1]; g = o[2]; if (u == "0") u = "root"; if (g == "0") g = "root"; p = $6; sub(/^\./, "", p); print $1, u, g, p }' | sort)
	want=$(echo "$deb_files" | sed '/^$/d' | sort)
	echo "$name:"
	echo "$got" | sed 's/^/    /'
	if [ "$got" = "$want" ]; then ok "$name: files, modes and owners"; else
		bad "$name: files, modes and owners"; diff <(echo "$want") <(echo "$got") | sed 's/^/    /'
	fi
	dirs=$(dpkg-deb -c "$deb" | awk '$1 ~ /^d/ && ($1 != "drwxr-xr-x" || $2 != "root/root")')
	check "$name: directories 0755 root" test -z "$dirs"
	check "$name: conffiles = /etc/default/agentd" test "$(dpkg-deb -I "$deb" conffiles)" = /etc/default/agentd
	for s in postinst prerm postrm; do
		check "$name: $s is /bin/sh with set -e" sh -c "dpkg-deb -I '$deb' $s | head -n1 | grep -qx '#!/bin/sh' && dpkg-deb -I '$deb' $s | grep -qx 'set -e' && dpkg-deb -I '$deb' $s | sh -n"
	done
	x=$work/x-$arch
	mkdir -p "$x" && dpkg-deb -x "$deb" "$x"
	for b in agentd agentd-shim hctl; do
		check "$name: /usr/bin/$b is an ELF $(elf_arch "$arch") executable" sh -c "file -b '$x/usr/bin/$b' | grep -q 'ELF 64-bit.*$(elf_arch "$arch")'"
	done
	check "$name: Depends: procps (/bin/kill for ExecReload)" test "$(dpkg-deb -f "$deb" Depends)" = procps
	check "$name: bash completion parses and completes hctl" sh -c "bash -n '$x/usr/share/bash-completion/completions/hctl' && grep -q 'complete .* hctl\$' '$x/usr/share/bash-completion/completions/hctl'"
	check "$name: zsh completion is for hctl" sh -c "head -n1 '$x/usr/share/zsh/vendor-completions/_hctl' | grep -qx '#compdef hctl'"
	check "$name: man pages are gzip -9n (no name, no time)" sh -c "for m in '$x'/usr/share/man/man*/*.gz; do gzip -t \"\$m\" && [ \"\$(od -An -tu4 -j4 -N4 \"\$m\" | tr -d ' ')\" = 0 ] || exit 1; done"
done

for rpm in "${rpms[@]}"; do
	name=$(basename "$rpm")
	arch=$(rpm -qp --qf '%{ARCH}' "$rpm" 2>/dev/null)
	got=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]' "$rpm" 2>/dev/null | grep -v '^d' | sort)
	want=$(echo "$rpm_files" | sed '/^$/d' | sort)
	echo "$name:"
	echo "$got" | sed 's/^/    /'
	if [ "$got" = "$want" ]; then ok "$name: files, modes and owners"; else
		bad "$name: files, modes and owners"; diff <(echo "$want") <(echo "$got") | sed 's/^/    /'
	fi
	check "$name: %config(noreplace) /etc/sysconfig/agentd" test "$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" 2>/dev/null | grep /etc/sysconfig/agentd)" = "cn /etc/sysconfig/agentd"
	check "$name: %license copyright" test "$(rpm -qLp "$rpm" 2>/dev/null)" = /usr/share/licenses/agentd/copyright
	check "$name: %doc man pages and example" test "$(rpm -qdp "$rpm" 2>/dev/null | grep -c -e /man/ -e /examples/)" = 3
	for s in PREIN POSTIN PREUN POSTUN POSTTRANS; do
		check "$name: %$s scriptlet parses" sh -c "rpm -qp --qf '%{$s}' '$rpm' 2>/dev/null | sh -n"
	done
	check "$name: %changelog names the version" sh -c "rpm -qp --changelog '$rpm' 2>/dev/null | head -n1 | grep -qF -- \"- \$(rpm -qp --qf '%{VERSION}-%{RELEASE}' '$rpm' 2>/dev/null)\""
	x=$work/r-$arch
	mkdir -p "$x" && (cd "$x" && rpm2cpio "$OLDPWD/$rpm" | cpio -idm --quiet --no-absolute-filenames 2>/dev/null)
	for b in agentd agentd-shim; do
		check "$name: /usr/bin/$b is an ELF $(elf_arch "$arch") executable" sh -c "file -b '$x/usr/bin/$b' | grep -q 'ELF 64-bit.*$(elf_arch "$arch")'"
	done
done

section "3. systemd-analyze verify on the packaged units"
hostarch=$(dpkg --print-architecture)
x=$work/x-$hostarch
if ! command -v systemd-analyze >/dev/null; then
	echo "SKIP: systemd-analyze is not installed"
elif [ ! -d "$x" ]; then
	echo "SKIP: no .deb for this machine's architecture ($hostarch)"
else
	u=$work/units
	mkdir -p "$u"
	cp "$x"/usr/lib/systemd/system/* "$x"/usr/share/doc/agentd/examples/*.socket "$u/"
	sed -i "s|/usr/bin/agentd|$x/usr/bin/agentd|" "$u/agentd.service"
	man=--man=no
	command -v man >/dev/null && man=--man=yes
	out=$(MANPATH="$x/usr/share/man" systemd-analyze verify $man "$u"/* 2>&1)
	rc=$?
	[ -n "$out" ] && echo "$out" | sed 's/^/    /'
	check "systemd-analyze verify $man: units, binary, man pages" test "$rc" -eq 0 -a -z "$out"
fi

section "4. install in a Debian chroot without systemd"
if [ "$(id -u)" != 0 ]; then
	echo "SKIP: the chroot test needs root"
	finish
fi
if ! command -v debootstrap >/dev/null; then
	bad "debootstrap is not installed (apt-get install debootstrap)"
	finish
fi
deb=$(ls dist/agentd_*_"$hostarch".deb 2>/dev/null | head -n1)
rpm=$(ls dist/agentd-*."$(uname -m)".rpm 2>/dev/null | head -n1)
if [ -z "$deb" ]; then
	echo "SKIP: no .deb for $hostarch"
	finish
fi
t0=$(date +%s)
if ! tarball=$(bash packaging/chroot.sh); then
	bad "debootstrap bookworm minbase"
	finish
fi
R=$work/root
mkdir -p "$R"
tar -C "$R" -xf "$tarball"
echo "chroot ready in $(($(date +%s) - t0))s ($tarball)"
cp "$deb" "$R/tmp/agentd.deb"
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
dpkg_in_root() { # dpkg_in_root ARGS: runs dpkg in the chroot, shows its output if it fails
	local out
	if out=$(in_root dpkg "$@" 2>&1); then return 0; fi
	echo "$out" | sed 's/^/    /'
	return 1
}
pkgversion=$(dpkg-deb -f "$deb" Version)

check "dpkg -i (first install)" dpkg_in_root -i /tmp/agentd.deb
check "  installed, version $pkgversion" test "$(in_root dpkg-query -W -f '${Status} ${Version}' agentd)" = "install ok installed $pkgversion"
check "  group agentd exists" sh -c "chroot '$R' getent group agentd >/dev/null"
check "  agentd.service enabled for the first boot" test -L "$R/etc/systemd/system/multi-user.target.wants/agentd.service"
check "  agentd.socket enabled for the first boot" test -L "$R/etc/systemd/system/sockets.target.wants/agentd.socket"
check "  agentd --version runs" sh -c "chroot '$R' /usr/bin/agentd --version | grep -q 'agentd ${pkgversion%-1}'"
check "  hctl --version runs" sh -c "chroot '$R' /usr/bin/hctl --version | grep -q '${pkgversion%-1}'"
check "  agentd-shim runs a command (static: nothing to load)" chroot "$R" /usr/bin/agentd-shim __agentd_exec -- /bin/true
check "dpkg -i again (the upgrade path)" dpkg_in_root -i /tmp/agentd.deb
mkdir -p "$R/var/lib/agentd/apps" && echo '{}' >"$R/var/lib/agentd/apps/demo.json"
check "dpkg -r (remove)" dpkg_in_root -r agentd
check "  binaries gone" test ! -e "$R/usr/bin/agentd" -a ! -e "$R/usr/bin/hctl" -a ! -e "$R/usr/bin/agentd-shim"
check "  state kept (/var/lib/agentd/apps/demo.json)" test -f "$R/var/lib/agentd/apps/demo.json"
check "  conffile kept (/etc/default/agentd)" test -f "$R/etc/default/agentd"
check "dpkg -i after remove (apps' state found again)" dpkg_in_root -i /tmp/agentd.deb
check "  state still there" test -f "$R/var/lib/agentd/apps/demo.json"
check "dpkg -P (purge)" dpkg_in_root -P agentd
check "  state removed (/var/lib/agentd)" test ! -e "$R/var/lib/agentd"
check "  conffile removed" test ! -e "$R/etc/default/agentd"
check "  enablement symlinks removed" test ! -e "$R/etc/systemd/system/multi-user.target.wants/agentd.service" -a ! -e "$R/etc/systemd/system/sockets.target.wants/agentd.socket"
check "  group agentd kept" sh -c "chroot '$R' getent group agentd >/dev/null"

section "4b. the same, with systemd seemingly running (a stand-in systemctl records the calls)"
log=/var/log/systemctl-calls
mkdir -p "$R/run/systemd/system"
cat >"$R/usr/local/sbin/systemctl" <<EOF
#!/bin/sh
echo "\$*" >>$log
case " \$* " in
*" is-enabled "*) echo enabled ;;
*" --version "*) echo "systemd 252 (stand-in)" ;;
esac
exit 0
EOF
chmod 0755 "$R/usr/local/sbin/systemctl"
calls() { # the calls since the last mark, one a line, without --quiet/--system
	sed -e 's/--quiet //g; s/--system //g' "$R$log" 2>/dev/null
	: >"$R$log"
}
: >"$R$log"
check "dpkg -i (install)" dpkg_in_root -i /tmp/agentd.deb
c=$(calls)
echo "$c" | sed 's/^/    systemctl /'
check "  daemon-reload, then start agentd.socket agentd.service" sh -c "echo '$c' | grep -qx daemon-reload && echo '$c' | grep -qx 'start agentd.socket agentd.service'"
check "dpkg -i again (upgrade)" dpkg_in_root -i /tmp/agentd.deb
c=$(calls)
echo "$c" | sed 's/^/    systemctl /'
check "  upgrade reloads agentd (try-reload-or-restart), no stop, no restart" sh -c "echo '$c' | grep -qx 'try-reload-or-restart agentd.service' && ! echo '$c' | grep -Eq '^(stop|restart|try-restart|kill)'"
check "dpkg -r" dpkg_in_root -r agentd
c=$(calls)
echo "$c" | sed 's/^/    systemctl /'
check "  remove stops agentd.service and agentd.socket" sh -c "echo '$c' | grep -qx 'stop agentd.service agentd.socket'"
check "dpkg -P" dpkg_in_root -P agentd
rm -rf "$R/run/systemd/system" "$R/usr/local/sbin/systemctl" "$R$log"

section "4c. the RPM's scriptlets, by rpm --root on the same tree (no systemd)"
if [ -z "$rpm" ]; then
	echo "SKIP: no .rpm for $(uname -m)"
	finish
fi
rpm_in_root() {
	local out
	if out=$(rpm --root "$R" --nodeps "$@" 2>&1); then return 0; fi
	echo "$out" | sed 's/^/    /'
	return 1
}
in_root groupdel agentd >/dev/null 2>&1
check "rpm -i" rpm_in_root -i "$rpm"
check "  group agentd exists" sh -c "chroot '$R' getent group agentd >/dev/null"
check "  /etc/sysconfig/agentd installed" test -f "$R/etc/sysconfig/agentd"
check "rpm -U --replacepkgs (the upgrade path)" rpm_in_root -U --replacepkgs "$rpm"
check "  no upgrade mark left behind" test ! -e "$R/var/lib/rpm-state/agentd/reload"
check "rpm -e" rpm_in_root -e agentd
check "  binaries gone" test ! -e "$R/usr/bin/agentd"

finish
