#!/usr/bin/env bash
# scripts/demo.sh - set everything up and watch the worker run a demo workload.
#
# Installs what is missing (scripts/deps.sh), builds into build/, starts a
# private redis-server on a free loopback port with its data in .run/redis,
# starts steller-worker with .run/demo.conf, feeds it a mixed workload with
# stellerctl and prints what happens. Ctrl-C (or the end of the demo) stops
# everything it started.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/.run
DURATION=${DEMO_SECONDS:-20}

scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "built: build/steller-worker, build/stellerctl"

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$RUN/redis"
PORT=$(free_port)
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_all EXIT

redis-server --port "$PORT" --bind 127.0.0.1 --dir "$RUN/redis" --appendonly yes \
    --save '' --daemonize no --logfile "$RUN/redis.log" &
pids+=($!)
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
echo "redis-server on 127.0.0.1:$PORT (data in .run/redis)"

cat > "$RUN/demo.conf" <<CONF
workers = 2;
concurrency = 32;
debug_jobs = true;
shutdown_timeout = 5.0;
redis = { url = "redis://127.0.0.1:$PORT/0"; prefix = "steller"; };
types = ( { name = "sys.fail"; max_attempts = 3; backoff_base = 1.0; backoff_factor = 0.1; } );
CONF
build/steller-worker -c "$RUN/demo.conf" 2> >(sed -u 's/^/  [worker] /' >&2) &
pids+=($!)
sleep 0.5

ctl() { build/stellerctl -c "$RUN/demo.conf" "$@"; }
echo
echo "== enqueueing the demo workload"
ctl enqueue sys.noop --count 20000
ctl enqueue sys.sleep --args '{"ms": 200}' --count 200
ctl enqueue sys.fail --args '{"message": "demo: transient failure"}' --count 3
ctl enqueue sys.fail --args '{"message": "demo: permanent failure", "permanent": true}'
ctl enqueue sys.noop --in 5 --count 5
printf '\xc1 not an envelope' | redis-cli -p "$PORT" -x LPUSH steller:queue:default >/dev/null
echo "(20000 no-ops, 200 sleeps, 3 jobs failing then dead, 1 permanent failure,"
echo " 5 jobs scheduled 5 s ahead, 1 malformed envelope)"

for _ in $(seq 1 $((DURATION / 5))); do
    sleep 5
    echo
    ctl stats
done
echo
echo "== the dead-letter list (newest first)"
redis-cli -p "$PORT" --no-raw LRANGE steller:dead 0 4 | cut -c1-160
echo
echo "demo over: stopping the worker and redis-server"
