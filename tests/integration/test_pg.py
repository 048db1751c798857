"""worker/pg.c through tests/integration/pg_probe.c against a real PostgreSQL:
parameters travel apart from the SQL, errors come back with their SQLSTATE, and
a pool started before the server connects once it is up. pg_submit() queues
what finds no idle connection, in order, and ends every waiting request with
PG_LOST, promptly, when the database is down, goes down, or the pool is freed."""

import os
import subprocess
import time

from harness import *

PROBE = os.path.join(BUILD_DIR, "pg_probe")


def probe(url, sql, *params, timeout=30):
    p = subprocess.run([PROBE, url, sql] + list(params), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout.strip()


def test_parameters_are_values_not_sql():
    with PostgresServer() as pg:
        rc, out = probe(pg.url(), "SELECT $1::int + 1, $2::text, $3::text IS NULL",
                        "41", "x'); DROP TABLE t; --", "")
        assert rc == 0 and out == "ok 42|x'); DROP TABLE t; --|f", (rc, out)


def test_an_error_reports_its_sqlstate():
    with PostgresServer() as pg:
        rc, out = probe(pg.url(), "SELECT $1::int", "not a number")
        assert rc == 1 and out.startswith("error 22P02") and "\n" not in out, (rc, out)


def test_a_pool_started_before_the_server_connects_when_it_comes_up():
    with PostgresServer() as pg:
        url, port = pg.url(), pg.port
        pg.stop()
        p = subprocess.Popen([PROBE, url, "SELECT 7"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert p.poll() is None, "the probe gave up while the server was down"
        pg.start(port=port)
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0 and out.strip() == "ok 7", (p.returncode, out)



def submit(url, sql, n, *opts, timeout=40):
    """pg_probe --submit: (rc, [(index, outcome, rest)], elapsed ms)."""
    p = subprocess.run([PROBE, "--submit", str(n)] + list(opts) + [url, sql],
                       capture_output=True, text=True, timeout=timeout)
    lines = p.stdout.strip().split("\n")
    assert lines and lines[-1].startswith("done "), (p.returncode, p.stdout, p.stderr)
    calls = [tuple((l.split(" ", 2) + [""])[:3]) for l in lines[:-1]]
    return p.returncode, [(int(i), o, rest) for i, o, rest in calls], int(lines[-1].split()[1])


def test_submitted_requests_beyond_the_pool_wait_and_run_in_order():
    with PostgresServer() as pg:
        pg.query("CREATE SEQUENCE s")
        # One connection: 40 requests queue behind each other; the server's
        # sequence shows they ran in submission order, each exactly once.
        rc, calls, _ = submit(pg.url(), "SELECT $1::int, nextval('s')", 40)
        assert rc == 0, calls
        assert [c[0] for c in calls] == list(range(40)), calls
        assert all(o == "ok" and rest == "%d|%d" % (i, i + 1) for i, o, rest in calls), calls


def test_submitted_requests_share_the_pool_never_more_at_once_than_connections():
    with PostgresServer() as pg:
        sql = ("SELECT $1::int, (SELECT count(*) FROM pg_stat_activity "
               "WHERE application_name = 'steller-worker' AND state = 'active') "
               "FROM pg_sleep(0.05)")
        rc, calls, ms = submit(pg.url(), sql, 30, "--pool", "3")
        assert rc == 0 and len(calls) == 30, calls
        assert sorted(c[0] for c in calls) == list(range(30)), calls
        assert all(o == "ok" and 1 <= int(rest.split("|")[1]) <= 3 for _, o, rest in calls), calls
        # 10 rounds of 50 ms on 3 connections, not 30 rounds on one
        assert ms < 30 * 50 * 0.8, ms


def test_submitted_before_the_pool_connects_they_wait_for_it():
    with PostgresServer() as pg:
        rc, calls, _ = submit(pg.url(), "SELECT $1::int", 5, "--now", "--pool", "2")
        assert rc == 0 and all(o == "ok" for _, o, _ in calls), calls


def test_with_postgresql_down_submitted_requests_end_lost_promptly():
    with PostgresServer() as pg:
        url = pg.url()
        pg.stop()
        t0 = time.monotonic()
        rc, calls, ms = submit(url, "SELECT $1::int", 20, "--now", "--pool", "2")
        assert rc == 0 and len(calls) == 20, calls
        assert all(o == "lost" for _, o, _ in calls), calls
        assert time.monotonic() - t0 < 5 and ms < 3000, ms


def test_requests_waiting_when_postgresql_goes_down_end_lost_promptly():
    with PostgresServer() as pg:
        url = pg.url()
        p = subprocess.Popen([PROBE, "--submit", "6", "--pool", "2", url,
                              "SELECT $1::int FROM pg_sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # two running, four waiting
        assert p.poll() is None
        t0 = time.monotonic()
        pg.stop(mode="immediate")
        out, _ = p.communicate(timeout=20)
        lines = out.strip().split("\n")
        assert p.returncode == 0 and lines[-1].startswith("done "), (p.returncode, out)
        assert time.monotonic() - t0 < 5, out
        outcomes = {int(l.split()[0]): l.split()[1] for l in lines[:-1]}
        assert sorted(outcomes) == list(range(6)), out
        assert all(o in ("lost", "error") for o in outcomes.values()), out
        assert all(outcomes[i] == "lost" for i in range(2, 6)), out


def test_pg_free_ends_waiting_requests_lost():
    with PostgresServer() as pg:
        rc, calls, _ = submit(pg.url(), "SELECT $1::int FROM pg_sleep(30)", 5,
                              "--free-after", "1000")
        assert rc == 0 and sorted(c[0] for c in calls) == list(range(5)), calls
        assert all(o == "lost" and rest == "shutting down" for _, o, rest in calls), calls


if __name__ == "__main__":
    main()
