"""Email templates are part of the config: a template naming a placeholder its
kind does not have (or otherwise broken) stops the daemon at start with the
file and line, exactly like a bad config; on SIGHUP a broken set is refused
and the running workers keep going; a good set is taken by new workers."""

import os
import re
import shutil
import signal
import subprocess

from harness import *

REPO_TEMPLATES = os.path.join(SOURCE_DIR, "conf/templates")


def _templates():
    """A private copy of the repo's templates, to break and fix."""
    d = os.path.join(make_tmpdir("templates"), "templates")
    shutil.copytree(REPO_TEMPLATES, d)
    return d


def _append(path, text):
    with open(path, "a") as f:
        f.write(text)


def _lines(path):
    with open(path) as f:
        return f.read().count("\n")


def _config_error_status():
    """The exit status of the daemon for a config file that does not parse."""
    path = os.path.join(make_tmpdir("badconf"), "bad.conf")
    with open(path, "w") as f:
        f.write("workers = ;\n")
    p = subprocess.run([WORKER_BIN, "-c", path], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
    assert p.returncode != 0
    return p.returncode


def _settled(r, n):
    return stats(r)["processed"] >= n and queue_len(r) == 0 and not processing_keys(r)


def test_unknown_placeholder_stops_the_daemon_at_start_naming_the_file():
    tdir = _templates()
    txt = os.path.join(tdir, "welcome.txt")
    line = _lines(txt) + 1
    _append(txt, "Your coupon: {coupon_code}\n")
    with RedisServer() as rs:
        w = Worker(rs, workers=1, email={"templates": tdir})
        w.start()
        rc = w.wait_exit(15)
        log = w.log()
        assert rc == _config_error_status(), "exit %r, a bad config exits %r; log:\n%s" % (
            rc, _config_error_status(), log)
        want = "%s:%d: unknown placeholder {coupon_code}" % (txt, line)
        assert want in log, "the log does not say %r:\n%s" % (want, log)
        assert "worker started" not in log, "workers started with a broken template:\n" + log


def test_check_config_refuses_a_broken_template():
    tdir = _templates()
    html = os.path.join(tdir, "activation.html")
    _append(html, "<p>{activation_url</p>\n")
    with RedisServer() as rs:
        w = Worker(rs, workers=1, email={"templates": tdir})
        p = subprocess.run([WORKER_BIN, "--check-config", "-c", w.conf_path],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20)
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode != 0, "--check-config accepted a broken template: %r" % err
        assert re.search(re.escape(html) + r":\d+: unterminated \{", err), err


def test_missing_template_dir_stops_the_daemon_at_start():
    with RedisServer() as rs:
        missing = os.path.join(make_tmpdir("templates"), "nope")
        w = Worker(rs, workers=1, email={"templates": missing})
        w.start()
        rc = w.wait_exit(15)
        assert rc != 0
        assert "%s/welcome.subject: missing file" % missing in w.log(), w.log()


def test_broken_templates_on_sighup_are_refused_while_jobs_keep_running():
    tdir = _templates()
    with RedisServer() as rs, Worker(rs, workers=1, email={"templates": tdir}) as w:
        r = rs.client()
        before = set(w.wait_children(1))
        jids = enqueue_many(r, "sys.noop", 20, prefix="before")
        w.wait_for(lambda: _settled(r, len(jids)), 15, "jobs processed with good templates")
        assert "email templates not loaded" not in w.log(), w.log()

        # A placeholder of another kind: {stage} belongs to reengagement only.
        subj = os.path.join(tdir, "welcome.subject")
        with open(subj, "w") as f:
            f.write("Day {stage} at Steller\n")
        w.signal(signal.SIGHUP)
        w.wait_for(lambda: "reload refused" in w.log(), 10, "reload refused in the log")
        refusal = [x for x in w.log().splitlines() if "reload refused" in x][-1]
        assert "welcome.subject:1: unknown placeholder {stage}" in refusal, refusal
        assert set(w.children()) == before, "the workers were replaced on a refused reload"
        jids2 = enqueue_many(r, "sys.sleep", 50, args={"ms": 5}, prefix="during")
        w.wait_for(lambda: _settled(r, len(jids) + len(jids2)), 15,
                   "jobs processed after the refusal")
        assert set(w.children()) == before

        # Fixed: the next SIGHUP replaces the workers.
        shutil.copy(os.path.join(REPO_TEMPLATES, "welcome.subject"), subj)
        w.signal(signal.SIGHUP)
        w.wait_for(lambda: w.children() and not (w.children() & before), 10,
                   "a new worker after the good reload")
        jids3 = enqueue_many(r, "sys.noop", 20, prefix="after")
        w.wait_for(lambda: _settled(r, len(jids) + len(jids2) + len(jids3)), 15,
                   "jobs processed after the good reload")
        assert r.llen("%s:dead" % PREFIX) == 0, dead_records(r)


def test_worker_that_cannot_load_templates_keeps_running_other_jobs():
    """Templates broken behind the master's back (no SIGHUP): a restarted worker
    logs that it has none and runs the other job types anyway."""
    tdir = _templates()
    with RedisServer() as rs, Worker(rs, workers=1, email={"templates": tdir}) as w:
        r = rs.client()
        (old,) = w.wait_children(1)
        os.unlink(os.path.join(tdir, "reengagement.txt"))
        os.kill(old, signal.SIGKILL)
        w.wait_for(lambda: w.children() and old not in w.children(), 10, "a restarted worker")
        w.wait_for(lambda: "email templates not loaded" in w.log(), 10,
                   "the worker's complaint in the log")
        assert "reengagement.txt: missing file" in w.log(), w.log()
        jids = enqueue_many(r, "sys.noop", 20)
        w.wait_for(lambda: _settled(r, len(jids)), 15, "jobs processed without templates")


if __name__ == "__main__":
    main()
