"""Redis sanity at start (worker/rcheck.c): against a Redis whose
maxmemory-policy may evict any key the daemon refuses to run, exits 78
(EX_CONFIG) without taking a job and without restarting its workers in a loop;
redis.allow_eviction = true runs anyway with a warning. A volatile-* policy,
a Redis without AOF and a Redis that refuses CONFIG only get warnings. The
check runs again when a worker reconnects, since Redis may have been replaced."""

from harness import *

EX_CONFIG = 78
EVICT_ERROR = ("maxmemory-policy allkeys-lru lets Redis evict queued jobs under memory "
               "pressure; set maxmemory-policy noeviction, or redis.allow_eviction = true "
               "to run anyway")
EVICTING = ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]
NO_PERSISTENCE = ["--appendonly", "no", "--save", ""]


def _lines(w, level, text):
    return [x for x in w.log().splitlines() if "level=%s" % level in x and text in x]


def _runs_jobs(rs, w, n=50):
    r = rs.client()
    jids = enqueue_many(r, "sys.noop", n, prefix="sanity")
    w.wait_for(lambda: stats(r)["processed"] >= n, 20, "%d processed" % n)
    w.wait_for(lambda: not locate_jids(r, jids), 10, "every job acknowledged")


def _assert_refused(w, r, queued):
    log = w.log()
    errors = _lines(w, "error", EVICT_ERROR)
    assert errors, "no error line naming the policy and the remedy:\n" + w.tail()
    assert len(errors) <= 2, "more error lines than workers: %r" % errors
    assert _lines(w, "error", "a worker refused to run against this Redis"), w.tail()
    assert "restarting" not in log, "a refused worker was restarted:\n" + w.tail()
    assert queue_len(r) == queued, "jobs were taken: %d of %d left" % (queue_len(r), queued)
    assert not processing_keys(r), processing_keys(r)
    assert stats(r)["processed"] == 0, stats(r)
    assert not r.smembers("%s:workers" % PREFIX), "a worker stayed registered"
    assert not w._orphans(), "worker processes outlived the master"


def test_evicting_policy_refuses_to_start_with_exit_78_and_takes_nothing():
    with RedisServer(args=EVICTING) as rs:
        r = rs.client()
        enqueue_many(r, "sys.noop", 50, prefix="kept")
        w = Worker(rs, workers=2).start()
        rc = w.wait_exit(20)
        assert rc == EX_CONFIG, "exit status %r, want 78:\n%s" % (rc, w.tail())
        _assert_refused(w, r, 50)
        assert w.log().count('msg="worker started"') == 2, \
            "workers were started again:\n" + w.tail()


def test_allow_eviction_runs_the_jobs_with_a_warning():
    with RedisServer(args=EVICTING) as rs, \
            Worker(rs, workers=1, redis={"allow_eviction": True}) as w:
        _runs_jobs(rs, w)
        assert _lines(w, "warn", "running anyway because redis.allow_eviction = true"), w.tail()
        assert not _lines(w, "error", "maxmemory-policy"), w.tail()
        assert w.running()


def test_volatile_policy_runs_with_a_warning():
    with RedisServer(args=["--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"]) as rs, \
            Worker(rs, workers=1) as w:
        _runs_jobs(rs, w)
        assert _lines(w, "warn", "maxmemory-policy volatile-lru lets Redis evict keys with a TTL"), \
            w.tail()


def test_no_aof_and_no_rdb_runs_and_warns_a_restart_loses_every_job():
    with RedisServer(args=NO_PERSISTENCE) as rs, Worker(rs, workers=1) as w:
        _runs_jobs(rs, w)
        assert _lines(w, "warn", "a Redis restart loses every job"), w.tail()


def test_rdb_without_aof_warns_a_crash_loses_the_last_snapshot_interval():
    with RedisServer(args=["--appendonly", "no", "--save", "3600 1"]) as rs, \
            Worker(rs, workers=1) as w:
        _runs_jobs(rs, w)
        assert _lines(w, "warn", "only RDB snapshots (save 3600 1)"), w.tail()
        assert not _lines(w, "warn", "loses every job"), w.tail()


def test_noeviction_with_aof_logs_no_redis_warning():
    with RedisServer(appendonly=True) as rs, Worker(rs, workers=1) as w:
        _runs_jobs(rs, w)
        for text in ("maxmemory-policy", "Redis persists", "snapshot", "could not check"):
            assert not _lines(w, "warn", text), w.tail()


def test_config_disabled_runs_and_warns_the_check_could_not_run():
    with RedisServer(args=["--rename-command", "CONFIG", ""]) as rs, \
            Worker(rs, workers=1) as w:
        _runs_jobs(rs, w)
        warned = _lines(w, "warn", "could not check that Redis keeps jobs")
        assert warned, w.tail()
        assert "unchecked=maxmemory-policy,appendonly,save" in warned[0], warned[0]
        assert len(warned) == 1, warned  # one line per check, not one per setting


def test_evicting_redis_found_on_reconnect_stops_the_daemon():
    with RedisServer() as rs:
        w = Worker(rs, workers=2).start()
        _runs_jobs(rs, w)
        # The same address, another Redis: the workers reconnect and check again.
        rs.args += EVICTING
        rs.restart()
        r = rs.client()
        enqueue_many(r, "sys.noop", 20, prefix="after")
        rc = w.wait_exit(30)
        assert rc == EX_CONFIG, "exit status %r, want 78:\n%s" % (rc, w.tail())
        _assert_refused(w, r, 20)


if __name__ == "__main__":
    main()
