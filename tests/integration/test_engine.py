"""Delivery basics: a burst of sys.noop jobs is processed exactly once each
(no failures, so no job has a reason to run twice), and every list the engine
uses is empty afterwards."""

from harness import *

N = 10000


def test_ten_thousand_noop_jobs_processed_once_each():
    with RedisServer() as rs:
        r = rs.client()
        # Half waits in the queue before the workers start (batch fetch), half
        # arrives while they run (blocking fetch).
        jids = enqueue_many(r, "sys.noop", N // 2, prefix="before")
        with Worker(rs, workers=2, concurrency=32) as w:
            w.wait_children(2)
            jids += enqueue_many(r, "sys.noop", N - N // 2, prefix="after")
            w.wait_for(lambda: stats(r)["processed"] >= N, 90,
                       "P:stats:processed to reach %d" % N)
            w.wait_for(lambda: queue_len(r) == 0 and not processing_keys(r), 5,
                       "the queue and every processing list to be empty")
            assert w.running(), "master exited"
            st = stats(r)
            assert st == {"processed": N, "failed": 0, "dead": 0}, st
            assert r.llen("%s:dead" % PREFIX) == 0, dead_records(r)[:3]
            assert r.zcard("%s:retry" % PREFIX) == 0
            left = locate_jids(r, jids)
            assert not left, "jobs left behind: %r" % list(left.items())[:5]


def test_worker_registers_and_heartbeats():
    with RedisServer() as rs, Worker(rs, workers=2) as w:
        r = rs.client()
        kids = w.wait_children(2)

        def registered():
            wids = r.smembers("%s:workers" % PREFIX)
            pids = set()
            for wid in wids:
                h = r.hgetall("%s:worker:%s" % (PREFIX, wid.decode()))
                if h.get(b"pid"):
                    pids.add(int(h[b"pid"]))
            return pids if pids == kids else None

        w.wait_for(registered, 10, "P:workers and P:worker:<wid>.pid to name the children %r"
                   % sorted(kids))
        for wid in r.smembers("%s:workers" % PREFIX):
            key = "%s:worker:%s" % (PREFIX, wid.decode())
            ttl = r.pttl(key)
            assert 0 < ttl <= 2000, "%s has PTTL %d, want 0 < ttl <= heartbeat_ttl" % (key, ttl)


if __name__ == "__main__":
    main()
