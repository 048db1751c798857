"""test_stellerctl.py - drives the built stellerctl against a real redis-server.

Self-contained on purpose (no harness.py): it starts one redis-server on a free
port in a temp dir, runs stellerctl as a user would, and checks with redis-py and
msgpack what landed in Redis: the envelope's fields and key order, the queue key,
the scheduled score, that a bulk enqueue gives every job its own jid, that stats
reports what was set up, and the exit codes. The server is killed in a finally
block, and dies with this process anyway (PR_SET_PDEATHSIG).

Run by ctest with /usr/bin/python3 (python3-redis, python3-msgpack) and
STELLER_BUILD_DIR set; arguments select tests by name.
"""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import msgpack
import redis

BUILD_DIR = os.environ.get("STELLER_BUILD_DIR", "/work/main/build")
CTL = os.path.join(BUILD_DIR, "stellerctl")
P = "steller"
CANONICAL = ["jid", "type", "args", "queue", "created_at", "attempt", "max_attempts"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RedisServer:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="test_stellerctl.")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.tmp],
            stdout=open(os.path.join(self.tmp, "redis.log"), "wb"),
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.r = redis.Redis(port=self.port)
        deadline = time.time() + 10
        while True:
            try:
                self.r.ping()
                return
            except redis.ConnectionError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


RS = None  # the server of this run


def ctl(*args, env=None, redis_url=True):
    """Runs stellerctl; returns (exit code, stdout, stderr). REDIS_URL is never inherited."""
    e = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    e.update(env or {})
    argv = [CTL] + (["--redis", RS.url] if redis_url else []) + list(args)
    p = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=120)
    return p.returncode, p.stdout, p.stderr


def ok(*args, **kw):
    rc, out, err = ctl(*args, **kw)
    assert rc == 0, "stellerctl %s: exit %d: %s" % (" ".join(args), rc, err)
    return out


def unpack(raw):
    # strict_map_key=False is not needed: keys are str; raw=False gives str for str.
    return msgpack.unpackb(raw, raw=False)


def now_ms():
    return int(time.time() * 1000)


def only_job(key):
    items = RS.r.lrange(key, 0, -1)
    assert len(items) == 1, "%s holds %d items" % (key, len(items))
    return items[0]


# ---------------------------------------------------------------- tests

def test_enqueue_writes_canonical_envelope_to_the_types_queue():
    before = now_ms()
    out = ok("enqueue", "email.welcome", "--args", '{"partner_id": 42}')
    after = now_ms()
    jid = out.strip()
    assert re.fullmatch(r"[0-9a-f]{20}", jid), out
    raw = only_job(P + ":queue:email")
    env = unpack(raw)
    assert list(env) == ["jid", "type", "args", "queue", "created_at", "attempt"], list(env)
    assert env["jid"] == jid
    assert env["type"] == "email.welcome"
    assert env["args"] == {"partner_id": 42}
    assert env["queue"] == "email"
    assert before <= env["created_at"] <= after
    assert env["attempt"] == 0
    # Bytes as a Python producer following docs/PROTOCOL.md would write them.
    assert raw == msgpack.packb(env, use_bin_type=True)


def test_default_queues_per_type():
    for typ, queue in [("request_log", "request_log"), ("wallet.seed_sandbox", "critical"),
                       ("reengagement.sweep", "default"), ("sys.noop", "default"),
                       ("email.activation", "email"), ("something.else", "default")]:
        RS.r.flushall()
        jid = ok("enqueue", typ).strip()
        env = unpack(only_job(P + ":queue:" + queue))
        assert env["jid"] == jid and env["queue"] == queue, (typ, env)


def test_enqueue_options_reach_the_envelope():
    args = {"s": "x", "i": -5, "big": 2 ** 63 - 1, "r": 2.5, "t": True, "f": False, "n": None,
            "a": [1, "two", []], "o": {"k": {}}, "u": "Caf\u00e9 \U0001F680"}
    out = ok("enqueue", "sys.noop", "--queue", "bulk", "--jid", "my-job-1",
             "--max-attempts", "3", "--args", json.dumps(args))
    assert out == "my-job-1\n", out
    env = unpack(only_job(P + ":queue:bulk"))
    assert list(env) == CANONICAL, list(env)
    assert env["jid"] == "my-job-1" and env["queue"] == "bulk" and env["max_attempts"] == 3
    assert env["args"] == args, env["args"]
    assert list(env["args"]) == list(args)  # key order kept
    assert isinstance(env["args"]["r"], float) and isinstance(env["args"]["i"], int)


def test_count_pushes_distinct_jids_in_one_go():
    rc, out, err = ctl("enqueue", "sys.noop", "--count", "10000", "--args", '{"n": 1}')
    assert rc == 0, err
    m = re.fullmatch(r"enqueued 10000 jobs to queue default in [0-9.]+ ms \([0-9]+ jobs/s\)\n",
                     out)
    assert m, out
    items = RS.r.lrange(P + ":queue:default", 0, -1)
    assert len(items) == 10000
    envs = [unpack(x) for x in items]
    assert len({e["jid"] for e in envs}) == 10000
    assert all(e["type"] == "sys.noop" and e["args"] == {"n": 1} for e in envs)


def test_count_with_jid_is_a_usage_error():
    rc, _, err = ctl("enqueue", "sys.noop", "--count", "2", "--jid", "x")
    assert rc == 2 and "--jid" in err, (rc, err)
    assert RS.r.dbsize() == 0


def test_in_schedules_at_now_plus_seconds():
    before = now_ms()
    jid = ok("enqueue", "email.welcome", "--in", "90", "--args", '{"partner_id": 7}').strip()
    after = now_ms()
    assert RS.r.llen(P + ":queue:email") == 0
    [(raw, score)] = RS.r.zrange(P + ":scheduled", 0, -1, withscores=True)
    env = unpack(raw)
    assert env["jid"] == jid and env["queue"] == "email"
    assert before + 90000 <= score <= after + 90000, (before, score, after)


def test_in_with_count_schedules_every_job():
    rc, out, err = ctl("enqueue", "sys.noop", "--in", "1.5", "--count", "2500")
    assert rc == 0, err
    assert out.startswith("scheduled 2500 jobs for queue default at "), out
    entries = RS.r.zrange(P + ":scheduled", 0, -1, withscores=True)
    assert len(entries) == 2500
    assert len({s for _, s in entries}) == 1


def test_bad_args_are_usage_errors():
    for bad in ['[1, 2]', '"str"', '{"a": ', '{"a": 1, "a": 2}', '{"a": 99999999999999999999}']:
        rc, _, err = ctl("enqueue", "sys.noop", "--args", bad)
        assert rc == 2, (bad, rc, err)
        assert "usage: stellerctl enqueue" in err
    for argv in [["enqueue"], ["enqueue", "sys.noop", "extra"], ["enqueue", "x", "--count", "0"],
                 ["enqueue", "x", "--in", "-1"], ["enqueue", "x", "--max-attempts", "0"],
                 ["enqueue", "x", "--jid", "j" * 65], ["enqueue", "x", "--queue"],
                 ["enqueue", "x", "--nope"], ["frobnicate"], [], ["stats", "extra"]]:
        rc, _, err = ctl(*argv)
        assert rc == 2, (argv, rc, err)
    assert RS.r.dbsize() == 0


def test_a_job_over_max_job_bytes_is_refused():
    big = os.path.join(RS.tmp, "big.json")  # too big for one argv string
    with open(big, "w") as f:
        json.dump({"blob": "x" * 300000}, f)
    rc, _, err = ctl("enqueue", "sys.noop", "--args", "@" + big)
    assert rc == 2 and "max_job_bytes (262144)" in err, (rc, err)
    conf = os.path.join(RS.tmp, "big.conf")
    with open(conf, "w") as f:
        f.write("max_job_bytes = 1048576;\n")
    ok("-c", conf, "enqueue", "sys.noop", "--args", "@" + big)
    assert len(unpack(only_job(P + ":queue:default"))["args"]["blob"]) == 300000
    rc, _, err = ctl("enqueue", "sys.noop", "--args", "@" + big + ".missing")
    assert rc == 2 and "No such file" in err, (rc, err)


def test_args_from_stdin():
    p = subprocess.run([CTL, "--redis", RS.url, "enqueue", "sys.noop", "--args", "-"],
                       input='{"from": "stdin"}', capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert unpack(only_job(P + ":queue:default"))["args"] == {"from": "stdin"}


def setup_state(r, prefix=P):
    q = prefix + ":queue:"
    r.lpush(q + "critical", *[b"c"] * 3)
    r.lpush(q + "email", *[b"e"] * 5)
    r.lpush(q + "custom", *[b"x"] * 7)
    r.sadd(prefix + ":paused", "email", "idle")
    r.set(q + "notalist", "x")  # not a list: not a queue
    r.lpush(prefix + ":processing:h:1:a", b"j1", b"j2")
    r.lpush(prefix + ":processing:h:2:b", b"j3")
    r.zadd(prefix + ":retry", {b"r1": 1, b"r2": 2})
    r.zadd(prefix + ":scheduled", {b"s1": 1})
    r.lpush(prefix + ":dead", b"d1", b"d2", b"d3", b"d4")
    r.sadd(prefix + ":workers", "h:1:a", "h:2:b", "h:3:c")
    r.hset(prefix + ":worker:h:1:a", "pid", 1)
    r.hset(prefix + ":worker:h:2:b", "pid", 2)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    r.set(prefix + ":stats:processed", 1000)
    r.set(prefix + ":stats:failed", 20)
    r.set(prefix + ":stats:processed:" + day, 100)
    r.set(prefix + ":stats:dead:" + day, 2)
    return day


def test_stats_json_reports_what_is_in_redis():
    day = setup_state(RS.r)
    s = json.loads(ok("stats", "--json"))
    assert s["prefix"] == P
    assert abs(s["time_ms"] - now_ms()) < 60000
    assert list(s["queues"])[:4] == ["critical", "default", "email", "request_log"]
    latency = {q: v.pop("latency_s") for q, v in s["queues"].items()}
    assert all(0 <= x < 60 for x in latency.values()), latency
    assert latency["default"] == 0 and latency["idle"] == 0, latency  # empty queues
    assert s["queues"] == {
        "critical": {"depth": 3, "paused": False},
        "default": {"depth": 0, "paused": False},
        "email": {"depth": 5, "paused": True},
        "request_log": {"depth": 0, "paused": False},
        "custom": {"depth": 7, "paused": False},
        "idle": {"depth": 0, "paused": True},
    }, s["queues"]
    assert s["enqueued"] == 15
    assert s["processing"] == 3
    assert s["scheduled"] == 1 and s["retry"] == 2 and s["dead"] == 4
    assert s["workers"] == {"registered": 3, "live": 2}
    assert s["counters"] == {"processed": 1000, "failed": 20, "dead": 0}
    assert s["today"] == {"date": day, "processed": 100, "failed": 0, "dead": 2}


def test_stats_on_an_empty_redis_lists_the_default_queues():
    s = json.loads(ok("stats", "--json"))
    assert list(s["queues"]) == ["critical", "default", "email", "request_log"]
    assert s["enqueued"] == 0 and s["workers"] == {"registered": 0, "live": 0}


def test_stats_table_is_aligned():
    setup_state(RS.r)
    out = ok("stats")
    lines = out.splitlines()
    assert lines[0].startswith("Redis 127.0.0.1:%d db 0, prefix steller" % RS.port), lines[0]
    rows = {}
    for l in lines[1:]:
        if l:
            rows.setdefault(l.split()[0], l)  # the first "dead" is the list, not the counter
    assert re.match(r"email +5 +[0-9.]+s  paused$", rows["email"]), rows["email"]
    assert rows["custom"].split()[1] == "7"
    assert rows["workers"].split()[1:] == ["2", "live", "(3", "registered)"]
    # The number column ends at the same place on every row.
    ends = {len(rows[k].split()[0]) + rows[k][len(rows[k].split()[0]):].index(rows[k].split()[1])
            + len(rows[k].split()[1]) for k in ["critical", "default", "processing", "dead",
                                                 "retry"]}
    assert len(ends) == 1, ends
    # and so does the latency column on every queue row
    assert len({len(rows[k]) for k in ["critical", "default", "custom"]}) == 1
    assert all(l == l.rstrip() for l in lines)


def test_prefix_is_honoured_and_not_a_glob():
    setup_state(RS.r, prefix="a*b")
    RS.r.lpush("aXb:queue:other", b"x")  # would match an unescaped "a*b:queue:*"
    s = json.loads(ok("--prefix", "a*b", "stats", "--json"))
    assert s["prefix"] == "a*b" and "other" not in s["queues"]
    assert s["queues"]["custom"]["depth"] == 7
    jid = ok("enqueue", "sys.noop", "--prefix", "a*b").strip()  # global option after the verb
    assert unpack(RS.r.lindex("a*b:queue:default", 0))["jid"] == jid


def test_unreachable_redis_exits_3_naming_host_but_not_password():
    port = free_port()
    rc, out, err = ctl("--redis", "redis://:s3cr3t-pw@127.0.0.1:%d/0" % port, "stats",
                       redis_url=False)
    assert rc == 3, (rc, err)
    assert "127.0.0.1:%d" % port in err and "s3cr3t" not in err + out, err
    rc, _, err = ctl("enqueue", "sys.noop", redis_url=False,
                     env={"REDIS_URL": "redis://127.0.0.1:%d" % port})
    assert rc == 3 and "127.0.0.1:%d" % port in err, (rc, err)


def test_auth_with_user_and_password_and_select():
    RS.r.execute_command("ACL", "SETUSER", "producer", "on", ">pa ss:w@rd", "~*", "&*", "+@all")
    try:
        url = "redis://producer:pa%20ss%3Aw%40rd@127.0.0.1:" + str(RS.port) + "/3"
        jid = ok("--redis", url, "enqueue", "sys.noop", redis_url=False).strip()
        db3 = redis.Redis(port=RS.port, db=3)
        assert unpack(db3.lindex(P + ":queue:default", 0))["jid"] == jid
        assert RS.r.llen(P + ":queue:default") == 0
        db3.flushdb()
        rc, _, err = ctl("--redis", url.replace("pa%20ss", "wrong"), "stats", redis_url=False)
        assert rc == 3 and "AUTH" in err and "wrong" not in err and "w@rd" not in err, (rc, err)
    finally:
        RS.r.execute_command("ACL", "DELUSER", "producer")


def test_config_file_env_and_flags_in_that_order():
    conf = os.path.join(RS.tmp, "ctl.conf")
    with open(conf, "w") as f:
        f.write('redis = { url = "%s"; prefix = "fromfile"; };\n'
                'types = ( { name = "sys.noop"; queue = "cfgqueue"; } );\n' % RS.url)
    jid = ok("-c", conf, "enqueue", "sys.noop", redis_url=False).strip()
    assert unpack(RS.r.lindex("fromfile:queue:cfgqueue", 0))["jid"] == jid
    ok("-c", conf, "--prefix", "flag", "enqueue", "sys.noop", "--queue", "q", redis_url=False)
    assert RS.r.llen("flag:queue:q") == 1
    # REDIS_URL beats the file, as for the daemon; --redis beats both.
    dead = "redis://127.0.0.1:%d/0" % free_port()
    rc, _, _ = ctl("-c", conf, "stats", redis_url=False, env={"REDIS_URL": dead})
    assert rc == 3
    ok("-c", conf, "--redis", RS.url, "stats", redis_url=False, env={"REDIS_URL": dead})
    ok("stats", redis_url=False, env={"REDIS_URL": RS.url})
    rc, _, err = ctl("-c", os.path.join(RS.tmp, "missing.conf"), "stats", redis_url=False)
    assert rc == 2 and "missing.conf" in err, (rc, err)
    rc, _, err = ctl("--redis", "rediss://x:topsecret@h/0", "stats", redis_url=False)
    assert rc == 2 and "topsecret" not in err, (rc, err)


def test_help_and_version():
    out = ok("--help", redis_url=False)
    assert "enqueue" in out and "stats" in out and "Exit codes" in out
    out = ok("stats", "--help", redis_url=False)
    for key in ["queues", "enqueued", "processing", "workers", "counters", "today"]:
        assert re.search(r"^ +%s +" % key, out, re.M), key  # every JSON key is documented
    assert ok("help", "enqueue", redis_url=False).startswith("usage: stellerctl enqueue TYPE")
    for argv in [["enqueue", "--help"], ["enqueue", "sys.noop", "-h"], ["stats", "--help"],
                 ["enqueue", "--version"]]:
        rc, out, err = ctl(*argv)
        assert rc == 0 and out and err == "", (argv, rc, err)
    assert RS.r.dbsize() == 0  # help is not a command to run
    assert re.fullmatch(r"stellerctl \d+\.\d+\.\d+\n", ok("--version", redis_url=False))


# ---------------------------------------------------------------- runner

def main():
    global RS
    tests = [(n, f) for n, f in sorted(globals().items(), key=lambda kv: kv[0])
             if n.startswith("test_") and callable(f)]
    if len(sys.argv) > 1:
        tests = [(n, f) for n, f in tests if any(a in n for a in sys.argv[1:])]
    passed = failed = 0
    RS = RedisServer()
    try:
        for name, fn in tests:
            RS.r.flushall()
            t0 = time.time()
            try:
                fn()
                passed += 1
                print("ok   %s (%.2fs)" % (name, time.time() - t0), flush=True)
            except Exception:
                failed += 1
                print("FAIL %s" % name, flush=True)
                traceback.print_exc()
    finally:
        RS.stop()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not tests else 0


if __name__ == "__main__":
    sys.exit(main())
