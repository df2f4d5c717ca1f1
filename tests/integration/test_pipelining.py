"""PIPELINING (RFC 2920): a burst in one write is answered in order."""

import threading
import time

from conftest import wait_for


def test_pipelined_transaction_is_answered_in_order(postern):
    with postern.session() as c:
        c.hello()
        c.send_raw(b"MAIL FROM:<a@example.net>\r\n"
                   b"RCPT TO:<bob@example.org>\r\n"
                   b"RCPT TO:<nobody@elsewhere.test>\r\n"
                   b"RCPT TO:<carol@example.org>\r\n"
                   b"DATA\r\n")
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        c.expect(550, "5.7.1")
        c.expect(250, "2.1.5")
        c.expect(354)
        # The body, the end of data and the next commands in one write too.
        c.send_raw(b"Subject: piped\r\n\r\nhello\r\n.\r\nNOOP\r\nQUIT\r\n")
        c.expect(250, "2.0.0")
        c.expect(250, "2.0.0")
        c.expect(221, "2.0.0")
        c.expect_closed()
    wait_for(lambda: postern.maildir("bob") and postern.maildir("carol"),
        what="delivery to bob and carol")


def test_pipelined_rejected_mail_fails_the_rest(postern):
    # MAIL refused: the pipelined RCPT and DATA are out of sequence, and the
    # message lines after a refused DATA are read as commands (RFC 2920 3.1).
    with postern.session() as c:
        c.hello()
        c.send_raw(b"MAIL FROM:<bad@@example.net>\r\n"
                   b"RCPT TO:<bob@example.org>\r\n"
                   b"DATA\r\n"
                   b"NOOP\r\n")
        c.expect(501, "5.1.7")
        c.expect(503, "5.5.1")
        c.expect(503, "5.5.1")
        c.expect(250, "2.0.0")
    assert postern.maildir("bob") == []


def test_5000_pipelined_noops_answered_in_order(postern):
    n = 5000
    with postern.session() as c:
        c.hello()
        burst = b"".join(b"NOOP %d\r\n" % i for i in range(n)) + b"QUIT\r\n"
        err = []

        def writer():
            try:
                c.sock.sendall(burst)	# blocks while the server pushes back
            except OSError as e:
                err.append(e)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        got = 0
        while got < n:
            r = c.read_reply(timeout=max(0.1, deadline - time.monotonic()))
            assert (r.code, r.esc) == (250, "2.0.0"), \
                "reply %d of %d: got %r" % (got + 1, n, r)
            got += 1
        c.expect(221, "2.0.0")
        c.expect_closed()
        t.join(5)
        assert not t.is_alive(), "writer still blocked after every reply arrived"
        assert not err, "write failed: %r" % err
