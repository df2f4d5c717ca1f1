"""
What postern leans on fails on purpose: the Redis state store and a
milter stop (SIGKILL) and hang (SIGSTOP: the socket stays open, nothing is
answered) in the middle of a session, and a Lua script never ends.  Each
costs the session a reply as its handler's on-error says (451 4.3.0 by
default), within a bounded time; no session is stuck and the event loop
keeps serving the others; once the dependency is back, mail flows again
without a restart.
"""

import re
import socket
import subprocess
import threading
import time

from conftest import (HOST, RedisProc, close_listener, log_events,
    make_config, send_message, spool_empty, wait_for)
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


class OldRedis:
    """Redis 6 in front of a real Redis: a proxy that says redis_version
    6.2.14 to INFO and answers PEXPIRE ... NX (an option of 7.0) with the
    error Redis 6 gives; everything else goes through."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.lsock = socket.socket()
        self.lsock.bind((HOST, 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.infos = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def spec(self):
        return "%s:%d" % (HOST, self.port)

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,),
                daemon=True).start()

    @staticmethod
    def _reply(f):
        line = f.readline()
        if line[:1] == b"$" and int(line[1:]) >= 0:
            return line + f.read(int(line[1:]) + 2)
        if line[:1] == b"*":
            return line + b"".join(OldRedis._reply(f)
                for _ in range(max(int(line[1:]), 0)))
        return line

    def _serve(self, c):
        u = socket.create_connection((HOST, self.up), timeout=10)
        cf, uf = c.makefile("rb"), u.makefile("rb")
        try:
            while True:
                line = cf.readline()
                if not line.startswith(b"*"):
                    return
                raw, args = line, []
                for _ in range(int(line[1:])):
                    n = cf.readline()
                    b = cf.read(int(n[1:]) + 2)
                    raw += n + b
                    args.append(b[:-2])
                verb = args[0].upper()
                if verb == b"PEXPIRE" and len(args) > 3:
                    c.sendall(b"-ERR wrong number of arguments for "
                        b"'pexpire' command\r\n")
                    continue
                u.sendall(raw)
                rep = self._reply(uf)
                if verb == b"INFO":
                    self.infos += 1
                    body = re.sub(rb"redis_version:[^\r]*",
                        b"redis_version:6.2.14", rep.split(b"\r\n", 1)[1][:-2])
                    rep = b"$%d\r\n%s\r\n" % (len(body), body)
                c.sendall(rep)
        except (OSError, ValueError):
            pass
        finally:
            c.close()
            u.close()

    def close(self):
        close_listener(self.lsock)


def store_fails_at_rcpt(srv, *whos):
    """In one transaction, each RCPT gets redis_config's store failure."""
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        for who in whos:
            r = rcpt(c, who)
            assert (r.code, r.esc) == (451, "4.3.0"), "%r\n%s" % (r,
                c.transcript())


def test_redis_older_than_7_is_not_used(make_postern, redis_proc):
    """Counters expire through PEXPIRE ... NX, which Redis has from 7.0 on:
    an older server is named in the log and not used at all (the store
    fails, as the handlers' on-error says), rather than filled with
    counters that never expire."""
    old = OldRedis(redis_proc.port)
    try:
        srv = make_postern(config=redis_config(old.spec))
        store_fails_at_rcpt(srv, "bob@example.org", "carol@example.org")
        line = "postern needs Redis 7.0 or later, not using it"
        wait_for(lambda: line in srv.log(), what="the old Redis logged")
        assert srv.log().count(line) == 1, srv.log()
        assert 'version "6.2.14"' in srv.log(), srv.log()
        assert old.infos == 1
        keys = subprocess.run(["redis-cli", "-p", str(redis_proc.port),
            "--scan"], capture_output=True, text=True, timeout=10).stdout
        assert keys.split() == [], "counters written: %r" % keys
    finally:
        old.close()


def test_redis_wanting_a_password_is_named_as_such(make_postern, tmp_path):
    """postern does not log in to Redis: one with requirepass refuses the
    INFO that asks its version, and the log says so (not that the server
    is too old); the store fails as the handler's on-error says."""
    d = tmp_path / "redis-pw"
    d.mkdir()
    red = RedisProc(d, args=["--requirepass", "secret"])
    try:
        srv = make_postern(config=redis_config(red.spec))
        store_fails_at_rcpt(srv, "bob@example.org")
        line = ("state store: redis %s refused INFO: NOAUTH Authentication "
            "required. (postern does not log in to Redis), not using it"
            % red.spec)
        wait_for(lambda: line in srv.log(), what="the refused INFO logged")
        assert "needs Redis 7.0" not in srv.log(), srv.log()
    finally:
        red.kill()


def test_greylist_store_failure_with_on_error_accept_sets_nothing(
        make_postern):
    """on-error accept skips a greylist whose store fails: the message
    goes in, and tx.greylist (deferred|pass) is not set, so neither the
    accepted line nor the envelope claims the triplet passed."""
    # Nothing listens on port 1: every request to the store fails.
    srv = make_postern(config=make_config(["state redis %s:1" % HOST,
        "workers 1", "on rcpt { greylist delay 1h on-error accept }"]))
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.org", ["bob@example.org"],
            "Subject: grey\r\n\r\nthe store is down\r\n")
    wait_for(lambda: log_events(srv, "accepted"), what="the accepted line")
    verdicts = [kv for kv, _ in log_events(srv, "chain")
        if kv.get("handler") == "greylist"]
    assert [(v.get("verdict"), v.get("why")) for v in verdicts] == \
        [("error", "state store unavailable")], verdicts
    (kv, line), = log_events(srv, "accepted")
    assert kv.get("state") == "", line


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
    # Library functions that loop in C without allocating.
    "string.rep of nothing": "local s = string.rep('', 1e15)",
    "table.move of nothing": "table.move({}, 1, 1e15, 2)",
    # One instruction each, a copy of megabytes in C.
    "copying a long string": "local s = string.rep('a', 4e6) "
        "while true do local t = s:upper() end",
    "concatenating a long string": "local s = string.rep('a', 4e6) "
        "while true do local t = s .. 'x' end",
    # One instruction each, a walk of megabytes in C, nothing allocated.
    "comparing long strings": "local s = string.rep('a', 4e6) "
        "local t = s:upper():lower() while true do local _ = s == t end",
    "a long string as a number": "local s = string.rep('1', 4e6) "
        "while true do local _ = s + 0 end",
    "table.remove through __len": "table.remove(setmetatable({}, "
        "{__len = function() return 1e15 end}), 1)",
    "sorting again and again": "local t = {} for i = 1, 100000 do "
        "t[i] = i end while true do table.sort(t) end",
    # Lua code that runs where the count hook does not.
    "xpcall's message handler": "xpcall(function() error('x') end, "
        "function() while true do end end)",
    "a finalizer after an error": "setmetatable({}, {__gc = function() "
        "while true do end end}) error('boom')",
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
