"""Listeners behind a TCP load balancer: the PROXY protocol header (HAProxy
v1 text, v2 binary) read before the greeting, and the session as the
header's client; bad, late or oversized headers get 421 and the close."""

import socket
import struct
import time

from conftest import (unverified_context, Client, Closed, listen_config, log_events, read_bytes,
    send_message, wait_for)

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
BODY = "Subject: via a balancer\r\n\r\nhello\r\n"


def v1(src, dst="127.0.0.1", sport=40000, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, dst, sport=40000, dport=25, tlvs=b""):
    if ":" in src:
        fam, addrs = 0x21, socket.inet_pton(socket.AF_INET6, src) + \
            socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam, addrs = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    block = addrs + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(block)) + block


V2_LOCAL = V2_SIG + b"\x20\x00\x00\x00"


def proxied(srv, header, source=None):
    c = Client(srv.port, source=source)
    srv.clients.append(c)
    c.send_raw(header)
    return c


def connect_lines(srv, n):
    return wait_for(lambda: len(log_events(srv, "connect")) >= n and
        log_events(srv, "connect"), what="%d connect lines" % n)


def received_of_delivered(srv, user="bob"):
    files = wait_for(lambda: srv.maildir(user), what="a delivered message")
    return read_bytes(files[0]).split(b"\n\n", 1)[0].decode()


def test_v1_tcp4_client_is_the_headers(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol"))
    with proxied(srv, v1("203.0.113.9", "192.0.2.25", 40001, 25)) as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    kv, line = connect_lines(srv, 1)[0]
    assert kv["ip"] == "203.0.113.9" and kv["port"] == "40001" and \
        kv["via"] == "127.0.0.1" and kv["proxy"] == "v1", line
    head = received_of_delivered(srv)
    assert "[203.0.113.9]" in head and "127.0.0.1" not in head, head


def test_v2_tcp4_with_tlvs(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol"))
    authority = b"\x02" + struct.pack("!H", 11) + b"mx.test.org"
    with proxied(srv, v2("198.51.100.7", "192.0.2.25", 5555, 25,
            authority)) as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
    kv, line = connect_lines(srv, 1)[0]
    assert kv["ip"] == "198.51.100.7" and kv["proxy"] == "v2", line
    assert "[198.51.100.7]" in received_of_delivered(srv)


def test_v1_and_v2_tcp6(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol"))
    for hdr in (v1("2001:db8::7", "2001:db8::25"),
            v2("2001:db8::8", "2001:db8::25")):
        with proxied(srv, hdr) as c:
            c.hello()
            c.send("QUIT"); c.expect(221)
    lines = connect_lines(srv, 2)
    assert [kv["ip"] for kv, _ in lines] == ["2001:db8::7", "2001:db8::8"], \
        lines


def test_ipv4_mapped_addresses_in_the_header_are_ipv4(make_postern):
    # A balancer on a dual-stack socket names its IPv4 clients as
    # ::ffff:a.b.c.d (TCP6): the session sees them IPv4, as one accepted
    # on such a socket would: in the log, the facts (its network too) and
    # the Received: line.
    srv = make_postern(config=listen_config("proxy-protocol", extra=[
        'on helo { reject 550 5.7.1 "%{client.net} to %{local.ip}" }']))
    for hdr in (v1("::ffff:203.0.113.60", "::ffff:192.0.2.25"),
            v2("::ffff:203.0.113.61", "::ffff:192.0.2.25")):
        with proxied(srv, hdr) as c:
            c.expect(220)
            c.send("EHLO client.example")
            r = c.expect(550, "5.7.1")
            assert r.text == "5.7.1 203.0.113.0/24 to 192.0.2.25", r
    lines = connect_lines(srv, 2)
    assert [kv["ip"] for kv, _ in lines] == ["203.0.113.60",
        "203.0.113.61"], lines
    srv = make_postern(config=listen_config("proxy-protocol"))
    with proxied(srv, v1("::ffff:198.51.100.62", "::ffff:127.0.0.1")) as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
    head = received_of_delivered(srv)
    assert "[198.51.100.62]" in head and "ffff" not in head, head


def test_local_and_unknown_keep_the_real_peer(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol"))
    for hdr in (V2_LOCAL, b"PROXY UNKNOWN\r\n"):
        with proxied(srv, hdr) as c:
            c.hello()
            c.send("QUIT"); c.expect(221)
    lines = connect_lines(srv, 2)
    for kv, line in lines:
        assert kv["ip"] == "127.0.0.1" and "via" not in kv, line


def test_facts_and_local_address_come_from_the_header(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol", extra=[
        'on helo { reject 550 5.7.1 "%{client.ip}:%{client.port} to '
        '%{local.ip}:%{local.port}" }']))
    with proxied(srv, v2("203.0.113.50", "192.0.2.25", 6000, 2525)) as c:
        c.expect(220)
        c.send("EHLO client.example")
        r = c.expect(550, "5.7.1")
    assert r.text.endswith("203.0.113.50:6000 to 192.0.2.25:2525"), r


def test_header_and_commands_in_one_write(make_postern):
    # Only the header's bytes are taken before the session starts.
    srv = make_postern(config=listen_config("proxy-protocol"))
    with proxied(srv, v1("203.0.113.9") + b"NOOP\r\n") as c:
        c.expect(220)
        c.expect(250, "2.0.0")


def test_implicit_tls_behind_the_header(make_postern):
    srv = make_postern(config=listen_config("tls proxy-protocol",
        extra=["tls self-signed {tmp}/tls"]))
    ctx = unverified_context()
    with proxied(srv, v2("203.0.113.77", "192.0.2.25", 7000, 465)) as c:
        c.wrap_tls(ctx, "test.example")
        c.hello()
        c.send("QUIT"); c.expect(221)
    kv, line = connect_lines(srv, 1)[0]
    assert kv["ip"] == "203.0.113.77", line


def test_implicit_tls_refusals_behind_the_header_say_nothing(make_postern):
    """On a tls listener the balancer passes what postern says on to a TLS
    client: a refused header, or a refused client, is closed without a
    word in plain text."""
    srv = make_postern(config=listen_config("tls proxy-protocol",
        extra=["tls self-signed {tmp}/tls", "limit connections-per-ip 1"]))
    with proxied(srv, b"EHLO client.example\r\n") as c:
        c.expect_closed()
    wait_for(lambda: log_events(srv, "proxy-error"), what="proxy-error")
    first = proxied(srv, v1("203.0.113.9"))
    first.wrap_tls(unverified_context(), "test.example")
    first.expect(220)
    with proxied(srv, v1("203.0.113.9")) as c:	# one too many
        c.expect_closed()
    ev = wait_for(lambda: [kv for kv, _ in log_events(srv, "reject")
        if kv.get("stage") == "connect"], what="the reject line")
    assert ev[0]["ip"] == "203.0.113.9", ev


def refused(srv, data, why, close_after=False):
    """The header is refused at once: 421 4.7.0, the close, a log line."""
    with proxied(srv, data) as c:
        if close_after:
            c.sock.shutdown(socket.SHUT_WR)
        r = c.expect(421, "4.7.0")
        assert "PROXY protocol header" in r.text, r
        c.expect_closed()
    ev = wait_for(lambda: [kv for kv, _ in log_events(srv, "proxy-error")
        if why in kv.get("why", "")], what="proxy-error why=%r" % why)
    assert ev[0]["ip"] == "127.0.0.1", ev


def test_wrong_signature(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol"))
    refused(srv, b"EHLO client.example\r\n", "no PROXY protocol signature")
    refused(srv, b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00",
        "no PROXY protocol signature")
    refused(srv, b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "not TCP4")
    refused(srv, V2_SIG + b"\x11\x11\x00\x00", "version is not 2")
    assert log_events(srv, "connect") == []


def test_truncated_headers(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol",
        extra=["limit proxy-timeout 1s"]))
    # A whole line that lacks fields: refused as it stands.
    refused(srv, b"PROXY TCP4 203.0.113.9\r\n", "two addresses")
    # A v2 address block shorter than its family needs.
    refused(srv, V2_SIG + b"\x21\x11\x00\x08" + b"\xcb\x00\x71\x09" * 2,
        "too short")
    # Cut short and left there: the deadline.
    t0 = time.monotonic()
    refused(srv, v1("203.0.113.9")[:20], "in time")
    refused(srv, v2("203.0.113.9", "192.0.2.1")[:22], "in time")
    assert time.monotonic() - t0 < 10


def test_oversized_headers(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol"))
    refused(srv, b"PROXY UNKNOWN " + b"x" * 200, "107 bytes")
    refused(srv, V2_SIG + b"\x21\x11\xff\xff", "bound")


def test_no_header_times_out(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol",
        extra=["limit proxy-timeout 1s"]))
    t0 = time.monotonic()
    c = Client(srv.port)
    srv.clients.append(c)
    r = c.expect(421, "4.7.0", timeout=10)
    waited = time.monotonic() - t0
    assert 0.9 <= waited < 8, waited
    c.expect_closed()
    wait_for(lambda: log_events(srv, "proxy-error"), what="proxy-error")


def test_closed_before_the_header_is_quiet(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol"))
    c = Client(srv.port)
    c.send_raw(b"PROX")
    c.close()
    ev = wait_for(lambda: log_events(srv, "proxy-error"), what="proxy-error")
    assert "closed before the header" in ev[0][0]["why"], ev
    with proxied(srv, v1("203.0.113.9")) as c2:	# still serving
        c2.hello()


def test_listener_without_the_option_treats_it_as_a_command(postern):
    with postern.session() as c:
        c.expect(220)
        c.send_raw(v1("203.0.113.9"))
        c.expect(500, "5.5.2")
        c.send("EHLO client.example"); c.expect(250)
        # v2's signature is made of line ends and a NUL: refused lines,
        # and its QUIT (a bare LF ends it) is no command.
        c.send_raw(v2("203.0.113.9", "192.0.2.1") + b"\r\n")
        c.send("NOOP")
        codes = []
        while not codes or codes[-1] != 250:
            codes.append(c.read_reply().code)
        assert codes == [500, 500, 500, 500, 250], codes
    kv, line = connect_lines(postern, 1)[0]
    assert kv["ip"] == "127.0.0.1" and "via" not in kv, line


def test_from_list_only_those_peers_send_a_header(make_postern):
    srv = make_postern(config=listen_config(
        "proxy-protocol from 10.0.0.0/8 2001:db8::/32"))
    with srv.session() as c:	# 127.0.0.1 is not a balancer here
        c.expect(220)
        c.send_raw(v1("203.0.113.9"))
        c.expect(500, "5.5.2")
    srv2 = make_postern(config=listen_config(
        "proxy-protocol from 192.0.2.0/24 127.0.0.0/8"))
    with proxied(srv2, v1("203.0.113.9")) as c:
        c.hello()
    kv, line = connect_lines(srv2, 1)[0]
    assert kv["ip"] == "203.0.113.9", line


def test_per_address_limits_count_the_headers_address(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol",
        extra=["limit connections-per-ip 1"]))
    first = proxied(srv, v1("203.0.113.9"))
    first.expect(220)
    # Same balancer, same client behind it: one too many.
    second = proxied(srv, v1("203.0.113.9"))
    r = second.expect(421, "4.7.0")
    assert "from your address" in r.text, r
    # Same balancer, another client: welcome.
    third = proxied(srv, v1("203.0.113.10"))
    third.expect(220)
    first.send("QUIT"); first.expect(221)
    first.close()
    # The count follows the header's address down again.
    wait_for(lambda: len(log_events(srv, "disconnect")) >= 1,
        what="the first session's end")
    again = proxied(srv, v1("203.0.113.9"))
    again.expect(220)


def test_connection_rate_counts_the_headers_address(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol",
        extra=["limit connection-rate 2/1m"]))
    for _ in range(2):
        with proxied(srv, v1("203.0.113.9")) as c:
            c.expect(220)
    with proxied(srv, v1("203.0.113.9")) as c:
        c.expect(421, "4.7.0")
    with proxied(srv, v1("203.0.113.10")) as c:
        c.expect(220)
