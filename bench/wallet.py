#!/usr/bin/python3
"""bench/wallet.py - wallet.seed_sandbox seeds/s end to end, from Redis to PostgreSQL.

Starts a private redis-server and PostgreSQL (the test harness's fixtures:
loopback, temp dirs, fsync off), migrates, adds N partners, and for each run:
  1. baseline: steller_wallet_seed_sandbox() called once per partner from one
     psycopg2 connection, autocommit (one client, one round trip per seed), for
     a sample of partners;
  2. steller-worker: N wallet.seed_sandbox jobs for N distinct partners (each
     creates the partner's sandbox wallet and credits it), pre-enqueued; 2 worker
     processes; the clock runs from the worker's start until N seeds are
     committed and acked.
The wallets and entries are emptied before each part. Prints each run and the
medians; the figure to quote is the median worker rate.

usage: bench/wallet.py [--seeds 20000] [--runs 3] [--concurrency 256] [--pool-size 4]
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("STELLER_BUILD_DIR", os.path.join(ROOT, "build"))

import msgpack  # noqa: E402

import harness  # noqa: E402

BASE_MS = 1795749015000


def add_partners(pg, n):
    pg.query('TRUNCATE "Partners" CASCADE')
    rows = pg.query(
        'INSERT INTO "Partners" ("BusinessName", "RegistrationNumber", "Logo", "Address", '
        '"Phone", "Email", "RevenueSharePercentage", "IsActive", "CreatedAt", "UpdatedAt") '
        "SELECT 'Biz ' || g, 'RC' || g, '', 'Addr', '+1', 'p' || g || '@example.com', 10, "
        "true, now(), now() FROM generate_series(1, %s) g RETURNING \"Id\"", (n,))
    return [r[0] for r in rows]


def empty_wallets(pg):
    pg.query('TRUNCATE "Wallets", "WalletHistories"')


def baseline_sql(pg, partners):
    empty_wallets(pg)
    c = pg.client()
    t0 = time.monotonic()
    with c.cursor() as cur:
        for p in partners:
            cur.execute("SELECT * FROM steller_wallet_seed_sandbox(%s, %s::numeric, %s, %s)",
                        (p, "1000.00", "signup-seed:%d" % p, "Sandbox signup credit"))
    return len(partners) / (time.monotonic() - t0)


def enqueue_all(r, partners):
    key = "%s:queue:critical" % harness.PREFIX
    for start in range(0, len(partners), 10000):
        p = r.pipeline(transaction=False)
        for i, partner in enumerate(partners[start:start + 10000], start):
            p.lpush(key, msgpack.packb({"jid": "s%d" % i, "type": "wallet.seed_sandbox",
                                        "args": {"partner_id": partner, "amount": "1000.00"},
                                        "queue": "critical", "created_at": BASE_MS,
                                        "attempt": 0}))
        p.execute()


def worker_run(rs, pg, partners, concurrency, pool_size):
    n = len(partners)
    r = rs.client()
    r.flushall()
    empty_wallets(pg)
    enqueue_all(r, partners)
    w = harness.Worker(rs, workers=2, concurrency=concurrency, log_level="warn",
                       debug_jobs=False, database={"url": pg.url(), "pool_size": pool_size})
    t0 = time.monotonic()
    w.start()
    try:
        while int(r.get("%s:stats:processed" % harness.PREFIX) or 0) < n:
            if time.monotonic() - t0 > 600:
                raise RuntimeError("not done in 600 s")
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
    finally:
        w.kill()
    got = pg.query('SELECT count(*), count(DISTINCT "PartnerId"), sum("AvailableBalance")::text '
                   'FROM "Wallets"')[0]
    assert got == (n, n, "%d.0000" % (1000 * n)), got
    assert pg.query('SELECT count(*) FROM "WalletHistories"')[0][0] == n
    return n / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sql-sample", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--pool-size", type=int, default=4)
    a = ap.parse_args()
    rs, pg = harness.RedisServer(), harness.PostgresServer()
    try:
        rs.start()
        pg.start()
        harness.migrate(pg)
        partners = add_partners(pg, a.seeds)
        print("machine: %d cores; %d seeds (distinct partners); 2 workers, concurrency %d, "
              "pool_size %d; PostgreSQL with fsync off"
              % (os.cpu_count(), a.seeds, a.concurrency, a.pool_size))
        res = {"sql": [], "worker": []}
        for run in range(a.runs):
            res["sql"].append(baseline_sql(pg, partners[:a.sql_sample]))
            res["worker"].append(worker_run(rs, pg, partners, a.concurrency, a.pool_size))
            print("run %d: one psycopg2 client %.0f seeds/s, steller-worker %.0f seeds/s"
                  % (run + 1, res["sql"][-1], res["worker"][-1]))
        med = {k: statistics.median(v) for k, v in res.items()}
        print("median of %d: one psycopg2 client %.0f seeds/s, steller-worker %.0f seeds/s"
              % (a.runs, med["sql"], med["worker"]))
    finally:
        pg.cleanup()
        rs.cleanup()


if __name__ == "__main__":
    main()
