"""PIPELINING (RFC 2920): a burst in one write is answered in order."""

import socket
import struct
import threading
import time

from conftest import make_config, server_socket_for, spool_empty, wait_for


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


def test_a_half_closed_client_gets_every_reply(make_postern):
    """A client may send its last commands and shut its side down before it
    reads their replies: the message it ended still gets its 250 and QUIT
    its 221 (RFC 5321 4.1.1.10), also when a decision is still to come
    (the tarpit at RCPT), and a message cut short is not delivered."""
    srv = make_postern(config=make_config([
        "state memory", "on rcpt { tarpit 300ms }"]))
    for i in range(3):
        with srv.session() as c:
            c.hello()
            c.send_raw(b"MAIL FROM:<a@example.net>\r\n"
                       b"RCPT TO:<bob@example.org>\r\nDATA\r\n")
            c.expect(250); c.expect(250); c.expect(354)
            c.send_raw(b"Subject: half %d\r\n\r\nhello\r\n.\r\n"
                       b"QUIT\r\n" % i)
            c.sock.shutdown(socket.SHUT_WR)
            c.expect(250, "2.0.0")
            c.expect(221, "2.0.0")
            c.expect_closed()
    with srv.session() as c:
        c.hello()
        c.send_raw(b"MAIL FROM:<a@example.net>\r\n"
                   b"RCPT TO:<carol@example.org>\r\nNOOP\r\nQUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        c.expect(250, "2.1.0"); c.expect(250, "2.1.5")
        c.expect(250, "2.0.0"); c.expect(221, "2.0.0")
        c.expect_closed()
    with srv.session() as c:
        c.hello()
        c.send_raw(b"MAIL FROM:<a@example.net>\r\n"
                   b"RCPT TO:<carol@example.org>\r\nDATA\r\n")
        c.expect(250); c.expect(250); c.expect(354)
        c.send_raw(b"Subject: cut\r\n\r\nno end")
        c.sock.shutdown(socket.SHUT_WR)
        c.expect_closed()
    wait_for(lambda: len(srv.maildir("bob")) == 3, what="three messages")
    wait_for(lambda: srv.log().count(" disconnect ") == 5,
        what="five sessions closed")
    assert srv.maildir("carol") == []
    assert "connection closed in DATA" in srv.log()
    assert spool_empty(srv)


TWO_IN_ONE = (b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\n"
    b"DATA\r\nSubject: one\r\n\r\nfirst\r\n.\r\n"
    b"MAIL FROM:<a@example.net>\r\nRCPT TO:<carol@example.org>\r\n"
    b"DATA\r\nSubject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n")


def test_text_before_354_is_refused_and_closed(postern):
    # RFC 2920 3.1: DATA ends a group.  Two whole transactions in one
    # write are a client out of step (or smuggling): 554 5.5.0 at DATA,
    # then the close, and nothing is delivered.
    with postern.session() as c:
        c.hello()
        c.send_raw(TWO_IN_ONE)
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        r = c.expect(554, "5.5.0")
        assert "354" in r.text, r
        c.expect_closed()
    wait_for(lambda: "disconnect" in postern.log(), what="the disconnect")
    assert postern.maildir("bob") == [] and postern.maildir("carol") == []
    assert "stage=DATA code=554 esc=5.5.0" in postern.log()


def test_pipelining_loose_reads_text_before_354(make_postern):
    srv = make_postern(extra=["pipelining loose"])
    with srv.session() as c:
        c.hello()
        c.send_raw(TWO_IN_ONE)
        for code in (250, 250, 354, 250, 250, 250, 354, 250, 221):
            c.expect(code)
        c.expect_closed()
    wait_for(lambda: srv.maildir("bob") and srv.maildir("carol"),
        what="both messages")


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


# ----- one write per batch of replies ------------------------------------------

TCPI_DATA_SEGS_IN = 152		# offset in struct tcp_info (linux/tcp.h)


def data_segments_in(sock):
    """Segments with data this socket has received so far (TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    assert len(info) >= TCPI_DATA_SEGS_IN + 4, \
        "TCP_INFO without tcpi_data_segs_in (%d bytes)" % len(info)
    return struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0]


def timed_batch(c, data, nreplies):
    """Send data in one write; (seconds, data segments) until nreplies
    replies are read, with their codes."""
    segs, t0 = data_segments_in(c.sock), time.monotonic()
    c.send_raw(data)
    codes = [c.read_reply().code for _ in range(nreplies)]
    return time.monotonic() - t0, data_segments_in(c.sock) - segs, codes


def test_reply_batches_are_one_segment_without_delay(postern):
    """The EHLO reply (8 lines) and the four replies to a pipelined
    MAIL/RCPT/RCPT/DATA come in one segment each, at once: no line waits
    for the small-packet delay (40 ms of delayed ACK on loopback)."""
    ehlo, batch = [], []
    with postern.session() as c:
        c.expect(220)
        for i in range(10):
            took, segs, codes = timed_batch(c, b"EHLO client.example\r\n", 1)
            assert codes == [250] and segs == 1, \
                "EHLO reply in %d segments; transcript:\n%s" % (
                segs, c.transcript())
            ehlo.append(took)
            took, segs, codes = timed_batch(c, b"MAIL FROM:<a@example.net>"
                b"\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<carol@"
                b"example.org>\r\nDATA\r\n", 4)
            assert codes == [250, 250, 250, 354] and segs == 1, \
                "replies in %d segments; transcript:\n%s" % (
                segs, c.transcript())
            batch.append(took)
            c.send_raw(b"Subject: batch %d\r\n\r\nhi\r\n.\r\n" % i)
            c.expect(250, "2.0.0")
    ehlo.sort()
    batch.sort()
    assert ehlo[5] < 0.030, "EHLO reply took %.1f ms (median of 10)" % (
        ehlo[5] * 1000)
    assert batch[5] < 0.030, "pipelined batch took %.1f ms (median of " \
        "10)" % (batch[5] * 1000)
    wait_for(lambda: len(postern.maildir("carol")) == 10,
        what="ten messages for carol")


def test_burst_of_connections_all_greeted_with_nodelay(postern):
    """Thirty connections opened at once are all greeted and served, and
    each one's server side has TCP_NODELAY (from the listening socket),
    which keeps a reply from waiting for the client's delayed ACK."""
    clients = [socket.create_connection(("127.0.0.1", postern.port),
        timeout=10) for _ in range(30)]
    try:
        for s in clients:
            f = s.makefile("rb")
            assert f.readline().startswith(b"220 "), "no greeting"
            s.sendall(b"NOOP\r\n")
            assert f.readline().startswith(b"250 "), "no reply to NOOP"
            f.close()
        for s in clients:
            srv = server_socket_for(postern.proc.pid, s)
            assert srv is not None, "no server socket for %r" % (
                s.getsockname(),)
            with srv:
                assert srv.getsockopt(socket.IPPROTO_TCP,
                    socket.TCP_NODELAY) != 0, "server side without NODELAY"
    finally:
        for s in clients:
            s.close()
