"""test_schedule.py - the cron scheduler (worker/scheduler.c) against a real
redis-server: each slot's job is enqueued exactly once however many schedulers
run, a missed slot is skipped or caught up once, a slot that met Redis down
runs when Redis is back within the grace window, the real daemon's masters
share the work and pick up new entries on SIGHUP, and `stellerctl schedule`
reports the entries.

Most tests drive sched_probe (tests/integration/sched_probe.c): several
schedulers on one loop, each with its own Redis connection, and a fake clock
the test moves, so an hour passes in a second. One test runs two real daemons
across a real minute boundary (up to about 65 s).
"""

import calendar
import json
import os
import signal
import subprocess
import time
import urllib.request

import harness
from harness import *

PROBE = os.path.join(BUILD_DIR, "sched_probe")
HOUR = 3600
# A whole hour, UTC: 2024-06-10T07:00:00Z.
T0 = calendar.timegm((2024, 6, 10, 7, 0, 0))
GRACE = 300


def _config(rs, entries, **over):
    cfg = {
        "debug_jobs": True,
        "redis": {"url": rs.url(), "prefix": PREFIX},
        "email": {"templates": os.path.join(SOURCE_DIR, "conf/templates")},
        "schedule": entries,
    }
    cfg.update(over)
    return cfg


def _write_config(cfg, name="sched.conf"):
    path = os.path.join(make_tmpdir("sched"), name)
    with open(path, "w") as f:
        f.write(render_config(cfg))
    return path


class Probe:
    """sched_probe CONFIG N, driven line by line."""

    def __init__(self, conf_path, n):
        d = make_tmpdir("probe")
        self.log_path = os.path.join(d, "stderr.log")
        harness._logs.append(("sched_probe", self.log_path))
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PROBE, conf_path, str(n)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True,
                                     preexec_fn=harness._pdeathsig(signal.SIGKILL))
        log.close()
        harness._procs.append(("sched_probe", self.proc))

    def cmd(self, line, want="ok"):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().strip()
        if want is not None:
            assert out.startswith(want), "%s -> %r" % (line, out)
        return out

    def ticks(self, start, end, step=60):
        for t in range(start, end + 1, step):
            self.cmd("tick %d" % t)

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0

    def log(self):
        with open(self.log_path) as f:
            return f.read()


def _jobs(r, queue):
    """The queue's envelopes, oldest first."""
    return [decode(x) for x in reversed(r.lrange("%s:queue:%s" % (PREFIX, queue), 0, -1))]


def _claims(r, name):
    """{slot: jid} of the live claim keys of an entry."""
    out = {}
    for k in r.scan_iter(match="%s:schedule:%s:*" % (PREFIX, name), count=1000):
        suffix = k.decode().rsplit(":", 1)[1]
        if suffix != "last":
            out[int(suffix)] = r.get(k).decode()
    return out


def _last(r, name):
    v = r.get("%s:schedule:%s:last" % (PREFIX, name))
    return int(v) if v is not None else None


def _enqueued_lines(text, name=None):
    return [l for l in text.splitlines() if 'msg="scheduled job enqueued"' in l
            and (name is None or ("schedule=%s " % name) in l)]


def _stats(p):
    """{entry: [enqueued, elsewhere, passed, missed, errors]} over the probe's schedulers."""
    out = p.cmd("stats")
    return {k: [int(x) for x in v.split(",")] for k, v in (f.split("=") for f in out.split()[1:])}


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test_two_schedulers_enqueue_each_slot_exactly_once_over_an_hour():
    entries = [
        {"name": "five", "cron": "*/5 * * * *", "type": "sys.noop", "args": '{"n": 5, "s": "x"}'},
        {"name": "odd", "cron": "7,19 * * * *", "type": "sys.noop", "queue": "odd_q"},
    ]
    with RedisServer() as rs:
        r = rs.client()
        p = Probe(_write_config(_config(rs, entries)), 2)
        p.cmd("start %d" % (T0 - 30))
        # every 30 s of the hour: both schedulers see every slot, twice
        p.ticks(T0, T0 + HOUR - 30, 30)
        # one of the two enqueued each slot, the other found it done; the last */5
        # slot before the start, looked at on start, was declined by both since the
        # entry had never run ("passed")
        assert _stats(p) == {"five": [12, 12, 2, 0, 0], "odd": [2, 2, 0, 0, 0]}, _stats(p)
        p.cmd("stop")
        p.close()

        five = _jobs(r, "default")
        odd = _jobs(r, "odd_q")
        assert len(five) == 12 and len(odd) == 2, (len(five), len(odd))
        assert sorted(_claims(r, "five")) == [T0 + 300 * i for i in range(12)]
        assert sorted(_claims(r, "odd")) == [T0 + 7 * 60, T0 + 19 * 60]
        # each claim holds the jid of the one job of its slot
        assert sorted(_claims(r, "five").values()) == sorted(j["jid"] for j in five)
        assert sorted(_claims(r, "odd").values()) == sorted(j["jid"] for j in odd)
        assert len({j["jid"] for j in five + odd}) == 14
        for j in five:
            assert j["type"] == "sys.noop" and j["queue"] == "default", j
            assert j["args"] == {"n": 5, "s": "x"}, j
            assert list(j)[:5] == ["jid", "type", "args", "queue", "created_at"], list(j)
        assert all(j["queue"] == "odd_q" and j["args"] == {} for j in odd), odd
        assert _last(r, "five") == T0 + 55 * 60 and _last(r, "odd") == T0 + 19 * 60
        # claims expire after a day
        ttl = r.ttl("%s:schedule:five:%d" % (PREFIX, T0))
        assert 86000 < ttl <= 86400, ttl
        assert r.ttl("%s:schedule:five:last" % PREFIX) == -1
        lines = _enqueued_lines(p.log())
        assert len(lines) == 14, "\n".join(lines)
        assert any("schedule=odd slot=%s jid=" % _iso(T0 + 7 * 60) in l for l in lines), lines


def test_a_new_entry_does_not_run_a_slot_from_before_it_existed():
    entries = [{"name": "hourly", "cron": "0 * * * *", "type": "sys.noop", "catch_up": True}]
    with RedisServer() as rs:
        r = rs.client()
        p = Probe(_write_config(_config(rs, entries)), 1)
        p.cmd("start %d" % (T0 + 120))  # 07:00 is 2 minutes past, within the grace
        p.cmd("stop")
        p.close()
        assert queue_len(r) == 0 and _last(r, "hourly") is None
        assert not _claims(r, "hourly")


def test_after_downtime_catch_up_runs_the_latest_missed_slot_once_else_skips():
    entries = [
        {"name": "catchup", "cron": "0 * * * *", "type": "sys.noop", "queue": "c_q",
         "catch_up": True},
        {"name": "skip", "cron": "0 * * * *", "type": "sys.noop", "queue": "s_q"},
    ]
    with RedisServer() as rs:
        r = rs.client()
        conf = _write_config(_config(rs, entries))
        p = Probe(conf, 2)
        p.cmd("start %d" % (T0 - 30))
        p.ticks(T0, T0 + HOUR, 60)  # 07:00 and 08:00
        p.cmd("stop")
        # down from 08:00:30 to 10:20: 09:00 and 10:00 are missed, 10:00 by 20 minutes
        p.cmd("start %d" % (T0 + 3 * HOUR + 20 * 60))
        p.ticks(T0 + 3 * HOUR + 21 * 60, T0 + 4 * HOUR, 60)  # to 11:00
        # 10:00 caught up by one scheduler (the other found it done), and 11:00 live. A
        # scheduler that was not running saw no slot of "skip" to miss: missed counts
        # the slots a running master gave up on (the next test)
        assert _stats(p) == {"catchup": [2, 2, 0, 0, 0], "skip": [1, 1, 0, 0, 0]}, _stats(p)
        p.cmd("stop")
        # down from 11:00 to 12:03: 12:00 is 3 minutes late, within the grace: both run it
        p.cmd("start %d" % (T0 + 5 * HOUR + 3 * 60))
        p.cmd("stop")
        p.close()

        caught = sorted(_claims(r, "catchup"))
        skipped = sorted(_claims(r, "skip"))
        h = lambda n: T0 + n * HOUR
        assert caught == [h(0), h(1), h(3), h(4), h(5)], [_iso(t) for t in caught]
        assert skipped == [h(0), h(1), h(4), h(5)], [_iso(t) for t in skipped]
        assert queue_len(r, "c_q") == 5 and queue_len(r, "s_q") == 4
        log = p.log()
        assert len(_enqueued_lines(log, "catchup")) == 5, log
        assert len(_enqueued_lines(log, "skip")) == 4, log


def test_a_slot_that_met_redis_down_runs_when_redis_is_back_within_the_grace():
    entries = [
        {"name": "catchup", "cron": "0 * * * *", "type": "sys.noop", "queue": "c_q",
         "catch_up": True},
        {"name": "skip", "cron": "0 * * * *", "type": "sys.noop", "queue": "s_q"},
    ]
    with RedisServer(appendonly=True) as rs:
        r = rs.client()
        p = Probe(_write_config(_config(rs, entries)), 1)
        p.cmd("start %d" % (T0 - 30))
        p.cmd("tick %d" % T0)
        assert queue_len(r, "c_q") == 1 and queue_len(r, "s_q") == 1

        # 08:00 comes while Redis is down; it is back 2 minutes later
        port = rs.port
        rs.stop()
        p.cmd("tick %d" % (T0 + HOUR))
        p.cmd("tick %d" % (T0 + HOUR + 120))
        rs.start(port=port)
        assert p.cmd("run 3") == "ok ready=1"
        assert sorted(_claims(r, "skip")) == [T0, T0 + HOUR]
        assert sorted(_claims(r, "catchup")) == [T0, T0 + HOUR]

        # 09:00 comes while Redis is down; the clock is 7 minutes on when it is back
        rs.stop()
        p.cmd("tick %d" % (T0 + 2 * HOUR))
        p.cmd("tick %d" % (T0 + 2 * HOUR + 7 * 60))
        rs.start(port=port)
        assert p.cmd("run 3") == "ok ready=1"
        # 09:00 of "skip" is the one slot given up (what StellerScheduleSlotMissed
        # alerts on); 08:00 made it within the grace. "catchup" looked at 06:00 when
        # it started, and the script declined it: the entry had never run
        assert _stats(p) == {"catchup": [3, 0, 1, 0, 0], "skip": [2, 0, 0, 1, 0]}, _stats(p)
        p.cmd("stop")
        p.close()

        assert sorted(_claims(r, "skip")) == [T0, T0 + HOUR]
        assert sorted(_claims(r, "catchup")) == [T0, T0 + HOUR, T0 + 2 * HOUR]
        assert queue_len(r, "c_q") == 3 and queue_len(r, "s_q") == 2
        log = p.log()
        assert "the slot waits for it" in log, log
        assert 'msg="schedule slot missed; skipped (catch_up = false)" schedule=skip slot=%s' \
            % _iso(T0 + 2 * HOUR) in log, log


def test_the_slot_looked_at_on_start_is_not_counted_missed_when_redis_is_late():
    """On start the latest past slot is looked at: it may well have run before the
    restart. Redis away past the grace makes the scheduler drop it, without a
    "missed" count (which alerts); a slot that comes while it runs does count."""
    entries = [{"name": "skip", "cron": "0 * * * *", "type": "sys.noop", "queue": "s_q"}]
    with RedisServer() as rs:
        port = rs.port
        conf = _write_config(_config(rs, entries))
        rs.stop()
        p = Probe(conf, 1)
        assert p.cmd("start %d" % (T0 + 60), want=None) == "down"  # 07:00 looked at
        p.cmd("tick %d" % (T0 + 10 * 60), want=None)  # past the grace: dropped
        p.cmd("tick %d" % (T0 + HOUR), want=None)     # 08:00 comes live, Redis still away
        p.cmd("tick %d" % (T0 + HOUR + 10 * 60), want=None)
        assert _stats(p) == {"skip": [0, 0, 0, 1, 0]}, _stats(p)
        rs.start(port=port)
        assert p.cmd("run 3") == "ok ready=1"
        p.cmd("stop")
        p.close()
        assert queue_len(rs.client(), "s_q") == 0


def test_reload_takes_new_entries_and_keeps_the_state_of_unchanged_ones():
    a = {"name": "a", "cron": "*/10 * * * *", "type": "sys.noop", "queue": "a_q"}
    b = {"name": "b", "cron": "*/15 * * * *", "type": "sys.noop", "queue": "b_q"}
    with RedisServer() as rs:
        r = rs.client()
        p = Probe(_write_config(_config(rs, [a])), 2)
        p.cmd("start %d" % (T0 - 30))
        p.ticks(T0, T0 + 20 * 60, 60)
        p.cmd("reload %s" % _write_config(_config(rs, [a, b])))
        p.ticks(T0 + 21 * 60, T0 + 30 * 60, 60)
        # "a" keeps its figures across the reload (Prometheus counters go on)
        assert _stats(p)["a"][:2] == [4, 4], _stats(p)
        p.cmd("reload %s" % _write_config(_config(rs, [b])))
        p.ticks(T0 + 31 * 60, T0 + 45 * 60, 60)
        p.cmd("stop")
        p.close()
        assert sorted(_claims(r, "a")) == [T0 + m * 60 for m in (0, 10, 20, 30)]
        assert sorted(_claims(r, "b")) == [T0 + m * 60 for m in (30, 45)]
        assert queue_len(r, "a_q") == 4 and queue_len(r, "b_q") == 2


def _wait_logs(workers, text, timeout=15):
    for w in workers:
        w.wait_for(lambda: text in w.log(), timeout, "%r in the log" % text)


def _scrape(w):
    """{'name{labels}': value} of the master's /metrics."""
    url = "http://%s/metrics" % w.config["http"]["listen"]
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines()
                                     if ln and not ln.startswith("#"))}


def _total(metrics, entry, outcome):
    """steller_schedule_slots_total of entry and outcome, summed over the scrapes."""
    return sum(m.get('steller_schedule_slots_total{entry="%s",outcome="%s"}' % (entry, outcome),
                     0) for m in metrics)


def test_two_daemons_enqueue_each_minute_once_and_take_new_entries_on_sighup():
    every = {"name": "every", "cron": "* * * * *", "type": "sys.noop", "queue": "sched_t"}
    added = {"name": "added", "cron": "* * * * *", "type": "sys.noop", "queue": "sched_t2"}
    with RedisServer() as rs:
        r = rs.client()
        # A boundary during start-up would be fine, but the one after the reload
        # is what the test checks: start well clear of it.
        if 60 - time.time() % 60 < 8:
            time.sleep(60 - time.time() % 60 + 1)
        w1 = Worker(rs, workers=1, schedule=[every]).start()
        w2 = Worker(rs, workers=1, schedule=[every]).start()
        try:
            _wait_logs([w1, w2], "scheduler started")
            for w in (w1, w2):
                with open(w.conf_path, "w") as f:
                    f.write(render_config(dict(w.config, schedule=[every, added])))
                w.signal(signal.SIGHUP)
            _wait_logs([w1, w2], "scheduler reloaded")
            boundary = (int(time.time()) // 60 + 1) * 60
            wait_for(lambda: time.time() > boundary + 3 and _last(r, "added") == boundary,
                     75, "the slot %s" % _iso(boundary))
            logs = w1.log() + w2.log()
            metrics = []

            def both_answered():
                metrics[:] = [_scrape(w) for w in (w1, w2)]
                return _total(metrics, "added", "enqueued") + \
                    _total(metrics, "added", "elsewhere") >= 2
            wait_for(both_answered, 10, "both masters' answers for the slot")
        finally:
            w1.kill()
            w2.kill()
        ev = _claims(r, "every")
        assert boundary in ev, (boundary, ev)
        assert _claims(r, "added") == {boundary: _claims(r, "added")[boundary]}
        # exactly one job per slot, each the claim's jid
        assert sorted(ev.values()) == sorted(j["jid"] for j in _jobs(r, "sched_t"))
        assert len(_jobs(r, "sched_t2")) == 1
        assert len(_enqueued_lines(logs, "every")) == len(ev), logs
        assert len(_enqueued_lines(logs, "added")) == 1, logs
        # /metrics: each master counts what it did; one enqueued the slot, the other
        # found it done
        assert _total(metrics, "added", "enqueued") == 1, metrics
        assert _total(metrics, "added", "elsewhere") == 1, metrics
        assert _total(metrics, "every", "enqueued") == len(ev), metrics
        for outcome in ("missed", "error"):
            assert _total(metrics, "every", outcome) == _total(metrics, "added", outcome) == 0
        for m in metrics:
            nxt = m['steller_schedule_next_run_timestamp_seconds{entry="added"}']
            assert nxt % 60 == 0 and boundary + 60 <= nxt <= boundary + 120, (nxt, boundary)


def test_stellerctl_schedule_lists_entries_with_next_and_last_slot():
    entries = [
        {"name": "sweep", "cron": "0 9 * * *", "type": "reengagement.sweep"},
        {"name": "mails", "cron": "*/15 * * * 1-5", "type": "email.welcome",
         "args": '{"partner_id": 7}', "catch_up": True},
        {"name": "custom", "cron": "30 2 1 * *", "type": "sys.noop", "queue": "slowq"},
    ]
    with RedisServer() as rs:
        r = rs.client()
        conf = _write_config(_config(rs, entries, types=[{"name": "sys.noop", "queue": "x"}]))
        r.set("%s:schedule:sweep:last" % PREFIX, T0)
        r.set("%s:schedule:sweep:%d" % (PREFIX, T0), "jid-of-sweep")
        before = int(time.time())
        p = subprocess.run([CTL_BIN, "-c", conf, "schedule"], capture_output=True, text=True,
                           env=dict(os.environ, COLUMNS="200"))
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines[0].split() == ["NAME", "CRON", "TYPE", "QUEUE", "CATCH_UP", "NEXT", "(UTC)",
                                    "LAST", "SLOT", "(UTC)"], lines[0]
        rows = {l.split()[0]: l for l in lines[1:]}
        assert set(rows) == {"sweep", "mails", "custom"}, lines
        assert "0 9 * * *" in rows["sweep"] and "reengagement.sweep" in rows["sweep"]
        assert rows["sweep"].rstrip().endswith(_iso(T0)), rows["sweep"]
        assert rows["mails"].rstrip().endswith("never") and " email " in rows["mails"]
        assert " slowq " in rows["custom"] and " no " in rows["custom"]
        assert " yes " in rows["mails"]

        p = subprocess.run([CTL_BIN, "-c", conf, "schedule", "--json"], capture_output=True,
                           text=True)
        assert p.returncode == 0, p.stderr
        js = {e["name"]: e for e in json.loads(p.stdout)}
        s = js["sweep"]
        assert s["queue"] == "default" and s["last"] == T0 and s["last_utc"] == _iso(T0)
        assert s["last_jid"] == "jid-of-sweep" and s["catch_up"] is False
        nxt = s["next"]
        assert nxt > before and nxt - before <= 86400 and time.gmtime(nxt)[3:6] == (9, 0, 0)
        assert s["next_utc"] == _iso(nxt) and s["next_utc"] in rows["sweep"]
        m = js["mails"]
        assert m["queue"] == "email" and m["last"] is None and m["last_jid"] is None
        assert m["args"] == {"partner_id": 7} and m["catch_up"] is True
        assert time.gmtime(m["next"]).tm_min % 15 == 0 and time.gmtime(m["next"]).tm_wday < 5
        assert js["custom"]["queue"] == "slowq"

        # the per-type queue of the config applies when the entry names none
        conf2 = _write_config(_config(rs, [{"name": "n", "cron": "* * * * *", "type": "sys.noop"}],
                                      types=[{"name": "sys.noop", "queue": "typeq"}]))
        p = subprocess.run([CTL_BIN, "-c", conf2, "schedule", "--json"], capture_output=True,
                           text=True)
        assert json.loads(p.stdout)[0]["queue"] == "typeq", p.stdout

        p = subprocess.run([CTL_BIN, "help"], capture_output=True, text=True)
        assert "schedule" in p.stdout, p.stdout
        p = subprocess.run([CTL_BIN, "schedule", "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and "P:schedule:<name>:last" in p.stdout, p.stdout + p.stderr


def test_stellerctl_schedule_without_redis_exits_3():
    port = free_port()
    p = subprocess.run([CTL_BIN, "--redis", "redis://127.0.0.1:%d/0" % port, "schedule"],
                       capture_output=True, text=True)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)


if __name__ == "__main__":
    main()
