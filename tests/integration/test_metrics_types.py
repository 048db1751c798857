"""test_metrics_types.py - per-type runs and histograms on /metrics and
/stats.json (worker/jobstats.c, shipped to the master over a pipe).

Runs sys.noop, sys.fail (transient and permanent) and sys.sleep jobs on a
real steller-worker against a real redis-server, then checks the counters by
outcome, the histogram buckets, that promtool accepts the text, and that the
figures never go backwards when a worker is killed or the config reloaded.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from test_http import get, parse_metrics  # noqa: E402

FAIL_TYPE = {"name": "sys.fail", "max_attempts": 2, "backoff_base": 0.2,
             "backoff_factor": 0.01, "backoff_cap": 1.0}


def sample(m, name, **labels):
    return m.get((name, frozenset((k, '"%s"' % v) for k, v in labels.items())))


def runs(m, type, outcome):
    return sample(m, "steller_job_runs_total", type=type, outcome=outcome)


def scrape(w):
    status, text = get(w, "/metrics")
    assert status == 200, (status, text)
    return text, parse_metrics(text)


def counters(m):
    """Every counter-like sample: runs, bucket counts, _count."""
    return {k: v for k, v in m.items()
            if k[0] == "steller_job_runs_total" or k[0].endswith("_bucket")
            or k[0].endswith("_count")}


def assert_not_backwards(before, after):
    for k, v in before.items():
        assert after.get(k, 0) >= v, "%s went from %s to %s" % (k, v, after.get(k))


def promtool_ok(text):
    if not shutil.which("promtool"):
        print("note: promtool not installed (Debian package prometheus); skipped")
        return
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert p.returncode == 0, p.stdout.decode() + text


def want(w, pred, what, timeout=20):
    """Waits for a scrape whose samples satisfy pred (the endpoint may not listen yet)."""
    def once():
        status, text = get(w, "/metrics")
        m = parse_metrics(text) if status == 200 else None
        return m if m is not None and pred(m) else None
    return w.wait_for(once, timeout, what)


def expected(m, noop=5):
    return (runs(m, "sys.noop", "ok") == noop and runs(m, "sys.sleep", "ok") == 3
            and runs(m, "sys.fail", "retried") == 1 and runs(m, "sys.fail", "dead") == 2)


def enqueue_mix(r):
    enqueue_many(r, "sys.noop", 5)
    enqueue_many(r, "sys.sleep", 3, args={"ms": 200})
    enqueue(r, [envelope("sys.fail", {"message": "t", "permanent": False})[1],
                envelope("sys.fail", {"message": "p", "permanent": True})[1]])


def test_runs_by_type_and_outcome_with_histograms_and_promtool():
    with RedisServer() as rs, Worker(rs, workers=2, concurrency=8,
                                     types=[dict(FAIL_TYPE)]) as w:
        enqueue_mix(rs.client())
        m = want(w, expected, "per-type counters")
        text, m = scrape(w)
        for outcome in ("retried", "dead"):
            assert runs(m, "sys.noop", outcome) == 0, text
        assert runs(m, "sys.fail", "ok") == 0, text

        b = lambda le: sample(m, "steller_job_duration_seconds_bucket", type="sys.sleep", le=le)
        assert b("0.1") == 0, text
        assert b("0.25") == 3 and b("+Inf") == 3, text
        assert sample(m, "steller_job_duration_seconds_count", type="sys.sleep") == 3
        s = sample(m, "steller_job_duration_seconds_sum", type="sys.sleep")
        assert 0.59 <= s <= 0.75, s
        assert sample(m, "steller_job_duration_seconds_count", type="sys.noop") == 5
        assert sample(m, "steller_job_duration_seconds_count", type="sys.fail") == 3
        # Every run started after created_at: one wait per run (the retry too).
        assert sample(m, "steller_job_wait_seconds_count", type="sys.noop") == 5, text
        assert sample(m, "steller_job_wait_seconds_count", type="sys.fail") == 3, text
        assert sample(m, "steller_job_wait_seconds_bucket", type="sys.noop", le="+Inf") == 5
        promtool_ok(text)

        status, body = get(w, "/stats.json")
        assert status == 200, body
        types = json.loads(body)["types"]
        assert types["sys.noop"]["runs"] == {"ok": 5, "retried": 0, "dead": 0, "deferred": 0}, types
        assert types["sys.fail"]["runs"]["dead"] == 2, types
        d = types["sys.sleep"]["duration_seconds"]
        assert d["count"] == 3 and d["buckets"]["0.25"] == 3 and d["buckets"]["0.1"] == 0, d


def test_counters_survive_a_killed_worker_and_a_reload():
    with RedisServer() as rs, Worker(rs, workers=2, concurrency=8,
                                     types=[dict(FAIL_TYPE)]) as w:
        r = rs.client()
        enqueue_mix(r)
        want(w, expected, "per-type counters")
        before = counters(scrape(w)[1])

        kids = w.wait_children(2)
        victim = sorted(kids)[0]
        os.kill(victim, signal.SIGKILL)
        w.wait_for(lambda: (lambda k: len(k) == 2 and victim not in k)(w.children()), 20,
                   "a replacement worker")
        for _ in range(3):  # across the death, the fold and the newcomer's first snapshots
            assert_not_backwards(before, counters(scrape(w)[1]))
            time.sleep(0.5)

        w.signal(signal.SIGHUP)
        time.sleep(0.3)
        for _ in range(6):  # old workers drain and exit, new ones start from zero
            assert_not_backwards(before, counters(scrape(w)[1]))
            time.sleep(0.5)

        enqueue_many(r, "sys.noop", 2)
        want(w, lambda m: expected(m, noop=7), "sys.noop ok == 7 after kill and reload")
        text, m = scrape(w)
        assert_not_backwards(before, counters(m))
        promtool_ok(text)


if __name__ == "__main__":
    main()
