"""Outbound delivery end to end: the real server relays, forwards
and delivers by MX to upstream servers the tests start on 127.0.0.1.

Upstreams: tests/unit/deliver/data/smtpd.py (aiosmtpd: plain, STARTTLS,
implicit TLS, AUTH, per-RCPT codes, a POP3 server) run as subprocesses,
and Scripted below, an in-process SMTP server whose end-of-DATA replies can
be scripted (4xx then 250) or held back (to kill postern mid-delivery).

What the server guarantees across SIGKILL (docs/queue.md): a recipient's
outcome is recorded in the spool (fdatasync) before the queue goes on, so
after a restart everything accepted is delivered, and a recipient already
recorded as delivered is never sent again.  A 250 the server never read
(the upstream answers after the connection died) is no delivery by RFC 5321
4.1.1.4 / 6.1: the upstream must drop that message and postern sends again.
"""

import base64
import email
import email.policy
import glob
import json
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import (REPO, Client, binary, close_listener, headers_of,
    log_events, make_config, read_bytes, run_cli, send_message, split_delivered, spool_empty, queue_id,
    wait_for, free_port)

PY = "/usr/bin/python3"
DATA = os.path.join(REPO, "tests", "unit", "deliver", "data")
SMTPD = os.path.join(DATA, "smtpd.py")
FAST = ("queue retry-min 1s", "queue retry-max 2s")
LOCAL_RULE = "match to domain example.org action local"


# ----- upstreams -------------------------------------------------------------

class Proc:
    """A helper script run with /usr/bin/python3 that prints READY."""

    def __init__(self, argv, timeout=10.0):
        self.p = subprocess.Popen([PY] + argv, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        buf = b""
        while b"READY" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.p.poll() is not None:
                self.stop()
                raise AssertionError("%s did not start: %r %s" % (argv[0],
                    buf, self.p.stderr.read().decode(errors="replace")
                    if self.p.poll() is not None else ""))
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                buf += os.read(self.p.stdout.fileno(), 100)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class Upstream(Proc):
    """smtpd.py on 127.0.0.1:port; messages() -> [(env dict, eml bytes)]."""

    def __init__(self, out, *args, port=None):
        self.port = port or free_port()
        self.out = str(out)
        super().__init__([SMTPD, "--port", str(self.port), "--out", self.out]
            + [str(a) for a in args])

    def messages(self):
        try:
            names = os.listdir(self.out)
        except FileNotFoundError:
            return []
        out = []
        for n in sorted((x for x in names if x.endswith(".eml")),
                key=lambda x: int(x.split(".")[0])):
            base = os.path.join(self.out, n[:-4])
            env = {"rcpt": []}
            with open(base + ".env") as f:
                for line in f:
                    k, _, v = line.rstrip("\n").partition(" ")
                    if k == "rcpt":
                        env["rcpt"].append(v)
                    else:
                        env[k] = v
            out.append((env, read_bytes(base + ".eml")))
        return out


class Scripted:
    """An in-process SMTP server (8BITMIME, no SMTPUTF8).  data_replies:
    replies for successive ends of DATA (then 250); rcpt_replies: address
    -> the reply to its RCPT (else 250).  stall_data / stall_quit: hold the
    reply to the final dot / to QUIT until release() (or the client goes
    away).  ehlo: the keywords its EHLO reply offers, read at each EHLO;
    helo_replies: "EHLO" or "HELO" -> the reply to that command instead;
    mute: for each next connection, "greeting" (none is sent) or "dot" (no
    reply to the final dot), held until the client goes away, or "drop"
    (closed at the final dot, without a reply); mails: each MAIL command
    as it came.  A reply given as bytes is sent as it is, a str as UTF-8.
    AUTH PLAIN (with or without the initial response) and LOGIN take any
    password: auth_lines holds the AUTH commands and SASL responses as
    they came, logins each (user, password).  line_max: a longer command
    line (CRLF included) gets 500 5.5.2, as a server that enforces RFC
    5321 4.5.3.1.4 says."""

    def __init__(self, data_replies=(), port=None, rcpt_replies=None,
            ehlo=("8BITMIME",)):
        self.replies = list(data_replies)
        self.rcpt_replies = dict(rcpt_replies or {})
        self.ehlo = list(ehlo)
        self.helo_replies = {}
        self.mute = []
        self.mails = []
        self.auth_lines = []
        self.logins = []
        self.line_max = None
        self.stall_data = False
        self.stall_quit = False
        self.dribble = 0		# "220-" lines before the greeting, 0.6 s apart
        self.released = threading.Event()
        self.stalled = threading.Event()
        self.lock = threading.Lock()
        self.stored = []		# (mail_from, rcpts, data)
        self.events = []
        self.waiting = 0		# sessions held in a stall now
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port or 0))
        self.port = self.ls.getsockname()[1]
        self.ls.listen(16)
        self.stopping = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def note(self, what):
        with self.lock:
            self.events.append(what)

    def accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(c,),
                daemon=True).start()

    def wait_or_gone(self, c):
        """Stall: True when released, False when the client went away."""
        with self.lock:
            self.waiting += 1
        self.stalled.set()
        try:
            while not self.released.is_set():
                r, _, _ = select.select([c], [], [], 0.05)
                if r:
                    try:
                        if not c.recv(1, socket.MSG_PEEK):
                            return False
                    except OSError:
                        return False
            return True
        finally:
            with self.lock:
                self.waiting -= 1

    def sasl(self, c, f, challenge):
        """One SASL round: the 334 challenge out, the response (decoded)
        back."""
        c.sendall(b"334 " + base64.b64encode(challenge) + b"\r\n")
        line = f.readline()
        with self.lock:
            self.auth_lines.append(line)
        return base64.b64decode(line.strip())

    def auth(self, c, f, line):
        with self.lock:
            self.auth_lines.append(line)
        words = line.split()
        mech = words[1].upper() if len(words) > 1 else b""
        if mech == b"PLAIN":
            raw = base64.b64decode(words[2]) if len(words) > 2 else \
                self.sasl(c, f, b"")
            _authzid, user, password = raw.split(b"\0")
        elif mech == b"LOGIN":
            user = self.sasl(c, f, b"Username:")
            password = self.sasl(c, f, b"Password:")
        else:
            c.sendall(b"504 5.5.4 unknown mechanism\r\n")
            return
        with self.lock:
            self.logins.append((user.decode(), password.decode()))
        c.sendall(b"235 2.7.0 ok\r\n")

    def stalled_now(self):
        with self.lock:
            return self.waiting

    def session(self, c):
        f = c.makefile("rb")
        with self.lock:
            mute = self.mute.pop(0) if self.mute else None
        try:
            if mute == "greeting":
                self.wait_or_gone(c)
                self.note("mute:greeting")
                return
            for _ in range(self.dribble):
                c.sendall(b"220-up.test still waking up\r\n")
                time.sleep(0.6)
            c.sendall(b"220 up.test ESMTP scripted\r\n")
            mail, rcpts = None, []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode("latin-1").rstrip("\r\n")
                verb = cmd[:4].upper()
                if self.line_max is not None and len(line) > self.line_max:
                    c.sendall(b"500 5.5.2 Line too long\r\n")
                elif verb in self.helo_replies:
                    self.note(verb.lower() + ":refused")
                    c.sendall(self.helo_replies[verb].encode() + b"\r\n")
                elif verb in ("EHLO", "HELO"):
                    self.note("helo:" + cmd[5:])
                    lines = ["up.test"] + self.ehlo
                    c.sendall("".join("250%s%s\r\n" % ("-" if i <
                        len(lines) - 1 else " ", l) for i, l in
                        enumerate(lines)).encode())
                elif verb == "MAIL":
                    with self.lock:
                        self.mails.append(cmd)
                    mail, rcpts = re.search(r"<(.*?)>", cmd).group(1), []
                    c.sendall(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    rcpt = re.search(r"<(.*?)>", cmd).group(1)
                    reply = self.rcpt_replies.get(rcpt)
                    if reply:
                        c.sendall((reply if isinstance(reply, bytes) else
                            reply.encode()) + b"\r\n")
                        continue
                    rcpts.append(rcpt)
                    c.sendall(b"250 2.1.5 ok\r\n")
                elif verb == "DATA":
                    c.sendall(b"354 go\r\n")
                    data = b""
                    while True:
                        l = f.readline()
                        if not l:
                            self.note("lost-in-data")
                            return
                        if l == b".\r\n":
                            break
                        data += l[1:] if l.startswith(b".") else l
                    if mute == "drop":
                        self.note("dropped")
                        return
                    if self.stall_data or mute == "dot":
                        if not self.wait_or_gone(c):
                            # RFC 5321 6.1: no reply went out, so the
                            # message is not ours; drop it.
                            self.note("abandoned")
                            return
                    with self.lock:
                        reply = self.replies.pop(0) if self.replies \
                            else "250 2.0.0 ok"
                    if reply.startswith("250"):
                        with self.lock:
                            self.stored.append((mail, rcpts, data))
                    self.note("data:" + reply[:3])
                    c.sendall(reply.encode() + b"\r\n")
                elif verb == "QUIT":
                    if self.stall_quit:
                        self.wait_or_gone(c)
                    try:
                        c.sendall(b"221 bye\r\n")
                    except OSError:
                        pass
                    return
                elif verb in ("RSET", "NOOP"):
                    c.sendall(b"250 ok\r\n")
                elif verb == "AUTH":
                    self.auth(c, f, line)
                else:
                    c.sendall(b"502 5.5.2 no\r\n")
        except OSError:
            self.note("oserror")
        finally:
            c.close()

    def count(self):
        with self.lock:
            return len(self.stored)

    def stop(self):
        self.stopping = True
        self.released.set()
        close_listener(self.ls)


@pytest.fixture
def upstreams(tmp_path):
    """Factory: upstreams(*smtpd_args, port=None) -> Upstream;
    upstreams.scripted(...) -> Scripted.  All stopped at the end."""
    made = []

    def make(*args, port=None):
        u = Upstream(tmp_path / ("up%d" % len(made)), *args, port=port)
        made.append(u)
        return u

    def scripted(*args, **kw):
        s = Scripted(*args, **kw)
        made.append(s)
        return s
    make.scripted = scripted
    yield make
    for u in made:
        u.stop()


# ----- helpers ---------------------------------------------------------------

def relay_server(make_postern, action, extra=(), rules=None):
    """A server with local mail for example.org and ACTION (an "action out
    ..." line) for everything a loopback client sends elsewhere."""
    return make_postern(extra=FAST + tuple(extra) + (action,),
        rules=rules or (LOCAL_RULE, "match from local action out"))


def submit(srv, sender, rcpts, body=None, subject="relayed"):
    if body is None:
        body = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"
            "Message-ID: <%s.%d@example.org>\r\n\r\nhello upstream\r\n"
            % (sender, rcpts[0], subject, subject, time.monotonic_ns()))
    with srv.session() as c:
        c.hello()
        reply = send_message(c, sender, rcpts, body)
    return queue_id(reply)


def queue_cli(srv, *args):
    return run_cli("queue", "-c", srv.conf, *args)


def queue_json(srv):
    r = queue_cli(srv, "list", "--json")
    assert r.returncode == 0, r.stderr
    return {m["queue_id"]: m for m in json.loads(r.stdout)}


def settle(srv, count, want, what):
    """The spool empties and exactly WANT copies arrived.  An upstream
    keeps a copy before it answers 250, and the spool keeps a message until
    every copy has been answered: once it is empty no copy is on its way."""
    wait_for(lambda: spool_empty(srv), timeout=10,
        what="an empty spool after " + what)
    assert count() == want, "%s: %d copies, want %d; log:\n%s" % (what,
        count(), want, srv.log()[-2000:])


def rcpts_at(up):
    """Every recipient an Upstream received, sorted (duplicates kept)."""
    return sorted(r for env, _m in up.messages() for r in env["rcpt"])


def bounce_of(srv, user):
    """The one DSN in USER's Maildir: (message, delivery-status parts)."""
    files = wait_for(lambda: srv.maildir(user), timeout=10,
        what="a bounce for " + user)
    assert len(files) == 1, files
    ret, _received, rest = split_delivered(read_bytes(files[0]))
    assert ret == "Return-Path: <>"
    msg = email.message_from_bytes(rest, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.as_string()[:500]
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain",
        "message/delivery-status", "text/rfc822-headers"]
    return msg, parts


def report_of(srv, user):
    """The one DSN in USER's Maildir read as UTF-8 text (strictly: it must
    be UTF-8 throughout): (its header, [(part header dict, part body)])."""
    files = wait_for(lambda: srv.maildir(user), timeout=10,
        what="a DSN for " + user)
    assert len(files) == 1, files
    ret, _received, rest = split_delivered(read_bytes(files[0]))
    assert ret == "Return-Path: <>"
    head, _, body = rest.decode("utf-8").partition("\n\n")
    boundary = re.search(r'boundary="([^"]+)"', head).group(1)
    parts = []
    for chunk in body.split("--" + boundary)[1:-1]:
        phead, _, pbody = chunk.strip("\n").partition("\n\n")
        parts.append((dict((k.lower(), v.strip()) for k, _, v in
            (l.partition(":") for l in phead.split("\n"))), pbody))
    return head, parts


def make_ca(d):
    """A test CA and a server certificate for 127.0.0.1/localhost."""
    d = str(d)
    os.makedirs(d, exist_ok=True)

    def ossl(*a):
        subprocess.run(["openssl"] + list(a), cwd=d, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2", "-subj", "/CN=postern test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
            "extendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey",
        "ca.key", "-CAcreateserial", "-out", "srv.pem", "-days", "2",
        "-extfile", "ext")
    return (os.path.join(d, "ca.pem"), os.path.join(d, "srv.pem"),
        os.path.join(d, "srv.key"))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# ----- relay -----------------------------------------------------------------

def test_relay_plain(make_postern, upstreams):
    up = upstreams()
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d" helo relay.test' % up.port)
    qid = submit(srv, "alice@example.org", ["bob@remote.test",
        "carol@remote.test"], subject="plain")
    # The queue tries the recipients of a message one after the other
    # (docs/queue.md), so two transactions may carry them: each recipient
    # must arrive exactly once.
    wait_for(lambda: len(rcpts_at(up)) == 2, timeout=10,
        what="the relayed message")
    settle(srv, lambda: len(rcpts_at(up)), 2, "plain relay")
    assert rcpts_at(up) == ["bob@remote.test", "carol@remote.test"]
    env, eml = up.messages()[0]
    assert env["from"] == "alice@example.org"
    assert env["tls"] == "no" and env["auth"] == "-"
    h = headers_of(eml.replace(b"\r\n", b"\n"))
    assert h["subject"] == ["plain"]
    head = eml.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert re.match(r"Received: from client\.example .*?by test\.example"
        r".*?" + re.escape(qid), head, re.S), head
    assert eml.endswith(b"hello upstream\r\n")
    assert [kv for kv, _ in log_events(srv, "delivered") if "to" in kv]


def test_relay_host_takes_many_deliveries_at_once(make_postern, upstreams):
    """By default one relay host gets up to destination-concurrency (20)
    deliveries at once (docs/queue.md): 12 messages whose end of DATA the
    upstream holds are all in its hands together, and once it answers each
    arrives exactly once."""
    up = upstreams.scripted()
    up.stall_data = True
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    n = 12
    for i in range(n):
        submit(srv, "alice@example.org", ["bob%d@remote.test" % i],
            subject="many%d" % i)
    wait_for(lambda: up.stalled_now() == n, timeout=20,
        what="%d deliveries held by the upstream at once" % n)
    up.released.set()
    wait_for(lambda: up.count() == n, timeout=20, what="every message")
    settle(srv, up.count, n, "%d relayed at once" % n)
    assert sorted(r for _m, rs, _d in up.stored for r in rs) == sorted(
        "bob%d@remote.test" % i for i in range(n))


def test_relayed_recipient_recorded_done_once(make_postern, upstreams):
    """A recipient the upstream took is recorded as done once, before
    QUIT, in the message's done-records (docs/queue.md): not a second
    time when the queue hears the outcome.  The second recipient is
    deferred, so the message and its records stay to be read."""
    up = upstreams.scripted(rcpt_replies={
        "carol@remote.test": "451 4.3.0 later"})
    srv = make_postern(extra=("queue retry-min 1h", "queue retry-max 2h",
        'action out relay "smtp://127.0.0.1:%d"' % up.port),
        rules=(LOCAL_RULE, "match from local action out"))
    qid = submit(srv, "alice@example.org", ["bob@remote.test",
        "carol@remote.test"], subject="once")
    done = srv.path("spool", "done", qid)

    def records():
        with open(done) as f:
            return f.read().splitlines()
    wait_for(lambda: os.path.exists(done) and
        any(r.startswith("defer ") for r in records()), timeout=10,
        what="the deferral of the second recipient")
    assert up.count() == 1
    assert [r for r in records() if r.startswith("done ")] == ["done 0"], \
        records()


def test_relay_recipients_of_one_action_are_one_transaction(make_postern,
        upstreams):
    """A message's recipients of one relay action go up in one transaction:
    one copy with every recipient the upstream takes, each recipient its
    own reply: the refused one bounces alone, the deferred one is tried
    again alone, the accepted ones are never sent again."""
    up = upstreams.scripted(rcpt_replies={
        "bad@remote.test": "550 5.1.1 no such user",
        "later@remote.test": "451 4.2.1 try later"})
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    rcpts = ["a@remote.test", "bad@remote.test", "later@remote.test",
        "b@remote.test"]
    qid = submit(srv, "alice@example.org", rcpts, subject="one txn")
    wait_for(lambda: rcpt_events(srv, "deferred", qid), timeout=10,
        what="the deferral of later@")
    assert [rc for _m, rc, _d in up.stored] == [["a@remote.test",
        "b@remote.test"]], up.events
    del up.rcpt_replies["later@remote.test"]
    settle(srv, up.count, 2, "the retry of later@")
    assert [rc for _m, rc, _d in up.stored] == [["a@remote.test",
        "b@remote.test"], ["later@remote.test"]], up.events
    assert up.events.count("data:250") == 2, up.events
    # The spool empties at the upstream's 250, before the line is logged.
    wait_for(lambda: rcpt_events(srv, "delivered", qid) == ["<a@remote.test>",
        "<b@remote.test>", "<later@remote.test>"], timeout=10,
        what="three delivered lines")
    # Retried alone, once more if the retry came before the change.
    assert set(rcpt_events(srv, "deferred", qid)) == {"<later@remote.test>"}
    _msg, parts = bounce_of(srv, "alice")
    assert [p["Final-Recipient"] for p in parts[1].get_payload()[1:]] == \
        ["rfc822; bad@remote.test"]


def test_a_transaction_takes_at_most_100_recipients(make_postern,
        upstreams):
    """150 recipients of one relay action: a transaction of 100 (the least
    a server must take, RFC 5321 4.5.3.1.8), then one of the other 50, in
    the order given."""
    up = upstreams.scripted()
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port,
        extra=("limit recipients 200",))
    rcpts = ["r%03d@remote.test" % i for i in range(150)]
    submit(srv, "alice@example.org", rcpts, subject="150")
    settle(srv, up.count, 2, "150 recipients")
    assert [rc for _m, rc, _d in up.stored] == [rcpts[:100], rcpts[100:]]


def test_mx_recipients_are_one_transaction_a_domain(make_postern, upstreams,
        tmp_path):
    """An mx action's recipients of a message go in one transaction for
    each domain, whichever order they were given in."""
    up = upstreams.scripted()
    table = write(str(tmp_path / "mxhosts"),
        "one.test 10 127.0.0.1:%d\ntwo.test 10 127.0.0.1:%d\n"
        % (up.port, up.port))
    srv = make_postern(extra=FAST + ("table mxh file:%s" % table,
        "action out mx mx-hosts <mxh>"),
        rules=(LOCAL_RULE, "match from local action out"))
    submit(srv, "alice@example.org", ["x@one.test", "y@two.test",
        "z@one.test"], subject="by domain")
    settle(srv, up.count, 2, "one transaction a domain")
    assert sorted(rc for _m, rc, _d in up.stored) == [
        ["x@one.test", "z@one.test"], ["y@two.test"]], up.events


def test_relay_starttls_and_implicit_tls_with_auth(make_postern, upstreams,
        tmp_path):
    ca, cert, key = make_ca(tmp_path / "ca")
    st = upstreams("--mode", "starttls", "--cert", cert, "--key", key,
        "--auth", "relayuser:s3cret")
    it = upstreams("--mode", "tls", "--cert", cert, "--key", key,
        "--auth", "relayuser:s3cret", "--auth-exclude", "PLAIN")
    creds = write(str(tmp_path / "creds"), "127.0.0.1 relayuser s3cret\n")
    srv = make_postern(extra=FAST + (
        "table creds file:%s" % creds,
        'action st relay "smtp+starttls://127.0.0.1:%d" auth <creds> ca %s'
        % (st.port, ca),
        'action it relay "smtp+tls://127.0.0.1:%d" auth <creds> ca %s'
        % (it.port, ca),
        # Without the test CA the certificate must not be trusted.
        'action nv relay "smtp+tls://127.0.0.1:%d" auth <creds>' % it.port),
        rules=(LOCAL_RULE, "match from local to domain st.test action st",
            "match from local to domain it.test action it",
            "match from local to domain nv.test action nv"))
    submit(srv, "alice@example.org", ["bob@st.test"], subject="starttls")
    submit(srv, "alice@example.org", ["bob@it.test"], subject="implicit")
    nv = submit(srv, "alice@example.org", ["bob@nv.test"], subject="noverify")
    wait_for(lambda: st.messages() and it.messages(), timeout=15,
        what="both TLS relays")
    (senv, seml), = st.messages()
    (ienv, ieml), = it.messages()
    assert senv["tls"] == "yes" and senv["auth"] == "relayuser", senv
    assert senv["rcpt"] == ["bob@st.test"] and b"Subject: starttls" in seml
    assert ienv["tls"] == "yes" and ienv["auth"] == "relayuser", ienv
    assert ienv["mech"] == "LOGIN", ienv	# PLAIN not offered there
    assert b"Subject: implicit" in ieml

    def nv_deferred():
        m = queue_json(srv).get(nv)
        return m and m["recipients"][0]["status"] == "deferred" and m
    m = wait_for(nv_deferred, timeout=10, what="the unverified relay deferred")
    assert "certificate" in m["recipients"][0]["last_error"].lower() or \
        "verif" in m["recipients"][0]["last_error"].lower(), m
    assert len(it.messages()) == 1
    # The password never reaches the log.
    assert "s3cret" not in srv.log()


def test_upstream_4xx_then_250_is_retried_and_delivered_once(make_postern,
        upstreams):
    up = upstreams.scripted(["451 4.3.0 try again later",
        "452 4.3.1 still busy"])
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d" helo relay.test' % up.port)
    qid = submit(srv, "alice@example.org", ["bob@remote.test"])
    wait_for(lambda: up.count() == 1, timeout=15, what="delivery after 4xx")
    assert set(e for e in up.events if e.startswith("helo:")) == \
        {"helo:relay.test"}, up.events
    settle(srv, up.count, 1, "4xx then 250")
    assert up.events.count("data:451") == 1 and \
        up.events.count("data:452") == 1, up.events
    deferred = [kv for kv, _ in log_events(srv, "deferred") if "to" in kv]
    assert len(deferred) == 2, srv.log()[-2000:]
    # The upstream's reply, once: "451 4.3.0 try again later".
    assert [kv["why"].split(" ")[:3] for kv in deferred] == [
        ["451", "4.3.0", "try"], ["452", "4.3.1", "still"]], deferred
    assert not srv.maildir("alice"), "a bounce for a temporary failure"
    assert qid


def test_a_step_timeout_bounds_the_whole_reply(make_postern, upstreams):
    """`timeout greeting 2s` is for the greeting, however many lines it
    has: an upstream dribbling a line every 0.6 s for 6 s is cut."""
    up = upstreams.scripted()
    up.dribble = 10
    srv = relay_server(make_postern, 'action out relay "smtp://127.0.0.1:%d" '
        "timeout greeting 2s" % up.port)
    submit(srv, "alice@example.org", ["bob@remote.test"])
    kv = wait_for(lambda: [kv for kv, _ in log_events(srv, "deferred")],
        timeout=15, what="the deferral")[0]
    assert "timed out" in kv["why"], kv
    assert up.count() == 0


def test_a_timeout_or_lost_connection_names_its_step(make_postern,
        upstreams):
    """A deferral for a timeout says which step timed out, as Postfix's
    does: no greeting, then no reply to the final dot, which also says the
    upstream may already hold the message; a connection lost at the dot
    says so too.  The copy that finally goes through is the only one kept
    upstream."""
    up = upstreams.scripted()
    up.mute = ["greeting", "dot", "drop"]
    srv = relay_server(make_postern, 'action out relay "smtp://127.0.0.1:%d" '
        "timeout greeting 2s timeout data-term 2s" % up.port)
    qid = submit(srv, "alice@example.org", ["bob@remote.test"])
    wait_for(lambda: rcpt_events(srv, "delivered", qid), timeout=40,
        what="the delivery after three failures")
    settle(srv, up.count, 1, "three failures")
    peer = "127.0.0.1[127.0.0.1]:%d" % up.port
    assert [kv["why"] for kv, _ in log_events(srv, "deferred")
        if kv.get("qid") == qid] == [
        "conversation with %s timed out while receiving the initial "
        "server greeting" % peer,
        "conversation with %s timed out while sending end of data -- "
        "message may be sent more than once" % peer,
        "lost connection with %s while sending end of data -- message "
        "may be sent more than once" % peer], srv.log()[-2000:]
    assert up.events.count("mute:greeting") == 1, up.events
    assert up.events.count("abandoned") == 1, up.events
    assert up.events.count("dropped") == 1, up.events
    assert rcpt_events(srv, "delivered", qid) == ["<bob@remote.test>"]


def test_a_helo_refusal_is_reported_as_the_reply_to_helo(make_postern,
        upstreams):
    """EHLO refused with 500, then HELO refused: the bounce and the log
    quote the HELO reply as the reply to HELO, not to EHLO."""
    up = upstreams.scripted()
    up.helo_replies = {"EHLO": "500 5.5.1 unknown command",
        "HELO": "550 5.7.1 HELO-REPLY refused"}
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    submit(srv, "alice@example.org", ["bob@remote.test"])
    _msg, parts = bounce_of(srv, "alice")
    r = parts[1].get_payload()[1]
    assert r["Diagnostic-Code"] == ("smtp; 550 5.7.1 HELO-REPLY refused "
        "(in reply to HELO)"), str(r)
    assert [kv["why"] for kv, _ in log_events(srv, "failed")] == [
        "550 5.7.1 HELO-REPLY refused (in reply to HELO)"], srv.log()[-2000:]
    assert "ehlo:refused" in up.events and "helo:refused" in up.events


def test_552_to_rcpt_defers_and_552_to_the_dot_bounces(make_postern,
        upstreams):
    """RFC 5321 4.5.3.1.10: 552 to RCPT is the old "too many recipients",
    taken as 452: the recipient is tried again, its reply kept as written,
    while the other recipient of the transaction goes through.  552 to the
    final dot stays a permanent failure."""
    up = upstreams.scripted(rcpt_replies={
        "many@remote.test": "552 5.5.3 Too many recipients"})
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    qid = submit(srv, "alice@example.org", ["ok@remote.test",
        "many@remote.test"], subject="552 rcpt")
    wait_for(lambda: rcpt_events(srv, "deferred", qid), timeout=10,
        what="the deferral of many@")
    assert [kv["why"] for kv, _ in log_events(srv, "deferred")] == [
        "552 5.5.3 Too many recipients (in reply to RCPT TO)"]
    del up.rcpt_replies["many@remote.test"]
    settle(srv, up.count, 2, "the retry of many@")
    assert [rc for _m, rc, _d in up.stored] == [["ok@remote.test"],
        ["many@remote.test"]], up.events
    assert not log_events(srv, "failed"), srv.log()[-2000:]
    assert not srv.maildir("alice"), "a bounce for a 552 to RCPT"
    up.replies.append("552 5.3.4 Message too big for me")
    submit(srv, "alice@example.org", ["big@remote.test"], subject="552 dot")
    _msg, parts = bounce_of(srv, "alice")
    r = parts[1].get_payload()[1]
    assert r["Status"] == "5.3.4", str(r)
    assert r["Diagnostic-Code"] == ("smtp; 552 5.3.4 Message too big for "
        "me (in reply to end of DATA)"), str(r)


def test_upstream_reply_longer_than_the_kept_text(make_postern, upstreams):
    """A reply whose lines fill the text kept for logs and DSNs up to a few
    octets: the rest is cut, the message delivered, the server stays up."""
    up = upstreams.scripted(["250-%s\r\n250 2.0.0 \x01 ok" % ("a" * 502)])
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    submit(srv, "alice@example.org", ["bob@remote.test"])
    wait_for(lambda: up.count() == 1 and spool_empty(srv), timeout=15,
        what="the delivery")
    assert srv.alive(), srv.log()[-2000:]


def test_upstream_text_is_escaped_once_in_the_log(make_postern, upstreams):
    """An upstream's reply with a terminal escape, a quote and a backslash
    is logged escaped once, as the DSN carries it: no \\x5cx of an
    escape escaped again."""
    up = upstreams.scripted(['550 5.1.1 no \x1b[2J"k=v \\x41'])
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    submit(srv, "alice@example.org", ["bob@remote.test"])
    bounce_of(srv, "alice")
    line = [l for l in srv.log().splitlines() if " failed " in l][0]
    assert 'why="550 5.1.1 no \\x1b[2J\\x22k=v \\x5cx41 (in reply' in line, line


def test_dsn_carries_the_upstream_reply_as_it_was_written(make_postern,
        upstreams):
    """The Diagnostic-Code is the upstream's reply by the DSN's own rules,
    not the log's escapes: quotes and backslashes as written, and UTF-8 as
    it is in a global DSN (RFC 6533 6.2: here, to a UTF-8 sender), as '?'
    in a plain one.  The log line escapes the same reply once."""
    said = ('550 5.1.1 <"john smith"@remote.test>: unknown user, see '
        'caf\u00e9 \\help')
    up = upstreams.scripted(rcpt_replies={'"john smith"@remote.test': said},
        ehlo=("8BITMIME", "SMTPUTF8"))
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    body = "Subject: x\r\n\r\nhi\r\n"
    with srv.session() as c:
        c.hello()
        send_message(c, "j\u00f6rg@example.org",
            ['"john smith"@remote.test'], body, " SMTPUTF8")
        send_message(c, "bob@example.org", ['"john smith"@remote.test'],
            body)
    _head, parts = report_of(srv, "j__rg")	# the folder's name is safe
    assert parts[1][0]["content-type"] == "message/global-delivery-status"
    fields = dict(l.split(": ", 1) for l in
        parts[1][1].split("\n\n")[1].split("\n"))
    assert fields["Diagnostic-Code"] == "smtp; %s (in reply to RCPT TO)" % \
        said, fields
    _m, parts = bounce_of(srv, "bob")
    r = parts[1].get_payload()[1]
    assert r["Diagnostic-Code"] == ('smtp; 550 5.1.1 <"john smith"@'
        'remote.test>: unknown user, see caf?? \\help (in reply to RCPT '
        'TO)'), str(r)
    failed = [l for kv, l in log_events(srv, "failed")]
    assert len(failed) == 2, failed
    for line in failed:
        assert ('why="550 5.1.1 <\\x22john smith\\x22@remote.test>: '
            'unknown user, see caf\\xc3\\xa9 \\x5chelp (in reply to RCPT '
            'TO)"') in line, line


def test_queue_json_is_utf8_whatever_the_upstream_replied(make_postern,
        upstreams):
    """An upstream's reply is kept as it wrote it, so last_error may hold
    any byte: postern queue list --json stays valid UTF-8 (RFC 8259 8.1),
    its UTF-8 kept, each other byte U+FFFD, and strict JSON."""
    up = upstreams.scripted(rcpt_replies={"bob@remote.test":
        b'450 4.2.0 busy \xff "caf\xc3\xa9" \\ \xc3 later'})
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    qid = submit(srv, "alice@example.org", ["bob@remote.test"])
    wait_for(lambda: log_events(srv, "deferred"), timeout=15,
        what="the deferral")
    r = subprocess.run([binary(), "queue", "-c", srv.conf, "list", "--json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=10)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode("utf-8")	# strict: raises on a bad byte
    msgs = {m["queue_id"]: m for m in json.loads(out)}
    assert msgs[qid]["recipients"][0]["last_error"] == ('450 4.2.0 busy '
        '\ufffd "caf\u00e9" \\ \ufffd later (in reply to RCPT TO)'), out


def test_upstream_5xx_bounces_a_well_formed_dsn(make_postern, upstreams):
    up = upstreams("--rcpt-code", "bad@remote.test=550")
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    qid = submit(srv, "alice@example.org", ["bad@remote.test",
        "good@remote.test"], subject="half-bad")
    msg, parts = bounce_of(srv, "alice")
    assert msg["To"] == "<alice@example.org>"
    assert msg["Auto-Submitted"] == "auto-replied"
    per_msg, *per_rcpt = parts[1].get_payload()
    assert per_msg["Reporting-MTA"] == "dns; test.example"
    assert per_msg["X-Postern-Queue-ID"] == qid
    assert len(per_rcpt) == 1, [str(p) for p in per_rcpt]
    r = per_rcpt[0]
    assert r["Final-Recipient"] == "rfc822; bad@remote.test"
    assert r["Action"] == "failed"
    assert re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", r["Status"]), r["Status"]
    assert "550" in r["Diagnostic-Code"] and \
        r["Diagnostic-Code"].startswith("smtp;"), r["Diagnostic-Code"]
    assert "bad@remote.test" in parts[0].get_payload()
    assert "Subject: half-bad" in parts[2].get_payload()
    # The good recipient went through, once.
    settle(srv, lambda: len(up.messages()), 1, "5xx + 250")
    assert up.messages()[0][0]["rcpt"] == ["good@remote.test"]


def test_quoted_local_parts_go_up_in_one_canonical_form(make_postern,
        upstreams):
    """RFC 5321 4.1.2: a quoted local part that could be a dot-string is
    that dot-string: "bob" and bob are one recipient, relayed once; one that
    needs its quotes goes up quoted.  The bounce goes to the unquoted
    sender and names the recipient as it was relayed."""
    up = upstreams("--rcpt-code", '"no body"@remote.test=550')
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    submit(srv, '"alice"@example.org', ['"bob"@remote.test',
        "bob@remote.test", '"john smith"@remote.test',
        '"no\\ body"@remote.test'], subject="quoted")
    _msg, parts = bounce_of(srv, "alice")
    per_rcpt = parts[1].get_payload()[1:]
    assert [r["Final-Recipient"] for r in per_rcpt] == [
        'rfc822; "no body"@remote.test']
    settle(srv, lambda: len(rcpts_at(up)), 2, "quoted relay")
    assert rcpts_at(up) == ['"john smith"@remote.test', "bob@remote.test"]
    assert {env["from"] for env, _m in up.messages()} == {
        "alice@example.org"}
    assert sorted(kv["to"] for kv, _ in log_events(srv, "rcpt")) == [
        r"<\x22john\x20smith\x22@remote.test>",
        r"<\x22no\x20body\x22@remote.test>", "<bob@remote.test>"]


def test_upstream_down_then_up(make_postern, upstreams):
    port = free_port()
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d" timeout connect 2s' % port)
    qid = submit(srv, "alice@example.org", ["bob@remote.test"])

    def deferred():
        m = queue_json(srv).get(qid)
        return m and m["recipients"][0]["attempts"] >= 1 and \
            m["recipients"][0]["status"] == "deferred" and m
    m = wait_for(deferred, timeout=10, what="a deferral while down")
    assert m["recipients"][0]["action"] == "relay", m
    up = upstreams(port=port)
    wait_for(up.messages, timeout=15, what="delivery once the upstream is up")
    settle(srv, lambda: len(up.messages()), 1, "down then up")
    assert not srv.maildir("alice")


# ----- SIGKILL during outbound delivery --------------------------------------

def test_sigkill_before_the_upstream_answers_the_dot(make_postern, upstreams):
    up = upstreams.scripted()
    up.stall_data = True
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    submit(srv, "alice@example.org", ["bob@remote.test"], subject="killed")
    wait_for(up.stalled.is_set, timeout=10, what="the upstream holding the dot")
    srv.kill9()
    delivered_once_after_restart(srv, up, "killed",
        "kill -9 before the reply to the dot")


def delivered_once_after_restart(srv, up, subject, what):
    """postern went away while UP held the dot: UP drops that copy, then
    answers at once, and the restarted postern delivers the message once."""
    wait_for(lambda: "abandoned" in up.events, timeout=5,
        what="the upstream seeing the connection drop")
    up.stall_data = False
    up.released.set()
    srv.start()
    wait_for(lambda: up.count() == 1, timeout=10,
        what="delivery after the restart")
    settle(srv, up.count, 1, what)
    assert b"Subject: " + subject.encode() in up.stored[0][2]


def test_sigkill_after_the_upstream_said_250(make_postern, upstreams):
    """The upstream answered 250 to the dot; postern is killed while it
    waits for the reply to QUIT.  The 250 was read: the recipient must not
    be delivered again after the restart."""
    up = upstreams.scripted()
    up.stall_quit = True
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    submit(srv, "alice@example.org", ["bob@remote.test"], subject="once")
    wait_for(lambda: up.stalled.is_set() and up.count() == 1, timeout=10,
        what="250 given and QUIT held")
    # QUIT came in after the 250, so postern has read the 250.
    srv.kill9()
    up.stall_quit = False
    up.released.set()
    srv.start()
    settle(srv, up.count, 1, "kill -9 after 250")


def held_at_the_dot(make_postern, upstreams, grace, subject):
    """(upstream, server, qid): a message relayed to an upstream that took
    it and does not answer the dot, with `limit shutdown-grace GRACE`."""
    up = upstreams.scripted()
    up.stall_data = True
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port,
        extra=("limit shutdown-grace " + grace,))
    qid = submit(srv, "alice@example.org", ["bob@remote.test"],
        subject=subject)
    wait_for(up.stalled.is_set, timeout=10, what="the upstream holding the dot")
    return up, srv, qid


def test_sigterm_cuts_short_a_delivery_the_upstream_holds(make_postern,
        upstreams):
    """The upstream took the message and does not answer the dot.  A stop
    gives the delivery the shutdown grace, then cuts it short: postern
    exits at once after, the message stays in the spool (deferred), and
    the next start delivers it."""
    up, srv, qid = held_at_the_dot(make_postern, upstreams, "1s", "cut")
    t0 = time.monotonic()
    srv.sigterm()
    assert srv.wait_exit(10) == 0, srv.log()[-2000:]
    took = time.monotonic() - t0
    assert took < 5, "the stop took %.1fs with a grace of 1s" % took
    assert "shutdown: grace over, cutting 1 deliveries short" in srv.log()
    bob = queue_json(srv)[qid]["recipients"][0]
    assert bob["status"] == "deferred", bob
    assert "cut short: postern is stopping" in bob["last_error"], bob
    delivered_once_after_restart(srv, up, "cut",
        "a stop during the reply to the dot")


def test_queue_commands_work_during_the_stop_grace(make_postern, upstreams):
    """The control socket answers until the workers are done: during the
    grace a flush is taken, and a delete of the message being delivered
    waits for that delivery (cut short at the end of the grace), then
    removes the message whole; nothing takes the server for gone and
    changes the spool under it."""
    _up, srv, qid = held_at_the_dot(make_postern, upstreams, "4s", "g")
    srv.sigterm()
    wait_for(lambda: "shutdown: waiting for 1 deliveries" in srv.log(),
        timeout=10, what="the stop waiting for the delivery")
    r = queue_cli(srv, "flush")
    assert (r.returncode, r.stdout) == (0, "queue flushed\n"), r
    r = queue_cli(srv, "delete", qid)
    assert (r.returncode, r.stdout) == (0, "%s: deleted\n" % qid), r
    # The delivery runs on: the message is whole until it ends.
    assert srv.alive()
    for sub in ("env", "msg"):
        assert os.path.exists(srv.path("spool", sub, qid)), sub
    assert srv.wait_exit(15) == 0, srv.log()[-2000:]
    halted = [kv for kv, _ in log_events(srv, "halted") if kv["qid"] == qid]
    assert halted and halted[0]["by"] == "operator" and \
        halted[0]["why"] == "delete", srv.log()[-2000:]
    assert spool_empty(srv), srv.spool_files()


def test_sigterm_cuts_short_the_wait_after_a_pop_login(make_postern,
        upstreams, tmp_path):
    """POP-before-SMTP's pop-wait is a delivery's wait like any other: a
    stop cuts it after the grace, the message stays deferred, and the log
    says postern stopped only once the queue has."""
    up, srv = pop_relay(make_postern, upstreams, tmp_path, "pop-wait 1m",
        "limit shutdown-grace 1s")
    qid = submit(srv, "alice@example.org", ["bob@remote.test"], subject="pw")
    pop_log = os.path.join(up.out, "pop.log")
    wait_for(lambda: os.path.exists(pop_log) and "login popper" in
        open(pop_log).read(), timeout=10, what="the POP login")
    t0 = time.monotonic()
    srv.sigterm()
    assert srv.wait_exit(15) == 0, srv.log()[-2000:]
    took = time.monotonic() - t0
    assert took < 8, "the stop took %.1fs with a grace of 1s" % took
    bob = queue_json(srv)[qid]["recipients"][0]
    assert bob["status"] == "deferred", bob
    assert "postern is stopping" in bob["last_error"], bob
    assert up.messages() == []
    lines = [l for l in srv.log().splitlines() if l.strip()]
    assert lines[-1].endswith(" info postern stopped"), lines[-5:]


# ----- MX ----------------------------------------------------------------------

def test_mx_preference_and_fallback_via_mx_hosts(make_postern, upstreams,
        tmp_path):
    best = upstreams()
    second = upstreams()
    dead = free_port()
    table = write(str(tmp_path / "mxhosts"),
        "pref.test 20 127.0.0.1:%d, 10 127.0.0.1:%d\n"
        "fallback.test 10 127.0.0.1:%d, 20 127.0.0.1:%d\n"
        % (second.port, best.port, dead, second.port))
    srv = make_postern(extra=FAST + ("table mxh file:%s" % table,
        "action out mx mx-hosts <mxh> timeout connect 2s"),
        rules=(LOCAL_RULE, "match from local action out"))
    submit(srv, "alice@example.org", ["a@pref.test"], subject="pref")
    wait_for(best.messages, timeout=10, what="delivery to preference 10")
    submit(srv, "alice@example.org", ["b@fallback.test"], subject="fallback")
    wait_for(second.messages, timeout=10, what="fallback to preference 20")
    settle(srv, lambda: len(best.messages()) + len(second.messages()), 2,
        "mx")
    assert best.messages()[0][0]["rcpt"] == ["a@pref.test"]
    assert second.messages()[0][0]["rcpt"] == ["b@fallback.test"]
    # The fallback was in the first pass: nothing was deferred.
    assert not [kv for kv, _ in log_events(srv, "deferred") if "to" in kv], \
        srv.log()[-2000:]


def dns_bounces(make_postern, zone, rcpts):
    """Send to RCPTS through an mx action whose resolver is dnsd.py with
    ZONE; returns {Final-Recipient: Status} of the bounces alice gets."""
    dport = free_port()
    dns = Proc([os.path.join(DATA, "dnsd.py"), "--port", str(dport),
        "--zone", json.dumps(zone)])
    try:
        srv = make_postern(extra=FAST + (
            "action out mx resolver 127.0.0.1:%d timeout connect 2s" % dport,),
            rules=(LOCAL_RULE, "match from local action out"))
        submit(srv, "alice@example.org", rcpts, subject="dns")
        try:
            wait_for(lambda: spool_empty(srv), timeout=8,
                what="an empty spool (every DNS failure final)")
        except AssertionError as e:
            raise AssertionError("%s; log:\n%s" % (e, srv.log()[-1500:]))
        got = {}
        for f in srv.maildir("alice"):
            _r, _rc, rest = split_delivered(read_bytes(f))
            msg = email.message_from_bytes(rest, policy=email.policy.compat32)
            for p in msg.get_payload()[1].get_payload()[1:]:
                got[p["Final-Recipient"]] = p["Status"]
        return got
    finally:
        dns.stop()


def test_mx_via_resolver_nxdomain_and_null_mx(make_postern):
    """`resolver` points at a DNS server the test runs (DNS carries no
    port and MX delivery uses port 25, so the loopback deliveries are in
    the mx-hosts test): NXDOMAIN and a null MX (RFC 7505) fail at once,
    with a 5.x.x bounce, without retries."""
    got = dns_bounces(make_postern, {"null.test": {"MX": [[0, "."]]}},
        ["y@nxdomain.test", "z@null.test"])
    assert got == {"rfc822; y@nxdomain.test": "5.1.2",
        "rfc822; z@null.test": "5.1.10"}, got


def test_mx_via_resolver_host_without_addresses(make_postern):
    got = dns_bounces(make_postern, {"nomx.test": {"MX": [[10,
        "void.nomx.test"]]}, "void.nomx.test": {}}, ["x@nomx.test"])
    assert list(got) == ["rfc822; x@nomx.test"], got
    assert got["rfc822; x@nomx.test"].startswith("5."), got


@pytest.fixture
def mx_dns(make_postern, tmp_path):
    """Factory: mx_dns(zone, opts="", extra=()) -> (srv, queries): a server
    whose mx action (with OPTS) asks dnsd.py serving ZONE; queries() gives
    the DNS server's "udp|tcp NAME TYPE" lines.  Stopped at the end."""
    procs = []

    def make(zone, opts="", extra=()):
        dport = free_port()
        log = str(tmp_path / ("dns%d.log" % len(procs)))
        procs.append(Proc([os.path.join(DATA, "dnsd.py"), "--port",
            str(dport), "--zone", json.dumps(zone), "--log", log]))
        srv = make_postern(extra=FAST + tuple(extra) + (
            "action out mx resolver 127.0.0.1:%d timeout connect 2s %s"
            % (dport, opts),), rules=(LOCAL_RULE, "match from local action out"))

        def queries():
            try:
                with open(log) as f:
                    return f.read().splitlines()
            except FileNotFoundError:
                return []
        return srv, queries
    yield make
    for p in procs:
        p.stop()


def refused_at(ip):
    """The start of a deferral's text when IP refused port 25."""
    return "connect %s[%s]:25: " % (ip, ip)


def test_mx_answers_truncated_over_udp_are_asked_again_over_tcp(mx_dns):
    """RFC 1035 4.2.1, RFC 7766 5: an answer with the TC bit is asked
    again over TCP, to the same server: an MX answer with no records (not
    "no MX records", which would make tc.test its own MX and bounce), an
    MX answer with some of them (void.part.test, which has no address,
    is not the whole set), an A answer.  Each recipient then goes to the
    address TCP gave (its port 25 refuses: a deferral that names it)."""
    srv, queries = mx_dns({
        "tc.test": {"MX": [[10, "mx.tc.test"]], "tc": ["MX"]},
        "mx.tc.test": {"A": ["127.0.0.11"], "tc": ["A"]},
        "part.test": {"MX": [[20, "void.part.test"], [10, "mx.part.test"]],
            "tcpartial": True},
        "void.part.test": {},
        "mx.part.test": {"A": ["127.0.0.12"]}})
    submit(srv, "alice@example.org", ["a@tc.test", "b@part.test"])
    ev, why = first_outcome(srv, "a@tc.test")
    assert ev == "deferred" and why.startswith(refused_at("127.0.0.11")), \
        (ev, why)
    ev, why = first_outcome(srv, "b@part.test")
    assert ev == "deferred" and why.startswith(refused_at("127.0.0.12")), \
        (ev, why)
    for q in ("tcp tc.test MX", "tcp mx.tc.test A", "tcp part.test MX"):
        assert q in queries(), queries()
    assert srv.maildir("alice") == [], "a bounce to alice"


def test_mx_keeps_the_most_preferred_of_many_records(mx_dns):
    """Of 33 MX records the 32 most preferred are kept, whatever order the
    answer lists them in: the best, listed last, is asked for and tried
    (the 32 others have no address)."""
    mx = [[50 + i, "h%d.many.test" % i] for i in range(32)]
    srv, queries = mx_dns({"many.test": {"MX": mx + [[1, "best.many.test"]]},
        "best.many.test": {"A": ["127.0.0.13"]}})
    submit(srv, "alice@example.org", ["c@many.test"])
    ev, why = first_outcome(srv, "c@many.test")
    assert ev == "deferred" and why.startswith(refused_at("127.0.0.13")), \
        (ev, why)
    assert "udp best.many.test A" in queries(), queries()
    assert "udp h31.many.test A" not in queries(), queries()


def test_mx_answer_too_large_or_ill_formed(mx_dns):
    """200 MX records do not fit UDP: they come over TCP and the best is
    tried.  An answer that counts more records than it holds defers with
    that reason (not an "rcode" NOERROR never had)."""
    mx = [[10 + i, "host-number-%03d.huge.test" % i] for i in range(200)]
    srv, queries = mx_dns({"huge.test": {"MX": mx},
        "host-number-000.huge.test": {"A": ["127.0.0.14"]},
        "bad.test": {"MX": [[10, "mx.bad.test"]], "badcount": True}})
    submit(srv, "alice@example.org", ["d@huge.test", "e@bad.test"])
    ev, why = first_outcome(srv, "d@huge.test")
    assert ev == "deferred" and why.startswith(refused_at("127.0.0.14")), \
        (ev, why)
    assert first_outcome(srv, "e@bad.test") == ("deferred", "4.4.3 MX "
        "lookup for bad.test failed (answer truncated or ill-formed)")
    assert "tcp huge.test MX" in queries(), queries()


def test_mx_address_literals_connect_without_dns(mx_dns, upstreams,
        tmp_path):
    """RFC 5321 5.1, 4.1.3: a recipient at an address literal goes to that
    address, port 25 (refused here: a deferral naming it), with no DNS
    query; an mx-hosts entry for the literal says where it goes instead."""
    up = upstreams()
    table = write(str(tmp_path / "mxhosts"), "[127.0.0.16] 10 127.0.0.1:%d\n"
        % up.port)
    srv, queries = mx_dns({}, "mx-hosts <mxh>",
        ("table mxh file:%s" % table,))
    submit(srv, "alice@example.org", ["x@[127.0.0.15]"], subject="v4")
    submit(srv, "alice@example.org", ["y@[IPv6:::1]"], subject="v6")
    submit(srv, "alice@example.org", ["z@[127.0.0.16]"], subject="table")
    ev, why = first_outcome(srv, "x@[127.0.0.15]")
    assert ev == "deferred" and why.startswith(refused_at("127.0.0.15")), \
        (ev, why)
    ev, why = first_outcome(srv, "y@[ipv6:::1]")
    assert ev == "deferred" and why.startswith("connect ::1["), (ev, why)
    wait_for(up.messages, timeout=10, what="the mx-hosts entry's delivery")
    assert rcpts_at(up) == ["z@[127.0.0.16]"]
    assert queries() == [], queries()
    assert srv.maildir("alice") == [], "a bounce to alice"


def test_mx_host_that_is_this_server_loops_back(make_postern, upstreams,
        tmp_path):
    """RFC 5321 5.1: an MX host that is one of our own listeners goes, and
    every host not more preferred with it.  With none left the message
    bounces at once, 5.4.6, accepted once (not relayed to ourselves until
    the Received: count stops it); the host more preferred still gets
    its message."""
    up = upstreams()
    srv = make_postern(extra=FAST + ("table mxh file:%s" % (tmp_path /
        "mxhosts"), "action out mx mx-hosts <mxh> timeout connect 2s"),
        rules=(LOCAL_RULE, "match from local action out"), start=False)
    write(str(tmp_path / "mxhosts"),
        "loop.test 10 127.0.0.1:%d, 20 127.0.0.1:%d\n"
        "first.test 5 127.0.0.1:%d, 10 127.0.0.1:%d\n"
        % (srv.port, up.port, up.port, srv.port))
    srv.start()
    submit(srv, "alice@example.org", ["u@loop.test"], subject="loop")
    assert first_outcome(srv, "u@loop.test") == ("failed", "5.4.6 mail "
        "for loop.test loops back to myself")
    submit(srv, "alice@example.org", ["v@first.test"], subject="first")
    wait_for(up.messages, timeout=10, what="delivery to the host before us")
    assert rcpts_at(up) == ["v@first.test"]
    wait_for(lambda: spool_empty(srv), timeout=10, what="an empty spool")
    assert len([kv for kv, _ in log_events(srv, "accepted")]) == 2, \
        srv.log()[-2000:]


def test_mx_of_an_idn_domain_is_asked_for_by_its_a_label(make_postern):
    """RFC 5891 5: the MX query for j\u00f6rg@b\u00fccher.example names
    xn--bcher-kva.example, which the zone has (a null MX here, so the
    outcome is final and says so): not the UTF-8 name, which would be
    NXDOMAIN.  The log still names the domain as the client wrote it."""
    dport = free_port()
    dns = Proc([os.path.join(DATA, "dnsd.py"), "--port", str(dport),
        "--zone", json.dumps({"xn--bcher-kva.example": {"MX": [[0, "."]]}})])
    try:
        srv = make_postern(extra=FAST + (
            "action out mx resolver 127.0.0.1:%d timeout connect 2s" % dport,),
            rules=(LOCAL_RULE, "match from local action out"))
        with srv.session() as c:
            c.hello()
            send_message(c, "alice@example.org", ["j\u00f6rg@b\u00fccher."
                "example"], UTF8_BODY, " SMTPUTF8 BODY=8BITMIME")
        failed = wait_for(lambda: [kv for kv, _ in log_events(srv, "failed")
            if kv.get("action") == "mx"], timeout=10,
            what="the final outcome of the MX lookup")
        assert failed[0]["why"] == "5.1.10 domain b\\xc3\\xbccher.example " \
            "accepts no mail (null MX, RFC 7505)", failed
    finally:
        dns.stop()


def test_mx_hosts_keys_take_either_spelling(make_postern, upstreams,
        tmp_path):
    """An mx-hosts entry written with UTF-8 labels serves the A-label form
    of the domain and the UTF-8 form with capitals (M\u00dcLLER is
    m\u00fcller), and one written as A-labels the UTF-8 form."""
    up = upstreams("--smtputf8")
    table = write(str(tmp_path / "mxhosts"),
        "b\u00fccher.example 10 127.0.0.1:%d\n"
        "m\u00fcller.example 10 127.0.0.1:%d\n"
        "xn--caf-dma.example 10 127.0.0.1:%d\n" % ((up.port,) * 3))
    srv = make_postern(extra=FAST + ("table mxh file:%s" % table,
        "action out mx mx-hosts <mxh> timeout connect 2s"),
        rules=(LOCAL_RULE, "match from local action out"))
    submit(srv, "alice@example.org", ["a@xn--bcher-kva.example"], subject="a")
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["b@caf\u00e9.example",
            "c@M\u00dcLLER.example"], UTF8_BODY, " SMTPUTF8 BODY=8BITMIME")
    settle(srv, lambda: len(up.messages()), 3, "mx-hosts")
    assert sorted(r for env, _ in up.messages() for r in env["rcpt"]) == [
        "a@xn--bcher-kva.example", "b@caf\u00e9.example",
        "c@m\u00dcller.example"]	# the parser folds ASCII case only


# ----- delivery tables that do not answer ------------------------------------

def first_outcome(srv, rcpt):
    """(event, why) of RCPT's first attempt that did not deliver it."""
    def outcomes():
        return [(ev, kv["why"]) for ev in ("deferred", "failed")
            for kv, _ in log_events(srv, ev) if kv.get("rcpt") == "<%s>"
            % rcpt]
    return wait_for(outcomes, timeout=15, what="an attempt at " + rcpt)[0]


def test_mx_hosts_table_down_defers_and_never_asks_dns(make_postern,
        upstreams, pg):
    """An mx-hosts table whose PostgreSQL is down has no answer, not "no
    entry": the recipient waits (4.4.3, naming the table) instead of going
    to DNS, which says NXDOMAIN here and would bounce a message postern
    has accepted.  Once the table answers, the message goes where it says."""
    up = upstreams()
    pg.sql("CREATE TABLE mxt (d text PRIMARY KEY, v text)")
    pg.sql("INSERT INTO mxt VALUES ('dest.test', '10 127.0.0.1:%d')"
        % up.port)
    dport = free_port()
    dns = Proc([os.path.join(DATA, "dnsd.py"), "--port", str(dport),
        "--zone", "{}"])
    try:
        srv = make_postern(extra=FAST + (
            'table mxt pgsql:"%s" query "SELECT v FROM mxt WHERE d = $1" '
            'timeout 2s cache off negative-cache off' % pg.conninfo(),
            "action out mx resolver 127.0.0.1:%d mx-hosts <mxt> "
            "timeout connect 2s" % dport),
            rules=(LOCAL_RULE, "match from local action out"))
        pg.ctl("stop")
        submit(srv, "alice@example.org", ["x@dest.test"], subject="held")
        assert first_outcome(srv, "x@dest.test") == ("deferred", "4.4.3 "
            "mx-hosts <mxt>: the table did not answer for dest.test")
        assert srv.maildir("alice") == [], "a bounce to alice"
        pg.ctl("start")
        wait_for(up.messages, timeout=15, what="delivery once the "
            "table answers")
        assert rcpts_at(up) == ["x@dest.test"]
    finally:
        dns.stop()


def test_credential_tables_down_say_so(make_postern, pg):
    """A relay's auth table and a POP pass-table that do not answer defer
    with that reason, not "no credentials" for keys the table holds."""
    pg.sql("CREATE TABLE creds (k text PRIMARY KEY, v text)")
    pg.sql("INSERT INTO creds VALUES ('127.0.0.1', 'alice s3cret'), "
        "('default', 'bob pw'), ('popper', 'pw0rd')")
    never = free_port()
    srv = make_postern(extra=FAST + (
        'table creds pgsql:"%s" query "SELECT v FROM creds WHERE k = $1" '
        'timeout 2s cache off negative-cache off' % pg.conninfo(),
        'action viaauth relay "smtp://127.0.0.1:%d" auth <creds>' % never,
        'action viapop relay "smtp://127.0.0.1:%d" pop "pop3://127.0.0.1:%d"'
        ' user popper pass-table <creds>' % (never, never)),
        rules=(LOCAL_RULE, "match to domain auth.test action viaauth",
            "match to domain pop.test action viapop"))
    pg.ctl("stop")
    submit(srv, "alice@example.org", ["a@auth.test", "p@pop.test"])
    assert first_outcome(srv, "a@auth.test") == ("deferred",
        "4.3.0 auth <creds>: the table did not answer")
    assert first_outcome(srv, "p@pop.test") == ("deferred",
        "4.3.0 POP3: pass-table <creds> did not answer")


# ----- a relay's AUTH --------------------------------------------------------

def test_auth_entry_without_password_defers(make_postern, upstreams,
        tmp_path):
    """An auth table entry with a user name and no password is a mistake
    in the table: the message waits, the reason saying so, and no AUTH
    with an empty password goes up.  Once the entry is mended it goes."""
    up = upstreams.scripted(ehlo=("AUTH PLAIN LOGIN",))
    creds = write(str(tmp_path / "creds"), "127.0.0.1 relayuser\n")
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d" auth <creds>' % up.port,
        extra=("table creds file:%s" % creds,))
    submit(srv, "alice@example.org", ["bob@remote.test"])
    assert first_outcome(srv, "bob@remote.test") == ("deferred",
        "4.7.8 auth table entry for 127.0.0.1 has no password")
    assert up.events == [] and up.auth_lines == [], up.events
    write(creds, "127.0.0.1 relayuser s3cret\n")
    wait_for(up.count, timeout=15, what="delivery once the entry has a "
        "password")
    assert up.logins == [("relayuser", "s3cret")]


def test_pop_pass_table_entry_without_password_defers(make_postern,
        tmp_path):
    never = free_port()
    pw = write(str(tmp_path / "poppass"), "popper\n")
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d" pop "pop3://127.0.0.1:%d" '
        'user popper pass-table <poppass>' % (never, never),
        extra=("table poppass file:%s" % pw,))
    submit(srv, "alice@example.org", ["bob@remote.test"])
    assert first_outcome(srv, "bob@remote.test") == ("deferred",
        "4.7.8 POP3: pass-table entry for popper has no password")


@pytest.mark.parametrize("mech,pass_len,want_lines", [
    # "AUTH PLAIN " + 496 octets of base64 + CRLF: 509, the longest fit.
    ("PLAIN", 361, [509]),
    # 513 octets would pass 512: the response goes on a line of its own.
    ("PLAIN", 362, [12, 502]),
    ("PLAIN", 400, [12, 550]),
    # LOGIN never puts a secret on the command line.
    ("LOGIN", 400, [12, 14, 538]),
])
def test_auth_response_too_long_for_the_command_line(make_postern,
        upstreams, tmp_path, mech, pass_len, want_lines):
    """RFC 4954 4: an initial response that would make the AUTH command
    longer than 512 octets (RFC 5321 4.5.3.1.4) waits for the server's 334
    instead; an upstream that enforces the limit takes the message."""
    up = upstreams.scripted(ehlo=("AUTH " + mech,))
    up.line_max = 512
    password = "P" * pass_len
    creds = write(str(tmp_path / "creds"), "127.0.0.1 relayuser %s\n"
        % password)
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d" auth <creds>' % up.port,
        extra=("table creds file:%s" % creds,))
    submit(srv, "alice@example.org", ["bob@remote.test"])
    settle(srv, up.count, 1, "AUTH %s with a %d-octet password"
        % (mech, pass_len))
    assert [len(l) for l in up.auth_lines] == want_lines, up.auth_lines
    if len(want_lines) > 1:
        assert up.auth_lines[0] == b"AUTH %s\r\n" % mech.encode()
    assert up.logins == [("relayuser", password)]


# ----- POP-before-SMTP, per-sender accounts ------------------------------------

def pop_relay(make_postern, upstreams, tmp_path, pop_opts, *extra):
    """An upstream with a POP server for popper, and a postern relaying to
    it after a POP login with POP_OPTS: (upstream, postern)."""
    pport = free_port()
    up = upstreams("--pop-port", pport, "--pop-user", "popper",
        "--pop-pass", "pw0rd")
    pw = write(str(tmp_path / "poppass"), "popper pw0rd\n")
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d" pop "pop3://127.0.0.1:%d" '
        'user popper pass-table <poppass> %s' % (up.port, pport, pop_opts),
        extra=("table poppass file:%s" % pw,) + extra)
    return up, srv


def test_pop_before_smtp(make_postern, upstreams, tmp_path):
    up, srv = pop_relay(make_postern, upstreams, tmp_path, "pop-interval 1h")
    submit(srv, "alice@example.org", ["bob@remote.test"], subject="pop1")
    wait_for(up.messages, timeout=10, what="delivery after the POP login")
    submit(srv, "alice@example.org", ["bob@remote.test"], subject="pop2")
    wait_for(lambda: len(up.messages()) == 2, timeout=10, what="second one")
    settle(srv, lambda: len(up.messages()), 2, "pop-before-smtp")
    with open(os.path.join(up.out, "pop.log")) as f:
        logins = f.read().split("\n")
    # One login serves both within pop-interval.
    assert [l for l in logins if l] == ["login popper"], logins
    assert "pw0rd" not in srv.log()


def test_pop_interval_0_logs_in_before_every_delivery(make_postern,
        upstreams, tmp_path):
    up, srv = pop_relay(make_postern, upstreams, tmp_path, "pop-interval 0")
    for i in range(2):
        submit(srv, "alice@example.org", ["bob@remote.test"],
            subject="pop%d" % i)
        wait_for(lambda: len(up.messages()) == i + 1, timeout=10,
            what="delivery %d" % i)
    with open(os.path.join(up.out, "pop.log")) as f:
        logins = [l for l in f.read().split("\n") if l]
    assert logins == ["login popper"] * 2, logins


def test_per_sender_accounts_and_header_rewriting(make_postern, upstreams):
    work = upstreams()
    other = upstreams()
    srv = make_postern(extra=FAST + (
        'account work relay "smtp://127.0.0.1:%d" '
        'rewrite return-path bounces@example.net '
        'rewrite reply-to "Alice <alice@example.net>" '
        'rewrite from "Alice Work <alice@example.net>"' % work.port,
        'account other relay "smtp://127.0.0.1:%d"' % other.port,
        "action out relay-by-sender { alice@example.org: work, "
        "@partner.test: work, default: other }"),
        rules=(LOCAL_RULE, "match from local action out"))
    body = ("Return-Path: <old@example.org>\r\nFrom: Alice <alice@example.org>"
        "\r\nReply-To: old@example.org\r\nTo: bob@remote.test\r\n"
        "Subject: rewritten\r\n\r\nFrom: not a header\r\n")
    submit(srv, "alice@example.org", ["bob@remote.test"], body=body)
    submit(srv, "Zed@PARTNER.test", ["bob@remote.test"], subject="domain key")
    submit(srv, "carol@example.org", ["bob@remote.test"], body=body)
    wait_for(lambda: len(work.messages()) == 2 and other.messages(),
        timeout=10, what="the three relayed messages")
    settle(srv, lambda: len(work.messages()) + len(other.messages()), 3,
        "relay-by-sender")
    # (The server keeps the local part and lower-cases the domain.)
    by_sender = {e["from"].lower(): m for e, m in work.messages()}
    assert set(by_sender) == {"alice@example.org", "zed@partner.test"}
    m = by_sender["alice@example.org"].replace(b"\r\n", b"\n")
    assert m.startswith(b"Return-Path: <bounces@example.net>\n"), m[:300]
    h = headers_of(m)
    assert h["return-path"] == ["<bounces@example.net>"], h
    assert h["reply-to"] == ["Alice <alice@example.net>"], h
    assert h["from"] == ["Alice Work <alice@example.net>"], h
    assert m.endswith(b"\n\nFrom: not a header\n"), m[-100:]
    (cenv, cm), = other.messages()
    assert cenv["from"] == "carol@example.org"
    ch = headers_of(cm.replace(b"\r\n", b"\n"))
    assert ch["from"] == ["Alice <alice@example.org>"]
    assert ch["reply-to"] == ["old@example.org"]


def test_per_sender_keys_take_a_domain_in_any_spelling(make_postern,
        upstreams):
    """relay-by-sender compares domains as a match rule does: an @domain
    key with UTF-8 labels holds for the sender's A-label and for its
    U-label in capitals, an address key written with the A-label for the
    U-label; another local part of that domain goes to the default."""
    work, other = upstreams("--smtputf8"), upstreams("--smtputf8")
    srv = make_postern(extra=FAST + (
        'account work relay "smtp://127.0.0.1:%d"' % work.port,
        'account other relay "smtp://127.0.0.1:%d"' % other.port,
        "action out relay-by-sender { @b\u00fccher.example: work, "
        "alice@xn--caf-dma.example: work, default: other }"),
        rules=(LOCAL_RULE, "match from local action out"))
    senders = ["x@xn--bcher-kva.example", "y@B\u00dcCHER.example",
        "alice@caf\u00e9.example", "bob@caf\u00e9.example"]
    with srv.session() as c:
        c.hello()
        for sender in senders:
            send_message(c, sender, ["bob@remote.test"], "Subject: by "
                "sender\r\n\r\nhello upstream\r\n", " SMTPUTF8")
    settle(srv, lambda: len(work.messages()) + len(other.messages()), 4,
        "relay-by-sender")
    # (The parser folds the domain's ASCII case only.)
    assert sorted(e["from"] for e, _m in work.messages()) == [
        "alice@caf\u00e9.example", "x@xn--bcher-kva.example",
        "y@b\u00dccher.example"], srv.log()[-2000:]
    assert [e["from"] for e, _m in other.messages()] == [
        "bob@caf\u00e9.example"]


def test_rewrite_replaces_fields_in_the_obsolete_form(make_postern,
        upstreams):
    """A field written "Name :" (blanks before the colon, RFC 5322 4.5.3)
    is the field it names: a rewrite replaces it in place or drops it, so
    the message goes out with one From: and one Reply-To: (RFC 5322 3.6)."""
    up = upstreams()
    srv = make_postern(extra=FAST + (
        'action out relay "smtp://127.0.0.1:%d" '
        'rewrite return-path bounces@example.net '
        'rewrite reply-to "R <r@example.net>" '
        'rewrite from "F <f@example.net>"' % up.port,),
        rules=(LOCAL_RULE, "match from local action out"))
    submit(srv, "alice@example.org", ["bob@remote.test"], body=(
        "Return-Path : <old@example.org>\r\nSubject: obsolete\r\n"
        "Reply-To : old@example.org\r\nFrom\t: Old <old@example.org>\r\n"
        "\r\nFrom : not a header\r\n"))
    settle(srv, lambda: len(up.messages()), 1, "the rewrite")
    (_env, m), = up.messages()
    m = m.replace(b"\r\n", b"\n")
    head = m.split(b"\n\n", 1)[0]
    assert b"old@example.org" not in head, m
    h = headers_of(m)
    assert h["return-path"] == ["<bounces@example.net>"], h
    assert h["reply-to"] == ["R <r@example.net>"], h
    assert h["from"] == ["F <f@example.net>"], h
    assert m.endswith(b"\n\nFrom : not a header\n"), m[-100:]



# ----- forward and its loop guard ----------------------------------------------

def test_forward_and_loop_detection(make_postern, upstreams, tmp_path):
    up = upstreams()
    table = write(str(tmp_path / "mxhosts"),
        "remote.test 10 127.0.0.1:%d\n" % up.port)
    srv = make_postern(extra=FAST + ("table mxh file:%s" % table,
        'action fwd forward "target@remote.test" mx-hosts <mxh>'),
        rules=('match to "pass@example.org" action fwd', LOCAL_RULE))

    def msg(hops, subject):
        return "".join("Received: from h%d.test by h%d.test; "
            "Mon, 23 Nov 2026 10:00:00 +0000\r\n" % (i, i + 1)
            for i in range(hops)) + ("From: alice@example.org\r\n"
            "Subject: %s\r\n\r\nbody\r\n" % subject)
    submit(srv, "alice@example.org", ["pass@example.org"],
        body=msg(3, "fine"))
    # 60 + postern's own Received: is over the forward limit of 50.  The
    # SMTP session accepts it (the count is checked at delivery), so the
    # loop surfaces as a bounce with status 5.4.6.
    submit(srv, "alice@example.org", ["pass@example.org"],
        body=msg(60, "looping"))
    wait_for(up.messages, timeout=10, what="the forwarded message")
    _msg, parts = bounce_of(srv, "alice")
    r = parts[1].get_payload()[1]
    assert r["Status"] == "5.4.6", str(r)
    assert r["Final-Recipient"] == "rfc822; pass@example.org", str(r)
    assert "loop" in r["Diagnostic-Code"], str(r)
    assert "Subject: looping" in parts[2].get_payload()
    settle(srv, lambda: len(up.messages()), 1, "forward")
    env, eml = up.messages()[0]
    assert env["rcpt"] == ["target@remote.test"]
    assert env["from"] == "alice@example.org"
    assert b"Subject: fine" in eml


FWD_RCPTS = ["a@fwd.example", "b@fwd.example", "c@fwd.example"]


def forward_server(make_postern, up, tmp_path):
    """Recipients in fwd.example go to x@remote.test, d@fwd2.example to
    y@remote.test, both through the upstream up."""
    table = write(str(tmp_path / "mxhosts"),
        "remote.test 10 127.0.0.1:%d\n" % up.port)
    return make_postern(extra=FAST + ("table mxh file:%s" % table,
        'action fwd forward "x@remote.test" mx-hosts <mxh>',
        'action fwd2 forward "y@remote.test" mx-hosts <mxh>'),
        rules=("match to domain fwd.example action fwd",
            "match to domain fwd2.example action fwd2", LOCAL_RULE))


def rcpt_events(srv, event, qid):
    """The recipients of qid's EVENT lines, sorted (duplicates kept)."""
    return sorted(kv["rcpt"] for kv, _ in log_events(srv, event)
        if kv.get("qid") == qid)


def test_forward_sends_one_copy_for_all_its_recipients(make_postern,
        upstreams, tmp_path):
    """A message's recipients routed to one forward are one copy to its
    address, one transaction whose 250 delivers each of them; another
    forward action is a copy of its own."""
    up = upstreams.scripted()
    srv = forward_server(make_postern, up, tmp_path)
    qid = submit(srv, "alice@example.org", FWD_RCPTS + ["d@fwd2.example"])
    settle(srv, up.count, 2, "forward to four")
    assert sorted(r for _m, rcpts, _d in up.stored for r in rcpts) == \
        ["x@remote.test", "y@remote.test"], up.stored
    assert up.events.count("data:250") == 2, up.events
    assert rcpt_events(srv, "delivered", qid) == ["<%s>" % r for r in
        FWD_RCPTS + ["d@fwd2.example"]], srv.log()[-2000:]


def test_forward_deferred_then_accepted_is_still_one_copy(make_postern,
        upstreams, tmp_path):
    """A 451 to the one copy defers each recipient once; they are due
    together again, and the retry is one copy too."""
    up = upstreams.scripted(["451 4.3.0 try again later"])
    srv = forward_server(make_postern, up, tmp_path)
    qid = submit(srv, "alice@example.org", FWD_RCPTS)
    wait_for(lambda: up.count() >= 1, timeout=15, what="the retry")
    settle(srv, up.count, 1, "451 then 250")
    assert [e for e in up.events if e.startswith("data:")] == \
        ["data:451", "data:250"], up.events
    assert up.stored[0][1] == ["x@remote.test"], up.stored
    want = ["<%s>" % r for r in FWD_RCPTS]
    assert rcpt_events(srv, "deferred", qid) == want, srv.log()[-2000:]
    assert rcpt_events(srv, "delivered", qid) == want, srv.log()[-2000:]
    assert not srv.maildir("alice"), "a bounce for a temporary failure"


def test_forward_refused_bounces_each_recipient_once(make_postern, upstreams,
        tmp_path):
    """A 550 to the one copy fails each recipient: one DSN names each
    original recipient once, none the forward's address."""
    up = upstreams.scripted(["550 5.7.1 not wanted"])
    srv = forward_server(make_postern, up, tmp_path)
    qid = submit(srv, "alice@example.org", FWD_RCPTS)
    _msg, parts = bounce_of(srv, "alice")
    finals = sorted(r["Final-Recipient"] for r in
        parts[1].get_payload()[1:])
    assert finals == ["rfc822; %s" % r for r in FWD_RCPTS], finals
    assert [e for e in up.events if e.startswith("data:")] == \
        ["data:550"], up.events
    assert rcpt_events(srv, "failed", qid) == ["<%s>" % r for r in
        FWD_RCPTS], srv.log()[-2000:]


# ----- no open relay ------------------------------------------------------------

def relay_attempt(srv, sender="spammer@evil.test", rcpt="victim@foreign.test"):
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<%s>" % sender)
        c.expect(250)
        c.send("RCPT TO:<%s>" % rcpt)
        return c.read_reply()


SHIPPED = sorted(set(glob.glob(os.path.join(REPO, "etc", "**", "*.conf"),
    recursive=True)) | set(glob.glob(os.path.join(REPO, "etc", "*.conf"))))


@pytest.mark.parametrize("path", SHIPPED,
    ids=[os.path.relpath(p, REPO) for p in SHIPPED])
def test_shipped_configs_are_no_open_relay(make_postern, path):
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    listens = [i for i, l in enumerate(lines) if l.startswith("listen ")]
    assert listens, "no listen line in %s" % path
    # One listener on our port, with the first one's options kept.
    lines[listens[0]] = re.sub(r"^listen \S+", "listen 127.0.0.1:{port}",
        lines[listens[0]])
    text = "\n".join(l for i, l in enumerate(lines)
        if i == listens[0] or i not in listens)
    srv = make_postern(config=text)
    for sender in ("spammer@evil.test", "postmaster@localhost", ""):
        r = relay_attempt(srv, sender)
        assert (r.code, r.esc) == (550, "5.7.1"), "%s: %r" % (path, r)


def test_from_local_relays_and_from_ip_does_not(make_postern, upstreams,
        tmp_path):
    up = upstreams()
    act = 'action out relay "smtp://127.0.0.1:%d"' % up.port
    srv = relay_server(make_postern, act)
    r = relay_attempt(srv)
    assert r.code == 250, r
    other = make_postern(extra=FAST + (act,),
        rules=(LOCAL_RULE, "match from ip 10.0.0.0/8 action out"))
    r = relay_attempt(other)
    assert (r.code, r.esc) == (550, "5.7.1"), r
    r = relay_attempt(other, rcpt="bob@example.org")
    assert r.code == 250, r


# ----- postern queue and postern send --------------------------------------------

@pytest.fixture
def slow_relay(make_postern):
    """A server whose relay target is down and that retries only hourly."""
    def make(port):
        return make_postern(extra=("queue retry-min 1h", "queue retry-max 1h",
            'action out relay "smtp://127.0.0.1:%d" timeout connect 2s'
            % port), rules=(LOCAL_RULE, "match from local action out"))
    return make


def test_postern_queue_commands(slow_relay, upstreams):
    port = free_port()
    srv = slow_relay(port)
    a = submit(srv, "alice@example.org", ["bob@remote.test"], subject="qa")
    b = submit(srv, "alice@example.org", ["carol@remote.test"], subject="qb")
    c = submit(srv, "alice@example.org", ["dave@remote.test"], subject="qc")

    def all_deferred():
        q = queue_json(srv)
        return all(q.get(x) and q[x]["recipients"][0]["status"] == "deferred"
            for x in (a, b, c)) and q
    q = wait_for(all_deferred, timeout=10, what="three deferred messages")
    ra = q[a]["recipients"][0]
    assert ra["address"] == "bob@remote.test" and ra["action"] == "relay"
    assert ra["attempts"] == 1 and ra["last_error"], ra
    assert q[a]["sender"] == "alice@example.org" and not q[a]["held"]

    r = queue_cli(srv, "list")
    assert r.returncode == 0 and a in r.stdout and b in r.stdout, r
    assert "bob@remote.test" in r.stdout and "3 Requests." in r.stdout, \
        r.stdout
    r = queue_cli(srv, "show", a)
    assert r.returncode == 0 and "bob@remote.test" in r.stdout, r
    r = queue_cli(srv, "show", "--json", a)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["queue_id"] == a

    r = queue_cli(srv, "hold", a)
    assert r.returncode == 0, r.stderr
    assert queue_json(srv)[a]["held"] is True
    assert re.search(re.escape(a) + "!", queue_cli(srv, "list").stdout)

    r = queue_cli(srv, "delete", b)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: b not in queue_json(srv), what="b deleted")

    up = upstreams(port=port)
    r = queue_cli(srv, "flush")
    assert r.returncode == 0, r.stderr
    # Held: the flush sends c but not a.  Both were forced in one step; once
    # c has left the queue, a stop waits for any delivery still running, so
    # a wrongly sent a is at the upstream by then.
    wait_for(lambda: c not in queue_json(srv), timeout=10,
        what="the flush of c")
    srv.restart()
    wait_for(lambda: os.path.exists(srv.path("spool", "control.sock")),
        timeout=15, what="the control socket after the restart")
    assert [m[0]["rcpt"] for m in up.messages()] == [["dave@remote.test"]], \
        "a held message was sent"
    r = queue_cli(srv, "release", a)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(up.messages()) == 2, timeout=10,
        what="delivery after release")
    settle(srv, lambda: len(up.messages()), 2, "queue commands")
    assert up.messages()[1][0]["rcpt"] == ["bob@remote.test"]
    assert not srv.maildir("alice"), "delete must not bounce"
    assert queue_cli(srv, "list").stdout.strip() == "Mail queue is empty"
    assert queue_cli(srv, "show", "NOSUCHID").returncode == 1


def held_at_the_first_of_three(make_postern, upstreams):
    """A message to three relay recipients, the first through an action of
    its own whose dot the upstream holds, the other two through another
    (one transaction, after the first); bad@ is refused (550).  (srv, up,
    qid)."""
    up = upstreams.scripted(rcpt_replies={
        "bad@remote.test": "550 5.1.1 no such user"})
    up.stall_data = True
    relay = 'relay "smtp://127.0.0.1:%d"' % up.port
    srv = relay_server(make_postern, "action out " + relay,
        extra=("action first " + relay,),
        rules=(LOCAL_RULE, 'match to "stall@remote.test" action first',
            "match from local action out"))
    wait_for(lambda: os.path.exists(srv.path("spool", "control.sock")),
        timeout=15, what="the control socket")
    qid = submit(srv, "alice@example.org", ["stall@remote.test",
        "bad@remote.test", "good@remote.test"], subject="three")
    wait_for(up.stalled.is_set, timeout=10, what="the upstream holding the dot")
    return srv, up, qid


def test_delete_during_a_delivery_ends_the_message_after_it(make_postern,
        upstreams):
    """delete while a recipient is being delivered: that delivery ends,
    then the other recipients get no attempt and the sender no DSN."""
    srv, up, qid = held_at_the_first_of_three(make_postern, upstreams)
    r = queue_cli(srv, "delete", qid)
    assert r.returncode == 0, r.stderr
    up.released.set()
    settle(srv, up.count, 1, "a delete during a delivery")
    assert [rc for _m, rc, _d in up.stored] == [["stall@remote.test"]]
    (kv, _line), = log_events(srv, "halted")
    assert (kv["qid"], kv["why"], kv["pending"]) == (qid, "delete", "2"), kv
    assert not log_events(srv, "failed") and not log_events(srv, "dsn")
    assert not srv.maildir("alice"), "delete must not bounce"


def test_hold_during_a_delivery_keeps_the_rest_waiting(make_postern,
        upstreams):
    """hold while a recipient is being delivered: that delivery ends, the
    others wait untried (no DSN) until release."""
    srv, up, qid = held_at_the_first_of_three(make_postern, upstreams)
    r = queue_cli(srv, "hold", qid)
    assert r.returncode == 0, r.stderr
    up.released.set()
    wait_for(lambda: log_events(srv, "halted") or up.count() > 1 or
        srv.maildir("alice"), timeout=10, what="the end of the run")
    assert up.count() == 1 and not srv.maildir("alice"), \
        "a held message went on: %s" % [rc for _m, rc, _d in up.stored]
    (kv, _line), = log_events(srv, "halted")
    assert (kv["why"], kv["pending"]) == ("hold", "2"), kv
    m = queue_json(srv)[qid]
    assert m["held"] is True
    assert [(x["address"], x["status"], x["attempts"]) for x in
        m["recipients"]] == [("stall@remote.test", "delivered", 0),
        ("bad@remote.test", "pending", 0), ("good@remote.test", "pending", 0)]
    r = queue_cli(srv, "release", qid)
    assert r.returncode == 0, r.stderr
    _m, parts = bounce_of(srv, "alice")
    assert parts[1].get_payload()[1]["Final-Recipient"] == \
        "rfc822; bad@remote.test"
    settle(srv, up.count, 2, "release after a hold during a delivery")
    assert [rc for _m, rc, _d in up.stored] == [["stall@remote.test"],
        ["good@remote.test"]]


def test_postern_send_t_to_a_relay(make_postern, upstreams):
    up = upstreams()
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    msg = (b"From: Alice <alice@example.org>\nTo: bob@remote.test\n"
        b"Cc: carol@remote.test\nBcc: hidden@remote.test\n"
        b"Subject: via send\n\nbody line\n.\nafter dot\n")
    # The port may answer before the queue listens on its control socket.
    wait_for(lambda: os.path.exists(srv.path("spool", "control.sock")),
        timeout=15, what="the control socket")
    r = subprocess.run([binary(), "send", "-C", srv.conf, "-t", "-f",
        "alice@example.org"], input=msg, cwd=srv.dir, timeout=10,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr
    wait_for(up.messages, timeout=10, what="the submitted message upstream")
    wait_for(lambda: len(rcpts_at(up)) == 3, timeout=10,
        what="all three recipients")
    settle(srv, lambda: len(rcpts_at(up)), 3, "postern send -t")
    assert rcpts_at(up) == ["bob@remote.test", "carol@remote.test",
        "hidden@remote.test"]
    env, eml = up.messages()[0]
    assert env["from"] == "alice@example.org"
    h = headers_of(eml.replace(b"\r\n", b"\n"))
    assert "bcc" not in h and h["subject"] == ["via send"]
    assert h["received"][0].startswith("from local user"), h["received"]
    assert eml.endswith(b"body line\r\n.\r\nafter dot\r\n"), eml[-80:]


# ----- a second postern as the upstream ----------------------------------------

def test_relay_to_a_second_postern_with_starttls_and_auth(make_postern,
        tmp_path):
    """postern relays to postern: STARTTLS verified against the test CA,
    AUTH PLAIN against the far side's crypt(3) table, which only takes
    remote.test mail from authenticated clients."""
    ca, cert, key = make_ca(tmp_path / "ca")
    h = subprocess.run(["openssl", "passwd", "-6", "s3cret"], check=True,
        stdout=subprocess.PIPE, text=True, timeout=10).stdout.strip()
    write(str(tmp_path / "users"), "relayuser %s\n" % h)
    down = make_postern(config=make_config(
        ['tls cert "%s" key "%s"' % (cert, key),
         "table users file:%s" % (tmp_path / "users"), "auth <users>"],
        rules=["match from authenticated to domain remote.test "
            "action local"]).replace("listen 127.0.0.1:{port}",
        "listen 127.0.0.1:{port} auth"))
    creds = write(str(tmp_path / "creds"), "default relayuser s3cret\n")
    srv = relay_server(make_postern,
        'action out relay "smtp+starttls://127.0.0.1:%d" auth <creds> ca %s'
        % (down.port, ca), extra=("table creds file:%s" % creds,))
    qid = submit(srv, "alice@example.org", ["bob@remote.test"],
        subject="postern to postern")
    files = wait_for(lambda: down.maildir("bob"), timeout=10,
        what="delivery at the second postern; log:\n" + srv.log()[-1500:])
    settle(srv, lambda: len(down.maildir("bob")), 1, "postern to postern")
    data = read_bytes(files[0])
    ret, received, rest = split_delivered(data)
    assert ret == "Return-Path: <alice@example.org>"
    # The far side's Received: says TLS + AUTH; ours follows it.
    assert "with ESMTPSA" in received, received
    assert b"Subject: postern to postern" in rest
    assert qid.encode() in rest
    assert "s3cret" not in srv.log() and "s3cret" not in down.log()


# ----- what the next server cannot take unchanged --------------------------------

def test_8bit_and_size_refused_with_a_dsn_not_altered(make_postern, upstreams):
    """RFC 6152: 8-bit mail to a server without 8BITMIME, and RFC 1870:
    mail over the server's SIZE, fail permanently (5.6.3, 5.3.4) rather
    than being changed; nothing reaches those servers."""
    seven = upstreams("--no-8bitmime")
    small = upstreams("--size", "2000")
    srv = make_postern(extra=FAST + (
        'action seven relay "smtp://127.0.0.1:%d"' % seven.port,
        'action small relay "smtp://127.0.0.1:%d"' % small.port),
        rules=(LOCAL_RULE, "match from local to domain seven.test action seven",
            "match from local to domain small.test action small"))
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["x@seven.test"],
            "Subject: 8bit\r\n\r\ncaf\xe9\r\n".encode("latin-1"),
            " BODY=8BITMIME")
    _m, parts = bounce_of(srv, "alice")
    r = parts[1].get_payload()[1]
    assert (r["Final-Recipient"], r["Status"]) == ("rfc822; x@seven.test",
        "5.6.3"), str(r)
    submit(srv, "bob@example.org", ["y@small.test"],
        body="Subject: big\r\n\r\n" + ("z" * 70 + "\r\n") * 60)
    _m, parts = bounce_of(srv, "bob")
    r = parts[1].get_payload()[1]
    assert (r["Final-Recipient"], r["Status"]) == ("rfc822; y@small.test",
        "5.3.4"), str(r)
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert not seven.messages() and not small.messages()


def size_param(mail):
    """The SIZE= of a MAIL command, or None."""
    m = re.search(r" SIZE=(\d+)", mail)
    return int(m.group(1)) if m else None


def bounce_status(srv, user):
    """The Status of the one recipient in USER's one DSN."""
    _m, parts = bounce_of(srv, user)
    return parts[1].get_payload()[1]["Status"]


def test_size_counts_no_stuffing_dots_at_max_and_max_plus_1(make_postern,
        upstreams):
    """RFC 1870 3: a message's size counts its CRLFs but not the dots that
    dot-stuffing doubles; that is the SIZE= declared and the size checked
    against the server's SIZE, which takes a message of exactly its SIZE."""
    ups = [upstreams.scripted(ehlo=["8BITMIME", "SIZE 100000"])
        for _ in range(3)]
    srv = make_postern(extra=FAST + tuple('action s%d relay '
        '"smtp://127.0.0.1:%d"' % (i, u.port) for i, u in enumerate(ups)),
        rules=(LOCAL_RULE,) + tuple("match from local to domain s%d.test "
            "action s%d" % (i, i) for i in range(3)))
    # 40 lines that start with ".", stuffed for the wire.
    body = "Subject: dots\r\n\r\n" + "".join("..line %02d\r\n" % i
        for i in range(40))
    submit(srv, "alice@example.org", ["x@s0.test"], body=body)
    wait_for(lambda: ups[0].count() == 1, timeout=10, what="the first copy")
    size = len(ups[0].stored[0][2])		# without the stuffing dots
    assert [size_param(m) for m in ups[0].mails] == [size], ups[0].mails
    # The same message (its Received: as long) to a server whose SIZE is
    # its size, and to one whose SIZE is one octet less.
    ups[1].ehlo[1] = "SIZE %d" % size
    ups[2].ehlo[1] = "SIZE %d" % (size - 1)
    submit(srv, "alice@example.org", ["x@s1.test"], body=body)
    submit(srv, "bob@example.org", ["x@s2.test"], body=body)
    assert bounce_status(srv, "bob") == "5.3.4"
    settle(srv, ups[1].count, 1, "the message of exactly SIZE")
    assert len(ups[1].stored[0][2]) == size
    assert [size_param(m) for m in ups[1].mails] == [size], ups[1].mails
    assert ups[2].count() == 0 and not ups[2].mails
    assert "message size %d exceeds" % size in srv.log()


def test_size_and_8bit_are_those_of_the_rewritten_message(make_postern,
        upstreams):
    """`rewrite` changes what the next server gets, so the SIZE and
    8BITMIME checks and the SIZE= and BODY= declared are of the message as
    rewritten: what a rewrite adds counts, what it replaces does not."""
    name = "Very Long Display Name " * 10
    grow = ('rewrite return-path bounces@example.net rewrite reply-to '
        '"%s<r@example.net>" rewrite from "%s<f@example.net>"' % (name, name))
    roomy = upstreams.scripted(ehlo=["8BITMIME", "SIZE 100000"])
    tight = upstreams.scripted(ehlo=["8BITMIME", "SIZE 700"])
    seven = upstreams.scripted(ehlo=["SIZE 100000"])	# no 8BITMIME
    srv = make_postern(extra=FAST + (
        'action roomy relay "smtp://127.0.0.1:%d" %s' % (roomy.port, grow),
        'action tight relay "smtp://127.0.0.1:%d" %s' % (tight.port, grow),
        'action add8 relay "smtp://127.0.0.1:%d" '
        'rewrite from "J\u00f6rg <f@example.net>"' % seven.port,
        'action drop8 relay "smtp://127.0.0.1:%d" '
        'rewrite from "Jorg <f@example.net>"' % seven.port),
        rules=(LOCAL_RULE,) + tuple("match from local to domain %s.test "
            "action %s" % (a, a) for a in ("roomy", "tight", "add8",
            "drop8")))
    body = "From: a@example.org\r\nSubject: small\r\n\r\nhi\r\n"
    submit(srv, "alice@example.org", ["x@roomy.test"], body=body)
    submit(srv, "bob@example.org", ["x@tight.test"], body=body)
    submit(srv, "carol@example.org", ["x@add8.test"], body=body)
    with srv.session() as c:
        c.hello()
        send_message(c, "dave@example.org", ["x@drop8.test"],
            "From: J\u00f6rg <j@example.org>\r\nSubject: 8\r\n\r\nhi\r\n",
            " BODY=8BITMIME")
    # Grown past 700 octets by the rewrite: declared as it went out, and
    # refused to the server that cannot take it (nothing sent there).
    wait_for(lambda: roomy.count() == 1, timeout=10, what="the rewritten copy")
    data = roomy.stored[0][2]
    assert b"From: %s<f@example.net>\r\n" % name.encode() in data
    assert len(data) > 700
    assert [size_param(m) for m in roomy.mails] == [len(data)], roomy.mails
    assert bounce_status(srv, "bob") == "5.3.4"
    # A rewrite that puts 8-bit text in is 8-bit content; one that takes
    # the only 8-bit text out leaves 7-bit content, sent without BODY=.
    assert bounce_status(srv, "carol") == "5.6.3"
    settle(srv, lambda: roomy.count() + seven.count(), 2, "the rewrites")
    assert tight.count() == 0 and not tight.mails
    (mail, _rcpts, data), = seven.stored
    assert mail == "dave@example.org"
    assert b"From: Jorg <f@example.net>\r\n" in data
    assert max(data) < 0x80, data
    assert seven.mails == ["MAIL FROM:<dave@example.org> SIZE=%d" % len(data)]


# ----- what a DSN says -------------------------------------------------------

UTF8_BODY = ("From: <j\u00f6rg@example.org>\r\nSubject: Gr\u00fc\u00dfe\r\n"
    "\r\nhallo\r\n")
# ASCII header fields, a UTF-8 body: sent with SMTPUTF8, it does not need it.
ASCII_UTF8_BODY = ("From: <bob@example.org>\r\nSubject: ascii header\r\n"
    "\r\nhall\u00f6\r\n")


def test_smtputf8_message_bounces_a_global_dsn(make_postern, upstreams):
    """RFC 6533: the DSN of a message sent with SMTPUTF8 is a global one,
    in UTF-8: the sender and the recipient as they are (not "j??rg"), the
    report as message/global-delivery-status with "utf-8" addresses in
    the utf-8-addr-unitext form ('+' as \\x{2B}), the headers returned as
    message/global-headers."""
    up = upstreams("--smtputf8", "--rcpt-code", "zo\u00eb+x@remote.test=550")
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    with srv.session() as c:
        c.hello()
        send_message(c, "j\u00f6rg@example.org", ["zo\u00eb+x@remote.test"],
            UTF8_BODY, " SMTPUTF8 BODY=8BITMIME")
    head, parts = report_of(srv, "j__rg")	# the folder's name is safe
    assert "\nTo: <j\u00f6rg@example.org>\n" in head, head
    assert "report-type=delivery-status;" in head, head
    assert [p["content-type"] for p, _ in parts] == [
        "text/plain; charset=utf-8", "message/global-delivery-status",
        "message/global-headers"], parts
    assert all(p["content-transfer-encoding"] == "8bit" for p, _ in parts)
    assert "<zo\u00eb+x@remote.test>: 550 5.0.0" in parts[0][1], parts[0][1]
    per_msg, per_rcpt = parts[1][1].split("\n\n")
    assert "X-Postern-Sender: utf-8; j\u00f6rg@example.org\n" in \
        per_msg + "\n", per_msg
    fields = dict(l.split(": ", 1) for l in per_rcpt.split("\n"))
    assert fields["Final-Recipient"] == \
        "utf-8; zo\u00eb\\x{2B}x@remote.test", per_rcpt
    assert (fields["Action"], fields["Status"]) == ("failed", "5.0.0")
    assert "Subject: Gr\u00fc\u00dfe" in parts[2][1], parts[2][1]
    wait_for(lambda: spool_empty(srv), what="an empty spool")


def test_smtputf8_message_with_ascii_addresses_bounces_a_plain_dsn(
        make_postern, upstreams):
    """RFC 6533 3: only an address that is not ASCII needs the global
    kinds.  A message that came with SMTPUTF8 from an ASCII sender to an
    ASCII recipient, with a UTF-8 Subject, is bounced in a plain DSN (RFC
    3464), its headers returned quoted-printable: 7-bit throughout, in the
    Maildir of a local sender, and at the server of a sender elsewhere
    that offers no SMTPUTF8, where a global DSN would fail (5.6.7) and,
    being from <>, be lost."""
    bad = upstreams("--smtputf8", "--rcpt-code", "bad@remote.test=550")
    plain = upstreams.scripted()		# 8BITMIME, no SMTPUTF8
    srv = make_postern(extra=FAST + (
        'action bad relay "smtp://127.0.0.1:%d"' % bad.port,
        'action plain relay "smtp://127.0.0.1:%d"' % plain.port),
        rules=(LOCAL_RULE,
            "match from local to domain remote.test action bad",
            "match to domain plain.test action plain"))
    for sender in ("alice@example.org", "ann@plain.test"):
        send_utf8(srv, sender, ["bad@remote.test"])
    # The local sender's notice: a plain report, every octet 7-bit.
    msg, parts = bounce_of(srv, "alice")
    raw = read_bytes(srv.maildir("alice")[0])
    assert max(raw) < 0x80, raw[:800]
    assert b"global" not in raw and b"8bit" not in raw.lower(), raw[:800]
    r = parts[1].get_payload()[1]
    assert r["Final-Recipient"] == "rfc822; bad@remote.test", str(r)
    assert r["Status"].startswith("5.") and "550" in r["Diagnostic-Code"]
    assert parts[2]["Content-Transfer-Encoding"] == "quoted-printable"
    assert "Subject: Gr\u00fc\u00dfe" in parts[2].get_payload(
        decode=True).decode("utf-8"), parts[2].get_payload()
    # The remote sender's notice reaches the server without SMTPUTF8.
    (mail, rcpts, data), = wait_for(lambda: plain.stored, timeout=15,
        what="the DSN at the server without SMTPUTF8")
    assert (mail, rcpts) == ("", ["ann@plain.test"])
    assert plain.mails == ["MAIL FROM:<>"], plain.mails
    assert max(data) < 0x80, data[:800]
    assert b"Content-Type: message/delivery-status\r\n" in data, data[:800]
    assert b"Final-Recipient: rfc822; bad@remote.test\r\n" in data
    assert b"Subject: Gr=C3=BC=C3=9Fe\r\n" in data, data
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert [kv for kv, _ in log_events(srv, "failed")
        if "5.6.7" in kv.get("why", "")] == []
    assert plain.count() == 1 and bad.messages() == []


def test_global_dsn_needs_smtputf8_on_its_way_out(make_postern, upstreams):
    """A global DSN to a UTF-8 sender elsewhere goes out with SMTPUTF8 and
    its UTF-8 header unchanged; to a server without SMTPUTF8 it fails
    (5.6.7, RFC 6531 3.4) like any such message, and nothing is sent."""
    bad = upstreams("--smtputf8", "--rcpt-code", "zo\u00eb@remote.test=550")
    utf = upstreams("--smtputf8")
    plain = upstreams.scripted()
    srv = make_postern(extra=FAST + (
        'action bad relay "smtp://127.0.0.1:%d"' % bad.port,
        'action utf relay "smtp://127.0.0.1:%d"' % utf.port,
        'action plain relay "smtp://127.0.0.1:%d"' % plain.port),
        rules=("match from local to domain remote.test action bad",
            "match to domain utf.test action utf",
            "match to domain plain.test action plain"))
    with srv.session() as c:
        c.hello()
        for sender in ("j\u00f6rg@utf.test", "j\u00f6rg@plain.test"):
            send_message(c, sender, ["zo\u00eb@remote.test"], UTF8_BODY,
                " SMTPUTF8 BODY=8BITMIME")
    env, eml = wait_for(lambda: utf.messages(), timeout=15,
        what="the DSN at the SMTPUTF8 server")[0]
    assert (env["from"], env["rcpt"]) == ("<>", ["j\u00f6rg@utf.test"]), env
    assert "SMTPUTF8" in env["options"].split(), env
    assert "\nTo: <j\u00f6rg@utf.test>\r\n".encode() in eml, eml[:600]
    assert b"Content-Type: message/global-delivery-status" in eml
    failed = wait_for(lambda: [kv for kv, _ in log_events(srv, "failed")
        if "5.6.7" in kv.get("why", "")], timeout=15,
        what="the DSN refused for want of SMTPUTF8")
    assert len(failed) == 1 and "plain.test" in failed[0]["rcpt"], failed
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert plain.count() == 0 and not any(e.startswith("data:")
        for e in plain.events), plain.events
    assert len(utf.messages()) == 1


def send_utf8(srv, sender, rcpts):
    """UTF8_BODY from SENDER, one message to each of RCPTS, with SMTPUTF8."""
    with srv.session() as c:
        c.hello()
        for rcpt in rcpts:
            send_message(c, sender, [rcpt], UTF8_BODY,
                " SMTPUTF8 BODY=8BITMIME")


def utf8_arrival(up, rcpt, subject, what):
    """The first message at UP: to RCPT alone, with SMTPUTF8 on its MAIL
    and "Subject: SUBJECT" as sent.  Returns its MAIL parameters."""
    env, eml = wait_for(lambda: up.messages(), timeout=15, what=what)[0]
    assert env["rcpt"] == [rcpt], env
    assert "SMTPUTF8" in env["options"].split(), env
    assert ("Subject: %s\r\n" % subject).encode() in eml, eml[:300]
    return env["options"].split()


def test_smtputf8_goes_on_as_received_and_is_left_off_only_if_not_needed(
        make_postern, upstreams):
    """RFC 6531 3.2, 3.4: a message that came with SMTPUTF8 goes on with
    SMTPUTF8 to a server that offers it.  To one that does not, it goes on
    without SMTPUTF8 when nothing in it needs it (ASCII addresses and
    header fields; an 8-bit body then needs 8BITMIME, 5.6.3 otherwise),
    and fails (5.6.7) with nothing sent when its header fields are UTF-8;
    its notice to the sender behind such a server, a plain one (ASCII
    addresses), goes there."""
    utf = upstreams("--smtputf8")
    plain = upstreams.scripted()		# 8BITMIME, no SMTPUTF8
    seven = upstreams.scripted(ehlo=())		# neither
    srv = make_postern(extra=FAST + (
        'action utf relay "smtp://127.0.0.1:%d"' % utf.port,
        'action plain relay "smtp://127.0.0.1:%d"' % plain.port,
        'action seven relay "smtp://127.0.0.1:%d"' % seven.port),
        rules=(LOCAL_RULE, "match to domain utf.test action utf",
            "match to domain plain.test action plain",
            "match to domain seven.test action seven"))
    send_utf8(srv, "a@plain.test", ["x@utf.test", "y@plain.test"])
    with srv.session() as c:
        c.hello()
        for rcpt in ("w@utf.test", "z@plain.test", "v@seven.test"):
            send_message(c, "bob@example.org", [rcpt], ASCII_UTF8_BODY,
                " SMTPUTF8 BODY=8BITMIME")
    got = wait_for(lambda: (lambda m: m if len(m) == 2 else None)(
        utf.messages()), timeout=15, what="both messages at the SMTPUTF8 "
        "server")
    assert sorted(env["rcpt"][0] for env, _ in got) == ["w@utf.test",
        "x@utf.test"], got
    for env, _ in got:
        assert "SMTPUTF8" in env["options"].split(), env
    # Nothing in it needs SMTPUTF8: it goes without, its 8-bit body
    # declared as BODY=8BITMIME, byte for byte.
    (mail, _rcpts, data), = wait_for(lambda: [m for m in plain.stored
        if m[1] == ["z@plain.test"]], timeout=15,
        what="the ASCII-headed message at the server without SMTPUTF8")
    assert mail == "bob@example.org"
    assert "MAIL FROM:<bob@example.org> BODY=8BITMIME" in plain.mails, \
        plain.mails
    assert data.endswith(ASCII_UTF8_BODY.encode()), data
    # The same message to a server with neither: 8-bit content, 5.6.3.
    assert "Status: 5.6.3" in report_of(srv, "bob")[1][1][1].split("\n")
    assert seven.count() == 0 and not seven.mails, seven.mails
    # y@plain.test fails, and its DSN reaches a@plain.test there.
    wait_for(lambda: [m for m in plain.stored if m[1] == ["a@plain.test"]],
        timeout=15, what="the DSN at the server without SMTPUTF8")
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    failed = [kv for kv, _ in log_events(srv, "failed")
        if "5.6.7" in kv.get("why", "")]
    assert [(kv["rcpt"], kv["why"].split("(")[1].split(")")[0])
        for kv in failed] == [("<y@plain.test>", "UTF-8 header fields")], \
        failed
    assert plain.count() == 2 and sorted(plain.mails) == [
        "MAIL FROM:<>", "MAIL FROM:<bob@example.org> BODY=8BITMIME"], \
        plain.mails


def test_smtputf8_need_is_that_of_the_rewritten_header(make_postern,
        upstreams):
    """Whether a message that came with SMTPUTF8 needs it is decided by its
    header as it goes out: a rewrite that takes out its only UTF-8 field
    lets it go to a server without SMTPUTF8; one that puts UTF-8 in makes
    it fail there (5.6.7)."""
    plain = upstreams.scripted()		# 8BITMIME, no SMTPUTF8
    srv = make_postern(extra=FAST + (
        'action drop relay "smtp://127.0.0.1:%d" '
        'rewrite from "Jorg <f@example.net>"' % plain.port,
        'action add relay "smtp://127.0.0.1:%d" '
        'rewrite from "J\u00f6rg <f@example.net>"' % plain.port),
        rules=(LOCAL_RULE, "match to domain drop.test action drop",
            "match to domain add.test action add"))
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["x@drop.test"],
            "From: J\u00f6rg <j@example.org>\r\nSubject: hi\r\n\r\nhi\r\n",
            " SMTPUTF8 BODY=8BITMIME")
        send_message(c, "bob@example.org", ["x@add.test"],
            "From: Jorg <j@example.org>\r\nSubject: hi\r\n\r\nhi\r\n",
            " SMTPUTF8")
    assert "Status: 5.6.7" in report_of(srv, "bob")[1][1][1].split("\n")
    settle(srv, plain.count, 1, "the message rewritten to ASCII")
    (mail, _rcpts, data), = plain.stored
    assert mail == "ann@example.org"
    assert b"From: Jorg <f@example.net>\r\n" in data
    assert plain.mails == ["MAIL FROM:<ann@example.org>"], plain.mails


def test_pass_through_copy_keeps_smtputf8(make_postern, upstreams):
    """A pass-through copy is the message it copies: one that came with
    SMTPUTF8 goes on with SMTPUTF8 (RFC 6531 3.4)."""
    utf = upstreams("--smtputf8")
    srv = make_postern(extra=FAST + (
        'action utf relay "smtp://127.0.0.1:%d"' % utf.port,
        'action help pass-through "desk@utf.test"'),
        rules=("match to help@example.org action help",
            "match to domain utf.test action utf"))
    send_utf8(srv, "a@example.org", ["help@example.org"])
    utf8_arrival(utf, "desk@utf.test", "[help@] Gr\u00fc\u00dfe",
        "the pass-through copy upstream")
    wait_for(lambda: spool_empty(srv), what="an empty spool")


def test_8bit_needs_8bitmime_unless_sent_with_smtputf8(make_postern,
        upstreams):
    """RFC 6152 3: 8-bit content without SMTPUTF8 goes only to a server
    that offers 8BITMIME, even one that offers SMTPUTF8 (5.6.3 otherwise);
    RFC 6531 3.3: sent with SMTPUTF8 it may go there, and without a
    BODY=8BITMIME the server did not offer."""
    up = upstreams("--smtputf8", "--no-8bitmime")
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["x@remote.test"],
            "Subject: 8bit\r\n\r\ncaf\u00e9\r\n", " BODY=8BITMIME")
    _m, parts = bounce_of(srv, "alice")
    r = parts[1].get_payload()[1]
    assert (r["Final-Recipient"], r["Status"]) == ("rfc822; x@remote.test",
        "5.6.3"), str(r)
    assert not up.messages()
    send_utf8(srv, "bob@example.org", ["y@remote.test"])
    assert utf8_arrival(up, "y@remote.test", "Gr\u00fc\u00dfe",
        "the SMTPUTF8 message upstream") == ["SMTPUTF8"]
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert len(up.messages()) == 1


def test_plain_dsn_of_8bit_headers_is_7bit_and_reaches_a_7bit_server(
        make_postern, upstreams):
    """A message sent with BODY=8BITMIME (no SMTPUTF8) and UTF-8 headers
    bounces a plain DSN that is 7-bit throughout: the headers come back
    quoted-printable (RFC 6522 4), no part and no level is 8bit, so the
    notice reaches a sender behind a server without 8BITMIME (RFC 6152 3)
    instead of failing there and, being from <>, being lost."""
    bad = upstreams("--rcpt-code", "bad@remote.test=550")
    seven = upstreams("--no-8bitmime")
    srv = make_postern(extra=FAST + (
        'action bad relay "smtp://127.0.0.1:%d"' % bad.port,
        'action seven relay "smtp://127.0.0.1:%d"' % seven.port),
        rules=("match from local to domain remote.test action bad",
            "match to domain far.test action seven"))
    body = ("From: J\u00f6rg <bob@far.test>\r\nSubject: Gr\u00fc\u00dfe\r\n"
        "\r\nhallo\r\n")
    with srv.session() as c:
        c.hello()
        send_message(c, "bob@far.test", ["bad@remote.test"], body,
            " BODY=8BITMIME")
    def dsn_failed():
        return [kv for kv, _ in log_events(srv, "failed")
            if "far.test" in kv.get("rcpt", "")]
    wait_for(lambda: seven.messages() or dsn_failed(), timeout=15,
        what="the DSN at the server without 8BITMIME, or its failure")
    assert not dsn_failed(), "the DSN failed: %s" % dsn_failed()
    env, eml = seven.messages()[0]
    assert (env["from"], env["rcpt"]) == ("<>", ["bob@far.test"]), env
    assert all(b < 0x80 for b in eml), "8-bit octets in the DSN"
    msg = email.message_from_bytes(eml, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert (msg["Content-Transfer-Encoding"] or "7bit") == "7bit"
    hdrs = msg.get_payload()[2]
    assert hdrs.get_content_type() == "text/rfc822-headers"
    assert hdrs["Content-Transfer-Encoding"] == "quoted-printable"
    returned = hdrs.get_payload(decode=True).decode("utf-8")
    assert "From: J\u00f6rg <bob@far.test>" in returned, returned
    assert "Subject: Gr\u00fc\u00dfe" in returned, returned
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert not dsn_failed(), srv.log()[-2000:]


def test_dsn_status_class_is_the_outcome(make_postern, upstreams):
    """RFC 3463 2, RFC 3464 2.3.4: a failed recipient's Status has class
    5 and a delayed one's class 4 whatever class the far side wrote;
    subject and detail are kept: 550 4.2.2 -> 5.2.2, 450 5.2.2 -> 4.2.2."""
    up = upstreams.scripted(rcpt_replies={
        "full@remote.test": "550 4.2.2 mailbox full",
        "busy@remote.test": "450 5.2.2 mailbox busy"})
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port,
        extra=("queue delay-warning 1s",))
    submit(srv, "alice@example.org", ["full@remote.test"])
    submit(srv, "bob@example.org", ["busy@remote.test"])
    _m, parts = bounce_of(srv, "alice")
    r = parts[1].get_payload()[1]
    assert (r["Final-Recipient"], r["Action"], r["Status"]) == (
        "rfc822; full@remote.test", "failed", "5.2.2"), str(r)
    assert r["Diagnostic-Code"].startswith("smtp; 550 4.2.2 mailbox full")
    _m, parts = bounce_of(srv, "bob")
    r = parts[1].get_payload()[1]
    assert (r["Final-Recipient"], r["Action"], r["Status"]) == (
        "rfc822; busy@remote.test", "delayed", "4.2.2"), str(r)
    assert up.count() == 0
