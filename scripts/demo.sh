#!/usr/bin/env bash
# scripts/demo.sh - set everything up and watch the worker run a demo workload.
#
# Installs what is missing (scripts/deps.sh), builds into build/, starts a
# private redis-server and a private PostgreSQL on free loopback ports with
# their data in .run/, migrates the database, starts steller-worker with
# .run/demo.conf, feeds it a mixed workload (no-ops, sleeps, failures, a
# malformed envelope, scheduled jobs, API request logs) and prints what
# happens. Ctrl-C (or the end of the demo) stops everything it started.
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
stop_pg() { :; }
stop_all() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    stop_pg
}
trap stop_all EXIT

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGPORT=$(free_port)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$RUN/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$RUN/pg"
if [ ! -f "$RUN/pg/data/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$RUN/pg/data" -A trust -U postgres >/dev/null
fi
as_pg "$PGBIN/pg_ctl" -D "$RUN/pg/data" -l "$RUN/pg/postgres.log" -w \
    -o "-p $PGPORT -k $RUN/pg -c listen_addresses=127.0.0.1" start >/dev/null
stop_pg() { as_pg "$PGBIN/pg_ctl" -D "$RUN/pg/data" -m fast stop >/dev/null 2>&1 || true; }
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'steller'" |
    grep -q 1 || psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE steller"
DBURL="postgresql://postgres@127.0.0.1:$PGPORT/steller"
echo "postgresql on 127.0.0.1:$PGPORT (data in .run/pg)"
build/stellerctl migrate --database "$DBURL"

redis-server --port "$PORT" --bind 127.0.0.1 --dir "$RUN/redis" --appendonly yes \
    --save '' --daemonize no --logfile "$RUN/redis.log" &
pids+=($!)
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
echo "redis-server on 127.0.0.1:$PORT (data in .run/redis)"

cat > "$RUN/demo.conf" <<CONF
workers = 2;
concurrency = 256;
debug_jobs = true;
shutdown_timeout = 5.0;
redis = { url = "redis://127.0.0.1:$PORT/0"; prefix = "steller"; };
database = { url = "$DBURL"; };
http = { listen = "127.0.0.1:$(free_port)"; };
email = { templates = "$ROOT/conf/templates"; };
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
# 5000 API request logs (one with a bad IP address), as the API's middleware pushes them
/usr/bin/python3 - "$PORT" <<'PY'
import sys, time, uuid, msgpack, redis
r = redis.Redis(port=int(sys.argv[1]))
now = int(time.time() * 1000)
p = r.pipeline(transaction=False)
for i in range(5000):
    args = {"request_id": str(uuid.uuid4()), "partner_id": i % 40 + 1001, "method": "GET",
            "path": "/api/v1/wallet/me", "status": 200, "duration_ms": i % 90,
            "ip": "203.0.113.%d" % (i % 250) if i != 4999 else "not-an-ip",
            "user_agent": "demo/1.0", "request_bytes": 120, "response_bytes": 840,
            "environment": "sandbox", "occurred_at": now - i}
    env = {"jid": uuid.uuid4().hex[:20], "type": "request_log", "args": args,
           "queue": "request_log", "created_at": now, "attempt": 0}
    p.lpush("steller:queue:request_log", msgpack.packb(env))
p.execute()
PY
# Five partners who signed up 4 days ago and never activated: each gets a welcome
# email (the log transport prints it), a sandbox wallet credit, and the sweep finds
# them due for the day-3 nudge.
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres steller -c "
    INSERT INTO \"Partners\" (\"BusinessName\", \"RegistrationNumber\", \"Logo\", \"Address\",
        \"Phone\", \"Email\", \"RevenueSharePercentage\", \"IsActive\", \"CreatedAt\", \"UpdatedAt\")
    SELECT 'Demo Partner ' || g, 'RN-' || g, '', '1 Main St', '+100',
           'partner' || g || '@example.test', 0, true, now() - interval '4 days', now()
    FROM generate_series(1, 5) g"
for id in $(psql -qtA -h 127.0.0.1 -p "$PGPORT" -U postgres steller -c \
        "SELECT \"Id\" FROM \"Partners\" WHERE \"Email\" LIKE '%@example.test'"); do
    ctl enqueue email.welcome --args "{\"partner_id\": $id}" >/dev/null
    ctl enqueue wallet.seed_sandbox --args "{\"partner_id\": $id, \"amount\": \"2500.00\"}" >/dev/null
done
ctl sweep
echo "(20000 no-ops, 200 sleeps, 3 jobs failing then dead, 1 permanent failure,"
echo " 5 jobs scheduled 5 s ahead, 1 malformed envelope, 5000 request logs with 1 bad one,"
echo " 5 welcome emails, 5 sandbox wallet credits, 1 re-engagement sweep)"

for _ in $(seq 1 $((DURATION / 5))); do
    sleep 5
    echo
    ctl stats
done
echo
echo "== the dead-letter list"
ctl dead ls
echo
echo "== request logs written to PostgreSQL"
psql -h 127.0.0.1 -p "$PGPORT" -U postgres steller -c \
    'SELECT count(*) AS rows, count(DISTINCT "PartnerId") AS partners FROM "ApiRequestLogs"'
echo
echo "== emails and sandbox wallets"
psql -h 127.0.0.1 -p "$PGPORT" -U postgres steller -c \
    'SELECT "Kind", "Status", "Transport", count(*) FROM "EmailDeliveries" GROUP BY 1, 2, 3'
psql -h 127.0.0.1 -p "$PGPORT" -U postgres steller -c \
    'SELECT w."PartnerId", w."AvailableBalance", h."ReferenceId" FROM "Wallets" w
     JOIN "WalletHistories" h ON h."WalletId" = w."Id" ORDER BY 1'
echo
echo "demo over: stopping the worker, redis-server and PostgreSQL"
