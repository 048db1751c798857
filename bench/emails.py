#!/usr/bin/python3
"""bench/emails.py - email.welcome jobs/s through the sendgrid transport against a
provider that takes 100 ms to answer.

Starts a private redis-server and PostgreSQL (the test harness's fixtures),
migrates, inserts N partners, and runs a stand-in for SendGrid's v3 mail/send in
a process of its own: asyncio, HTTP/1.1 keep-alive, every request answered 202
after --latency seconds. For each run: N email.welcome jobs (one per partner)
are enqueued, then steller-worker starts (--workers x --concurrency); the clock
runs from its start until N jobs are acked. Each job is the whole path: the
partner loaded, the templates rendered, the "EmailDeliveries" row claimed, the
HTTP request, the row marked 'sent', the ack.

The ideal is workers x concurrency / latency (every slot always waiting on the
provider). The stand-in must not be the limit: it reports the CPU time it used
and how many requests it held at once; with 2 x 32 slots it should hold close to
64 requests all the time and use well under one core.

usage: bench/emails.py [--emails 10000] [--runs 3] [--workers 2] [--concurrency 32]
                      [--latency 0.1] [--pool 4]
"""
import os
import sys

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("STELLER_BUILD_DIR", os.path.join(ROOT, "build"))

import msgpack

import harness

API_KEY = "SG.bench-key"

# ---------------------------------------------------------------- the provider


class Provider:
    """The stand-in's state, in its own process."""

    def __init__(self, latency):
        self.latency = latency
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.busy_area = 0.0  # integral of in_flight over time, for the mean
        self.t_last = time.monotonic()
        self.t_first = None

    def _mark(self, d):
        now = time.monotonic()
        self.busy_area += self.in_flight * (now - self.t_last)
        self.t_last = now
        self.in_flight += d
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def stats(self):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._mark(0)
        return {"requests": self.requests, "max_in_flight": self.max_in_flight,
                "busy_area": self.busy_area, "cpu_s": ru.ru_utime + ru.ru_stime}

    def reset(self):
        self._mark(0)
        self.requests = self.max_in_flight = 0
        self.busy_area = 0.0

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                path = head.split(b" ", 2)[1]
                if path == b"/stats":
                    out = json.dumps(self.stats()).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(out), out))
                    continue
                if path == b"/reset":
                    self.reset()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    continue
                if b"Bearer " + API_KEY.encode() not in head or not body.startswith(b"{"):
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    continue
                self.requests += 1
                n = self.requests
                self._mark(1)
                await asyncio.sleep(self.latency)
                self._mark(-1)
                writer.write(b"HTTP/1.1 202 Accepted\r\nX-Message-Id: bench-%d\r\n"
                             b"Content-Length: 0\r\n\r\n" % n)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def serve(port, latency):
    async def run():
        p = Provider(latency)
        server = await asyncio.start_server(p.handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()
    asyncio.run(run())


def provider_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return json.loads(r.read() or b"null")


# ---------------------------------------------------------------- the runs


def add_partners(pg, n):
    pg.query('TRUNCATE "Partners" CASCADE')
    pg.query('INSERT INTO "Partners" ("Id", "BusinessName", "RegistrationNumber", "Logo", '
             '"Address", "Phone", "Email", "RevenueSharePercentage", "IsActive", "CreatedAt", '
             '"UpdatedAt") OVERRIDING SYSTEM VALUE SELECT i, \'Bench \' || i, \'RN\', \'\', '
             '\'\', \'\', \'p\' || i || \'@bench.test\', 0, true, now(), now() '
             'FROM generate_series(1, %s) AS i', (n,))


def enqueue_all(r, n):
    key = "%s:queue:email" % harness.PREFIX
    now = harness.now_ms()
    p = r.pipeline(transaction=False)
    for i in range(1, n + 1):
        p.lpush(key, msgpack.packb({"jid": "bench-%d" % i, "type": "email.welcome",
                                    "args": {"partner_id": i}, "queue": "email",
                                    "created_at": now, "attempt": 0}))
    p.execute()


def worker_run(rs, pg, port, a):
    r = rs.client()
    r.flushall()
    pg.query('TRUNCATE "EmailDeliveries"')
    enqueue_all(r, a.emails)
    provider_get(port, "/reset")
    w = harness.Worker(rs, workers=a.workers, concurrency=a.concurrency, log_level="warn",
                       debug_jobs=False, database={"url": pg.url(), "pool_size": a.pool},
                       email={"transport": "sendgrid", "timeout": 10.0,
                              "templates": os.path.join(ROOT, "conf", "templates"),
                              "sendgrid": {"base_url": "http://127.0.0.1:%d" % port,
                                           "api_key": API_KEY}})
    t0 = time.monotonic()
    w.start()
    try:
        while int(r.get("%s:stats:processed" % harness.PREFIX) or 0) < a.emails:
            if time.monotonic() - t0 > 600:
                raise RuntimeError("not done in 600 s:\n" + w.tail())
            if not w.running():
                raise RuntimeError("worker exited:\n" + w.tail())
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
    finally:
        w.kill()
    st = provider_get(port, "/stats")
    sent = pg.query('SELECT count(*) FROM "EmailDeliveries" WHERE "Status" = \'sent\'')[0][0]
    assert sent == a.emails and st["requests"] == a.emails, (sent, st)
    assert int(r.get("%s:stats:failed" % harness.PREFIX) or 0) == 0
    st["mean_in_flight"] = st["busy_area"] / elapsed
    return a.emails / elapsed, st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emails", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--pool", type=int, default=4, help="database.pool_size per worker")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve, a.latency)
        return
    port = harness.free_port()
    prov = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port),
                             "--latency", str(a.latency)])
    rs, pg = harness.RedisServer(), harness.PostgresServer()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                provider_get(port, "/stats")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        rs.start()
        pg.start()
        harness.migrate(pg)
        add_partners(pg, a.emails)
        ideal = a.workers * a.concurrency / a.latency
        print("machine: %d cores; %d emails; %d workers x %d; provider latency %g s; "
              "ideal %.0f emails/s; database.pool_size %d"
              % (os.cpu_count(), a.emails, a.workers, a.concurrency, a.latency, ideal, a.pool))
        rates = []
        for run in range(a.runs):
            cpu0 = provider_get(port, "/stats")["cpu_s"]
            rate, st = worker_run(rs, pg, port, a)
            rates.append(rate)
            cpu = st["cpu_s"] - cpu0
            print("run %d: %.0f emails/s (%.0f%% of ideal); provider: max %d, mean %.1f "
                  "requests in flight, %.2f s CPU (%.0f%% of one core)"
                  % (run + 1, rate, 100 * rate / ideal, st["max_in_flight"],
                     st["mean_in_flight"], cpu, 100 * cpu * rate / a.emails))
            sys.stdout.flush()
        med = statistics.median(rates)
        print("median of %d: %.0f emails/s, %.0f%% of the ideal %.0f"
              % (a.runs, med, 100 * med / ideal, ideal))
    finally:
        prov.terminate()
        prov.wait()
        pg.cleanup()
        rs.cleanup()


if __name__ == "__main__":
    main()
