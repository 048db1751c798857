"""stellerctl's operator verbs against a real redis-server and, where a job has
to run or fail, the real steller-worker: dead ls/show/retry/purge, retry
ls/now, queue pause/resume, workers, stats --watch, their --json output and
their exit codes (0 ok, 1 not found, 2 usage, 3 Redis unreachable)."""

import json
import os
import subprocess
import threading
import time

import msgpack

from harness import *

FAIL_TYPE = {"name": "sys.fail", "max_attempts": 3, "backoff_base": 0.2,
             "backoff_factor": 0.01, "backoff_cap": 1.0}
# A retry that waits an hour: the job sits in P:retry until `retry now`.
SLOW_FAIL_TYPE = {"name": "sys.fail", "max_attempts": 5, "backoff_base": 3600.0,
                  "backoff_factor": 0.01, "backoff_cap": 7200.0}
FAILURE_KEYS = ("error", "failed_at", "retry_at", "crashes")
DEAD = "%s:dead" % PREFIX
RETRY = "%s:retry" % PREFIX


def ctl(rs, *args, env=None, url=None):
    """Runs stellerctl against rs; returns (exit code, stdout, stderr)."""
    e = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    e.update(env or {})
    p = subprocess.run([CTL_BIN, "--redis", url or rs.url()] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, env=e, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def ok(rs, *args, **kw):
    rc, out, err = ctl(rs, *args, **kw)
    assert rc == 0, "stellerctl %s: exit %d\nstdout: %s\nstderr: %s" % (
        " ".join(args), rc, out, err)
    return out


def ok_json(rs, *args, **kw):
    out = ok(rs, *args, **kw)
    try:
        return json.loads(out)
    except ValueError:
        raise AssertionError("stellerctl %s: not JSON: %r" % (" ".join(args), out[:500]))


def dead_record(jid, type="sys.noop", queue="default", failed_at=None, **extra):
    """A dead record as a worker writes it: the envelope plus the failure's keys."""
    rec = {"jid": jid, "type": type, "args": extra.pop("args", {}), "queue": queue,
           "created_at": now_ms() - 60000, "attempt": 3}
    if queue is None:
        del rec["queue"]
    rec.update(extra)
    rec.setdefault("error", "it broke")
    rec["failed_at"] = failed_at if failed_at is not None else now_ms()
    return msgpack.packb(rec, use_bin_type=True)


def malformed_record(jid, raw, failed_at=None):
    return msgpack.packb({"jid": jid, "error": "missing required key 'type'",
                          "failed_at": failed_at or now_ms(), "malformed": True, "raw": raw},
                         use_bin_type=True)


def queue_items(r, queue="default"):
    """P:queue:<queue> decoded, oldest (next to run) first."""
    return [decode(x) for x in reversed(r.lrange("%s:queue:%s" % (PREFIX, queue), 0, -1))]


def dead_jids(r):
    return [rec.get("jid") for rec in dead_records(r)]


def wait_dead(w, r, n):
    return w.wait_for(lambda: (lambda d: d if len(d) >= n else None)(dead_records(r)), 30,
                      "%d records in P:dead" % n)


def table_rows(out):
    """The lines of a table after its header."""
    lines = [x for x in out.splitlines() if x.strip()]
    return lines[1:]


# ---------------------------------------------------------------- dead ls / show

def test_dead_ls_and_show_on_records_of_real_failures():
    with RedisServer() as rs, Worker(rs, workers=1, types=[dict(FAIL_TYPE)]) as w:
        r = rs.client()
        long_error = "line one of a long error\nthen " + "x" * 300
        jobs = [("first", {"message": "boom", "permanent": True}),
                ("second", {"message": long_error, "permanent": True})]
        jids = []
        for name, args in jobs:
            jid, raw = envelope("sys.fail", args, jid=unique_jid(name), x_origin="api-eu-1")
            enqueue(r, [raw])
            jids.append(jid)
            wait_dead(w, r, len(jids))
        bad_raw = msgpack.packb({"jid": "bad-one", "args": {}}, use_bin_type=True)
        enqueue(r, [bad_raw])
        wait_dead(w, r, 3)
        records = dead_records(r)
        assert [x["jid"] for x in records] == ["bad-one", jids[1], jids[0]], records

        # table: newest first, one line per record, cut to the terminal's width
        out = ok(rs, "dead", "ls", env={"COLUMNS": "120"})
        rows = table_rows(out)
        assert len(rows) == 3, out
        assert out.splitlines()[0].split() == ["JID", "TYPE", "QUEUE", "ATTEMPT", "FAILED",
                                               "AT", "ERROR"], out
        assert rows[0].startswith("bad-one") and "(malformed" in rows[0], rows
        assert "missing required key 'type'" in rows[0], rows
        assert rows[1].startswith(jids[1]) and rows[1].endswith("..."), rows
        assert "line one of a long error then" in rows[1], rows
        assert rows[2].startswith(jids[0]) and rows[2].rstrip().endswith("boom"), rows
        assert all(len(x) <= 120 for x in out.splitlines()), out
        assert " sys.fail " in rows[2] and " default " in rows[2], rows

        # --json: whole errors, times in ms and UTC
        listing = ok_json(rs, "dead", "ls", "--json")
        assert [x["jid"] for x in listing] == ["bad-one", jids[1], jids[0]], listing
        # sys.fail keeps 255 bytes of its message: still far more than a table line
        assert listing[1]["error"] == records[1]["error"], listing[1]
        assert len(listing[1]["error"]) > 200 and "\n" in listing[1]["error"], listing[1]
        assert listing[1]["failed_at"] == records[1]["failed_at"], listing[1]
        assert listing[1]["failed_at_utc"] == time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(records[1]["failed_at"] // 1000)) + ".%03dZ" % (
            records[1]["failed_at"] % 1000), listing[1]
        assert listing[2]["attempt"] == 1 and listing[2]["type"] == "sys.fail", listing[2]
        assert listing[0]["malformed"] is True and listing[0]["raw_bytes"] == len(bad_raw)
        assert listing[1]["malformed"] is False

        # filters
        assert [x["jid"] for x in ok_json(rs, "dead", "ls", "--type", "sys.fail", "--json")] \
            == [jids[1], jids[0]]
        assert ok_json(rs, "dead", "ls", "--type", "sys.noop", "--json") == []
        assert [x["jid"] for x in ok_json(rs, "dead", "ls", "--limit", "1", "--json")] == \
            ["bad-one"]
        assert "no dead jobs" in ok(rs, "dead", "ls", "--type", "email.welcome")

        # show: the whole record, args as JSON, unknown keys too
        shown = ok_json(rs, "dead", "show", jids[0], "--json")
        assert shown == records[2], (shown, records[2])
        assert shown["x_origin"] == "api-eu-1" and shown["args"]["permanent"] is True
        text = ok(rs, "dead", "show", jids[1])
        assert '{"message":"line one of a long error' in text, text
        assert "x_origin" in text and "api-eu-1" in text, text
        assert records[1]["error"].split("\n")[1] in text, "show must not cut the error: " + text
        # a malformed record: its raw bytes in hex
        bad = ok_json(rs, "dead", "show", "bad-one", "--json")
        assert bad["malformed"] is True and bad["raw"] == bad_raw.hex(), bad
        text = ok(rs, "dead", "show", "bad-one")
        assert bad_raw.hex() in text.replace("\n", "").replace(" ", ""), text


def test_dead_ls_pages_through_a_long_list():
    with RedisServer() as rs:
        r = rs.client()
        t0 = now_ms() - 1000000
        for i in range(450):  # oldest pushed first, as workers do
            r.lpush(DEAD, dead_record("p-%03d" % i, failed_at=t0 + i))
        listing = ok_json(rs, "dead", "ls", "--limit", "0", "--json")
        assert [x["jid"] for x in listing] == ["p-%03d" % i for i in range(449, -1, -1)]
        out = ok(rs, "dead", "ls")
        rows = [x for x in table_rows(out) if x.startswith("p-")]
        assert len(rows) == 100 and rows[0].startswith("p-449"), out[:300]
        assert "100 shown of 450" in out, out[-200:]


# ---------------------------------------------------------------- dead retry

def test_dead_retry_resets_the_job_and_the_worker_runs_it():
    with RedisServer() as rs:
        r = rs.client()
        jid = unique_jid("noop")
        r.lpush(DEAD, dead_record(jid, args={"k": [1, "two"]}, x_custom={"keep": True},
                                  retry_at=now_ms() - 5000, crashes=2, max_attempts=7))
        r.lpush(DEAD, dead_record(unique_jid("other"), type="sys.noop"))
        out = ok(rs, "dead", "retry", jid)
        assert jid in out and "%s:queue:default" % PREFIX in out, out
        assert jid not in dead_jids(r) and len(dead_records(r)) == 1
        items = queue_items(r)
        assert len(items) == 1, items
        env = items[0]
        assert env["attempt"] == 0, env
        for k in FAILURE_KEYS:
            assert k not in env, (k, env)
        # every other key kept, in its place
        assert list(env) == ["jid", "type", "args", "queue", "created_at", "attempt",
                             "x_custom", "max_attempts"], list(env)
        assert env["args"] == {"k": [1, "two"]} and env["x_custom"] == {"keep": True}
        assert env["max_attempts"] == 7

        with Worker(rs, workers=1) as w:
            w.wait_for(lambda: stats(r)["processed"] == 1 and queue_len(r) == 0, 15,
                       "the retried job processed")
        assert len(dead_records(r)) == 1


def test_dead_retry_of_a_real_failure_fails_again_with_attempts_from_zero():
    with RedisServer() as rs, Worker(rs, workers=1, types=[dict(FAIL_TYPE)]) as w:
        r = rs.client()
        jid, raw = envelope("sys.fail", {"message": "still broken", "permanent": False},
                            jid=unique_jid("again"), max_attempts=2)
        enqueue(r, [raw])
        first = wait_dead(w, r, 1)[0]
        assert first["attempt"] == 2 and stats(r)["failed"] == 2, first
        out = ok(rs, "dead", "retry", jid)
        assert "retried %s" % jid in out, out

        def died_again():
            recs = dead_records(r)
            return recs if recs and recs[0]["failed_at"] > first["failed_at"] else None
        again = w.wait_for(died_again, 30, "the retried job dead again")
        assert len(again) == 1, again
        # two more attempts: the count started from 0 again
        assert again[0]["attempt"] == 2 and again[0]["error"] == "still broken", again
        assert stats(r)["failed"] == 4, stats(r)


def test_dead_retry_all_and_by_type():
    with RedisServer() as rs:
        r = rs.client()
        bad_raw = b"\x82\xa3jid\xa2mx\xa4args\x80"
        r.lpush(DEAD, dead_record("n1", queue="default"))
        r.lpush(DEAD, dead_record("e1", type="email.welcome", queue="email"))
        r.lpush(DEAD, malformed_record("mx", bad_raw))
        r.lpush(DEAD, dead_record("n2", queue=None))  # no queue key: default
        r.lpush(DEAD, dead_record("c1", type="wallet.seed_sandbox", queue="critical"))

        out = ok(rs, "dead", "retry", "--type", "sys.noop")
        assert "retried 2 dead jobs" in out, out
        assert [e["jid"] for e in queue_items(r)] == ["n1", "n2"], "oldest first"
        assert dead_jids(r) == ["c1", "mx", "e1"]

        rc, out, err = ctl(rs, "dead", "retry", "--all")
        assert rc == 0, (rc, out, err)
        assert "retried 2 dead jobs" in out and "1 malformed" in out, out
        assert "mx" in err and "malformed" in err, err
        assert dead_jids(r) == ["mx"], "a malformed record stays"
        assert [e["jid"] for e in queue_items(r, "email")] == ["e1"]
        assert [e["jid"] for e in queue_items(r, "critical")] == ["c1"]
        assert all(e["attempt"] == 0 and "error" not in e
                   for q in ("default", "email", "critical") for e in queue_items(r, q))

        # naming a malformed record: said, exit 1, left alone
        rc, out, err = ctl(rs, "dead", "retry", "mx")
        assert rc == 1 and "malformed" in err and "cannot be retried" in err, (rc, out, err)
        assert dead_jids(r) == ["mx"]


def test_dead_retry_all_pages_through_a_long_list():
    with RedisServer() as rs:
        r = rs.client()
        for i in range(450):
            r.lpush(DEAD, dead_record("a-%03d" % i))
        out = ok(rs, "dead", "retry", "--all")
        assert "retried 450 dead jobs" in out, out
        assert r.llen(DEAD) == 0
        assert [e["jid"] for e in queue_items(r)] == ["a-%03d" % i for i in range(450)]


# ---------------------------------------------------------------- dead purge

def test_dead_purge_older_than_and_all():
    with RedisServer() as rs:
        r = rs.client()
        now = now_ms()
        r.lpush(DEAD, dead_record("d10", failed_at=now - 10 * 86400000))
        r.lpush(DEAD, malformed_record("m3h", b"\xc1", failed_at=now - 3 * 3600000))
        r.lpush(DEAD, dead_record("h2", failed_at=now - 2 * 3600000))
        r.lpush(DEAD, dead_record("m5", failed_at=now - 5 * 60000))
        r.lpush(DEAD, dead_record("new", failed_at=now))

        out = ok(rs, "dead", "purge", "--older-than", "7d")
        assert "purged 1 " in out, out
        assert dead_jids(r) == ["new", "m5", "h2", "m3h"]
        out = ok(rs, "dead", "purge", "--older-than", "1h")
        assert "purged 2 " in out, out
        assert dead_jids(r) == ["new", "m5"]
        assert "purged 1 " in ok(rs, "dead", "purge", "--older-than", "1m")
        assert "purged 0 " in ok(rs, "dead", "purge", "--older-than", "12h")

        rc, out, err = ctl(rs, "dead", "purge")
        assert rc == 2 and "--yes" in err, (rc, out, err)
        assert dead_jids(r) == ["new"]
        assert "purged 1 " in ok(rs, "dead", "purge", "--yes")
        assert r.llen(DEAD) == 0


def test_dead_purge_pages_through_a_long_list():
    with RedisServer() as rs:
        r = rs.client()
        now = now_ms()
        old = set()
        for i in range(450):  # every third record is a day old
            jid = "q-%03d" % i
            if i % 3 == 0:
                old.add(jid)
            r.lpush(DEAD, dead_record(jid, failed_at=now - (86400000 if i % 3 == 0 else 0)))
        out = ok(rs, "dead", "purge", "--older-than", "1h")
        assert "purged 150 " in out, out
        assert dead_jids(r) == ["q-%03d" % i for i in range(449, -1, -1) if i % 3], \
            dead_jids(r)[:10]
        time.sleep(0.01)
        out = ok(rs, "dead", "purge", "--older-than", "0s")  # full pages, all taken
        assert "purged 300 " in out and r.llen(DEAD) == 0, out


# ---------------------------------------------------------------- retry ls / now

def test_retry_ls_and_retry_now():
    with RedisServer() as rs, Worker(rs, workers=1, types=[dict(SLOW_FAIL_TYPE)]) as w:
        r = rs.client()
        jid, raw = envelope("sys.fail", {"message": "later", "permanent": False},
                            jid=unique_jid("wait"))
        enqueue(r, [raw])
        w.wait_for(lambda: r.zcard(RETRY) == 1, 15, "the job in P:retry")
        (env, score), = retry_entries(r)
        assert score > now_ms() + 1000 * 1000, "due in an hour or so"

        listing = ok_json(rs, "retry", "ls", "--json")
        assert len(listing) == 1, listing
        item = listing[0]
        assert item["jid"] == jid and item["attempt"] == 1 and item["error"] == "later", item
        assert item["due_at"] == int(score) and item["queue"] == "default", item
        out = ok(rs, "retry", "ls")
        row, = table_rows(out)
        assert row.startswith(jid) and " in " in row and "later" in row, out

        out = ok(rs, "retry", "now", jid)
        assert jid in out, out
        # the worker runs it again at once; it fails again, attempt 2
        w.wait_for(lambda: [e for e, _ in retry_entries(r) if e.get("attempt") == 2], 15,
                   "the job back in P:retry after a second failure")
        assert stats(r)["failed"] == 2

        rc, out, err = ctl(rs, "retry", "now", "no-such-jid")
        assert rc == 1 and "no-such-jid" in err, (rc, out, err)
    with RedisServer() as rs:
        assert "no jobs waiting to retry" in ok(rs, "retry", "ls")
        assert ok_json(rs, "retry", "ls", "--json") == []


# ---------------------------------------------------------------- queue pause / resume

def test_queue_pause_stops_fetches_within_a_second():
    with RedisServer() as rs, Worker(rs, workers=2) as w:
        r = rs.client()
        enqueue_many(r, "sys.noop", 10)
        w.wait_for(lambda: stats(r)["processed"] == 10, 15, "warm-up jobs processed")

        assert ok(rs, "queue", "pause", "default").strip() == "queue default paused"
        assert "already paused" in ok(rs, "queue", "pause", "default")
        assert r.sismember("%s:paused" % PREFIX, "default")
        st = ok_json(rs, "stats", "--json")
        assert st["queues"]["default"]["paused"] is True, st
        time.sleep(1.0)  # the contract: within a second of the pause
        enqueue_many(r, "sys.noop", 20)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert stats(r)["processed"] == 10 and queue_len(r) == 20 and in_flight(r) == 0, \
                "a worker took from a paused queue: %r" % stats(r)
            time.sleep(POLL)

        assert ok(rs, "queue", "resume", "default").strip() == "queue default resumed"
        assert "was not paused" in ok(rs, "queue", "resume", "default")
        w.wait_for(lambda: stats(r)["processed"] == 30, 10, "jobs processed after resume")


# ---------------------------------------------------------------- workers

def test_workers_lists_live_processes_and_flags_dead_ones():
    with RedisServer() as rs:
        r = rs.client()
        assert "no workers registered" in ok(rs, "workers")
        assert ok_json(rs, "workers", "--json") == []
        # a wid whose heartbeat hash expired, with two jobs awaiting the reaper
        r.sadd("%s:workers" % PREFIX, "deadhost:4242:abcdef")
        r.lpush("%s:processing:deadhost:4242:abcdef" % PREFIX, b"j1", b"j2")
        gone, = ok_json(rs, "workers", "--json")
        assert gone["alive"] is False and gone["host"] == "deadhost" and gone["pid"] == 4242
        assert gone["processing"] == 2 and gone["beat"] is None, gone
        out = ok(rs, "workers")
        assert "DEAD" in out and "2 jobs await the reaper" in out, out
        r.delete("%s:workers" % PREFIX, "%s:processing:deadhost:4242:abcdef" % PREFIX)

        with Worker(rs, workers=2, concurrency=8) as w:
            kids = w.wait_children(2)
            listing = w.wait_for(
                lambda: (lambda l: l if len(l) == 2 and all(x["alive"] for x in l) else None)(
                    ok_json(rs, "workers", "--json")), 10, "two live workers")
            assert {x["pid"] for x in listing} == kids, (listing, kids)
            for x in listing:
                assert x["queues"] == ["critical", "default", "email", "request_log"], x
                assert x["concurrency"] == 8 and x["busy"] == 0, x
                assert x["wid"].split(":")[1] == str(x["pid"]), x
                assert 0 <= x["beat_age_ms"] < 3000, x
                assert x["host"] and x["started_at"] <= x["beat"], x
            out = ok(rs, "workers")
            rows = table_rows(out)
            assert len(rows) == 2 and all(x.rstrip().endswith("alive") for x in rows), out
            assert all(" 0/8 " in x and " ago " in x for x in rows), out
            for pid in kids:
                assert any(" %d " % pid in x for x in rows), (pid, out)


# ---------------------------------------------------------------- stats --watch

def test_stats_watch_shows_rates_per_second():
    with RedisServer() as rs, Worker(rs, workers=2) as w:
        r = rs.client()
        enqueue_many(r, "sys.sleep", 4000, args={"ms": 50})
        w.wait_for(lambda: stats(r)["processed"] > 0, 15, "jobs flowing")
        t0 = time.monotonic()
        frames = [json.loads(x) for x in ok(rs, "stats", "--watch", "--json", "--iterations",
                                            "3", "--interval", "0.5").splitlines()]
        took = time.monotonic() - t0
        assert len(frames) == 3 and 0.9 < took < 5, (len(frames), took)
        assert frames[0]["rates"] == {"processed": None, "failed": None, "dead": None}
        for a, b in zip(frames, frames[1:]):
            rate = b["rates"]["processed"]
            want = (b["counters"]["processed"] - a["counters"]["processed"]) * 1000.0 / (
                b["time_ms"] - a["time_ms"])
            assert rate > 0 and abs(rate - want) <= 0.25 * want + 5, (rate, want)
            assert b["rates"]["failed"] == 0 and b["rates"]["dead"] == 0, b["rates"]

        out = ok(rs, "stats", "--watch", "--iterations", "2", "--interval", "0.3")
        assert out.count("PER SEC") == 2 and out.count("QUEUE") == 2, out
        lines = [x for x in out.splitlines() if x.startswith("processed")]
        assert lines[0].split()[-1] == "-" and float(lines[1].split()[-1]) >= 0, lines

        # Ctrl-C ends the watch normally
        p = subprocess.Popen([CTL_BIN, "--redis", rs.url(), "stats", "--watch"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        p.send_signal(2)
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0 and b"PER SEC" in out, (p.returncode, err)


# ---------------------------------------------------------------- scripts and exit codes

def _script(name):
    with open(os.path.join(SOURCE_DIR, "worker", "scripts", name)) as f:
        return f.read()


def test_move_scripts_skip_what_is_gone():
    with RedisServer() as rs:
        r = rs.client()
        q = "%s:queue:default" % PREFIX
        rec = dead_record("s1")
        r.lpush(DEAD, rec)
        retry = r.register_script(_script("dead_retry.lua"))
        assert retry(keys=[DEAD, q], args=[rec, b"fresh"]) == 1
        assert retry(keys=[DEAD, q], args=[rec, b"fresh"]) == 0, "the record is gone"
        assert r.lrange(q, 0, -1) == [b"fresh"] and r.llen(DEAD) == 0

        now = r.register_script(_script("retry_now.lua"))
        r.zadd(RETRY, {b"job": 1})
        assert now(keys=[RETRY, q], args=[b"job"]) == 1
        assert now(keys=[RETRY, q], args=[b"job"]) == 0
        assert r.lrange(q, 0, -1) == [b"job", b"fresh"] and r.zcard(RETRY) == 0

        purge = r.register_script(_script("dead_purge.lua"))
        r.lpush(DEAD, b"a", b"b", b"c")
        assert purge(keys=[DEAD], args=[b"a", b"c", b"zz"]) == 2
        assert r.lrange(DEAD, 0, -1) == [b"b"]


def test_dead_retry_and_purge_survive_script_flush():
    """SCRIPT FLUSH between SCRIPT LOAD and EVALSHA: every move still happens once."""
    with RedisServer() as rs:
        r = rs.client()
        p = r.pipeline(transaction=False)
        for i in range(3000):
            p.lpush(DEAD, dead_record("f-%04d" % i, failed_at=now_ms() - 86400000 * (i % 2)))
        p.execute()
        stop = threading.Event()
        flusher_client = rs.client()

        def flusher():
            while not stop.is_set():
                flusher_client.script_flush()
                time.sleep(0.001)
        t = threading.Thread(target=flusher)
        t.start()
        try:
            purged = ok(rs, "dead", "purge", "--older-than", "1h")
            retried = ok(rs, "dead", "retry", "--all")
        finally:
            stop.set()
            t.join()
        assert "purged 1500 " in purged and "retried 1500 dead jobs" in retried, (purged, retried)
        jids = [e["jid"] for e in queue_items(r)]
        assert jids == ["f-%04d" % i for i in range(0, 3000, 2)], jids[:5]
        assert r.llen(DEAD) == 0


def test_exit_codes():
    with RedisServer() as rs:
        r = rs.client()
        r.lpush(DEAD, dead_record("here"))
        for args in (["dead"], ["dead", "frob"], ["dead", "show"], ["dead", "ls", "extra"],
                     ["dead", "ls", "--limit", "x"], ["dead", "ls", "--older-than", "1d"],
                     ["dead", "retry"], ["dead", "retry", "here", "--all"],
                     ["dead", "purge"], ["dead", "purge", "--older-than", "7"],
                     ["dead", "ls", "--bogus"], ["retry"], ["retry", "now"],
                     ["retry", "ls", "--type", "x"], ["queue", "pause"], ["queue", "stop", "x"],
                     ["workers", "extra"], ["stats", "--iterations", "2"],
                     ["stats", "--watch", "--interval", "0"]):
            rc, out, err = ctl(rs, *args)
            assert rc == 2 and "usage:" in err, (args, rc, out, err)
        for args in (["dead", "show", "nope"], ["dead", "retry", "nope"],
                     ["retry", "now", "nope"]):
            rc, out, err = ctl(rs, *args)
            assert rc == 1 and "nope" in err, (args, rc, out, err)
        assert r.llen(DEAD) == 1
        closed = "redis://127.0.0.1:%d/0" % free_port()
        for args in (["dead", "ls"], ["dead", "show", "x"], ["dead", "retry", "--all"],
                     ["dead", "purge", "--yes"], ["retry", "ls"], ["retry", "now", "x"],
                     ["queue", "pause", "default"], ["workers"], ["stats", "--watch"]):
            rc, out, err = ctl(rs, *args, url=closed)
            assert rc == 3, (args, rc, out, err)
        for verb in ("dead", "retry", "queue", "workers"):
            out = ok(rs, verb, "--help")
            assert out.startswith("usage: stellerctl %s" % verb), out


if __name__ == "__main__":
    main()
