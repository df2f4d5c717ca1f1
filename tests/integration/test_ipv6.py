"""
Clients and upstreams over IPv6 (::1): a message taken over a [::1]
listener and delivered, with the address in the log and as an IPv6
literal in Received:; a rule that matches an IPv6 network; the limit of
connections per address counting IPv6 clients; a relay to an upstream
that listens on [::1] only.
"""

import socket

from conftest import (Client, free_port, make_config, needs, send_message,
    spool_empty, wait_for)


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = needs(has_ipv6_loopback(), "an IPv6 loopback address (::1)")


class Client6(Client):
    """Client, over ::1."""

    def __init__(self, port):
        self.sock = socket.create_connection(("::1", port), timeout=10)
        self.buf = b""
        self.eof = False
        self.log = []


def v6_server(make_postern, extra=(), rules=None):
    """A postern listening on 127.0.0.1 (for the harness) and [::1]."""
    port6 = free_port()
    srv = make_postern(config=make_config(
        extra=["listen [::1]:%d" % port6] + list(extra), rules=rules))
    srv.port6 = port6
    return srv


def test_a_message_over_ipv6_is_delivered_with_the_address_in_its_place(
        make_postern):
    srv = v6_server(make_postern)
    c = Client6(srv.port6)
    try:
        c.hello("[IPv6:::1]")
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: six\r\n\r\nover ::1\r\n")
        c.send("QUIT"); c.expect(221)
    finally:
        c.close()
    wait_for(lambda: srv.maildir("bob") and spool_empty(srv),
        what="the delivery")
    (path,) = srv.maildir("bob")
    with open(path, "rb") as f:
        msg = f.read().decode()
    received = msg.split("\r\n\r\n")[0].split("Received:")[1]
    assert "[IPv6:::1]" in received, msg[:600]
    assert "over ::1" in msg
    assert "ip=::1 " in srv.log(), srv.log()[-2000:]


def test_a_rule_matches_an_ipv6_network(make_postern, tmp_path):
    srv = v6_server(make_postern, extra=[
        'action six maildir "%s/six/%%{rcpt.user}/Maildir"' % tmp_path],
        rules=["match from ip ::1/128 to domain example.org action six",
               "match to domain example.org action local"])
    c = Client6(srv.port6)
    try:
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: by six\r\n\r\nx\r\n")
    finally:
        c.close()
    with srv.session() as c4:	# over 127.0.0.1: the other rule
        c4.hello()
        send_message(c4, "alice@example.org", ["bob@example.org"],
            "Subject: by four\r\n\r\nx\r\n")
    six = tmp_path / "six" / "bob" / "Maildir" / "new"
    wait_for(lambda: six.is_dir() and len(list(six.iterdir())) == 1 and
        len(srv.maildir("bob")) == 1, what="one message each way")
    assert b"by six" in next(six.iterdir()).read_bytes()
    with open(srv.maildir("bob")[0], "rb") as f:
        assert b"by four" in f.read()


def test_connections_per_ip_counts_an_ipv6_client(make_postern):
    srv = v6_server(make_postern, extra=["limit connections-per-ip 2",
        "trusted none"])
    held = []
    try:
        for _ in range(2):
            c = Client6(srv.port6)
            c.expect(220)
            held.append(c)
        extra = Client6(srv.port6)
        try:
            extra.expect(421, "4.7.0")
            extra.expect_closed()
        finally:
            extra.close()
        # Another address (127.0.0.1) is not held back by ::1's count.
        with srv.session() as c4:
            c4.expect(220)
    finally:
        for c in held:
            c.close()


def test_relay_to_an_upstream_on_ipv6_loopback(make_postern):
    up = v6_server(make_postern,
        rules=["match to domain remote.test action local"])
    srv = make_postern(extra=['action up relay "smtp://[::1]:%d"'
        % up.port6], rules=["match to domain remote.test action up"])
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["carol@remote.test"],
            "Subject: up six\r\n\r\nrelayed over ::1\r\n")
    wait_for(lambda: up.maildir("carol") and spool_empty(srv),
        what="the message at the upstream")
    with open(up.maildir("carol")[0], "rb") as f:
        assert b"relayed over ::1" in f.read()
    assert "ip=::1 " in up.log(), up.log()[-2000:]
