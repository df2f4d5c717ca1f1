"""Outbound sessions kept between messages (docs/queue.md, "Connection
reuse"): after a transaction the session to a relay host stays open, idle,
for the next message to the same host with the same settings; it is closed
with QUIT once idle for queue connection-reuse-time, after queue
connection-reuse-limit messages, and on reload and stop.  A kept session the
upstream closed, or that answers 421 to the next MAIL, is given up: the
message goes on a new connection, exactly once, and counts no failure.

The upstream here is an in-process SMTP server that tells its connections
apart (what each carried, whether it got QUIT) and can be told to close a
connection after its first message or to answer 421 to a given MAIL.
"""

import base64
import os
import re
import socket
import threading
import time

from conftest import close_listener, log_events, wait_for
from test_relay import (FAST, LOCAL_RULE, make_ca, relay_server,
    settle, submit, upstreams, write)  # noqa: F401 (a fixture)


class Conn:
    def __init__(self, n):
        self.n = n
        self.helo = None
        self.auth = None
        self.mails = 0
        self.stored = []	# (mail_from, rcpts, data) taken on it
        self.rcpts = 0		# recipients taken on it
        self.put_off = 0	# RCPTs not taken on it
        self.quit = False	# QUIT arrived
        self.closed_at = None	# monotonic time the session ended


class Counting:
    """An SMTP server counting its connections.  close_after_first: the
    numbers of connections it closes, without a word, after their first
    message.  mail_421: {(connection, mail number on it): reply} for MAIL
    commands it answers with that 421 and then closes.  rcpt_limit: the
    recipients a connection takes, then "452 4.5.3 Too many recipients in
    this session" (as postern's own limit says it); rcpt_replies: address
    -> its RCPT reply instead of 250."""

    def __init__(self, close_after_first=(), mail_421=None, auth=False,
            rcpt_limit=None, rcpt_replies=None):
        self.close_after_first = set(close_after_first)
        self.mail_421 = dict(mail_421 or {})
        self.auth = auth
        self.rcpt_limit = rcpt_limit
        self.rcpt_replies = dict(rcpt_replies or {})
        self.lock = threading.Lock()
        self.conns = []
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.port = self.ls.getsockname()[1]
        self.ls.listen(64)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                k = Conn(len(self.conns) + 1)
                self.conns.append(k)
            threading.Thread(target=self.session, args=(c, k),
                daemon=True).start()

    def ehlo(self, c, k, cmd):
        k.helo = cmd[5:]
        ext = [b"PIPELINING", b"8BITMIME"]
        if self.auth:
            ext.append(b"AUTH PLAIN")
        c.sendall(b"250-up.test\r\n" + b"".join(b"250-" + e + b"\r\n"
            for e in ext[:-1]) + b"250 " + ext[-1] + b"\r\n")

    def data(self, c, f, k, mail, rcpts):
        c.sendall(b"354 go\r\n")
        data = b""
        while True:
            line = f.readline()
            if not line:
                return False
            if line == b".\r\n":
                break
            data += line[1:] if line.startswith(b".") else line
        with self.lock:
            k.stored.append((mail, rcpts, data))
        c.sendall(b"250 2.0.0 ok\r\n")
        return not (k.n in self.close_after_first and len(k.stored) == 1)

    def rcpt(self, c, k, addr, rcpts):
        reply = self.rcpt_replies.get(addr)
        if reply is None and self.rcpt_limit is not None and \
                k.rcpts >= self.rcpt_limit:
            reply = "452 4.5.3 Too many recipients in this session"
        if reply is not None:
            with self.lock:
                k.put_off += 1
            c.sendall(reply.encode() + b"\r\n")
            return
        k.rcpts += 1
        rcpts.append(addr)
        c.sendall(b"250 2.1.5 ok\r\n")

    def session(self, c, k):
        f = c.makefile("rb")
        try:
            c.sendall(b"220 up.test ESMTP counting\r\n")
            mail, rcpts = None, []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode("latin-1").rstrip("\r\n")
                verb = cmd[:4].upper()
                if verb in ("EHLO", "HELO"):
                    self.ehlo(c, k, cmd)
                elif verb == "AUTH":
                    raw = base64.b64decode(cmd.split()[2])
                    k.auth = raw.split(b"\0")[1].decode()
                    c.sendall(b"235 2.7.0 ok\r\n")
                elif verb == "MAIL":
                    k.mails += 1
                    reply = self.mail_421.get((k.n, k.mails))
                    if reply:
                        c.sendall(reply.encode() + b"\r\n")
                        return
                    mail, rcpts = re.search(r"<(.*?)>", cmd).group(1), []
                    c.sendall(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    self.rcpt(c, k, re.search(r"<(.*?)>", cmd).group(1),
                        rcpts)
                elif verb == "DATA" and not rcpts:
                    # RFC 2920 3.1: no DATA without a recipient.
                    c.sendall(b"554 5.5.1 no valid recipients\r\n")
                elif verb == "DATA":
                    if not self.data(c, f, k, mail, rcpts):
                        return
                elif verb == "QUIT":
                    k.quit = True
                    c.sendall(b"221 bye\r\n")
                    return
                elif verb in ("RSET", "NOOP"):
                    c.sendall(b"250 ok\r\n")
                else:
                    c.sendall(b"502 5.5.2 no\r\n")
        except OSError:
            pass
        finally:
            k.closed_at = time.monotonic()
            c.close()

    def count(self):
        with self.lock:
            return sum(len(k.stored) for k in self.conns)

    def rcpts(self):
        with self.lock:
            return sorted(r for k in self.conns for _m, rs, _d in k.stored
                for r in rs)

    def per_conn(self):
        """The number of messages each connection carried, in order."""
        with self.lock:
            return [len(k.stored) for k in self.conns]

    def stop(self):
        close_listener(self.ls)


def one_after_another(srv, up, n, first=0):
    """Submit n messages, each once the one before arrived upstream."""
    for i in range(first, first + n):
        submit(srv, "alice@example.org", ["bob%d@remote.test" % i],
            subject="m%d" % i)
        wait_for(lambda: up.count() == i + 1, timeout=15,
            what="message %d upstream" % i)


def kept_relay(make_postern, up, *extra):
    """A server relaying everything to UP, its sessions kept 30 s."""
    return relay_server(make_postern, 'action out relay '
        '"smtp://127.0.0.1:%d"' % up.port,
        extra=("queue connection-reuse-time 30s",) + extra)


def no_failures(srv):
    assert not log_events(srv, "deferred"), srv.log()[-3000:]
    assert not log_events(srv, "failed"), srv.log()[-3000:]
    assert srv.maildir("alice") == []	# no bounce


def test_messages_in_a_row_share_one_connection(make_postern):
    up = Counting()
    try:
        srv = relay_server(make_postern, 'action out relay '
            '"smtp://127.0.0.1:%d" helo relay.test' % up.port,
            extra=("queue connection-reuse-time 30s",))
        one_after_another(srv, up, 5)
        settle(srv, up.count, 5, "five in a row")
        assert up.per_conn() == [5], up.per_conn()
        assert up.rcpts() == ["bob%d@remote.test" % i for i in range(5)]
        assert up.conns[0].helo == "relay.test"
        assert up.conns[0].closed_at is None	# still kept
        no_failures(srv)
    finally:
        up.stop()


def test_upstream_closed_the_idle_connection(make_postern):
    """The upstream drops the kept connection: the next message goes on a
    new one, once, with no deferral and no bounce."""
    up = Counting(close_after_first=(1,))
    try:
        srv = kept_relay(make_postern, up)
        one_after_another(srv, up, 1)
        wait_for(lambda: up.conns[0].closed_at is not None, timeout=10,
            what="the upstream to close the first connection")
        one_after_another(srv, up, 2, first=1)
        settle(srv, up.count, 3, "after the upstream closed")
        assert up.per_conn() == [1, 2], up.per_conn()
        assert up.rcpts() == ["bob%d@remote.test" % i for i in range(3)]
        no_failures(srv)
    finally:
        up.stop()


def test_upstream_says_421_to_the_next_mail(make_postern):
    """A kept connection answers the next MAIL with 421 and closes: the
    message goes on a new connection, once, and no failure is counted."""
    up = Counting(mail_421={(1, 2): "421 4.4.2 up.test idle too long"})
    try:
        srv = kept_relay(make_postern, up)
        one_after_another(srv, up, 3)
        settle(srv, up.count, 3, "after a 421")
        assert up.per_conn() == [1, 2], up.per_conn()
        assert up.conns[0].mails == 2	# the 421 was seen
        assert up.rcpts() == ["bob%d@remote.test" % i for i in range(3)]
        no_failures(srv)
    finally:
        up.stop()


def test_kept_session_at_its_recipient_limit_is_given_up(make_postern):
    """The upstream takes two recipients a connection, then answers RCPT
    with 452 4.5.3.  The kept session that says so for the only recipient
    decided nothing: the message goes on a new connection, once, with no
    deferral; and a session that said 452 is never kept again."""
    up = Counting(rcpt_limit=2)
    try:
        srv = kept_relay(make_postern, up)
        one_after_another(srv, up, 5)
        settle(srv, up.count, 5, "five at two a connection")
        assert up.per_conn() == [2, 2, 1], up.per_conn()
        assert [k.put_off for k in up.conns] == [1, 1, 0]
        assert up.rcpts() == ["bob%d@remote.test" % i for i in range(5)]
        wait_for(lambda: up.conns[0].quit and up.conns[1].quit, timeout=10,
            what="QUIT on the connections that said 452")
        no_failures(srv)
    finally:
        up.stop()


def test_session_that_put_off_a_recipient_is_not_kept(make_postern):
    """On a new connection a 4xx to one RCPT is that recipient's deferral,
    the others go through; the session then ends with QUIT instead of
    waiting for the next message, and the retry takes a new one."""
    up = Counting(rcpt_replies={"later@remote.test": "451 4.3.0 not now"})
    try:
        srv = kept_relay(make_postern, up)
        submit(srv, "alice@example.org", ["a@remote.test",
            "later@remote.test"])
        wait_for(lambda: log_events(srv, "deferred"), timeout=15,
            what="the deferral of later@")
        wait_for(lambda: up.conns[0].quit, timeout=10,
            what="QUIT after the transaction")
        del up.rcpt_replies["later@remote.test"]
        settle(srv, up.count, 2, "the retry of later@")
        assert up.per_conn() == [1, 1], up.per_conn()
        assert up.rcpts() == ["a@remote.test", "later@remote.test"]
        assert [kv["rcpt"] for kv, _ in log_events(srv, "deferred")] == [
            "<later@remote.test>"]
    finally:
        up.stop()


def test_idle_connection_closed_after_reuse_time(make_postern):
    up = Counting()
    try:
        srv = relay_server(make_postern, 'action out relay '
            '"smtp://127.0.0.1:%d"' % up.port,
            extra=("queue connection-reuse-time 1s",))
        one_after_another(srv, up, 1)
        delivered = time.monotonic()
        k = up.conns[0]
        wait_for(lambda: k.closed_at is not None, timeout=10,
            what="postern to close the idle connection")
        assert k.quit, "closed without QUIT"
        # Kept about the idle time first, not closed at once.
        assert k.closed_at - delivered >= 0.8, k.closed_at - delivered
        # The next message opens a new connection.
        one_after_another(srv, up, 1, first=1)
        assert up.per_conn() == [1, 1]
        no_failures(srv)
    finally:
        up.stop()


def test_reuse_limit_closes_after_that_many_messages(make_postern):
    up = Counting()
    try:
        srv = kept_relay(make_postern, up,
            "queue connection-reuse-limit 2")
        one_after_another(srv, up, 5)
        settle(srv, up.count, 5, "five with a limit of two")
        assert up.per_conn() == [2, 2, 1], up.per_conn()
        wait_for(lambda: up.conns[0].quit and up.conns[1].quit, timeout=10,
            what="QUIT on the connections that reached the limit")
        assert up.conns[2].closed_at is None
        no_failures(srv)
    finally:
        up.stop()


def test_different_auth_identities_do_not_share(make_postern, tmp_path):
    """Two relay accounts to one host, and a third action without AUTH:
    each message goes on a connection logged in as its own account."""
    up = Counting(auth=True)
    try:
        a = write(str(tmp_path / "a"), "127.0.0.1 usera pa\n")
        b = write(str(tmp_path / "b"), "127.0.0.1 userb pb\n")
        url = "smtp://127.0.0.1:%d" % up.port
        srv = make_postern(extra=FAST + ("queue connection-reuse-time 30s",
            "table ca file:%s" % a, "table cb file:%s" % b,
            'action ra relay "%s" auth <ca>' % url,
            'action rb relay "%s" auth <cb>' % url,
            'action rn relay "%s"' % url),
            rules=(LOCAL_RULE, "match from local to domain a.test action ra",
                "match from local to domain b.test action rb",
                "match from local action rn"))
        order = ["a", "b", "n", "a", "b", "n"]
        for i, d in enumerate(order):
            submit(srv, "alice@example.org", ["u%d@%s.test" % (i, d)])
            wait_for(lambda: up.count() == i + 1, timeout=15,
                what="message %d upstream" % i)
        settle(srv, up.count, len(order), "three identities")
        seen = {}
        for k in up.conns:
            for _m, rcpts, _d in k.stored:
                dom = rcpts[0].split("@")[1][0]
                seen.setdefault(dom, set()).add((k.n, k.auth))
        assert seen == {"a": {(1, "usera")}, "b": {(2, "userb")},
            "n": {(3, None)}}, seen
        no_failures(srv)
    finally:
        up.stop()


def test_tls_and_plain_to_one_port_do_not_share(make_postern, upstreams,
        tmp_path):
    ca, cert, key = make_ca(tmp_path / "ca")
    up = upstreams("--mode", "starttls", "--cert", cert, "--key", key,
        "--tls-optional", "--pipelining")
    srv = make_postern(extra=FAST + ("queue connection-reuse-time 30s",
        'action st relay "smtp+starttls://127.0.0.1:%d" ca %s'
        % (up.port, ca),
        'action pl relay "smtp://127.0.0.1:%d"' % up.port),
        rules=(LOCAL_RULE, "match from local to domain st.test action st",
            "match from local action pl"))
    order = ["st", "pl", "st", "pl"]
    for i, d in enumerate(order):
        submit(srv, "alice@example.org", ["u%d@%s.test" % (i, d)])
        wait_for(lambda: len(up.messages()) == i + 1, timeout=15,
            what="message %d upstream" % i)
    settle(srv, lambda: len(up.messages()), len(order), "tls and plain")
    conns = {}
    for env, _eml in up.messages():
        conns.setdefault(env["peer"], set()).add(
            (env["rcpt"][0].split("@")[1], env["tls"]))
    assert sorted(conns.values(), key=sorted) == [
        {("pl.test", "no")}, {("st.test", "yes")}], conns
    no_failures(srv)


def test_reload_and_stop_close_kept_connections(make_postern):
    up = Counting()
    try:
        srv = relay_server(make_postern, 'action out relay '
            '"smtp://127.0.0.1:%d"' % up.port,
            extra=("queue connection-reuse-time 60s",))
        one_after_another(srv, up, 1)
        srv.sighup()
        wait_for(lambda: up.conns[0].closed_at is not None, timeout=10,
            what="the kept connection closed on reload")
        assert up.conns[0].quit
        one_after_another(srv, up, 1, first=1)
        assert up.per_conn() == [1, 1]
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 10
        wait_for(lambda: up.conns[1].closed_at is not None, timeout=5,
            what="the kept connection closed on stop")
        assert up.conns[1].quit
    finally:
        up.stop()
