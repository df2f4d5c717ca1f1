"""
What ratelimit, greylist and reputation count as one value in the state
store: every distinct sender, recipient, HELO name, Subject: and sender
domain has a counter of its own, 8-bit (SMTPUTF8, RFC 6531/6532) text
included, and a domain is one name in any letter case (RFC 5321 2.4).
Each test runs against SQLite and a real Redis (the state_store fixture).
"""

import time

from conftest import (Client, make_config, wait_for,
    TEMPLATE_ACTIONS)


def keys_config(chains, state):
    # One loop: a score one session writes is there for the next one.
    return make_config(["workers 1", state] + chains.split("\n"),
        actions=TEMPLATE_ACTIONS)


def mail_from(srv, sender, code, esc, source=None):
    with Client(srv.port, source=source) as c:
        c.hello()
        c.send("MAIL FROM:<%s> SMTPUTF8" % sender)
        c.expect(code, esc)


def test_ratelimit_per_sender_tells_utf8_addresses_apart(make_postern,
        state_store):
    """Two senders that differ only in a non-ASCII letter are two senders;
    one that differs only in its domain's letter case is the same one."""
    srv = make_postern(config=keys_config(
        "on mail { ratelimit 1/1h per sender }", state_store))
    mail_from(srv, "\u03b4@example.net", 250, "2.1.0")
    mail_from(srv, "\u03bb@example.net", 250, "2.1.0")
    mail_from(srv, "\u03b4@example.net", 450, "4.7.1")
    mail_from(srv, "\u03b4@Example.NET", 450, "4.7.1")


def greylist_rcpt(srv, sender, source):
    """The RCPT reply of one try of the triplet (sender, bob, source)."""
    with Client(srv.port, source=source) as c:
        c.hello()
        c.send("MAIL FROM:<%s> SMTPUTF8" % sender); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>")
        r = c.read_reply()
        assert r.code in (250, 451), r
        return r.code


def test_greylist_tells_utf8_senders_apart(make_postern, state_store):
    """A sender that differs from a greylisted one only in a non-ASCII
    letter is a triplet of its own: greylisted on its first try even once
    the other's delay is over."""
    srv = make_postern(config=keys_config(
        "on rcpt { greylist delay 1s lifetime 1h }", state_store))
    assert greylist_rcpt(srv, "\u03b4@example.net", "127.0.9.1") == 451
    # A clock for the delay, from another network (passing whitelists it).
    t0 = time.monotonic()
    assert greylist_rcpt(srv, "c@example.net", "127.0.10.1") == 451
    wait_for(lambda: greylist_rcpt(srv, "c@example.net", "127.0.10.1") ==
        250, timeout=15, interval=0.2, what="the control triplet to pass")
    assert time.monotonic() - t0 >= 0.9
    assert greylist_rcpt(srv, "\u03bb@example.net", "127.0.9.1") == 451
    assert greylist_rcpt(srv, "\u03b4@example.net", "127.0.9.1") == 250


def test_reputation_per_utf8_sender_domain(make_postern, state_store):
    """A domain's poor score is its own, not that of every domain of the
    same length in bytes; the same domain in upper case shares it."""
    srv = make_postern(config=keys_config(
        "on mail { reputation check below -1 }\n"
        "on rcpt { reputation add -5 domain }", state_store))
    with Client(srv.port, source="127.0.0.2") as c:
        c.hello()
        c.send("MAIL FROM:<x@\u00fc.example> SMTPUTF8"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("QUIT"); c.expect(221)
    mail_from(srv, "y@\u00e4.example", 250, "2.1.0", source="127.0.0.3")
    mail_from(srv, "z@\u00fc.EXAMPLE", 550, "5.7.1", source="127.0.0.3")


def subject_reply(srv, subject):
    """The final reply to one message with this Subject: line (bytes, or
    None for no Subject: at all)."""
    with Client(srv.port) as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net> SMTPUTF8"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        head = b"From: a@example.net\r\n"
        if subject is not None:
            head += b"Subject:" + subject + b"\r\n"
        c.send_raw(head + b"\r\nbody\r\n.\r\n")
        return c.read_reply()


def test_ratelimit_per_subject_counts_every_subject(make_postern,
        state_store):
    """8-bit Subjects are counted, and two that differ only in their 8-bit
    text are two; blanks are folded; a blank Subject and none at all are
    one subject, the empty one."""
    srv = make_postern(config=keys_config(
        "on eom { ratelimit 1/1h per subject }", state_store))

    def expect(subject, code):
        r = subject_reply(srv, subject)
        assert r.code == code, (subject, r)
    jp = " \u65e5\u672c\u8a9e \u30c6\u30b9\u30c8".encode()
    expect(jp, 250)
    expect(jp, 450)
    expect(" Re: \u65e5\u672c".encode(), 250)
    expect(" Re: \u4e2d\u6587".encode(), 250)
    expect(b" hello world", 250)
    expect(b"  hello\r\n\t world  ", 450)
    expect(b"   ", 250)
    expect(None, 450)


def test_ratelimit_per_helo_is_case_insensitive(make_postern, state_store):
    """RFC 5321 2.4: a HELO name in another letter case is the same name."""
    srv = make_postern(config=keys_config(
        "on helo { ratelimit 1/1h per helo }", state_store))
    for name, code in (("mx.example", 250), ("MX.EXAMPLE", 450),
            ("Mx.Example", 450), ("other.example", 250)):
        with Client(srv.port) as c:
            c.expect(220)
            c.send("EHLO " + name)
            r = c.read_reply()
            assert r.code == code, (name, r)


class AskedRecords(dict):
    """DnsResponder's records, noting each name asked for."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def get(self, name, default=None):
        self.asked.append(name)
        return super().get(name, default)


def test_dns_list_cache_is_one_entry_per_name_in_any_case(make_postern,
        state_store):
    """RFC 4343: a domain in another letter case is the same DNS name, so
    the cached answer of the list serves it: the zone is asked once."""
    from test_chains import DnsResponder
    records = AskedRecords()
    dns = DnsResponder(records)
    try:
        srv = make_postern(config=keys_config(
            "state resolver 127.0.0.1:%d\n"
            "on helo { rhsbl dbl.test tag }" % dns.port, state_store))
        for name in ("Mx.Example.NET", "mx.example.net", "MX.EXAMPLE.NET"):
            with Client(srv.port) as c:
                c.hello(name)
        assert records.asked == ["mx.example.net.dbl.test"], records.asked
    finally:
        dns.close()
