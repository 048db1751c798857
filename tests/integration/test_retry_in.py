"""test_retry_in.py - job_retry_in(): a retry due after a delay the handler
chooses, spending an attempt (a provider's Retry-After) or not (a transport
known to be down), driven through the debug type sys.retry_in (jobs/sys.c).

- spend=true: counted like JOB_RETRY (attempt + 1, P:stats:failed, outcome
  "retried"), due after the given delay instead of the backoff, dead once the
  attempts run out;
- spend=false: back to P:retry with the attempt count unchanged, error and
  retry_at written, not counted in P:stats:failed, outcome "deferred" in
  /metrics and /stats.json.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from test_http import get, parse_metrics  # noqa: E402


def type_runs(w, name):
    status, body = get(w, "/stats.json")
    assert status == 200, body
    return json.loads(body)["types"].get(name, {}).get("runs", {})


def deferred_metric(w):
    status, text = get(w, "/metrics")
    assert status == 200, text
    m = parse_metrics(text)
    return m.get(("steller_job_runs_total",
                  frozenset({("type", '"sys.retry_in"'), ("outcome", '"deferred"')})))


def test_deferral_keeps_the_attempt_and_is_not_counted_as_failed():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        r = rs.client()
        jid, raw = envelope("sys.retry_in", {"ms": 1500, "spend": False,
                                             "message": "transport down"},
                            jid=unique_jid("defer"))
        t0 = now_ms()
        enqueue(r, [raw])
        env, score = w.wait_for(lambda: next(iter(retry_entries(r)), None), 10,
                                "the job in P:retry")
        assert env["jid"] == jid, env
        assert env["attempt"] == 0, env
        assert env["error"] == "transport down", env
        assert "failed_at" not in env, env
        assert env["retry_at"] == int(score), (env, score)
        assert t0 + 1500 <= score <= now_ms() + 1500, (t0, score)
        assert stats(r)["failed"] == 0, stats(r)
        assert stats(r)["dead"] == 0, stats(r)

        # It comes back when due and defers again: still attempt 0, never failed.
        w.wait_for(lambda: type_runs(w, "sys.retry_in").get("deferred", 0) >= 2, 15,
                   "a second deferral")
        env2, _ = w.wait_for(lambda: next(iter(retry_entries(r)), None), 10,
                             "the job back in P:retry")
        assert env2["attempt"] == 0, env2
        runs = type_runs(w, "sys.retry_in")
        assert runs["retried"] == 0 and runs["dead"] == 0, runs
        assert stats(r)["failed"] == 0, stats(r)
        w.wait_for(lambda: (deferred_metric(w) or 0) >= 2, 5,
                   "steller_job_runs_total{outcome=deferred} in /metrics")


def test_spent_attempts_follow_the_delay_and_go_dead_at_the_limit():
    with RedisServer() as rs, Worker(rs, workers=1, engine={"promote_interval": 0.05}) as w:
        r = rs.client()
        jid, raw = envelope("sys.retry_in", {"ms": 700, "spend": True,
                                             "message": "retry after 0.7 s"},
                            jid=unique_jid("spend"), max_attempts=3)
        t0 = time.monotonic()
        enqueue(r, [raw])
        env, score = w.wait_for(lambda: next(iter(retry_entries(r)), None), 10,
                                "the first retry")
        assert env["attempt"] == 1, env
        # The handler's delay, not the backoff (15 s or more for a first retry).
        assert 600 <= env["retry_at"] - env["failed_at"] <= 800, env
        rec = w.wait_for(lambda: next(iter(dead_records(r)), None), 15, "the job in P:dead")
        took = time.monotonic() - t0
        assert rec["jid"] == jid and rec["attempt"] == 3, rec
        assert rec["error"] == "retry after 0.7 s", rec
        assert 1.3 <= took <= 8, "two 0.7 s retries took %.1f s" % took
        st = stats(r)
        assert st["failed"] == 3 and st["dead"] == 1, st
        w.wait_for(lambda: type_runs(w, "sys.retry_in") == {
            "ok": 0, "retried": 2, "dead": 1, "deferred": 0}, 5, "runs by outcome")


def test_bad_args_go_dead():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        r = rs.client()
        jid, raw = envelope("sys.retry_in", {"ms": "soon"}, jid=unique_jid("bad"))
        enqueue(r, [raw])
        rec = w.wait_for(lambda: next(iter(dead_records(r)), None), 10, "the job in P:dead")
        assert "args.ms" in rec["error"], rec


if __name__ == "__main__":
    main()
