"""test_http.py - the master's HTTP endpoint (worker/http.c, worker/metrics.c).

Drives /metrics, /healthz and /stats.json of a real steller-worker against a
real redis-server: the figures match a known state in Redis, promtool accepts
the text format, /healthz follows Redis going away and coming back, and the
server survives malformed, oversized and stalled requests and a wrk burst.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


def http_port(w):
    return int(w.config["http"]["listen"].rsplit(":", 1)[1])


def get(w, path, timeout=5):
    """(status, body text); status None when the connection failed."""
    url = "http://127.0.0.1:%d%s" % (http_port(w), path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def raw_request(w, data, timeout=10):
    """Sends bytes, returns everything the server wrote until it closed."""
    with socket.create_connection(("127.0.0.1", http_port(w)), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def status_of(response):
    line = response.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 else None


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of the samples; asserts every
    sample has HELP and TYPE lines before it."""
    samples, described = {}, set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            described.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        labels = frozenset()
        name = name_labels
        if "{" in name_labels:
            name, rest = name_labels.split("{", 1)
            labels = frozenset(tuple(kv.split("=", 1)) for kv in rest.rstrip("}").split(",")
                               if kv)
        base = name
        for suffix in ("_bucket", "_sum", "_count"):  # a histogram's series
            if name.endswith(suffix) and name[:-len(suffix)] in described:
                base = name[:-len(suffix)]
        assert base in described, "no HELP/TYPE for %s" % name
        samples[(name, labels)] = float(value)
    return samples


def metric(samples, name, queue=None):
    labels = frozenset([("queue", '"%s"' % queue)]) if queue else frozenset()
    return samples.get((name, labels))


def started(w, workers):
    w.wait_for(lambda: get(w, "/healthz")[0] == 200, 20, "/healthz 200")
    w.wait_for(lambda: metric(parse_metrics(get(w, "/metrics")[1]), "steller_workers_live")
               == workers, 20, "%d live workers" % workers)


def test_metrics_match_a_paused_queue_and_promtool_accepts_them():
    with RedisServer() as rs, Worker(rs, workers=2, concurrency=4) as w:
        r = rs.client()
        started(w, 2)
        r.sadd("%s:paused" % PREFIX, "email")
        created = now_ms() - 5000
        raws = [envelope("sys.noop", queue="email", created_at=created)[1] for _ in range(7)]
        enqueue(r, raws, queue="email")

        status, text = get(w, "/metrics")
        assert status == 200, (status, text)
        m = parse_metrics(text)
        assert metric(m, "steller_queue_depth", "email") == 7, text
        assert metric(m, "steller_queue_paused", "email") == 1, text
        assert metric(m, "steller_queue_paused", "default") == 0, text
        lat1 = metric(m, "steller_queue_latency_seconds", "email")
        assert 4.9 <= lat1 < 60, lat1
        assert metric(m, "steller_queue_latency_seconds", "default") == 0
        assert metric(m, "steller_redis_up") == 1
        assert metric(m, "steller_slots") == 8, text
        assert metric(m, "steller_slots_busy") == 0, text
        assert metric(m, "steller_postgres_up") is None, "no worker has a database"
        assert [v for k, v in m.items() if k[0] == "steller_build_info"] == [1], text

        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            assert p.returncode == 0, p.stdout.decode()
        else:
            print("note: promtool not installed (Debian package prometheus); skipped")

        time.sleep(1.2)
        lat2 = metric(parse_metrics(get(w, "/metrics")[1]),
                      "steller_queue_latency_seconds", "email")
        assert lat2 >= lat1 + 1.0, (lat1, lat2)

        status, body = get(w, "/stats.json")
        assert status == 200, body
        js = json.loads(body)
        assert js["queues"]["email"] == {"depth": 7, "latency_seconds": js["queues"]["email"]
                                         ["latency_seconds"], "paused": True}, js
        assert js["queues"]["email"]["latency_seconds"] >= lat2
        assert js["workers"]["live"] == 2 and js["workers"]["expected"] == 2, js

        # Resumed, the queue drains: depth and latency fall to 0, the counter rises.
        r.srem("%s:paused" % PREFIX, "email")

        def drained():
            m = parse_metrics(get(w, "/metrics")[1])
            return (metric(m, "steller_queue_depth", "email") == 0 and
                    metric(m, "steller_queue_latency_seconds", "email") == 0 and
                    metric(m, "steller_jobs_processed_total") == 7)
        w.wait_for(drained, 20, "email drained on /metrics")


def test_healthz_follows_redis_going_away_and_back():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        started(w, 1)
        rs.stop()
        status, body = w.wait_for(lambda: (lambda x: x if x[0] == 503 else None)(
            get(w, "/healthz")), 15, "/healthz 503")
        assert "redis" in body, body
        status, text = get(w, "/metrics")
        assert status == 200 and metric(parse_metrics(text), "steller_redis_up") == 0, text
        assert get(w, "/stats.json")[0] == 503
        rs.start(port=rs.port)
        w.wait_for(lambda: get(w, "/healthz")[0] == 200, 30, "/healthz 200 again")


def test_healthz_follows_postgres_going_away_and_back():
    with PostgresServer() as pg, RedisServer() as rs, \
            Worker(rs, workers=2, database={"url": pg.url()}) as w:
        migrate(pg)
        started(w, 2)
        w.wait_for(lambda: metric(parse_metrics(get(w, "/metrics")[1]), "steller_postgres_up")
                   == 1, 20, "steller_postgres_up 1")
        pg.stop()
        status, body = w.wait_for(lambda: (lambda x: x if x[0] == 503 else None)(
            get(w, "/healthz")), 30, "/healthz 503")
        assert "postgres" in body, body
        assert metric(parse_metrics(get(w, "/metrics")[1]), "steller_postgres_up") == 0
        assert json.loads(get(w, "/stats.json")[1])["postgres_up"] is False
        pg.start(port=pg.port)
        w.wait_for(lambda: get(w, "/healthz")[0] == 200, 30, "/healthz 200 again")


def listener_inode(port):
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                return fields[9]
    return None


def socket_inodes(pid):
    out = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def test_workers_do_not_hold_the_listening_socket():
    with RedisServer() as rs, Worker(rs, workers=2) as w:
        started(w, 2)
        inode = listener_inode(http_port(w))
        assert inode and inode in socket_inodes(w.pid), inode
        kids = w.wait_children(2)
        for pid in kids:
            assert inode not in socket_inodes(pid), pid


def test_malformed_requests_get_4xx_and_the_server_keeps_serving():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        started(w, 1)
        cases = [
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /healthz HTTP/9.9\r\n\r\n", 400),
            (b"GET healthz HTTP/1.1\r\n\r\n", 400),
            (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
            (b"GET /he\x00althz HTTP/1.1\r\n\r\n", 400),
            (b"\xff\xfe\r\n\r\n", 400),
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
            (b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            (b"GET /healthz?verbose=1 HTTP/1.0\n\n", 200),
        ]
        for data, want in cases:
            got = raw_request(w, data)
            assert status_of(got) == want, (data, got)
            assert b"\r\nConnection: close\r\n" in got, got
        assert get(w, "/healthz")[0] == 200


def test_oversized_head_gets_431():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        started(w, 1)
        big = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        got = raw_request(w, big)
        assert status_of(got) == 431, got[:200]
        assert get(w, "/healthz")[0] == 200


def test_stalled_client_is_dropped_after_the_deadline_while_others_are_served():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        started(w, 1)
        stalled = socket.create_connection(("127.0.0.1", http_port(w)), timeout=15)
        try:
            t0 = time.monotonic()
            stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            for _ in range(5):
                assert get(w, "/healthz")[0] == 200
                time.sleep(0.2)
            data = stalled.recv(4096)  # EOF once the 5 s deadline passes
            took = time.monotonic() - t0
            assert data == b"", data
            assert 4.0 <= took < 10, took
        finally:
            stalled.close()
        assert get(w, "/healthz")[0] == 200


def test_connections_beyond_the_cap_are_closed_at_once():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        started(w, 1)
        idle = []
        try:
            for _ in range(256):  # HTTP_MAX_CONNS, each sending half a head
                s = socket.create_connection(("127.0.0.1", http_port(w)), timeout=10)
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
                idle.append(s)
            time.sleep(0.5)
            extra = socket.create_connection(("127.0.0.1", http_port(w)), timeout=3)
            t0 = time.monotonic()
            extra.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            try:
                data = extra.recv(4096)
            except ConnectionResetError:
                data = b""
            extra.close()
            assert data == b"" and time.monotonic() - t0 < 2.0, data
        finally:
            for s in idle:
                s.close()
        w.wait_for(lambda: get(w, "/healthz")[0] == 200, 10, "/healthz 200 once they left")


def test_server_keeps_serving_after_10000_requests_from_wrk():
    wrk = shutil.which("wrk")
    if not wrk:
        print("note: wrk not installed (Debian package wrk); the load part is skipped")
        return
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        started(w, 1)
        url = "http://127.0.0.1:%d/healthz" % http_port(w)
        p = subprocess.run([wrk, "-t2", "-c50", "-d3s", url], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode()
        assert p.returncode == 0, out
        total = [int(x.split()[0]) for x in out.splitlines() if " requests in " in x]
        assert total and total[0] >= 10000, out
        assert "Non-2xx" not in out, out
        print("  wrk: %d requests to /healthz in 3 s" % total[0])
        assert get(w, "/healthz")[0] == 200
        assert get(w, "/metrics")[0] == 200


if __name__ == "__main__":
    main()
