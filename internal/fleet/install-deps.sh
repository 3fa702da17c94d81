#!/usr/bin/env bash
# Installs what the fleet test needs (Debian packages), when missing. Services
# the packages bring (sshd, haproxy) are not started: the test starts its own.
set -euo pipefail
pkgs=(ansible ansible-lint haproxy openssh-server openssh-client iproute2 util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "fleet-test: installing ${missing[*]}"
# No service may start during the install (invoke-rc.d asks policy-rc.d).
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
