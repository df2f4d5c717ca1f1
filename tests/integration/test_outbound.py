"""What postern sends to the next hop: only canonical SMTP, whatever was
submitted (docs/queue.md).  `postern send` ends a line at a CR or LF alone
as at CRLF and refuses a NUL (exit 65); the outbound client folds a line
over 998 octets with CRLF SP.  The upstreams record the bytes they got:
aiosmtpd (tests/unit/deliver/data/smtpd.py) and a second postern, whose
listener refuses bare CR, NUL and long lines itself.
"""

import os
import socket
import subprocess
import threading

import pytest

from conftest import (binary, close_listener, make_config, read_bytes,
    split_delivered, wait_for)
from test_relay import relay_server, spool_empty, upstreams  # noqa: F401

# A bare CR around a dot (the smuggling probe), a CRLF line, 3,000 octets.
MESSAGE = (b"Subject: canonical\n\nbefore\r.\rafter\r\n" + b"x" * 3000 +
    b"\nend\n")
BODY_SENT = (b"before\r\n.\r\nafter\r\n" + b"x" * 998 + b"\r\n " +
    b"x" * 997 + b"\r\n " + b"x" * 997 + b"\r\n " + b"x" * 8 + b"\r\nend\r\n")


def send(srv, msg, rcpt="bob@remote.test"):
    """postern send, once the server's queue listens on its control socket
    (it comes up just after the SMTP listeners)."""
    wait_for(lambda: os.path.exists(srv.path("spool", "control.sock")),
        what="the control socket")
    return subprocess.run([binary(), "send", "-C", srv.conf, "-f",
        "alice@example.org", rcpt], input=msg, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=20)


def wire_lines(data):
    """data split into CRLF lines; asserts there is no bare CR or LF."""
    assert data.endswith(b"\r\n"), data[-40:]
    lines = data[:-2].split(b"\r\n")
    for l in lines:
        assert b"\r" not in l and b"\n" not in l, l[:80]
        assert len(l) + 2 <= 1000, "a line of %d octets" % (len(l) + 2)
    return lines


def test_send_bare_cr_and_long_line_reach_the_upstream_canonical(
        make_postern, upstreams):
    up = upstreams()
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    r = send(srv, MESSAGE)
    assert r.returncode == 0, r.stderr
    msgs = wait_for(up.messages, timeout=15,
        what="the message upstream; log:\n" + srv.log()[-2000:])
    env, eml = msgs[0]
    assert env["rcpt"] == ["bob@remote.test"]
    wire_lines(eml)
    assert eml.split(b"\r\n\r\n", 1)[1] == BODY_SENT


def test_send_refuses_a_nul(make_postern, upstreams):
    up = upstreams()
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % up.port)
    r = send(srv, b"Subject: nul\n\nfirst\nsecond a\x00b\n")
    assert r.returncode == 65, (r.returncode, r.stderr)
    assert b"line 4" in r.stderr and b"NUL" in r.stderr, r.stderr
    assert spool_empty(srv)
    assert up.messages() == []


def test_relay_to_a_second_postern_takes_what_send_submitted(make_postern):
    """The next hop is a postern: its listener would refuse a bare CR or a
    line over 1,000 octets (554), so the message arrives only if postern
    sent canonical lines."""
    down = make_postern(config=make_config(
        rules=["match to domain remote.test action local"]))
    srv = relay_server(make_postern,
        'action out relay "smtp://127.0.0.1:%d"' % down.port)
    r = send(srv, MESSAGE)
    assert r.returncode == 0, r.stderr
    files = wait_for(lambda: down.maildir("bob"), timeout=15,
        what="the message at the second postern; log:\n" + srv.log()[-2000:])
    rest = split_delivered(read_bytes(files[0]))[2]
    assert rest.split(b"\n\n", 1)[1] == BODY_SENT.replace(b"\r\n", b"\n")
    wait_for(lambda: spool_empty(srv), timeout=10, what="an empty spool")
    assert srv.maildir("alice") == [], "a bounce came back"


# ----- a hostile upstream ------------------------------------------------------

class Endless:
    """An upstream that never ends a reply: after a normal greeting (or at
    once, when at_greeting) it sends "CODE-..." lines, or one line without
    an end (one_line), until the client hangs up.  Counts what it sent."""

    def __init__(self, at_greeting=False, one_line=False):
        self.at_greeting = at_greeting
        self.one_line = one_line
        self.sent = 0
        self.closed = threading.Event()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.port = self.ls.getsockname()[1]
        self.ls.listen(4)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        try:
            c, _ = self.ls.accept()
        except OSError:
            return
        with c:
            try:
                code = b"220"
                if not self.at_greeting:
                    c.sendall(b"220 hostile.test ESMTP\r\n")
                    c.recv(1000)			# EHLO
                    code = b"250"
                chunk = (code + b"-" + b"x" * 60 + b"\r\n") * 100
                if self.one_line:
                    c.sendall(code + b" ")
                    chunk = b"y" * 6200
                # Bounded, far over any cap (the client must hang up).
                while self.sent < 256 * 1024 ** 2:
                    c.sendall(chunk)
                    self.sent += len(chunk)
            except OSError:
                self.closed.set()

    def stop(self):
        close_listener(self.ls)


@pytest.mark.parametrize("at_greeting,one_line", [(True, False),
    (False, False), (False, True)], ids=["greeting", "ehlo", "one-line"])
def test_endless_reply_is_a_temporary_failure(make_postern, at_greeting,
        one_line):
    """A reply of more than 1,000 lines or 64 KiB: the client hangs up
    after it, the message stays queued (4xx, retried) and the log says
    why."""
    up = Endless(at_greeting, one_line)
    try:
        srv = relay_server(make_postern,
            'action out relay "smtp://127.0.0.1:%d"' % up.port)
        r = send(srv, b"Subject: endless\n\nhello\n")
        assert r.returncode == 0, r.stderr
        assert up.closed.wait(20), "the client kept reading (%d octets)" % (
            up.sent)
        assert up.sent < 10 * 1024 * 1024, up.sent
        line = wait_for(lambda: [l for l in srv.log().splitlines()
            if " deferred " in l and "rcpt=<bob@remote.test>" in l],
            timeout=10, what="the deferral in the log")[0]
        assert ("a line longer than 65536 octets" if one_line else
            "a reply longer than 1000 lines or 65536 octets") in line, line
        assert not spool_empty(srv)
    finally:
        up.stop()
