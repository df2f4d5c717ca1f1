"""CHUNKING (RFC 3030): BDAT chunks are counted octets, never dot-unstuffed."""

from conftest import queue_id, read_bytes, split_delivered, wait_for


def bdat(c, chunk, last=False):
    c.send_raw(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)


def start(c, rcpt="bob@example.org"):
    c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
    c.send("RCPT TO:<%s>" % rcpt); c.expect(250, "2.1.5")


def delivered_body(srv, user="bob"):
    files = wait_for(lambda: srv.maildir(user), what="delivery to " + user)
    assert len(files) == 1, files
    return split_delivered(read_bytes(files[0]))[2]


def test_chunking_is_advertised(postern):
    with postern.session() as c:
        r = c.hello()
        assert "CHUNKING" in r.texts[1:], r


def test_bdat_chunks_then_last_is_byte_exact(postern):
    chunks = [b"Subject: chunks\r\nMessage-Id: <bdat-1@example.net>\r\n\r\n",
              b".\r\n..two dots stay\r\n.leading\r\n",
              b"middle line\r\n\xc3\xa9 8bit \xff\r\n",
              b"end\r\n"]
    with postern.session() as c:
        c.hello()
        start(c)
        for ch in chunks[:-1]:
            bdat(c, ch)
            r = c.expect(250, "2.0.0")
            assert r.text == "2.0.0 %d octets received" % len(ch), r
        bdat(c, chunks[-1], last=True)
        r = c.expect(250, "2.0.0")
        queue_id(r)
        c.send("NOOP"); c.expect(250, "2.0.0")
    want = b"".join(chunks).replace(b"\r\n", b"\n")
    assert delivered_body(postern) == want


def test_bdat_pipelined_in_one_write(postern):
    with postern.session() as c:
        c.hello()
        c.send_raw(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\n"
                   b"BDAT 12\r\nSubject: p\r\n"
                   b"BDAT 8 LAST\r\n\r\nbody\r\n"
                   b"NOOP\r\n")
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        c.expect(250, "2.0.0")
        r = c.expect(250, "2.0.0")
        queue_id(r)
        c.expect(250, "2.0.0")
    assert delivered_body(postern) == b"Subject: p\n\nbody\n"


def test_chunk_boundary_inside_crlf(postern):
    with postern.session() as c:
        c.hello()
        start(c)
        bdat(c, b"Subject: split\r\n\r\nline one\r")
        c.expect(250, "2.0.0")
        bdat(c, b"\nline two\r")
        c.expect(250, "2.0.0")
        bdat(c, b"\n", last=True)
        r = c.expect(250, "2.0.0")
        queue_id(r)
    assert delivered_body(postern) == b"Subject: split\n\nline one\nline two\n"


def test_bdat_zero_last_ends_the_message(postern):
    with postern.session() as c:
        c.hello()
        start(c)
        bdat(c, b"Subject: zero\r\n\r\nx\r\n"); c.expect(250, "2.0.0")
        bdat(c, b"", last=True)
        queue_id(c.expect(250, "2.0.0"))
    assert delivered_body(postern) == b"Subject: zero\n\nx\n"


def test_bdat_without_mail_is_503_and_chunk_consumed(postern):
    with postern.session() as c:
        c.hello()
        # The chunk is a command line: it must be skipped, not executed.
        bdat(c, b"QUIT\r\n")
        c.expect(503, "5.5.1")
        c.send("NOOP"); c.expect(250, "2.0.0")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        # BDAT with recipients missing: refused, chunk still consumed.
        bdat(c, b"QUIT\r\n", last=True)
        c.expect(503, "5.5.1")
        c.send("RSET"); c.expect(250, "2.0.0")
        start(c)
        bdat(c, b"Subject: after\r\n\r\nok\r\n", last=True)
        queue_id(c.expect(250, "2.0.0"))
    assert delivered_body(postern) == b"Subject: after\n\nok\n"


def test_data_after_bdat_is_503(postern):
    with postern.session() as c:
        c.hello()
        start(c)
        bdat(c, b"Subject: mixed\r\n\r\n"); c.expect(250, "2.0.0")
        c.send("DATA"); c.expect(503, "5.5.1")


def test_bdat_over_message_size_is_552(make_postern):
    srv = make_postern(extra=["limit message-size 10000"])
    with srv.session() as c:
        c.hello()
        start(c)
        bdat(c, b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 60)
        c.expect(250, "2.0.0")
        bdat(c, (b"z" * 98 + b"\r\n") * 60, last=True)
        c.expect(552, "5.3.4")
        c.send("NOOP"); c.expect(250, "2.0.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(503, "5.5.1")
    assert srv.maildir("bob") == []
