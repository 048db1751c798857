"""harness.py - fixtures and a tiny runner for the integration tests.

The integration tests drive the real steller-worker binary against a real
redis-server, the way beanstalkd's testserv.c drives a real server: every test
starts its own redis-server on a free port in a temp dir and its own daemon
with a config file written for it, so test files can run in parallel.

    from harness import *

    def test_something():
        with RedisServer() as rs, Worker(rs, workers=1) as w:
            r = rs.client()
            jids = enqueue_many(r, "sys.noop", 100)
            w.wait_for(lambda: stats(r)["processed"] == 100, 30, "100 processed")

    if __name__ == "__main__":
        main()

Tests that need PostgreSQL start a PostgresServer the same way (initdb into a
temp dir, a free loopback port, a database "steller") and migrate it with
migrate(pg), which runs the built `stellerctl migrate`.

What the fixtures promise:
- Cleanup always happens: the with-blocks stop their process, and the runner
  also stops every process and removes every temp dir a test made, whatever
  happened. Processes get PR_SET_PDEATHSIG, so they die with the runner even if
  it is killed; scripts/test.sh additionally sweeps for processes carrying its
  STELLER_TEST_RUN_ID environment marker.
- Waiting is always a poll with a deadline (every 50 ms), never a bare sleep.
- When a test fails, the runner prints the tail of every daemon log (stderr) of
  that test. A sanitizer report in any daemon log fails the test, even when the
  master hid the crash by restarting the worker.

Environment: STELLER_BUILD_DIR (default /work/main/build) and
STELLER_SOURCE_DIR (default /work/main), set by ctest. STELLER_KEEP_TMP=1 keeps
the temp dirs of failed tests. Arguments to a test file select tests by name.
"""

import ctypes
import glob
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
import uuid

import msgpack
import redis

BUILD_DIR = os.environ.get("STELLER_BUILD_DIR", "/work/main/build")
SOURCE_DIR = os.environ.get("STELLER_SOURCE_DIR", "/work/main")
WORKER_BIN = os.path.join(BUILD_DIR, "steller-worker")
CTL_BIN = os.path.join(BUILD_DIR, "stellerctl")
PREFIX = "steller"
POLL = 0.05
TEST_TIMEOUT = int(os.environ.get("STELLER_TEST_TIMEOUT", "110"))

__all__ = [
    "BUILD_DIR", "SOURCE_DIR", "WORKER_BIN", "CTL_BIN", "PREFIX",
    "RedisServer", "Worker", "free_port", "make_tmpdir", "wait_for",
    "envelope", "enqueue", "enqueue_many", "unique_jid", "now_ms",
    "dead_records", "dead_raw", "stats", "processing_keys", "in_flight",
    "queue_len", "retry_entries", "locate_jids", "decode", "render_config",
    "pid_alive", "main", "POLL",
    "PostgresServer", "migrate",
]

# ---------------------------------------------------------------- plumbing

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)

# Per-test registries, emptied by the runner after each test.
_procs = []     # (name, Popen) of everything a fixture started
_tmpdirs = []   # temp dirs to remove
_logs = []      # (name, path) of daemon logs, shown on failure
_workers = []   # Worker fixtures, whose worker processes need killing too
_finalizers = []  # cleanup() of fixtures that stop gracefully (PostgresServer)


def _pdeathsig(sig):
    def fn():
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    return fn


def make_tmpdir(what):
    d = tempfile.mkdtemp(prefix="steller-it-%s-" % what)
    _tmpdirs.append(d)
    return d


def free_port():
    """A port that was free a moment ago (the kernel picks it on bind to 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now_ms():
    return int(time.time() * 1000)


def pid_alive(pid):
    """True for a live, non-zombie process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_for(pred, timeout, what, alive=None):
    """Polls pred() every 50 ms until it returns a truthy value, which is
    returned. On timeout raises AssertionError naming what was awaited and the
    last value seen. alive: an optional Worker whose master must stay up."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if alive is not None and not alive.running():
            raise AssertionError("worker master exited (rc=%r) while waiting for %s; last: %r"
                                 % (alive.proc.returncode, what, _short(last)))
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %gs waiting for %s; last: %r"
                                 % (timeout, what, _short(last)))
        time.sleep(POLL)


def _short(v, n=300):
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


# ASan's shadow-byte map and legend: noise in a log tail.
_SHADOW = re.compile(r"^\s*(=>)?0x[0-9a-f]+:|^Shadow byte|^  [A-Z][A-Za-z -]+:\s+[0-9a-f ]+$")


def _tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    text = [x for x in data.decode("utf-8", "replace").splitlines() if not _SHADOW.match(x)]
    return "\n".join(text[-lines:])


# ---------------------------------------------------------------- redis

class RedisServer:
    """A redis-server on a free port in its own temp dir.

    appendonly=True makes restart() keep the data (AOF in the same dir, same
    port). Use as a context manager or call start()/cleanup()."""

    def __init__(self, appendonly=False, args=()):
        self.appendonly = appendonly
        self.args = list(args)  # more redis-server options: ["--requirepass", "x"]
        self.dir = make_tmpdir("redis")
        self.port = None
        self.proc = None
        self.log_path = os.path.join(self.dir, "redis.log")
        self._clients = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def start(self, port=None):
        """Starts on port (restart) or on a fresh free port, retrying a few
        times if another process grabbed the port in between."""
        tries = 1 if port else 5
        for _ in range(tries):
            self.port = port or free_port()
            if self._spawn():
                return self
        raise AssertionError("redis-server did not start; log:\n" + _tail(self.log_path))

    def _spawn(self):
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", self.dir, "--save", "", "--appendonly",
               "yes" if self.appendonly else "no", "--daemonize", "no",
               "--logfile", ""] + self.args
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=_pdeathsig(signal.SIGKILL))
        log.close()
        _procs.append(("redis-server:%d" % self.port, self.proc))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                c = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1,
                                password=self.password)
                # While loading the AOF redis answers PING with -LOADING.
                if c.ping():
                    c.close()
                    return True
            except redis.exceptions.RedisError:
                pass
            time.sleep(POLL)
        self.stop()
        return False

    @property
    def password(self):
        if "--requirepass" in self.args:
            return self.args[self.args.index("--requirepass") + 1]
        return None

    def url(self, db=0):
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s127.0.0.1:%d/%d" % (auth, self.port, db)

    def client(self):
        """A new redis-py client (bytes replies). Closed by cleanup()."""
        c = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=15,
                        retry_on_timeout=False, password=self.password)
        self._clients.append(c)
        return c

    def stop(self, timeout=10):
        """Graceful stop (SIGTERM: redis fsyncs the AOF), then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for c in self._clients:
            c.connection_pool.disconnect()

    def restart(self, down_for=0.0):
        """Stops and starts again on the same port and dir. down_for seconds
        pass in between (an outage the daemon has to ride out)."""
        port = self.port
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start(port=port)

    def cleanup(self):
        self.stop()
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients = []


# ---------------------------------------------------------------- postgres

def _pg_bindir():
    """Where initdb and postgres are: $STELLER_PG_BIN, else the newest
    /usr/lib/postgresql/*/bin (Debian), else the directory of `postgres` on PATH."""
    if os.environ.get("STELLER_PG_BIN"):
        return os.environ["STELLER_PG_BIN"]
    found = glob.glob("/usr/lib/postgresql/*/bin/postgres")
    if found:
        found.sort(key=lambda p: int(re.sub(r"\D", "", p.split("/")[3]) or 0))
        return os.path.dirname(found[-1])
    path = shutil.which("postgres")
    if not path:
        raise AssertionError("no PostgreSQL server binaries (set STELLER_PG_BIN)")
    return os.path.dirname(path)


def _as_postgres():
    """Popen arguments that run a program as the postgres user when we are root
    (initdb and postgres refuse to run as root); nothing otherwise. Popen
    changes the uid itself rather than through runuser, so that the Popen's pid
    is the server's and PR_SET_PDEATHSIG (set after the uid change) holds."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


class PostgresServer:
    """A PostgreSQL server (initdb -A trust -U postgres) on a free loopback
    port, data and unix socket in its own temp dir, with a database "steller".

    Tuned for tests, not durability: fsync, full_page_writes and
    synchronous_commit are off. stop()/start() keep the data (a restart test),
    crash() is an immediate shutdown (crash recovery on the next start). Use
    as a context manager or call start()/cleanup(); the runner stops it after
    every test anyway, pass or fail.

        with PostgresServer() as pg:
            migrate(pg)
            rows = pg.query('SELECT count(*) FROM "ApiRequestLogs"')
    """

    def __init__(self, dbname="steller", args=()):
        self.dbname = dbname
        self.args = list(args)  # more server options: ["-c", "max_connections=20"]
        self.bindir = _pg_bindir()
        self.dir = make_tmpdir("pg")
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.port = None
        self.proc = None
        self._clients = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        _logs.append(("postgres %s" % self.dir, self.log_path))
        _finalizers.append(self.cleanup)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def _initdb(self):
        with open(self.log_path, "ab") as log:
            rc = subprocess.call([os.path.join(self.bindir, "initdb"), "-D", self.data,
                                  "-A", "trust", "-U", "postgres", "-E", "UTF8",
                                  "--locale=C", "--no-sync"],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 cwd=self.dir, **_as_postgres())
        if rc != 0:
            raise AssertionError("initdb failed (rc=%d):\n%s" % (rc, _tail(self.log_path)))

    def start(self, port=None):
        """Starts on port (a restart) or on a fresh free port, retrying if
        another process took the port in between; initdb and CREATE DATABASE
        the first time."""
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self._initdb()
        for _ in range(1 if port else 5):
            self.port = port or free_port()
            if self._spawn():
                self._create_db()
                return self
        raise AssertionError("postgres did not start; log:\n" + _tail(self.log_path))

    def _spawn(self):
        cmd = [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port),
               "-k", self.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
               "-c", "full_page_writes=off", "-c", "synchronous_commit=off"] + self.args
        log = open(self.log_path, "ab")
        # SIGQUIT on the runner's death: an immediate shutdown that takes the
        # backends down too (SIGKILL would leave them to notice on their own).
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=self.dir,
                                     preexec_fn=_pdeathsig(signal.SIGQUIT), **_as_postgres())
        log.close()
        _procs.append(("postgres:%d" % self.port, self.proc))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                self._connect("postgres").close()
                return True
            except Exception:
                pass  # not listening yet, or "the database system is starting up"
            time.sleep(POLL)
        self.stop()
        return False

    def _connect(self, dbname, autocommit=True):
        import psycopg2
        c = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname=dbname, connect_timeout=5)
        c.autocommit = autocommit
        return c

    def _create_db(self):
        c = self._connect("postgres")
        try:
            with c.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
                if not cur.fetchone():
                    cur.execute('CREATE DATABASE "%s"' % self.dbname)
        finally:
            c.close()

    def create_database(self, name):
        """Another, empty database on this server; returns its URL."""
        c = self._connect("postgres")
        try:
            with c.cursor() as cur:
                cur.execute('CREATE DATABASE "%s"' % name)
        finally:
            c.close()
        return self.url(name)

    def url(self, dbname=None, password=None):
        """postgresql://postgres@127.0.0.1:PORT/steller (trust auth: a
        password, if given, is sent and ignored)."""
        auth = "postgres:%s" % password if password else "postgres"
        return "postgresql://%s@127.0.0.1:%d/%s" % (auth, self.port, dbname or self.dbname)

    def client(self, dbname=None, autocommit=True):
        """A new psycopg2 connection (autocommit unless asked otherwise).
        Closed by stop() and cleanup()."""
        c = self._connect(dbname or self.dbname, autocommit)
        self._clients.append(c)
        return c

    def query(self, sql, params=None, dbname=None):
        """Runs one statement on a fresh autocommit connection; returns the
        rows as a list of tuples ([] for a statement without rows)."""
        c = self._connect(dbname or self.dbname)
        try:
            with c.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            c.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_clients(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients = []

    def stop(self, mode="fast", timeout=15):
        """Stops the server, keeping its data. mode: "smart" waits for clients
        to leave, "fast" (default) disconnects them and checkpoints,
        "immediate" quits at once (recovery on the next start). Escalates to
        an immediate shutdown, then SIGKILL, if it takes longer than timeout."""
        if self.proc is None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT,
               "immediate": signal.SIGQUIT}[mode]
        self._close_clients()
        for s in (sig, signal.SIGQUIT, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(s)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass

    def crash(self):
        """An immediate shutdown: like a crash for the clients, and the next
        start() runs crash recovery."""
        self.stop(mode="immediate")

    def restart(self, down_for=0.0, mode="fast"):
        """Stops and starts again on the same port and data. down_for seconds
        pass in between (an outage the daemon has to ride out)."""
        port = self.port
        self.stop(mode=mode)
        if down_for:
            time.sleep(down_for)
        self.start(port=port)

    def cleanup(self):
        self.stop()


def migrate(pg, *args, check=True, env=None, timeout=60):
    """Runs `stellerctl migrate --database URL [args]` against a
    PostgresServer; returns the CompletedProcess (text stdout/stderr). With
    check, a non-zero exit fails the test with both outputs."""
    cmd = [CTL_BIN, "migrate", "--database", pg.url()] + list(args)
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("%s exited %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


# ---------------------------------------------------------------- config

def _render_value(v, indent):
    pad = "  " * indent
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        s = repr(v)
        return s if ("." in s or "e" in s) else s + ".0"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        inner = "".join("%s  %s = %s;\n" % (pad, k, _render_value(x, indent + 1))
                        for k, x in v.items() if x is not None)
        return "{\n" + inner + pad + "}"
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, dict) for x in v):
            return "(\n" + ",\n".join(pad + "  " + _render_value(x, indent + 1)
                                      for x in v) + "\n" + pad + ")"
        return "[ " + ", ".join(_render_value(x, indent) for x in v) + " ]"
    raise TypeError("cannot render %r" % (v,))


def render_config(cfg):
    """A dict as a libconfig file: dicts are groups, lists of dicts are lists,
    other lists are arrays; a None value leaves the key out."""
    return "".join("%s = %s;\n" % (k, _render_value(v, 0)) for k, v in cfg.items()
                   if v is not None)


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def default_config(rs):
    return {
        "workers": 2,
        "concurrency": 32,
        "debug_jobs": True,
        "shutdown_timeout": 5.0,
        "log_level": "info",
        "redis": {"url": rs.url(), "prefix": PREFIX},
        # The default 127.0.0.1:9460 would collide between parallel tests.
        "http": {"listen": "127.0.0.1:%d" % free_port()},
        "engine": {"heartbeat_interval": 0.5, "heartbeat_ttl": 2.0,
                   "promote_interval": 0.1, "reaper_interval": 0.5},
        # The repo's templates: the installed ones need not exist in a build tree.
        "email": {"templates": os.path.join(SOURCE_DIR, "conf/templates")},
        # No scheduled jobs: the built-in 09:00 sweep entry would push a job into
        # any test that runs across 09:00 UTC. test_schedule.py sets its own.
        "schedule": (),
    }


# ---------------------------------------------------------------- worker

class Worker:
    """steller-worker -c FILE with a config written for the test.

    Keyword arguments override default_config() (dicts merge, None removes a
    key): Worker(rs, workers=1, engine={"heartbeat_ttl": 5.0}). stderr goes to
    a log file whose tail the runner prints when the test fails."""

    def __init__(self, rs, config=None, **overrides):
        self.rs = rs
        self.dir = make_tmpdir("worker")
        self.conf_path = os.path.join(self.dir, "steller-worker.conf")
        self.log_path = os.path.join(self.dir, "stderr.log")
        cfg = config if config is not None else default_config(rs)
        _merge(cfg, overrides)
        self.config = cfg
        with open(self.conf_path, "w") as f:
            f.write(render_config(cfg))
        self.proc = None
        _logs.append(("steller-worker %s" % self.conf_path, self.log_path))
        _workers.append(self)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.kill()

    @property
    def pid(self):
        return self.proc.pid

    def start(self, extra_env=None):
        env = dict(os.environ)
        if extra_env:
            env.update(extra_env)
        log = open(self.log_path, "ab")
        # Own session: a Ctrl-C meant for the runner reaches the daemon only
        # through the runner's cleanup. SIGTERM on the runner's death lets the
        # master stop its workers.
        self.proc = subprocess.Popen([WORKER_BIN, "-c", self.conf_path],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=env, start_new_session=True,
                                     preexec_fn=_pdeathsig(signal.SIGTERM))
        log.close()
        _procs.append(("steller-worker", self.proc))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def children(self):
        """Live (non-zombie) child pids of the master."""
        if not self.running():
            return set()
        kids = set()
        for path in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(path) as f:
                    stat = f.read()
            except OSError:
                continue
            rest = stat[stat.rindex(")") + 2:].split()
            if rest[0] not in "ZX" and int(rest[1]) == self.proc.pid:
                kids.add(int(path.split("/")[2]))
        return kids

    def wait_children(self, n, timeout=10):
        return wait_for(lambda: (lambda k: k if len(k) == n else None)(self.children()),
                        timeout, "%d worker processes" % n, alive=self)

    def wait_for(self, pred, timeout, what):
        """wait_for() that fails at once if the master exits meanwhile."""
        return wait_for(pred, timeout, what, alive=self)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Waits for the master to exit; returns its exit status (negative:
        killed by that signal). Fails after timeout seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("steller-worker (pid %d) still running %gs later"
                                 % (self.proc.pid, timeout))

    def kill(self, grace=3.0):
        """Stops the master (SIGTERM, then SIGKILL after grace seconds) and
        every worker process it had. Workers sit in process groups of their
        own, so they are found as the master's children first and killed by
        pid; a worker that outlived its master is found by its config path."""
        if self.proc is None:
            return
        kids = self.children()
        if self.proc.poll() is None and grace:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pid in kids | self._orphans():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _orphans(self):
        """Live processes running this worker's binary with this config."""
        want = [WORKER_BIN.encode(), b"-c", self.conf_path.encode()]
        out = set()
        for path in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(path, "rb") as f:
                    argv = f.read().split(b"\0")[:3]
            except OSError:
                continue
            pid = int(path.split("/")[2])
            if argv == want and pid_alive(pid):
                out.add(pid)
        return out

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def tail(self, lines=40):
        return _tail(self.log_path, lines)


# ---------------------------------------------------------------- jobs

def unique_jid(prefix="j"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:16])


def envelope(type, args=None, jid=None, queue="default", created_at=None, attempt=0,
             **extra):
    """Packs an envelope in the canonical key order (jid, type, args, queue,
    created_at, attempt), then any extra keys. Returns (jid, bytes)."""
    jid = jid if jid is not None else unique_jid()
    env = {"jid": jid, "type": type, "args": args if args is not None else {},
           "queue": queue, "created_at": created_at if created_at is not None else now_ms(),
           "attempt": attempt}
    env.update(extra)
    return jid, msgpack.packb(env, use_bin_type=True)


def enqueue(r, payloads, queue="default", chunk=1000):
    """LPUSHes raw payloads (bytes) to P:queue:<queue> with a pipeline."""
    key = "%s:queue:%s" % (PREFIX, queue)
    for i in range(0, len(payloads), chunk):
        p = r.pipeline(transaction=False)
        for raw in payloads[i:i + chunk]:
            p.lpush(key, raw)
        p.execute()


def enqueue_many(r, type, n, args=None, queue="default", prefix=None):
    """Enqueues n jobs of a type with unique jids; returns the jids in order."""
    prefix = prefix or type.replace(".", "-")
    jids, raws = [], []
    for i in range(n):
        jid, raw = envelope(type, args, jid="%s-%d-%s" % (prefix, i, uuid.uuid4().hex[:8]),
                            queue=queue)
        jids.append(jid)
        raws.append(raw)
    enqueue(r, raws, queue)
    return jids


def decode(raw):
    """msgpack -> Python; str stays str, bin becomes bytes; never raises on
    bad UTF-8 (surrogateescape) so a wrongly typed field shows up in asserts."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False,
                           unicode_errors="surrogateescape")


def dead_raw(r):
    return r.lrange("%s:dead" % PREFIX, 0, -1)


def dead_records(r):
    """P:dead decoded, newest first."""
    return [decode(x) for x in dead_raw(r)]


def stats(r):
    """The total counters as ints (0 when absent)."""
    out = {}
    for name in ("processed", "failed", "dead"):
        v = r.get("%s:stats:%s" % (PREFIX, name))
        out[name] = int(v) if v is not None else 0
    return out


def queue_len(r, queue="default"):
    return r.llen("%s:queue:%s" % (PREFIX, queue))


def processing_keys(r):
    """Existing P:processing:* keys (Redis drops empty lists, so existing
    means non-empty)."""
    return sorted(r.scan_iter(match="%s:processing:*" % PREFIX, count=1000))


def _members(r, key):
    t = r.type(key)
    if t == b"list":
        return r.lrange(key, 0, -1)
    if t == b"hash":
        return r.hvals(key)
    if t == b"zset":
        return r.zrange(key, 0, -1)
    if t == b"set":
        return list(r.smembers(key))
    return []


def in_flight(r):
    """Number of jobs in all P:processing:* keys (list or hash)."""
    return sum(len(_members(r, k)) for k in processing_keys(r))


def retry_entries(r):
    """[(decoded envelope, score)] of P:retry."""
    return [(decode(m), s) for m, s in r.zrange("%s:retry" % PREFIX, 0, -1, withscores=True)]


def locate_jids(r, jids):
    """{jid: [keys holding it]} for the jids found in any queue, processing
    list, P:retry, P:scheduled or P:dead. Empty means all gone."""
    wanted = set(jids)
    keys = list(r.scan_iter(match="%s:queue:*" % PREFIX, count=1000))
    keys += processing_keys(r)
    keys += [("%s:%s" % (PREFIX, k)).encode() for k in ("retry", "scheduled", "dead")]
    found = {}
    for key in keys:
        for raw in _members(r, key):
            try:
                jid = decode(raw).get("jid")
            except Exception:
                continue
            if jid in wanted:
                found.setdefault(jid, []).append(key.decode())
    return found


# ---------------------------------------------------------------- runner

_SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                    "runtime error:", "ThreadSanitizer", "UndefinedBehaviorSanitizer")


def _sanitizer_reports():
    """For each daemon log with a sanitizer report: the first report, cut to
    its headline and first stack frames, and how many reports there were."""
    out = []
    for name, path in _logs:
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        starts = [i for i, line in enumerate(lines) if any(m in line for m in _SANITIZER_MARKS)]
        if not starts:
            continue
        first = []
        for line in lines[starts[0]:]:
            if line.startswith("SUMMARY") or len(first) >= 14:
                break
            if line.strip() and not line.startswith("ts="):
                first.append(line)
        summaries = sorted({line for line in lines if line.startswith("SUMMARY")})
        out.append("%s: %d report(s)\n%s\n%s" % (name, len(starts), "\n".join(first),
                                                  "\n".join(summaries)))
    return out


def _cleanup_test(failed):
    for fn in _finalizers:
        try:
            fn()
        except Exception:
            traceback.print_exc(file=sys.stdout)
    del _finalizers[:]
    for w in _workers:
        w.kill(grace=0)
    for name, p in reversed(_procs):
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
            p.wait()
    del _procs[:]
    del _workers[:]
    keep = failed and os.environ.get("STELLER_KEEP_TMP")
    for d in _tmpdirs:
        if keep:
            print("  kept %s" % d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    del _tmpdirs[:]
    del _logs[:]


class _TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout("test ran longer than %ds" % TEST_TIMEOUT)


def _on_term(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main():
    """Runs the test_* functions of __main__ in definition order (or those
    named on the command line), prints PASS/FAIL per test and, last, exactly
    one line "N passed, M failed"; exits 1 if any failed."""
    mod = sys.modules["__main__"]
    tests = [(n, f) for n, f in vars(mod).items() if n.startswith("test_") and callable(f)]
    if len(sys.argv) > 1:
        tests = [(n, f) for n, f in tests if n in sys.argv[1:]]
    if not os.access(WORKER_BIN, os.X_OK):
        print("note: %s is missing; tests will fail" % WORKER_BIN)
    signal.signal(signal.SIGALRM, _on_alarm)
    # A SIGTERM (ctest timeout) must still run the cleanup.
    signal.signal(signal.SIGTERM, _on_term)
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        ok = interrupted = False
        signal.alarm(TEST_TIMEOUT)
        try:
            fn()
            signal.alarm(0)
            reports = _sanitizer_reports()
            if reports:
                raise AssertionError("sanitizer report in a daemon log:\n" + "\n".join(reports))
            ok = True
            print("PASS %s (%.1fs)" % (name, time.monotonic() - t0))
        except BaseException as e:
            signal.alarm(0)
            print("FAIL %s (%.1fs)" % (name, time.monotonic() - t0))
            traceback.print_exc(file=sys.stdout)
            reports = _sanitizer_reports()
            for lname, path in _logs:
                print("---- tail of %s (%s)" % (lname, path))
                print(_tail(path, 15 if reports else 40))
            if reports and "sanitizer report" not in str(e):
                print("---- sanitizer reports:\n" + "\n".join(reports))
            interrupted = isinstance(e, KeyboardInterrupt)
        finally:
            signal.alarm(0)
            _cleanup_test(not ok)
        if ok:
            passed += 1
        else:
            failed += 1
        sys.stdout.flush()
        if interrupted:
            break
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
