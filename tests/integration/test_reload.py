"""SIGHUP: the master loads the config again and replaces its workers with
ones that run the new config; the old ones drain. No job is lost or run twice,
and a config that no longer loads is refused while the old one keeps running."""

import signal

from harness import *


def _settled(r, n):
    return stats(r)["processed"] >= n and queue_len(r) == 0 and not processing_keys(r)


def test_sighup_replaces_workers_without_losing_or_repeating_a_job():
    with RedisServer() as rs, Worker(rs, workers=2, concurrency=32) as w:
        r = rs.client()
        old = set(w.wait_children(2))
        jids = enqueue_many(r, "sys.sleep", 2000, args={"ms": 20}, prefix="hup")
        w.wait_for(lambda: stats(r)["processed"] > 0, 10, "some jobs processed")
        w.signal(signal.SIGHUP)
        w.wait_for(lambda: len(set(w.children()) - old) == 2, 10, "two new workers")
        w.wait_for(lambda: _settled(r, len(jids)), 60, "all jobs processed")
        assert stats(r)["processed"] == len(jids), stats(r)
        assert not (set(w.children()) & old), "old workers still alive"
        assert r.llen("%s:dead" % PREFIX) == 0, dead_records(r)


def test_sighup_with_a_broken_config_keeps_the_running_workers():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        r = rs.client()
        before = set(w.wait_children(1))
        with open(w.conf_path, "a") as f:
            f.write("\nthis is not libconfig\n")
        w.signal(signal.SIGHUP)
        w.wait_for(lambda: "reload refused" in w.log(), 10, "reload refused in the log")
        assert set(w.children()) == before
        jids = enqueue_many(r, "sys.noop", 10)
        w.wait_for(lambda: _settled(r, len(jids)), 10, "jobs processed after the refusal")


if __name__ == "__main__":
    main()
