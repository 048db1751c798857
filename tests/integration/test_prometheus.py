"""A real Prometheus scrapes the master's /metrics and answers a query for queue
depth; the alert rules shipped in docs/prometheus-alerts.yml load and pass
`promtool check rules`."""

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request

from harness import *

RULES = os.path.join(SOURCE_DIR, "docs", "prometheus-alerts.yml")


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


def query(port, q):
    url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (port, urllib.parse.quote(q))
    try:
        res = get_json(url)["data"]["result"]
    except OSError:
        return None
    return {tuple(sorted(x["metric"].items())): float(x["value"][1]) for x in res}


def ctl_latency(w, queue):
    out = subprocess.run([CTL_BIN, "-c", w.conf_path, "stats", "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["queues"][queue]["latency_s"]


def test_alert_rules_pass_promtool():
    p = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_prometheus_scrapes_queue_depth():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        r = rs.client()
        w.wait_children(1)
        target = w.config["http"]["listen"]
        d = make_tmpdir("prometheus")
        conf = os.path.join(d, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "rule_files: [%s]\n"
                    "scrape_configs:\n"
                    "  - job_name: steller-worker\n"
                    "    static_configs: [{targets: ['%s']}]\n" % (json.dumps(RULES), target))
        port = free_port()
        log = open(os.path.join(d, "prometheus.log"), "wb")
        prom = subprocess.Popen(["prometheus", "--config.file=" + conf,
                                 "--storage.tsdb.path=" + os.path.join(d, "data"),
                                 "--web.listen-address=127.0.0.1:%d" % port],
                                stdout=log, stderr=log)
        try:
            subprocess.run([CTL_BIN, "-c", w.conf_path, "queue", "pause", "email"], check=True,
                           stdout=subprocess.DEVNULL)
            enqueue_many(r, "sys.noop", 7, queue="email")
            depth = 'steller_queue_depth{job="steller-worker",queue="email"}'
            wait_for(lambda: (query(port, depth) or {}) and
                     list(query(port, depth).values()) == [7.0], 30,
                     "Prometheus to report email queue depth 7")
            rules = get_json("http://127.0.0.1:%d/api/v1/rules" % port)["data"]["groups"]
            with open(RULES) as f:
                shipped = f.read().count("- alert:")
            assert shipped >= 10 and sum(len(g["rules"]) for g in rules) == shipped, rules
            # stellerctl stats shows the same queue latency growing while it is paused,
            # and back to zero once the queue drains
            w.wait_for(lambda: ctl_latency(w, "email") >= 1.0, 10, "stats latency >= 1 s")
            subprocess.run([CTL_BIN, "-c", w.conf_path, "queue", "resume", "email"],
                           check=True, stdout=subprocess.DEVNULL)
            w.wait_for(lambda: queue_len(r, "email") == 0, 10, "the email queue drained")
            assert ctl_latency(w, "email") == 0.0
        finally:
            prom.terminate()
            prom.wait(timeout=10)
            log.close()
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
