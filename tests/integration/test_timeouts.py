"""Idle timeout and connection limits."""

import time

from conftest import Closed, wait_for


def test_idle_timeout_is_421_442_and_close(make_postern):
    srv = make_postern(extra=["limit idle-timeout 1s"])
    with srv.session() as c:
        c.hello()
        t0 = time.monotonic()
        c.expect(421, "4.4.2", timeout=6)
        waited = time.monotonic() - t0
        c.expect_closed()
        assert 0.8 <= waited <= 4, "421 after %.2fs, want about 1s" % waited


def test_activity_resets_the_idle_timer(make_postern):
    srv = make_postern(extra=["limit idle-timeout 1s"])
    with srv.session() as c:
        c.hello()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:	# twice the timeout, busy
            c.send("NOOP"); c.expect(250, "2.0.0")
            time.sleep(0.3)	# pacing a client, not waiting for a condition
        c.expect(421, "4.4.2", timeout=6)


def connect_refused_421(srv):
    c = srv.session()
    try:
        c.expect(421, "4.7.0")
        c.expect_closed()
    finally:
        c.close()


def test_connections_per_ip_limit(make_postern):
    srv = make_postern(extra=["limit connections-per-ip 2", "trusted none"])
    a, b = srv.session(), srv.session()
    a.hello(); b.hello()
    connect_refused_421(srv)
    # a and b are still served.
    a.send("NOOP"); a.expect(250, "2.0.0")
    b.send("NOOP"); b.expect(250, "2.0.0")
    # Once one leaves, a new one is welcome (after the server notices).
    a.send("QUIT"); a.expect(221); a.expect_closed(); a.close()

    def greeted():
        c = srv.session()
        try:
            return c.read_reply().code == 220
        except Closed:
            return False
        finally:
            c.close()
    wait_for(greeted, 5, interval=0.05, what="a 220 after one session left")


def test_connections_limit(make_postern):
    srv = make_postern(extra=["limit connections 2"])
    a, b = srv.session(), srv.session()
    a.hello(); b.hello()
    connect_refused_421(srv)
    b.send("NOOP"); b.expect(250, "2.0.0")


def test_data_timeout_is_421_and_nothing_delivered(make_postern):
    srv = make_postern(extra=["limit data-timeout 1s"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: stalled\r\n\r\nand then nothing")
        t0 = time.monotonic()
        c.expect(421, "4.4.2", timeout=6)
        assert time.monotonic() - t0 >= 0.8
        c.expect_closed()
    assert srv.maildir("bob") == []
