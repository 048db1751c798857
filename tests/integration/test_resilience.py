"""Odd states of Redis and of other workers: nothing is lost, run twice or stuck.

- a worker whose heartbeat hash vanished while it runs keeps its jobs: the
  reaper's moves check the heartbeat is still gone;
- SCRIPT FLUSH (or a failover to a server without our scripts): the worker
  reconnects, loads them again and goes on;
- a queue key of the wrong type strands no job that the same fetch took from
  another queue;
- a type name with a NUL byte is an unknown type, not a crash;
- SIGUSR1 / SIGUSR2 move the log level at run time."""

import signal
import time

from harness import *


def _settled(r, n):
    return stats(r)["processed"] >= n and not processing_keys(r)


def test_reaper_leaves_a_live_worker_alone_when_its_heartbeat_key_vanishes():
    with RedisServer() as rs, Worker(rs, workers=2, concurrency=8,
                                      engine={"heartbeat_interval": 2.0,
                                              "heartbeat_ttl": 5.0,
                                              "reaper_interval": 0.2}) as w:
        r = rs.client()
        w.wait_children(2)
        jids = enqueue_many(r, "sys.sleep", 2, args={"ms": 1500}, prefix="live")
        w.wait_for(lambda: in_flight(r) == 2, 10, "both jobs in flight")
        holder = [k for k in processing_keys(r)][0].decode().split(":", 2)[2]
        r.delete("%s:worker:%s" % (PREFIX, holder))
        # The other worker's reaper sees the hash gone; its moves must refuse
        # while the heartbeat returns, which the holder renews within 2 s.
        w.wait_for(lambda: _settled(r, 2), 10, "both jobs processed")
        assert stats(r)["processed"] == 2, stats(r)
        assert not locate_jids(r, jids)
        assert "reclaimed while it ran" not in w.log()


def test_script_flush_is_survived():
    with RedisServer() as rs, Worker(rs, workers=1, concurrency=8) as w:
        r = rs.client()
        w.wait_children(1)
        first = enqueue_many(r, "sys.noop", 10, prefix="before")
        w.wait_for(lambda: _settled(r, 10), 10, "first jobs processed")
        r.script_flush()
        later = enqueue_many(r, "sys.noop", 10, prefix="after")
        w.wait_for(lambda: _settled(r, 20), 15, "jobs after SCRIPT FLUSH processed")
        assert not locate_jids(r, first + later)
        assert "lost our scripts" in w.log() or "NOSCRIPT" in w.log()


def test_a_wrong_type_queue_key_strands_no_job():
    with RedisServer() as rs:
        r = rs.client()
        r.set("%s:queue:email" % PREFIX, "not a list")
        jids = enqueue_many(r, "sys.noop", 5, queue="critical", prefix="crit")
        jids += enqueue_many(r, "sys.noop", 5, queue="request_log", prefix="rl")
        with Worker(rs, workers=1, concurrency=32) as w:
            w.wait_for(lambda: _settled(r, 10), 10, "jobs around the bad key processed")
            assert not locate_jids(r, jids)
            assert r.get("%s:queue:email" % PREFIX) == b"not a list"


def test_type_with_a_nul_byte_is_unknown_not_a_crash():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        r = rs.client()
        kids = w.wait_children(1)
        jid, raw = envelope("sys.noop\x00x")
        enqueue(r, [raw])
        w.wait_for(lambda: r.llen("%s:dead" % PREFIX) == 1, 10, "the job dead-lettered")
        rec = dead_records(r)[0]
        assert rec["jid"] == jid and "unknown job type" in rec["error"], rec
        assert w.children() == kids, "a worker process died"


def test_sigusr1_and_sigusr2_change_the_log_level():
    with RedisServer() as rs, Worker(rs, workers=1, log_level="info") as w:
        w.wait_children(1)
        w.signal(signal.SIGUSR1)
        w.wait_for(lambda: w.log().count("threshold=debug") == 2, 5,
                   "master and worker at debug")
        w.signal(signal.SIGUSR2)
        w.wait_for(lambda: w.log().count("threshold=info") == 2, 5,
                   "master and worker back at info")
        w.signal(signal.SIGUSR2)
        w.wait_for(lambda: w.log().count("threshold=warn") == 2, 5,
                   "master and worker at warn")
        assert w.running() and len(w.children()) == 1


if __name__ == "__main__":
    main()
