"""Mailboxes that answer (reply agents) and mailboxes passed on, end to
end: the shipped example (examples/agents) pointed at the test's folders,
canned, command, Lua and web service agents whose replies land in the
sender's Maildir well formed, the RFC 3834 rules, one reply per sender per
period held in the state store across a restart, an agent that hangs
while other mail flows, and one that cannot start, retried.
"""

import email
import email.policy
import json
import os
import shutil
import stat

import pytest

from conftest import (REPO, TEMPLATE_HEAD, log_events, make_config,
    send_message, spool_empty, wait_for)
from httpd import Answer, Api
from test_webhook import wire

EXAMPLE = os.path.join(REPO, "examples", "agents")
FAST = ["queue retry-min 1s", "queue retry-max 2s"]


def example_config(tmp):
    """The example's own lines, pointed at the test's folders."""
    with open(os.path.join(EXAMPLE, "postern.conf")) as f:
        text = f.read()
    for name in ("forecast.py", "forecast.json", "about.txt"):
        shutil.copy(os.path.join(EXAMPLE, name), os.path.join(tmp, name))
    os.chmod(os.path.join(tmp, "forecast.py"), 0o755)
    text = text.replace("/usr/local/lib/postern/", tmp + "/")
    text = text.replace("/etc/postern/", tmp + "/")
    text = text.replace("/var/lib/postern/", tmp + "/")
    text = text.replace("/var/mail/", "{tmp}/mail/")
    keep = [l for l in text.splitlines() if not l.startswith(("hostname",
        "spool", "listen", "user ", "group "))]
    return TEMPLATE_HEAD + "\n".join(FAST + keep) + "\n"


def one_mail(srv, user, n=1, timeout=20):
    files = wait_for(lambda: len(srv.maildir(user)) >= n and
        srv.maildir(user), timeout, what="%d message(s) for %s" % (n, user))
    with open(files[n - 1], "rb") as f:
        return email.message_from_bytes(f.read(), policy=email.policy.default)


def assert_reply(msg, agent, to, subject):
    """What every reply is: RFC 3834 and RFC 5322."""
    assert msg["Return-Path"] == "<>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["From"].addresses[0].addr_spec == agent
    assert msg["To"].addresses[0].addr_spec == to
    assert msg["Subject"] == subject
    assert msg["In-Reply-To"] == "<q1@agents.example.org>"
    assert msg["References"] == "<q1@agents.example.org>"
    assert msg["Message-ID"] and msg["Date"]
    assert msg["MIME-Version"] == "1.0"


QUESTION = ("From: Ann Lee <ann@agents.example.org>\n"
    "To: nyc-weather@agents.example.org\n"
    "Subject: =?utf-8?q?M=C3=A9t=C3=A9o?= for tomorrow?\n"
    "Message-ID: <q1@agents.example.org>\n\nWill it rain?\n")


def ask(srv, sender, rcpt, body=QUESTION, params=""):
    with srv.session() as c:
        c.hello()
        send_message(c, sender, [rcpt], wire(body), params)


def test_example_agent_passthrough_and_canned(make_postern, tmp_path):
    srv = make_postern(config=example_config(str(tmp_path)))
    ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
    msg = one_mail(srv, "ann")
    assert_reply(msg, "nyc-weather@agents.example.org",
        "ann@agents.example.org", "Re: Météo for tomorrow?")
    assert msg["From"].addresses[0].display_name == "NYC Weather"
    body = msg.get_content()
    assert "Hello Ann Lee," in body
    assert "Today: Sunny, with a high near 72." in body
    # The canned text, with its variables.
    ask(srv, "bob@agents.example.org", "about@agents.example.org",
        QUESTION.replace("Ann Lee <ann@", "Bob <bob@"))
    about = one_mail(srv, "bob")
    assert about.get_content().startswith("Hello Bob,\n\nThank you for "
        "writing about \"Météo for tomorrow?\".")
    # The pass-through mailbox: subject prefixed, the rest intact.
    ask(srv, "ann@agents.example.org", "help@agents.example.org",
        "From: ann@agents.example.org\nSubject: printer on fire\n"
        "X-Ticket: 42\nMessage-ID: " + MALFORMED + "\n\nplease help\n")
    desk = one_mail(srv, "help")
    # Header fields as written: an id is copied, never decoded.
    with open(srv.maildir("help")[0], "rb") as f:
        assert ("\nMessage-ID: %s\n" % MALFORMED).encode() in f.read()
    assert desk["Subject"] == "[help@] printer on fire"
    assert desk["X-Ticket"] == "42"
    assert desk["Return-Path"] == "<ann@agents.example.org>"
    assert desk.get_content() == "please help\n"
    assert desk["Received"].startswith("by test.example (postern) id ")


def test_pass_through_mailboxes_passing_to_each_other_bounce(make_postern):
    """Two pass-through mailboxes sending to each other: each copy gains a
    Received: field, and past 50 the message bounces to its sender as a
    loop (5.4.6) instead of going round for ever."""
    srv = make_postern(config=make_config(FAST, rules=[
        "match to ping@agents.example.org action ping",
        "match to pong@agents.example.org action pong",
        "match to domain agents.example.org action local"],
        actions='action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"\n'
        'action ping pass-through "pong@agents.example.org"\n'
        'action pong pass-through "ping@agents.example.org"\n'))
    ask(srv, "ann@agents.example.org", "ping@agents.example.org",
        "From: ann@agents.example.org\nSubject: round\n\nand round\n")
    dsn = one_mail(srv, "ann", timeout=60)
    text = dsn.as_string()
    assert "5.4.6" in text and "mail forwarding loop: 51 Received:" in text, \
        text
    wait_for(lambda: spool_empty(srv), 20, what="nothing left going round")
    passed = srv.log().count(" action=pass-through")
    assert passed == 51, passed


def agent_config(tmp, action, extra=()):
    return make_config(FAST + ["state sqlite %s/state.db" % tmp] +
        list(extra), rules=[
            "match to nyc-weather@agents.example.org action weather",
            "match to domain agents.example.org action local"],
        actions='action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"\n'
        + action + "\n")


def test_lua_agent(make_postern, tmp_path):
    script = tmp_path / "agent.lua"
    script.write_text("function reply(msg)\n"
        "  return { subject = 'Forecast: ' .. msg.subject,\n"
        "    text = 'Rain for ' .. msg.addresses.from[1].name .. '.',\n"
        "    html = '<p>Rain</p>' }\nend\n")
    srv = make_postern(config=agent_config(tmp_path,
        'action weather reply lua "%s"' % script))
    ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
    msg = one_mail(srv, "ann")
    assert_reply(msg, "nyc-weather@agents.example.org",
        "ann@agents.example.org", "Forecast: Météo for tomorrow?")
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content() == "Rain for Ann Lee."
    assert msg.get_body(("html",)).get_content() == "<p>Rain</p>"


def test_webhook_agent(make_postern, tmp_path):
    api = Api().start()
    try:
        api.default = Answer(200, b'{"text": "Sunny, says the API"}',
            ctype="application/json")
        srv = make_postern(config=agent_config(tmp_path,
            'action weather reply webhook "%s"' % api.url("/agent")))
        ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
        msg = one_mail(srv, "ann")
        assert_reply(msg, "nyc-weather@agents.example.org",
            "ann@agents.example.org", "Re: Météo for tomorrow?")
        assert msg.get_content().rstrip("\n") == "Sunny, says the API"
        doc = api.requests[0].json()
        assert doc["agent"] == "nyc-weather@agents.example.org"
        assert doc["text"] == "Will it rain?\n"
    finally:
        api.stop()


def test_an_agent_with_the_default_state_store_starts_on_a_fresh_spool(
        make_postern, tmp_path):
    """No `state` line: the reply memory is SQLite in the spool folder,
    which the first start makes; the agent answers, once per period."""
    (tmp_path / "answer.txt").write_text("Sunny.\n")
    conf = agent_config(tmp_path, 'action weather reply text "%s/answer.txt"'
        % tmp_path).replace("state sqlite %s/state.db\n" % tmp_path, "")
    assert "state " not in conf and not (tmp_path / "spool").exists()
    srv = make_postern(config=conf)
    ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
    assert one_mail(srv, "ann").get_content() == "Sunny.\n"
    ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
    wait_for(lambda: [kv for kv, _ in log_events(srv, "agent") if
        kv["why"] == "answered already in this period"], 20,
        what="the second message remembered as answered")
    assert (tmp_path / "spool" / "state.db").exists()


def test_webhook_agent_reads_media_types_in_any_case_and_the_charset(
        make_postern, tmp_path):
    """RFC 9110 8.3.1: the type, subtype and charset of the answer's
    Content-Type are case-insensitive, and a declared charset is read."""
    api = Api().start()
    try:
        srv = make_postern(config=agent_config(tmp_path,
            'action weather reply webhook "%s"' % api.url("/agent")))
        cases = [
            ("json", Answer(200, b'{"text": "Sunny, says the API"}',
                ctype="Application/JSON"), "plain", "Sunny, says the API"),
            ("html", Answer(200, b"<p>Sunny</p>", ctype="TEXT/HTML"),
                "html", "<p>Sunny</p>"),
            ("koi8", Answer(200, "Солнечно".encode("koi8-r"),
                ctype="text/plain; Charset=KOI8-R"), "plain", "Солнечно"),
        ]
        for user, answer, subtype, text in cases:
            api.default = answer
            ask(srv, user + "@agents.example.org",
                "nyc-weather@agents.example.org")
            msg = one_mail(srv, user)
            assert msg.get_content_type() == "text/" + subtype, user
            assert msg.get_content().rstrip("\n") == text, user
    finally:
        api.stop()


def test_no_reply_to_automatic_mail(make_postern, tmp_path):
    srv = make_postern(config=example_config(str(tmp_path)))
    cases = [
        ("auto-submitted", "ann@agents.example.org",
            "Auto-Submitted: auto-generated\n"),
        ("list", "ann@agents.example.org", "List-Id: <users.lists>\n"),
        ("bulk", "ann@agents.example.org", "Precedence: bulk\n"),
        ("null sender", "", ""),
        ("daemon", "MAILER-DAEMON@agents.example.org", ""),
    ]
    for label, sender, extra in cases:
        ask(srv, sender, "nyc-weather@agents.example.org",
            extra + QUESTION)
    wait_for(lambda: len(log_events(srv, "agent")) >= len(cases), 20,
        what="every agent decision")
    whys = sorted(kv["why"] for kv, _ in log_events(srv, "agent"))
    assert whys == sorted(["auto-submitted message", "mailing list message",
        "bulk or list precedence", "null sender", "automated sender"])
    # Dealt with, never bounced, never answered.
    wait_for(lambda: not srv.spool_files("env"), 10, what="spool empty")
    assert srv.maildir("ann") == [] and srv.maildir("mailer-daemon") == []


def test_sender_with_blanks_forges_no_field(make_postern, tmp_path):
    """The agent line writes the sender as one word: a quoted local part
    with key=value words in it stays in the sender's field."""
    (tmp_path / "answer.txt").write_text("hello\n")
    srv = make_postern(config=agent_config(tmp_path,
        'action weather reply text "%s/answer.txt"' % tmp_path,
        extra=["log format json"]))
    ask(srv, '"x level=error event=forged"@agents.example.org',
        "nyc-weather@agents.example.org", "List-Id: <users.lists>\n" +
        QUESTION)

    [line] = wait_for(lambda: [json.loads(l) for l in srv.log().splitlines()
        if '"agent":' in l], 20, what="the agent line")
    assert (line["level"], line["event"]) == ("info", "agent"), line
    assert line["msg"] == "not-answered", line
    assert line["sender"] == (r"<\x22x\x20level=error\x20event=forged\x22"
        "@agents.example.org>"), line


# A Message-ID as written, and one that RFC 2047 decoding would turn into
# header fields of the reply; then a References entry doing the same.
WELL_FORMED = ("<=?utf-8?q?x=0AX-Injected:_yes=0A=0AYou_won!_"
    "http://evil.test/?=@agents.example.org>")
MALFORMED = ("<=?utf-8?q?x=0AX-Injected:_yes?= "
    "=?utf-8?q?=0A=0AYou_won!_http://evil.test/?=@agents.example.org>")
REPLY_FIELDS = {"Return-Path", "Received", "Date", "From", "To", "Subject",
    "Message-Id", "In-Reply-To", "References", "Auto-Submitted",
    "MIME-Version", "Content-Type"}


def reply_header(srv, user):
    """The reply's header fields as (name, unfolded value), checked to be
    one block: only the fields a reply has, its body the agent's text."""
    [path] = wait_for(lambda: srv.maildir(user), 20,
        what="the reply to %s" % user)
    with open(path, "rb") as f:
        raw = f.read()
    head, _, body = raw.partition(b"\n\n")
    assert body == b"Sunny.\n", raw
    fields = []
    for line in head.decode("ascii").split("\n"):
        if line[:1] in (" ", "\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + line)
        else:
            name, _, value = line.partition(":")
            fields.append((name, value.strip()))
    assert {n for n, _ in fields} <= REPLY_FIELDS, raw
    assert ("Auto-Submitted", "auto-replied") in fields, raw
    return dict(fields)


def test_message_ids_are_never_decoded_into_the_reply(make_postern,
        tmp_path):
    """RFC 5322 3.6.4: a msg-id is no place for RFC 2047 encoded words.
    Ids are taken as written; one that is not <left@right> in printable
    ASCII is left out of In-Reply-To and References (and is null in the
    document), so no sender can add header fields to the reply or end its
    header early; the reply still goes."""
    api = Api().start()
    try:
        api.default = Answer(200, b"Sunny.\n")
        srv = make_postern(config=agent_config(tmp_path,
            'action weather reply webhook "%s"' % api.url("/agent")))
        good = QUESTION.replace("<q1@agents.example.org>", WELL_FORMED)
        bad = QUESTION.replace("<q1@agents.example.org>", MALFORMED)
        refs = QUESTION.replace("Message-ID:", "References: "
            "<q0@agents.example.org> " + MALFORMED + "\nMessage-ID:")
        for user, body in (("ann", good), ("bob", bad), ("cy", refs)):
            ask(srv, user + "@agents.example.org",
                "nyc-weather@agents.example.org", body)

        ann = reply_header(srv, "ann")
        assert ann["In-Reply-To"] == WELL_FORMED
        assert ann["References"] == WELL_FORMED
        bob = reply_header(srv, "bob")
        assert "In-Reply-To" not in bob and "References" not in bob, bob
        cy = reply_header(srv, "cy")
        assert cy["In-Reply-To"] == "<q1@agents.example.org>"
        assert cy["References"] == ("<q0@agents.example.org> "
            "<q1@agents.example.org>")

        docs = {r.json()["envelope"]["sender"]: r.json()
            for r in api.wait(3)}
        assert docs["ann@agents.example.org"]["message_id"] == \
            WELL_FORMED[1:-1]
        assert docs["bob@agents.example.org"]["message_id"] is None
        assert docs["cy@agents.example.org"]["references"] == [
            "q0@agents.example.org"]
    finally:
        api.stop()


def test_references_from_a_single_in_reply_to(make_postern, tmp_path):
    """RFC 5322 3.6.4: an original with no References: but an
    In-Reply-To: of a single id is answered with References: that id, then
    the original's Message-ID; with two ids in In-Reply-To:, or with a
    References: field, In-Reply-To: adds nothing."""
    api = Api().start()
    try:
        api.default = Answer(200, b"Sunny.\n")
        srv = make_postern(config=agent_config(tmp_path,
            'action weather reply webhook "%s"' % api.url("/agent")))
        irt = "In-Reply-To: %s\nMessage-ID:"
        for user, fields in (
                ("ann", irt % "<p1@agents.example.org>"),
                ("bob", irt % "<p1@agents.example.org>\n"
                    " <p2@agents.example.org>"),
                ("cy", "References: <r0@agents.example.org>\n" + irt
                    % "<p1@agents.example.org>")):
            ask(srv, user + "@agents.example.org",
                "nyc-weather@agents.example.org",
                QUESTION.replace("Message-ID:", fields))
        want = {"ann": "<p1@agents.example.org> <q1@agents.example.org>",
            "bob": "<q1@agents.example.org>",
            "cy": "<r0@agents.example.org> <q1@agents.example.org>"}
        for user, refs in want.items():
            h = reply_header(srv, user)
            assert (h["In-Reply-To"], h["References"]) == (
                "<q1@agents.example.org>", refs), (user, h)
    finally:
        api.stop()


def test_one_reply_per_period_across_a_restart(make_postern, tmp_path):
    srv = make_postern(config=example_config(str(tmp_path)))
    ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
    one_mail(srv, "ann")
    srv.restart()
    ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
    wait_for(lambda: [kv for kv, _ in log_events(srv, "agent") if
        kv["why"] == "answered already in this period"], 20,
        what="the second message remembered as answered")
    wait_for(lambda: not srv.spool_files("env"), 20, what="spool empty")
    assert len(srv.maildir("ann")) == 1
    # Another sender still gets an answer.
    ask(srv, "bob@agents.example.org", "nyc-weather@agents.example.org")
    one_mail(srv, "bob")


def test_a_hanging_agent_times_out_while_mail_flows(make_postern, tmp_path):
    hang = tmp_path / "hang.py"
    hang.write_text("#!/usr/bin/python3\nimport sys, time\n"
        "sys.stdin.read()\ntime.sleep(60)\n")
    hang.chmod(0o755)
    srv = make_postern(config=agent_config(tmp_path,
        'action weather reply command "%s" timeout 2s' % hang))
    ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
    # Meanwhile other mail is delivered at once.
    ask(srv, "ann@agents.example.org", "bob@agents.example.org",
        "Subject: other\n\nflows\n")
    one_mail(srv, "bob", timeout=5)
    kv = wait_for(lambda: log_events(srv, "deferred"), 10,
        what="the agent's deferral")[0][0]
    assert "timed out" in kv["why"]
    assert srv.maildir("ann") == []


def test_an_agent_that_cannot_start_is_retried(make_postern, tmp_path):
    # Executable, so the configuration loads; its interpreter is missing.
    agent = tmp_path / "agent.sh"
    agent.write_text("#!/nonexistent/interpreter\n")
    agent.chmod(0o755)
    srv = make_postern(config=agent_config(tmp_path,
        'action weather reply command "%s"' % agent))
    ask(srv, "ann@agents.example.org", "nyc-weather@agents.example.org")
    kv = wait_for(lambda: log_events(srv, "deferred"), 10,
        what="the agent's deferral")[0][0]
    assert kv["why"] == "4.3.0 %s: execve: No such file or directory" % agent
    # Once it can run, the retry answers.
    agent.write_text("#!/bin/sh\ncat > /dev/null\necho Sunny.\n")
    msg = one_mail(srv, "ann")
    assert msg.get_content() == "Sunny.\n"


def test_one_reply_per_period_across_nodes_sharing_redis(make_postern,
                                                         tmp_path,
                                                         redis_server):
    text = 'action weather reply text "%s/answer.txt"' % tmp_path
    (tmp_path / "answer.txt").write_text("Sunny.\n")
    conf = agent_config(tmp_path, text).replace(
        "state sqlite %s/state.db" % tmp_path, "state redis " + redis_server)
    a = make_postern(config=conf)
    b = make_postern(config=conf)
    ask(a, "ann@agents.example.org", "nyc-weather@agents.example.org")
    one_mail(a, "ann")
    ask(b, "ann@agents.example.org", "nyc-weather@agents.example.org")
    wait_for(lambda: [kv for kv, _ in log_events(b, "agent") if
        kv["why"] == "answered already in this period"], 20,
        what="the second node remembering the first one's reply")
    assert b.maildir("ann") == []
