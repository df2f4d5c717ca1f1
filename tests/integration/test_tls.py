"""STARTTLS, implicit TLS, SNI, require-tls, min-version, self-signed.

A throw-away CA and three server certificates are made with the openssl CLI
once per test session: mail.example.org, *.example.net and the default
default.example.com (listed first in the config, so it is the default)."""

import os
import re
import smtplib
import socket
import ssl
import stat
import subprocess
import time

import pytest

from conftest import (unverified_context, HOST, binary, listen_config, log_events, read_bytes, run_cli,
    send_message, split_delivered, wait_for)
from test_early_talker import SEE_IT, talk_early_and_go_on
from test_limits import talk_before_the_greeting
from test_metrics import metrics_server, scrape

BODY = "Subject: tls\r\nMessage-Id: <tls@example.net>\r\n\r\nsecret\r\n"


# ----- test PKI ---------------------------------------------------------------

def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, timeout=30,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, "openssl %s failed:\n%s" % (" ".join(args), r.stderr)


class PKI:
    LEAVES = {	# file stem -> SAN DNS name
        "default": "default.example.com",
        "mail": "mail.example.org",
        "wild": "*.example.net",
    }

    def __init__(self, d):
        self.dir = str(d)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "3", "-subj", "/CN=postern test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash", cwd=self.dir)
        for stem, name in self.LEAVES.items():
            with open(os.path.join(self.dir, stem + ".ext"), "w") as f:
                f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid\n"
                    "subjectAltName=DNS:%s\n" % name)
            openssl("req", "-new", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-keyout", stem + ".key",
                "-out", stem + ".csr", "-subj", "/CN=" + name, cwd=self.dir)
            openssl("x509", "-req", "-in", stem + ".csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "3",
                "-extfile", stem + ".ext", "-out", stem + ".pem", cwd=self.dir)
            os.chmod(os.path.join(self.dir, stem + ".key"), 0o600)

    def path(self, name):
        return os.path.join(self.dir, name)

    def config_lines(self):
        """The "tls cert" lines: default first, names from the SANs."""
        return ['tls cert "%s" key "%s"' % (self.path(s + ".pem"),
            self.path(s + ".key")) for s in ("default", "mail", "wild")]

    def context(self, check_hostname=True):
        """A client context trusting only the test CA."""
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        ctx.check_hostname = check_hostname
        return ctx


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def san_names(cert):
    """DNS names of a getpeercert() dict."""
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


def ehlo_keywords(reply):
    return [t.split()[0].upper() for t in reply.texts[1:] if t.strip()]


@pytest.fixture
def tls_postern(make_postern, pki):
    return make_postern(extra=pki.config_lines())


def tls_server(make_postern, pki, opts="", extra=()):
    lines = pki.config_lines() + list(extra)
    if opts:
        return make_postern(config=listen_config(opts, extra=lines))
    return make_postern(extra=lines)


# ----- STARTTLS -----------------------------------------------------------------

def test_starttls_verified_chain_and_esmtps_received(tls_postern, pki):
    srv = tls_postern
    s = smtplib.SMTP(HOST, srv.port, timeout=10)
    try:
        code, _ = s.ehlo("client.example")
        assert code == 250 and s.has_extn("starttls"), \
            "STARTTLS not advertised on a listener with certificates: %r" % (
            s.esmtp_features,)
        # smtplib verifies the name it connected to; ask for the mail
        # server's name instead (SNI and check_hostname both use _host).
        s._host = "mail.example.org"
        code, msg = s.starttls(context=pki.context())
        assert code == 220 and msg.startswith(b"2.0.0"), (code, msg)
        cert = s.sock.getpeercert()
        assert "mail.example.org" in san_names(cert), cert
        code, _ = s.ehlo("client.example")
        assert code == 250
        assert not s.has_extn("starttls"), \
            "STARTTLS still advertised inside TLS: %r" % (s.esmtp_features,)
        version, cipher = s.sock.version(), s.sock.cipher()[0]
        refused = s.sendmail("a@example.net", ["bob@example.org"], BODY)
        assert refused == {}, refused
        s.quit()
    finally:
        s.close()
    files = wait_for(lambda: srv.maildir("bob"), what="delivery to bob")
    _, rcv, body = split_delivered(read_bytes(files[0]))
    assert re.search(r"\swith ESMTPS\s", rcv), "no ESMTPS in %r" % rcv
    # The TLS comment's layout is free ("version=.. cipher=.." or Postfix's
    # "using TLSv1.3 with cipher ..."); what was negotiated must be in it.
    assert version in rcv, "no %s in %r" % (version, rcv)
    assert cipher in rcv, "no cipher %s in %r" % (cipher, rcv)
    assert b"secret" in body
    tls = wait_for(lambda: log_events(srv, "tls"), what="a tls log line")
    kv, line = tls[0]
    assert re.match(r"^TLSv1\.[23]$", kv.get("proto", "")), line
    assert kv.get("cipher"), line
    assert kv.get("sni") == "mail.example.org", line


@pytest.mark.parametrize("sni, want", [
    ("mail.example.org", "mail.example.org"),	# exact name
    ("a.example.net", "*.example.net"),		# one-label wildcard
    ("unknown.example.test", "default.example.com"),	# no match: default
    ("a.b.example.net", "default.example.com"),	# wildcard is one label only
    (None, "default.example.com"),		# no SNI at all
])
def test_sni_picks_the_certificate(tls_postern, pki, sni, want):
    ctx = pki.context(check_hostname=False)	# chain still verified
    with tls_postern.session() as c:
        c.hello()
        c.starttls(ctx, sni)
        names = san_names(c.sock.getpeercert())
        assert names == [want], "sni %r: got certificate for %r, want %r" % (
            sni, names, want)
        c.send("EHLO client.example"); c.expect(250)
        c.send("QUIT"); c.expect(221)


def test_verified_hostname_against_wildcard(tls_postern, pki):
    with tls_postern.session() as c:
        c.hello()
        c.starttls(pki.context(), "mx1.example.net")	# check_hostname on
        c.send("EHLO client.example"); c.expect(250)


def test_starttls_injection_is_discarded(tls_postern, pki):
    # CVE-2011-0411: commands pipelined after STARTTLS in the same packet
    # arrived in plaintext and must never run inside the TLS session.
    with tls_postern.session() as c:
        c.hello()
        c.send_raw(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n")
        c.expect(220, "2.0.0")
        # wrap_tls asserts that no further plaintext reply came before the
        # handshake (a 250 or 503 for the injected MAIL would show here).
        c.wrap_tls(pki.context(), "mail.example.org")
        c.send("EHLO client.example"); c.expect(250)
        c.send("RCPT TO:<a@example.org>")
        c.expect(503, "5.5.1")		# no MAIL: the injected one never ran
        c.send("MAIL FROM:<good@example.net>"); c.expect(250, "2.1.0")
        c.send("QUIT"); c.expect(221)
    assert not any("evil@x" in l for l in tls_postern.log().splitlines()
        if " mail " in l), "the injected MAIL was logged:\n" + tls_postern.log()


def test_after_tls_no_starttls_and_ehlo_forgotten(tls_postern, pki):
    with tls_postern.session() as c:
        r = c.hello()
        assert "STARTTLS" in ehlo_keywords(r), r
        c.starttls(pki.context(), "mail.example.org")
        # The session forgot the EHLO: MAIL first is a sequence error.
        c.send("MAIL FROM:<a@example.net>"); c.expect(503, "5.5.1")
        c.send("EHLO client.example")
        r = c.expect(250)
        kw = ehlo_keywords(r)
        assert "STARTTLS" not in kw, "STARTTLS advertised after TLS: %r" % r
        assert "PIPELINING" in kw and "SIZE" in kw, r
        c.send("STARTTLS"); c.expect(503, "5.5.1")
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: tls_postern.maildir("bob"), what="delivery to bob")


def test_starttls_with_argument_is_501(tls_postern):
    # RFC 3207 4: "501 Syntax error (no parameters allowed)".
    with tls_postern.session() as c:
        c.expect(220)
        c.send("EHLO client.example"); c.expect(250)
        c.send("STARTTLS now"); c.expect(501)
        c.send("NOOP"); c.expect(250)


def test_no_starttls_listener_does_not_offer_it(make_postern, pki):
    srv = tls_server(make_postern, pki, "no-starttls")
    with srv.session() as c:
        r = c.hello()
        assert "STARTTLS" not in ehlo_keywords(r), r
        c.send("STARTTLS")
        r = c.read_reply()
        assert 500 <= r.code < 600, "STARTTLS on a no-starttls listener: " \
            "%r\n%s" % (r, c.transcript())
        c.send("NOOP"); c.expect(250)


def test_no_certificates_no_starttls(postern):
    with postern.session() as c:
        r = c.hello()
        assert "STARTTLS" not in ehlo_keywords(r), r


def test_quit_inside_tls_221_and_close(tls_postern, pki):
    with tls_postern.session() as c:
        c.hello()
        c.starttls(pki.context(), "mail.example.org")
        c.send("EHLO client.example"); c.expect(250)
        c.send("QUIT"); c.expect(221, "2.0.0")
        c.expect_closed()
    wait_for(lambda: log_events(tls_postern, "disconnect"),
        what="a disconnect log line after QUIT inside TLS")


def test_client_vanishing_inside_tls_ends_the_session(tls_postern, pki):
    c = tls_postern.session()
    c.hello()
    c.starttls(pki.context(), "mail.example.org")
    c.send("EHLO client.example"); c.expect(250)
    c.send("MAIL FROM:<a@example.net>"); c.expect(250)
    c.sock.close()		# no QUIT, no close_notify
    ev = wait_for(lambda: log_events(tls_postern, "disconnect"),
        what="a disconnect log line after the client vanished inside TLS")
    assert len(ev) == 1, ev
    # Nothing is left to drain: SIGTERM exits at once (teardown checks 0).
    tls_postern.stop()


def test_listener_own_certificate(make_postern, pki):
    # No global certificates: the listener's own pair is its default.
    srv = make_postern(config=listen_config('cert "%s" key "%s"' % (
        pki.path("mail.pem"), pki.path("mail.key"))))
    with srv.session() as c:
        r = c.hello()
        assert "STARTTLS" in ehlo_keywords(r), r
        c.starttls(pki.context(check_hostname=False), None)
        assert san_names(c.sock.getpeercert()) == ["mail.example.org"]
        c.send("EHLO client.example"); c.expect(250)


def rsa_cert(pki, stem, name):
    """An RSA-2048 certificate for name from the test CA: STEM.pem/.key."""
    with open(pki.path(stem + ".ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=DNS:%s\n" % name)
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
        stem + ".key", "-out", stem + ".csr", "-subj", "/CN=rsa " + name,
        cwd=pki.dir)
    openssl("x509", "-req", "-in", stem + ".csr", "-CA", "ca.pem",
        "-CAkey", "ca.key", "-CAcreateserial", "-days", "3", "-extfile",
        stem + ".ext", "-out", stem + ".pem", cwd=pki.dir)
    return 'tls cert "%s" key "%s"' % (pki.path(stem + ".pem"),
        pki.path(stem + ".key"))


@pytest.mark.parametrize("ciphers,want_cn", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "mail.example.org"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "rsa mail.example.org"),
    ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
     "mail.example.org"),
])
def test_rsa_and_ecdsa_certificates_for_one_name(make_postern, pki, ciphers,
        want_cn):
    """An RSA certificate beside the ECDSA one of mail.example.org: a TLS
    1.2 client that takes only RSA gets it, others get ECDSA."""
    srv = make_postern(extra=pki.config_lines() +
        [rsa_cert(pki, "mail-rsa", "mail.example.org")])
    ctx = pki.context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    with srv.session() as c:
        c.hello()
        c.starttls(ctx, "mail.example.org")
        subject = dict(x[0] for x in c.sock.getpeercert()["subject"])
        assert subject["commonName"] == want_cn, c.sock.getpeercert()
        c.send("EHLO client.example"); c.expect(250)


# ----- implicit TLS ------------------------------------------------------------

def test_implicit_tls_handshake_then_greeting(make_postern, pki):
    srv = tls_server(make_postern, pki, "tls")
    ctx = pki.context(check_hostname=False)
    s = smtplib.SMTP_SSL(HOST, srv.port, context=ctx, timeout=10)
    try:
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3"), s.sock.version()
        code, _ = s.ehlo("client.example")
        assert code == 250
        assert not s.has_extn("starttls"), s.esmtp_features
        assert s.sendmail("a@example.net", ["bob@example.org"], BODY) == {}
        s.quit()
    finally:
        s.close()
    files = wait_for(lambda: srv.maildir("bob"), what="delivery to bob")
    _, rcv, _ = split_delivered(read_bytes(files[0]))
    assert re.search(r"\swith ESMTPS\s", rcv), rcv
    # With SNI, the raw client: the 220 comes inside TLS.
    with srv.tls_session(pki.context(), "mail.example.org") as c:
        assert "mail.example.org" in san_names(c.sock.getpeercert())
        c.expect(220)
        c.send("EHLO client.example"); c.expect(250)


def test_implicit_tls_text_before_354_is_refused(make_postern, pki):
    # The same synchronisation check inside TLS: text sent with DATA, in
    # the same TLS record, gets 554 5.5.0 instead of a 354.
    srv = tls_server(make_postern, pki, "tls")
    with srv.tls_session(pki.context(check_hostname=False)) as c:
        c.expect(220)
        c.send("EHLO client.example"); c.expect(250)
        c.send_raw(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>"
            b"\r\nDATA\r\nSubject: early\r\n\r\nhi\r\n.\r\n")
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        c.expect(554, "5.5.0")
        c.expect_closed()
    assert srv.maildir("bob") == []


def test_implicit_tls_sends_no_plaintext_greeting(make_postern, pki):
    srv = tls_server(make_postern, pki, "tls")
    with srv.session() as c:
        # A plaintext client: the server waits for a ClientHello, so this
        # fails the handshake; no plaintext 220 may ever appear.
        c.send("EHLO client.example")
        got = b""
        c.sock.settimeout(5)
        try:
            while True:
                chunk = c.sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError("implicit-TLS listener kept a plaintext "
                "client open for 5s (got %r)" % got[:200])
        assert not got.startswith(b"220"), "plaintext greeting %r" % got[:200]
    # And it still serves real TLS clients.
    with srv.tls_session(pki.context(check_hostname=False)) as c:
        c.expect(220)


@pytest.mark.parametrize("limit", ["connections-per-ip 1",
    "connection-rate 1/1m", "connections 1"])
def test_implicit_tls_refusal_at_connect_writes_no_plaintext(make_postern,
        pki, limit):
    """A client refused at connect on a tls listener is closed before the
    handshake: a 421 in plain text would be garbage to its TLS stack."""
    srv = tls_server(make_postern, pki, "tls", extra=["trusted none",
        "limit " + limit])
    first = srv.tls_session(pki.context(check_hostname=False))
    first.expect(220)
    with srv.session() as c:	# raw: whatever comes before a ClientHello
        got = read_to_close(c.sock, 5)
        assert got == b"", "refused with %r before any handshake" % got[:200]
    with srv.session() as c:	# a TLS client: no answer, but no garbage
        with pytest.raises((ssl.SSLError, OSError)) as e:
            c.wrap_tls(pki.context(check_hostname=False))
        assert "WRONG_VERSION_NUMBER" not in str(e.value), e.value
    ev = wait_for(lambda: [kv for kv, _ in log_events(srv, "reject")
        if kv.get("stage") == "connect"], what="the reject lines")
    assert ev[0]["code"] == "421" and ev[0]["ip"] == HOST, ev
    # The admitted session goes on.
    first.send("EHLO client.example"); first.expect(250)


def test_implicit_tls_greeting_delay_counts_after_the_handshake(make_postern,
        pki):
    srv = tls_server(make_postern, pki, "tls",
        extra=["limit greeting-delay 1s"])
    with srv.tls_session(pki.context(check_hostname=False)) as c:
        t0 = time.monotonic()	# the handshake is over
        c.expect(220, timeout=5)
        waited = time.monotonic() - t0
        assert 0.9 <= waited <= 3, "220 %.2fs after the handshake, want " \
            "about 1s" % waited
        c.send("EHLO client.example"); c.expect(250)
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
    assert log_events(srv, "early-talker") == []


def test_implicit_tls_early_talker_554_and_close(make_postern, pki):
    """A client that talks inside TLS before the delayed 220 is an early
    talker, as on a plain listener: 554 5.5.0 (inside TLS) and the close."""
    srv = tls_server(make_postern, pki, "tls",
        extra=["limit greeting-delay 1s"])
    with srv.tls_session(pki.context(check_hostname=False)) as c:
        ev = talk_before_the_greeting(srv, c)
    assert ev[0][0]["bytes"] == "20", ev	# "EHLO eager.example\r\n"
    assert srv.maildir("bob") == []


def test_implicit_tls_early_talker_continue(make_postern, pki):
    srv = tls_server(make_postern, pki, "tls", extra=[
        "limit greeting-delay 1s", "early-talker continue", SEE_IT])
    with srv.tls_session(pki.context(check_hostname=False)) as c:
        talk_early_and_go_on(c, time.monotonic())


# ----- require-tls, nomail ----------------------------------------------------

def test_require_tls_530_before_starttls(make_postern, pki):
    srv = tls_server(make_postern, pki, "require-tls")
    with srv.session() as c:
        r = c.hello()
        assert "STARTTLS" in ehlo_keywords(r), r
        c.send("NOOP"); c.expect(250)
        c.send("RSET"); c.expect(250)
        c.send("MAIL FROM:<a@example.net>")
        r = c.expect(530, "5.7.0")
        assert "STARTTLS" in r.text, r
        c.send("RCPT TO:<bob@example.org>"); c.expect(530, "5.7.0")
        c.send("DATA"); c.expect(530, "5.7.0")
        c.send("VRFY bob"); c.expect(530, "5.7.0")
        c.starttls(pki.context(), "mail.example.org")
        c.send("EHLO client.example"); c.expect(250)
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: srv.maildir("bob"), what="delivery to bob")


def test_nomail_listener_521_and_close(make_postern, pki):
    srv = make_postern(config=listen_config("nomail"))
    with srv.session() as c:
        r = c.expect(521, "5.3.2")
        assert "test.example" in r.text, r
        c.expect_closed()


# ----- versions, self-signed -----------------------------------------------------

def test_min_version_tls13_refuses_tls12_client(make_postern, pki):
    srv = tls_server(make_postern, pki, extra=["tls min-version TLSv1.3"])
    old = pki.context(check_hostname=False)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with srv.session() as c:
        c.hello()
        c.send("STARTTLS"); c.expect(220, "2.0.0")
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            c.wrap_tls(old, "mail.example.org")
            # Some stacks only notice on the first read.
            c.send("EHLO client.example"); c.read_reply()
    with srv.session() as c:
        c.hello()
        c.starttls(pki.context(), "mail.example.org")
        assert c.sock.version() == "TLSv1.3", c.sock.version()
        c.send("EHLO client.example"); c.expect(250)
    # And without the setting, a TLSv1.2 client is welcome.
    srv2 = tls_server(make_postern, pki)
    with srv2.session() as c:
        c.hello()
        c.starttls(old, "mail.example.org")
        assert c.sock.version() == "TLSv1.2", c.sock.version()
        c.send("EHLO client.example"); c.expect(250)


def cert_der(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-outform", "DER"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_self_signed_is_made_on_first_start(make_postern):
    # The directory does not exist yet, as var/tls in a fresh checkout.
    srv = make_postern(extra=["tls self-signed {tmp}/tls"])
    cert, key = srv.path("tls", "cert.pem"), srv.path("tls", "key.pem")
    assert os.path.exists(cert) and os.path.exists(key), os.listdir(srv.dir)
    mode = stat.S_IMODE(os.stat(key).st_mode)
    assert mode == 0o600, "key.pem mode %o, want 600" % mode
    text = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"],
        stdout=subprocess.PIPE, text=True, timeout=30).stdout
    assert "test.example" in text, "cert not for the hostname:\n" + text
    first = cert_der(cert)
    with srv.session() as c:
        c.hello()
        c.starttls(unverified_context(), "test.example")
        assert c.sock.getpeercert(binary_form=True) == first
        c.send("EHLO client.example"); c.expect(250)
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
    wait_for(lambda: srv.maildir("bob"), what="delivery to bob")
    # A restart keeps the pair it made.
    srv.restart()
    assert cert_der(cert) == first, "the self-signed pair was remade"
    with srv.session() as c:
        c.hello()
        c.starttls(unverified_context(), "test.example")
        assert c.sock.getpeercert(binary_form=True) == first


def test_bad_certificate_paths_fail_at_start(make_postern, pki):
    srv = make_postern(start=False, extra=[
        'tls cert "{tmp}/missing.pem" key "{tmp}/missing.key"'])
    srv.proc = subprocess.Popen([binary(), "run", "-c", srv.conf],
        cwd=srv.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        out, err = srv.proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        srv.proc.communicate()
        raise AssertionError("postern started with a missing certificate")
    srv.killed = True	# it is meant to have exited
    assert srv.proc.returncode == 1, (srv.proc.returncode, err)
    assert "missing.pem" in err, "error does not name the file:\n" + err


def test_a_folder_named_as_certificate_or_key_is_said_to_be_one(
        make_postern, pki):
    for cert, key in (("{tmp}", pki.path("mail.key")),
            (pki.path("mail.pem"), "{tmp}")):
        srv = make_postern(start=False, extra=[
            'tls cert "%s" key "%s"' % (cert, key)])
        r = run_cli("check", "-c", srv.conf, cwd=srv.dir)
        assert r.returncode == 1, r
        assert "%s: Is a directory" % srv.dir in r.stdout + r.stderr, r


def test_a_dsa_key_no_handshake_can_use_is_refused(make_postern, tmp_path):
    # OpenSSL takes a DSA certificate, but TLS 1.3 has no DSA and TLS 1.2's
    # DSS ciphers are off by default: STARTTLS would be offered and fail
    # for every client.  check says so; with a DSS cipher named, it is
    # taken.
    openssl("dsaparam", "-out", "p.pem", "2048", cwd=str(tmp_path))
    openssl("req", "-x509", "-newkey", "dsa:p.pem", "-nodes", "-keyout",
        "dsa.key", "-out", "dsa.pem", "-days", "2", "-subj",
        "/CN=mail.example.org", cwd=str(tmp_path))
    tls = 'tls cert "%s/dsa.pem" key "%s/dsa.key"' % (tmp_path, tmp_path)
    srv = make_postern(start=False, extra=[tls])
    r = run_cli("check", "-c", srv.conf, cwd=srv.dir)
    assert r.returncode == 1, r
    assert "dsa.pem: a DSA key, which no handshake can use" in \
        r.stdout + r.stderr, r
    ok = make_postern(start=False, extra=[tls,
        'tls ciphers "DHE-DSS-AES256-GCM-SHA384:@SECLEVEL=0"'])
    r = run_cli("check", "-c", ok.conf, cwd=ok.dir)
    assert r.returncode == 0, r


# ----- stalled handshakes ----------------------------------------------------------

def read_to_close(sock, within):
    """Everything the peer sends until it closes (within WITHIN seconds)."""
    deadline = time.monotonic() + within
    data = b""
    try:
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data
    except socket.timeout:
        raise AssertionError("still open after %.1fs (read %r)" % (within,
            data[:100]))


def wait_closed_raw(sock, within):
    """Read (and drop) until the peer closes; the time it took."""
    t0 = time.monotonic()
    read_to_close(sock, within)
    return time.monotonic() - t0


def test_stalled_handshake_after_starttls_is_timed_out(make_postern, pki):
    srv = tls_server(make_postern, pki, extra=["limit idle-timeout 1s"])
    with srv.session() as c:
        c.hello()
        c.send("STARTTLS"); c.expect(220, "2.0.0")
        took = wait_closed_raw(c.sock, 6)	# no ClientHello ever
        assert took <= 4, "closed after %.1fs with idle-timeout 1s" % took


def test_stalled_handshake_on_implicit_tls_is_timed_out(make_postern, pki):
    srv = tls_server(make_postern, pki, "tls", extra=["limit idle-timeout 1s"])
    with srv.session() as c:
        c.send_raw(b"\x16\x03\x01")	# the start of a ClientHello, then nothing
        took = wait_closed_raw(c.sock, 6)
        assert took <= 4, "closed after %.1fs with idle-timeout 1s" % took



def test_a_stop_during_a_starttls_handshake_does_not_wait(make_postern):
    """A session between STARTTLS and the end of its handshake has no
    channel to say 421 on: a stop drops it at once instead of waiting for
    the handshake's deadline or the shutdown grace."""
    srv = make_postern(extra=["tls self-signed {tmp}/tls",
        "limit shutdown-grace 1h"])
    c = srv.session()
    c.hello()
    c.send("STARTTLS"); c.expect(220)
    # No ClientHello follows: the server waits in its handshake.
    t0 = time.monotonic()
    srv.sigterm()
    assert srv.wait_exit(timeout=10) == 0
    assert time.monotonic() - t0 < 5


# ----- the end of TLS ------------------------------------------------------------



IMPLICIT = [pytest.param(False, id="starttls"),
    pytest.param(True, id="implicit")]


@pytest.mark.parametrize("implicit", IMPLICIT)
@pytest.mark.parametrize("ending", ["quit", "idle-timeout"])
def test_a_clean_end_sends_close_notify(make_postern, pki, implicit, ending):
    """The last reply (221 to QUIT, our 421 at a timeout) is followed by
    close_notify (RFC 8446 6.1), not a bare TCP close, which a client
    cannot tell from a cut."""
    srv = tls_server(make_postern, pki, "tls" if implicit else "",
        extra=["limit idle-timeout 1s"])
    ctx = pki.context()
    # Some builds of Python read a bare close as the end, as close_notify.
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    c = srv.session()
    try:
        if not implicit:
            c.hello()
            c.send("STARTTLS"); c.expect(220, "2.0.0")
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mail.example.org",
            suppress_ragged_eofs=False)
        if implicit:
            c.expect(220)
        if ending == "quit":
            c.send("QUIT"); c.expect(221, "2.0.0")
        else:
            c.expect(421, "4.4.2", timeout=5)
        c.sock.settimeout(5)
        # close_notify reads as the end; a bare close raises SSLEOFError.
        assert c.sock.recv(4096) == b"", c.transcript()
    finally:
        c.close()


def client_hello(version, ciphers):
    """The first flight of a client offering at most VERSION and CIPHERS."""
    ctx = unverified_context()
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    ctx.set_ciphers(ciphers)
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1:DeprecationWarning")
@pytest.mark.parametrize("implicit", IMPLICIT)
@pytest.mark.parametrize("version,ciphers,alert", [
    pytest.param(ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0", 70,
        id="TLSv1.1-protocol_version"),
    pytest.param(ssl.TLSVersion.TLSv1_2, "NULL-SHA256:@SECLEVEL=0", 40,
        id="NULL-cipher-handshake_failure"),
])
def test_a_failed_handshake_ends_with_its_alert(make_postern, pki, implicit,
        version, ciphers, alert):
    """The client learns why (RFC 8446 6.2): a fatal alert, then the close,
    after STARTTLS as on an implicit-TLS listener."""
    srv = tls_server(make_postern, pki, "tls" if implicit else "")
    with srv.session() as c:
        if not implicit:
            c.hello()
            c.send("STARTTLS"); c.expect(220, "2.0.0")
        c.send_raw(client_hello(version, ciphers))
        got = read_to_close(c.sock, 5)
    # An alert record (21), fatal (2), with its description.
    assert got[:1] == b"\x15" and got[5:7] == bytes([2, alert]), \
        "got %r, want a fatal alert %d" % (got.hex() or "a bare close", alert)
    wait_for(lambda: log_events(srv, "tls-error"),
        what="the tls-error log line")


def test_a_client_gone_after_the_handshake_is_logged_plainly(make_postern,
        pki):
    """A client that closes right after an implicit-TLS handshake, its
    tickets unread (a TCP reset): the tls-error line says so in words, not
    as an error code OpenSSL never made."""
    srv = tls_server(make_postern, pki, "tls")
    for _ in range(3):
        c = srv.session()
        c.wrap_tls(pki.context(), "mail.example.org")
        c.close()		# before the greeting: no close_notify
    wait_for(lambda: len(log_events(srv, "disconnect")) == 3,
        what="3 disconnect log lines")
    whys = [kv.get("why") for kv, _ in log_events(srv, "tls-error")]
    assert whys, srv.log()
    for why in whys:
        assert why in ("connection closed during TLS",
            "error:0A000126:SSL routines::unexpected eof while reading"), whys


def handshake_then_close_notify(sock, ctx):
    """A handshake whose last flight (Finished) and close_notify leave in
    one write, then the TCP close: what openssl s_client with nothing to
    send does."""
    out, inc = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(out.read())
            data = sock.recv(65536)
            assert data, "closed in the handshake"
            inc.write(data)
    try:
        tls.unwrap()
    except ssl.SSLWantReadError:
        pass		# our close_notify is out; the server's may follow
    sock.sendall(out.read())
    sock.close()


def test_a_handshake_the_client_ends_at_once_is_logged_and_counted(
        make_postern, pki):
    srv, mport = metrics_server(make_postern, pki.config_lines())
    ctx = unverified_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    for _ in range(3):
        c = srv.session()
        c.hello()
        c.send("STARTTLS"); c.expect(220, "2.0.0")
        handshake_then_close_notify(c.sock, ctx)
    wait_for(lambda: len(log_events(srv, "disconnect")) == 3,
        what="3 disconnect log lines")
    assert [kv["proto"] for kv, _ in log_events(srv, "tls")] == \
        ["TLSv1.3"] * 3, srv.log()
    m = scrape(mport)
    assert m['postern_tls_sessions_total{version="TLSv1.3"}'] == 3, m
