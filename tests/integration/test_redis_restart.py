"""Redis going away mid-run: the workers reconnect when it is back and, since
the data survives (appendonly yes), every job completes: the ones queued, the
ones in flight at the outage, and new ones pushed after it."""

from harness import *


def test_jobs_complete_across_a_redis_restart():
    n, extra = 20000, 1000
    with RedisServer(appendonly=True) as rs:
        r = rs.client()
        jids = enqueue_many(r, "sys.noop", n, prefix="rr")
        with Worker(rs, workers=2, concurrency=32) as w:
            w.wait_for(lambda: stats(r)["processed"] > 0, 20, "the first jobs processed")
            at_stop = stats(r)["processed"]
            rs.restart(down_for=1.0)
            print("  redis restarted with %d of %d processed before the stop" % (at_stop, n))
            r = rs.client()
            assert w.running(), "master exited during the outage"
            # New work after the outage proves the pool reconnected whatever the
            # timing of the stop was.
            jids += enqueue_many(r, "sys.noop", extra, prefix="rr-after")
            total = n + extra
            w.wait_for(lambda: stats(r)["processed"] >= total, 90, "processed >= %d" % total)
            w.wait_for(lambda: not locate_jids(r, jids), 20,
                       "no job left in any queue, processing list, retry or dead")
            st = stats(r)
            assert st["processed"] >= total and st["dead"] == 0, st
            assert w.running()
            assert w.children(), "no worker processes"


if __name__ == "__main__":
    main()
