"""test_email.py - email.welcome, email.activation and email.reengagement
(jobs/email.c) against a real redis-server, a real PostgreSQL and local
stand-ins for the providers (peers.py: an SMTP server, a SendGrid API).

- SMTP, plain and STARTTLS (self-signed, email.smtp.ca_file): each kind arrives
  with the right From, To, Subject and both parts; its row says 'sent';
- SendGrid: every request checked (path, method, headers, JSON); 202 sent,
  400 dead, 429 retried at its Retry-After, 500 retried, no answer timed out
  and retried;
- the same email enqueued twice: one email; a worker SIGKILLed after the row
  says 'sent' and before the ack: the job runs again and sends nothing;
- header injection (CR/LF in the business name or the address), invalid
  addresses, unknown or inactive partners, bad args: dead with the reason,
  nothing sent, no row;
- the API key never shows in the log, stellerctl, /metrics, /stats.json, the
  dead letters or the rows;
- the provider answering 500 for a while (the issue says a minute; here about
  15 s, with breaker_failures = 3, breaker_cooloff = 1.5 s and a fast backoff,
  so the test takes ~25 s): the breaker opens, nothing goes dead, every email
  is sent once when the provider is back.
"""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from peers import SendgridPeer, SmtpPeer  # noqa: E402
from test_http import get  # noqa: E402

TEMPLATES = os.path.join(SOURCE_DIR, "conf", "templates")
EMAIL_TYPES = ("email.welcome", "email.activation", "email.reengagement")
FROM = "Steller Team <no-reply@steller.test>"
ACTIVATION_URL = "https://app.steller.test/activate?token="
# Retries within a second: the tests wait for retries, not for Sidekiq's 15 s.
FAST = [{"name": t, "backoff_base": 0.3, "backoff_factor": 0.01, "backoff_cap": 1.0}
        for t in EMAIL_TYPES]


# ---------------------------------------------------------------- fixtures

def start_pg():
    pg = PostgresServer()
    pg.start()
    migrate(pg)
    return pg


def add_partner(pg, email, name="Acme Ltd", active=True):
    return pg.query(
        'INSERT INTO "Partners" ("BusinessName", "RegistrationNumber", "Logo", "Address", '
        '"Phone", "Email", "RevenueSharePercentage", "IsActive", "CreatedAt", "UpdatedAt") '
        "VALUES (%s, 'RN-1', '', '1 Main St', '+100', %s, 0, %s, now(), now()) "
        'RETURNING "Id"', (name, email, active))[0][0]


def deliveries(pg, where="true", params=None):
    cols = ("Id", "PartnerId", "Kind", "DedupKey", "ToAddress", "Subject", "Transport",
            "Status", "ProviderMessageId", "Attempts", "LastError", "SentAt", "ClaimedUntil")
    rows = pg.query('SELECT %s FROM "EmailDeliveries" WHERE %s ORDER BY "Id"'
                    % (", ".join('"%s"' % c for c in cols), where), params)
    return [dict(zip(cols, row)) for row in rows]


def push(r, type, args, jid=None, **extra):
    jid, raw = envelope(type, args, jid=jid or unique_jid(type.split(".")[1]), queue="email",
                        **extra)
    enqueue(r, [raw], queue="email")
    return jid


def email_worker(rs, pg, transport, workers=1, concurrency=8, email=None, **over):
    cfg = {"transport": transport["transport"], "from": FROM,
           "support_address": "help@steller.test", "activation_url": ACTIVATION_URL,
           "templates": TEMPLATES, "timeout": 5.0}
    cfg.update({k: v for k, v in transport.items() if k != "transport"})
    cfg.update(email or {})
    over.setdefault("types", [dict(t) for t in FAST])
    return Worker(rs, workers=workers, concurrency=concurrency,
                  database={"url": pg.url()}, email=cfg, **over)


def sendgrid(sg):
    return {"transport": "sendgrid", "sendgrid": {"base_url": sg.url, "api_key": sg.api_key}}


def done(r, jids, processed):
    """Acked: the processed counter reached its mark (ack.lua counts in the same
    script that removes the job) and the jobs are nowhere. The counter first:
    locate_jids() reads key after key, so alone it can miss a job that moves
    from P:retry to its queue between two reads."""
    return stats(r)["processed"] >= processed and not locate_jids(r, jids)


def dead_of(r, jid):
    return next((x for x in dead_records(r) if x.get("jid") == jid), None)


def ctl(w, *args, env=None):
    p = subprocess.run([CTL_BIN, "-c", w.conf_path] + list(args), capture_output=True,
                       text=True, timeout=30, env=env)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def expected_subject(kind, name):
    with open(os.path.join(TEMPLATES, kind + ".subject")) as f:
        return f.read().strip().replace("{business_name}", name)


# ---------------------------------------------------------------- SMTP

def check_smtp_kinds(starttls):
    with RedisServer() as rs, SmtpPeer(starttls=starttls) as smtp:
        pg = start_pg()
        pid = add_partner(pg, "owner@acme.test", "Acme Ltd")
        smtp_cfg = {"server": "127.0.0.1", "port": smtp.port,
                    "starttls": "required" if starttls else "off"}
        if starttls:
            smtp_cfg["ca_file"] = smtp.ca_file
        with email_worker(rs, pg, {"transport": "smtp", "smtp": smtp_cfg}) as w:
            r = rs.client()
            jids = [push(r, "email.welcome", {"partner_id": pid}),
                    push(r, "email.activation", {"partner_id": pid,
                                                 "activation_token": "tok/+ 1"}),
                    push(r, "email.reengagement", {"partner_id": pid, "stage": 7})]
            w.wait_for(lambda: done(r, jids, 3), 30, "three email jobs done")
            msgs = smtp.wait_messages(3)
            assert stats(r) == {"processed": 3, "failed": 0, "dead": 0}, stats(r)
        by_subject = {m["headers"]["Subject"]: m for m in msgs}
        assert len(msgs) == 3, msgs
        for kind in ("welcome", "activation", "reengagement"):
            m = by_subject.get(expected_subject(kind, "Acme Ltd"))
            assert m, (kind, list(by_subject))
            assert m["mail_from"] == "no-reply@steller.test", m["mail_from"]
            assert m["rcpt_tos"] == ["owner@acme.test"], m["rcpt_tos"]
            assert "Steller Team" in m["headers"]["From"], m["headers"]
            assert "<no-reply@steller.test>" in m["headers"]["From"], m["headers"]
            assert "owner@acme.test" in m["headers"]["To"], m["headers"]
            assert "Acme Ltd" in m["headers"]["To"], m["headers"]
            assert m["text"] and m["html"], (kind, m["text"], m["html"])
            assert "help@steller.test" in m["text"] + m["html"], kind
        act = by_subject[expected_subject("activation", "Acme Ltd")]
        assert ACTIVATION_URL + "tok%2F%2B%201" in act["text"], act["text"]
        rows = deliveries(pg)
        assert sorted(x["DedupKey"] for x in rows) == sorted(
            ["welcome:%d" % pid, "activation:%d:tok/+ 1" % pid, "reengagement:%d:d7" % pid]), rows
        for x in rows:
            assert x["Status"] == "sent" and x["Attempts"] == 1, x
            assert x["Transport"] == "smtp" and x["ToAddress"] == "owner@acme.test", x
            assert x["SentAt"] is not None and x["ClaimedUntil"] is None, x
            assert x["Kind"] == x["DedupKey"].split(":")[0], x


def test_smtp_plain_delivers_each_kind():
    check_smtp_kinds(starttls=False)


def test_smtp_starttls_with_ca_file_delivers_each_kind():
    check_smtp_kinds(starttls=True)


# ---------------------------------------------------------------- SendGrid

def check_request(req, sg, to, name, subject):
    assert req["problems"] == [], req["problems"]
    assert req["method"] == "POST" and req["path"] == "/v3/mail/send", req
    assert req["headers"]["Authorization"] == "Bearer " + sg.api_key
    assert req["headers"]["Content-Type"].startswith("application/json"), req["headers"]
    doc = req["json"]
    assert doc["personalizations"][0]["to"] == [{"email": to, "name": name}], doc
    assert doc["from"] == {"email": "no-reply@steller.test", "name": "Steller Team"}, doc
    assert doc["subject"] == subject, doc
    assert [c["type"] for c in doc["content"]] == ["text/plain", "text/html"], doc
    assert all(c["value"] for c in doc["content"]), doc


def test_sendgrid_outcomes_sent_dead_retry_after_retried_timed_out():
    with RedisServer() as rs, SendgridPeer(api_key="SG.outcomes-key") as sg:
        pg = start_pg()
        p = {k: add_partner(pg, "%s@acme.test" % k, "Acme %s" % k)
             for k in ("ok", "bad", "slow", "err", "hang")}
        with email_worker(rs, pg, sendgrid(sg), email={"timeout": 1.5}) as w:
            r = rs.client()

            # 202: sent, the provider's id on the row.
            jid = push(r, "email.welcome", {"partner_id": p["ok"]})
            w.wait_for(lambda: done(r, [jid], 1), 20, "the 202 job acked")
            reqs = sg.wait_requests(1)
            check_request(reqs[0], sg, "ok@acme.test", "Acme ok",
                          expected_subject("welcome", "Acme ok"))
            row = deliveries(pg)[0]
            assert row["Status"] == "sent" and row["ProviderMessageId"] == "msg-1", row
            assert row["Transport"] == "sendgrid", row

            # 400: dead, the row 'failed' with the provider's reason, nothing retried.
            sg.set_mode("400")
            jid = push(r, "email.welcome", {"partner_id": p["bad"]})
            rec = w.wait_for(lambda: dead_of(r, jid), 20, "the 400 job dead")
            assert "400" in rec["error"], rec
            row = deliveries(pg, '"PartnerId" = %s', (p["bad"],))[0]
            assert row["Status"] == "failed" and row["ClaimedUntil"] is None, row
            assert "400" in row["LastError"], row
            assert sg.count() == 2

            # 429 + Retry-After: 4 s: retried then, spending an attempt; the row
            # stays 'pending', unclaimed, with the reason.
            sg.set_mode("429", retry_after="4")
            jid = push(r, "email.welcome", {"partner_id": p["slow"]})
            env, score = w.wait_for(lambda: next((e for e in retry_entries(r)
                                                  if e[0]["jid"] == jid), None),
                                    20, "the 429 job in P:retry")
            assert env["attempt"] == 1, env
            assert 3900 <= env["retry_at"] - env["failed_at"] <= 4200, env
            row = deliveries(pg, '"PartnerId" = %s', (p["slow"],))[0]
            assert row["Status"] == "pending" and row["ClaimedUntil"] is None, row
            assert "429" in row["LastError"], row
            sg.set_mode("202")
            t_retry = time.time()
            w.wait_for(lambda: done(r, [jid], 2), 20, "the 429 job sent on its retry")
            assert time.time() - t_retry <= 6, "retried %.1f s later" % (time.time() - t_retry)
            row = deliveries(pg, '"PartnerId" = %s', (p["slow"],))[0]
            assert row["Status"] == "sent" and row["Attempts"] == 2, row

            # 500: transient, retried with the backoff, sent once it answers 202.
            sg.set_mode("500")
            n0 = sg.count()
            jid = push(r, "email.welcome", {"partner_id": p["err"]})
            w.wait_for(lambda: sg.count() >= n0 + 2, 20, "the 500 job tried twice")
            assert not dead_of(r, jid)
            sg.set_mode("202")
            w.wait_for(lambda: done(r, [jid], 3), 20, "the 500 job sent")
            row = deliveries(pg, '"PartnerId" = %s', (p["err"],))[0]
            assert row["Status"] == "sent" and row["Attempts"] >= 3, row
            assert "500" in row["LastError"], row

            # No answer: email.timeout (1.5 s) ends the request, transient.
            sg.set_mode("hang")
            n0 = sg.count()
            jid = push(r, "email.welcome", {"partner_id": p["hang"]})
            w.wait_for(lambda: sg.count() >= n0 + 1, 10, "the request that hangs")
            env, _ = w.wait_for(lambda: next((e for e in retry_entries(r)
                                              if e[0]["jid"] == jid), None),
                                10, "the timed-out job in P:retry")
            assert "tim" in env["error"].lower(), env
            row = deliveries(pg, '"PartnerId" = %s', (p["hang"],))[0]
            assert row["Status"] == "pending" and row["ClaimedUntil"] is None, row
            sg.set_mode("202")
            w.wait_for(lambda: done(r, [jid], 4), 20, "the timed-out job sent")
            assert deliveries(pg, '"PartnerId" = %s', (p["hang"],))[0]["Status"] == "sent"

            for req in sg.requests:
                assert req["problems"] == [], req
            st = stats(r)
            assert st["dead"] == 1 and st["failed"] >= 4, st
            sent = [x for x in deliveries(pg) if x["Status"] == "sent"]
            assert len(sent) == 4, deliveries(pg)

            # stellerctl shows the transport and its breaker.
            summary = json.loads(ctl(w, "stats", "--json"))["email"]
            assert summary == {"transport": "sendgrid", "closed": 1, "open": 0,
                               "half_open": 0, "error": 0}, summary
            text = ctl(w, "stats")
            assert "email" in text and "sendgrid, breaker closed" in text, text
            (wk,) = json.loads(ctl(w, "workers", "--json"))
            assert wk["mail"] == "sendgrid:closed", wk


# ---------------------------------------------------------------- once

def test_the_same_email_enqueued_twice_is_sent_once():
    with RedisServer() as rs, SendgridPeer(delay=1.0) as sg:
        pg = start_pg()
        pid = add_partner(pg, "twice@acme.test")
        with email_worker(rs, pg, sendgrid(sg), concurrency=8) as w:
            r = rs.client()
            jids = [push(r, "email.activation", {"partner_id": pid, "activation_token": "t1"})
                    for _ in range(2)]
            w.wait_for(lambda: done(r, jids, 2), 30, "both jobs done")
            # Later, again: the row says 'sent'.
            jids.append(push(r, "email.activation", {"partner_id": pid,
                                                     "activation_token": "t1"}))
            w.wait_for(lambda: done(r, jids, 3), 30, "the third job done")
            assert sg.count() == 1, sg.requests
            assert stats(r) == {"processed": 3, "failed": 0, "dead": 0}, stats(r)
            (row,) = deliveries(pg)
            assert row["Status"] == "sent" and row["Attempts"] == 1, row
            assert "email already sent" in w.log()
            # A different token is another intent: another email.
            jid = push(r, "email.activation", {"partner_id": pid, "activation_token": "t2"})
            w.wait_for(lambda: done(r, [jid], 4), 30, "the t2 job done")
            assert sg.count() == 2, sg.requests


def test_worker_killed_after_the_row_says_sent_sends_nothing_more():
    """The window between the 'sent' update and the ack: the ack is held by
    CLIENT PAUSE WRITE, the worker process is killed, its job goes back to the
    queue, and the rerun finds the row 'sent'."""
    with RedisServer() as rs, SendgridPeer(delay=2.0) as sg:
        pg = start_pg()
        pid = add_partner(pg, "crash@acme.test")
        with email_worker(rs, pg, sendgrid(sg)) as w:
            r = rs.client()
            (victim,) = w.wait_children(1)
            jid = push(r, "email.welcome", {"partner_id": pid})
            sg.wait_requests(1)  # the peer answers 2 s from now
            r.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
            try:
                w.wait_for(lambda: deliveries(pg) and deliveries(pg)[0]["Status"] == "sent",
                           10, "the row to say sent")
                time.sleep(0.3)  # the ack is written, and held by the pause
                assert locate_jids(r, [jid]), "the job was acked despite the pause"
                os.kill(victim, signal.SIGKILL)
                w.wait_for(lambda: victim not in w.children(), 5, "the worker gone")
            finally:
                r.execute_command("CLIENT", "UNPAUSE")
            w.wait_for(lambda: done(r, [jid], 1), 30, "the job rerun and acked")
            w.wait_for(lambda: "email already sent" in w.log(), 10, "the rerun's log line")
            assert sg.count() == 1, sg.requests
            (row,) = deliveries(pg)
            assert row["Status"] == "sent" and row["Attempts"] == 1, row
            assert stats(r)["processed"] == 1 and stats(r)["dead"] == 0, stats(r)


# ---------------------------------------------------------------- bad input

def test_header_injection_and_bad_addresses_are_dead_and_nothing_is_sent():
    with RedisServer() as rs, SendgridPeer() as sg:
        pg = start_pg()
        cases = {
            "crlf_name": (add_partner(pg, "ok@acme.test", "Acme\r\nBcc: spy@evil.test"),
                          "business name holds CR or LF"),
            "lf_name": (add_partner(pg, "ok2@acme.test", "Acme\nX: y"),
                        "business name holds CR or LF"),
            "crlf_addr": (add_partner(pg, "ok@acme.test\r\nBcc: spy@evil.test"),
                          "email address holds CR or LF"),
            "no_at": (add_partner(pg, "owner.acme.test"), "exactly one '@'"),
            "two_at": (add_partner(pg, "a@b@acme.test"), "exactly one '@'"),
            "space": (add_partner(pg, "own er@acme.test"), "space"),
            "no_dot": (add_partner(pg, "owner@localhost"), "no dot"),
            "too_long": (add_partner(pg, "a" * 250 + "@acme.test"), "254"),
            "angle": (add_partner(pg, "a@acme.test>,b@evil.test"), "not allowed"),
            "empty": (add_partner(pg, ""), "empty"),
            "inactive": (add_partner(pg, "gone@acme.test", active=False), "not active"),
        }
        with email_worker(rs, pg, sendgrid(sg)) as w:
            r = rs.client()
            jids = {k: push(r, "email.welcome", {"partner_id": pid})
                    for k, (pid, _) in cases.items()}
            more = {
                "unknown": (push(r, "email.welcome", {"partner_id": 999999}), "does not exist"),
                "no_pid": (push(r, "email.welcome", {}), "args.partner_id"),
                "str_pid": (push(r, "email.welcome", {"partner_id": "7"}), "args.partner_id"),
                "stage": (push(r, "email.reengagement",
                               {"partner_id": cases["inactive"][0], "stage": 5}),
                          "reengagement.stages"),
                "token": (push(r, "email.activation", {"partner_id": cases["no_at"][0]}),
                          "activation_token"),
            }
            for k, (jid, why) in more.items():
                jids[k] = jid
                cases[k] = (None, why)
            w.wait_for(lambda: len(dead_records(r)) == len(jids), 30, "every job dead")
            for k, jid in jids.items():
                rec = dead_of(r, jid)
                assert rec and cases[k][1] in rec["error"], (k, rec)
                assert rec["attempt"] == 1, (k, rec)
                assert "nothing sent" in rec["error"] or k in (
                    "no_pid", "str_pid", "stage", "token"), (k, rec)
            assert sg.count() == 0, sg.requests
            assert deliveries(pg) == [], deliveries(pg)
            assert "spy@evil.test" not in w.log()


def test_a_sweep_row_that_cannot_be_sent_is_settled_and_an_activated_partner_gets_no_nudge():
    """The sweep writes a 'pending' row before it enqueues the nudge. A nudge that
    ends before its claim (bad address) or has no point (the partner activated
    since) must settle that row: left 'pending' and unclaimed, the sweep would
    take it for an orphan and enqueue it again every day."""
    with RedisServer() as rs, SendgridPeer() as sg:
        pg = start_pg()
        bad = add_partner(pg, "owner.acme.test")
        done_ = add_partner(pg, "done@acme.test")
        pg.query('UPDATE "Partners" SET "OnboardingState" = \'activated\' WHERE "Id" = %s',
                 (done_,))
        for pid in (bad, done_):
            pg.query('INSERT INTO "EmailDeliveries" ("PartnerId", "Kind", "DedupKey", '
                     '"ToAddress", "Subject", "Transport", "Status", "Attempts") '
                     "VALUES (%s, 'reengagement', %s, 'x', '', 'sendgrid', 'pending', 0)",
                     (pid, "reengagement:%d:d3" % pid))
        with email_worker(rs, pg, sendgrid(sg)) as w:
            r = rs.client()
            jid_bad = push(r, "email.reengagement", {"partner_id": bad, "stage": 3})
            jid_done = push(r, "email.reengagement", {"partner_id": done_, "stage": 3})
            w.wait_for(lambda: done(r, [jid_done], 1) and dead_of(r, jid_bad), 30,
                       "one nudge dead, one done")
            rec = dead_of(r, jid_bad)
            assert rec and "exactly one '@'" in rec["error"], dead_records(r)
            rows = {d["PartnerId"]: d for d in deliveries(pg)}
            assert rows[bad]["Status"] == "failed" and "exactly one '@'" in rows[bad]["LastError"]
            assert rows[done_]["Status"] == "failed" and "activated" in rows[done_]["LastError"]
            assert sg.count() == 0, sg.requests


# ---------------------------------------------------------------- secrets

def test_the_api_key_never_shows():
    key = "SG.sekrit-KEY-5up3r-s3cr3t"
    with RedisServer() as rs, SendgridPeer(api_key=key, mode="500") as sg:
        pg = start_pg()
        pids = [add_partner(pg, "k%d@acme.test" % i) for i in range(3)]
        w = email_worker(rs, pg, {"transport": "sendgrid",
                                  "sendgrid": {"base_url": sg.url}},
                         types=[dict(t, max_attempts=2) for t in FAST])
        w.start(extra_env={"SENDGRID_API_KEY": key})
        with w:
            r = rs.client()
            jids = [push(r, "email.welcome", {"partner_id": pids[0]})]
            w.wait_for(lambda: dead_of(r, jids[0]), 20, "the 500 job dead after 2 tries")
            sg.set_mode("400")
            jids.append(push(r, "email.welcome", {"partner_id": pids[1]}))
            w.wait_for(lambda: dead_of(r, jids[1]), 20, "the 400 job dead")
            sg.set_mode("202")
            jids.append(push(r, "email.welcome", {"partner_id": pids[2]}))
            w.wait_for(lambda: done(r, jids[2:], 1), 20, "the 202 job")
            assert all(req["headers"]["Authorization"] == "Bearer " + key
                       for req in sg.requests), "the key was not sent"
            env = dict(os.environ, SENDGRID_API_KEY=key)
            places = {
                "log": w.log(),
                "stats --json": ctl(w, "stats", "--json", env=env),
                "stats": ctl(w, "stats", env=env),
                "workers --json": ctl(w, "workers", "--json", env=env),
                "dead ls --json": ctl(w, "dead", "ls", "--json", env=env),
                "/metrics": get(w, "/metrics")[1],
                "/stats.json": get(w, "/stats.json")[1],
                "P:dead": b"".join(dead_raw(r)).decode("utf-8", "replace"),
                "rows": repr(deliveries(pg)),
                "--check-config": subprocess.run(
                    [WORKER_BIN, "--check-config", "-c", w.conf_path],
                    env=env, capture_output=True,
                    text=True).stdout,
            }
            for name, text in places.items():
                assert text, name
                assert key not in text and "5up3r" not in text, "the API key in %s" % name


# ---------------------------------------------------------------- the breaker

def test_provider_down_for_a_while_opens_the_breaker_and_loses_nothing():
    n = 20
    with RedisServer() as rs, SendgridPeer(mode="500") as sg:
        pg = start_pg()
        pids = [add_partner(pg, "b%d@acme.test" % i, "Brk %d" % i) for i in range(n)]
        with email_worker(rs, pg, sendgrid(sg), email={"breaker_failures": 3,
                                                      "breaker_cooloff": 1.5}) as w:
            r = rs.client()
            jids = [push(r, "email.welcome", {"partner_id": pid}) for pid in pids]
            t0 = time.monotonic()
            seen_open = False
            while time.monotonic() - t0 < 15:
                st = json.loads(ctl(w, "stats", "--json"))
                seen_open |= st["email"]["open"] + st["email"]["half_open"] > 0
                assert st["dead"] == 0, dead_records(r)[:2]
                time.sleep(0.5)
            with sg._lock:  # the switch and the count at once: no request in between
                sg.mode = "202"
                down_requests = len(sg.requests)
            assert seen_open, "the breaker never showed open in stellerctl stats"
            # Without the breaker each of the 20 jobs would have been tried every
            # second or so: some 300 requests. The breaker lets a probe through
            # per cooloff.
            assert down_requests < 60, down_requests
            failed_down = stats(r)["failed"]
            w.wait_for(lambda: done(r, jids, n), 30, "every email sent once the provider is up")
            st = stats(r)
            assert st["dead"] == 0 and st["processed"] == n, st
            ok = [q for q in sg.requests[down_requests:]]
            to = sorted(q["json"]["personalizations"][0]["to"][0]["email"] for q in ok)
            assert to == sorted("b%d@acme.test" % i for i in range(n)), to
            rows = deliveries(pg)
            assert len(rows) == n and all(x["Status"] == "sent" for x in rows), rows
            runs = json.loads(get(w, "/stats.json")[1])["types"]["email.welcome"]["runs"]
            assert runs["deferred"] > 0 and runs["dead"] == 0, runs
            print("  500s for 15 s: %d requests, %d failed runs, %d deferred runs"
                  % (down_requests, failed_down, runs["deferred"]))


if __name__ == "__main__":
    main()
