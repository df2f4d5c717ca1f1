"""Early talkers: clients that send before the greeting or before a reply
they must wait for.  "early-talker close" (the default) answers 554 5.5.0
and closes; "early-talker continue" goes on, and every later stage's
handlers see the fact (%{early-talker}, Lua's facts["early-talker"])."""

import os
import time

from conftest import log_events, send_message, wait_for

BODY = "Subject: early\r\n\r\nhello\r\n"
SEE_IT = 'on rcpt { reject 550 5.7.1 "early=%{early-talker}" }'


def early_events(srv, n=1):
    return wait_for(lambda: len(log_events(srv, "early-talker")) >= n and
        log_events(srv, "early-talker"), what="%d early-talker lines" % n)


def talk_early_and_go_on(c, t0):
    """C talks before a greeting delayed 1 s (from T0) under "early-talker
    continue" and SEE_IT: greeted in time, its EHLO answered after, and
    the rcpt stage sees the fact."""
    c.send("EHLO eager.example")
    c.expect(220, timeout=5)
    assert time.monotonic() - t0 >= 0.9, "greeted before the delay"
    c.expect(250)		# its EHLO, read after the greeting
    c.send("MAIL FROM:<a@example.net>"); c.expect(250)
    c.send("RCPT TO:<bob@example.org>")
    r = c.expect(550, "5.7.1")
    assert r.text.endswith("early=yes"), r


def test_before_a_delayed_greeting_continue(make_postern):
    srv = make_postern(extra=["limit greeting-delay 1s",
        "early-talker continue", SEE_IT, "transaction-log {tmp}/tlog"])
    t0 = time.monotonic()
    with srv.session() as c:
        talk_early_and_go_on(c, t0)
    kv, line = early_events(srv)[0]
    assert kv["when"] == "before the greeting" and kv["bytes"] == "20", line  # "EHLO eager.example\r\n"
    assert len(log_events(srv, "early-talker")) == 1, "noted twice"
    notes = wait_for(lambda: [l for f in srv_files(srv, "tlog") for l in
        open(f, errors="replace").read().splitlines()
        if " # early talker: before the greeting" in l], what="the note")
    assert notes


def with_lua(make_postern, extra, stage, script):
    """A server whose STAGE chain runs SCRIPT ({tmp}/early.lua)."""
    srv = make_postern(extra=extra + ['on %s { lua "{tmp}/early.lua" }'
        % stage], start=False)
    with open(srv.path("early.lua"), "w") as f:
        f.write(script)
    srv.start()
    return srv


def srv_files(srv, sub):
    d = srv.path(sub)
    return [os.path.join(d, n) for n in os.listdir(d)] if os.path.isdir(d) \
        else []


def test_patient_client_is_no_early_talker(make_postern):
    srv = make_postern(extra=["limit greeting-delay 1s",
        "early-talker continue", SEE_IT])
    with srv.session() as c:
        c.expect(220, timeout=5)
        c.send("EHLO client.example"); c.expect(250)
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>")
        assert c.expect(550).text.endswith("early=no")
    assert log_events(srv, "early-talker") == []


def test_lua_reads_the_fact(make_postern):
    srv = with_lua(make_postern, ["limit greeting-delay 1s",
        "early-talker continue"], "mail",
        'function mail(f, state)\n'
        '  if f["early-talker"] == "yes" then\n'
        '    return {"reject", 550, "5.7.1", "you spoke too soon"}\n'
        '  end\n'
        'end\n')
    with srv.session() as c:
        c.send("EHLO eager.example")
        c.expect(220, timeout=5); c.expect(250)
        c.send("MAIL FROM:<a@example.net>")
        assert c.expect(550, "5.7.1").text.endswith("you spoke too soon")
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"], BODY)


# ----- before a reply: "early-talker close|continue replies" ----------------
def test_before_the_reply_to_ehlo_close(make_postern):
    srv = make_postern(extra=["early-talker close replies"])
    with srv.session() as c:
        c.expect(220)
        c.send_raw(b"EHLO eager.example\r\nMAIL FROM:<a@example.net>\r\n")
        r = c.expect(554, "5.5.0")
        assert r.text.endswith("Protocol error: talked before the reply "
            "to EHLO, closing connection"), r
        c.expect_closed()
    kv, line = early_events(srv)[0]
    assert kv["when"] == "before the reply to EHLO", line


def test_helo_client_waits_after_every_command(make_postern):
    """A client not offered PIPELINING (HELO) must wait for each reply."""
    srv = make_postern(extra=["early-talker close replies"])
    with srv.session() as c:
        c.expect(220)
        c.send("HELO client.example"); c.expect(250)
        c.send_raw(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>"
            b"\r\n")
        c.expect(554, "5.5.0")
        c.expect_closed()
    kv, line = early_events(srv)[0]
    assert kv["when"] == "before the reply to MAIL", line


def test_pipelined_group_is_no_early_talker(make_postern):
    """RFC 2920 3.1: MAIL, RCPT and DATA may go in one write after the
    EHLO reply; only the text waits for the 354."""
    srv = make_postern(extra=["early-talker close replies"])
    with srv.session() as c:
        c.hello()
        c.send_raw(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>"
            b"\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n")
        c.expect(250); c.expect(250); c.expect(250); c.expect(354)
        c.send_raw(BODY.encode() + b".\r\nQUIT\r\n")
        c.expect(250, "2.0.0"); c.expect(221)
    for user in ("bob", "carol"):
        wait_for(lambda: len(srv.maildir(user)) == 1, what=user + "'s mail")
    assert log_events(srv, "early-talker") == []


def test_before_the_reply_to_ehlo_continue_delivers(make_postern):
    srv = with_lua(make_postern, ["early-talker continue replies",
        "transaction-log {tmp}/tlog"], "rcpt",
        'function rcpt(f, state)\n'
        '  if f.rcpt == "probe@example.org" then\n'
        '    return {"reject", 550, "5.7.1", "early=" .. f["early-talker"]}\n'
        '  end\n'
        'end\n')
    with srv.session() as c:
        c.expect(220)
        c.send_raw(b"EHLO eager.example\r\nMAIL FROM:<a@example.net>\r\n")
        c.expect(250); c.expect(250, "2.1.0")
        c.send("RCPT TO:<probe@example.org>")
        assert c.expect(550, "5.7.1").text.endswith("early=yes")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(BODY.encode() + b".\r\n"); c.expect(250, "2.0.0")
        c.send_raw(b"NOOP\r\nNOOP\r\n")	# noted once per session
        c.expect(250); c.expect(250)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: len(srv.maildir("bob")) == 1, what="bob's mail")
    kv, line = early_events(srv)[0]
    assert kv["when"] == "before the reply to EHLO", line
    assert "bytes" not in kv, line
    assert len(log_events(srv, "early-talker")) == 1, "noted twice"
    wait_for(lambda: [l for f in srv_files(srv, "tlog") for l in
        open(f, errors="replace").read().splitlines()
        if " # early talker: before the reply to EHLO" in l],
        what="the note in the transaction log")
