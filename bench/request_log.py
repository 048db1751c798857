#!/usr/bin/python3
"""bench/request_log.py - request_log rows/s end to end, from Redis to PostgreSQL.

Starts a private redis-server and PostgreSQL (the test harness's fixtures:
loopback, temp dirs, fsync off for both the baselines and the worker), migrates,
and for each run:
  1. baseline: `psql \\copy` of the same rows from a file into "ApiRequestLogs"
     (empty, with its unique "RequestId" index): the raw limit;
  2. baseline: one INSERT per row (autocommit) for a sample of rows;
  3. steller-worker: N request_log jobs pre-enqueued, 2 worker processes; the
     clock runs from the worker's start until N rows are committed and acked.
Prints each run and the medians.

The machine's speed drifts by 20% or more from minute to minute here, so the
figure to quote is the median of the per-run ratios: each run's worker figure
against the \\copy measured just before it.

usage: bench/request_log.py [--rows 1000000] [--runs 5] [--concurrency 2000]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("STELLER_BUILD_DIR", os.path.join(ROOT, "build"))

import msgpack  # noqa: E402

import harness  # noqa: E402

COLS = ('"PartnerId", "RequestId", "Method", "Path", "StatusCode", "DurationMs", "IpAddress", '
        '"UserAgent", "RequestBytes", "ResponseBytes", "Environment", "OccurredAt"')
BASE_MS = 1795749015000


def args_of(i):
    return {"request_id": "bench-%08d" % i, "partner_id": i % 5000 + 1, "method": "GET",
            "path": "/api/v1/wallets/%d/transactions" % (i % 5000), "status": 200,
            "duration_ms": i % 300, "ip": "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255),
            "user_agent": "Steller.Sdk/2.3 (.NET 8)", "request_bytes": 512,
            "response_bytes": 2048 + i % 1000, "environment": "sandbox",
            "occurred_at": BASE_MS + i}


def tsv_line(a):
    ts = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a["occurred_at"] // 1000))
    ts += ".%03d+00" % (a["occurred_at"] % 1000)
    return "\t".join(str(x) for x in (
        a["partner_id"], a["request_id"], a["method"], a["path"], a["status"],
        a["duration_ms"], a["ip"], a["user_agent"], a["request_bytes"], a["response_bytes"],
        a["environment"], ts)) + "\n"


def baseline_copy(pg, path, n):
    pg.query('TRUNCATE "ApiRequestLogs"')
    t0 = time.monotonic()
    subprocess.run(["psql", "-q", pg.url(), "-c",
                    '\\copy "ApiRequestLogs" (%s) FROM %s' % (COLS, path)], check=True)
    return n / (time.monotonic() - t0)


def baseline_insert(pg, n):
    pg.query('TRUNCATE "ApiRequestLogs"')
    c = pg.client()
    sql = ('INSERT INTO "ApiRequestLogs" (%s) VALUES (%%s,%%s,%%s,%%s,%%s,%%s,%%s,%%s,%%s,%%s,'
           '%%s,to_timestamp(%%s / 1000.0))' % COLS)
    t0 = time.monotonic()
    with c.cursor() as cur:
        for i in range(n):
            a = args_of(i)
            cur.execute(sql, (a["partner_id"], a["request_id"], a["method"], a["path"],
                              a["status"], a["duration_ms"], a["ip"], a["user_agent"],
                              a["request_bytes"], a["response_bytes"], a["environment"],
                              a["occurred_at"]))
    return n / (time.monotonic() - t0)


def enqueue_all(r, n):
    key = "%s:queue:request_log" % harness.PREFIX
    for start in range(0, n, 10000):
        p = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 10000)):
            p.lpush(key, msgpack.packb({"jid": "b%d" % i, "type": "request_log",
                                        "args": args_of(i), "queue": "request_log",
                                        "created_at": BASE_MS, "attempt": 0}))
        p.execute()


def worker_run(rs, pg, n, concurrency):
    r = rs.client()
    r.flushall()
    pg.query('TRUNCATE "ApiRequestLogs"')
    enqueue_all(r, n)
    w = harness.Worker(rs, workers=2, concurrency=concurrency, log_level="warn",
                       debug_jobs=False, database={"url": pg.url()},
                       request_log={"batch_max": 1000, "batch_wait_ms": 50})
    t0 = time.monotonic()
    w.start()
    try:
        while int(r.get("%s:stats:processed" % harness.PREFIX) or 0) < n:
            if time.monotonic() - t0 > 900:
                raise RuntimeError("not done in 900 s")
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
    finally:
        w.kill()
    rows = pg.query('SELECT count(*) FROM "ApiRequestLogs"')[0][0]
    assert rows == n, (rows, n)
    return n / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--insert-sample", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=2000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="steller-bench-rl-")
    path = os.path.join(tmp, "rows.tsv")
    with open(path, "w") as f:
        for i in range(a.rows):
            f.write(tsv_line(args_of(i)))
    os.chmod(tmp, 0o755)
    os.chmod(path, 0o644)
    rs, pg = harness.RedisServer(), harness.PostgresServer()
    try:
        rs.start()
        pg.start()
        harness.migrate(pg)
        print("machine: %d cores; %d rows; PostgreSQL with fsync off (both paths)"
              % (os.cpu_count(), a.rows))
        res = {"copy": [], "insert": [], "worker": []}
        for run in range(a.runs):
            res["copy"].append(baseline_copy(pg, path, a.rows))
            res["insert"].append(baseline_insert(pg, a.insert_sample))
            res["worker"].append(worker_run(rs, pg, a.rows, a.concurrency))
            print("run %d: psql \\copy %.0f rows/s, single INSERTs %.0f rows/s, "
                  "steller-worker %.0f rows/s (%.0f%% of \\copy)"
                  % (run + 1, res["copy"][-1], res["insert"][-1], res["worker"][-1],
                     100 * res["worker"][-1] / res["copy"][-1]))
        med = {k: statistics.median(v) for k, v in res.items()}
        ratio = statistics.median(w / c for w, c in zip(res["worker"], res["copy"]))
        print("median of %d: psql \\copy %.0f rows/s, single INSERTs %.0f rows/s, "
              "steller-worker %.0f rows/s; median of the per-run ratios %.0f%% of \\copy"
              % (a.runs, med["copy"], med["insert"], med["worker"], 100 * ratio))
    finally:
        pg.cleanup()
        rs.cleanup()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
