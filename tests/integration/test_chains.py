"""
Handler chains through the real server: verdicts at each stage,
templates, tarpits that do not hold up other sessions, the RFC 7504 521
modes, trap, greylisting, dnsbl against a DNS responder started here,
ratelimit windows, reputation scores, header checks, discard/quarantine and
SIGHUP reload.  Tests that keep state across sessions (trap bans,
greylisting, ratelimit, reputation) run once per store engine: SQLite and a
real redis-server (the state_store fixture).
"""

import os
import re
import socket
import sqlite3
import struct
import threading
import time

import pytest

from conftest import (Client, chain_verdicts, log_events, make_config,
    run_cli, send_message, spool_empty, wait_for,
    TEMPLATE_HEAD, TEMPLATE_ACTIONS, DEFAULT_RULES)

QUAR_ACTION = 'action quar maildir "{tmp}/mail/quarantine/Maildir"\n'


def chains_config(chains, extra=(), state="state memory"):
    """A config with chains; state: the store line (the state_store fixture
    gives one per persistent engine)."""
    return make_config(list(extra) + [state] +
        chains.strip("\n").split("\n"),
        actions=TEMPLATE_ACTIONS + QUAR_ACTION)


def test_facts_local_address_and_crlf(make_postern):
    """local.ip/local.port name the listener the client reached; crlf says
    "no" once any line of the session ended in a bare LF."""
    srv = make_postern(config=chains_config(
        'on mail { reject 550 5.7.1 "to %{local.ip}:%{local.port} '
        'crlf=%{crlf}" }'))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>")
        r = c.expect(550, "5.7.1")
        assert r.text.endswith("to 127.0.0.1:%d crlf=yes" % srv.port), r
        c.send_raw(b"NOOP\nNOOP\r\n")   # a bare LF never ends a line
        c.expect(500, "5.5.2")
        c.send("MAIL FROM:<a@example.org>")
        r = c.expect(550, "5.7.1")
        assert r.text.endswith("crlf=no"), r


def test_reject_at_rcpt_with_template(make_postern):
    srv = make_postern(config=chains_config(
        'on rcpt { reject 550 5.7.1 "no mail for %{rcpt} from %{client.ip} '
        'via %{helo} at %{hostname}" }'))
    with srv.session() as c:
        c.hello("client.example")
        c.send("MAIL FROM:<a@example.org>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>")
        r = c.expect(550, "5.7.1")
        assert "no mail for bob@localhost from 127.0.0.1 via " \
            "client.example at test.example" in r.text


def test_each_stage_can_reject(make_postern):
    for stage, cmd in (("helo", "EHLO x.example"), ("mail",
            "MAIL FROM:<a@example.org>"), ("rcpt", "RCPT TO:<bob@localhost>"),
            ("data", "DATA")):
        srv = make_postern(config=chains_config(
            "on %s { reject 554 5.7.1 stage-%s }" % (stage, stage)))
        with srv.session() as c:
            c.expect(220)
            for prior in ("EHLO x.example", "MAIL FROM:<a@example.org>",
                    "RCPT TO:<bob@localhost>", "DATA"):
                c.send(prior)
                if prior == cmd:
                    r = c.expect(554, "5.7.1")
                    assert "stage-%s" % stage in r.text
                    break
                c.read_reply()
        srv.stop()


DATE = b"Date: Mon, 7 Dec 2026 06:00:00 +0000\r\n"


@pytest.mark.parametrize("head,code,esc,text,why", [
    pytest.param(b"From: a@example.org\r\nSubject: x\r\n", 550, "5.6.0",
        "Message lacks a Date: header field", "no Date: field",
        id="no-date"),
    pytest.param(DATE + b"From : a@example.org\r\n", 250, "2.0.0", None,
        None, id="obsolete-from"),
    pytest.param(DATE + b"From: a@example.org\r\nFrom : b@example.org\r\n",
        550, "5.6.0", "Message has 2 From: header fields", "2 From: fields",
        id="two-from"),
    pytest.param(DATE + b"".join(b"X-H%d: %s\r\n" % (i, b"y" * 900)
        for i in range(300)) + b"From: a@example.org\r\n", 552, "5.3.4",
        "Message header block too large (over 256 KiB)",
        "header block over 256 KiB", id="past-kept")])
def test_header_require_unique(make_postern, head, code, esc, text, why):
    """RFC 5322 4.5: "From :" (blanks before the colon) is a From field;
    a From past the header block kept is not reported missing.  A refusal's
    chain line says why, as other stages' refusals do."""
    srv = make_postern(config=chains_config(
        "on header { header require From,Date; header unique From }"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(head + b"\r\nbody\r\n.\r\n")
        r = c.expect(code, esc)
        assert text is None or r.text.endswith(text), r
    if code != 250:
        assert not srv.maildir("bob")
        got = chain_verdicts(srv)
        assert got == [("header", "reject", why)], got


def test_header_max_size_says_why(make_postern):
    srv = make_postern(config=chains_config("on eom { header max-size 1k }"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        head = DATE + b"X-Big: " + b"y" * 700 + b"\r\n\t" + b"z" * 700 + \
            b"\r\n"
        c.send_raw(head + b"\r\nbody\r\n.\r\n")
        r = c.expect(552, "5.3.4")
        assert r.text.endswith("Message header block too large"), r
    got = chain_verdicts(srv)
    assert len(got) == 1 and got[0][:2] == ("eom", "reject") and \
        re.fullmatch(r"header block of 14\d\d bytes over 1024", got[0][2]), \
        got


def test_size_says_what_was_over(make_postern):
    """size's chain line names the size it judged and the limit: the SIZE=
    declared at MAIL, the real size at the end of data."""
    srv = make_postern(config=chains_config(
        "on mail { size 10k }\non eom { size 1k }"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org> SIZE=20000"); c.expect(552, "5.3.4")
        c.send("MAIL FROM:<a@example.org> SIZE=900"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(DATE + b"Subject: s\r\n\r\n" + (b"z" * 98 +
            b"\r\n") * 20 + b".\r\n")
        c.expect(552, "5.3.4")
    got = chain_verdicts(srv, 2)
    assert got[0] == ("mail", "reject",
        "declared SIZE of 20000 bytes over 10240"), got
    assert len(got) == 2 and got[1][:2] == ("eom", "reject") and \
        re.fullmatch(r"message of 2\d\d\d bytes over 1024", got[1][2]), got


def test_verify_says_the_recipient_is_unknown(make_postern):
    srv = make_postern(config=chains_config("table users { bob@localhost }\n"
        "on rcpt { verify <users> }"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<carol@localhost>"); c.expect(550, "5.1.1")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
    assert chain_verdicts(srv, 1) == [("rcpt", "reject",
        "unknown recipient (not in table users)")], srv.log()[-2000:]


def test_header_checks_on_a_message_of_header_fields_only(make_postern):
    """RFC 5322 3.5: a message may end with its header fields and no empty
    line.  The header chain, started at the end, judges all of it; one
    longer than the 256 KiB kept still cannot be judged."""
    srv = make_postern(config=chains_config(
        "on header { header require From,Date; header unique From }"))
    big = b"".join(b"X-H%d: %s\r\n" % (i, b"y" * 900) for i in range(300))
    with srv.session() as c:
        c.hello()
        for head, code, esc in ((DATE + b"From: a@example.org\r\n"
                b"Subject: s\r\n", 250, "2.0.0"),
                (DATE + big + b"From: a@example.org\r\n", 552, "5.3.4")):
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<bob@localhost>"); c.expect(250)
            c.send("DATA"); c.expect(354)
            c.send_raw(head + b".\r\n")
            r = c.expect(code, esc)
            assert code == 250 or r.text.endswith("(over 256 KiB)"), r
    wait_for(lambda: len(srv.maildir("bob")) == 1,
        what="the header-only message delivered")
    assert b"Subject: s\n" in open(srv.maildir("bob")[0], "rb").read()


def test_a_header_block_of_just_the_size_kept_is_judged(make_postern):
    """A header block of exactly the 256 KiB kept (in LF form, as stored),
    its empty line right after it, is whole: judged, not "over"; one byte
    more is past what is kept."""
    srv = make_postern(config=chains_config(
        "on header { header require From,Date; header unique From }"))
    fixed = DATE + b"From: a@example.org\r\n"

    def head(total):
        """Fields whose LF form is total bytes."""
        lines, size = [], len(fixed) - 2
        while total - size > 1000:
            lines.append(b"X-F%d: %s\r\n" % (len(lines), b"y" * 900))
            size += len(lines[-1]) - 1
        pad = total - size - len(b"X-Pad: \n")
        return fixed + b"".join(lines) + b"X-Pad: " + b"z" * pad + b"\r\n"
    with srv.session() as c:
        c.hello()
        for total, code, esc in ((256 * 1024, 250, "2.0.0"),
                (256 * 1024 + 1, 552, "5.3.4")):
            h = head(total)
            assert len(h) - h.count(b"\r\n") == total
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<bob@localhost>"); c.expect(250)
            c.send("DATA"); c.expect(354)
            c.send_raw(h + b"\r\nbody\r\n.\r\n")
            r = c.expect(code, esc)
            assert code == 250 or r.text.endswith("(over 256 KiB)"), r


def test_nomail_at_connect(make_postern):
    srv = make_postern(config=chains_config("on connect { nomail }"))
    with srv.session() as c:
        r = c.expect(521, "5.3.2")
        assert "does not accept mail" in r.text
        c.expect_closed()


def test_nomail_every_command(make_postern):
    srv = make_postern(config=chains_config(
        "on connect { nomail every-command }"))
    with srv.session() as c:
        c.expect(220)
        c.send("EHLO x.example"); c.expect(521, "5.3.2")
        c.send("MAIL FROM:<a@example.org>"); c.expect(521, "5.3.2")
        c.send("QUIT"); c.expect(221)


def test_nomail_every_command_pipelined_body_is_not_errors(make_postern):
    # A client that pipelines its message text after DATA: every line of
    # it gets the 521 too, and none counts as a protocol error (which
    # would end the session with 421 "Too many errors" after 10).
    srv = make_postern(config=chains_config(
        "on connect { nomail every-command }"))
    body = b"".join(b"line %d of the text\r\n" % i for i in range(15))
    with srv.session() as c:
        c.expect(220)
        c.send_raw(b"EHLO x.example\r\nMAIL FROM:<a@example.org>\r\n"
            b"RCPT TO:<bob@localhost>\r\nDATA\r\nSubject: piped\r\n\r\n" +
            body + b".\r\nQUIT\r\n")
        for _ in range(4 + 2 + 15 + 1):
            c.expect(521, "5.3.2")
        c.expect(221)
        c.expect_closed()
    wait_for(lambda: "disconnect sid=" in srv.log(), what="the disconnect")
    assert srv.maildir("bob") == []
    assert "Too many errors" not in srv.log()


def test_disconnect_verdict(make_postern):
    srv = make_postern(config=chains_config(
        "on mail { disconnect 421 4.7.0 go away }"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(421, "4.7.0")
        c.expect_closed()
    # Words without a code go with 421.
    srv = make_postern(config=chains_config(
        'on mail { disconnect "go away" }\non rcpt { disconnect 4.7.1 bye }'))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>")
        r = c.expect(421)
        assert r.text.endswith("go away"), r
        c.expect_closed()


@pytest.mark.parametrize("chain,sessions,want", [
    # ratelimit's own 421 at connect
    ("on connect { ratelimit 1/1m per ip }", 2,
     b"421 4.7.0 test.example Rate limit exceeded, slow down"),
    # a 4xx at connect becomes 421 and the close
    ("on connect { reject 451 }", 1,
     b"421 4.7.1 test.example Try again later"),
    ("on connect { reject 450 4.7.2 busy }", 1,
     b"421 4.7.2 test.example busy"),
    # text that names the host already keeps one
    ('on connect { disconnect 421 4.7.0 "%{hostname} go away" }', 1,
     b"421 4.7.0 test.example go away"),
])
def test_every_421_names_the_host(make_postern, chain, sessions, want):
    """RFC 5321 4.2.3, 3.8: "421 <domain> ...", whichever handler gave the
    reply and whatever its text."""
    srv = make_postern(config=chains_config(chain))
    for _ in range(sessions - 1):
        with srv.session() as c:
            c.expect(220)
    with srv.session() as c:
        got = c.read_raw_line()
        assert got == want, "got %r, want %r" % (got, want)
        c.expect_closed()


def test_tarpit_does_not_delay_other_sessions(make_postern):
    srv = make_postern(config=chains_config(
        'on helo { tarpit 3s }'))
    slow = srv.session()
    slow.expect(220)
    slow.send("HELO slow.example")
    t0 = time.monotonic()
    with srv.session() as fast:
        fast.expect(220)
        fast.send("NOOP"); fast.expect(250)
        # A greeting and a reply went by while the tarpitted one is due.
        slow.assert_silent()
    r = slow.expect(250, timeout=10)
    assert time.monotonic() - t0 >= 2.9
    slow.close()


def tarpits_running(srv):
    return len([kv for kv, _ in log_events(srv, "chain")
        if kv.get("verdict") == "delay"])


@pytest.mark.parametrize("stage", ["connect", "helo"])
def test_a_client_that_hangs_up_in_a_tarpit_frees_its_slot(make_postern,
                                                          stage):
    """Two connections the client closed while a tarpit held them end at
    once, not when the tarpit would: with connections-per-ip 2 a third
    one is taken (no 421 4.7.0), long before the tarpit's end."""
    srv = make_postern(config=chains_config(
        "on %s { tarpit 10m }" % stage, extra=["trusted none",
        "limit connections-per-ip 2", "limit shutdown-grace 1s"]))
    for n in (1, 2):
        c = srv.session()
        if stage == "helo":
            c.expect(220)
            c.send("EHLO client.example")
        wait_for(lambda: tarpits_running(srv) == n,
            what="tarpit %d running" % n)
        c.close()
    wait_for(lambda: len(log_events(srv, "disconnect")) == 2, 10,
        what="the two sessions the client left to end")
    third = srv.session()
    if stage == "helo":
        third.expect(220)
    else:
        wait_for(lambda: tarpits_running(srv) == 3,
            what="the third connection's own tarpit")
        third.assert_silent()
    assert not [kv for kv, _ in log_events(srv, "reject")
        if kv.get("esc") == "4.7.0"], srv.log()[-2000:]
    assert len(log_events(srv, "lost")) == 2
    third.close()


def test_a_quit_in_a_tarpit_gets_its_221_after_a_half_close(make_postern):
    """A client may send QUIT and shut its side before it reads the reply
    (RFC 5321 4.1.1.10): a QUIT the quit chain holds is no client that
    left, and still gets its 221."""
    srv = make_postern(config=chains_config("on quit { tarpit 1s }"))
    with srv.session() as c:
        c.hello()
        c.send("QUIT")
        wait_for(lambda: tarpits_running(srv) == 1, what="the tarpit")
        c.sock.shutdown(socket.SHUT_WR)
        c.expect(221)
    assert not log_events(srv, "lost"), srv.log()[-2000:]


def test_trap_strict_dialogue(make_postern):
    srv = make_postern(config=chains_config("on connect { trap }"))
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["bob@localhost"],
            "Subject: t\r\n\r\nhi\r\n")
    with srv.session() as c:
        c.expect(220)
        c.send("MAIL FROM:<a@example.org>")
        c.expect(550)
        c.expect_closed()


def test_trap_ban_then_banned(make_postern, state_store):
    srv = make_postern(config=chains_config(
        "on connect { banned; trap ban 1h }", state=state_store))
    with srv.session() as c:
        c.expect(220)
        c.send("MAIL FROM:<a@example.org>")
        c.expect(550, "5.5.1")
        c.expect_closed()

    def refused():
        with srv.session() as c:
            return c.read_reply().code == 554
    wait_for(refused, what="the ban to reach the store")
    with srv.session() as c:
        c.expect(554, "5.7.1")
        c.expect_closed()


TRAP_BAN = "on connect { banned; trap ban 1h }"


def assert_not_trapped(srv):
    """No trap was sprung, and the client is still welcome."""
    assert log_events(srv, "trap") == [], srv.log()
    with srv.session() as c:
        c.expect(220)
        c.send("QUIT"); c.expect(221)


@pytest.mark.parametrize("end", ["DATA", "BDAT LAST"])
def test_trap_lets_mail_follow_a_message(make_postern, end):
    """The plain dialogue goes on after a message, with no eom chain to
    see its end."""
    srv = make_postern(config=chains_config(TRAP_BAN))
    body = b"Subject: t\r\n\r\nhi\r\n"
    with srv.session() as c:
        c.hello()
        if end == "DATA":
            send_message(c, "a@example.org", ["bob@localhost"], body)
        else:
            c.send("MAIL FROM:<a@example.org>"); c.expect(250, "2.1.0")
            c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
            c.send_raw(b"BDAT %d LAST\r\n" % len(body) + body)
            c.expect(250, "2.0.0")
        c.send("MAIL FROM:<a@example.org>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("QUIT"); c.expect(221)
    assert_not_trapped(srv)


BIG = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 40  # over 1k


@pytest.mark.parametrize("chains,body,want", [
    ("", BIG, (552, "5.3.4")),
    ("on eom { tag x=1 }", BIG, (552, "5.3.4")),
    ("on eom { reject 554 5.7.1 no }", b"Subject: t\r\n\r\nhi\r\n",
        (554, "5.7.1")),
    ("on data { reject 554 5.7.1 no }", None, (554, "5.7.1")),
], ids=["552 no eom chain", "552 eom chain", "554 eom chain",
    "554 data chain"])
def test_trap_lets_mail_follow_a_refused_message(make_postern, chains, body,
        want):
    """A message refused at its end (or at DATA) is over too: MAIL may
    come next."""
    srv = make_postern(config=chains_config(TRAP_BAN + "\n" + chains,
        extra=["limit message-size 1k"]))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("DATA")
        if body is not None:
            c.expect(354)
            c.send_raw(body + b".\r\n")
        c.expect(*want)
        c.send("MAIL FROM:<a@example.org>"); c.expect(250, "2.1.0")
        c.send("QUIT"); c.expect(221)
    assert_not_trapped(srv)


def test_ban_on_relay_attempt(make_postern, state_store):
    """"ban ... on relay-attempt" bans from the first relaying RCPT on; a
    client that only sends local mail stays welcome."""
    srv = make_postern(config=chains_config(
        "on connect { banned; ban 1h on relay-attempt }", state=state_store))
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["bob@localhost"],
            "Subject: t\r\n\r\nhi\r\n")
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<x@far.example>"); c.expect(550, "5.7.1")
        c.send("QUIT"); c.expect(221)

    def refused():
        with srv.session() as c:
            return c.read_reply().code == 554
    wait_for(refused, what="the ban to reach the store")


def test_builtin_config_errors(tmp_path):
    """Arguments a builtin cannot honour are refused by postern check."""
    cases = [
        ("on connect { ban on }", "usage: ban [DURATION] [on auth-failure|"
            "relay-attempt...]"),
        ("on connect { ban 1h on nothing }", "usage: ban [DURATION]"),
        ("on connect { ban soon }", "usage: ban [DURATION]"),
        ("on connect { dnsbl zen.example match }", "usage: dnsbl ZONE"),
        ('action relay1 relay "smtp://127.0.0.1:25"\n'
            "on rcpt { quarantine relay1 }", 'action "relay1" is not a '
            "maildir"),
        ("on eom { header max-size 300k }", "header max-size must be under "
            "256k"),
        ("on mail { tag a/b=1 }", ': tag: bad key or value in "a/b=1"'),
        # A store lifetime of 0 would keep the row for ever.
        ("on disconnect { penalty 3 0 }", "usage: penalty N [DURATION]"),
        ("on rcpt { greylist delay 1s whitelist 0 }", "usage: greylist"),
        ("on rcpt { greylist lifetime 0s }", "usage: greylist"),
        ("on connect { ban 0 }", "usage: ban [DURATION]"),
        ("on mail { spf ban 0 }", "usage: spf [reject-softfail]"),
        ("on connect { trap ban 0 }", "usage: trap [ban DURATION]"),
    ]
    for line, want in cases:
        conf = tmp_path / "bad.conf"
        conf.write_text(chains_config(line)
            .replace("{tmp}", str(tmp_path)).replace("{port}", "2"))
        out = run_cli("check", "-c", str(conf))
        assert out.returncode == 1 and want in out.stdout + out.stderr, \
            (line, out.stdout + out.stderr)


def test_header_names_that_can_never_match_are_config_errors(tmp_path):
    """RFC 5322 2.2, 3.6.8: a field name is printable ASCII with no colon
    or blank; "header require From:" would refuse every message, so
    postern check refuses it at its FILE:LINE, and each error names its
    handler once."""
    conf = tmp_path / "bad.conf"
    conf.write_text(chains_config("on eom { header require From: }\n"
        "on header { header unique \"Sub ject\",Date }\n"
        "on eom { header require From, Date; header unique X-\u00e9 }\n"
        "on mail { tag a/b=1 }")
        .replace("{tmp}", str(tmp_path)).replace("{port}", "2"))
    out = run_cli("check", "-c", str(conf))
    text = out.stdout + out.stderr
    lines = conf.read_text().split("\n")
    at = {w: "%s:%d: " % (conf, next(i + 1 for i, l in enumerate(lines)
        if w in l)) for w in ("From:", "Sub ject", "X-", "a/b")}
    rule = "a name is 1..200 printable ASCII characters, no colon or blank"
    assert out.returncode == 1, text
    for want in (at["From:"] + 'header: bad field name "From:": ' + rule,
            at["Sub ject"] + 'header: bad field name "Sub ject": ' + rule,
            at["X-"] + 'header: bad field name "X-\u00e9": ' + rule,
            at["a/b"] + 'tag: bad key or value in "a/b=1"'):
        assert want in text, (want, text)
    assert "tag: tag:" not in text, text
    assert text.count("bad field name") == 3, text


def test_reject_at_connect_defaults_to_554(make_postern):
    srv = make_postern(config=chains_config(
        'on connect { reject "not here" }'))
    with srv.session() as c:
        r = c.read_reply()
        assert r.code == 554 and r.text.endswith("not here"), r


def test_greylist_then_pass(make_postern, state_store):
    srv = make_postern(config=chains_config(
        "on rcpt { greylist delay 1s lifetime 1h }", state=state_store))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(451, "4.7.1")
    t0 = time.monotonic()

    def retry():
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<bob@localhost>")
            r = c.read_reply()
            assert r.code in (250, 451), r
            return r.code == 250 and time.monotonic()
    passed = wait_for(retry, timeout=15, interval=0.2,
        what="the greylisted triplet to pass")
    assert passed - t0 >= 0.9, "passed %.2fs after the first try, before " \
        "the 1s delay" % (passed - t0)


def test_ratelimit_window_ages_out(make_postern, state_store):
    srv = make_postern(config=chains_config(
        "on connect { ratelimit 2/1s per ip }", state=state_store))
    for _ in range(2):
        with srv.session() as c:
            c.expect(220)
    with srv.session() as c:
        c.expect(421, "4.7.0")
    time.sleep(2.1)
    with srv.session() as c:
        c.expect(220)


def test_ratelimit_handlers_count_their_own_runs_across_a_reload(
        make_postern, state_store):
    """A connect handler's run does not count against a mail handler with
    the same "per"; a reload that moves the unchanged handler to another
    line keeps its count."""
    chains = ("on connect { ratelimit 100/1h per ip }\n"
        "on mail { ratelimit 3/1h per ip }")
    srv = make_postern(config=chains_config(chains, state=state_store))

    def mails(c, n):
        for _ in range(n):
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RSET"); c.expect(250)
    with srv.session() as c:
        c.hello()
        mails(c, 2)
    n = srv.log().count("reload: configuration")
    srv.write_config(chains_config("on helo { tag x=1 }\n" + chains,
        state=state_store))
    srv.sighup()
    wait_for(lambda: srv.log().count("reload: configuration") > n,
        what="the reload")
    with srv.session() as c:
        c.hello()
        mails(c, 1)
        c.send("MAIL FROM:<a@example.org>")
        c.expect(450, "4.7.1")


def test_sqlite_state_drops_expired_keys(make_postern, tmp_path):
    """Each client address gets rate windows of its own; once they have
    expired, the running server deletes their rows from the SQLite store,
    so the file does not grow with every address ever seen."""
    db = tmp_path / "state.db"
    srv = make_postern(config=chains_config(
        "on connect { ratelimit 1000/1s per ip }",
        state="state sqlite %s" % db))
    for i in range(30):
        with Client(srv.port, source="127.0.1.%d" % (i + 1)) as c:
            c.expect(220)

    def rows():
        with sqlite3.connect(str(db)) as conn:
            return conn.execute("SELECT count(*) FROM kv").fetchone()[0]
    wait_for(lambda: rows() >= 30, timeout=10,
        what="the 30 rate windows written to the database")
    wait_for(lambda: rows() == 0, timeout=15, interval=0.2,
        what="the expired rate windows deleted from the database")
    assert srv.alive()


# One loop, so one store handle whose requests are answered in order: a
# score written by one session is there for the next one's check.
def rep_config(chains, state):
    return chains_config(chains, extra=["workers 1"], state=state)


def test_reputation_rises_with_accepted_mail(make_postern, state_store):
    """Each acknowledged message is +1 for the IP and the sender domain,
    whatever chains there are; a check publishes both as session state,
    logged with the message."""
    srv = make_postern(config=rep_config("on mail { reputation check }",
        state_store))
    for _ in range(2):
        with srv.session() as c:
            c.hello()
            send_message(c, "a@Example.ORG", ["bob@localhost"],
                "Subject: t\r\n\r\nhi\r\n")
            c.send("QUIT"); c.expect(221)
    wait_for(lambda: 'state="session.rep.ip=1 session.rep.domain=1"'
        in srv.log(), what="the second message's scores")
    assert 'state="session.rep.ip=0 session.rep.domain=0"' in srv.log()


def test_reputation_lowered_per_ip(make_postern, state_store):
    srv = make_postern(config=rep_config(
        "on mail { reputation check below -2 }\n"
        "on rcpt { reputation add -3 ip }", state_store))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("QUIT"); c.expect(221)
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<other@example.net>")
        r = c.expect(550, "5.7.1")
        assert "poor reputation" in r.text


def test_reputation_lowered_per_sender_domain(make_postern, state_store):
    srv = make_postern(config=rep_config(
        "on mail { reputation check below -1 451 4.7.1 "
        '"score %{session.rep.ip}/%{session.rep.domain}" }\n'
        "on rcpt { reputation add -5 domain }", state_store))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@bad.example>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("QUIT"); c.expect(221)
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<z@BAD.example>")
        r = c.expect(451, "4.7.1")
        assert r.text.endswith("score 0/-5"), r
        # The IP itself is fine: another sender domain gets through.
        c.send("MAIL FROM:<a@example.org>"); c.expect(250, "2.1.0")


def test_discard_and_quarantine(make_postern):
    srv = make_postern(config=chains_config(
        "on rcpt { quarantine quar }"))
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["bob@localhost"],
            "Subject: q\r\n\r\nhi\r\n")
    wait_for(lambda: os.path.isdir(srv.path("mail", "quarantine", "Maildir",
        "new")) and os.listdir(srv.path("mail", "quarantine", "Maildir",
        "new")), what="a quarantined message")
    srv2 = make_postern(config=chains_config("on data { discard }"))
    with srv2.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["bob@localhost"],
            "Subject: d\r\n\r\nhi\r\n")
    # The 250 came after the decision: the message was dropped, nothing
    # delivered before it nor kept in the spool to deliver later.
    wait_for(lambda: log_events(srv2, "discarded"), what="the discard")
    wait_for(lambda: spool_empty(srv2), what="an empty spool")
    assert not srv2.maildir("bob")


class DnsResponder:
    """A UDP DNS server on loopback.  records: name -> an IPv4 address (one
    A record), or a dict {"A": [...], "PTR": [...], "TXT": [...], "ttl": N
    (default 60), "rcode": N (that answer, no records)}; other names get
    NXDOMAIN, a name without the type asked NODATA.  records may change
    while it runs; queries lists the (name, type) asked, lower case."""

    TYPES = {1: "A", 12: "PTR", 16: "TXT"}

    def __init__(self, records):
        self.records = records
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @staticmethod
    def rdata(qtype, v):
        if qtype == 1:
            return socket.inet_aton(v)
        if qtype == 12:
            return b"".join(bytes([len(l)]) + l.encode()
                for l in v.split(".")) + b"\0"
        return bytes([len(v)]) + v.encode()

    def answer(self, q):
        i, labels = 12, []
        while q[i] != 0:
            labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
            i += q[i] + 1
        qend = i + 5
        name = ".".join(labels)
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        self.queries.append((name, self.TYPES.get(qtype, qtype)))
        ent = self.records.get(name)
        if isinstance(ent, str):
            ent = {"A": [ent]}
        rcode = 3 if ent is None else ent.get("rcode", 0)
        vals = ent.get(self.TYPES.get(qtype), []) if ent and not rcode else []
        ans = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1,
            ent.get("ttl", 60), len(self.rdata(qtype, v))) +
            self.rdata(qtype, v) for v in vals)
        hdr = q[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, len(vals), 0,
            0)
        return hdr + q[12:qend] + ans

    def serve(self):
        while not self.stop:
            try:
                q, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            self.sock.sendto(self.answer(q), peer)

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_dnsbl(make_postern):
    dns = DnsResponder({"1.0.0.127.bl.test": "127.0.0.2"})
    try:
        srv = make_postern(config=chains_config(
            "on connect { dnsbl bl.test }",
            extra=["state resolver 127.0.0.1:%d" % dns.port]))
        with srv.session() as c:
            r = c.expect(554, "5.7.1")
            assert "127.0.0.1" in r.text
    finally:
        dns.close()


@pytest.mark.parametrize("chains,want", [
    pytest.param('on rcpt { dnsbl bl.test match 127.0.0.2 550 5.7.1 "at .2"; '
        'dnsbl bl.test match 127.0.0.4 550 5.7.1 "at .4" }', 550,
        id="second-match-listed"),
    pytest.param('on connect { dnsbl bl.test tag }\n'
        'on rcpt { dnsbl bl.test match 127.0.0.2 550 5.7.1 "at .2" }', 250,
        id="tag-then-other-match")])
def test_dnsbl_cache_keeps_each_match(make_postern, chains, want):
    """Two handlers on one zone share the cached answer (the zone is asked
    once) but each reads it by its own match list: the zone answers
    127.0.0.4 only."""
    dns = DnsResponder({"1.0.0.127.bl.test": "127.0.0.4"})
    try:
        srv = make_postern(config=chains_config(chains,
            extra=["state resolver 127.0.0.1:%d" % dns.port]))
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<bob@localhost>")
            r = c.expect(want)
            if want == 550:
                assert r.text.endswith("at .4"), r
    finally:
        dns.close()


@pytest.fixture
def dns_zone():
    """Factory: dns_zone(records) starts a DnsResponder, closed at the end."""
    made = []

    def make(records):
        made.append(DnsResponder(records))
        return made[-1]
    yield make
    for dns in made:
        dns.close()


def dns_chains(make_postern, dns, chains, extra=()):
    return make_postern(config=chains_config(chains,
        extra=["state resolver 127.0.0.1:%d" % dns.port] + list(extra)))


def rcpt_reply(srv):
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>")
        return c.read_reply()


@pytest.mark.parametrize("ttl,queries,second", [(0, 2, 250), (60, 1, 554)],
    ids=["ttl-0", "ttl-60"])
def test_dnsbl_answer_is_cached_for_its_ttl(make_postern, dns_zone, ttl,
        queries, second):
    """A listing with TTL 0 is not cached (RFC 1035 3.2.1): once the zone
    drops it, the next session asks again and gets through.  One with TTL
    60 is: the next session is refused from the cache, the zone unasked."""
    dns = dns_zone({"1.0.0.127.bl.test": {"A": ["127.0.0.2"], "ttl": ttl}})
    srv = dns_chains(make_postern, dns, "on rcpt { dnsbl bl.test }")
    assert rcpt_reply(srv).code == 554
    dns.records.clear()
    assert rcpt_reply(srv).code == second
    assert len(dns.queries) == queries, dns.queries


def test_dnsbl_nodata_is_not_listed(make_postern, dns_zone):
    """A list name with a TXT record but no A record (NODATA) is not
    listed (RFC 5782 2.1), like NXDOMAIN, and that answer is cached (RFC
    2308 5): the second RCPT asks nothing."""
    dns = dns_zone({"1.0.0.127.bl.test": {"TXT": ["see https://bl.test"]}})
    srv = dns_chains(make_postern, dns, "on rcpt { dnsbl bl.test }")
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("RCPT TO:<alice@localhost>"); c.expect(250, "2.1.5")
    assert dns.queries == [("1.0.0.127.bl.test", "A")], dns.queries


def test_dnsbl_servfail_is_logged_as_a_server_failure(make_postern,
        dns_zone):
    """Each try answered SERVFAIL at once: a failure (451 by default) that
    the log calls a server failure, not a timeout."""
    dns = dns_zone({"1.0.0.127.sf.test": {"rcode": 2}})
    srv = dns_chains(make_postern, dns, "on rcpt { dnsbl sf.test }")
    r = rcpt_reply(srv)
    assert (r.code, r.text.split()[0]) == (451, "4.3.0"), r
    assert chain_verdicts(srv) == [("rcpt", "error", "DNS look-up of "
        "1.0.0.127.sf.test failed: server failure (SERVFAIL)")]


def test_rhsbl_asks_for_an_idn_sender_domain_by_its_a_labels(make_postern,
        dns_zone):
    """RFC 5891 5: the zone lists xn--bcher-kva.example, the A-label form
    of b\u00fccher.example, and that is the name asked."""
    dns = dns_zone({"xn--bcher-kva.example.rhs.test": "127.0.0.2"})
    srv = dns_chains(make_postern, dns, "on mail { rhsbl rhs.test }")
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@B\u00fcCHER.example> SMTPUTF8")
        c.expect(554, "5.7.1")
    assert dns.queries == [("xn--bcher-kva.example.rhs.test", "A")], \
        dns.queries


@pytest.mark.parametrize("helo,sender,why", [
    ("x" * 64 + ".example", None, "has a label longer than 63 octets"),
    ("ok.example", "a@" + "abcdefghi." * 24 + "example",
        "is too long for a DNS name")], ids=["helo-label-64",
        "sender-domain-247"])
def test_rhsbl_skips_a_name_dns_cannot_ask(make_postern, dns_zone, helo,
        sender, why):
    """A valid name that cannot be a query name once the zone is added
    (a label over 63 octets, over 253 in all) is not listed, said at debug
    level: not a DNS failure, which would refuse the client every time."""
    dns = dns_zone({})
    srv = dns_chains(make_postern, dns, "on helo { rhsbl rhs.test }\n"
        "on mail { rhsbl rhs.test }", extra=["log level debug"])
    with srv.session() as c:
        c.hello(helo)
        if sender is not None:
            c.send("MAIL FROM:<%s>" % sender); c.expect(250, "2.1.0")
    skipped = wait_for(lambda: [kv for kv, _ in log_events(srv, "chain")
        if kv.get("handler") == "rhsbl"], what="the rhsbl line")
    assert skipped[0]["verdict"] == "continue", skipped
    assert skipped[0]["why"] == "not looked up: %s %s" % (sender.split("@")[1]
        if sender else helo, why), skipped
    assert dns.queries == ([] if sender is None else
        [("ok.example.rhs.test", "A")]), dns.queries


def test_rhsbl_names_with_a_trailing_dot(make_postern, dns_zone):
    """A HELO name and a zone written with the root's dot are asked
    without it (an empty label would be no query at all)."""
    dns = dns_zone({"trailing.example.rhs.test": "127.0.0.2"})
    srv = dns_chains(make_postern, dns, "on helo { rhsbl rhs.test. }")
    with srv.session() as c:
        c.expect(220)
        c.send("EHLO trailing.example."); c.expect(554, "5.7.1")
    assert dns.queries == [("trailing.example.rhs.test", "A")], dns.queries


@pytest.mark.parametrize("handler,zone,why", [
    ("dnsbl", "bl..test", "has an empty label"),
    ("rhsbl", ".bl.test", "has an empty label"),
    ("dnsbl", "a" * 64 + ".test", "has a label longer than 63 octets"),
    ("rhsbl", "abcdefghi." * 25 + "test", "is too long for a DNS name"),
    ("dnsbl", "abcdefghi." * 19 + "test", "is too long: at most 189 "
        "octets leave room for the name looked up in it"),
    ("rhsbl", "abcdefghi." * 25 + "xy", "is too long: at most 251 "
        "octets leave room for the name looked up in it")],
    ids=["empty-label", "leading-dot", "label-64", "254-octets",
        "no-room-for-ipv6", "no-room-for-a-domain"])
def test_dns_list_zone_must_make_query_names(tmp_path, handler, zone, why):
    """A zone no query name can be made with is a config error, not a
    malformed query or a failure at every look-up."""
    conf = tmp_path / "bad.conf"
    conf.write_text(chains_config("on rcpt { %s %s }" % (handler, zone))
        .replace("{tmp}", str(tmp_path)).replace("{port}", "2"))
    out = run_cli("check", "-c", str(conf))
    text = out.stdout + out.stderr
    line = next(i + 1 for i, l in enumerate(conf.read_text().split("\n"))
        if zone in l)
    assert out.returncode == 1, text
    assert '%s:%d: %s: zone "%s" %s' % (conf, line, handler, zone, why) \
        in text, text


def test_sighup_reloads_chains_keeping_sessions(make_postern):
    srv = make_postern(config=chains_config(
        "on rcpt { reject 550 5.7.1 old-chain }"))
    live = srv.session()
    live.hello()
    srv.write_config(chains_config("on rcpt { reject 550 5.7.1 new-chain }"))
    srv.sighup()

    def new_chain_on():
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<bob@localhost>")
            return "new-chain" in c.read_reply().text
    wait_for(new_chain_on, what="the reloaded chain")
    # The session that started before the reload keeps its chains.
    live.send("MAIL FROM:<a@example.org>"); live.expect(250)
    live.send("RCPT TO:<bob@localhost>")
    assert "old-chain" in live.expect(550).text
    live.close()


def test_tag_state_travels_with_the_message(make_postern):
    """Handler state is written into the envelope and logged at accept."""
    srv = make_postern(config=chains_config(
        "on mail { tag spam.score=7.5 }\non connect { tag seen=yes }"))
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["bob@localhost"],
            "Subject: t\r\n\r\nhi\r\n")
    wait_for(lambda: srv.maildir("bob"), what="the delivery")
    wait_for(lambda: 'state="session.seen=yes tx.spam.score=7.5"' in srv.log(),
        what="the accepted line with the state")


LUA = '''
function rcpt(facts, state)
  if facts.rcpt == "spam@localhost" then
    return {"reject", 550, "5.7.1", "no mail for " .. facts.rcpt}
  end
  state.tx.set("rcpt.seen", facts.rcpt)
end
function eom(facts, state)
  local n = 0
  for _ in facts.lines() do n = n + 1 end
  state.tx.set("lines", tostring(n))
  if io ~= nil or os ~= nil then return {"reject", 554, "5.7.0", "unsafe"} end
end
function data(facts, state)
  while true do end
end
'''


def test_lua_handlers_through_the_server(make_postern, tmp_path):
    """Lua at rcpt (reject), eom (reads the message file) and a script that
    loops forever at data (stopped by its budget: 451 4.3.0)."""
    (tmp_path / "filter.lua").write_text(LUA)
    srv = make_postern(config=chains_config(
        'on rcpt { lua "%s" }\non eom { lua "%s" }' % (
            tmp_path / "filter.lua", tmp_path / "filter.lua")))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<spam@localhost>")
        assert "no mail for spam@localhost" in c.expect(550, "5.7.1").text
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: lua\r\n\r\none\r\ntwo\r\n.\r\n")
        c.expect(250)
    wait_for(lambda: 'tx.lines=' in srv.log() and srv.maildir("bob"),
        what="the eom state and the delivery")
    n = int(re.search(r"tx\.lines=(\d+)", srv.log()).group(1))
    with open(srv.maildir("bob")[0], "rb") as f:
        # The script counted the spooled lines: all but our Return-Path.
        assert n == f.read().count(b"\n") - 1, n
    srv2 = make_postern(config=chains_config(
        'on data { lua "%s" budget 100000 }' % (tmp_path / "filter.lua")))
    with srv2.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(451, "4.3.0")
        c.send("NOOP"); c.expect(250)


DOCS_CHAINS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "docs", "chains.md")


def documented_facts():
    """The names in the table of docs/chains.md "Templates and facts"."""
    with open(DOCS_CHAINS) as f:
        text = f.read()
    table = text.split("## Templates and facts", 1)[1].split("\n## ", 1)[0]
    names = []
    for line in table.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names += [n for n in re.findall(r"`([^`]+)`", first)
                if not n.endswith(".KEY")]
    return names


FACTS_LUA = """
function rcpt(f, state)
  local n = f.rcpt:match("^(.-)@")
  return {"reject", 550, "5.7.1", "%{" .. n .. "}|" .. tostring(f[n])}
end
"""


def test_lua_reads_every_documented_fact(make_postern, tmp_path):
    """Lua scripts read the same names as templates: every name in the
    docs' table is in facts, with the value %{NAME} expands to."""
    names = documented_facts()
    assert len(names) >= 25 and "local.port" in names, names
    (tmp_path / "facts.lua").write_text(FACTS_LUA)
    srv = make_postern(config=chains_config(
        'on rcpt { lua "%s" }' % (tmp_path / "facts.lua")))
    missing = []
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        for n in names:
            c.send("RCPT TO:<%s@localhost>" % n)
            text = c.expect(550, "5.7.1").text.split(" ", 1)[1]
            tmpl, lua = text.split("|", 1)
            # An unset fact: nil in Lua, the empty string in a template.
            if lua != tmpl and not (lua == "nil" and tmpl == ""):
                missing.append((n, tmpl, lua))
    assert not missing, missing


HEADERS_LUA = """
function header(f) postern.log("headers " .. #f.headers) end
function eom(f) postern.log("eom headers " .. #f.headers) end
"""


@pytest.mark.parametrize("stage", ["header", "eom"])
def test_lua_refuses_a_header_block_over_what_is_kept(make_postern,
        tmp_path, stage):
    """A header block over the 256 KiB kept: a Lua script at header or eom
    would see facts.headers cut short, so the message is refused with 552
    5.3.4, as header checks and milters do; a smaller one is judged."""
    (tmp_path / "h.lua").write_text(HEADERS_LUA)
    srv = make_postern(config=chains_config(
        'on %s { lua "%s" }' % (stage, tmp_path / "h.lua")))
    def fields(n):
        return b"".join(b"X-F%d: %s\r\n" % (i, b"y" * 900)
            for i in range(n))
    with srv.session() as c:
        c.hello()
        # 200 fields: some 180 KiB; 300: over 256 KiB
        for head, code, esc in ((fields(200), 250, "2.0.0"),
                (fields(300), 552, "5.3.4")):
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<bob@localhost>"); c.expect(250)
            c.send("DATA"); c.expect(354)
            c.send_raw(DATE + head + b"\r\nbody\r\n.\r\n")
            r = c.expect(code, esc)
            assert code == 250 or r.text.endswith("(over 256 KiB)"), r
    assert "headers " in srv.log()
    wait_for(lambda: [kv.get("why") for kv, _ in log_events(srv, "chain")
        if kv.get("verdict") == "reject"] == ["header block over 256 KiB"],
        what="the refusal's log line")


STATES_LUA = """
function rcpt(f)
  local prev = seen
  seen = f["rcpt.user"]
  if seen == "second" then
    return {"reject", 550, "5.7.1", "prev=" .. tostring(prev)}
  end
end
function data(f)
  return {"reject", 550, "5.7.1", "seen=" .. tostring(seen)}
end
"""


def test_one_lua_state_per_handler_line(make_postern, tmp_path):
    """One Lua state per handler line and worker loop: one line keeps its
    globals from call to call, but the same file at rcpt and at data runs
    in two states (a global set at rcpt is nil at data)."""
    path = tmp_path / "s.lua"
    path.write_text(STATES_LUA)
    srv = make_postern(config=chains_config(
        'on rcpt { lua "%s" }\non data { lua "%s" }' % (path, path),
        extra=["workers 1"]))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<first@localhost>"); c.expect(250)
        c.send("RCPT TO:<second@localhost>")
        assert c.expect(550, "5.7.1").text.endswith(" prev=first")
        c.send("DATA")
        assert c.expect(550, "5.7.1").text.endswith(" seen=nil")


# Linux MAX_ARG_STRLEN: one "NAME=value" of a program's environment.
ENV_STR_MAX = 128 * 1024


def rcpts_of_length(n):
    """Recipients whose comma-joined list is n octets long."""
    # 74-octet addresses, the last one shorter to make up n.
    whole, rest = divmod(n - 11, 75)
    rcpts = ["%05d%s@localhost" % (i, "x" * 59) for i in range(whole)]
    return rcpts + ["%s@localhost" % ("y" * (rest + 1))]


def test_rcpts_fact_is_whole(make_postern, tmp_path):
    """The "rcpts" fact holds every accepted recipient: a Lua script gets
    the whole list; a program gets it in POSTERN_RCPTS up to what one
    environment string may hold, and past that the handler fails (never
    a list cut inside an address)."""
    (tmp_path / "count.lua").write_text(
        "function data(f)\n"
        "  local n, last = 0\n"
        "  for a in f.rcpts:gmatch('[^,]+') do n, last = n + 1, a end\n"
        "  postern.log('rcpts n=' .. n .. ' len=' .. #f.rcpts ..\n"
        "    ' last=' .. last)\n"
        "end\n")
    out = tmp_path / "rcpts.out"
    prog = tmp_path / "rcpts.sh"
    prog.write_text("#!/bin/sh\nprintf '%%s' \"$POSTERN_RCPTS\" > %s\n"
        "exit 1\n" % out)
    prog.chmod(0o755)
    srv = make_postern(config=chains_config(
        'on data { lua "%s"; program "%s" }' % (tmp_path / "count.lua",
        prog), extra=["limit recipients 2000",
        "limit recipients-per-session 10000"]))
    room = ENV_STR_MAX - len("POSTERN_RCPTS=") - 1
    with srv.session() as c:
        c.hello()
        for rcpts, code in ((["r%03d@localhost" % i for i in range(300)],
                550), (rcpts_of_length(room), 550),
                (rcpts_of_length(room + 1), 451)):
            joined = ",".join(rcpts)
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send_raw("".join("RCPT TO:<%s>\r\n" % r for r in rcpts))
            for _ in rcpts:
                c.expect(250)
            c.send("DATA"); c.expect(code)
            c.send("RSET"); c.expect(250)
            seen = [l for l in srv.log().splitlines() if "rcpts n=" in l]
            assert seen and seen[-1].endswith("rcpts n=%d len=%d last=%s\"" %
                (len(rcpts), len(joined), rcpts[-1])), seen[-1:]
            if code == 550:
                assert out.read_text() == joined
                out.unlink()
    assert "POSTERN_RCPTS over the 131072 octets an environment string " \
        "may hold" in srv.log()
    assert not out.exists()


def test_program_handler_through_the_server(make_postern, tmp_path):
    prog = tmp_path / "judge.sh"
    prog.write_text("#!/bin/sh\ncase \"$POSTERN_SENDER\" in\n"
        "*bad*) echo \"sender $POSTERN_SENDER refused\"; exit 1;;\nesac\n"
        "exit 0\n")
    prog.chmod(0o755)
    srv = make_postern(config=chains_config(
        'on mail { program "%s" "a;b" }' % prog))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<bad@example.org>")
        assert "refused" in c.expect(550, "5.7.1").text
        c.send("MAIL FROM:<good@example.org>"); c.expect(250)


def sleeps_with(arg):
    """Pids of the running "sleep ARG" processes."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                argv = f.read().split(b"\0")[:-1]
        except OSError:
            continue		# gone meanwhile
        if argv == [b"sleep", arg.encode()]:
            pids.append(int(name))
    return pids


def test_program_killed_with_what_it_started(make_postern, tmp_path):
    """A program runs in a process group of its own: at its timeout, and
    when the client hangs up while it runs, what it started in the
    background dies with it.  Its own exit still decides, at once, even
    while a child it leaves holds its stdout."""
    # Unique to this run of the test, to tell its sleeps from others'.
    arg = "299.%d" % os.getpid()
    prog = tmp_path / "hang.sh"
    prog.write_text("#!/bin/sh\n"
        "case \"$POSTERN_STAGE $POSTERN_SENDER\" in\n"
        "mail\\ *quick*) exit 0;;\n"
        "mail\\ *daemon*) sleep %s & echo left running; exit 1;;\n"
        "esac\nsleep %s &\nwait\n" % (arg, arg))
    prog.chmod(0o755)
    srv = make_postern(config=chains_config(
        'on mail { program "%s" timeout 1s }\n'
        'on rcpt { program "%s" timeout 60s }' % (prog, prog)))
    try:
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<daemon@example.org>")
            assert c.expect(550, "5.7.1").text.endswith("left running")
            for pid in wait_for(lambda: sleeps_with(arg), 5,
                    what="the child left running"):
                os.kill(pid, 9)
            wait_for(lambda: not sleeps_with(arg), 5, what="it killed")
            c.send("MAIL FROM:<a@example.org>"); c.expect(451, "4.3.0")
            assert chain_verdicts(srv, 2)[1][1:] == ("error",
                "%s: timed out after 1000 ms" % prog)
            wait_for(lambda: not sleeps_with(arg), 5,
                what="no sleep %s after the timeout" % arg)
            c.send("MAIL FROM:<quick@example.org>"); c.expect(250)
            c.send("RCPT TO:<joe@example.org>")
            wait_for(lambda: sleeps_with(arg), 10, what="the rcpt program")
        wait_for(lambda: not sleeps_with(arg), 10,
            what="no sleep %s after the client left" % arg)
    finally:
        for pid in sleeps_with(arg):
            os.kill(pid, 9)
