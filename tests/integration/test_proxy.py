"""
Proxy listeners: postern in front of another SMTP server.  The upstreams
are real and started here: aiosmtpd (proxy_upstream.Upstream, which
records every command it gets), a second postern, and scripted servers
for an upstream that never greets or reads slowly.  What is checked is
what each side sees on the wire: the client's replies, the upstream's
commands and messages, the transcripts.
"""

import hashlib
import json
import os
import re
import socket
import ssl
import threading
import time

import pytest

from conftest import (HOST, TEMPLATE_ACTIONS, Client, Closed, free_port,
    log_events, proc_status, read_bytes, send_message, split_delivered,
    wait_for)
from proxy_upstream import RawUpstream, Upstream
from test_relay import Scripted

BODY = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: through\r\n"
    b"Message-Id: <p1@example.org>\r\n\r\nfirst line\r\n..a dot line\r\n"
    b"\tindented\r\n" + b"x" * 900 + b"\r\n\r\nlast\r\n")


def unstuff(body):
    """What a receiver keeps of dot-stuffed content: the dots undone."""
    return re.sub(rb"(^|\r\n)\.", rb"\1", body)


def proxy_config(listen, before=(), after=(), translog=""):
    """A proxy front: BEFORE lines (upstreams, tables) ahead of its listen
    line, AFTER lines (chains, limits) behind it; transcripts on (with the
    TRANSLOG options)."""
    return ("hostname front.example\nspool {tmp}/spool\n" +
        "".join(l + "\n" for l in before) +
        "listen 127.0.0.1:{port} %s\n" % listen +
        "".join(l + "\n" for l in after) +
        "transaction-log {tmp}/translog %s\n" % translog + TEMPLATE_ACTIONS +
        "match any action local\n")


@pytest.fixture
def upstreams():
    """Factory: upstreams(**kw) starts an Upstream, upstreams.scripted(**kw)
    a Scripted server (which shows each AUTH line as it came); all stop at
    teardown."""
    made = []

    def make(kind=Upstream, **kw):
        u = kind(**kw)
        made.append(u)
        return u
    make.scripted = lambda **kw: make(Scripted, **kw)

    yield make
    for u in made:
        u.stop()


@pytest.fixture
def raw_upstreams():
    made = []

    def make(**kw):
        u = RawUpstream(**kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def transcript(srv):
    """The front's transaction log lines ("<ts> <side> <text>"), all
    sessions, as [(side, text)]."""
    d = srv.path("translog")
    out = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        with open(os.path.join(d, name), errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 2)
                if len(parts) == 3:
                    out.append((parts[1], parts[2]))
    return out


def wait_transcript_end(srv):
    """Wait for the last line of a proxied session's transcript, the
    upstream's 221 as it went to the client ('<').  Lines reach the file
    from a writer thread, after the session acted on them: the client may
    have its 221 before the file has that line, and the '{' line before
    it may be there without it."""
    wait_for(lambda: ("<", "221 2.0.0 upstream says bye") in transcript(srv),
        what="the transcript's last line")


def assert_in_order(want, got):
    """The transcript lines want are in got, in that order, with any
    others between them."""
    i = 0
    for line in got:
        if i < len(want) and line == want[i]:
            i += 1
    assert i == len(want), "missing %r in:\n%s" % (want[i], "\n".join(
        "%s %s" % l for l in got))


# ----- relaying ---------------------------------------------------------------

def test_message_arrives_upstream_byte_exact(make_postern, upstreams):
    """Through the proxy the upstream gets the client's bytes: dots,
    tabs, a long line, 8-bit text; its replies reach the client as it
    wrote them (aiosmtpd's own texts), and BDAT goes up as DATA."""
    up = upstreams()
    front = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d" %
        up.port))
    body8 = BODY.replace(b"last", "läst".encode())
    with front.session() as c:
        c.expect(220)
        c.send("EHLO client.example"); c.expect(250)
        c.send("MAIL FROM:<a@example.org> BODY=8BITMIME")
        assert c.expect(250, "2.1.0").text == "2.1.0 upstream takes the sender"
        c.send("RCPT TO:<b@example.org>")
        assert c.expect(250).text == "2.1.5 upstream takes the recipient"
        c.send("DATA")
        assert c.expect(354).text == "End data with <CR><LF>.<CR><LF>"
        c.send_raw(body8 + b".\r\n")
        assert c.expect(250).text == "2.0.0 upstream queued it as U1"
        # BDAT in two chunks: our 250 per chunk, the upstream's at the end.
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<c@example.org>"); c.expect(250)
        c.send_raw(b"BDAT %d\r\n" % 20 + BODY[:20])
        c.expect(250, "2.0.0")
        c.send_raw(b"BDAT %d LAST\r\n" % (len(BODY) - 20) + BODY[20:])
        assert c.expect(250).text == "2.0.0 upstream queued it as U2"
        c.send("QUIT")
        assert c.expect(221).text == "2.0.0 upstream says bye"
    assert up.messages[0]["content"] == unstuff(body8)
    assert up.messages[0]["from"] == "a@example.org"
    assert up.messages[0]["to"] == ["b@example.org"]
    assert up.messages[1]["content"] == BODY	# BDAT: no dots to undo
    assert up.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT",
        "DATA", "QUIT"]


def test_upstream_answer_comes_before_the_session_time_limit_421(
        make_postern, upstreams):
    """The session's time limit passes while the upstream has the
    message's end: the upstream took it, so its answer is the reply, and
    the 421 follows; the client is not told to send it again."""
    up = upstreams(data_pause=2.5)
    front = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d" %
        up.port, after=["limit session-timeout 1s"]))
    with front.session() as c:
        c.expect(220)
        c.send("EHLO client.example"); c.expect(250)
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<b@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(BODY + b".\r\n")
        assert c.expect(250).text == "2.0.0 upstream queued it as U1"
        r = c.read_reply(timeout=5)
        assert (r.code, r.esc) == (421, "4.4.2") and \
            "session time limit exceeded" in r.text, c.transcript()
        c.expect_closed()
    assert len(up.messages) == 1


def test_quit_after_rset_goes_up_after_it(make_postern, upstreams):
    """RSET gets postern's 250 at once, and goes up as RSET when the
    upstream had the transaction; a QUIT the client sends before the
    upstream answered that RSET waits for the answer, then goes up too,
    and the client gets the upstream's 221: the upstream's session ends
    with RSET and QUIT, as the client's did."""
    up = upstreams(rset_pause=0.5)
    front = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d" %
        up.port))
    with front.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RSET")
        assert c.expect(250).text == "2.0.0 Ok"	# postern's
        c.send("QUIT")
        assert c.expect(221).text == "2.0.0 upstream says bye"
    assert up.verbs() == ["EHLO", "MAIL", "RSET", "QUIT"]
    wait_transcript_end(front)
    assert_in_order([
        (">", "RSET"), ("}", "RSET"), (">", "QUIT"),
        ("{", "250 2.0.0 upstream reset"), ("}", "QUIT"),
        ("{", "221 2.0.0 upstream says bye"),
        ("<", "221 2.0.0 upstream says bye"),
    ], transcript(front))


def test_second_postern_upstream_gets_the_message(make_postern):
    """A postern behind a postern: the Maildir copy is the client's
    message, after the upstream's own Return-Path and Received:."""
    back = make_postern()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % back.port))
    with front.session() as c:
        c.hello()
        r = send_message(c, "a@example.org", ["bob@localhost"], BODY)
        assert "queued as" in r.text	# the upstream postern's 250
    wait_for(lambda: back.maildir("bob"), what="the upstream's delivery")
    rp, received, rest = split_delivered(read_bytes(back.maildir("bob")[0]))
    assert rp == "Return-Path: <a@example.org>"
    assert rest == unstuff(BODY).replace(b"\r\n", b"\n")
    assert not front.maildir("bob")		# the front keeps nothing


def test_ehlo_relayed_and_filtered(make_postern, upstreams):
    """The upstream's multi-line EHLO comes through line for line for
    what the proxy relays as it is; STARTTLS and AUTH are the proxy's
    own, and DSN, ETRN, VRFY and XCLIENT are left out; AUTH is refused
    with 500 and never reaches the upstream."""
    up = upstreams(extra_ehlo=["PIPELINING", "ENHANCEDSTATUSCODES",
        "CHUNKING", "DSN", "ETRN", "VRFY", "XCLIENT ADDR NAME",
        "AUTH PLAIN LOGIN", "STARTTLS"])
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port, before=["tls self-signed "
        "{tmp}/certs"]))
    with front.session() as c:
        c.expect(220)
        c.send("EHLO client.example")
        r = c.expect(250)
    # aiosmtpd: "up.example", SIZE 33554432, 8BITMIME, SMTPUTF8, HELP,
    # then our extras.
    assert r.lines == ["250-up.example", "250-SIZE 33554432",
        "250-8BITMIME", "250-SMTPUTF8", "250-PIPELINING",
        "250-ENHANCEDSTATUSCODES", "250-CHUNKING", "250 STARTTLS"], r
    with front.session() as c:
        c.hello()
        c.send("AUTH PLAIN AGEAYg=="); c.expect(500, "5.5.1")
        c.send("NOOP"); c.expect(250)
    assert "AUTH" not in up.verbs()


def test_helo_relayed(make_postern, upstreams):
    """HELO: the upstream is set up with EHLO (for its STARTTLS), then
    gets the client's HELO, whose reply the client gets."""
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port))
    with front.session() as c:
        c.expect(220)
        c.send("HELO client.example")
        assert c.expect(250).text == "up.example"
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
    assert up.verbs()[:3] == ["EHLO", "HELO", "MAIL"]


# ----- TLS and routing ----------------------------------------------------------

from test_tls import PKI	# noqa: E402  the throw-away CA and certificates


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("proxy-pki"))


def test_client_starttls_two_names_two_upstreams(make_postern, upstreams,
        pki, tmp_path):
    """Two clients ask for two TLS names: each gets the certificate for
    its name, and its session goes to the upstream the table names for
    it.  Before TLS the proxy answers EHLO itself (the upstream is not
    known yet)."""
    a = upstreams(name="a.upstream")
    b = upstreams(name="b.upstream")
    (tmp_path / "by-sni").write_text("mail.example.org up-a\n"
        "x.example.net up-b\n")
    front = make_postern(config=proxy_config("proxy up-a proxy-sni <by-sni>",
        before=["upstream up-a smtp://127.0.0.1:%d" % a.port,
            "upstream up-b smtp://127.0.0.1:%d" % b.port,
            "table by-sni file:%s" % (tmp_path / "by-sni")] +
        pki.config_lines()))
    for name, up, other in (("mail.example.org", a, b),
            ("x.example.net", b, a)):
        with front.session() as c:
            r = c.hello()
            assert r.lines[0].startswith("250-front.example "), r
            assert r.lines[-1] == "250 STARTTLS"
            c.starttls(pki.context(), server_hostname=name)
            assert c.sock.getpeercert()["subjectAltName"][0][1] in (name,
                "*.example.net")
            c.send("EHLO client.example")
            r = c.expect(250)
            assert r.lines[0] == "250-" + up.name, r
            assert not any("STARTTLS" in l for l in r.lines)
            send_message(c, "a@example.org", ["to@%s" % name], BODY)
        assert up.messages[-1]["to"] == ["to@%s" % name]
        assert up.messages[-1]["content"] == unstuff(BODY)
        assert not any(m["to"] == ["to@%s" % name] for m in other.messages)


def test_upstream_starttls_verified_with_client_sni(make_postern, upstreams,
        pki):
    """smtp+starttls:// with the test CA: the proxy speaks STARTTLS to the
    upstream (which requires it), passes on the client's TLS name, and
    the client never sees the upstream's STARTTLS; a wrong CA fails the
    session with 421."""
    up = upstreams(name="mail.example.org", tls=(pki.path("mail.pem"),
        pki.path("mail.key")), require_starttls=True)
    front = make_postern(config=proxy_config("proxy secure",
        before=["upstream secure smtp+starttls://127.0.0.1:%d ca \"%s\" "
        "sni pass" % (up.port, pki.path("ca.pem"))] + pki.config_lines()))
    with front.session() as c:
        c.expect(220)
        c.send("STARTTLS"); c.expect(220)
        c.wrap_tls(pki.context(), server_hostname="mail.example.org")
        c.send("EHLO client.example")
        r = c.expect(250)
        assert r.lines[0] == "250-mail.example.org"
        assert not any("STARTTLS" in l for l in r.lines)
        send_message(c, "a@example.org", ["b@example.org"], BODY)
    assert up.messages[0]["tls"] is True
    assert up.messages[0]["content"] == unstuff(BODY)
    assert up.sni == ["mail.example.org"]
    wait_for(lambda: log_events(front, "proxy-tls"), what="proxy-tls line")
    # The upstream's certificate names another host: no session.
    bad = make_postern(config=proxy_config("proxy secure",
        before=["upstream secure smtp+starttls://127.0.0.1:%d ca \"%s\" "
        "sni other.example" % (up.port, pki.path("ca.pem"))]))
    with bad.session() as c:
        c.expect(220)
        c.send("EHLO client.example")
        c.expect(421, "4.4.2")
        c.expect_closed()
    assert len(up.messages) == 1


def test_upstream_starttls_when_offered(make_postern, upstreams, pki):
    """smtp://: STARTTLS because the upstream offers it (its certificate
    not checked, RFC 7435); the client still gets our STARTTLS only."""
    up = upstreams(name="mail.example.org", tls=(pki.path("mail.pem"),
        pki.path("mail.key")))
    front = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d" %
        up.port))
    with front.session() as c:
        r = c.hello()
        assert not any("STARTTLS" in l for l in r.lines), r
        send_message(c, "a@example.org", ["b@example.org"], BODY)
    assert up.messages[0]["tls"] is True
    assert up.verbs().count("EHLO") == 2	# again after STARTTLS


def test_upstream_implicit_tls(make_postern, upstreams, pki):
    """smtp+tls://: TLS from the first byte, the name given with sni."""
    up = upstreams(name="mail.example.org", tls=(pki.path("mail.pem"),
        pki.path("mail.key")), implicit_tls=True)
    front = make_postern(config=proxy_config("proxy tls465",
        before=["upstream tls465 smtp+tls://127.0.0.1:%d ca \"%s\" "
        "sni mail.example.org" % (up.port, pki.path("ca.pem"))]))
    with front.session() as c:
        r = c.hello()
        assert r.lines[0] == "250-mail.example.org"
        send_message(c, "a@example.org", ["b@example.org"], BODY)
    # (aiosmtpd's own start-up probe shakes hands without a name)
    assert [n for n in up.sni if n is not None] == ["mail.example.org"]
    assert up.messages[0]["content"] == unstuff(BODY)


def test_route_by_recipient_domain(make_postern, upstreams, tmp_path):
    """proxy-rcpt: the first recipient's domain picks the upstream (the
    client's MAIL goes up then); a recipient of another upstream in the
    same transaction gets 452 to try again; the next transaction can go
    elsewhere; a domain the table lacks goes to the listener's."""
    one, two, dflt = upstreams(name="one.up"), upstreams(name="two.up"), \
        upstreams(name="default.up")
    (tmp_path / "by-domain").write_text("one.example one\ntwo.example two\n")
    front = make_postern(config=proxy_config("proxy dflt proxy-rcpt "
        "<by-domain>", before=[
            "upstream one smtp://127.0.0.1:%d" % one.port,
            "upstream two smtp://127.0.0.1:%d" % two.port,
            "upstream dflt smtp://127.0.0.1:%d" % dflt.port,
            "table by-domain file:%s" % (tmp_path / "by-domain")]))
    with front.session() as c:
        r = c.hello()
        assert r.lines[0].startswith("250-front.example ")  # ours: not known yet
        c.send("MAIL FROM:<s@example.org>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<x@one.example>")
        assert c.expect(250).text == "2.1.5 upstream takes the recipient"
        c.send("RCPT TO:<y@two.example>"); c.expect(452, "4.5.3")
        c.send("RCPT TO:<z@one.example>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(BODY + b".\r\n"); c.expect(250)
        send_message(c, "s@example.org", ["y@two.example"], BODY)
        send_message(c, "s@example.org", ["w@elsewhere.example"], BODY)
    assert [m["to"] for m in one.messages] == [["x@one.example",
        "z@one.example"]]
    assert [m["to"] for m in two.messages] == [["y@two.example"]]
    assert [m["to"] for m in dflt.messages] == [["w@elsewhere.example"]]
    assert ("RCPT", "y@two.example") not in one.events


@pytest.mark.parametrize("kind", ["file", "pgsql"])
def test_route_by_recipient_domain_in_any_spelling(make_postern, upstreams,
        tmp_path, request, kind):
    """proxy-rcpt takes a domain as a match rule does: a key with UTF-8
    labels (b\u00fccher.example) holds for the recipient's A-label and for
    its U-label in capitals, a key written as an A-label for the U-label;
    a table that answers later (pgsql) is asked in each spelling too."""
    one, two, dflt = (upstreams(name=n, smtputf8=True) for n in
        ("one.up", "two.up", "default.up"))
    rows = [("b\u00fccher.example", "one"), ("xn--caf-dma.example", "two")]
    if kind == "file":
        (tmp_path / "by-domain").write_text("".join("%s %s\n" % r
            for r in rows))
        table = "table by-domain file:%s" % (tmp_path / "by-domain")
    else:
        pg = request.getfixturevalue("pg")
        pg.sql("CREATE TABLE routes (domain text PRIMARY KEY, up text);" +
            "".join("INSERT INTO routes VALUES ('%s', '%s');" % r
            for r in rows))
        table = ('table by-domain pgsql:"%s" query "SELECT up FROM routes '
            'WHERE domain = $1"' % pg.conninfo())
    front = make_postern(config=proxy_config("proxy dflt proxy-rcpt "
        "<by-domain>", before=[
            "upstream one smtp://127.0.0.1:%d" % one.port,
            "upstream two smtp://127.0.0.1:%d" % two.port,
            "upstream dflt smtp://127.0.0.1:%d" % dflt.port, table]))
    to = ["a@xn--bcher-kva.example", "b@B\u00dcCHER.example",
        "c@XN--BCHER-KVA.Example", "d@caf\u00e9.example",
        "e@CAF\u00c9.example", "f@elsewhere.example"]
    with front.session() as c:
        c.hello()
        for rcpt in to:
            send_message(c, "s@example.org", [rcpt], BODY, " SMTPUTF8")
    assert [m["to"] for m in one.messages] == [[r] for r in to[:3]]
    assert [m["to"] for m in two.messages] == [[r] for r in to[3:5]]
    assert [m["to"] for m in dflt.messages] == [[to[5]]]


def by_domain_front(make_postern, upstreams, tmp_path, table, after=()):
    """A proxy-rcpt front: upstreams "one" and "two" (returned with it), the
    by-domain table holding TABLE, AFTER lines behind the listen line."""
    one, two = upstreams(name="one.up"), upstreams(name="two.up")
    (tmp_path / "by-domain").write_text(table)
    front = make_postern(config=proxy_config("proxy one proxy-rcpt "
        "<by-domain>", before=[
            "upstream one smtp://127.0.0.1:%d" % one.port,
            "upstream two smtp://127.0.0.1:%d" % two.port,
            "table by-domain file:%s" % (tmp_path / "by-domain")],
        after=after))
    return front, one, two


@pytest.mark.parametrize("odd, want", [
    ("v@two.example", "452 4.5.3 <v@two.example>: another server takes this "
        "recipient; send it in a transaction of its own"),
    ("v@bad.example", "451 4.3.0 <v@bad.example>: Temporary lookup failure, "
        "try again later"),
])
def test_pipelined_recipient_refused_once(make_postern, upstreams, tmp_path,
        odd, want):
    """proxy-rcpt, the client pipelining MAIL, three RCPTs and DATA: the
    recipient postern refuses itself (another upstream's, or one the table
    names no upstream for) gets its refusal once, in its place; the one
    after it gets the upstream's reply, and DATA its 354 (RFC 2920)."""
    front, one, two = by_domain_front(make_postern, upstreams, tmp_path,
        "one.example one\ntwo.example two\nbad.example nowhere\n")
    with front.session() as c:
        c.hello()
        c.send_raw("MAIL FROM:<s@example.org>\r\nRCPT TO:<u@one.example>\r\n"
            "RCPT TO:<%s>\r\nRCPT TO:<w@one.example>\r\nDATA\r\n" % odd)
        c.expect(250, "2.1.0")
        assert c.expect(250).text == "2.1.5 upstream takes the recipient"
        assert c.read_reply().lines == [want]
        assert c.expect(250).text == "2.1.5 upstream takes the recipient"
        c.expect(354)
        c.send_raw(BODY + b".\r\n")
        assert c.expect(250).text == "2.0.0 upstream queued it as U1"
        c.send("QUIT"); c.expect(221)
    assert [m["to"] for m in one.messages] == [["u@one.example",
        "w@one.example"]]
    assert two.events == []
    assert not log_events(front, "proxy-error")


def test_upstream_left_for_another_gets_quit(make_postern, upstreams,
        tmp_path):
    """proxy-rcpt: when the next transaction goes to another upstream, the
    one left behind gets QUIT before its connection closes (RFC 5321
    4.1.1.10), as the last one does at the client's QUIT."""
    front, one, two = by_domain_front(make_postern, upstreams, tmp_path,
        "one.example one\ntwo.example two\n")
    with front.session() as c:
        c.hello()
        send_message(c, "s@example.org", ["u@one.example"], BODY)
        send_message(c, "s@example.org", ["v@two.example"], BODY)
        wait_for(lambda: one.verbs()[-1:] == ["QUIT"],
            what="QUIT at upstream one")
        send_message(c, "s@example.org", ["w@one.example"], BODY)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: two.verbs()[-1:] == ["QUIT"], what="QUIT at two")
    wait_for(lambda: one.verbs()[-1:] == ["QUIT"], what="QUIT at one")
    assert one.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT",
        "EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert two.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    # Each QUIT is in the transcript, the two of postern's own included.
    assert transcript(front).count(("}", "QUIT")) == 3


@pytest.mark.parametrize("end", ["idle", "hang-up"])
def test_client_gone_upstream_gets_quit(make_postern, upstreams, end):
    """A client that times out between commands, or hangs up, ends its
    upstream's session with QUIT too, the transaction it had there
    abandoned."""
    up = upstreams()
    front = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d" %
        up.port, after=["limit idle-timeout 1s"]))
    c = front.session()
    c.hello()
    c.send("MAIL FROM:<a@example.org>"); c.expect(250)
    c.send("RCPT TO:<b@example.org>"); c.expect(250)
    if end == "idle":
        c.expect(421, "4.4.2", timeout=10)
        c.expect_closed()
    c.close()
    wait_for(lambda: up.verbs()[-1:] == ["QUIT"], what="QUIT upstream")
    assert up.verbs() == ["EHLO", "MAIL", "RCPT", "QUIT"]
    assert up.messages == []


def test_upstream_silent_at_quit_is_closed_soon(make_postern, raw_upstreams):
    """An upstream that never answers the QUIT of a client's session gone
    away is waited for only a moment (2 s), by no one; one still waited
    for when postern stops is closed then."""
    up = raw_upstreams(quit_reply=None)
    front = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d" %
        up.port))

    def hang_up():
        c = front.session()
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.close()

    hang_up()
    with front.session() as c:	# meanwhile postern serves on
        c.hello()
        c.send("NOOP"); c.expect(250)
    wait_for(lambda: len(up.quits) == 2, what="two QUITs upstream")
    wait_for(lambda: len(up.closes) >= 1, timeout=10, what="the close")
    took = up.closes[0] - up.quits[0]
    assert 1.5 <= took <= 4, "closed %.2fs after QUIT, want 2s" % took
    hang_up()
    wait_for(lambda: len(up.quits) == 3, what="the third QUIT")
    front.stop()
    wait_for(lambda: len(up.closes) == 3, what="the close at the stop")
    took = up.closes[2] - up.quits[2]
    assert took < 1.5, "closed %.2fs after QUIT, want at the stop" % took


# ----- chains run before anything goes up ---------------------------------------

def test_chain_tarpit_and_reject_at_rcpt_never_reach_upstream(make_postern,
        upstreams):
    """A tarpit delays the RCPT before it goes up; a recipient the chain
    refuses is answered by the proxy and the upstream never hears of it."""
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port, after=["state memory",
        "on rcpt { tarpit 1s; verify <known> }"],
        before=["table known { good@example.org }"]))
    with front.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        t0 = time.monotonic()
        c.send("RCPT TO:<bad@example.org>")
        c.expect(550)
        assert time.monotonic() - t0 >= 0.9
        c.send("RCPT TO:<good@example.org>")
        assert c.expect(250).text == "2.1.5 upstream takes the recipient"
        c.send("DATA"); c.expect(354)
        c.send_raw(BODY + b".\r\n"); c.expect(250)
    rcpts = [e[1] for e in up.events if e[0] == "RCPT"]
    assert rcpts == ["good@example.org"], up.events
    assert up.messages[0]["to"] == ["good@example.org"]


def test_chain_refusal_at_connect_opens_no_upstream(make_postern,
        upstreams):
    """A 521 at connect (nomail) is the proxy's: no upstream connection is
    ever made for the session."""
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port, after=["state memory",
        "on connect { nomail }"]))
    with front.session() as c:
        c.expect(521, "5.3.2")
        c.expect_closed()
    assert not log_events(front, "proxy-connect")
    assert up.events == []


LUA_EOM = '''
function eom(facts, state)
  for line in facts.lines() do
    if line:find("^Subject: spam") then
      return {"reject", 550, "5.7.1", "the proxy's filter says no"}
    end
  end
end
'''


def test_lua_eom_refuses_before_the_upstream_sees_data(make_postern,
        upstreams, tmp_path):
    """With an eom chain the message is held until it decides: a refused
    message never reaches the upstream (no DATA at all, its envelope
    reset); an accepted one goes up whole after the client's dot."""
    (tmp_path / "eom.lua").write_text(LUA_EOM)
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port, after=["state memory",
        'on eom { lua "%s" }' % (tmp_path / "eom.lua")]))
    spam = BODY.replace(b"Subject: through", b"Subject: spam offer")
    with front.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<b@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(spam + b".\r\n")
        r = c.expect(550, "5.7.1")
        assert "the proxy's filter says no" in r.text
        assert "DATA" not in up.verbs()
        r = send_message(c, "a@example.org", ["b@example.org"], BODY)
        assert r.text == "2.0.0 upstream queued it as U1"
    # The session's end goes up too, in its own time.
    wait_for(lambda: up.verbs()[-1:] == ["QUIT"], what="QUIT upstream")
    assert up.verbs() == ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT",
        "DATA", "QUIT"], up.events
    assert up.messages[0]["content"] == unstuff(BODY)
    wait_for(lambda: not front.unaccepted_files(),
        what="the held file to go")


def test_milter_at_eom_refuses_and_edits_headers(make_postern, upstreams,
        tmp_path):
    """A milter's eom verdict is the proxy's answer (the upstream sees no
    DATA); its header edits go up with the message, and envelope edits,
    which the upstream has already, are logged as refused."""
    from test_milter import MilterProc
    judge = MilterProc(tmp_path, "by-header", [])
    editor = MilterProc(tmp_path, "modify", [])
    try:
        up = upstreams()
        front = make_postern(config=proxy_config(
            "proxy smtp://127.0.0.1:%d" % up.port, after=["state memory",
            'on eom { milter "%s" }' % judge.spec]))
        rejected = b"X-Milter-Verdict: reply 554 5.7.1 milter says no\r\n" \
            + BODY
        with front.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<b@example.org>"); c.expect(250)
            c.send("DATA"); c.expect(354)
            c.send_raw(rejected + b".\r\n")
            assert "milter says no" in c.expect(554, "5.7.1").text
        assert "DATA" not in up.verbs()
        up2 = upstreams()
        front2 = make_postern(config=proxy_config(
            "proxy smtp://127.0.0.1:%d" % up2.port, after=["state memory",
            'on eom { milter "%s" }' % editor.spec]))
        body = b"Subject: original\r\nX-Remove: me\r\n\r\nbody\r\n"
        with front2.session() as c:
            c.hello()
            send_message(c, "a@example.org", ["bob@localhost"], body)
        got = up2.messages[0]["content"]
        assert got.startswith(b"X-Top: first\r\n"), got
        assert b"Subject: changed by milter\r\n" in got
        assert b"X-Remove" not in got and b"X-Milter: yes\r\n" in got
        assert got.endswith(b"\r\n\r\nbody\r\n")
        assert up2.messages[0]["to"] == ["bob@localhost"]
        wait_for(lambda: log_events(front2, "modify-refused"),
            what="modify-refused lines")
    finally:
        judge.stop()
        editor.stop()


# ----- an upstream that fails -----------------------------------------------------

def test_upstream_killed_mid_data(make_postern):
    """The upstream dies while the content streams up: the client gets
    421 4.4.2 and the close, never a 250, and nothing is delivered."""
    back = make_postern()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % back.port))
    with front.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: half\r\n\r\n" + b"y" * 500 + b"\r\n")
        wait_for(lambda: log_events(back, "mail"), what="the upstream's MAIL")
        back.kill9()
        r = c.expect(421, "4.4.2", timeout=10)
        assert "upstream connection lost" in r.text
        c.expect_closed()
    assert not back.maildir("bob")
    assert not [f for f in back.spool_files("env")]
    wait_for(lambda: log_events(front, "proxy-lost"), what="proxy-lost")


def test_upstream_never_greets(make_postern, raw_upstreams):
    """An upstream that accepts and never speaks: 421 4.4.2 at the EHLO
    (the proxy connects then), after its greeting timeout; one that
    refuses the connection: the same at once."""
    silent = raw_upstreams(silent=True)
    front = make_postern(config=proxy_config("proxy mute",
        before=["upstream mute smtp://127.0.0.1:%d timeout greeting 1s" %
        silent.port]))
    with front.session() as c:
        c.expect(220)
        t0 = time.monotonic()
        c.send("EHLO client.example")
        r = c.expect(421, "4.4.2", timeout=10)
        assert "upstream not available" in r.text
        assert time.monotonic() - t0 >= 0.9
        c.expect_closed()
    closed = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d" %
        free_port()))
    with closed.session() as c:
        c.expect(220)
        c.send("EHLO client.example")
        c.expect(421, "4.4.2")
        c.expect_closed()


def test_upstream_refuses_at_greeting(make_postern, raw_upstreams, upstreams):
    """An upstream greeting with 554 ends the session with its reply."""
    back = make_postern(config=None, extra=())
    back.stop()
    back.write_config(open(back.conf).read() + "on connect { reject 554 "
        "5.7.1 go away }\nstate memory\n")
    back.start()
    front = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d" %
        back.port))
    with front.session() as c:
        c.expect(220)
        c.send("EHLO client.example")
        assert "go away" in c.expect(554, "5.7.1").text
        c.expect_closed()


def test_upstream_closing_idle_session_gives_421(make_postern):
    """The upstream hangs up while the client is idle between commands:
    421 4.4.2 to the client and the close."""
    back = make_postern(extra=["limit idle-timeout 1s"])
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % back.port))
    with front.session() as c:
        c.hello()
        r = c.expect(421, "4.4.2", timeout=10)
        assert "upstream connection lost" in r.text
        c.expect_closed()


# ----- the client side's rules hold -------------------------------------------------

def test_bare_lf_refused_in_proxy_mode(make_postern, upstreams):
    """A bare LF in a command or in the content gets the proxy's 5xx; the
    upstream never gets the command, nor an end of the content: its
    connection is dropped mid-DATA, and the next message goes through a
    new one."""
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port))
    with front.session() as c:
        c.hello()
        # A bare LF ends no line: the two are one line, refused.
        c.send_raw(b"MAIL FROM:<a@example.org>\nRCPT TO:<b@example.org>"
            b"\r\n")
        c.expect(500, "5.5.2")
        c.send("NOOP"); c.expect(250)
        assert "MAIL" not in up.verbs() and "RCPT" not in up.verbs()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<b@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: x\r\n\r\nbare\nline\r\n.\r\n")
        c.expect(554, "5.6.0")
        r = send_message(c, "a@example.org", ["b@example.org"], BODY)
        assert r.text == "2.0.0 upstream queued it as U1"
    assert len(up.messages) == 1
    assert up.messages[0]["content"] == unstuff(BODY)
    wait_for(lambda: log_events(front, "proxy-abort"), what="proxy-abort")


def test_transcript_holds_both_sides_in_order(make_postern, upstreams):
    """Each line of the transaction log is marked with its side: '>' from
    the client, '<' to it, '}' to the upstream, '{' from it."""
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port))
    with front.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["b@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    wait_transcript_end(front)
    want = [
        (">", "EHLO client.example"),
        ("{", "220 up.example test upstream"),
        ("}", "EHLO client.example"),
        ("{", "250-up.example"),
        ("<", "250-up.example"),
        (">", "MAIL FROM:<a@example.org>"),
        ("}", "MAIL FROM:<a@example.org>"),
        ("{", "250 2.1.0 upstream takes the sender"),
        ("<", "250 2.1.0 upstream takes the sender"),
        (">", "RCPT TO:<b@example.org>"),
        ("}", "RCPT TO:<b@example.org>"),
        ("<", "250 2.1.5 upstream takes the recipient"),
        (">", "DATA"), ("}", "DATA"), ("{", "354 End data with "
        "<CR><LF>.<CR><LF>"), ("<", "354 End data with <CR><LF>.<CR><LF>"),
        ("{", "250 2.0.0 upstream queued it as U1"),
        ("<", "250 2.0.0 upstream queued it as U1"),
        (">", "QUIT"), ("}", "QUIT"), ("{", "221 2.0.0 upstream says bye"),
        ("<", "221 2.0.0 upstream says bye"),
    ]
    got = transcript(front)
    assert_in_order(want, got)


TRANSCRIPT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z "
    r"(\S) (.*)$")


def test_transcript_with_content_and_header_in_order(make_postern,
        upstreams):
    """With "data" the client's content lies between the DATA exchange
    and the upstream's answer to it, each line timestamped, the stamps
    never going back; the PROXY header sent up is in it too."""
    up = upstreams(proxy_protocol=True)
    front = make_postern(config=proxy_config("proxy pp", before=[
        "upstream pp smtp://127.0.0.1:%d proxy-protocol v1" % up.port],
        translog="data"))
    with front.session() as c:
        c.hello()
        client_port = c.sock.getsockname()[1]
        send_message(c, "a@example.org", ["b@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    wait_transcript_end(front)
    d = front.path("translog")
    (name,) = os.listdir(d)
    with open(os.path.join(d, name), "rb") as f:
        raw = f.read().decode("latin-1").splitlines()
    lines = [TRANSCRIPT_LINE.match(l) for l in raw]
    assert all(lines), "a line without stamp and mark:\n" + "\n".join(raw)
    stamps = [m.group(1) for m in lines]
    assert stamps == sorted(stamps), "\n".join(raw)
    got = [(m.group(2), m.group(3)) for m in lines]
    content = unstuff(BODY).decode("latin-1").split("\r\n")[:-1]
    want = [
        ("#", "connect ip=127.0.0.1 port=%d" % client_port),
        ("<", "220 front.example ESMTP postern"),
        (">", "EHLO client.example"),
        ("}", "PROXY TCP4 127.0.0.1 127.0.0.1 %d %d" % (client_port,
            front.port)),
        ("{", "220 up.example test upstream"),
        ("}", "EHLO client.example"),
        (">", "DATA"), ("}", "DATA"), ("{", "354 End data with "
        "<CR><LF>.<CR><LF>"), ("<", "354 End data with <CR><LF>.<CR><LF>"),
    ] + [("D", l) for l in content] + [
        (".", "end of data, %d octets" % len(unstuff(BODY))),
        ("{", "250 2.0.0 upstream queued it as U1"),
        ("<", "250 2.0.0 upstream queued it as U1"),
        (">", "QUIT"), ("}", "QUIT"), ("{", "221 2.0.0 upstream says bye"),
        ("<", "221 2.0.0 upstream says bye"),
    ]
    assert_in_order(want, got)
    # Between the 354 and the end of data: the content and nothing else.
    a = got.index(("<", "354 End data with <CR><LF>.<CR><LF>"))
    assert got[a + 1:a + 1 + len(content) + 1] == want[10:11 + len(content)]


def test_proxy_header_sent_upstream(make_postern, upstreams):
    """proxy-protocol v1 and v2: the upstream learns the client's address
    and port, not the proxy's."""
    for version in (1, 2):
        up = upstreams(proxy_protocol=True)
        front = make_postern(config=proxy_config("proxy pp",
            before=["upstream pp smtp://127.0.0.1:%d proxy-protocol v%d" %
            (up.port, version)]))
        c = Client(front.port, source="127.0.0.9")
        front.clients.append(c)
        c.hello()
        client_port = c.sock.getsockname()[1]
        send_message(c, "a@example.org", ["b@example.org"], BODY)
        c.close()
        proxied = [e for e in up.events if e[0] == "PROXY"]
        assert proxied == [("PROXY", ("127.0.0.9", client_port,
            version))], up.events


def test_balancer_client_goes_up_in_the_header(make_postern, upstreams):
    """Behind a load balancer ("proxy-protocol" on the listener) the
    header sent upstream names the client and the address it reached as
    the balancer's header said, not the balancer nor our socket."""
    for version in (1, 2):
        up = upstreams(proxy_protocol=True)
        front = make_postern(config=proxy_config(
            "proxy-protocol proxy pp", before=["upstream pp "
            "smtp://127.0.0.1:%d proxy-protocol v%d" % (up.port, version)]))
        c = Client(front.port)
        front.clients.append(c)
        c.send_raw(b"PROXY TCP4 203.0.113.9 192.0.2.25 40001 25\r\n")
        c.hello()
        send_message(c, "a@example.org", ["b@example.org"], BODY)
        c.close()
        assert [e for e in up.events if e[0] == "PROXY"] == [("PROXY",
            ("203.0.113.9", 40001, version))], up.events
        assert up.proxy_dst == [("192.0.2.25", 25)], up.proxy_dst


def test_early_talker_on_a_proxy_listener(make_postern, upstreams):
    """"early-talker close replies": a client that sends MAIL with its
    EHLO gets our 554 instead of the upstream's EHLO reply, and its MAIL
    never goes up."""
    up = upstreams()
    front = make_postern(config=proxy_config("proxy smtp://127.0.0.1:%d"
        % up.port, after=["early-talker close replies"]))
    with front.session() as c:
        c.expect(220)
        c.send_raw(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n")
        r = c.expect(554, "5.5.0")
        assert "talked before the reply to EHLO" in r.text, r
        c.expect_closed()
    wait_for(lambda: log_events(front, "disconnect"), what="the disconnect")
    assert log_events(front, "early-talker")[0][0]["when"] == \
        "before the reply to EHLO"
    assert "MAIL" not in up.verbs(), up.events


def test_auth_relayed_to_the_upstream(make_postern, upstreams):
    """"auth-plaintext" on a proxy listener: the client's AUTH is checked
    by the upstream (235 or 535 as it said), and its password never
    shows in the transcript."""
    up = upstreams(users={"alice": "s3cret"},
        extra_ehlo=["AUTH PLAIN LOGIN"])
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d auth-plaintext" % up.port))
    import base64
    good = base64.b64encode(b"\0alice\0s3cret").decode()
    bad = base64.b64encode(b"\0alice\0wrong").decode()
    with front.session() as c:
        r = c.hello()
        assert "250 AUTH PLAIN LOGIN" in r.lines or \
            "250-AUTH PLAIN LOGIN" in r.lines, r
        c.send("AUTH PLAIN " + bad); c.expect(535)
        c.send("AUTH PLAIN " + good); c.expect(235)
        send_message(c, "alice@example.org", ["b@example.org"], BODY)
    assert [e for e in up.events if e[0] == "AUTH"] == [("AUTH", "alice",
        False), ("AUTH", "alice", True)]
    text = "\n".join(t for _s, t in transcript(front))
    assert "s3cret" not in text and good not in text


@pytest.mark.parametrize("mech,pass_len,want_lines", [
    # "AUTH PLAIN " + 496 octets of base64 + CRLF: 509, the longest fit.
    ("PLAIN", 365, [509]),
    # 513 octets would pass 512: the response goes on a line of its own.
    ("PLAIN", 366, [12, 502]),
    ("PLAIN", 400, [12, 546]),
    # The client's LOGIN goes up as PLAIN as well.
    ("LOGIN", 20, [49]),
    ("LOGIN", 400, [12, 546]),
])
def test_auth_response_too_long_for_the_command_line(make_postern,
        upstreams, mech, pass_len, want_lines):
    """RFC 4954 4: a client's credentials that would make the upstream's
    AUTH PLAIN command longer than 512 octets (RFC 5321 4.5.3.1.4) go up
    after the upstream's 334 instead; an upstream that enforces the limit
    logs the client in and takes its message, and the transcript shows no
    part of the response."""
    import base64
    up = upstreams.scripted(ehlo=("AUTH PLAIN LOGIN",))
    up.line_max = 512
    password = "P" * pass_len
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d auth-plaintext" % up.port))

    def b64(s):
        return base64.b64encode(s.encode()).decode()
    with front.session() as c:
        c.hello()
        if mech == "PLAIN":
            c.send("AUTH PLAIN " + b64("\0alice\0" + password))
        else:
            c.send("AUTH LOGIN"); c.expect(334)
            c.send(b64("alice")); c.expect(334)
            c.send(b64(password))
        c.expect(235)
        send_message(c, "alice@example.org", ["b@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    assert [len(l) for l in up.auth_lines] == want_lines, up.auth_lines
    if len(want_lines) > 1:
        assert up.auth_lines[0] == b"AUTH PLAIN\r\n"
    assert up.logins == [("alice", password)]
    assert [(m, r) for m, r, _d in up.stored] == [("alice@example.org",
        ["b@example.org"])]
    want = [("}", "AUTH PLAIN"), ("}", "[secret]")] if len(want_lines) > 1 \
        else [("}", "AUTH [secret]")]
    wait_for(lambda: ("{", "221 bye") in transcript(front),
        what="the transcript's upstream 221")
    got = transcript(front)
    assert_in_order(want + [("{", "235 2.7.0 ok")], got)
    text = "\n".join(t for _s, t in got)
    # The response's base64 begins "AGFs" ("\0al"): none of it shows.
    assert password not in text and "AGFs" not in text, text


def test_recipient_with_blanks_forges_no_field(make_postern, upstreams):
    """The rcpt line of a proxy listener writes the recipient as one word,
    as the other listeners do: a quoted local part with key=value words
    in it stays in the "to" field of the JSON line."""
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port, after=["log format json"]))
    rcpt = '"x level=error event=forged sid=123"@example.org'
    with front.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<%s>" % rcpt); c.expect(250)
        c.send("QUIT"); c.expect(221)

    [line] = wait_for(lambda: [json.loads(l) for l in
        front.log().splitlines() if '"action":"proxy"' in l],
        what="the rcpt line")
    assert (line["level"], line["event"]) == ("info", "rcpt"), line
    assert line["to"] == "<%s>" % rcpt.replace('"', r"\x22").replace(
        " ", r"\x20"), line
    assert line["sid"] != "123", line


# ----- bounded buffering ---------------------------------------------------------

def rss_kb(pid):
    return int(proc_status(pid)["VmRSS"].split()[0])


def test_slow_upstream_does_not_grow_memory(make_postern, raw_upstreams,
        monkeypatch):
    """A client pushes 50 MB at an upstream that reads slowly: the proxy
    stops reading the client while the upstream lags, so its memory stays
    far below the message's size (RSS sampled all along), and the message
    arrives whole."""
    # A small sanitizer quarantine, so RSS tracks what is live.
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") +
        ":quarantine_size_mb=4:thread_local_quarantine_size_kb=256")
    up = raw_upstreams(read_chunk=1 << 16, read_pause=0.01)
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port,
        after=["limit message-size 100M", "limit data-timeout 2m"]))
    line = b"z" * 998 + b"\r\n"
    n = 50 * 1024 * 1024 // len(line)
    c = front.session()
    c.hello()
    c.send("MAIL FROM:<a@example.org>"); c.expect(250)
    c.send("RCPT TO:<b@example.org>"); c.expect(250)
    c.send("DATA"); c.expect(354)
    base = rss_kb(front.proc.pid)
    sent = [0]

    def push():
        chunk = line * 256
        for _ in range(n // 256):
            c.sock.sendall(chunk)
            sent[0] += len(chunk)
        c.sock.sendall(b".\r\n")

    t = threading.Thread(target=push, daemon=True)
    t.start()
    peak = base
    deadline = time.monotonic() + 240
    while t.is_alive() and time.monotonic() < deadline:
        peak = max(peak, rss_kb(front.proc.pid))
        time.sleep(0.05)
    t.join(1)
    assert not t.is_alive(), "the client could not send within 240 s"
    r = c.expect(250, timeout=60)
    assert r.text == "2.0.0 raw took it"
    assert up.received == (n // 256) * 256 * len(line) + 3	# and ".\r\n"
    growth_mb = (peak - base) / 1024
    print("proxy RSS: %d kB before DATA, %d kB at most while 50 MB went "
        "through (+%.1f MB)" % (base, peak, growth_mb))
    assert growth_mb < 25, "RSS grew by %.1f MB" % growth_mb


def test_long_lines_go_up_folded(make_postern, upstreams):
    """What goes up is canonical DATA whatever the client's line-length
    allows: a 1500-octet line arrives folded (CRLF SP) at 998 octets."""
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port,
        after=["limit line-length 4000"]))
    long_line = b"L" * 1500
    with front.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["b@example.org"],
            b"Subject: long\r\n\r\n" + long_line + b"\r\n")
    got = up.messages[0]["content"]
    assert got == b"Subject: long\r\n\r\n" + long_line[:998] + b"\r\n " + \
        long_line[998:] + b"\r\n", got[:100]
    assert max(len(l) for l in got.split(b"\r\n")) <= 998


def test_routing_table_naming_no_upstream(make_postern, upstreams, tmp_path):
    """A table value that is no upstream is a temporary failure (451 4.3.0
    at RCPT), logged, and nothing goes up for that recipient."""
    up = upstreams()
    (tmp_path / "by-domain").write_text("bad.example nowhere\n")
    front = make_postern(config=proxy_config("proxy up proxy-rcpt "
        "<by-domain>", before=["upstream up smtp://127.0.0.1:%d" % up.port,
        "table by-domain file:%s" % (tmp_path / "by-domain")]))
    with front.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<x@bad.example>"); c.expect(451, "4.3.0")
        c.send("RCPT TO:<y@good.example>"); c.expect(250)
    wait_for(lambda: log_events(front, "proxy-route"), what="proxy-route")
    assert ("RCPT", "x@bad.example") not in up.events


def test_upstream_that_stops_reading_times_out(make_postern, raw_upstreams):
    """An upstream that takes no content for its data-block time is given
    up: the client gets 421 4.4.2 and the close, and no 250."""
    up = raw_upstreams(read_chunk=1, read_pause=60)
    front = make_postern(config=proxy_config("proxy stuck",
        before=["upstream stuck smtp://127.0.0.1:%d timeout data-block 1s" %
        up.port], after=["limit message-size 100M"]))
    c = front.session()
    c.hello()
    c.send("MAIL FROM:<a@example.org>"); c.expect(250)
    c.send("RCPT TO:<b@example.org>"); c.expect(250)
    c.send("DATA"); c.expect(354)

    def push():
        try:
            for _ in range(40 * 1024):
                c.sock.sendall(b"q" * 998 + b"\r\n")
        except OSError:
            pass		# the proxy hung up: expected

    t = threading.Thread(target=push, daemon=True)
    t.start()
    r = c.expect(421, "4.4.2", timeout=60)
    assert "upstream connection lost" in r.text
    wait_for(lambda: any("write timeout" in kv.get("why", "") for kv, _ in
        log_events(front, "proxy-lost")), what="the proxy-lost line")


def test_upstream_breaking_the_protocol(make_postern, raw_upstreams):
    """A reply that cannot answer the command (354 to RCPT) or is no reply
    at all: 421 4.4.2 and the end of the session, never relayed."""
    for bad in (b"354 go ahead", b"250-a\r\n251 mixed", b"hello there"):
        up = raw_upstreams(rcpt_reply=bad)
        front = make_postern(config=proxy_config(
            "proxy smtp://127.0.0.1:%d" % up.port))
        with front.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<b@example.org>")
            r = c.expect(421, "4.4.2")
            assert "upstream" in r.text
            c.expect_closed()


def test_client_gone_mid_data_upstream_keeps_nothing(make_postern,
        upstreams):
    """The client hangs up halfway through its content: the upstream's
    connection is dropped before any end of data, so it keeps nothing."""
    up = upstreams()
    front = make_postern(config=proxy_config(
        "proxy smtp://127.0.0.1:%d" % up.port))
    c = front.session()
    c.hello()
    c.send("MAIL FROM:<a@example.org>"); c.expect(250)
    c.send("RCPT TO:<b@example.org>"); c.expect(250)
    c.send("DATA"); c.expect(354)
    c.send_raw(b"Subject: cut\r\n\r\nhalf a message\r\n")
    c.close()
    wait_for(lambda: any(kv.get("messages") == "0" for kv, _ in
        log_events(front, "disconnect")), what="the disconnect")
    with front.session() as c2:	# the proxy goes on serving
        c2.hello()
        send_message(c2, "a@example.org", ["b@example.org"], BODY)
    assert [m["content"] for m in up.messages] == [unstuff(BODY)]
