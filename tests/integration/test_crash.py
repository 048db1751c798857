"""Worker processes that die: the master restarts them, the reaper gives their
in-flight jobs back (at-least-once), and a job that keeps killing its worker
goes dead after poison_limit crashes while the pool stays up."""

import os
import signal

from harness import *

CRASH_MSG = "worker crashed while processing"


def _wid_of(r, pid):
    """The wid whose P:worker:<wid> hash names pid, or None."""
    for wid in r.smembers("%s:workers" % PREFIX):
        h = r.hgetall("%s:worker:%s" % (PREFIX, wid.decode()))
        if h.get(b"pid") and int(h[b"pid"]) == pid:
            return wid.decode()
    return None


def test_sigkill_of_a_worker_mid_run_loses_no_job():
    n = 5000
    with RedisServer() as rs:
        r = rs.client()
        jids = enqueue_many(r, "sys.sleep", n, args={"ms": 20}, prefix="k9")
        with Worker(rs, workers=2, concurrency=64) as w:
            before = w.wait_children(2)

            # A victim holding jobs: its P:processing:<wid> is non-empty.
            def victim():
                for pid in before:
                    wid = _wid_of(r, pid)
                    if wid and r.exists("%s:processing:%s" % (PREFIX, wid)):
                        return pid, wid
                return None

            pid, wid = w.wait_for(victim, 15, "a worker process with jobs in flight")
            key = "%s:processing:%s" % (PREFIX, wid)
            held = r.llen(key)
            os.kill(pid, signal.SIGKILL)
            # What the dead process held stays put until it is reaped.
            held = max(held, r.llen(key))
            done_at_kill = stats(r)["processed"]
            print("  killed pid %d (wid %s) holding %d jobs; %d processed so far"
                  % (pid, wid, held, done_at_kill))

            new = w.wait_for(lambda: (lambda k: k if len(k) == 2 and pid not in k else None)(
                w.children()), 5, "the master to replace pid %d" % pid)
            assert len(new - before) == 1, "children %r -> %r" % (sorted(before), sorted(new))

            w.wait_for(lambda: stats(r)["processed"] >= n, 60, "processed >= %d" % n)
            w.wait_for(lambda: not locate_jids(r, jids), 15,
                       "no job left in any queue, processing list, retry or dead")
            st = stats(r)
            assert st["processed"] >= n, st
            assert st["dead"] == 0 and r.llen("%s:dead" % PREFIX) == 0, dead_records(r)[:3]
            assert st["processed"] <= n + held, \
                "processed %d > %d + %d jobs held by the killed worker" % (
                    st["processed"], n, held)
            assert w.running()


def test_poison_job_goes_dead_after_poison_limit_crashes():
    with RedisServer() as rs, Worker(rs, workers=2, poison_limit=3) as w:
        r = rs.client()
        w.wait_children(2)
        jid, raw = envelope("sys.crash", jid=unique_jid("poison"))
        enqueue(r, [raw])

        def dead_while_pool_serves():
            rec = next((x for x in dead_records(r) if x.get("jid") == jid), None)
            return rec

        rec = w.wait_for(dead_while_pool_serves, 60, "the sys.crash job in P:dead")
        assert rec.get("error") == CRASH_MSG, rec
        assert rec.get("type") == "sys.crash", rec
        # Counted from the master's log: a replacement that crashes within 50 ms can
        # slip between two looks at /proc.
        restarts = w.log().count("worker died; restarting")
        assert restarts == 3, "the master restarted %d workers, want 3 (one per crash)" \
            % restarts
        assert not [k for k in locate_jids(r, [jid]).get(jid, []) if not k.endswith(":dead")]

        # The pool is up: both processes serve, and a noop still runs.
        assert w.running(), "master exited"
        w.wait_children(2)
        jid2, raw2 = envelope("sys.noop", jid=unique_jid("after-poison"))
        enqueue(r, [raw2])
        w.wait_for(lambda: not locate_jids(r, [jid2]) and stats(r)["processed"] >= 1, 15,
                   "the sys.noop after the poison job to be processed")
        assert r.llen("%s:dead" % PREFIX) == 1, dead_records(r)
        assert stats(r)["dead"] == 1, stats(r)


if __name__ == "__main__":
    main()
