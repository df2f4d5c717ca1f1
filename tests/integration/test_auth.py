"""
SMTP AUTH (RFC 4954) with PLAIN and LOGIN against an "auth <TABLE>" table
of crypt(3) hashes: offered only after STARTTLS unless the listener says
auth-plaintext, 235 / 535 / 538 / 504 / 501 replies, the identity used by
"match from authenticated", ESMTPSA in Received:, and no password in logs.
"""

import base64
import crypt
import os
import smtplib
import subprocess

from conftest import (unverified_context, Client, HOST, make_config, plain,
    send_message, wait_for, TEMPLATE_ACTIONS)

USER, PASSWORD = "alice@example.org", "s3cret pass"
RELAYED = 'action relayed maildir "{tmp}/mail/relayed/Maildir"\n'


def auth_config(listen_opts="auth", tmp=None):
    """Users in a file table; a foreign domain relays only when authenticated."""
    return make_config(
        ["tls self-signed {tmp}/tls", "table users file:{tmp}/users",
         "auth <users>"],
        actions=TEMPLATE_ACTIONS + RELAYED,
        rules=["match to domain example.org action local",
               "match from authenticated action relayed"]).replace(
        "listen 127.0.0.1:{port}", "listen 127.0.0.1:{port} " + listen_opts)


def start(make_postern, tmp_path, listen_opts="auth"):
    h = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    # The table must exist at start-up; {tmp} is tmp_path for the first server.
    (tmp_path / "users").write_text("%s %s\nbob@example.org *\n" % (USER, h))
    return make_postern(config=auth_config(listen_opts))


def test_auth_needs_tls_first(make_postern, tmp_path):
    srv = start(make_postern, tmp_path)
    with srv.session() as c:
        r = c.hello()
        assert "AUTH" not in r.text, r.text
        c.send("AUTH PLAIN " + plain(USER, PASSWORD))
        c.expect(538, "5.7.11")
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<x@far.example>"); c.expect(550, "5.7.1")


def test_help_names_starttls_and_auth_as_ehlo_offers_them(make_postern,
        tmp_path):
    srv = start(make_postern, tmp_path)
    with srv.session() as c:
        c.hello()
        c.send("HELP")
        r = c.expect(214)
        assert "STARTTLS" in r.text and "AUTH" not in r.text, r.text
        c.starttls(unverified_context())
        c.send("EHLO client.example"); c.expect(250)
        c.send("HELP")
        r = c.expect(214)
        assert "STARTTLS" not in r.text and " AUTH;" in r.text, r.text
    plain_srv = make_postern()
    with plain_srv.session() as c:
        c.hello()
        c.send("HELP")
        r = c.expect(214)
        assert "STARTTLS" not in r.text and "AUTH" not in r.text, r.text


def test_auth_plain_after_starttls_relays_and_says_esmtpsa(make_postern,
        tmp_path):
    srv = start(make_postern, tmp_path)
    with srv.session() as c:
        c.hello()
        c.starttls(unverified_context())
        c.send("EHLO client.example")
        r = c.expect(250)
        assert "AUTH PLAIN LOGIN" in r.text, r.text
        c.send("RCPT TO:<x@far.example>"); c.expect(503)
        c.send("AUTH PLAIN " + plain(USER, PASSWORD)); c.expect(235, "2.7.0")
        c.send("AUTH PLAIN " + plain(USER, PASSWORD)); c.expect(503, "5.5.1")
        send_message(c, "a@example.org", ["x@far.example"],
            "Subject: relayed\r\n\r\nhi\r\n")
    wait_for(lambda: srv.maildir("relayed"), what="the relayed message")
    with open(srv.maildir("relayed")[0]) as f:
        head = f.read(2000)
    assert "with ESMTPSA" in head, head
    assert PASSWORD not in srv.log()
    assert "auth sid=" in srv.log() and 'user="%s"' % USER in srv.log()


def test_auth_login_and_wrong_password(make_postern, tmp_path):
    srv = start(make_postern, tmp_path)
    with srv.session() as c:
        c.hello()
        c.starttls(unverified_context())
        c.send("EHLO client.example"); c.expect(250)
        c.send("AUTH LOGIN"); r = c.expect(334)
        assert base64.b64decode(r.text) == b"Username:"
        c.send(base64.b64encode(USER.encode()).decode())
        r = c.expect(334)
        assert base64.b64decode(r.text) == b"Password:"
        c.send(base64.b64encode(b"Wr0ngPa55").decode())
        c.expect(535, "5.7.8")
        c.send("AUTH PLAIN " + plain("bob@example.org", "anything"))
        c.expect(535, "5.7.8")		# a "*" hash never matches
        c.send("AUTH PLAIN " + plain("nobody@example.org", PASSWORD))
        c.expect(535, "5.7.8")
        c.send("AUTH PLAIN"); c.expect(334)
        c.send("*"); c.expect(501, "5.0.0")
        c.send("AUTH PLAIN !!!notbase64"); c.expect(501, "5.5.2")
        c.send("AUTH CRAM-MD5"); c.expect(504, "5.5.4")
        c.send("AUTH LOGIN " + base64.b64encode(USER.encode()).decode())
        c.expect(334)
        c.send(base64.b64encode(PASSWORD.encode()).decode())
        c.expect(235, "2.7.0")
    assert "auth-failed" in srv.log()
    assert "Wr0ngPa55" not in srv.log() and PASSWORD not in srv.log()


def test_auth_plaintext_listener(make_postern, tmp_path):
    srv = start(make_postern, tmp_path, "auth-plaintext")
    with srv.session() as c:
        r = c.hello()
        assert "AUTH PLAIN LOGIN" in r.text, r.text
        c.send("AUTH PLAIN " + plain(USER, PASSWORD)); c.expect(235)
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<x@far.example>"); c.expect(250)


def test_starttls_makes_the_chain_forget_the_auth_before_it(make_postern,
        tmp_path):
    """RFC 3207 4.2: after STARTTLS the handler chain no longer sees the
    AUTH done in clear (auth.user), and the session keys go back to what
    connect left them, with what the starttls stage set: a key set at auth
    is gone, one changed there has its connect value back.  The same
    dialogue without STARTTLS keeps all of it."""
    h = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    (tmp_path / "users").write_text("%s %s\n" % (USER, h))
    srv = make_postern(config=auth_config("auth-plaintext") +
        "on connect { tag conn=yes; tag score=1 }\n"
        "on starttls { tag asked=yes }\n"
        "on auth { tag authed=yes; tag score=3 }\n"
        'on mail { reject 550 5.7.1 "user=[%{auth.user}] helo=[%{helo}] '
        'conn=[%{session.conn}] score=[%{session.score}] '
        'authed=[%{session.authed}] asked=[%{session.asked}]" }\n')
    for tls, want in (
            (False, "user=[%s] helo=[before.example] conn=[yes] score=[3] "
                "authed=[yes] asked=[]" % USER),
            (True, "user=[] helo=[after.example] conn=[yes] score=[1] "
                "authed=[] asked=[yes]")):
        with srv.session() as c:
            c.hello("before.example")
            c.send("AUTH PLAIN " + plain(USER, PASSWORD)); c.expect(235)
            if tls:
                c.starttls(unverified_context())
                c.send("EHLO after.example"); c.expect(250)
            c.send("MAIL FROM:<a@example.org>")
            r = c.expect(550, "5.7.1")
            assert r.text == "5.7.1 " + want, c.transcript()


def test_no_initial_response_in_any_log_whatever_the_blank(make_postern,
        tmp_path):
    """An AUTH line keeps its mechanism in the transaction log and the
    debug command lines, never what follows it: after a space, a tab, or
    in a line the parser refuses."""
    h = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    (tmp_path / "users").write_text("%s %s\n" % (USER, h))
    os.makedirs(tmp_path / "tlog")
    srv = make_postern(config=auth_config("auth-plaintext") +
        "transaction-log {tmp}/tlog\nlog level debug\n")
    cred = plain(USER, PASSWORD)
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN\t" + cred); c.expect(504, "5.5.4")
        c.send("AUTH\tPLAIN " + cred); c.expect(500, "5.5.2")
        c.send("auth plain " + cred); c.expect(235, "2.7.0")
        c.send("QUIT"); c.expect(221)

    def tlog():
        names = os.listdir(tmp_path / "tlog")
        text = names and open(tmp_path / "tlog" / names[0]).read()
        return text and "< 221 " in text and text
    text = wait_for(tlog, what="the transaction log")
    wait_for(lambda: "disconnect sid=" in srv.log(), what="the disconnect")
    ins = [l.split(" > ", 1)[1] for l in text.splitlines() if " > " in l]
    assert ins[1:4] == ["AUTH PLAIN", r"AUTH\x09PLAIN", "auth plain"], ins
    for where, t in (("transaction log", text), ("event log", srv.log())):
        assert cred not in t and cred[:12] not in t, (where, t)


def test_auth_without_table_is_a_config_error(tmp_path):
    from conftest import run_cli
    conf = tmp_path / "bad.conf"
    conf.write_text(make_config().replace("listen 127.0.0.1:{port}",
        "listen 127.0.0.1:2525 auth").replace("{tmp}", str(tmp_path)))
    out = run_cli("check", "-c", str(conf))
    assert out.returncode == 1
    assert "auth needs an \"auth <TABLE>\"" in out.stdout + out.stderr


def with_chains(make_postern, tmp_path, chains):
    """An auth-plaintext listener for USER, state in memory, and chains."""
    h = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    (tmp_path / "users").write_text("%s %s\n" % (USER, h))
    return make_postern(config=auth_config("auth-plaintext").replace(
        "auth <users>", "auth <users>\nstate memory\nworkers 1\n" + chains))


def test_failed_auth_bans_when_asked(make_postern, tmp_path):
    """"ban ... on auth-failure": a wrong password puts the client on the
    ban list, so its next connection is refused; without it, nothing."""
    srv = with_chains(make_postern, tmp_path,
        "on connect { banned; ban 10m on auth-failure }")
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain(USER, PASSWORD)); c.expect(235)
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain(USER, "wrong")); c.expect(535, "5.7.8")
        c.send("QUIT"); c.expect(221)

    def refused():
        with srv.session() as c:
            return c.read_reply().code == 554
    wait_for(refused, what="the ban after the failed AUTH")


def test_auth_from_a_client_banned_for_something_else(make_postern,
        tmp_path):
    """A client a handler banned (here `ban` at mail; trap, spf and
    relay-attempt bans alike) that never failed AUTH is not told it had
    too many failures: 454 4.7.0 says AUTH is not available to it now."""
    srv = with_chains(make_postern, tmp_path, "on mail { ban 1h }")
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("QUIT"); c.expect(221)

    def auth_reply():
        with srv.session() as c:
            c.hello()
            c.send("AUTH PLAIN " + plain(USER, PASSWORD))
            r = c.read_reply()
            return r if r.code == 454 else None
    r = wait_for(auth_reply, what="AUTH refused after the ban")
    assert (r.esc, r.text) == ("4.7.0", "4.7.0 Authentication not available "
        "to your address now, try again later"), r


def guarded(make_postern, tmp_path, state_store):
    """auth-guard 3/1h on an auth-plaintext listener; users jürg and bob.
    The tarpit holds each 535 until the failure is counted (and any ban is
    in place) well before the client's next command."""
    h = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    (tmp_path / "users").write_text("j\u00fcrg %s\nbob %s\n" % (h, h),
        encoding="utf-8")
    return make_postern(config=auth_config("auth-plaintext").replace(
        "auth <users>", "auth <users>\n%s\n"
        "auth-guard 3/1h ban 1h tarpit 100ms" % state_store))


def fail_from(srv, source, user):
    with Client(srv.port, source=source) as c:
        c.hello()
        c.send("AUTH PLAIN " + plain(user, "wrong")); c.expect(535, "5.7.8")


def test_auth_guard_counts_each_user_name_apart(make_postern, tmp_path,
        state_store):
    """Failures count per user name, byte for byte: four for "jörg" (not
    a user) ban the fourth address but leave the real "jürg" his own
    three tries; names alike in their first 250 bytes count apart too."""
    srv = guarded(make_postern, tmp_path, state_store)
    for i in range(4):
        fail_from(srv, "127.0.0.%d" % (3 + i), "j\u00f6rg")
    with Client(srv.port, source="127.0.0.2") as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("j\u00fcrg", "typo")); c.expect(535)
        c.send("AUTH PLAIN " + plain("j\u00fcrg", PASSWORD)); c.expect(235)
    wait_for(lambda: 'auth-guard user="j\\xc3\\xb6rg" over 3 failures: '
        '127.0.0.6 banned for 3600s' in srv.log(), what="jörg's limit logged")
    long_name = "x" * 250
    for i in range(4):
        fail_from(srv, "127.0.0.%d" % (20 + i), long_name + "a")
    wait_for(lambda: "127.0.0.23 banned" in srv.log(),
        what="the long name's limit logged")
    with Client(srv.port, source="127.0.0.24") as c:
        c.hello()
        c.send("AUTH PLAIN " + plain(long_name + "b", "wrong"))
        c.expect(535)
        c.send("AUTH PLAIN " + plain(long_name + "b", "wrong"))
        c.expect(535)
    assert "j__rg" not in srv.log()


def test_auth_guard_logs_every_address_it_bans(make_postern, tmp_path,
        state_store):
    """Once a user name is over the limit, each further address that fails
    for it is banned, and each ban is logged once, with its length."""
    srv = guarded(make_postern, tmp_path, state_store)
    for i in range(4):
        fail_from(srv, "127.0.0.%d" % (7 + i), "bob")
    fail_from(srv, "127.0.0.11", "bob")
    wait_for(lambda: 'auth-guard user="bob" over 3 failures: 127.0.0.11 '
        'banned for 3600s' in srv.log(), what="127.0.0.11's ban logged")
    with Client(srv.port, source="127.0.0.11") as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("bob", PASSWORD))
        r = c.expect(454, "4.7.0")
        assert r.text == "4.7.0 Too many authentication failures, try " \
            "again later", r
    # Three sessions from one address fail at once: one ban, one line.
    clients = [Client(srv.port, source="127.0.0.12") for _ in range(3)]
    for c in clients:
        c.hello()
    for c in clients:
        c.send("AUTH PLAIN " + plain("bob", "wrong"))
    for c in clients:
        assert c.read_reply().code in (535, 454)
        c.close()
    fail_from(srv, "127.0.0.13", "bob")
    wait_for(lambda: "127.0.0.13 banned" in srv.log(),
        what="127.0.0.13's ban logged")
    log = srv.log()
    for ip in ("127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13"):
        assert log.count(" %s banned for 3600s" % ip) == 1, log[-3000:]


def test_mail_auth_parameter_is_accepted_where_auth_is_offered(make_postern,
        tmp_path):
    """RFC 4954 5: a server that offers AUTH accepts MAIL ... AUTH=<> or
    AUTH=xtext, after AUTH or without it (and ignores the value); a bad
    xtext is 501; where AUTH is not offered the parameter is 555."""
    srv = start(make_postern, tmp_path)
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.org> AUTH=<>"); c.expect(555, "5.5.4")
        c.starttls(unverified_context())
        c.send("EHLO client.example"); c.expect(250)
        c.send("MAIL FROM:<a@example.org> AUTH=a+2Bb@example.org")
        c.expect(250, "2.1.0")
        c.send("RSET"); c.expect(250)
        c.send("AUTH PLAIN " + plain(USER, PASSWORD)); c.expect(235, "2.7.0")
        c.send("MAIL FROM:<a@example.org> AUTH=a+2b"); c.expect(501, "5.5.4")
        send_message(c, "a@example.org", ["x@far.example"],
            "Subject: auth param\r\n\r\nhi\r\n", mail_params=" AUTH=<>")
    wait_for(lambda: srv.maildir("relayed"), what="the relayed message")


# ----- implicit TLS (port 465 style) -------------------------------------------

def test_implicit_tls_offers_and_accepts_auth_smtplib(make_postern, tmp_path):
    """On a "tls auth" listener the session runs under TLS from the start:
    EHLO lists AUTH PLAIN LOGIN, and both work (smtplib.SMTP_SSL)."""
    srv = start(make_postern, tmp_path, "tls auth")
    for mech in ("PLAIN", "LOGIN"):
        s = smtplib.SMTP_SSL(HOST, srv.port, context=unverified_context(), timeout=10)
        try:
            code, _ = s.ehlo("client.example")
            assert code == 250
            assert s.has_extn("auth"), s.esmtp_features
            assert {"PLAIN", "LOGIN"} <= set(s.esmtp_features["auth"].split()), \
                s.esmtp_features
            s.user, s.password = USER, PASSWORD
            code, text = s.auth(mech, getattr(s, "auth_" + mech.lower()))
            assert code == 235, (mech, code, text)
            assert s.sendmail("a@example.org", ["x@far.example"],
                "Subject: %s over implicit TLS\r\n\r\nhi\r\n" % mech) == {}
            s.quit()
        finally:
            s.close()
    files = wait_for(lambda: len(srv.maildir("relayed")) == 2 and
        srv.maildir("relayed"), what="two relayed messages")
    for f in files:
        with open(f) as fh:
            head = fh.read(2000)
        assert "with ESMTPSA" in head, head


def test_implicit_tls_auth_with_swaks(make_postern, tmp_path):
    """swaks --tls-on-connect logs in with PLAIN and with LOGIN."""
    srv = start(make_postern, tmp_path, "tls auth")
    for mech in ("PLAIN", "LOGIN"):
        r = subprocess.run(["swaks", "--server", HOST, "--port",
            str(srv.port), "--tls-on-connect", "--auth", mech,
            "--auth-user", USER, "--auth-password", PASSWORD,
            "--from", "a@example.org", "--to", "x@far.example",
            "--header", "Subject: swaks " + mech, "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=60)
        assert r.returncode == 0, "swaks %s failed (%d):\n%s" % (
            mech, r.returncode, r.stdout)
        assert "250-AUTH PLAIN LOGIN" in r.stdout or \
            "250 AUTH PLAIN LOGIN" in r.stdout, r.stdout
        assert "<~  235 2.7.0" in r.stdout, r.stdout
    wait_for(lambda: len(srv.maildir("relayed")) == 2,
        what="two relayed messages")
