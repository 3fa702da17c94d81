#!/usr/bin/env bash
# make package: builds dist/agentd_VERSION-1_ARCH.deb and dist/agentd-VERSION-1.RPMARCH.rpm for
# amd64 and arm64 (x86_64 and aarch64 in RPM's words) with nfpm, the Go tool pinned in go.mod.
# The names are each format's own (NAME_VERSION-REVISION_ARCH.deb, NAME-VERSION-RELEASE.ARCH.rpm,
# as dpkg-deb and rpmbuild name them); -1 is the packaging revision.
#
#   PKG_VERSION   the package version (default: from git, see below)
#   ARCHES        default "amd64 arm64"
#   MAINTAINER    default "agentd maintainers <agentd@agentd.invalid>"
#
# The version comes from git: v1.2.3 tagged on HEAD gives 1.2.3; N commits after it,
# 1.2.3+gitN.HASH; with no v* tag, 0.0.0+gitN.HASH (N counted from the first commit); a dirty
# tree adds ".dirty". Both dpkg and rpm order these as time goes. A tag v1.2.3-rc1 gives 1.2.3~rc1.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
ARCHES=${ARCHES:-amd64 arm64}
export MAINTAINER=${MAINTAINER:-agentd maintainers <agentd@agentd.invalid>}

version=${PKG_VERSION:-}
if [ -z "$version" ]; then
	hash=$(git rev-parse --short=7 HEAD)
	dirty=
	git diff --quiet HEAD -- 2>/dev/null || dirty=.dirty
	if desc=$(git describe --tags --match 'v[0-9]*' --long 2>/dev/null); then
		# v1.2.3-4-gabcdef0 (the tag itself may hold dashes: v1.2.3-rc1-4-gabcdef0)
		count=${desc%-g*}; count=${count##*-}
		tag=${desc%-*-g*}; tag=${tag#v}; tag=${tag//-/\~}
		if [ "$count" = 0 ] && [ -z "$dirty" ]; then
			version=$tag
		else
			version=$tag+git$count.$hash$dirty
		fi
	else
		version=0.0.0+git$(git rev-list --count HEAD).$hash$dirty
	fi
fi
case $version in
[0-9]*) ;;
*) echo "build.sh: version $version must start with a digit" >&2; exit 1 ;;
esac
export VERSION=$version
# Reproducible: file times and the changelog date are the commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)

stage=dist/stage
rm -rf "$stage"
mkdir -p "$stage"

ldflags="-s -w -X main.version=$VERSION"
hostarch=$($GO env GOHOSTARCH)
for arch in $hostarch $ARCHES; do
	[ -x "$stage/$arch/agentd" ] && continue
	echo "== build $arch"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -trimpath -buildmode=pie -ldflags "$ldflags" \
		-o "$stage/$arch/" ./agentd ./hctl
	# agentd-shim (C, static, freestanding: no libc): the host's gcc, or Debian's cross compiler
	# (gcc-aarch64-linux-gnu, gcc-x86-64-linux-gnu) for the other
	# architecture. Same flags as `make build`.
	case $arch in
	amd64) triplet=x86_64-linux-gnu ;;
	arm64) triplet=aarch64-linux-gnu ;;
	*) echo "build.sh: no C compiler known for $arch" >&2; exit 1 ;;
	esac
	cc=$triplet-gcc
	if [ "$arch" = "$hostarch" ] && ! command -v "$cc" >/dev/null; then cc=${CC:-gcc}; fi
	command -v "$cc" >/dev/null || { echo "build.sh: $cc not found (apt-get install gcc-$triplet)" >&2; exit 1; }
	"$cc" -O2 -static -nostdlib -ffreestanding -fno-stack-protector -fno-asynchronous-unwind-tables -Wl,-z,noseparate-code -s -fno-ident -Wall -Wextra -Werror -o "$stage/$arch/agentd-shim" sockets/cmd/agentd-shim/agentd-shim.c
done

# Man pages and completions, from the code (the host's build runs here).
host=$stage/$hostarch
"$host/hctl" _doc-tree | $GO run ./packaging/mangen -version "$VERSION" -date "$date" hctl >"$stage/hctl.1"
"$host/agentd" --help 2>&1 | $GO run ./packaging/mangen -version "$VERSION" -date "$date" agentd >"$stage/agentd.8"
gzip -9n "$stage/hctl.1" "$stage/agentd.8"
"$host/hctl" completion bash >"$stage/hctl.bash"
"$host/hctl" completion zsh >"$stage/hctl.zsh"

# The changelog (changelog.Debian.gz in the .deb, %changelog in the .rpm): one entry for
# this version, listing the commits since the last v* tag (the newest 30).
{
	echo "- semver: \"$VERSION-1\""
	echo "  date: \"$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)\""
	echo "  packager: \"$MAINTAINER\""
	echo "  deb: {urgency: medium, distributions: [stable]}"
	echo "  changes:"
	range=HEAD
	if last=$(git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null); then
		range=$last..HEAD
	fi
	# Debian's changelog lines stay within 80 columns ("  * " + 76).
	git log --no-merges -n 30 --format=%s "$range" | LC_ALL=C.UTF-8 sed -E 's/^(.{76}).+/\1/' |
		sed 's/\\/\\\\/g; s/"/\\"/g; s/^/    - note: "/; s/$/"/'
	[ "$(git log -n1 --format=%s "$range" 2>/dev/null)" ] || echo '    - note: "Release."'
} >"$stage/changelog.yaml"

mkdir -p dist
rm -f dist/agentd_*.deb dist/agentd-*.rpm
for arch in $ARCHES; do
	case $arch in
	amd64) rpmarch=x86_64 ;;
	arm64) rpmarch=aarch64 ;;
	*) rpmarch=$arch ;;
	esac
	deb=dist/agentd_$VERSION-1_$arch.deb
	rpm=dist/agentd-$VERSION-1.$rpmarch.rpm
	rm -f "$deb" "$rpm"
	ARCH=$arch $GO tool nfpm package --config packaging/nfpm.yaml --packager deb --target "$deb" >/dev/null
	ARCH=$arch $GO tool nfpm package --config packaging/nfpm.yaml --packager rpm --target "$rpm" >/dev/null
	echo "$deb"
	echo "$rpm"
done
