"""worker/pg.c through tests/integration/pg_probe.c against a real PostgreSQL:
parameters travel apart from the SQL, errors come back with their SQLSTATE, and
a pool started before the server connects once it is up."""

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


if __name__ == "__main__":
    main()
