#!/usr/bin/python3
"""bench/drain.py - how fast steller-worker drains pre-enqueued sys.noop jobs.

Starts a private redis-server (no persistence, like redis-benchmark's defaults),
measures the baseline with redis-benchmark (LPUSH/RPOP, 50 clients, with and
without pipelining), then for each run: enqueues N sys.noop jobs with
`stellerctl enqueue --count N`, starts steller-worker with W workers, and times
from start until the processed counter reaches N. Reports jobs/s, Redis CPU per
job (INFO cpu before/after) and each worker's peak RSS (VmHWM), per run and as
the median.

usage: bench/drain.py [--jobs 1000000] [--runs 3] [--workers 2] [--concurrency 256]
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("STELLER_BUILD_DIR", os.path.join(ROOT, "build"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def redis_cpu(r):
    info = r.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def baseline(port):
    out = {}
    for label, extra in (("50 clients", []), ("50 clients, -P 16", ["-P", "16"])):
        res = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "lpush,rpop",
                              "-n", "1000000", "-c", "50", "-q"] + extra,
                             capture_output=True, text=True, check=True).stdout
        for line in res.replace("\r", "\n").splitlines():
            m = re.match(r"(LPUSH|RPOP): ([\d.]+) requests per second", line)
            if m:
                out[f"{m.group(1)} ({label})"] = float(m.group(2))
    return out


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def peak_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def one_run(port, tmp, args):
    r = redis.Redis(port=port)
    r.flushall()
    conf = os.path.join(tmp, "bench.conf")
    with open(conf, "w") as f:
        f.write(f'workers = {args.workers};\nconcurrency = {args.concurrency};\n'
                f'log_level = "warn";\n'
                f'redis = {{ url = "redis://127.0.0.1:{port}/0"; prefix = "steller"; }};\n')
    subprocess.run([os.path.join(BUILD, "stellerctl"), "-c", conf, "enqueue", "sys.noop",
                    "--count", str(args.jobs)], check=True, stdout=subprocess.DEVNULL)
    assert r.llen("steller:queue:default") == args.jobs
    cpu0 = redis_cpu(r)
    t0 = time.monotonic()
    worker = subprocess.Popen([os.path.join(BUILD, "steller-worker"), "-c", conf])
    rss = {}
    try:
        while int(r.get("steller:stats:processed") or 0) < args.jobs:
            for c in children(worker.pid):
                rss[c] = max(rss.get(c, 0), peak_rss_kib(c))
            if time.monotonic() - t0 > 600:
                raise RuntimeError("drain did not finish in 600 s")
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        cpu = redis_cpu(r) - cpu0
        for c in children(worker.pid):
            rss[c] = max(rss.get(c, 0), peak_rss_kib(c))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    return {"jobs_per_s": args.jobs / elapsed, "elapsed_s": elapsed,
            "redis_cpu_us_per_job": cpu / args.jobs * 1e6,
            "peak_rss_mib": max(rss.values()) / 1024 if rss else 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=256)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="steller-bench-")
    port = free_port()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                            "--dir", tmp, "--save", "", "--appendonly", "no"],
                           stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        print(f"machine: {os.cpu_count()} cores; redis-server {r.info()['redis_version']}")
        for k, v in baseline(port).items():
            print(f"baseline redis-benchmark {k}: {v:,.0f} ops/s")
        runs = []
        for i in range(args.runs):
            res = one_run(port, tmp, args)
            runs.append(res)
            print(f"run {i + 1}: {res['jobs_per_s']:,.0f} jobs/s ({res['elapsed_s']:.2f} s), "
                  f"redis {res['redis_cpu_us_per_job']:.2f} us CPU/job, "
                  f"peak worker RSS {res['peak_rss_mib']:.1f} MiB")
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"median of {args.runs}: {med['jobs_per_s']:,.0f} jobs/s, "
              f"redis {med['redis_cpu_us_per_job']:.2f} us CPU/job, "
              f"peak worker RSS {med['peak_rss_mib']:.1f} MiB "
              f"({args.jobs:,} jobs, {args.workers} workers x {args.concurrency})")
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
