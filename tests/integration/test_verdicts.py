"""
Every verdict kind at every stage where it applies, through the
real server, judged only by what a client and an admin can see: reply codes,
enhanced codes and texts on the wire, how long a reply took (tarpit), the
connection closing, files in the Maildirs, the "accepted" log line's state
and `postern check`'s refusals.

Stages: connect helo starttls auth mail rcpt data header eom quit disconnect.
Verdicts: accept, reject, tarpit, disconnect (421, 521, bare), discard,
quarantine, tag, and a handler failure (a Lua script that raises) under the
default on-error (451 4.3.0), "on-error accept" and "on-error reject".

Combinations the config checker refuses (src/chain/builtin_basic.c stage
masks); each is asserted to be refused by `postern check` with
"HANDLER: not allowed at the STAGE stage":
  - reject, disconnect at quit and disconnect: QUIT always gets 221 (RFC
    5321 4.1.1.10) and after the close there is nobody to answer;
  - tarpit at disconnect: nobody is waiting for a reply;
  - discard, quarantine at connect, helo, starttls, auth, quit, disconnect:
    they decide a transaction's delivery, and there is none there.

Combinations skipped, and why:
  - tag at quit and disconnect: the message is committed before QUIT, so
    nothing the server exposes (the accepted line, the envelope) can show a
    tag set there;
  - every verdict but the handler failure at disconnect: the client is gone,
    nothing is observable (a failure there is checked through its log line);
  - accept at disconnect: same (its "stops the chain" half is checked at
    every other stage by a failing handler placed after it).

Also: Lua's discard/quarantine before MAIL (the builtins are refused there,
a script's verdict holds for the session's transactions) and the program
handler's exit statuses (9: failure, 1: reject).

A refusal at quit that the checker cannot see coming (a failing handler,
default or "on-error reject", or a Lua {"reject", ...}) still gets QUIT's
221 (RFC 5321 4.1.1.10).

Each test starts its own server (a few dozen ms); TLS keys and the users
table are made once per module.
"""

import base64
import crypt
import re
import time

import pytest

from conftest import (unverified_context, TEMPLATE_ACTIONS, Server,
    chain_verdicts, log_events,
    make_config, run_cli, wait_for)

STAGES = ("connect", "helo", "starttls", "auth", "mail", "rcpt", "data",
    "header", "eom", "quit", "disconnect")
TX_STAGES = ("mail", "rcpt", "data", "header", "eom")
CMD_STAGES = STAGES[:-2]		# all but quit and disconnect
NO_TX_STAGES = tuple(s for s in STAGES if s not in TX_STAGES)

USER, PASSWORD = "alice@example.org", "verdict pass"
QUAR_ACTION = 'action quar maildir "{tmp}/mail/quarantine/Maildir"\n'
RELAYED = 'action relayed maildir "{tmp}/mail/relayed/Maildir"\n'
FAIL_LUA = 'function boom(facts, state)\n  error("boom at " .. ' \
    'facts.stage)\nend\n'

VERDICTS_LUA = """
function rej(facts, state) return {"reject", 550, "5.7.1", "no quitting"} end
function disc(facts, state) return "discard" end
function quar(facts, state) return {"quarantine", "quar"} end
function bye421(facts, state) return {"reject", 421, "4.7.0", "lua bye"} end
function disc450(facts, state)
  return {"disconnect", 450, "4.7.1", "try later"}
end
function disc550(facts, state) return {"disconnect", 550, "5.7.1", "go"} end
function disc450bare(facts, state) return {"disconnect", 450} end
"""

TARPIT_MIN, TARPIT_MAX = 0.9, 4.0	# seconds, for "tarpit 1s"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """TLS keys (made by the first server), the users table, the Lua file."""
    d = tmp_path_factory.mktemp("verdicts-shared")
    h = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    (d / "users").write_text("%s %s\n" % (USER, h))
    (d / "fail.lua").write_text(FAIL_LUA)
    (d / "verdicts.lua").write_text(VERDICTS_LUA)
    return d


def config(shared, chains, extra=()):
    """Local mail to bob@localhost, a quarantine Maildir, relaying only when
    authenticated, AUTH offered in plaintext, STARTTLS with a self-signed
    pair; chains: the "on STAGE { ... }" lines."""
    text = make_config(
        ["tls self-signed %s/tls" % shared, "table users file:%s/users"
         % shared, "auth <users>", "state memory"] + list(extra) +
        chains.strip("\n").split("\n"),
        actions=TEMPLATE_ACTIONS + QUAR_ACTION + RELAYED,
        rules=["match to domain localhost action local",
               "match from authenticated action relayed"])
    return text.replace("listen 127.0.0.1:{port}",
        "listen 127.0.0.1:{port} auth-plaintext", 1)


def fail_handler(shared, on_error=None):
    return 'lua "%s/fail.lua" function boom%s' % (shared,
        " on-error " + on_error if on_error else "")


def check_refuses(tmp_path, shared, chains, want):
    conf = tmp_path / "check.conf"
    conf.write_text(config(shared, chains).replace("{tmp}", str(tmp_path))
        .replace("{port}", "2"))
    out = run_cli("check", "-c", str(conf))
    text = out.stdout + out.stderr
    assert out.returncode == 1 and want in text, \
        "check of %r: rc %d, want %r in:\n%s" % (chains, out.returncode,
        want, text)


def plain():
    return base64.b64encode(b"\0" + USER.encode() + b"\0" +
        PASSWORD.encode()).decode()


# ----- the dialogue, one stage at a time ------------------------------------

BODY = b"From: a@example.org\r\nSubject: verdicts\r\n\r\nhello\r\n"


def walk_steps(stage):
    """The stages a session goes through to reach (and pass) `stage`: the
    STARTTLS and AUTH steps only when they are the stage under test (or
    "all")."""
    out = []
    for s in STAGES:
        if s in ("starttls", "auth") and stage not in (s, "all"):
            continue
        out.append(s)
    return out


def send_stage(c, stage):
    """Send what makes `stage` run (nothing for connect and disconnect)."""
    if stage == "helo":
        c.send("EHLO client.example")
    elif stage == "starttls":
        c.send("STARTTLS")
    elif stage == "auth":
        c.send("AUTH PLAIN " + plain())
    elif stage == "mail":
        c.send("MAIL FROM:<a@example.org>")
    elif stage == "rcpt":
        c.send("RCPT TO:<bob@localhost>")
    elif stage == "data":
        c.send("DATA")
    elif stage in ("header", "eom"):
        c.send_raw(BODY + b".\r\n")
    elif stage == "quit":
        c.send("QUIT")
    elif stage == "disconnect":
        c.close()


# The ordinary answer of each stage.
OK_REPLY = {"connect": (220, None), "helo": (250, None),
    "starttls": (220, "2.0.0"), "auth": (235, "2.7.0"),
    "mail": (250, "2.1.0"), "rcpt": (250, "2.1.5"), "data": (354, None),
    "header": (250, "2.0.0"), "eom": (250, "2.0.0"), "quit": (221, None)}


def pass_stage(c, stage):
    """Go through a stage with its ordinary reply."""
    send_stage(c, stage)
    if stage == "disconnect":
        return
    code, esc = OK_REPLY[stage]
    c.expect(code, esc)
    if stage == "starttls":
        c.wrap_tls(unverified_context())
        c.send("EHLO client.example")
        c.expect(250)
    elif stage == "quit":
        c.expect_closed()


def walk_to(c, stage, route="all"):
    """Pass every stage before `stage` (on route's path)."""
    for s in walk_steps(route):
        if s == stage or (s == "eom" and stage == "header"):
            return
        if s == "header":
            continue			# the same dot as eom
        pass_stage(c, s)
    raise AssertionError("stage %s not on the path" % stage)


def walk_from(c, stage, route):
    """Pass every stage after `stage` (which has been answered already)."""
    steps = [s for s in walk_steps(route) if s != "header"]
    start = "eom" if stage == "header" else stage
    for s in steps[steps.index(start) + 1:]:
        pass_stage(c, s)


def full_walk(c, route):
    """The whole dialogue with ordinary replies, QUIT and close included."""
    for s in walk_steps(route):
        if s != "header":
            pass_stage(c, s)


def timed_reply(c, stage, timeout=8.0):
    """Send the stage's command, return (reply, seconds)."""
    t0 = time.monotonic()
    send_stage(c, stage)
    r = c.read_reply(timeout)
    return r, time.monotonic() - t0


# ----- servers and what they did --------------------------------------------

@pytest.fixture
def server(make_postern, shared):
    def make(chains):
        return make_postern(config=config(shared, chains))
    return make


def session_over(srv, n=1):
    """Wait until n sessions have logged their "disconnect" line."""
    wait_for(lambda: len(log_events(srv, "disconnect")) >= n,
        what="%d session end(s) in the log" % n)


def assert_delivered(srv, user="bob"):
    wait_for(lambda: srv.maildir(user), what="a delivery to %s" % user)


def assert_nothing_accepted(srv):
    """After the session ended: no message was committed, no Maildir file."""
    session_over(srv)
    accepted = log_events(srv, "accepted")
    assert not accepted, "a message was accepted: %s" % accepted[0][1]
    for u in ("bob", "quarantine", "relayed"):
        assert not srv.maildir(u), "a file in %s's Maildir" % u


def after_refusal(c, srv, stage, route):
    """A command refused at `stage` (not closing): the session goes on the
    way SMTP says, and nothing reaches a Maildir unless the refusal left a
    way to send it."""
    if stage == "connect":
        # RFC 5321 3.1: after a refused greeting only QUIT is useful.
        c.send("EHLO client.example"); c.expect(503)
        c.send("QUIT"); c.expect(221); c.expect_closed()
        assert_nothing_accepted(srv)
    elif stage == "helo":
        c.send("MAIL FROM:<a@example.org>"); c.expect(503)
        c.send("QUIT"); c.expect(221); c.expect_closed()
        assert_nothing_accepted(srv)
    elif stage == "starttls":
        # Still in plaintext: the mail goes on without TLS.
        walk_from(c, "starttls", route)
        assert_delivered(srv)
        with open(srv.maildir("bob")[0], "rb") as f:
            head = f.read(2000)
        assert b"with ESMTPS" not in head, head
    elif stage == "auth":
        # Not authenticated: no relaying, local mail still goes.
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<x@far.example>"); c.expect(550, "5.7.1")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(BODY + b".\r\n"); c.expect(250)
        c.send("QUIT"); c.expect(221)
        assert_delivered(srv)
        assert not srv.maildir("relayed")
    elif stage == "mail":
        c.send("RCPT TO:<bob@localhost>"); c.expect(503)
        c.send("QUIT"); c.expect(221)
        assert_nothing_accepted(srv)
    elif stage == "rcpt":
        c.send("DATA"); r = c.read_reply()
        assert r.code in (503, 554), "DATA without a recipient: %r" % r
        c.send("QUIT"); c.expect(221)
        assert_nothing_accepted(srv)
    elif stage == "data":
        c.send("NOOP"); c.expect(250)
        c.send("QUIT"); c.expect(221)
        assert_nothing_accepted(srv)
    elif stage in ("header", "eom"):
        # The transaction is over; the session goes on.
        c.send("MAIL FROM:<a@example.org>"); c.expect(250, "2.1.0")
        c.send("QUIT"); c.expect(221)
        assert_nothing_accepted(srv)
    else:
        raise AssertionError("no refusal at %s" % stage)


# ----- accept ----------------------------------------------------------------

@pytest.mark.parametrize("stage", STAGES[:-1])
def test_accept_stops_the_chain(server, shared, stage):
    """accept ends the chain with the stage's ordinary reply: the failing
    handler after it never runs."""
    srv = server("on %s { accept; %s }" % (stage, fail_handler(shared)))
    with srv.session() as c:
        full_walk(c, stage)
    assert_delivered(srv)
    session_over(srv)
    assert not [l for kv, l in log_events(srv, "chain")
        if kv.get("verdict") == "error"], srv.log()[-2000:]


# ----- reject ----------------------------------------------------------------

@pytest.mark.parametrize("stage", CMD_STAGES)
def test_reject(server, stage):
    code = 554 if stage == "connect" else 550
    srv = server('on %s { reject %d 5.7.1 "no %s from %%{client.ip}" }'
        % (stage, code, stage))
    with srv.session() as c:
        walk_to(c, stage, stage)
        r, _ = timed_reply(c, stage)
        assert (r.code, r.esc) == (code, "5.7.1"), \
            "reject at %s: got %r; transcript:\n%s" % (stage, r,
            c.transcript())
        assert r.text.endswith("no %s from 127.0.0.1" % stage), r
        after_refusal(c, srv, stage, stage)


@pytest.mark.parametrize("handler,verdict,why", [
    ('reject 550 5.7.1 "no rcpt from %{client.ip}"', "reject",
        "no rcpt from 127.0.0.1"),
    ("reject", "reject", "Rejected by policy"),
    ("reject 451", "reject", "Try again later"),
    ("disconnect", "disconnect", "test.example closing connection"),
    ('lua "{shared}/verdicts.lua" function rej', "reject", "no quitting"),
    ('lua "{shared}/verdicts.lua" function bye421', "reject", "lua bye"),
    ('lua "{shared}/verdicts.lua" function disc450bare', "bad-reply",
        "reply 450")],
    ids=["text", "bare", "tempfail", "disconnect", "lua", "lua-421",
        "lua-bad"])
def test_refusal_chain_line_says_why(server, shared, handler, verdict, why):
    """A refusal's chain line carries why=: the reply text as the client
    gets it (expanded, defaults filled in), whoever gave it."""
    srv = server("on rcpt { %s }" % handler.replace("{shared}", str(shared)))
    with srv.session() as c:
        walk_to(c, "rcpt", "rcpt")
        timed_reply(c, "rcpt")
    got = chain_verdicts(srv)
    assert got == [("rcpt", verdict, why)], got


@pytest.mark.parametrize("stage", ["quit", "disconnect"])
def test_reject_refused_by_check(tmp_path, shared, stage):
    check_refuses(tmp_path, shared, "on %s { reject 550 5.7.1 no }" % stage,
        "reject: not allowed at the %s stage" % stage)


# ----- tarpit ----------------------------------------------------------------

@pytest.mark.parametrize("stage", STAGES[:-1])
def test_tarpit_delays_then_continues(server, stage):
    srv = server("on %s { tarpit 1s }" % stage)
    c = srv.session()
    try:
        walk_to(c, stage, stage)
        r, took = timed_reply(c, stage)
        code, esc = OK_REPLY[stage]
        assert r.code == code and (esc is None or r.esc == esc), \
            "tarpit at %s: got %r, want %d; transcript:\n%s" % (stage, r,
            code, c.transcript())
        assert TARPIT_MIN <= took <= TARPIT_MAX, \
            "tarpit 1s at %s: reply after %.2fs" % (stage, took)
        if stage == "starttls":
            c.wrap_tls(unverified_context())
            c.send("EHLO client.example"); c.expect(250)
        if stage == "quit":
            c.expect_closed()
        else:
            walk_from(c, stage, stage)
    finally:
        c.close()
    assert_delivered(srv)


def test_tarpit_refused_at_disconnect(tmp_path, shared):
    check_refuses(tmp_path, shared, "on disconnect { tarpit 1s }",
        "tarpit: not allowed at the disconnect stage")


# ----- disconnect ------------------------------------------------------------

DISCONNECTS = [
    ('disconnect 421 4.7.0 "%{hostname} says bye"', 421, "4.7.0",
        "test.example says bye"),
    ('disconnect 521 5.7.1 "no mail here"', 521, "5.7.1", "no mail here"),
    ("disconnect", 421, "4.4.2", "test.example closing connection"),
]


@pytest.mark.parametrize("stage", CMD_STAGES)
@pytest.mark.parametrize("handler,code,esc,text", DISCONNECTS,
    ids=["421", "521", "bare"])
def test_disconnect(server, stage, handler, code, esc, text):
    srv = server("on %s { %s }" % (stage, handler))
    with srv.session() as c:
        walk_to(c, stage, stage)
        r, _ = timed_reply(c, stage)
        assert (r.code, r.esc) == (code, esc) and r.text.endswith(text), \
            "%s at %s: got %r; transcript:\n%s" % (handler, stage, r,
            c.transcript())
        c.expect_closed()
    assert_nothing_accepted(srv)


@pytest.mark.parametrize("stage", ["quit", "disconnect"])
def test_disconnect_refused_by_check(tmp_path, shared, stage):
    check_refuses(tmp_path, shared, "on %s { disconnect }" % stage,
        "disconnect: not allowed at the %s stage" % stage)


def test_disconnect_code_must_close(tmp_path, shared):
    check_refuses(tmp_path, shared, "on mail { disconnect 550 5.7.1 x }",
        "disconnect code must be 421 or 521")


@pytest.mark.parametrize("handler", [
    pytest.param('reject 421 4.7.0 "going away"', id="config"),
    pytest.param('lua "{shared}/verdicts.lua" function bye421', id="lua")])
def test_reject_421_closes(server, shared, handler):
    """RFC 5321 3.8: a 421 closes the channel, whichever verdict sent it."""
    srv = server("on rcpt { %s }" % handler.replace("{shared}", str(shared)))
    with srv.session() as c:
        walk_to(c, "rcpt", "rcpt")
        r, _ = timed_reply(c, "rcpt")
        assert (r.code, r.esc) == (421, "4.7.0"), r
        c.expect_closed()


@pytest.mark.parametrize("func", ["disc450", "disc550"])
def test_script_disconnect_code_must_close(server, shared, func):
    """A script's disconnect with a code that does not close is a bad
    reply: 451, and the session goes on."""
    srv = server('on rcpt { lua "%s/verdicts.lua" function %s }' % (shared,
        func))
    with srv.session() as c:
        walk_to(c, "rcpt", "rcpt")
        r, _ = timed_reply(c, "rcpt")
        assert (r.code, r.esc) == (451, "4.3.0"), r
        c.send("NOOP"); c.expect(250)
    assert any("verdict=bad-reply" in l for _, l in log_events(srv, "chain"))


def test_script_disconnect_550_at_quit_still_221(server, shared):
    srv = server('on quit { lua "%s/verdicts.lua" function disc550 }' %
        shared)
    with srv.session() as c:
        walk_to(c, "quit", "quit")
        r, _ = timed_reply(c, "quit")
        c.expect_closed()
    assert r.code == 221, "got %r, want 221 2.0.0" % r


# ----- discard and quarantine ------------------------------------------------

@pytest.mark.parametrize("stage", TX_STAGES)
def test_discard(server, stage):
    """Every reply is the ordinary one; nothing is delivered anywhere."""
    srv = server("on %s { discard }" % stage)
    with srv.session() as c:
        walk_to(c, "mail", stage)
        walk_from(c, "helo", stage)
    wait_for(lambda: log_events(srv, "discarded"), what="a discarded line")
    assert_nothing_accepted(srv)


@pytest.mark.parametrize("stage", TX_STAGES)
def test_quarantine(server, stage):
    """Every reply is the ordinary one; the message lands in the quarantine
    Maildir only."""
    srv = server("on %s { quarantine quar }" % stage)
    with srv.session() as c:
        walk_to(c, "mail", stage)
        walk_from(c, "helo", stage)
    wait_for(lambda: srv.maildir("quarantine"), what="the quarantined file")
    session_over(srv)
    assert not srv.maildir("bob"), "quarantined at %s, delivered too" % stage
    with open(srv.maildir("quarantine")[0], "rb") as f:
        assert b"Subject: verdicts" in f.read()
    assert log_events(srv, "quarantined")


@pytest.mark.parametrize("verdict", ["discard", "quarantine quar"])
@pytest.mark.parametrize("stage", NO_TX_STAGES)
def test_discard_quarantine_refused_outside_a_transaction(tmp_path, shared,
        stage, verdict):
    check_refuses(tmp_path, shared, "on %s { %s }" % (stage, verdict),
        "%s: not allowed at the %s stage" % (verdict.split()[0], stage))


# ----- tag -------------------------------------------------------------------

TAG_STAGES = STAGES[:-2]	# connect .. eom


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, shared):
    """One server with a tag at every stage up to eom (default scopes) and
    one with explicit scopes; one message through each, the accepted
    lines' state (kv dicts) back."""
    out = {}
    for name, chains in (
            ("default", "\n".join("on %s { tag at.%s=%s-%d }" % (s, s, s, i)
                for i, s in enumerate(TAG_STAGES))),
            ("explicit", "on helo { tag h=1 session }\n"
                "on rcpt { tag r=2 session; tag r2=3 tx }\n"
                "on eom { tag e=4 session }")):
        d = tmp_path_factory.mktemp("verdicts-tag-" + name)
        srv = Server(d, config(shared, chains))
        try:
            srv.start()
            with srv.session() as c:
                walk_to(c, "disconnect", "all")
            session_over(srv)
            acc = log_events(srv, "accepted")
            assert acc, "no accepted line:\n" + srv.log()[-2000:]
            state = acc[0][0].get("state", "")
            out[name] = dict(kv.split("=", 1) for kv in state.split())
            assert srv.maildir("bob")
        finally:
            problems = srv.teardown()
        assert not problems, problems
    return out


@pytest.mark.parametrize("stage", TAG_STAGES)
def test_tag_default_scope(tagged, stage):
    """A tag before MAIL is session state, from MAIL on transaction state;
    both travel with the message (the accepted line)."""
    scope = "tx" if stage in TX_STAGES else "session"
    key = "%s.at.%s" % (scope, stage)
    want = "%s-%d" % (stage, TAG_STAGES.index(stage))
    assert tagged["default"].get(key) == want, \
        "tag at %s: want %s=%s in %r" % (stage, key, want, tagged["default"])


def test_tag_explicit_scope(tagged):
    st = tagged["explicit"]
    assert st == {"session.h": "1", "session.r": "2", "session.e": "4",
        "tx.r2": "3"}, st


# ----- a failing handler and its on-error policy -----------------------------

def wait_chain_error(srv, stage):
    wait_for(lambda: [l for kv, l in log_events(srv, "chain")
        if kv.get("stage") == stage and kv.get("verdict") == "error"
        and "boom" in kv.get("why", "")],
        what="the handler error logged at %s" % stage)


@pytest.mark.parametrize("stage", CMD_STAGES)
@pytest.mark.parametrize("on_error,code,esc", [
    (None, 451, "4.3.0"), ("reject", 550, "5.7.1")], ids=["default",
    "reject"])
def test_failure_refuses(server, shared, stage, on_error, code, esc):
    srv = server("on %s { %s }" % (stage, fail_handler(shared, on_error)))
    # RFC 5321 3.1, 3.8: a greeting is 220 or 554; a temporary refusal
    # there is 421 and the close.
    closes = stage == "connect" and code // 100 == 4
    if stage == "connect" and code == 550:
        code = 554			# the only refusal there
    with srv.session() as c:
        walk_to(c, stage, stage)
        r, _ = timed_reply(c, stage)
        assert (r.code, r.esc) == (421 if closes else code, esc), \
            "failure (on-error %s) at %s: got %r; transcript:\n%s" % (
            on_error or "default", stage, r, c.transcript())
        if closes:
            c.expect_closed()
            assert_nothing_accepted(srv)
        else:
            after_refusal(c, srv, stage, stage)
    wait_chain_error(srv, stage)


@pytest.mark.parametrize("stage", STAGES)
def test_failure_on_error_accept_goes_on(server, shared, stage):
    srv = server("on %s { %s }" % (stage, fail_handler(shared, "accept")))
    with srv.session() as c:
        full_walk(c, stage)
    assert_delivered(srv)
    wait_chain_error(srv, stage)


@pytest.mark.parametrize("handler", [
    pytest.param("fail", id="failure-default"),
    pytest.param("fail-reject", id="failure-on-error-reject"),
    pytest.param("lua-reject", id="lua-reject")])
def test_refusal_at_quit_still_221(server, shared, handler):
    """The builtin reject is refused at quit by the checker, but a failing
    handler or a script's reject can still refuse QUIT."""
    h = {"fail": fail_handler(shared),
        "fail-reject": fail_handler(shared, "reject"),
        "lua-reject": 'lua "%s/verdicts.lua" function rej' % shared}[handler]
    srv = server("on quit { %s }" % h)
    with srv.session() as c:
        walk_to(c, "quit", "quit")
        r, _ = timed_reply(c, "quit")
        c.expect_closed()
    assert_delivered(srv)
    assert r.code == 221, "%s at quit: got %r, want 221 2.0.0" % (handler, r)


@pytest.mark.parametrize("stage", ["connect", "helo"])
@pytest.mark.parametrize("func", ["disc", "quar"])
def test_script_discard_quarantine_before_mail(server, shared, stage, func):
    """The builtins are refused before MAIL, but a script may say discard
    or quarantine there: it holds for the session's transactions."""
    srv = server('on %s { lua "%s/verdicts.lua" function %s }' % (stage,
        shared, func))
    with srv.session() as c:
        full_walk(c, stage)
    session_over(srv)
    if func == "disc":
        assert log_events(srv, "discarded")
        assert_nothing_accepted(srv)
    else:
        wait_for(lambda: srv.maildir("quarantine"), what="the quarantine")
        assert not srv.maildir("bob")


def test_failure_at_disconnect_is_logged(server, shared):
    """Nobody to answer: the message stays delivered, the error is logged."""
    srv = server("on disconnect { %s }" % fail_handler(shared))
    with srv.session() as c:
        walk_to(c, "disconnect", "disconnect")
    assert_delivered(srv)
    wait_chain_error(srv, "disconnect")


BOUNDS_LUA = """
function rcpt(f, state)
  local u = f["rcpt.user"]
  if u == "wrapped" then return {"reject", 4294967846, "5.7.1", "wrapped"} end
  if u == "zero" then return {"reject", 0, "5.7.1", "zero"} end
  if u == "frac" then return {"reject", 550.5, "5.7.1", "frac"} end
  if u == "word" then return {"reject", "no", "5.7.1", "word"} end
  if u == "longest" then return {"reject", 550, "5.7.1", ("y"):rep(399)} end
  if u == "long" then return {"reject", 550, "5.7.1", ("x"):rep(401)} end
  if u == "tag255" then return {"tag", "t", ("v"):rep(255)} end
  if u == "tag256" then return {"tag", "t", ("w"):rep(256)} end
end
"""


def test_script_reply_out_of_bounds_refused_not_cut(server, tmp_path):
    """A script's reply code outside 400..599 (2^32 + 550, 0 included),
    one that is no whole number (550.5, "no"), or text over the limit is a bad reply (451 4.3.0, logged), a tag value
    over 255 characters a failure; neither is sent or stored cut short."""
    (tmp_path / "bounds.lua").write_text(BOUNDS_LUA)
    srv = server('on rcpt { lua "%s" }\n'
        'on data { reject 550 5.7.1 "tag %%{tx.t}" }' % (tmp_path /
        "bounds.lua"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<wrapped@localhost>"); c.expect(451, "4.3.0")
        c.send("RCPT TO:<zero@localhost>"); c.expect(451, "4.3.0")
        c.send("RCPT TO:<frac@localhost>"); c.expect(451, "4.3.0")
        c.send("RCPT TO:<word@localhost>"); c.expect(451, "4.3.0")
        c.send("RCPT TO:<long@localhost>"); c.expect(451, "4.3.0")
        c.send("RCPT TO:<longest@localhost>")
        assert c.expect(550, "5.7.1").text.endswith(" " + "y" * 399)
        c.send("RCPT TO:<tag256@localhost>"); c.expect(451, "4.3.0")
        c.send("RCPT TO:<tag255@localhost>"); c.expect(250)
        c.send("DATA")
        assert c.expect(550, "5.7.1").text.endswith(" tag " + "v" * 255)
    events = [kv for kv, _ in log_events(srv, "chain")]
    assert [kv.get("why", "")[:7] for kv in events
        if kv.get("verdict") == "bad-reply"] == ["wrapped", "zero", "frac", "word", "x" * 7], \
        events
    assert [kv for kv in events if kv.get("verdict") == "error" and
        "value longer than 255" in kv.get("why", "")], events


FIELDS_LUA = r"""
function rcpt(f, state)
  local u = f["rcpt.user"]
  if u == "textnul" then return {"reject", 550, "5.7.1", "a\0b"} end
  if u == "escnul" then return {"reject", 550, "5.7.1\0junk", "esc"} end
  if u == "esctable" then return {"reject", 550, {}, "esc table"} end
  if u == "textbool" then return {"reject", 550, "5.7.1", true} end
  if u == "wordnul" then return {"reject\0x", 550, "5.7.1", "word"} end
  if u == "tagnul" then return {"tag", "k", "x\0y", "session"} end
  if u == "tagscope" then return {"tag", "k", "v", "sessions"} end
  if u == "setnul" then
    return {"reject", 550, "5.7.1", "set " ..
      tostring(state.session.set("k2", "p\0q")) .. " " ..
      tostring(state.session.set("k\0z", "p"))}
  end
end
"""


def test_script_reply_field_of_wrong_type_or_with_nul_refused(server,
        tmp_path):
    """A reply field with a NUL or that is no string (a table, a boolean)
    is a bad reply (451 4.3.0), never cut at the NUL or replaced by the
    default; so is a tag value with a NUL or an unknown scope (a failure),
    and state.X.set refuses a key or value with a NUL."""
    (tmp_path / "fields.lua").write_text(FIELDS_LUA)
    srv = server('on rcpt { lua "%s" }\n'
        'on data { reject 550 5.7.1 "k=%%{session.k} k2=%%{session.k2}" }'
        % (tmp_path / "fields.lua"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        for user in ("textnul", "escnul", "esctable", "textbool", "wordnul",
                "tagnul", "tagscope"):
            c.send("RCPT TO:<%s@localhost>" % user)
            r = c.read_reply()
            assert (r.code, r.esc) == (451, "4.3.0"), "%s: got %r" % (user, r)
        c.send("RCPT TO:<setnul@localhost>")
        assert c.expect(550, "5.7.1").text.endswith(" set false false")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA")
        assert c.expect(550, "5.7.1").text.endswith(" k= k2=")
    verdicts = [kv.get("verdict") for kv, _ in log_events(srv, "chain")
        if kv.get("stage") == "rcpt"]
    assert verdicts[:7] == ["bad-reply"] * 4 + ["error"] * 3, verdicts


CONNECT_LUA = """
function bare(f) return "reject" end
function tbl(f) return {"reject"} end
function text(f) return {"reject", nil, nil, "go away"} end
function given(f) return {"reject", 550, "5.7.1", "as given"} end
"""


@pytest.mark.parametrize("handler,want", [
    ('program "/bin/sh" "-c" "exit 1"', "Rejected by policy"),
    ('lua "{d}/c.lua" function bare', "Rejected by policy"),
    ('lua "{d}/c.lua" function tbl', "Rejected by policy"),
    ('lua "{d}/c.lua" function text', "go away"),
    ('{fail} on-error reject', "Rejected by policy"),
    ('reject 5.7.1 "go away"', "go away"),
    ('lua "{d}/c.lua" function given', "as given")],
    ids=["program", "lua-word", "lua-table", "lua-text", "on-error-reject",
        "builtin-esc", "lua-550-given"])
def test_refusal_at_connect_opens_with_554(server, shared, tmp_path,
        handler, want):
    """RFC 5321 3.1, 4.3.2: a refused connection hears 554 (or 220): the
    default code of a refusal at connect, whichever handler gives it and on
    on-error reject too; a code a script gives stays as given."""
    (tmp_path / "c.lua").write_text(CONNECT_LUA)
    srv = server("on connect { %s }" % handler.replace("{d}", str(tmp_path))
        .replace("{fail}", fail_handler(shared)))
    code = 550 if "given" in handler else 554
    with srv.session() as c:
        r = c.read_reply()
        assert (r.code, r.esc) == (code, "5.7.1") and r.text.endswith(
            " " + want), r


WHERE_LUA = """
local function spin()
  while true do end
end
function rcpt(f, state)
  local u = f["rcpt.user"]
  if u == "spin" then spin() end
  if u == "deep" then
    local function down(n) if n == 0 then spin() end return 1 + down(n - 1) end
    down(50)
  end
  if u == "table" then error({}) end
  if u == "nil" then error(nil) end
  if u == "number" then error(42) end
  if u == "pattern" then string.find("x", "[") end
  if u == "concat" then table.concat({{}}) end
  if u == "rep" then string.rep("", 1e15) end
end
"""


def test_script_error_names_its_place_once(server, tmp_path):
    """A script's error is logged with the place it was raised, once: a
    call out of budget with where it stopped, not also its caller's (a
    recursive caller made it "f:9: f:9: ..."); an error value that is no
    string, with the line of the error() and what it was; an error raised
    inside a library function postern wraps, with the script's line."""
    (tmp_path / "where.lua").write_text(WHERE_LUA)
    srv = server('on rcpt { lua "%s" budget 100000 }' % (tmp_path /
        "where.lua"))
    want = {
        "spin": "3: instruction budget of 100000 exceeded",
        "deep": "3: instruction budget of 100000 exceeded",
        "table": "12: error object is a table value",
        "nil": "13: error object is a nil value",
        "number": "14: 42",
        # raised in C under the functions postern wraps
        "pattern": "15: malformed pattern (missing ']')",
        "concat": "16: invalid value (table) at index 1 in table for "
            "'concat'",
        "rep": "17: instruction budget of 100000 exceeded",
    }
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        for user in want:
            c.send("RCPT TO:<%s@localhost>" % user); c.expect(451, "4.3.0")

    def whys():
        return [kv.get("why", "") for kv, _ in log_events(srv, "chain")
            if kv.get("verdict") == "error"]
    wait_for(lambda: len(whys()) == len(want), what="the handler errors")
    for user, why in zip(want, whys()):
        assert re.fullmatch(r"\S*/where\.lua:" + re.escape(want[user]),
            why), "%s: got why=%r, want FILE:%s" % (user, why, want[user])


def test_program_failure_exit_code(server, tmp_path):
    """A program that exits outside 0-4 is a failure (451 4.3.0), exit 1
    a reject (550 5.7.1)."""
    for status, want in ((9, (451, "4.3.0")), (1, (550, "5.7.1"))):
        srv = server('on rcpt { program "/bin/sh" "-c" "exit %d" }' % status)
        with srv.session() as c:
            walk_to(c, "rcpt", "rcpt")
            r, _ = timed_reply(c, "rcpt")
            assert (r.code, r.esc) == want, "exit %d: got %r" % (status, r)
