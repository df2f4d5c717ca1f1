"""The webhook action end to end: mail submitted by SMTP arrives at a web
service (tests/integration/httpd.py, recording every request and failing on
demand) as JSON, raw or through a template; signed; retried on 5xx with the
same idempotency key; held across a SIGKILL while the service is down;
bounced on a 404; and in sync mode, the service's answer is DATA's reply.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import threading
import time

import pytest

from conftest import (headers_of, log_events, make_config, run_cli,
    send_message, spool_empty, wait_for)
from httpd import Answer, Api

FAST = ["queue retry-min 1s", "queue retry-max 2s"]
LOCAL = 'action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"\n'


@pytest.fixture
def api():
    a = Api().start()
    yield a
    a.stop()


def hook_config(api, opts="", extra=(), actions="", rules=()):
    """A webhook for bridge@example.org, a Maildir for the rest of
    example.org; more actions and rules go first."""
    acts = LOCAL + actions + 'action hook webhook "%s" %s\n' % (api.url(),
        opts)
    return make_config(list(FAST) + list(extra), rules=list(rules) + [
        "match to bridge@example.org action hook",
        "match to domain example.org action local"], actions=acts)


def wire(text):
    """A message as DATA carries it: CRLF lines, dot-stuffed."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    lines = text.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n"
        for l in lines)


MIXED = (b"From: =?iso-8859-1?q?J=F6rg?= <app@example.org>\n"
    b"To: bridge@example.org\n"
    b"Subject: =?utf-8?q?Caf=C3=A9_status?=\n"
    b"Message-ID: <m1@example.org>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n"
    b"--b1\nContent-Type: multipart/alternative; boundary=\"b2\"\n\n"
    b"--b2\nContent-Type: text/plain; charset=iso-8859-1\n"
    b"Content-Transfer-Encoding: 8bit\n\n"
    b"K\xf6ln: disk at 95 %\n\n"
    b"--b2\nContent-Type: text/html; charset=utf-8\n"
    b"Content-Transfer-Encoding: base64\n\n"
    + base64.encodebytes("<b>Köln</b> à 95".encode()) +
    b"--b2--\n"
    b"--b1\nContent-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"Content-Disposition: attachment; filename=\"notes.txt\"\n\n"
    b"Co=C3=BBt 5 =E2=82=AC=\n per day\n"
    b"--b1\nContent-Type: application/pdf; name=\"r.pdf\"\n"
    b"Content-Transfer-Encoding: base64\n\n"
    + base64.encodebytes(b"%PDF-1.4 " + b"x" * 2000) +
    b"--b1--\n")


def test_json_payload(make_postern, api):
    srv = make_postern(config=hook_config(api, "attachments 64k"))
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire(MIXED))
    req = api.wait(1)[0]
    assert req.method == "POST"
    assert req.headers["content-type"] == "application/json"
    doc = req.json()
    assert doc["subject"] == "Café status"
    assert doc["from"] == "Jörg <app@example.org>"
    # 8-bit Latin-1 and base64 parts, in UTF-8.
    assert doc["text"] == "Köln: disk at 95 %\n"
    assert doc["html"] == "<b>Köln</b> à 95"
    assert doc["envelope"] == {"sender": "app@example.org",
        "recipients": ["bridge@example.org"], "rcpt": "bridge@example.org"}
    assert doc["client"]["ip"] == "127.0.0.1"
    assert doc["client"]["helo"] == "client.example"
    assert doc["qid"] == req.headers["x-postern-queue-id"]
    notes, pdf = doc["attachments"]
    # A quoted-printable attachment, kept (within 64k), decoded.
    assert notes["filename"] == "notes.txt"
    assert notes["disposition"] == "attachment"
    assert base64.b64decode(notes["content_base64"]).decode() == \
        "Coût 5 € per day"
    assert notes["size"] == len("Coût 5 € per day".encode())
    assert pdf["content_type"] == "application/pdf"
    assert pdf["filename"] == "r.pdf"
    assert pdf["size"] == 2009
    assert doc["parse_error"] is None
    # Logged once the service's answer is in, which is after its request.
    wait_for(lambda: any(kv.get("action") == "webhook" for kv, _ in
        log_events(srv, "delivered")), what="the delivered line")


def test_malformed_mime_still_goes_out(make_postern, api):
    srv = make_postern(config=hook_config(api))
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire("Subject: broken\nContent-Type: multipart/mixed\n\n"
                "no boundary at all\n"))
    doc = api.wait(1)[0].json()
    assert doc["parse_error"] == "multipart without boundary"
    assert doc["text"] == "no boundary at all\n"


def posted_docs(srv, api, messages):
    """Send each message to the webhook; the JSON documents it got, by
    subject."""
    with srv.session() as c:
        c.hello()
        for m in messages:
            send_message(c, "app@example.org", ["bridge@example.org"],
                wire(m))
    return {r.json()["subject"]: r.json() for r in api.wait(len(messages))}


def summary(docs):
    """What each document says of the structure, by subject."""
    return {s: (d["parse_error"], d["text"], d["content_type"],
        len(d["attachments"])) for s, d in docs.items()}


def test_text_max_bounds_the_utf8_of_the_text(make_postern, api):
    # 51 bytes of UTF-8 at most: Latin-1 and windows-1252 take more bytes
    # in UTF-8 than they did as sent; the cut falls before a character.
    srv = make_postern(config=hook_config(api, "text-max 51"))
    docs = posted_docs(srv, api, [
        b"Subject: latin\nContent-Type: text/plain; charset=iso-8859-1\n\n"
        + b"\xe9" * 100 + b"\n",
        b"Subject: html\nContent-Type: text/html; charset=windows-1252\n\n"
        + b"\x80" * 100 + b"\n",
        # Undeclared UTF-8 cut inside a character is still UTF-8.
        b"Subject: undeclared\n\n" + "é".encode() * 100 + b"\n"])
    assert docs["latin"]["text"] == "é" * 25
    assert docs["latin"]["text_truncated"] is True
    assert docs["html"]["html"] == "€" * 17
    assert docs["html"]["html_truncated"] is True
    assert docs["undeclared"]["text"] == "é" * 25
    assert docs["undeclared"]["text_truncated"] is True


def test_parts_past_the_hundredth_are_counted(make_postern, api):
    srv = make_postern(config=hook_config(api))
    parts = lambda n: b"".join(b"--a\nContent-Type: application/x-n\n"
        b"Content-Disposition: attachment; filename=f%d\n\nz\n" % i
        for i in range(n))
    head = b"Content-Type: multipart/mixed; boundary=a\n\n"
    docs = posted_docs(srv, api, [
        b"Subject: many\n" + head + parts(150) + b"--a--\n",
        b"Subject: hundred\n" + head + parts(100) + b"--a--\n"])
    assert len(docs["many"]["attachments"]) == 100
    assert docs["many"]["attachments"][-1]["filename"] == "f99"
    assert docs["many"]["parts_skipped"] == 50
    assert len(docs["hundred"]["attachments"]) == 100
    assert docs["hundred"]["parts_skipped"] == 0


def test_attached_message_content_goes_with_the_rest(make_postern, api):
    srv = make_postern(config=hook_config(api, "attachments 1M"))
    docs = posted_docs(srv, api, [
        b"Subject: fwd\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=a\n\n"
        b"--a\nContent-Type: text/plain\n\nsee attached\n"
        b"--a\nContent-Type: message/rfc822\n"
        b"Content-Disposition: attachment; filename=fwd.eml\n\n"
        b"Subject: inner\n\ninner body\n--a--\n"])
    (att,) = docs["fwd"]["attachments"]
    assert att["filename"] == "fwd.eml"
    content = base64.b64decode(att["content_base64"])
    # The line end before the boundary belongs to the boundary.
    assert content == b"Subject: inner\n\ninner body"
    assert att["size"] == len(content)


def test_structure_errors_say_what_is_wrong(make_postern, api):
    srv = make_postern(config=hook_config(api))
    mp = b"Content-Type: multipart/mixed; boundary=zzz\n\n"
    docs = posted_docs(srv, api, [
        # RFC 5322 3.5: the body is optional.
        b"Subject: headers only\nFrom: a@example.org\n",
        # RFC 2046 5.1.1: one body part at least, and a close delimiter.
        b"Subject: closed, no parts\n" + mp + b"the only content\n--zzz--\n",
        b"Subject: unclosed, no parts\n" + mp + b"the only content\n",
        b"Subject: unclosed\n" + mp + b"--zzz\n\npart one\n"])
    assert summary(docs) == {
        "headers only": (None, "", "text/plain", 0),
        "closed, no parts": ("multipart without parts",
            "the only content\n--zzz--\n", "multipart/mixed", 0),
        "unclosed, no parts": ("multipart without close delimiter; "
            "multipart without parts", "the only content\n",
            "multipart/mixed", 0),
        "unclosed": ("multipart without close delimiter", "part one\n",
            "multipart/mixed", 0),
    }


def test_unreadable_content_type_is_text(make_postern, api):
    # RFC 2045 5.2: a Content-Type that cannot be read is text/plain.
    srv = make_postern(config=hook_config(api))
    docs = posted_docs(srv, api, [
        b"Subject: no subtype\nContent-Type: text\n\nhello\n",
        b"Subject: garbage\nContent-Type: ;;;===\n\nhello\n",
        b"Subject: in a part\nContent-Type: multipart/mixed; boundary=a\n\n"
        b"--a\nContent-Type: image\n\nhello\n--a--\n"])
    assert summary(docs) == {
        "no subtype": ("invalid Content-Type", "hello\n", "text/plain", 0),
        "garbage": ("invalid Content-Type", "hello\n", "text/plain", 0),
        "in a part": ("invalid Content-Type", "hello", "multipart/mixed", 0),
    }


def test_raw_and_template(make_postern, api, tmp_path):
    tpl = tmp_path / "bridge.json"
    tpl.write_text('{"name": "%{from}", "reply": "%{text}"}\n')
    srv = make_postern(config=hook_config(api, 'method PUT format '
        'template "%s"' % tpl, actions='action raw webhook "%s" format raw\n'
        % api.url("/raw"), rules=["match to raw@example.org action raw"]))
    body = wire('From: "App \\"1\\"" <app@example.org>\nSubject: x\n\n'
        'line "one"\n.dot line\n')
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org",
            "raw@example.org"], body)
    reqs = api.wait(2)
    tq = [r for r in reqs if r.method == "PUT"][0]
    rq = [r for r in reqs if r.path == "/raw"][0]
    # The template's JSON, every value escaped where it stands.
    assert json.loads(tq.body) == {"name": 'App "1" <app@example.org>',
        "reply": 'line "one"\n.dot line\n'}
    # Raw: message/rfc822, the message as received (our Received: first),
    # CRLF line ends, no dot-stuffing.
    assert rq.headers["content-type"] == "message/rfc822"
    assert rq.body.startswith(b"Received: ")
    assert rq.body.endswith(b"\r\n\r\nline \"one\"\r\n.dot line\r\n")
    assert b"\n" not in rq.body.replace(b"\r\n", b"")
    assert rq.headers["x-postern-envelope-from"] == "app@example.org"
    assert rq.headers["x-postern-envelope-to"] == "raw@example.org"


def test_signature_verifies(make_postern, api, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("hook s3cret-key\n")
    srv = make_postern(config=hook_config(api, "secret <keys>",
        extra=["table keys file:%s" % keys]))
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire("Subject: signed\n\nhello\n"))
    req = api.wait(1)[0]
    # The check a receiving service makes (docs/actions.md).
    sig = req.headers["x-postern-signature"]
    fields = dict(kv.split("=", 1) for kv in sig.split(","))
    mac = hmac.new(b"s3cret-key", fields["t"].encode() + b"." + req.body,
        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, fields["v1"])
    assert abs(int(fields["t"]) - time.time()) < 60
    # A tampered body would not verify.
    bad = hmac.new(b"s3cret-key", fields["t"].encode() + b"." + req.body
        + b" ", hashlib.sha256).hexdigest()
    assert bad != fields["v1"]


def test_500_then_200_is_delivered_once_with_one_key(make_postern, api):
    api.script = [Answer(500, "busy")]
    srv = make_postern(config=hook_config(api))
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire("Subject: retry\n\nbody\n"))
    first, second = api.wait(2)
    assert first.headers["idempotency-key"] == \
        second.headers["idempotency-key"]
    assert first.headers["idempotency-key"].endswith("/bridge@example.org")
    assert first.body == second.body
    assert second.when - first.when >= 0.9	# the queue's backoff
    wait_for(lambda: not srv.spool_files("env"), 10, what="spool empty")
    assert len(api.requests) == 2
    assert len(log_events(srv, "deferred")) == 1
    assert len(log_events(srv, "delivered")) == 1


def test_429_retry_after_is_honoured(make_postern, api):
    api.script = [Answer(429, "slow down", headers=[("Retry-After", "3")])]
    srv = make_postern(config=hook_config(api))
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire("Subject: x\n\nbody\n"))
    first, second = api.wait(2, timeout=20)
    # Not after retry-min (1 s) but after the 3 s the service asked for.
    assert second.when - first.when >= 2.8


def test_down_across_sigkill_then_delivered_after_restart(make_postern,
                                                         api):
    api.stop()
    srv = make_postern(config=hook_config(api))
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire("Subject: survive\n\nkept\n"))
    wait_for(lambda: log_events(srv, "deferred"), 10, what="a deferral")
    srv.kill9()
    api.start()
    srv.start()
    req = api.wait(1, timeout=20)[0]
    assert req.json()["text"] == "kept\n"
    wait_for(lambda: not srv.spool_files("env"), 10, what="spool empty")
    assert len(api.requests) == 1


def test_sigterm_cancels_a_request_left_unanswered(make_postern, api):
    """The service takes the request and does not answer (the webhook's
    timeout is 30 s): a stop gives it the shutdown grace, then cancels it;
    the message stays in the spool and the next start sends it again."""
    api.script = [Answer(200, "late", delay=30)]
    srv = make_postern(config=hook_config(api,
        extra=["limit shutdown-grace 1s"]))
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire("Subject: cancelled\n\nkept\n"))
    api.wait(1)
    t0 = time.monotonic()
    srv.sigterm()
    assert srv.wait_exit(10) == 0, srv.log()[-2000:]
    took = time.monotonic() - t0
    assert took < 5, "the stop took %.1fs with a grace of 1s" % took
    assert srv.spool_files("env"), "the message left the spool"
    kv = log_events(srv, "deferred")[0][0]
    assert kv["why"] == "4.4.1 cancelled: postern is stopping", kv
    srv.start()
    first, second = api.wait(2)
    assert first.headers["idempotency-key"] == \
        second.headers["idempotency-key"]
    wait_for(lambda: not srv.spool_files("env"), 10, what="spool empty")
    assert len(log_events(srv, "delivered")) == 1


def test_404_bounces_with_a_dsn(make_postern, api):
    api.default = Answer(404, "no such channel")
    srv = make_postern(config=hook_config(api))
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["bridge@example.org"],
            wire("Subject: lost\n\nbody\n"))
    api.wait(1)
    wait_for(lambda: srv.maildir("ann"), 10, what="the DSN")
    with open(srv.maildir("ann")[0], "rb") as f:
        dsn = f.read()
    h = headers_of(dsn)
    assert h["return-path"] == ["<>"]
    assert b"Status: 5.3.0" in dsn
    assert b"HTTP 404: no such channel" in dsn
    assert b"Final-Recipient: rfc822; bridge@example.org" in dsn
    assert len(api.requests) == 1		# never retried


# An answer with a quote, a backslash, controls, UTF-8 and a byte that is
# not UTF-8; its second line is not part of the status text.
ODD = b'no "such" \\ channel \x01\x1b caf\xc3\xa9 \xff\r\nsecond line'
# ODD's first line as a log value: escaped once.
ODD_LOGGED = ('no \\x22such\\x22 \\x5c channel \\x01\\x1b '
    'caf\\xc3\\xa9 \\xff')


def test_answer_text_is_escaped_once_in_the_log(make_postern, api):
    """The service's answer is kept as it wrote it: the queue's log line
    escapes it once (a quote is \\x22, not \\x5cx22), and the DSN carries
    it as any reply."""
    api.default = Answer(404, ODD)
    srv = make_postern(config=hook_config(api))
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["bridge@example.org"],
            wire("Subject: lost\n\nbody\n"))
    wait_for(lambda: srv.maildir("ann"), 10, what="the DSN")
    line = [l for kv, l in log_events(srv, "failed")][0]
    assert 'why="5.3.0 HTTP 404: %s"' % ODD_LOGGED in line, line
    with open(srv.maildir("ann")[0], "rb") as f:
        dsn = f.read()
    assert b'HTTP 404: no "such" \\ channel ?? caf?? ?' in dsn, dsn


def interim_then_close(listener):
    """One connection: read the request, answer only 102, close."""
    listener.settimeout(15)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536) or b"\r\n\r\n"
        head, _, body = data.partition(b"\r\n\r\n")
        n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < n:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        conn.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")


def test_an_interim_answer_alone_is_no_answer(make_postern, api):
    """A service that answers 102 Processing and closes gave no final
    answer: the message is deferred and delivered by the next try, never
    bounced on an interim status."""
    api.stop()
    with socket.socket() as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", api.port))
        ls.listen(4)
        srv = make_postern(config=hook_config(api))
        with srv.session() as c:
            c.hello()
            send_message(c, "ann@example.org", ["bridge@example.org"],
                wire("Subject: later\n\nbody\n"))
        interim_then_close(ls)
        wait_for(lambda: log_events(srv, "deferred"), 10, what="a deferral")
    why = log_events(srv, "deferred")[0][0]["why"]
    assert why.startswith("4.4.1 HTTP 102 and no final answer"), why
    api.start()
    api.wait(1, timeout=20)
    wait_for(lambda: not srv.spool_files("env"), 10, what="spool empty")
    assert len(log_events(srv, "delivered")) == 1
    assert srv.maildir("ann") == []		# no DSN


# ----- sync mode --------------------------------------------------------------

def sync_start(c, body="Subject: now\n\nbody\n"):
    """A message for the webhook sent on c, up to its final dot."""
    c.hello()
    c.send("MAIL FROM:<app@example.org>"); c.expect(250)
    c.send("RCPT TO:<bridge@example.org>"); c.expect(250)
    c.send("DATA"); c.expect(354)
    c.send_raw(wire(body) + b".\r\n")


def sync_send(srv, body="Subject: now\n\nbody\n"):
    with srv.session() as c:
        sync_start(c, body)
        return c.read_reply(timeout=15)


def test_sync_2xx_is_250_and_nothing_is_queued(make_postern, api):
    srv = make_postern(config=hook_config(api, "sync 5s"))
    r = sync_send(srv)
    assert r.code == 250 and r.esc == "2.0.0"
    assert len(api.requests) == 1		# before the reply
    assert not srv.spool_files("env")


def test_sync_422_is_550_and_timeout_is_451(make_postern, api):
    api.script = [Answer(422, "bad payload"), Answer(200, delay=4.0),
        Answer(503, "later")]
    srv = make_postern(config=hook_config(api, "sync 2s"))
    t0 = time.monotonic()
    r = sync_send(srv)
    assert (r.code, r.esc) == (550, "5.3.0")
    assert "HTTP 422" in r.text
    r = sync_send(srv)
    assert (r.code, r.esc) == (451, "4.4.1")
    r = sync_send(srv)
    assert (r.code, r.esc) == (451, "4.3.0")
    assert time.monotonic() - t0 < 12
    # None of them was queued.
    assert not srv.spool_files("env")
    assert len(api.requests) == 3


def test_sync_answer_comes_before_the_session_time_limit_421(make_postern,
        api):
    # The session's time limit passes while the web service has the
    # message: its answer may be that the message is taken, so it is
    # DATA's reply, and the 421 follows it; the client is not told to try
    # again a message that was delivered.
    api.default = Answer(200, delay=2.5)
    srv = make_postern(config=hook_config(api, "sync 10s",
        extra=["limit session-timeout 1s"]))
    with srv.session() as c:
        sync_start(c)
        r = c.read_reply(timeout=15)
        assert (r.code, r.esc) == (250, "2.0.0"), c.transcript()
        r = c.read_reply(timeout=5)
        assert (r.code, r.esc) == (421, "4.4.2") and \
            "session time limit exceeded" in r.text, c.transcript()
        c.expect_closed()
    assert len(api.requests) == 1


def test_sync_reply_from_an_odd_answer_is_printable_ascii(make_postern,
        api):
    """The reply to DATA made from the service's answer holds printable
    ASCII only (RFC 5321 4.2): each other byte is '?', quotes and
    backslashes are as the service wrote them; the log line escapes the
    answer once."""
    api.default = Answer(422, ODD)
    srv = make_postern(config=hook_config(api, "sync 5s"))
    with srv.session() as c:
        sync_start(c, "Subject: odd\n\nbody\n")
        raw = c.read_raw_line(timeout=15)
    assert raw == b'550 5.3.0 HTTP 422: no "such" \\ channel ?? caf?? ?', raw
    line = [l for kv, l in log_events(srv, "sync-webhook")][0]
    assert 'why="5.3.0 HTTP 422: %s"' % ODD_LOGGED in line, line


def test_sync_wait_never_blocks_other_sessions(make_postern, api):
    api.default = Answer(200, delay=3.0)
    srv = make_postern(config=hook_config(api, "sync 10s",
        extra=["workers 1"]))
    import threading
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", sync_send(srv)))
    t.start()
    api.wait(1)
    # While DATA waits for the service, the one loop serves others.
    t0 = time.monotonic()
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["ann@example.org"],
            wire("Subject: other\n\nflows\n"))
    assert time.monotonic() - t0 < 2.0
    t.join(15)
    assert out["r"].code == 250


def test_sync_takes_one_recipient_per_transaction(make_postern, api):
    srv = make_postern(config=hook_config(api, "sync 5s"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<app@example.org>"); c.expect(250)
        c.send("RCPT TO:<bridge@example.org>"); c.expect(250)
        c.send("RCPT TO:<ann@example.org>"); c.expect(452, "4.5.3")
        c.send("DATA"); c.expect(354)
        c.send_raw(wire("Subject: one\n\nx\n") + b".\r\n")
        c.expect(250, "2.0.0")
        # ...and the other way round.
        c.send("MAIL FROM:<app@example.org>"); c.expect(250)
        c.send("RCPT TO:<ann@example.org>"); c.expect(250)
        c.send("RCPT TO:<bridge@example.org>"); c.expect(452, "4.5.3")
        c.send("DATA"); c.expect(354)
        c.send_raw(wire("Subject: two\n\ny\n") + b".\r\n")
        c.expect(250, "2.0.0")
    wait_for(lambda: srv.maildir("ann"), 10, what="ann's copy")
    assert len(api.requests) == 1


def test_sync_alias_with_more_members_is_queued_whole(make_postern, api,
                                                     tmp_path):
    """An alias that reaches a sync webhook and a mailbox can never come
    as the sync member alone: taken as the first recipient, queued, and
    the webhook posted the usual way."""
    (tmp_path / "aliases").write_text(
        "team@example.org bridge@example.org, ann@example.org\n")
    srv = make_postern(config=hook_config(api, "sync 5s", extra=[
        "table al file:%s/aliases" % tmp_path, "alias <al>"]))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<app@example.org>"); c.expect(250)
        c.send("RCPT TO:<team@example.org>"); c.expect(250)
        # The rule still holds for a sync webhook as a second recipient.
        c.send("RCPT TO:<bridge@example.org>"); c.expect(452, "4.5.3")
        c.send("DATA"); c.expect(354)
        c.send_raw(wire("Subject: team\n\nfor all\n") + b".\r\n")
        c.expect(250, "2.0.0")
    req = api.wait(1)[0]
    assert req.headers["x-postern-envelope-to"] == "bridge@example.org"
    wait_for(lambda: srv.maildir("ann"), 10, what="ann's copy")
    wait_for(lambda: not srv.spool_files("env"), 10, what="spool empty")
    assert len(api.requests) == 1


@pytest.mark.parametrize("how", ["close", "reset"])
def test_sync_request_is_cancelled_when_the_client_leaves(make_postern,
                                                          api, how):
    """The client sends its message to a sync webhook and goes away before
    the reply (it closes with nothing after the final dot, or resets the
    connection): the request is cancelled at once, so the service sees its
    connection close long before the 60s wait would end; the log says
    so; nothing is accepted or queued; the next message goes through."""
    api.script = [Answer(200, "too late", hold=40)]
    srv = make_postern(config=hook_config(api, "sync 60s timeout 60s"))
    c = srv.session()
    sync_start(c, "Subject: left\n\nx\n")
    api.wait(1)
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
            struct.pack("ii", 1, 0))
    t0 = time.monotonic()
    c.close()
    wait_for(lambda: api.closed, 10,
        what="the service's connection closed by postern")
    assert api.closed[0] - t0 < 5, api.closed[0] - t0
    wait_for(lambda: log_events(srv, "sync-webhook"), 10,
        what="the sync-webhook line")
    [(kv, line)] = log_events(srv, "sync-webhook")
    assert kv["result"] == "cancelled", line
    assert kv["rcpt"] == "<bridge@example.org>", line
    assert kv["why"] == "4.4.1 the client left before its reply", line
    wait_for(lambda: " disconnect " in srv.log(), 10, what="the session end")
    wait_for(lambda: spool_empty(srv), 10, what="the spool empty")
    assert not log_events(srv, "accepted")
    # The server is as before: the next message gets the service's 250.
    r = sync_send(srv)
    assert (r.code, r.esc) == (250, "2.0.0"), r
    assert len(api.requests) == 2
    wait_for(lambda: [kv["result"] for kv, _ in log_events(srv,
        "sync-webhook")] == ["cancelled", "delivered"], 10,
        what="the second message's sync-webhook line")


def test_sync_half_closed_client_with_quit_gets_the_answer(make_postern,
                                                           api):
    """A client that sends QUIT after its message and shuts its side down
    has not gone away: it still gets the service's answer, then 221."""
    api.default = Answer(200, delay=1.0)
    srv = make_postern(config=hook_config(api, "sync 10s"))
    with srv.session() as c:
        sync_start(c, "Subject: half\n\nx\n")
        c.send("QUIT")
        c.sock.shutdown(socket.SHUT_WR)
        c.expect(250, "2.0.0", timeout=15)
        c.expect(221, "2.0.0")
        c.expect_closed()
    wait_for(lambda: log_events(srv, "sync-webhook"), 10,
        what="the sync-webhook line")
    [(kv, line)] = log_events(srv, "sync-webhook")
    assert kv["result"] == "delivered", line
    assert api.closed == []


def test_example_chat_bridge(make_postern, api, tmp_path):
    """The shipped example (examples/bridge) pointed at the test's API."""
    from conftest import REPO, TEMPLATE_HEAD
    ex = os.path.join(REPO, "examples", "bridge")
    with open(os.path.join(ex, "postern.conf")) as f:
        text = f.read()
    for name in ("bridge.json", "bridge-keys"):
        with open(os.path.join(ex, name)) as src, \
                open(tmp_path / name, "w") as dst:
            dst.write(src.read())
    text = text.replace("http://127.0.0.1:8003/replies", api.url("/replies"))
    text = text.replace("/etc/postern/", str(tmp_path) + "/")
    keep = [l for l in text.splitlines() if not l.startswith(("hostname",
        "spool", "listen", "user ", "group "))]
    srv = make_postern(config=TEMPLATE_HEAD + "\n".join(keep) + "\n")
    with srv.session() as c:
        c.hello()
        send_message(c, "cron@localhost", ["admin@localhost"],
            wire('From: "Backup job" <cron@localhost>\nSubject: backup\n\n'
                'done, 3 GB\n'))
    req = api.wait(1)[0]
    assert (req.method, req.path) == ("PUT", "/replies")
    assert json.loads(req.body) == {"name": "Backup job <cron@localhost>",
        "reply": "backup: done, 3 GB\n"}
    fields = dict(kv.split("=", 1) for kv in
        req.headers["x-postern-signature"].split(","))
    key = b"replace-this-with-a-long-random-key"
    assert hmac.compare_digest(fields["v1"], hmac.new(key,
        fields["t"].encode() + b"." + req.body, hashlib.sha256).hexdigest())


def test_credentials_from_a_table(make_postern, api, tmp_path):
    (tmp_path / "creds").write_text("127.0.0.1 bearer t0ken-1\n")
    (tmp_path / "creds2").write_text("default basic ann s3cret\n")
    srv = make_postern(config=hook_config(api, "auth <creds> header "
        '"X-App: postern"', extra=["table creds file:%s" %
        (tmp_path / "creds"), "table creds2 file:%s" %
        (tmp_path / "creds2")], actions='action basic webhook "%s" auth '
        '<creds2>\n' % api.url("/basic"), rules=[
        "match to basic@example.org action basic"]))
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire("Subject: one\n\nx\n"))
        send_message(c, "app@example.org", ["basic@example.org"],
            wire("Subject: two\n\ny\n"))
    reqs = {r.path: r for r in api.wait(2)}
    # The entry for the URL's host, else "default"; never logged.
    assert reqs["/hook"].headers["authorization"] == "Bearer t0ken-1"
    assert reqs["/hook"].headers["x-app"] == "postern"
    assert reqs["/basic"].headers["authorization"] == "Basic " + \
        base64.b64encode(b"ann:s3cret").decode()
    assert "t0ken-1" not in srv.log() and "s3cret" not in srv.log()


# ----- what every request carries, and what stops one ------------------------

def test_empty_values_are_sent(make_postern, api):
    """A null sender is an empty X-Postern-Envelope-From, and a configured
    field with an empty value goes out empty: neither is left out."""
    srv = make_postern(config=hook_config(api, 'header "X-Empty:"'))
    with srv.session() as c:
        c.hello()
        send_message(c, "", ["bridge@example.org"], wire("Subject: b\n\nx\n"))
    req = api.wait(1)[0]
    assert req.json()["envelope"]["sender"] == ""
    assert req.headers.get("x-postern-envelope-from") == "", req.headers
    assert req.headers.get("x-empty") == "", req.headers


class KeepAliveCloser:
    """A service that answers the first request of each connection and
    keeps it open, then reads the next request on it and closes without
    an answer: a keep-alive timeout that ends at that moment.  With
    whole=False it closes once that request's header has come, its body
    still on the way; with first=False it does so on the first request
    too (no request is ever answered)."""

    def __init__(self, whole=True, first=True):
        self.whole = whole
        self.first = first
        self.conns = 0			# connections accepted
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if not whole:
            # A small window: a body larger than the sender's buffers
            # (net.ipv4.tcp_wmem's largest, 4 MiB) is still being sent
            # at the close, whatever the timing.
            self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.answered = []		# bodies answered 200
        self.dropped = 0		# requests read, then the close
        self.done = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def _read(self, conn, buf, whole=True):
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None, b""
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not whole:
            return b"", b""
        n = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
        while len(rest) < n:
            chunk = conn.recv(65536)
            if not chunk:
                return None, b""
            rest += chunk
        return rest[:n], rest[n:]

    def _serve(self, conn):
        with conn:
            conn.settimeout(10)
            body, buf = self._read(conn, b"", self.first or self.whole)
            if body is None or not self.first:
                self.dropped += body is not None
                return
            self.answered.append(body)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            body, buf = self._read(conn, buf, self.whole)
            if body is not None:
                self.dropped += 1

    def _accept(self):
        while not self.done:
            try:
                conn, _ = self.ls.accept()
            except socket.timeout:
                continue
            self.conns += 1
            threading.Thread(target=self._serve, args=(conn,),
                daemon=True).start()

    def stop(self):
        self.done = True
        self.thread.join(5)
        self.ls.close()


def test_a_kept_connection_the_service_closes_is_sent_again(make_postern):
    """libcurl sends a request again on a new connection when the kept one
    closes under it; the body, from memory (sync) or from the spool (raw),
    is read again from its start, and the attempt succeeds."""
    svc = KeepAliveCloser()
    try:
        srv = make_postern(config=make_config(FAST, rules=[
            "match to s@example.org action hs",
            "match to q@example.org action hq",
            "match to domain example.org action local"], actions=LOCAL +
            'action hs webhook "%s" sync 5s\n' % svc.url("/s") +
            'action hq webhook "%s" format raw\n' % svc.url("/q")))
        for n in (1, 2):
            with srv.session() as c:
                c.hello()
                c.send("MAIL FROM:<app@example.org>"); c.expect(250)
                c.send("RCPT TO:<s@example.org>"); c.expect(250)
                c.send("DATA"); c.expect(354)
                c.send_raw(wire("Subject: s%d\n\nx\n" % n) + b".\r\n")
                c.expect(250, "2.0.0")
        for n in (1, 2):
            with srv.session() as c:
                c.hello()
                send_message(c, "app@example.org", ["q@example.org"],
                    wire("Subject: q%d\n\nraw body\n" % n))
            wait_for(lambda: len(log_events(srv, "delivered")) >= n, 10,
                what="queued message %d delivered" % n)
        assert svc.dropped >= 2			# the service did close them
        assert not log_events(srv, "deferred")
        raw = [b for b in svc.answered if b.startswith(b"Received: ")]
        assert len(raw) == 2 and all(b.endswith(b"\r\n\r\nraw body\r\n")
            for b in raw), raw
    finally:
        svc.stop()


def big_raw(n):
    """A message of about 5 MB: its body is still going out when the
    service closes the connection on reading the request's header."""
    return wire(b"Subject: big%d\n\n" % n + b"".join(
        b"line %06d of message %d\n" % (i, n) for i in range(200000)))


def test_a_kept_connection_closed_during_the_body_is_sent_again(
        make_postern):
    """The service closes the kept connection while the second request's
    body is still being sent (libcurl gets a send error, and does not try
    again by itself): the request goes once more on a new connection, its
    body whole from its start, and the message is delivered."""
    svc = KeepAliveCloser(whole=False)
    try:
        srv = make_postern(config=make_config(FAST, rules=[
            "match to q@example.org action hq",
            "match to domain example.org action local"], actions=LOCAL +
            'action hq webhook "%s" format raw\n' % svc.url("/q")))
        for n in (1, 2):
            with srv.session() as c:
                c.hello()
                send_message(c, "app@example.org", ["q@example.org"],
                    big_raw(n))
            wait_for(lambda: len(log_events(srv, "delivered")) >= n, 20,
                what="queued message %d delivered" % n)
        assert svc.dropped == 1 and svc.conns == 2, (svc.dropped, svc.conns)
        assert not log_events(srv, "deferred")
        assert len(svc.answered) == 2
        for n, body in zip((1, 2), svc.answered):
            assert body.startswith(b"Received: ") and body.endswith(
                b"\r\n\r\n" + big_raw(n).split(b"\r\n\r\n", 1)[1]), n
    finally:
        svc.stop()


def test_a_new_connection_closed_during_the_body_is_not_sent_again(
        make_postern):
    """A request cut short on a connection just made is not sent again
    within the attempt: the delivery is deferred after one connection."""
    svc = KeepAliveCloser(whole=False, first=False)
    try:
        srv = make_postern(config=make_config(rules=[
            "match to q@example.org action hq",
            "match to domain example.org action local"], actions=LOCAL +
            'action hq webhook "%s" format raw\n' % svc.url("/q")))
        with srv.session() as c:
            c.hello()
            send_message(c, "app@example.org", ["q@example.org"],
                big_raw(1))
        wait_for(lambda: log_events(srv, "deferred"), 20, what="a deferral")
        time.sleep(1)
        assert svc.conns == 1 and svc.dropped == 1, (svc.conns, svc.dropped)
        assert not svc.answered
    finally:
        svc.stop()


def test_sigterm_cancels_a_sync_request_at_the_grace(make_postern, api):
    """A sync webhook whose service never answers: at the end of the
    shutdown grace its request is cancelled, the client hears so (451
    4.4.1, then 421), and the process exits then, not when the sync wait
    would have ended."""
    api.default = Answer(200, "late", delay=30)
    srv = make_postern(config=hook_config(api, "sync 20s",
        extra=["limit shutdown-grace 1s"]))
    with srv.session() as c:
        sync_start(c, "Subject: waits\n\nx\n")
        api.wait(1)
        t0 = time.monotonic()
        srv.sigterm()
        assert srv.wait_exit(15) == 0, srv.log()[-2000:]
        took = time.monotonic() - t0
        r = c.expect(451, "4.4.1")
        assert "postern is stopping" in r.text, r
        c.expect(421, "4.3.2")
        c.expect_closed()
    assert took < 5, "the stop took %.1fs with a grace of 1s" % took
    assert "still writing to disk" not in srv.log()
    assert not srv.spool_files("env")		# never accepted, never queued


def test_a_secret_with_no_key_defers_and_never_sends_unsigned(make_postern,
                                                              api, tmp_path):
    """The key's entry goes from the secret table while postern runs: the
    message is deferred with the reason, nothing goes out unsigned, and it
    goes out signed once the key is back."""
    keys = tmp_path / "keys"
    keys.write_text("hook k1\n")
    srv = make_postern(config=hook_config(api, "secret <keys>",
        extra=["table keys file:%s" % keys]))
    reloads = lambda: srv.log().count("table=keys file=")
    n = reloads()
    keys.write_text("hoook k1\n")		# a typo: no key for "hook"
    os.utime(keys, (time.time() + 5, time.time() + 5))
    # Open twice, each read again: the configuration's and the action's.
    wait_for(lambda: reloads() >= n + 2, 10, what="the table read again")
    with srv.session() as c:
        c.hello()
        send_message(c, "app@example.org", ["bridge@example.org"],
            wire("Subject: signed\n\nx\n"))
    wait_for(lambda: log_events(srv, "deferred"), 10, what="a deferral")
    assert log_events(srv, "deferred")[0][0]["why"] == \
        "4.3.0 secret <keys>: no key for hook and no default"
    assert api.requests == []
    keys.write_text("default k2\n")
    os.utime(keys, (time.time() + 10, time.time() + 10))
    req = api.wait(1, timeout=20)[0]
    fields = dict(kv.split("=", 1) for kv in
        req.headers["x-postern-signature"].split(","))
    assert fields["v1"] == hmac.new(b"k2", fields["t"].encode() + b"." +
        req.body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("label, opts, keys, want", [
    ("a secret table with no key for the action",
        "secret <keys>", "hoook k1\n", "action hook: secret <keys>: no key "
        "for hook and no default"),
    ("a ca file that is not there", 'ca "{tmp}/nonexistent.pem"', None,
        "action hook: ca_file {tmp}/nonexistent.pem: No such file or "
        "directory"),
    # As for a relay: curl would refuse it at each request.
    ("a ca file with no certificate", 'ca "{tmp}/bad.pem"', None,
        "action hook: ca_file {tmp}/bad.pem: no certificate or crl found"),
])
def test_check_and_start_refuse(make_postern, api, tmp_path, label, opts,
                                keys, want):
    (tmp_path / "keys").write_text(keys or "hook k\n")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    srv = make_postern(config=hook_config(api, opts,
        extra=["table keys file:%s" % (tmp_path / "keys")]), start=False)
    want = srv.fill(want)
    with open(srv.conf) as f:
        line = [n for n, l in enumerate(f, 1) if "action hook " in l][0]
    r = run_cli("check", "-c", srv.conf, cwd=srv.dir)
    assert r.returncode == 1, (label, r.stdout, r.stderr)
    assert "%s:%d: %s" % (srv.conf, line, want) in r.stdout + r.stderr, \
        (label, r.stdout, r.stderr)
    r = run_cli("run", "-c", srv.conf, cwd=srv.dir)
    assert r.returncode != 0 and want in r.stderr, (label, r.stderr)
