"""The request_log writer against a real PostgreSQL: batched COPY into
"ApiRequestLogs", acknowledged only after the commit.

- 100,000 entries: exactly 100,000 rows, field for field; a repeated
  request_id adds no row;
- poisoned entries among good ones: each poisoned one dead with its reason,
  every good one written;
- PostgreSQL stopped mid-run and started again: no row lost, none doubled;
- kill -9 of a worker process mid-batch: no row lost, none doubled."""

import datetime
import ipaddress
import json

import msgpack
import subprocess
import os
import signal
import time

from harness import *

BASE_MS = 1795749015000


def entry(i, **over):
    args = {
        "request_id": "req-%07d" % i,
        "partner_id": (i % 97) or None,
        "method": ("GET", "POST", "DELETE")[i % 3],
        "path": "/api/v1/wallets/%d?x=a\tb" % i if i % 11 == 0 else "/api/v1/wallets/%d" % i,
        "status": (200, 201, 404, 500)[i % 4],
        "duration_ms": i % 5000,
        "ip": None if i % 7 == 0 else ("10.1.%d.%d" % (i // 250 % 250, i % 250)
                                       if i % 2 else "2001:db8::%x" % (i % 65536)),
        "user_agent": None if i % 5 == 0 else "steller-sdk/1.%d \u00e9\\x" % (i % 10),
        "request_bytes": i * 3,
        "response_bytes": i * 7 + 2 ** 33,
        "environment": "sandbox" if i % 2 else "production",
        "occurred_at": BASE_MS + i,
    }
    args.update(over)
    return args


def push(r, entries, jid_prefix="rl"):
    raws = []
    for n, args in enumerate(entries):
        raws.append(envelope("request_log", args, jid="%s-%d-%s" % (jid_prefix, n, args.get(
            "request_id")), queue="request_log")[1])
    enqueue(r, raws, queue="request_log", chunk=5000)


def rows(pg):
    return pg.query('SELECT "PartnerId", "RequestId", "Method", "Path", "StatusCode", '
                    '"DurationMs", host("IpAddress"), "UserAgent", "RequestBytes", '
                    '"ResponseBytes", "Environment", "OccurredAt" FROM "ApiRequestLogs"')


def expected_row(a):
    ts = datetime.datetime.fromtimestamp(a["occurred_at"] / 1000, datetime.timezone.utc)
    return (a["partner_id"], a["request_id"], a["method"], a["path"], a["status"],
            a["duration_ms"], a["ip"] and str(ipaddress.ip_address(a["ip"])), a["user_agent"], a["request_bytes"],
            a["response_bytes"], a["environment"], ts)


def count(pg):
    return pg.query('SELECT count(*), count(DISTINCT "RequestId") FROM "ApiRequestLogs"')[0]


def count_offline(r):
    return stats(r)["processed"]


def pg_status(w):
    """(up, down) as `stellerctl stats --json` reports PostgreSQL."""
    out = subprocess.run([CTL_BIN, "-c", w.conf_path, "stats", "--json"], capture_output=True,
                         text=True, check=True).stdout
    pg = json.loads(out)["postgresql"]
    return pg["up"], pg["down"]


def rl_worker(rs, pg, **over):
    cfg = {"workers": 2, "concurrency": 1000, "database": {"url": pg.url()},
           "request_log": {"batch_max": 1000, "batch_wait_ms": 20}}
    cfg.update(over)
    return Worker(rs, **cfg)


def settled(r, pg, n):
    return (queue_len(r, "request_log") == 0 and not processing_keys(r)
            and r.zcard("%s:retry" % PREFIX) == 0 and count(pg)[0] >= n)


def test_100k_entries_become_100k_rows_field_for_field():
    n = 100000
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        entries = [entry(i) for i in range(n)]
        push(r, entries)
        # the same request ids again (a replay): no row may be added
        push(r, [entry(i) for i in range(0, n, 1000)], jid_prefix="replay")
        with rl_worker(rs, pg) as w:
            w.wait_for(lambda: settled(r, pg, n) and stats(r)["processed"] >= n + 100, 120,
                       "all entries written")
        assert count(pg) == (n, n)
        got = {row[1]: row for row in rows(pg)}
        for a in entries:
            want = expected_row(a)
            assert got[a["request_id"]] == want, (got[a["request_id"]], want)
        assert r.llen("%s:dead" % PREFIX) == 0, dead_records(r)[:3]


def test_poisoned_entries_die_alone_and_the_rest_is_written():
    poison = {
        "missing request_id": entry(1, request_id=None),
        "status 42": entry(2, status=42),
        "status as text": entry(3, status="200"),
        "bad ip": entry(4, ip="300.1.1.1"),
        "ip as int": entry(5, ip=167772161),
        "bad environment": entry(6, environment="staging"),
        "occurred_at in seconds": entry(7, occurred_at=1795749015),
        "negative bytes": entry(8, request_bytes=-1),
        "partner_id too big": entry(9, partner_id=2 ** 40),
        "NUL in path": entry(10, path="/a\x00b"),
    }
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        good = [entry(i) for i in range(100, 2100)]
        mixed = good[:1000] + list(poison.values()) + good[1000:]
        push(r, mixed)
        with rl_worker(rs, pg) as w:
            w.wait_for(lambda: settled(r, pg, len(good)) and
                       r.llen("%s:dead" % PREFIX) == len(poison), 60, "good written, poison dead")
        assert count(pg) == (len(good), len(good))
        dead = dead_records(r)
        reasons = sorted(d["error"] for d in dead)
        assert all("args." in e for e in reasons), reasons
        assert len(dead) == len(poison)
        assert {d["type"] for d in dead} == {"request_log"}


def test_postgresql_crash_mid_run_loses_and_doubles_nothing():
    n = 60000
    # synchronous_commit on: a crash must not take back what a COMMIT confirmed
    with RedisServer() as rs, PostgresServer(args=["-c", "synchronous_commit=on"]) as pg:
        migrate(pg)
        r = rs.client()
        push(r, [entry(i) for i in range(n)])
        with rl_worker(rs, pg) as w:
            w.wait_for(lambda: count(pg)[0] > 0, 30, "the first rows written")
            port = pg.port
            pg.crash()
            print("  postgres crashed after %d rows" % count_offline(r))
            w.wait_for(lambda: pg_status(w) == (0, 2), 10, "stats showing postgresql down")
            pg.start(port=port)
            w.wait_for(lambda: pg_status(w) == (2, 0), 20, "stats showing postgresql up")
            w.wait_for(lambda: settled(r, pg, n), 120, "all rows written after the restart")
            assert w.running()
        assert count(pg) == (n, n)
        assert r.llen("%s:dead" % PREFIX) == 0, dead_records(r)[:3]


def test_kill_9_of_a_worker_mid_batch_loses_and_doubles_nothing():
    n = 60000
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        push(r, [entry(i) for i in range(n)])
        with rl_worker(rs, pg) as w:
            kids = w.wait_children(2)
            w.wait_for(lambda: count(pg)[0] > 5000, 30, "some rows written")
            victim = sorted(kids)[0]
            os.kill(victim, signal.SIGKILL)
            w.wait_for(lambda: victim not in w.children() and len(w.children()) == 2, 10,
                       "the killed worker replaced")
            w.wait_for(lambda: settled(r, pg, n), 120, "all rows written after the kill")
        assert count(pg) == (n, n)
        assert r.llen("%s:dead" % PREFIX) == 0, dead_records(r)[:3]


def test_a_database_wide_error_dead_letters_nothing():
    """A read-only database (a failover in progress) refuses every batch: no row is
    to blame, so the batches wait and go in once it is writable again."""
    n = 3000
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        pg.query("ALTER DATABASE steller SET default_transaction_read_only = on")
        r = rs.client()
        push(r, [entry(i) for i in range(n)])
        with rl_worker(rs, pg) as w:
            w.wait_for(lambda: "read-only" in w.log(), 20, "the refusal logged")
            time.sleep(1.0)
            assert count(pg)[0] == 0 and r.llen("%s:dead" % PREFIX) == 0, dead_records(r)[:2]
            pg.query("ALTER DATABASE steller SET default_transaction_read_only = off",
                     dbname="postgres")
            # sessions keep the setting they started with: make the pool reconnect
            pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'steller-worker'", dbname="postgres")
            w.wait_for(lambda: settled(r, pg, n), 60, "all rows written once writable")
        assert count(pg) == (n, n)
        assert r.llen("%s:dead" % PREFIX) == 0


def test_text_postgresql_would_refuse_is_dead_with_an_args_reason():
    """Surrogates, overlong forms and code points past U+10FFFF are not UTF-8 to
    PostgreSQL: caught before the batch, so the rest goes in with one COPY."""
    bad = [b"\xed\xa0\x80", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80"]
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        good = [entry(i) for i in range(500)]
        raws = [envelope("request_log", a, queue="request_log")[1] for a in good]
        for i, b in enumerate(bad):
            a = entry(10000 + i)
            a["user_agent"] = "ua-" + b.decode("utf-8", "surrogateescape")
            raws.append(msgpack.packb({"jid": "bad-%d" % i, "type": "request_log", "args": a,
                                       "queue": "request_log"},
                                      use_bin_type=True, unicode_errors="surrogateescape"))
        enqueue(r, raws, queue="request_log")
        with rl_worker(rs, pg) as w:
            w.wait_for(lambda: settled(r, pg, len(good)) and
                       r.llen("%s:dead" % PREFIX) == len(bad), 30, "good in, bad dead")
        assert count(pg)[0] == len(good)
        assert all("not valid UTF-8" in d["error"] for d in dead_records(r)), dead_records(r)


if __name__ == "__main__":
    main()
