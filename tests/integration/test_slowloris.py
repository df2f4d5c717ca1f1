"""Slow clients: a command line must arrive whole within idle-timeout of the
reply before it, and message text at data-rate or faster, so clients that
trickle a byte now and then are cut instead of holding their slots.

The figures scale down: with idle-timeout 20s a trickler must be gone
within 45s; here the timeouts are TIMEOUT seconds (2 by default) and the
bound is the same ratio.  test_many_tricklers_do_not_starve_a_normal_client
runs 300 trickling clients; its long variant 2,000.  The long runs
(docs/testing.md), and the black-box figures (20 s timeouts, a byte a
second):

    POSTERN_LONG=1 python3 -m pytest -s tests/integration/test_slowloris.py
    POSTERN_SLOW_TIMEOUT=20 python3 -m pytest tests/integration/test_slowloris.py
"""

import os
import resource
import selectors
import socket
import time

import pytest

from conftest import HOST, Closed, send_message, wait_for

# idle-timeout and data-timeout of these tests, seconds
TIMEOUT = int(os.environ.get("POSTERN_SLOW_TIMEOUT", "2"))
CUT_WITHIN = TIMEOUT * 45 / 20	# 20 s -> 45 s, scaled
EVERY = min(1.0, TIMEOUT / 8)	# a trickler's pace: a byte a second at most


def slow_config(make_postern, *extra):
    return make_postern(extra=["limit idle-timeout %ds" % TIMEOUT,
        "limit data-timeout %ds" % TIMEOUT] + list(extra))


def trickle_until_cut(c, byte, every, within):
    """Send one byte every `every` seconds until the server closes; the
    seconds that took, and what it said before closing."""
    t0 = time.monotonic()
    c.sock.settimeout(every)
    got = b""
    while time.monotonic() - t0 < within:
        try:
            c.sock.sendall(byte)
        except OSError:
            break		# reset: it closed while we wrote
        try:
            chunk = c.sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    else:
        raise AssertionError("still served after %.1fs of trickling "
            "(got %r)" % (within, got))
    return time.monotonic() - t0, got


def test_trickled_command_line_is_cut(make_postern):
    srv = slow_config(make_postern)
    with srv.session() as c:
        c.hello()
        c.send_raw(b"NOOP ")
        took, got = trickle_until_cut(c, b"x", EVERY, CUT_WITHIN + 5)
        assert got.startswith(b"421 4.4.2 "), got
        assert took <= CUT_WITHIN, "cut after %.1fs, want <= %.1fs" % (
            took, CUT_WITHIN)
    wait_for(lambda: 'what="command line not received in time"' in srv.log(),
        what="the timeout line")


def test_trickled_message_text_is_cut(make_postern):
    srv = slow_config(make_postern)
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        took, got = trickle_until_cut(c, b"y", EVERY, CUT_WITHIN + 5)
        assert got.startswith(b"421 4.4.2 "), got
        assert took <= CUT_WITHIN, "cut after %.1fs, want <= %.1fs" % (
            took, CUT_WITHIN)
    assert srv.maildir("bob") == []
    wait_for(lambda: 'what="message text too slow or stalled"' in srv.log(),
        what="the timeout line")


def test_message_text_at_the_data_rate_outlasts_the_timeout(make_postern):
    # 2 KiB/s against "limit data-rate 1000": each piece buys more time
    # than it took, so three times data-timeout is no problem.
    srv = slow_config(make_postern, "limit data-rate 1000")
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: steady\r\n\r\n")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3 * TIMEOUT:
            c.send_raw((b"z" * 510 + b"\r\n") * 2)
            time.sleep(0.5)	# pacing a client, not waiting for a condition
        c.send_raw(b".\r\n")
        c.expect(250, "2.0.0")
    wait_for(lambda: srv.maildir("bob"), what="delivery to bob")


def test_a_line_that_never_ends_is_cut(postern):
    # Past line-length plus 1 MiB of one command line: 500, then the close.
    with postern.session() as c:
        c.hello()
        c.send_raw(b"NOOP ")
        try:
            for _ in range(2 * 1024):
                c.sock.sendall(b"x" * 1024)
        except OSError:
            pass		# the server closed while we wrote
        try:
            r = c.read_reply()
            assert (r.code, r.esc) == (500, "5.5.2") and "closing" in r.text, r
        except Closed:
            pass		# an RST may overtake the reply; the close counts
        c.expect_closed()


def test_idle_deadline_counts_from_the_reply(make_postern):
    # Whole commands in good time keep a session; the deadline is per line.
    srv = slow_config(make_postern)
    with srv.session() as c:
        c.hello()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2 * TIMEOUT:
            c.send_raw(b"NO"); time.sleep(0.2); c.send_raw(b"OP\r\n")
            c.expect(250, "2.0.0")
            time.sleep(0.3)	# pacing a client
        c.send("QUIT"); c.expect(221)


# ----- many tricklers ------------------------------------------------------------

class Tricklers:
    """n sockets, each greeted and then sent one byte a second of a command
    line that never ends (half of them) or of never-ending message text."""

    def __init__(self, port, n):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < n + 100 and hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                (min(hard, n + 200), hard))
        self.sel = selectors.DefaultSelector()
        self.open = {}		# sock -> [state, bytes got]
        for i in range(n):
            s = socket.create_connection((HOST, port), timeout=10)
            s.setblocking(False)
            self.open[s] = ["greet", b"", i % 2 == 0]
            self.sel.register(s, selectors.EVENT_READ)
        self.cut = []		# what each closed one got last
        self.trickling = 0	# how many got as far as trickling

    # Commands each one sends before it starts to trickle.
    STEPS = {"greet": b"EHLO slow.example\r\n", "ehlo": b"MAIL FROM:<s@"
        b"example.net>\r\n", "mail": b"RCPT TO:<bob@example.org>\r\n",
        "rcpt": b"DATA\r\n"}
    NEXT = {"greet": "ehlo", "ehlo": "mail", "mail": "rcpt", "rcpt": "data"}

    def _advance(self, s, st):
        if st[0] == "ehlo" and st[2]:
            s.send(b"NOOP ")
            st[0] = "data"
        if st[0] in self.STEPS:
            s.send(self.STEPS[st[0]])
            st[0] = self.NEXT[st[0]]
        else:
            st[0] = "trickle"
            self.trickling += 1

    def poll(self, timeout):
        for key, _ in self.sel.select(timeout):
            s, st = key.fileobj, self.open[key.fileobj]
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.sel.unregister(s)
                s.close()
                self.cut.append(st[1])
                del self.open[s]
                continue
            st[1] += chunk
            if st[0] != "trickle" and st[1].endswith(b"\r\n") and \
                    st[1].split(b"\r\n")[-2][3:4] == b" ":
                st[1] = b""
                self._advance(s, st)

    def trickle(self):
        for s, st in list(self.open.items()):
            if st[0] == "trickle":
                try:
                    s.send(b"x")
                except OSError:
                    pass

    def close(self):
        for s in self.open:
            s.close()
        self.sel.close()


def try_to_deliver(srv, n):
    """One normal session: True once its message is accepted, False when
    the server turned it away at connect (421, all slots taken)."""
    c = srv.session()
    try:
        r = c.read_reply()
        if r.code == 421:
            return False
        c.send("EHLO normal.example"); c.expect(250)
        send_message(c, "a@example.net", ["carol@example.org"],
            "Subject: normal %d\r\n\r\nstill served\r\n" % n)
        c.send("QUIT"); c.expect(221)
        return True
    except Closed:
        return False
    finally:
        c.close()


def tricklers_do_not_starve(make_postern, n):
    """n clients take every connection slot and trickle a byte a second;
    the deadlines cut them all within CUT_WITHIN of their last reply, and
    a normal client that keeps trying gets its message in."""
    srv = slow_config(make_postern, "limit connections %d" % n,
        "limit connections-per-ip %d" % n, "workers 2")
    t = Tricklers(srv.port, n)
    try:
        start = time.monotonic()
        ready = lambda: all(st[0] == "trickle" for st in t.open.values())
        while not ready():
            assert time.monotonic() - start < 60, "tricklers not set up"
            t.poll(0.05)
        set_up = time.monotonic()
        delivered, attempts, last_tick = None, 0, 0.0
        while t.open or delivered is None:
            now = time.monotonic()
            assert now - set_up < CUT_WITHIN + 10, \
                "after %.1fs: %d tricklers still open, normal client %s " \
                "(%d attempts)" % (now - set_up, len(t.open),
                "in" if delivered else "locked out", attempts)
            if now - last_tick >= 1.0:
                t.trickle()
                last_tick = now
            t.poll(0.05)
            if delivered is None:
                attempts += 1
                if try_to_deliver(srv, attempts):
                    delivered = now - set_up
        print("%d tricklers: all cut, the normal client in after %.2fs "
            "(%d attempts)" % (n, delivered, attempts))
        assert t.trickling == n, "only %d tricklers got in" % t.trickling
        assert len(t.cut) == n
        assert all(got.startswith(b"421 4.4.2") for got in t.cut), \
            [g for g in t.cut if not g.startswith(b"421 4.4.2")][:3]
        assert delivered <= CUT_WITHIN + 5, "normal client in after " \
            "%.1fs" % delivered
    finally:
        t.close()
    wait_for(lambda: srv.maildir("carol"), what="the normal message")


def test_many_tricklers_do_not_starve_a_normal_client(make_postern):
    tricklers_do_not_starve(make_postern, 300)


@pytest.mark.long
def test_many_tricklers_long(make_postern):
    tricklers_do_not_starve(make_postern, 2000)
