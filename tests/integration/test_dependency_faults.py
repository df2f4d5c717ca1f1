"""
What postern leans on fails on purpose: the Redis state store and a
milter stop (SIGKILL) and hang (SIGSTOP: the socket stays open, nothing is
answered) in the middle of a session, and a Lua script never ends.  Each
costs the session a reply as its handler's on-error says (451 4.3.0 by
default), within a bounded time; no session is stuck and the event loop
keeps serving the others; once the dependency is back, mail flows again
without a restart.
"""

import time

from conftest import (log_events, make_config, send_message, spool_empty,
    wait_for)
from test_milter import make_milter, milter_config  # noqa: F401 (fixture)

# A hung dependency may hold a reply this long at most (timeouts of a few
# seconds, plus a busy 2-core machine).
BOUNDED = 20.0


def rcpt(c, who):
    c.send("RCPT TO:<%s>" % who)
    return c.read_reply(timeout=BOUNDED)


def timed(f):
    t0 = time.monotonic()
    r = f()
    return r, time.monotonic() - t0


def other_session_served(srv):
    """A second client is greeted and answered at once: the loop is free."""
    with srv.session() as o:
        o.expect(220, timeout=5)
        o.send("EHLO other.example"); o.expect(250, timeout=5)


def hung_rcpt(srv, c, dep):
    """RCPT while dep (paused meanwhile) hangs: 451 4.3.0 in bounded time,
    another session served while it waits, the session goes on."""
    c.hello()
    c.send("MAIL FROM:<a@example.org>"); c.expect(250)
    assert rcpt(c, "bob@example.org").code == 250
    dep.pause()
    try:
        c.send("RCPT TO:<carol@example.org>")
        other_session_served(srv)	# the dependency hangs, not the loop
        r = c.read_reply(timeout=BOUNDED)
        assert (r.code, r.esc) == (451, "4.3.0"), "%r\n%s" % (r,
            c.transcript())
        c.send("NOOP"); c.expect(250)
    finally:
        dep.resume()


def wait_rcpt_ok(srv, who):
    """Retry a fresh session's RCPT until it gets 250 (a store or filter
    that came back is used again)."""
    def ok():
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            return rcpt(c, who).code == 250
    wait_for(ok, timeout=BOUNDED, interval=0.2, what="RCPT to work again")


# ----- the state store ------------------------------------------------------

def redis_config(spec):
    # MAIL's check lets mail in when the store fails; RCPT's is the
    # default (tempfail).
    return make_config(["state redis " + spec, "workers 1",
        "on mail { ratelimit 1000/1m per ip on-error accept }",
        "on rcpt { ratelimit 1000/1m per sender }"])


def test_redis_stopping_mid_session(make_postern, redis_proc):
    srv = make_postern(config=redis_config(redis_proc.spec))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        assert rcpt(c, "bob@example.org").code == 250
        redis_proc.kill()
        r, took = timed(lambda: rcpt(c, "carol@example.org"))
        assert (r.code, r.esc) == (451, "4.3.0"), "%r\n%s" % (r,
            c.transcript())
        assert took < BOUNDED
        c.send("RSET"); c.expect(250)
        c.send("MAIL FROM:<b@example.org>"); c.expect(250)	# on-error accept
        c.send("NOOP"); c.expect(250)
    redis_proc.restart()
    wait_rcpt_ok(srv, "dave@example.org")
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["bob@example.org"],
            "Subject: after\r\n\r\nredis is back\r\n")
    wait_for(lambda: srv.maildir("bob") and spool_empty(srv),
        what="the delivery")


def test_redis_hanging_mid_session(make_postern, redis_proc):
    srv = make_postern(config=redis_config(redis_proc.spec))
    with srv.session() as c:
        hung_rcpt(srv, c, redis_proc)
    wait_rcpt_ok(srv, "dave@example.org")
    assert srv.alive()


# ----- a milter ---------------------------------------------------------------

def test_milter_stopping_and_hanging_mid_session(make_postern, make_milter):
    m = make_milter("continue")
    srv = make_postern(config=milter_config(m.spec, stages=("rcpt",),
        opts="timeout 2s", extra=["workers 1"]))
    with srv.session() as c:
        hung_rcpt(srv, c, m)
        # The conversation is lost for this session (though the filter
        # answers again): a 451, not a new conversation.
        r = rcpt(c, "dave@example.org")
        assert (r.code, r.esc) == (451, "4.3.0"), r
    wait_rcpt_ok(srv, "erin@example.org")
    # Killed mid-transaction, then started again where it was.
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        assert rcpt(c, "bob@example.org").code == 250
        m.kill9()
        r = rcpt(c, "carol@example.org")
        assert (r.code, r.esc) == (451, "4.3.0"), "%r\n%s" % (r,
            c.transcript())
        c.send("NOOP"); c.expect(250)
    make_milter("continue", port=m.port)
    wait_rcpt_ok(srv, "frank@example.org")
    assert srv.alive()


# ----- a Lua script that never ends ------------------------------------------

LOOPS = {
    "plain": "while true do end",
    "inside pcall": "while true do pcall(function() while true do end end) "
        "end",
    "in a coroutine": "local co = coroutine.wrap(function() while true do "
        "end end) co()",
    "through gsub": "local s = string.rep('a', 100) while true do "
        "s:gsub('a', function(x) return x end) end",
    "recursion": "local function f() return f() end f()",
    # Inside Lua's C matcher, where the budget's hook never runs.
    "pattern backtracking": "string.find(string.rep('a', 3000), "
        "'.-.-.-.-.-.-.-.-b')",
}


def test_endless_lua_costs_one_reply_never_the_loop(make_postern, tmp_path):
    """Each way of looping forever, chosen by the HELO name, under the
    default instruction budget: each costs its session one 451 4.3.0, the
    session goes on, and the one event loop serves another client
    meanwhile."""
    script = tmp_path / "loops.lua"
    script.write_text("function helo(facts, state)\n" + "".join(
        "  if facts.helo == 'loop%d.example' then %s end\n" % (i, body)
        for i, body in enumerate(LOOPS.values())) + "end\n")
    srv = make_postern(config=make_config(["workers 1", "state memory",
        'on helo { lua "%s" }' % script]))
    for i, name in enumerate(LOOPS):
        with srv.session() as c:
            c.expect(220)
            c.send("EHLO loop%d.example" % i)
            r = c.read_reply(timeout=BOUNDED)
            assert (r.code, r.esc) == (451, "4.3.0"), "%s: %r\n%s" % (name,
                r, srv.log()[-2000:])
            other_session_served(srv)
            c.send("EHLO fine.example"); c.expect(250)
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
    wait_for(lambda: len([kv for kv, _ in log_events(srv, "chain")
        if kv.get("verdict") == "error"]) == len(LOOPS),
        what="one handler error per script")
