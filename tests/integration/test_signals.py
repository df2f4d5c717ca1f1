"""SIGHUP reloads the config (or keeps the old one); SIGTERM stops cleanly."""

import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import (HOST, Closed, binary, listen_config, log_events,
    make_config, send_message, wait_for)

RULES_WITH_OTHER = [
    "match to domain example.org action local",
    "match to domain localhost action local",
    "match to domain other.test action local",
]


def rcpt_code(srv, rcpt):
    """A fresh session's answer to RCPT TO:<rcpt>."""
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<%s>" % rcpt)
        return c.read_reply().code


def test_sighup_with_good_config_applies_it_and_keeps_sessions(postern):
    assert rcpt_code(postern, "x@other.test") == 550
    with postern.session() as old:
        old.hello()
        old.send("MAIL FROM:<a@example.net>"); old.expect(250, "2.1.0")
        postern.write_config(make_config(rules=RULES_WITH_OTHER))
        postern.sighup()
        wait_for(lambda: rcpt_code(postern, "x@other.test") == 250, 10,
            what="other.test to be accepted after SIGHUP")
        # The session opened before the reload is still served.
        old.send("RCPT TO:<bob@example.org>"); old.expect(250, "2.1.5")
        old.send("DATA"); old.expect(354)
        old.send_raw(b"Subject: across reload\r\n\r\nx\r\n.\r\n")
        old.expect(250, "2.0.0")
        old.send("QUIT"); old.expect(221, "2.0.0")
    with postern.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["x@other.test"], "Subject: new\r\n\r\ny\r\n")
    wait_for(lambda: postern.maildir("bob") and postern.maildir("x"),
        what="deliveries to bob and x")
    assert postern.alive()


def test_sighup_with_bad_config_keeps_the_old_one(postern):
    with postern.session() as old:
        old.hello()
        postern.write_config(make_config(rules=RULES_WITH_OTHER) +
            "frobnicate everything\nlimit recipients lots\n")
        postern.sighup()
        wait_for(lambda: postern.conf + ":" in postern.log(), 10,
            what="the config error (%s:LINE: ...) in the log" % postern.conf)
        assert postern.alive()
        old.send("NOOP"); old.expect(250, "2.0.0")
    assert rcpt_code(postern, "bob@example.org") == 250
    assert rcpt_code(postern, "x@other.test") == 550, "bad config half-applied"


def test_sigterm_idle_session_gets_421_and_exit_0(postern):
    with postern.session() as c:
        c.hello()
        postern.sigterm()
        c.expect(421, "4.3.2")
        c.expect_closed()
    rc = postern.wait_exit()
    assert rc == 0, "exit status %d; stderr:\n%s" % (rc, postern.log()[-2000:])


def test_sigterm_lets_a_session_in_data_finish(postern):
    with postern.session() as busy, postern.session() as idle:
        busy.hello()
        idle.hello()
        busy.send("MAIL FROM:<a@example.net>"); busy.expect(250, "2.1.0")
        busy.send("RCPT TO:<bob@example.org>"); busy.expect(250, "2.1.5")
        busy.send("DATA"); busy.expect(354)
        busy.send_raw(b"Subject: grace\r\nMessage-Id: <grace@example.net>\r\n\r\n"
            b"first half\r\n")
        postern.sigterm()
        # The idle session is told first: shutdown has begun.
        idle.expect(421, "4.3.2")
        idle.expect_closed()
        # No new connections once shutdown has begun.
        try:
            with socket.create_connection(("127.0.0.1", postern.port), 2) as s:
                s.settimeout(2)
                data = s.recv(512)
                assert not data.startswith(b"220"), \
                    "new session greeted during shutdown: %r" % data
        except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
            pass
        # The log says what the stop waits for.
        wait_for(lambda: re.search(r"shutdown: loop \d+ waits for "
            r"sessions=1 transactions=1, at most \d+s more", postern.log()),
            what="the shutdown line naming the session in DATA")
        busy.send_raw(b"second half\r\n.\r\n")
        busy.expect(250, "2.0.0")
        try:
            busy.send("QUIT")
            r = busy.read_reply()
            assert r.code in (221, 421), r
        except (Closed, BrokenPipeError, ConnectionResetError):
            pass
    rc = postern.wait_exit()
    assert rc == 0, "exit status %d; stderr:\n%s" % (rc, postern.log()[-2000:])
    if not postern.maildir("bob"):
        postern.start()		# it may sit in the queue: the next run delivers
    files = wait_for(lambda: postern.maildir("bob"), 10, what="delivery to bob")
    assert len(files) == 1, files


# ----- every stop is bounded --------------------------------------------------
# The shutdown grace is 30 s by default; none of these may wait for it.

STOP_BOUND = 10.0


def stop_within(srv, bound=STOP_BOUND):
    t0 = time.monotonic()
    srv.sigterm()
    rc = srv.wait_exit(bound)
    assert rc == 0, "exit status %d; stderr:\n%s" % (rc, srv.log()[-2000:])
    return time.monotonic() - t0


def test_sigterm_mid_starttls_handshake(make_postern):
    # STARTTLS said 220 and the handshake has begun: no 421 can be sent
    # there, so the session is dropped instead of holding the stop.
    srv = make_postern(extra=["tls self-signed {tmp}/tls"])
    with srv.session() as c:
        c.hello()
        c.send("STARTTLS"); c.expect(220, "2.0.0")
        c.send_raw(b"\x16\x03\x01")	# a ClientHello begins, then nothing
        stop_within(srv)
    assert "dropped in the TLS handshake" in srv.log()


def test_sigterm_mid_implicit_tls_handshake(make_postern):
    srv = make_postern(config=listen_config("tls",
        extra=["tls self-signed {tmp}/tls"]))
    with srv.session() as c:
        c.send_raw(b"\x16\x03\x01")
        wait_for(lambda: "connect sid=" in srv.log(), what="the connect line")
        stop_within(srv)
    assert "dropped in the TLS handshake" in srv.log()


def test_sigterm_with_a_client_that_does_not_read(make_postern):
    # Pipelined commands and never a read: the replies and the 421 cannot
    # go out; the last flush has a short limit, not the grace.
    srv = make_postern()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.settimeout(5)
        s.connect((HOST, srv.port))
        assert s.recv(512).startswith(b"220")
        s.setblocking(False)

        def pushed_back():
            # The server took nothing for a second: its replies are stuck.
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.0:
                try:
                    s.send(b"NOOP\r\n" * 1000)
                    return False
                except BlockingIOError:
                    time.sleep(0.05)
            return True
        wait_for(pushed_back, 60, what="the server to stop reading")
        stop_within(srv)
    finally:
        s.close()
    assert "last reply not taken in time" in srv.log()


def test_sigterm_while_a_decision_is_pending(make_postern):
    # A tarpit holds the RCPT reply: the stop lets it come, then says 421
    # (the session does not go on until the grace runs out).
    srv = make_postern(extra=["on rcpt { tarpit 2s }", "log level debug"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@example.org>")
        wait_for(lambda: 'line="RCPT TO:<bob@example.org>"' in srv.log(),
            what="the RCPT read (its tarpit running)")
        t0 = time.monotonic()
        srv.sigterm()
        c.expect(250, "2.1.5")
        c.expect(421, "4.3.2")
        c.expect_closed()
        assert srv.wait_exit(STOP_BOUND) == 0
        assert time.monotonic() - t0 < STOP_BOUND


def assert_grace_cut(srv, n):
    """The stop ended when its grace ran out, closing n sessions, and
    kept nothing of their messages."""
    assert srv.wait_exit(STOP_BOUND) == 0
    assert "grace over, closing %d sessions" % n in srv.log()
    assert srv.maildir("bob") == []
    assert not log_events(srv, "accepted")
    assert srv.spool_files("msg") == [] and srv.spool_files("env") == []


@pytest.mark.parametrize("stage", ["connect", "rcpt", "eom"])
def test_grace_over_answers_a_waiting_command_421(make_postern, stage):
    """A greeting, command or message's end still waiting on a handler
    (a tarpit longer than the grace) when the grace runs out gets 421
    4.3.2 in place of its reply (RFC 5321 3.8), as an idle session did,
    not a bare close; a message ended so is not accepted."""
    srv = make_postern(extra=["on %s { tarpit 10m }" % stage,
        "limit shutdown-grace 1s"])
    with srv.session() as c:
        if stage != "connect":
            c.hello()
            c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
            c.send("RCPT TO:<bob@example.org>")
        if stage == "eom":
            c.expect(250, "2.1.5")
            c.send("DATA"); c.expect(354)
            c.send_raw(b"Subject: cut by the stop\r\n\r\nx\r\n.\r\n")
        wait_for(lambda: [kv for kv, _ in log_events(srv, "chain")
            if kv.get("stage") == stage and kv.get("verdict") == "delay"],
            what="the tarpit at %s running" % stage)
        srv.sigterm()
        c.expect(421, "4.3.2", timeout=STOP_BOUND)
        c.expect_closed()
    assert_grace_cut(srv, 1)


def test_grace_over_answers_sessions_in_a_message_421(make_postern):
    """When the grace runs out, a client in the middle of its message's
    text and one between two BDAT chunks get 421 4.3.2 (RFC 5321 3.8),
    not a bare close, and neither message is kept."""
    srv = make_postern(extra=["limit shutdown-grace 1s"])
    with srv.session() as text, srv.session() as chunks:
        for c in (text, chunks):
            c.hello()
            c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
            c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        text.send("DATA"); text.expect(354)
        text.send_raw(b"Subject: slow\r\n\r\nsome text\r\n")
        chunks.send_raw(b"BDAT 5\r\nhello"); chunks.expect(250, "2.0.0")
        srv.sigterm()
        for c in (text, chunks):
            c.expect(421, "4.3.2", timeout=STOP_BOUND)
            c.expect_closed()
    assert_grace_cut(srv, 2)


def test_session_time_limit_calls_off_an_eom_tarpit(make_postern):
    """The session's time limit hits while a message's end waits on a
    tarpit: its 421 takes the reply's place and the chain is called off.
    A client that does not read keeps the session for the last reply's
    while, longer than the tarpit: the message must not be accepted in
    it after the 421."""
    srv = make_postern(extra=["limit session-timeout 2s",
        "on eom { tarpit 2500ms }"])
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # A small window and small segments keep the kernel's share of
        # what postern sends small (its send buffer grows by the MSS).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        s.settimeout(5)
        s.connect((HOST, srv.port))
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        s.sendall(b"EHLO client.example\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        # 196 kB of replies that are not read: more than the kernel
        # holds for this reader (about 100 kB), less than what stops
        # postern reading commands (256 kB), so the message's end is
        # read and the 421 waits behind them.
        s.sendall(b"RSET\r\n" * 14000 + b"MAIL FROM:<a@example.net>\r\n"
            b"RCPT TO:<bob@example.org>\r\nBDAT 5 LAST\r\nhello")
        wait_for(lambda: [kv for kv, _ in log_events(srv, "chain")
            if kv.get("stage") == "eom" and kv.get("verdict") == "delay"],
            what="the tarpit at eom running")
        wait_for(lambda: "session time limit exceeded" in srv.log(),
            timeout=10, what="the session's time limit")
        wait_for(lambda: log_events(srv, "disconnect"), timeout=10,
            what="the session's end")
    finally:
        s.close()
    assert "last reply not taken in time" in srv.log()
    assert not log_events(srv, "accepted")
    assert srv.maildir("bob") == []


def test_signals_while_binding_keep_the_bind_retry_interval(tmp_path):
    """logrotate's SIGUSR1 (and a SIGHUP) while an address is in use at
    start-up: the waits keep their INTERVAL (bind-retry COUNT INTERVAL),
    so the tries are not spent early."""
    busy = socket.socket()
    busy.bind((HOST, 0))
    busy.listen(8)
    port = busy.getsockname()[1]
    conf = tmp_path / "postern.conf"
    conf.write_text(make_config(["bind-retry 2 1500ms"]).replace("{tmp}",
        str(tmp_path)).replace("{port}", str(port)))
    errf = tmp_path / "stderr"
    with open(errf, "wb") as f:
        p = subprocess.Popen([binary(), "run", "-c", str(conf)],
            cwd=str(tmp_path), stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        wait_for(lambda: "trying again" in errf.read_text(), 10,
            what="the first failed bind")
        t0 = time.monotonic()
        sigs = [signal.SIGUSR1, signal.SIGHUP]
        while p.poll() is None and time.monotonic() - t0 < 15:
            p.send_signal(sigs[0])
            sigs.reverse()
            time.sleep(0.2)
        took = time.monotonic() - t0
        assert p.wait(15) == 1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        busy.close()
    err = errf.read_text()
    assert took >= 2.8, "gave up %.1f s after the first try:\n%s" % (took,
        err)
    assert err.count("trying again") == 2, err
    assert "(no more tries: bind-retry)" in err, err
    assert "Sanitizer" not in err, err
