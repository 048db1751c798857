"""Failure handling: a transient failure is retried with backoff through
P:retry until max_attempts, then goes dead; a permanent failure goes dead at
once. Unknown envelope keys travel untouched through retries."""

from harness import *

FAIL_TYPE = {"name": "sys.fail", "max_attempts": 3, "backoff_base": 0.2,
             "backoff_factor": 0.01, "backoff_cap": 1.0}


def _worker(rs):
    return Worker(rs, workers=1, types=[dict(FAIL_TYPE)])


def _dead_by_jid(r, jid):
    for rec in dead_records(r):
        if rec.get("jid") == jid:
            return rec
    return None


def test_transient_failure_retried_with_backoff_then_dead():
    with RedisServer() as rs, _worker(rs) as w:
        r = rs.client()
        jid, raw = envelope("sys.fail", {"message": "boom", "permanent": False},
                            jid=unique_jid("transient"))
        enqueue(r, [raw])
        seen_in_retry = []

        def dead_or_watch_retry():
            for env, score in retry_entries(r):
                if env.get("jid") == jid and score > now_ms():
                    seen_in_retry.append((env.get("attempt"), score))
            return _dead_by_jid(r, jid)

        rec = w.wait_for(dead_or_watch_retry, 30, "job %s in P:dead" % jid)
        assert seen_in_retry, "never saw the job in P:retry with a due time in the future"
        attempts = sorted({a for a, _ in seen_in_retry})
        assert set(attempts) <= {1, 2}, "attempt in P:retry: %r, want 1 or 2" % attempts
        assert rec.get("error") == "boom", rec
        assert rec.get("attempt") == 3, "dead record attempt %r, want 3: %r" % (
            rec.get("attempt"), rec)
        assert rec.get("type") == "sys.fail", rec
        assert rec.get("args") == {"message": "boom", "permanent": False}, rec
        assert isinstance(rec.get("failed_at"), int) and rec["failed_at"] > 0, rec
        assert r.zcard("%s:retry" % PREFIX) == 0
        assert queue_len(r) == 0 and not processing_keys(r)
        assert len(dead_records(r)) == 1
        st = stats(r)
        assert st["dead"] == 1, st


def test_permanent_failure_goes_dead_at_once():
    with RedisServer() as rs, _worker(rs) as w:
        r = rs.client()
        jid, raw = envelope("sys.fail", {"message": "boom", "permanent": True},
                            jid=unique_jid("permanent"))
        enqueue(r, [raw])
        retried = []

        def dead():
            if any(env.get("jid") == jid for env, _ in retry_entries(r)):
                retried.append(True)
            return _dead_by_jid(r, jid)

        rec = w.wait_for(dead, 15, "job %s in P:dead" % jid)
        assert not retried, "a permanent failure went through P:retry"
        assert rec.get("error") == "boom", rec
        assert rec.get("attempt") == 1, "dead record attempt %r, want 1: %r" % (
            rec.get("attempt"), rec)
        assert isinstance(rec.get("failed_at"), int) and rec["failed_at"] > 0, rec
        assert r.zcard("%s:retry" % PREFIX) == 0
        assert queue_len(r) == 0 and not processing_keys(r)
        assert stats(r)["dead"] == 1, stats(r)


def test_unknown_envelope_keys_survive_retries():
    with RedisServer() as rs, _worker(rs) as w:
        r = rs.client()
        jid, raw = envelope("sys.fail", {"message": "boom", "permanent": False},
                            jid=unique_jid("extra"), x_custom={"keep": [1, "two"]},
                            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        enqueue(r, [raw])
        rec = w.wait_for(lambda: _dead_by_jid(r, jid), 30, "job %s in P:dead" % jid)
        assert rec.get("x_custom") == {"keep": [1, "two"]}, rec
        assert rec.get("traceparent") == \
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", rec
        assert rec.get("attempt") == 3, rec


def test_envelope_max_attempts_overrides_type():
    with RedisServer() as rs, _worker(rs) as w:
        r = rs.client()
        jid, raw = envelope("sys.fail", {"message": "once", "permanent": False},
                            jid=unique_jid("maxatt"), max_attempts=1)
        enqueue(r, [raw])
        rec = w.wait_for(lambda: _dead_by_jid(r, jid), 15, "job %s in P:dead" % jid)
        assert rec.get("attempt") == 1 and rec.get("error") == "once", rec


if __name__ == "__main__":
    main()
