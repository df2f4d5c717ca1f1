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


def test_before_a_delayed_greeting_continue(make_postern):
    srv = make_postern(extra=["limit greeting-delay 1s",
        "early-talker continue", SEE_IT, "transaction-log {tmp}/tlog"])
    t0 = time.monotonic()
    with srv.session() as c:
        c.send("EHLO eager.example")
        c.expect(220, timeout=5)
        assert time.monotonic() - t0 >= 0.9, "greeted before the delay"
        c.expect(250)		# its EHLO, read after the greeting
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>")
        r = c.expect(550, "5.7.1")
        assert r.text.endswith("early=yes"), r
    kv, line = early_events(srv)[0]
    assert kv["when"] == "before the greeting" and kv["bytes"] == "20", line  # "EHLO eager.example\r\n"
    assert len(log_events(srv, "early-talker")) == 1, "noted twice"
    notes = wait_for(lambda: [l for f in srv_files(srv, "tlog") for l in
        open(f, errors="replace").read().splitlines()
        if " # early talker: before the greeting" in l], what="the note")
    assert notes


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
    srv = make_postern(extra=["limit greeting-delay 1s",
        "early-talker continue", 'on mail { lua "{tmp}/early.lua" }'],
        start=False)
    with open(srv.path("early.lua"), "w") as f:
        f.write('function mail(f, state)\n'
                '  if f["early-talker"] == "yes" then\n'
                '    return {"reject", 550, "5.7.1", "you spoke too soon"}\n'
                '  end\n'
                'end\n')
    srv.start()
    with srv.session() as c:
        c.send("EHLO eager.example")
        c.expect(220, timeout=5); c.expect(250)
        c.send("MAIL FROM:<a@example.net>")
        assert c.expect(550, "5.7.1").text.endswith("you spoke too soon")
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
