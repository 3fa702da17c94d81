#!/usr/bin/env bash
# Prints the path of a tarball of a Debian bookworm minbase root (plus procps, which the
# agentd .deb depends on for /bin/kill), made with debootstrap
# from the Debian mirror apt is configured with and cached, so that only the first run
# pays for debootstrap (about 145 s); later runs unpack the tarball in seconds.
#
#   CHROOT_CACHE  where the tarball is kept (default /var/tmp/agentd-package-test)
#   DEB_MIRROR    the mirror (default: the first bookworm URI in /etc/apt/sources.list*)
# Needs root and debootstrap.
set -euo pipefail

cache=${CHROOT_CACHE:-/var/tmp/agentd-package-test}
suite=bookworm
tarball=$cache/$suite-minbase-procps-$(dpkg --print-architecture).tar

if [ -s "$tarball" ]; then
	echo "$tarball"
	exit 0
fi

mirror=${DEB_MIRROR:-}
if [ -z "$mirror" ]; then
	# deb822 .sources files: the URIs of a stanza whose Suites name bookworm.
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		mirror=$(awk -v suite="$suite" '
			/^[ \t]*$/ { if (uri != "" && ok && !found) { print uri; found = 1 }; uri = ""; ok = 0; next }
			/^URIs:/ { uri = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
			END { if (uri != "" && ok && !found) print uri }' "$f" | head -n1)
		[ -n "$mirror" ] && break
	done
fi
if [ -z "$mirror" ]; then
	# one-line style: deb URL bookworm main
	mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v suite="$suite" '$1 == "deb" && $0 ~ " " suite " " { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }')
fi
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$cache"
work=$(mktemp -d "$cache/debootstrap.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "chroot.sh: debootstrap --variant=minbase $suite from $mirror (cached in $cache)" >&2
if ! debootstrap --variant=minbase --include=procps "$suite" "$work/root" "$mirror" >"$work/log" 2>&1; then
	tail -n 30 "$work/log" >&2
	exit 1
fi
rm -rf "$work/root/var/cache/apt/archives/"*.deb
tar -C "$work/root" --numeric-owner -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
echo "$tarball"
