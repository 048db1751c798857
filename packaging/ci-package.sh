#!/usr/bin/env bash
# packaging/ci-package.sh - build the Debian packages and prove they work, as CI does.
#
#   1. a fresh build (prefix /usr, config in /etc, Debian's hardening flags) and
#      `cpack -G DEB`: steller-worker_*.deb and libstellerjobs-dev_*.deb
#   2. every install rule belongs to a package; lintian finds no error (warnings are
#      shown; accepted ones are overridden in packaging/*/lintian-overrides)
#   3. `apt-get install` of both; the installed steller-worker answers --version and
#      --check-config on the installed config; the user `steller` exists and owns
#      the config's group
#   4. `systemd-analyze verify` accepts the installed unit; its
#      `systemd-analyze security` exposure stays at or under STELLER_MAX_EXPOSURE
#   5. a C program built with `pkg-config --cflags --libs steller-jobs` enqueues a
#      job to a private redis-server; the installed steller-worker, run by hand in
#      the foreground, processes it (P:stats:processed = 1) and stops cleanly
#   6. `dpkg -r` removes both (the binaries are gone), `dpkg -P` purges the config
#
# Needs root (apt-get, dpkg) and the packages of scripts/deps.sh. Refuses to run
# when either package is already installed, since it removes them at the end. On
# any exit it stops what it started and removes what it installed.
set -euo pipefail

cd "$(dirname "$0")/.."
SRC=$PWD
STELLER_MAX_EXPOSURE=${STELLER_MAX_EXPOSURE:-2.0}
PKGS=(steller-worker libstellerjobs-dev)

step() { printf '\n---- %s\n' "$*"; }
fail() {
    printf 'ci-package: FAIL: %s\n' "$*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || fail "needs root (apt-get install, dpkg -r)"
    exec sudo --preserve-env=STELLER_MAX_EXPOSURE,STELLER_TEST_RUN_ID "$0" "$@"
fi
for p in "${PKGS[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        fail "$p is already installed here; this script removes it at the end, so it" \
            "will not run over an installation it did not make"
    fi
done

WORK=$(mktemp -d /tmp/steller-pkg.XXXXXX)
redis_pid=
worker_pid=
installed=no
worker_children() { cat /proc/"$worker_pid"/task/*/children 2>/dev/null || true; }
cleanup() {
    local rc=$?
    set +e
    # The master and its worker processes (each in its own process group).
    # shellcheck disable=SC2046 # one pid per word
    [ -n "$worker_pid" ] && kill -KILL "$worker_pid" $(worker_children) 2>/dev/null
    [ -n "$redis_pid" ] && kill -KILL "$redis_pid" 2>/dev/null
    [ -n "$worker_pid" ] && wait "$worker_pid" 2>/dev/null
    [ -n "$redis_pid" ] && wait "$redis_pid" 2>/dev/null
    if [ "$installed" = yes ]; then
        dpkg -P "${PKGS[@]}" >/dev/null 2>&1
    fi
    if [ $rc -ne 0 ]; then
        for f in "$WORK"/worker.log "$WORK"/redis.log; do
            [ -s "$f" ] && { echo "-- tail of $f"; tail -n 30 "$f"; }
        done
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. build the packages ----
step "build the packages (cpack -G DEB) in $WORK/build"
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
BUILD=$WORK/build
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_SYSCONFDIR=/etc \
    -DCMAKE_C_FLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)" \
    -DCMAKE_EXE_LINKER_FLAGS="$(dpkg-buildflags --get LDFLAGS)" \
    -DCMAKE_SHARED_LINKER_FLAGS="$(dpkg-buildflags --get LDFLAGS)" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
(cd "$BUILD" && cpack -G DEB >/dev/null)
shopt -s nullglob
debs=("$BUILD"/steller-worker_*.deb "$BUILD"/libstellerjobs-dev_*.deb)
shopt -u nullglob
[ ${#debs[@]} -eq 2 ] || fail "expected 2 packages, got: ${debs[*]:-none}"
for d in "${debs[@]}"; do
    dpkg-deb -f "$d" Package Version Depends
done

# ---- 2. completeness and lintian ----
step "every installed file belongs to a package"
DESTDIR="$WORK/unspecified" cmake --install "$BUILD" --component Unspecified >/dev/null
if [ -d "$WORK/unspecified" ] && [ -n "$(find "$WORK/unspecified" ! -type d)" ]; then
    find "$WORK/unspecified" ! -type d
    fail "install() rules without COMPONENT worker or dev: add one (CMakeLists.txt)"
fi

step "lintian (fails on errors)"
lint_rc=0
lintian --fail-on error "${debs[@]}" >"$WORK/lintian.out" 2>&1 || lint_rc=$?
# It also says that it runs as root, which is no finding.
grep -v "running with root privileges" "$WORK/lintian.out" || echo "lintian: no errors, no warnings"
[ $lint_rc -eq 0 ] || fail "lintian reports errors (exit $lint_rc)"

# ---- 3. install ----
step "apt-get install the packages"
installed=yes
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${debs[@]}" \
    >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fail "apt-get install"; }
version=$(dpkg-query -W -f='${Version}' steller-worker)
out=$(/usr/bin/steller-worker --version)
echo "$out"
[ "$out" = "steller-worker $version" ] || fail "--version says '$out', the package $version"
CONF=/etc/steller-worker/steller-worker.conf
/usr/bin/steller-worker --check-config -c "$CONF" >"$WORK/check.out" ||
    fail "--check-config on the installed $CONF"
echo "--check-config: $(wc -l <"$WORK/check.out") lines of effective config"
getent passwd steller >/dev/null || fail "postinst did not create the user steller"
perm=$(stat -c '%U:%G %a' "$CONF")
[ "$perm" = "root:steller 640" ] || fail "$CONF is $perm, want root:steller 640"
/usr/bin/stellerctl --version

# ---- 4. the unit ----
step "systemd-analyze verify and security"
UNIT=/usr/lib/systemd/system/steller-worker.service
[ -f "$UNIT" ] || fail "no $UNIT"
# verify loads the unit offline (systemd need not be PID 1); it checks the
# Documentation= man pages with man(1) when man-db is installed.
man_opt=()
command -v man >/dev/null || man_opt=(--man=no)
SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "${man_opt[@]}" "$UNIT" ||
    fail "systemd-analyze verify $UNIT"
exposure=$(systemd-analyze security --offline=true "$UNIT" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure (at most $STELLER_MAX_EXPOSURE allowed)"
[ -n "$exposure" ] || fail "systemd-analyze security gave no exposure level"
awk -v e="$exposure" -v m="$STELLER_MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' ||
    fail "the unit's exposure $exposure is above $STELLER_MAX_EXPOSURE"

# ---- 5. the installed library and daemon run a job ----
step "a producer built with pkg-config enqueues, the installed worker runs it"
cat >"$WORK/producer.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <steller/jobs.h>

int main(void)
{
    char err[256];
    stj_client *c = stj_connect(getenv("REDIS_URL"), "pkgtest", err, sizeof(err));
    stj_job *j = stj_job_new("sys.noop");
    int rc = 1;
    if (!c)
        fprintf(stderr, "connect: %s\n", err);
    else if (!j || stj_enqueue(c, j, err, sizeof(err)) != 0)
        fprintf(stderr, "enqueue: %s\n", err);
    else {
        printf("enqueued %s to %s\n", stj_job_jid(j), stj_job_queue(j));
        rc = 0;
    }
    stj_job_free(j);
    stj_free(c);
    return rc;
}
EOF
# shellcheck disable=SC2046 # pkg-config's output is meant to be split into flags
cc -Wall -Werror -o "$WORK/producer" "$WORK/producer.c" $(pkg-config --cflags --libs steller-jobs)
lib=$(ldd "$WORK/producer" | awk '$1 == "libstellerjobs.so.0" { print $3 }')
case "$(realpath -e "${lib:-/nonexistent}" 2>/dev/null)" in
/usr/lib/*/libstellerjobs.so.0.*) echo "the producer links $lib" ;;
*) fail "the producer does not link the installed libstellerjobs.so.0 (ldd: '${lib:-none}')" ;;
esac

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly no \
    --logfile "$WORK/redis.log" &
redis_pid=$!
export REDIS_URL="redis://127.0.0.1:$port/0"
for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
done
redis-cli -p "$port" ping >/dev/null || fail "redis-server did not start on port $port"

"$WORK/producer"
cat >"$WORK/worker.conf" <<EOF
workers = 1;
concurrency = 4;
shutdown_timeout = 5.0;
redis = { url = "redis://127.0.0.1:$port/0"; prefix = "pkgtest"; };
http = { listen = "127.0.0.1:0"; };
EOF
/usr/bin/steller-worker -c "$WORK/worker.conf" 2>"$WORK/worker.log" &
worker_pid=$!
processed=
for _ in $(seq 200); do
    processed=$(redis-cli -p "$port" get pkgtest:stats:processed)
    [ "$processed" = 1 ] && break
    kill -0 "$worker_pid" 2>/dev/null || fail "steller-worker exited early"
    sleep 0.05
done
[ "$processed" = 1 ] || fail "pkgtest:stats:processed is '$processed', want 1"
echo "the installed worker processed the job (pkgtest:stats:processed = 1)"
kill -TERM "$worker_pid"
rc=0
wait "$worker_pid" || rc=$?
worker_pid=
[ $rc -eq 0 ] || fail "steller-worker exited $rc after SIGTERM"
left=$(redis-cli -p "$port" llen pkgtest:queue:default)
[ "$left" = 0 ] || fail "pkgtest:queue:default still holds $left jobs"
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$redis_pid" 2>/dev/null || true
redis_pid=

# ---- 6. remove and purge ----
step "dpkg -r, then dpkg -P"
dpkg -r "${PKGS[@]}" >/dev/null
for f in /usr/bin/steller-worker /usr/bin/stellerctl /usr/include/steller/jobs.h "$UNIT"; do
    [ ! -e "$f" ] || fail "$f is still there after dpkg -r"
done
[ -z "$(find /usr/lib -name 'libstellerjobs.so*' -print -quit)" ] ||
    fail "libstellerjobs.so is still there after dpkg -r"
[ -f "$CONF" ] || fail "dpkg -r removed the conffile $CONF (only purge should)"
dpkg -P "${PKGS[@]}" >/dev/null
installed=no
[ ! -e /etc/steller-worker ] || fail "/etc/steller-worker is still there after dpkg -P"
echo "removed and purged"

step "packaging: all checks passed"
