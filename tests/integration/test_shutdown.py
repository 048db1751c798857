"""Graceful shutdown: on SIGTERM the pool stops fetching, waits up to
shutdown_timeout for jobs in flight, pushes the rest back to their queues and
exits 0; a second signal requeues at once. No job is lost either way."""

import signal

from harness import *


def _all_in_flight(r, n):
    return queue_len(r) == 0 and in_flight(r) == n


def _check_nothing_lost(r, jids):
    st = stats(r)
    back = queue_len(r)
    assert not processing_keys(r), "left in processing: %r" % processing_keys(r)
    assert st["processed"] + back == len(jids), \
        "processed %d + queued %d != %d" % (st["processed"], back, len(jids))
    assert r.zcard("%s:retry" % PREFIX) == 0, retry_entries(r)
    assert r.llen("%s:dead" % PREFIX) == 0, dead_records(r)
    queued = [decode(x) for x in r.lrange("%s:queue:default" % PREFIX, 0, -1)]
    assert {e["jid"] for e in queued} <= set(jids)
    assert len({e["jid"] for e in queued}) == len(queued), "a job was requeued twice"
    # Requeueing is not a failure.
    assert all(e.get("attempt", 0) == 0 for e in queued), [e for e in queued if e.get("attempt")]
    return st["processed"], back


def test_sigterm_requeues_jobs_still_running_after_shutdown_timeout():
    with RedisServer() as rs, Worker(rs, workers=2, concurrency=32,
                                      shutdown_timeout=1.0) as w:
        r = rs.client()
        kids = w.wait_children(2)
        jids = enqueue_many(r, "sys.sleep", 20, args={"ms": 2000}, prefix="term")
        w.wait_for(lambda: _all_in_flight(r, 20), 10, "all 20 jobs in flight")
        w.signal(signal.SIGTERM)
        rc = w.wait_exit(1.0 + 5)
        assert rc == 0, "exit status %r" % rc
        wait_for(lambda: not any(pid_alive(p) for p in kids), 3,
                 "worker processes %r to be gone" % sorted(kids))
        processed, back = _check_nothing_lost(r, jids)
        assert back == 20, "2 s jobs cannot finish in a 1 s shutdown; %d requeued" % back


def test_sigterm_lets_short_jobs_finish():
    with RedisServer() as rs, Worker(rs, workers=1, concurrency=32,
                                      shutdown_timeout=10.0) as w:
        r = rs.client()
        w.wait_children(1)
        jids = enqueue_many(r, "sys.sleep", 10, args={"ms": 500}, prefix="short")
        w.wait_for(lambda: _all_in_flight(r, 10), 10, "all 10 jobs in flight")
        w.signal(signal.SIGTERM)
        rc = w.wait_exit(8)
        assert rc == 0, "exit status %r" % rc
        processed, back = _check_nothing_lost(r, jids)
        assert processed == 10, "processed %d, want all 10 to finish within the timeout" \
            % processed


def test_second_sigterm_requeues_at_once():
    with RedisServer() as rs, Worker(rs, workers=1, shutdown_timeout=60.0) as w:
        r = rs.client()
        w.wait_children(1)
        jids = enqueue_many(r, "sys.sleep", 5, args={"ms": 30000}, prefix="twice")
        w.wait_for(lambda: _all_in_flight(r, 5), 10, "all 5 jobs in flight")
        w.signal(signal.SIGTERM)
        # The first signal must not end the wait by itself.
        try:
            w.wait_exit(0.5)
            first_exited = True
        except AssertionError:
            first_exited = False
        assert not first_exited, "exited on the first SIGTERM with 30 s jobs and a 60 s timeout"
        w.signal(signal.SIGTERM)
        rc = w.wait_exit(5)
        assert rc == 0, "exit status %r" % rc
        processed, back = _check_nothing_lost(r, jids)
        assert back == 5, back


def test_sigterm_before_redis_is_reachable_exits_promptly():
    # A worker that never reached Redis holds no job: nothing to wait for.
    with RedisServer() as rs:
        rs.stop()
        w = Worker(rs, workers=2, shutdown_timeout=1.0)
        with w:
            w.wait_children(2)
            w.wait_for(lambda: w.log().count("worker started") == 2, 10,
                       "both workers to log \"worker started\"")
            w.signal(signal.SIGTERM)
            rc = w.wait_exit(1.0 + 5)
            assert rc == 0, "exit status %r" % rc


def test_sigint_is_a_graceful_stop_too():
    with RedisServer() as rs, Worker(rs, workers=2, shutdown_timeout=1.0) as w:
        w.wait_children(2)
        w.signal(signal.SIGINT)
        rc = w.wait_exit(6)
        assert rc == 0, "exit status %r" % rc


if __name__ == "__main__":
    main()
