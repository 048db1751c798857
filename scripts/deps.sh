#!/usr/bin/env bash
# scripts/deps.sh - install the Debian packages steller-worker builds, runs and
# tests with. Installs only what is missing, so it is quick the second time.
# Needs root (or sudo) for apt-get.
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config
    libhiredis-dev libev-dev libmsgpack-dev libcurl4-openssl-dev libconfig-dev
    libcmocka-dev libjansson-dev libpq-dev libssl-dev
    redis-server redis-tools postgresql
    python3 python3-redis python3-msgpack python3-psycopg2 python3-aiosmtpd
    valgrind prometheus wrk openssl
    libsystemd-dev dpkg-dev file lintian systemd
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Installing redis-server and postgresql would start system-wide services that we
# do not use (we start private ones on free ports): forbid service starts.
policy=/usr/sbin/policy-rc.d
made_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=yes
fi
cleanup() { if [ "$made_policy" = yes ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
