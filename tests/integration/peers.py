"""peers.py - local stand-ins for the email providers, for every email test.

    from peers import SmtpPeer, SendgridPeer

    with SmtpPeer(starttls=True) as smtp:          # aiosmtpd in a thread
        ... email = {"transport": "smtp", "smtp": {"server": smtp.url, "port": smtp.port,
                     "starttls": "required", "ca_file": smtp.ca_file}} ...
        msg = smtp.wait_messages(1)[0]             # envelope, headers, text, html

    with SendgridPeer(api_key="SG.test") as sg:   # http.server in a thread
        ... email = {"transport": "sendgrid", "sendgrid": {"base_url": sg.url,
                     "api_key": sg.api_key}} ...
        sg.set_mode("429", retry_after="7")        # switchable at runtime
        sg.requests                                 # what arrived, parsed and checked

Both bind 127.0.0.1 on a free port (port 0), record everything they receive under
a lock, and stop in __exit__ whatever happened (threads are daemons too, so a
test that dies cannot leave the runner hanging). Waiting is a poll with a
deadline, as in harness.py.

SmtpPeer(starttls=False|True, reply=None, auth=None)
    starttls=True: offers STARTTLS with a self-signed certificate made at start
    with the openssl CLI (CN=localhost, SAN DNS:localhost, IP:127.0.0.1); its PEM
    is .ca_file. reply: a fixed SMTP reply to DATA, e.g. "550 5.7.1 rejected" or
    "451 4.3.0 try later" (switchable: set_reply()); by default
    "250 2.0.0 Ok: queued as <QID>" where QID counts up (Q1, Q2, ...).
    auth=("user", "password"): requires AUTH LOGIN/PLAIN with those credentials.
    .messages: dicts with mail_from, rcpt_tos, headers (name -> decoded value,
    RFC 2047 undone), raw (bytes), text and html (decoded parts), queue_id.

SendgridPeer(mode="202", api_key="SG.peer-test-key", delay=0.0)
    Checks every request: POST /v3/mail/send, "Authorization: Bearer <api_key>",
    Content-Type application/json, a JSON body with personalizations[0].to[0].email,
    from.email, subject and content; a request failing a check gets 400 and its
    problems in .requests[i]["problems"] (a wrong Authorization is echoed back, as
    some providers do, to check that clients scrub it). Each request records
    method, path, headers, body, json, problems, client (address, port) and t
    (time.monotonic() on arrival). Modes (set_mode()): "202" (with
    X-Message-Id "msg-N"), "400", "429" (Retry-After: retry_after, default "3"),
    "500", "hang" (never answers; released at exit). delay: seconds to wait
    before answering. .max_in_flight: the most requests it was answering at once.
"""

import asyncio
import email
import email.header
import email.policy
import http.server
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings

__all__ = ["SmtpPeer", "SendgridPeer", "make_cert"]


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(0.05)


def make_cert(directory):
    """A self-signed certificate for localhost and 127.0.0.1: (cert, key) paths."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _decode_header(value):
    return str(email.header.make_header(email.header.decode_header(value)))


def _parse_message(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = {"headers": {k: _decode_header(v) for k, v in msg.items()},
           "raw_headers": dict(msg.items()), "text": None, "html": None,
           "content_type": msg.get_content_type()}
    for part in msg.walk():
        ctype = part.get_content_type()
        if part.is_multipart() or ctype not in ("text/plain", "text/html"):
            continue
        body = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
        out["text" if ctype == "text/plain" else "html"] = body
    return out


# ---------------------------------------------------------------- SMTP

class SmtpPeer:
    def __init__(self, starttls=False, reply=None, auth=None):
        self.starttls = starttls
        self.reply = reply
        self.auth = auth
        self.messages = []
        self.sessions = 0  # connections seen
        self.auth_attempts = []
        self._lock = threading.Lock()
        self._qid = 0
        self.dir = tempfile.mkdtemp(prefix="steller-smtp-")
        self.ca_file = None
        self.port = None
        self.url = "127.0.0.1"
        self._controller = None

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def start(self):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult
        import ssl

        # aiosmtpd logs a traceback for every refused TLS handshake and warns
        # about AUTH without TLS: expected here, noise in a test's output.
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", module="aiosmtpd")

        peer = self
        tls = None
        if self.starttls:
            cert, key = make_cert(self.dir)
            self.ca_file = cert
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(cert, key)

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                return peer._take(envelope)

        def authenticator(server, session, envelope, mechanism, auth_data):
            login = (auth_data.login.decode(), auth_data.password.decode()) \
                if hasattr(auth_data, "login") else None
            with peer._lock:
                peer.auth_attempts.append(login)
            # handled=False: aiosmtpd answers "535 5.7.8" itself on a failure
            return AuthResult(success=login == tuple(peer.auth), handled=False)

        kw = {"hostname": "127.0.0.1", "port": 0}
        if tls:
            kw.update(tls_context=tls, require_starttls=False)
        if self.auth:
            kw.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=False)
        ctl = Controller(Handler(), **kw)
        # port 0: aiosmtpd's readiness check connects to the port asked for, so
        # bind first and hand over the number the kernel picked.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ctl.port = s.getsockname()[1]
        ctl.start()
        self._controller = ctl
        self.port = ctl.port
        return self

    def _take(self, envelope):
        with self._lock:
            self._qid += 1
            qid = "Q%d" % self._qid
            reply = self.reply
            if reply is None or reply.startswith("250"):
                rec = _parse_message(envelope.content)
                rec.update(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                           raw=envelope.content, queue_id=qid)
                self.messages.append(rec)
        return reply or "250 2.0.0 Ok: queued as %s" % qid

    def set_reply(self, reply):
        with self._lock:
            self.reply = reply

    def wait_messages(self, n, timeout=20):
        _wait(lambda: len(self.messages) >= n, timeout, "%d SMTP messages" % n)
        with self._lock:
            return list(self.messages)

    def cleanup(self):
        if self._controller:
            try:
                self._controller.stop()
            except Exception:
                pass
            self._controller = None
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- SendGrid

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class SendgridPeer:
    MODES = ("202", "400", "429", "500", "hang")

    def __init__(self, mode="202", api_key="SG.peer-test-key", delay=0.0, retry_after="3"):
        self.api_key = api_key
        self.requests = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = set()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = None
        self._thread = None
        self.port = None
        self.url = None
        self.set_mode(mode, delay=delay, retry_after=retry_after)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def set_mode(self, mode, delay=None, retry_after=None):
        assert mode in self.MODES, mode
        with self._lock:
            self.mode = mode
            if delay is not None:
                self.delay = delay
            if retry_after is not None:
                self.retry_after = retry_after

    def count(self):
        with self._lock:
            return len(self.requests)

    def wait_requests(self, n, timeout=20):
        _wait(lambda: self.count() >= n, timeout, "%d SendGrid requests" % n)
        with self._lock:
            return list(self.requests)

    def _check(self, handler, body):
        problems = []
        if handler.command != "POST":
            problems.append("method %s" % handler.command)
        if handler.path != "/v3/mail/send":
            problems.append("path %s" % handler.path)
        auth = handler.headers.get("Authorization")
        if auth != "Bearer " + self.api_key:
            # echoed, as some providers do: the client must not pass it on verbatim
            problems.append("bad Authorization %r" % auth)
        if (handler.headers.get("Content-Type") or "").split(";")[0] != "application/json":
            problems.append("content-type %s" % handler.headers.get("Content-Type"))
        try:
            doc = json.loads(body)
            to = doc["personalizations"][0]["to"][0]
            if "@" not in to["email"] or "@" not in doc["from"]["email"]:
                problems.append("address without @")
            if not isinstance(doc["subject"], str):
                problems.append("subject")
            types = [c["type"] for c in doc["content"]]
            if not types or types[0] != "text/plain":
                problems.append("content types %s" % types)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            doc = None
            problems.append("json: %r" % e)
        return doc, problems

    def _handle(self, handler):
        n = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(n) if n else b""
        doc, problems = self._check(handler, body)
        with self._lock:
            self.requests.append({"method": handler.command, "path": handler.path,
                                  "headers": dict(handler.headers.items()), "body": body,
                                  "json": doc, "problems": problems,
                                  "client": handler.client_address, "t": time.monotonic()})
            self.connections.add(handler.client_address)
            seq = len(self.requests)
            mode, delay, retry_after = self.mode, self.delay, self.retry_after
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if mode == "hang":
                self._release.wait(120)
                return
            if delay:
                self._release.wait(delay)
            if problems:
                self._answer(handler, 400, {"errors": [{"message": p} for p in problems]})
            elif mode == "202":
                self._answer(handler, 202, None, {"X-Message-Id": "msg-%d" % seq})
            elif mode == "400":
                self._answer(handler, 400, {"errors": [
                    {"message": "The to email does not contain a valid address.",
                     "field": "personalizations.0.to.0.email"}]})
            elif mode == "429":
                self._answer(handler, 429, {"errors": [{"message": "too many requests"}]},
                             {"Retry-After": retry_after})
            else:
                self._answer(handler, 500, {"errors": [{"message": "internal error"}]})
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _answer(handler, status, doc, headers=None):
        body = json.dumps(doc).encode() if doc is not None else b""
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        if body:
            handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.wfile.write(body)

    def start(self):
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: connections get reused

            def do_POST(self):
                peer._handle(self)

            do_GET = do_PUT = do_DELETE = do_POST

            def log_message(self, *args):
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def cleanup(self):
        self._release.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread:
            self._thread.join(5)
            self._thread = None
