"""TLS session resumption: a client that keeps its session makes an
abbreviated handshake on its next connection ("tls session-lifetime").

The ticket keys belong to the process, so a session resumes on any event
loop and across a reload (SIGHUP); "tls session-lifetime off" makes every
handshake a full one.  Each resumed session still delivers its message, and
the "tls" log line says resumed=yes."""

import re
import ssl

import pytest

from conftest import (listen_config, log_events, make_config, send_message,
    unverified_context, wait_for)
from test_metrics import metrics_server, scrape

BODY = "Subject: resume\r\nMessage-Id: <resume-%d@example.net>\r\n\r\nhi\r\n"


def client_context(version):
    ctx = unverified_context()
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def deliver_over_tls(srv, ctx, session=None, n=0, implicit=False):
    """One message over STARTTLS (or implicit TLS) offering SESSION;
    (the TLS session to keep, whether the handshake resumed)."""
    c = srv.session()
    try:
        if implicit:
            c.sock = ctx.wrap_socket(c.sock, server_hostname=None,
                session=session)
            c.hello()
        else:
            c.hello()
            c.send("STARTTLS")
            c.expect(220, "2.0.0")
            assert c.buf == b"", c.transcript()
            c.sock = ctx.wrap_socket(c.sock, server_hostname=None,
                session=session)
            c.send("EHLO client.example")
            c.expect(250)
        send_message(c, "a@example.net", ["bob@example.org"], BODY % n)
        reused = c.sock.session_reused
        kept = c.sock.session	# TLS 1.3: the ticket came with the replies
        c.send("QUIT")
        c.expect(221)
        return kept, reused
    finally:
        c.close()


def resumed_flags(srv, n):
    """The resumed= of the first n "tls" log lines, in order."""
    events = wait_for(lambda: (lambda e: e if len(e) >= n else None)(
        log_events(srv, "tls")), what="%d tls log lines" % n)
    return [kv.get("resumed") for kv, _ in events[:n]]


def delivered(srv, n):
    return wait_for(lambda: len(srv.maildir("bob")) >= n,
        what="%d messages in bob's Maildir" % n)


VERSIONS = [pytest.param(ssl.TLSVersion.TLSv1_3, id="TLSv1.3"),
    pytest.param(ssl.TLSVersion.TLSv1_2, id="TLSv1.2")]


@pytest.mark.parametrize("version", VERSIONS)
def test_second_starttls_resumes_the_session(make_postern, tmp_path,
        version):
    srv, mport = metrics_server(make_postern,
        ["tls self-signed %s" % (tmp_path / "tls")])
    ctx = client_context(version)
    sess, reused = deliver_over_tls(srv, ctx, n=1)
    assert not reused and sess is not None
    sess2, reused = deliver_over_tls(srv, ctx, sess, n=2)
    assert reused, "the second handshake was a full one"
    _, reused = deliver_over_tls(srv, ctx, sess2, n=3)
    assert reused, "the session of a resumed handshake did not resume"
    assert resumed_flags(srv, 3) == ["no", "yes", "yes"]
    m = scrape(mport)
    v = "TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
    assert (m['postern_tls_sessions_total{version="%s"}' % v],
        m['postern_tls_resumed_total{version="%s"}' % v]) == (3, 2), m
    delivered(srv, 3)
    bodies = b"".join(open(p, "rb").read() for p in srv.maildir("bob"))
    for i in (1, 2, 3):
        assert b"<resume-%d@example.net>" % i in bodies


@pytest.mark.parametrize("version", VERSIONS)
def test_session_lifetime_off_never_resumes(make_postern, tmp_path,
        version):
    srv = make_postern(extra=["tls self-signed %s" % (tmp_path / "tls"),
        "tls session-lifetime off"])
    ctx = client_context(version)
    sess, reused = deliver_over_tls(srv, ctx, n=1)
    assert not reused
    _, reused = deliver_over_tls(srv, ctx, sess, n=2)
    assert not reused, "resumed with tls session-lifetime off"
    assert resumed_flags(srv, 2) == ["no", "no"]
    delivered(srv, 2)


def reload(srv, config_text):
    """Write the configuration, SIGHUP, wait until it is loaded."""
    loaded = re.compile(r"reload: configuration \S+ loaded")
    before = len(loaded.findall(srv.log()))
    srv.write_config(config_text)
    srv.sighup()
    wait_for(lambda: len(loaded.findall(srv.log())) > before,
        what="the reload")


def test_a_session_resumes_after_a_reload_unless_turned_off(make_postern,
        tmp_path):
    cert = ["tls self-signed %s" % (tmp_path / "tls")]
    srv = make_postern(extra=cert)
    ctx = client_context(ssl.TLSVersion.TLSv1_3)
    sess, _ = deliver_over_tls(srv, ctx, n=1)
    # The keys live as long as the process: a new configuration (a new
    # server context) takes the tickets the old one issued.
    reload(srv, make_config(extra=cert + ["tls session-lifetime 2h"]))
    sess, reused = deliver_over_tls(srv, ctx, sess, n=2)
    assert reused, "a session made before the reload did not resume"
    reload(srv, make_config(extra=cert + ["tls session-lifetime off"]))
    _, reused = deliver_over_tls(srv, ctx, sess, n=3)
    assert not reused, "resumed after a reload to session-lifetime off"
    assert resumed_flags(srv, 3) == ["no", "yes", "no"]
    delivered(srv, 3)


def loop_of_session(srv, n):
    """The loop= of the n-th session's connect line (1-based)."""
    lines = wait_for(lambda: (lambda m: m if len(m) >= n else None)(
        re.findall(r" connect sid=\S+ ip=\S+ port=\d+ loop=(\d+)",
        srv.log())), what="%d connect lines" % n)
    return int(lines[n - 1])


def test_a_ticket_from_one_loop_resumes_on_another(make_postern, tmp_path):
    srv = make_postern(extra=["tls self-signed %s" % (tmp_path / "tls"),
        "workers 4 spread"])
    ctx = client_context(ssl.TLSVersion.TLSv1_3)
    sess, _ = deliver_over_tls(srv, ctx, n=1)
    first = loop_of_session(srv, 1)
    # spread: the kernel picks a loop; offer the session until a
    # connection lands on another loop than the one that issued it.
    for n in range(2, 60):
        _, reused = deliver_over_tls(srv, ctx, sess, n=n)
        assert reused, "session %d did not resume" % n
        if loop_of_session(srv, n) != first:
            break
    else:
        pytest.fail("60 connections all on loop %d" % first)
    delivered(srv, n)


def test_implicit_tls_resumes(make_postern, tmp_path):
    srv = make_postern(config=listen_config("tls", extra=[
        "tls self-signed %s" % (tmp_path / "tls")]))
    ctx = client_context(ssl.TLSVersion.TLSv1_3)
    sess, reused = deliver_over_tls(srv, ctx, n=1, implicit=True)
    assert not reused
    _, reused = deliver_over_tls(srv, ctx, sess, n=2, implicit=True)
    assert reused, "no resumption on an implicit-TLS listener"
    assert resumed_flags(srv, 2) == ["no", "yes"]
    delivered(srv, 2)


@pytest.mark.parametrize("implicit", [pytest.param(False, id="starttls"),
    pytest.param(True, id="implicit")])
def test_tls12_without_tickets_resumes_after_a_clean_end(make_postern,
        tmp_path, implicit):
    """A TLS 1.2 client that takes no tickets resumes from the server's
    cache, after its first session has ended with QUIT, on both sides."""
    extra = ["tls self-signed %s" % (tmp_path / "tls")]
    srv = make_postern(config=listen_config("tls", extra=extra) if implicit
        else make_config(extra=extra))
    ctx = client_context(ssl.TLSVersion.TLSv1_2)
    ctx.options |= ssl.OP_NO_TICKET
    sess, reused = deliver_over_tls(srv, ctx, n=1, implicit=implicit)
    assert not reused and sess is not None
    wait_for(lambda: log_events(srv, "disconnect"),
        what="the end of the first session")
    _, reused = deliver_over_tls(srv, ctx, sess, n=2, implicit=implicit)
    assert reused, "a full handshake: the session left the cache"
    assert resumed_flags(srv, 2) == ["no", "yes"]
    delivered(srv, 2)
