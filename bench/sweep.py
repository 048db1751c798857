#!/usr/bin/python3
"""bench/sweep.py - reengagement.sweep on 1,000,000 partners and 10,000,000
request-log rows: seconds per stage, and the plans.

Starts a private redis-server and PostgreSQL (the test harness's fixtures;
fsync off, shared_buffers 1GB), migrates, and generates the data in SQL:
  - "Partners": N partners signed up over the last 60 days (one every ~5 s),
    95% active, 40% already 'activated';
  - "ApiRequestLogs": M rows for the odd partners only (20 each by default),
    spread over the same 60 days, loaded without indexes, which are then built
    as schema/004 defines them;
  - "EmailDeliveries": the d3 email already sent to every 10th partner.
Then VACUUM ANALYZE, and with steller-worker (1 worker process, defaults:
stages 3/7/14, quiet_days 7, max_age_days 30, batch_size 1000, parallel 2,
database.pool_size 2; --parallel overrides):
  1. a dry run (one count per stage),
  2. the sweep (INSERT + push per batch), emails left in P:queue:email,
  3. the sweep again (nothing to do);
  4. with --runs N > 1, N - 1 more times: the rows of step 2 deleted (VACUUM
     ANALYZE "EmailDeliveries"), P:queue:email emptied, and step 2 again.
Prints each run's per-stage figures from the job's log line and the median
per stage over the N sweeps of step 2 and 4; then, with
auto_explain on in the worker's sessions and as_of one day later, EXPLAIN
(ANALYZE, BUFFERS) of the statements jobs/sweep.c really sent: the d14 count of
a dry run and one d14 batch.

usage: bench/sweep.py [--partners 1000000] [--requests 10000000] [--runs 3]
                      [--parallel 2]
"""
import argparse
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("STELLER_BUILD_DIR", os.path.join(ROOT, "build"))

import harness  # noqa: E402

AS_OF = 1772355600000  # 2026-03-01T09:00:00Z
AS_OF_SQL = "(timestamptz '2026-03-01 09:00:00+00')"
DAY = 86400000

PARTNERS_SQL = """
INSERT INTO "Partners" ("Id", "BusinessName", "RegistrationNumber", "Logo", "Address",
    "Phone", "Email", "RevenueSharePercentage", "IsActive", "CreatedAt", "UpdatedAt",
    "OnboardingState")
SELECT i, 'Partner ' || i, 'RC' || i, '', 'Somewhere 1', '+10000000', 'p' || i || '@example.com',
    10, i %% 20 <> 0, ts, ts,
    CASE WHEN i %% 5 < 2 THEN 'activated'
         ELSE (ARRAY['signed_up', 'email_verified', 'sandbox_active'])[i %% 3 + 1] END
FROM (SELECT i, %(as_of)s - ((i::bigint * 7919) %% (60 * 86400)) * interval '1 second' AS ts
      FROM generate_series(1, %(n)d) i) g
"""

REQUESTS_SQL = """
INSERT INTO "ApiRequestLogs" ("PartnerId", "RequestId", "Method", "Path", "StatusCode",
    "DurationMs", "IpAddress", "UserAgent", "RequestBytes", "ResponseBytes", "Environment",
    "OccurredAt", "CreatedAt")
SELECT (r %% %(half)d) * 2 + 1, 'req-' || r, 'GET', '/api/v1/wallets', 200, r %% 300,
    '10.0.0.1', 'Steller.Sdk/2.3', 512, 2048, 'sandbox', t, t
FROM (SELECT r, %(as_of)s - ((r::bigint * 104729) %% (60 * 86400)) * interval '1 second' AS t
      FROM generate_series(1, %(m)d) r) g
"""

SENT_SQL = """
INSERT INTO "EmailDeliveries" ("PartnerId", "Kind", "DedupKey", "ToAddress", "Subject",
    "Transport", "Status", "Attempts", "SentAt")
SELECT "Id", 'reengagement', 'reengagement:' || "Id" || ':d3', "Email", 'Hi', 'log', 'sent', 1,
    now() FROM "Partners" WHERE "Id" % 10 = 0
"""

def ts(ms):
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(ms // 1000))


def step(what, fn):
    t0 = time.monotonic()
    fn()
    print("  %-44s %6.1f s" % (what, time.monotonic() - t0), flush=True)


def load(pg, n, m):
    harness.migrate(pg)
    c = pg.client()
    cur = c.cursor()
    step("partners: %d" % n, lambda: cur.execute(PARTNERS_SQL % {"as_of": AS_OF_SQL, "n": n}))
    cur.execute('DROP INDEX "IX_ApiRequestLogs_RequestId", '
                '"IX_ApiRequestLogs_PartnerId_OccurredAt"')
    step("request logs: %d (no indexes)" % m, lambda: cur.execute(
        REQUESTS_SQL % {"as_of": AS_OF_SQL, "m": m, "half": n // 2}))
    step("index (PartnerId, OccurredAt)", lambda: cur.execute(
        'CREATE INDEX "IX_ApiRequestLogs_PartnerId_OccurredAt" '
        'ON "ApiRequestLogs" ("PartnerId", "OccurredAt")'))
    step("unique index (RequestId)", lambda: cur.execute(
        'CREATE UNIQUE INDEX "IX_ApiRequestLogs_RequestId" ON "ApiRequestLogs" ("RequestId")'))
    step("sent d3 emails (every 10th partner)", lambda: cur.execute(SENT_SQL))
    step("VACUUM ANALYZE", lambda: cur.execute("VACUUM ANALYZE"))
    c.close()


def sweep(r, w, args):
    jid, raw = harness.envelope("reengagement.sweep", args)
    t0 = time.monotonic()
    harness.enqueue(r, [raw])
    pat = re.compile(r'msg="reengagement sweep done" jid=%s (.*)' % re.escape(jid))

    def found():
        mt = pat.search(w.log())
        return mt and dict(kv.split("=", 1) for kv in mt.group(1).split())
    res = w.wait_for(found, 1800, "the sweep")
    res["wall_s"] = "%.2f" % (time.monotonic() - t0)
    return res


def reset(pg, r):
    """Back to the state before the sweep: its rows and its jobs gone."""
    pg.query('DELETE FROM "EmailDeliveries" WHERE "Status" = \'pending\'')
    pg.query('VACUUM ANALYZE "EmailDeliveries"')
    r.delete("%s:queue:email" % harness.PREFIX)


def medians(runs):
    stages = [k for k in runs[0] if re.fullmatch(r"d\d+", k)]
    out = []
    for k in stages + ["total"]:
        key = k + "_ms" if k != "total" else None
        vals = sorted(float(x["wall_s"]) if key is None else int(x[key]) / 1000 for x in runs)
        out.append("%s %.2f s" % (k if key else "wall", vals[len(vals) // 2]))
    print("median of %d sweeps: %s  (per run: %s)" % (
        len(runs), "  ".join(out),
        "; ".join(" ".join("%.2f" % (int(x[k + "_ms"]) / 1000) for k in stages)
                  for x in runs)), flush=True)


def show(name, res):
    stages = [k for k in res if re.fullmatch(r"d\d+", k)]
    print("%-10s total %-7s %s | orphans %s (%.2f s) | wall %s s" % (
        name, res["total"],
        "  ".join("%s %s (%.2f s)" % (k, res[k], int(res[k + "_ms"]) / 1000) for k in stages),
        res["orphans"], int(res["orphans_ms"]) / 1000, res["wall_s"]), flush=True)


def plans(pg, r, rs, as_of, wcfg):
    """EXPLAIN (ANALYZE, BUFFERS) of the statements jobs/sweep.c really sends, from
    auto_explain in the worker's sessions: the largest count of a dry run (the d14
    stage) and a full batch of the last stage. auto_explain's timing costs time,
    so this runs after the measured sweeps, at a later as_of (new work)."""
    for k, v in (("session_preload_libraries", "auto_explain"),
                 ("auto_explain.log_min_duration", "0"), ("auto_explain.log_analyze", "on"),
                 ("auto_explain.log_buffers", "on")):
        pg.query("ALTER DATABASE steller SET %s = '%s'" % (k, v))
    with open(pg.log_path, "rb") as f:
        f.seek(0, 2)
        start = f.tell()
    with harness.Worker(rs, **wcfg) as w:
        sweep(r, w, {"as_of": as_of, "dry_run": True})
        sweep(r, w, {"as_of": as_of})
    pg.query("ALTER DATABASE steller RESET ALL")
    with open(pg.log_path, "rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    found = []
    for m in re.finditer(r"duration: ([\d.]+) ms  plan:\n(.*?)(?=\n\S)", text, re.S):
        found.append((float(m.group(1)), m.group(2)))
    counts = [p for p in found if 'count(*) FROM "Partners"' in p[1]]
    batches = [p for p in found if "WITH cand AS" in p[1]]
    # The last stage's window ends 14 days before as_of: the first batch of the
    # chunk that ends there reads from the chunk's start (cursor -infinity), the
    # costliest place for a plan.
    hi = ts(as_of - 14 * DAY)
    d14 = [p for p in batches if "<= '%s'" % hi in p[1]]
    for title, p in (("dry run: the largest stage count (d14)", max(counts)),
                     ("the first batch of the last chunk of the last stage (d14)", d14[0])):
        print("\n-- %s: %.1f ms\n%s" % (title, p[0], p[1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partners", type=int, default=1000000)
    ap.add_argument("--requests", type=int, default=10000000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2)
    a = ap.parse_args()
    wcfg = dict(workers=1, database={"url": None}, queues=[{"name": "default"}], schedule=[],
                reengagement={"parallel": a.parallel})
    with harness.RedisServer() as rs, harness.PostgresServer(args=[
            "-c", "shared_buffers=1GB", "-c", "maintenance_work_mem=512MB",
            "-c", "max_wal_size=8GB"]) as pg:
        print("loading", flush=True)
        load(pg, a.partners, a.requests)
        r = rs.client()
        wcfg["database"]["url"] = pg.url()
        with harness.Worker(rs, **wcfg) as w:
            w.wait_for(lambda: "postgresql connection up" in w.log(), 30, "PostgreSQL")
            show("dry run", sweep(r, w, {"as_of": AS_OF, "dry_run": True}))
            runs = [sweep(r, w, {"as_of": AS_OF})]
            show("sweep", runs[0])
            print("           email jobs in Redis: %d" % harness.queue_len(r, "email"))
            show("again", sweep(r, w, {"as_of": AS_OF}))
            for i in range(1, a.runs):
                reset(pg, r)
                runs.append(sweep(r, w, {"as_of": AS_OF}))
                show("sweep %d" % (i + 1), runs[-1])
            medians(runs)
        plans(pg, r, rs, AS_OF + DAY, wcfg)
        harness._cleanup_test(False)


if __name__ == "__main__":
    main()
