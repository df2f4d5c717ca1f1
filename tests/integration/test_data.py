"""DATA: exact dot-stuffing, line and size limits, NUL."""

from conftest import read_bytes, split_delivered, wait_for


def stuff(lines):
    """Logical lines (bytes, no CRLF) -> the DATA block on the wire."""
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n"
        for l in lines) + b".\r\n"


def every_byte_lines(width=61):
    """Every octet 0x01-0xff except CR and LF, in lines of `width`."""
    octets = bytes(b for b in range(1, 256) if b not in (0x0a, 0x0d))
    return [octets[i:i + width] for i in range(0, len(octets), width)]


def deliver_one(c, lines, rcpt="bob@example.org", params=""):
    c.send("MAIL FROM:<a@example.net>" + params); c.expect(250, "2.1.0")
    c.send("RCPT TO:<%s>" % rcpt); c.expect(250, "2.1.5")
    c.send("DATA"); c.expect(354)
    c.send_raw(stuff(lines))
    return c.read_reply()


def test_dot_stuffing_round_trip_is_byte_exact(postern):
    lines = [b"Subject: dots", b"Message-Id: <dots-1@example.net>", b"",
        b".", b"..", b"...", b".leading dot", b"..two leading dots",
        b"trailing dot.", b"a . in the middle", b" .", b"",
        b"after an empty line", b"."]
    lines += every_byte_lines()
    lines += [b"." + l for l in every_byte_lines(40)]
    lines += [b"last line", b"."]
    with postern.session() as c:
        c.hello()
        r = deliver_one(c, lines, params=" BODY=8BITMIME")
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r, c.transcript())
    files = wait_for(lambda: postern.maildir("bob"), what="delivery to bob")
    _, _, body = split_delivered(read_bytes(files[0]))
    want = b"".join(l + b"\n" for l in lines)
    if body != want:
        for i, (g, w) in enumerate(zip(body.split(b"\n"), want.split(b"\n"))):
            assert g == w, "line %d: got %r, want %r" % (i, g, w)
        assert body == want, "length differs: got %d, want %d" % (len(body), len(want))


def test_998_octet_line_is_accepted(postern):
    with postern.session() as c:
        c.hello()
        r = deliver_one(c, [b"Subject: long", b"", b"x" * 998, b"end"])
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r, c.transcript())
    files = wait_for(lambda: postern.maildir("bob"), what="delivery to bob")
    assert split_delivered(read_bytes(files[0]))[2] == \
        b"Subject: long\n\n" + b"x" * 998 + b"\nend\n"


def test_999_octet_line_is_refused_at_end_of_data(postern):
    with postern.session() as c:
        c.hello()
        # 999 octets + CRLF = 1001 > "limit line-length 1000".
        r = deliver_one(c, [b"Subject: too long", b"", b"x" * 999, b"end"])
        assert (r.code, r.esc) == (554, "5.6.0"), "got %r\n%s" % (r, c.transcript())
        c.send("NOOP"); c.expect(250, "2.0.0")
        # A very long DATA line (64 KiB) is refused the same way, once.
        r = deliver_one(c, [b"Subject: way too long", b"", b"y" * 65536, b"end"])
        assert (r.code, r.esc) == (554, "5.6.0"), "got %r\n%s" % (r, c.transcript())
        c.send("NOOP"); c.expect(250, "2.0.0")
    assert postern.maildir("bob") == []


def test_1000_octet_command_line_is_accepted(postern):
    with postern.session() as c:
        c.hello()
        c.send("NOOP " + "x" * 993)		# 1000 octets with CRLF
        c.expect(250, "2.0.0")


def test_1001_octet_command_line_is_500_and_session_in_step(postern):
    with postern.session() as c:
        c.hello()
        c.send("NOOP " + "x" * 994)		# 1001 octets with CRLF
        c.expect(500, "5.5.2")
        c.send("NOOP"); c.expect(250, "2.0.0")
        # 100 KiB without a line end: one 500 for the whole line, then in step.
        c.send("MAIL FROM:<" + "z" * 100000 + "@example.net>")
        c.expect(500, "5.5.2")
        c.send("NOOP"); c.expect(250, "2.0.0")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")


def test_declared_size_over_limit_is_552_at_mail(make_postern):
    srv = make_postern(extra=["limit message-size 10000"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net> SIZE=10001"); c.expect(552, "5.3.4")
        c.send("MAIL FROM:<a@example.net> SIZE=99999999999999999999")
        c.expect(552, "5.3.4")
        c.send("MAIL FROM:<a@example.net> SIZE=10000"); c.expect(250, "2.1.0")


def exact_size_lines(total):
    """Lines whose DATA content (CRLF counted as 2) is exactly total octets."""
    head = [b"Subject: size", b""]
    used = sum(len(l) + 2 for l in head)
    lines = list(head)
    while total - used > 80:
        lines.append(b"s" * 78)
        used += 80
    lines.append(b"t" * (total - used - 2))
    return lines


def test_body_at_limit_is_accepted_one_over_is_552(make_postern):
    srv = make_postern(extra=["limit message-size 10000"])
    at, over = exact_size_lines(10000), exact_size_lines(10001)
    assert sum(len(l) + 2 for l in at) == 10000
    with srv.session() as c:
        c.hello()
        r = deliver_one(c, over)
        assert (r.code, r.esc) == (552, "5.3.4"), "got %r\n%s" % (r, c.transcript())
        c.send("NOOP"); c.expect(250, "2.0.0")
        assert srv.maildir("bob") == []
        r = deliver_one(c, at)
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r, c.transcript())
    files = wait_for(lambda: srv.maildir("bob"), what="delivery to bob")
    assert len(files) == 1


def test_far_oversize_body_is_552_and_nothing_delivered(make_postern):
    srv = make_postern(extra=["limit message-size 10000"])
    with srv.session() as c:
        c.hello()
        r = deliver_one(c, [b"Subject: big", b""] + [b"b" * 900] * 600)
        assert (r.code, r.esc) == (552, "5.3.4"), "got %r\n%s" % (r, c.transcript())
        c.send("NOOP"); c.expect(250, "2.0.0")
        c.send("QUIT"); c.expect(221, "2.0.0")
    assert srv.maildir("bob") == []


def test_nul_in_data_is_554_and_nothing_delivered(postern):
    with postern.session() as c:
        c.hello()
        r = deliver_one(c, [b"Subject: nul", b"", b"before\x00after", b"end"])
        assert (r.code, r.esc) == (554, "5.6.0"), "got %r\n%s" % (r, c.transcript())
        c.send("NOOP"); c.expect(250, "2.0.0")
    assert postern.maildir("bob") == []


def test_nul_in_command_is_500(postern):
    with postern.session() as c:
        c.hello()
        c.send_raw(b"NOOP\x00\r\n"); c.expect(500, "5.5.2")
        c.send_raw(b"MAIL FROM:<a\x00@example.net>\r\n"); c.expect(500, "5.5.2")
        c.send("NOOP"); c.expect(250, "2.0.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(503, "5.5.1")


def test_configured_line_length_at_max_and_max_plus_one(make_postern):
    srv = make_postern(extra=["limit line-length 512"])
    with srv.session() as c:
        c.hello()
        c.send("NOOP " + "x" * 505); c.expect(250, "2.0.0")	# 512 with CRLF
        c.send("NOOP " + "x" * 506); c.expect(500, "5.5.2")	# 513
        r = deliver_one(c, [b"Subject: 512", b"", b"y" * 510])
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r, c.transcript())
        r = deliver_one(c, [b"Subject: 513", b"", b"y" * 511])
        assert (r.code, r.esc) == (554, "5.6.0"), "got %r\n%s" % (r, c.transcript())
    files = wait_for(lambda: srv.maildir("bob"), what="delivery to bob")
    assert len(files) == 1


def test_slow_client_one_byte_at_a_time(postern):
    with postern.session() as c:
        c.hello()
        for cmd in (b"MAIL FROM:<a@example.net>\r\n", b"RCPT TO:<bob@example.org>\r\n",
                b"DATA\r\n"):
            for i in range(len(cmd)):
                c.send_raw(cmd[i:i + 1])
            c.read_reply()
        body = b"Subject: slow\r\n\r\n.dot\r\nend\r\n.\r\n"
        for i in range(len(body)):
            c.send_raw(body[i:i + 1])
        c.expect(250, "2.0.0")
    files = wait_for(lambda: postern.maildir("bob"), what="delivery to bob")
    assert split_delivered(read_bytes(files[0]))[2] == b"Subject: slow\n\ndot\nend\n"


def test_disconnect_mid_data_delivers_nothing(postern):
    with postern.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: cut\r\n\r\nhalf a message\r\n")
    wait_for(lambda: "disconnect" in postern.log(), what="the disconnect line")
    with postern.session() as c:
        c.hello()
        c.send("NOOP"); c.expect(250, "2.0.0")
    assert postern.maildir("bob") == []
    wait_for(lambda: not postern.unaccepted_files(),
        what="the half message's content to be removed")
