"""Configuration: a bad file fails with FILE:LINE and the key, --check-config
prints the effective config with secrets redacted, and what it prints is
itself a valid config."""

import os
import re
import subprocess

from harness import *

SECRET = "sekrit"


def _check(path, env=None):
    e = dict(os.environ)
    for k in ("REDIS_URL", "DATABASE_URL", "SENDGRID_API_KEY", "EMAIL_SMTP_PASSWORD"):
        e.pop(k, None)
    e.update(env or {})
    p = subprocess.run([WORKER_BIN, "--check-config", "-c", path], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, timeout=20)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def _write(name, text):
    path = os.path.join(make_tmpdir("config"), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _good_config():
    return {
        "workers": 2,
        "concurrency": 16,
        "debug_jobs": True,
        "shutdown_timeout": 3.0,
        "max_job_bytes": 1024,
        "poison_limit": 3,
        "log_level": "info",
        "redis": {"url": "redis://:%s@127.0.0.1:1/0" % SECRET, "prefix": "steller"},
        "email": {"templates": os.path.join(SOURCE_DIR, "conf/templates")},
        "engine": {"heartbeat_interval": 0.5, "heartbeat_ttl": 2.0,
                   "promote_interval": 0.1, "reaper_interval": 0.5},
        "types": [{"name": "sys.fail", "max_attempts": 3, "backoff_base": 0.2,
                   "backoff_factor": 0.01, "backoff_cap": 1.0}],
    }


def test_syntax_error_names_file_and_line():
    path = _write("bad.conf", "workers = 2;\nlog_level = \"info\";\nconcurrency = ;\n"
                  "shutdown_timeout = 1.0;\n")
    rc, out, err = _check(path)
    assert rc != 0, "exit 0 on a syntax error; stderr: %r" % err
    m = re.search(r"bad\.conf:(\d+)", err)
    assert m, "stderr does not say bad.conf:LINE: %r" % err
    assert m.group(1) == "3", "error at line %s, the mistake is on line 3: %r" % (
        m.group(1), err)


def test_unknown_key_is_an_error_naming_it():
    path = _write("bad.conf", "workers = 2;\nno_such_key = 1;\n")
    rc, out, err = _check(path)
    assert rc != 0, "an unknown key was accepted; stderr: %r" % err
    assert "no_such_key" in err, err
    assert "bad.conf:2" in err, "stderr does not name bad.conf:2: %r" % err


def test_unknown_key_in_a_group_is_an_error_naming_it():
    path = _write("bad.conf", "workers = 2;\nredis = {\n  url = \"redis://127.0.0.1:1/0\";\n"
                  "  prefx = \"x\";\n};\n")
    rc, out, err = _check(path)
    assert rc != 0, "an unknown key was accepted; stderr: %r" % err
    assert "prefx" in err, err
    assert "bad.conf:4" in err, "stderr does not name bad.conf:4: %r" % err


def test_bad_value_names_key_and_line():
    path = _write("bad.conf", "workers = 2;\n\nconcurrency = \"lots\";\n")
    rc, out, err = _check(path)
    assert rc != 0, "a string concurrency was accepted; stderr: %r" % err
    assert "concurrency" in err, err
    assert "bad.conf:3" in err, "stderr does not name bad.conf:3: %r" % err


def test_out_of_range_value_is_an_error():
    path = _write("bad.conf", "workers = -1;\n")
    rc, out, err = _check(path)
    assert rc != 0, "workers = -1 was accepted; stderr: %r" % err
    assert "workers" in err and "bad.conf:1" in err, err


def test_check_config_prints_config_with_password_redacted():
    path = _write("good.conf", render_config(_good_config()))
    rc, out, err = _check(path)
    assert rc == 0, "exit %d on a good file; stderr: %r" % (rc, err)
    assert SECRET not in out and SECRET not in err, "the password leaked:\n%s%s" % (out, err)
    assert "127.0.0.1:1" in out, "the redis url (redacted) is not printed:\n%s" % out
    for key in ("workers", "concurrency", "shutdown_timeout", "max_job_bytes", "poison_limit"):
        assert re.search(r"\b%s\s*=" % key, out), "%s missing from the output:\n%s" % (key, out)
    assert re.search(r"\bconcurrency\s*=\s*16\b", out), out
    assert re.search(r"\bmax_job_bytes\s*=\s*1024\b", out), out


def test_check_config_redacts_password_from_environment():
    path = _write("good.conf", render_config(_good_config()))
    rc, out, err = _check(path, {"REDIS_URL": "redis://user:%s@127.0.0.1:2/0" % SECRET})
    assert rc == 0, err
    assert SECRET not in out and SECRET not in err, "the password leaked:\n%s%s" % (out, err)
    assert "127.0.0.1:2" in out, "REDIS_URL does not override redis.url:\n%s" % out


def test_check_config_output_is_a_valid_config():
    path = _write("good.conf", render_config(_good_config()))
    rc, out, err = _check(path)
    assert rc == 0, err
    again = _write("printed.conf", out)
    rc2, out2, err2 = _check(again)
    assert rc2 == 0, "the printed config does not load: %r\n%s" % (err2, out)
    assert out2 == out, "printing is not a fixed point"


def test_redis_password_never_reaches_a_log_line():
    with RedisServer(args=["--requirepass", SECRET]) as rs:
        r = rs.client()
        # Right password: the pool works and says nothing of the password.
        with Worker(rs, workers=1) as w:
            w.wait_children(1)
            jid, raw = envelope("sys.fail", {"message": "x", "permanent": True})
            enqueue(r, [raw])
            enqueue_many(r, "sys.noop", 5)
            w.wait_for(lambda: stats(r)["processed"] == 5 and stats(r)["dead"] == 1, 15,
                       "5 processed and 1 dead")
        assert SECRET not in w.log(), "the password is in the log:\n" + w.tail()
        assert all(SECRET.encode() not in x for x in dead_raw(r))
        # Wrong password, from the environment: the failure is logged, the
        # password is not.
        wrong = "wr0ngpassw0rd"
        w2 = Worker(rs, workers=1)
        w2.start(extra_env={"REDIS_URL": "redis://:%s@127.0.0.1:%d/0" % (wrong, rs.port)})
        with w2:
            w2.wait_for(lambda: re.search(r"level=(warn|error)", w2.log()), 10,
                        "a warning or error about the failed login")
            log = w2.log()
        assert wrong not in log and SECRET not in log, "a password is in the log:\n" + log


def test_version():
    p = subprocess.run([WORKER_BIN, "--version"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=10)
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        version = re.search(r"project\([^)]*VERSION\s+([0-9.]+)", f.read()).group(1)
    assert p.returncode == 0, p
    assert version in p.stdout.decode(), (version, p.stdout)


if __name__ == "__main__":
    main()
