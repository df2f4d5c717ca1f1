"""What postern sends to the next hop: only canonical SMTP, whatever was
submitted (docs/queue.md).  `postern send` ends a line at a CR or LF alone
as at CRLF and refuses a NUL (exit 65); the outbound client folds a line
over 998 octets with CRLF SP.  The upstreams record the bytes they got:
aiosmtpd (tests/unit/deliver/data/smtpd.py) and a second postern, whose
listener refuses bare CR, NUL and long lines itself.
"""

import subprocess

from conftest import binary, make_config, read_bytes, split_delivered, wait_for
from test_relay import relay_server, spool_empty, upstreams  # noqa: F401

# A bare CR around a dot (the smuggling probe), a CRLF line, 3,000 octets.
MESSAGE = (b"Subject: canonical\n\nbefore\r.\rafter\r\n" + b"x" * 3000 +
    b"\nend\n")
BODY_SENT = (b"before\r\n.\r\nafter\r\n" + b"x" * 998 + b"\r\n " +
    b"x" * 997 + b"\r\n " + b"x" * 997 + b"\r\n " + b"x" * 8 + b"\r\nend\r\n")


def send(srv, msg, rcpt="bob@remote.test"):
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
