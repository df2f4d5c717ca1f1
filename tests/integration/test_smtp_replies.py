"""Every reply code of interfaces.md, one transcript each."""

import os
import smtplib

from conftest import (headers_of, log_events, queue_id, read_bytes,
    send_message, split_delivered, wait_for)

EHLO_KEYWORDS = ["PIPELINING", "SIZE 100000", "8BITMIME", "ENHANCEDSTATUSCODES",
    "SMTPUTF8", "CHUNKING"]


def test_greeting_is_220_with_hostname(postern):
    with postern.session() as c:
        r = c.expect(220)
        assert r.text == "test.example ESMTP postern", r


def test_greeting_template_is_expanded_without_chains(make_postern):
    # No "on" chain in this config: %{...} is expanded all the same.
    srv = make_postern(extra=['greeting "ESMTP for %{client.ip} on '
        '%{local.port} (%{hostname})"'])
    with srv.session() as c:
        r = c.expect(220)
        assert r.text == "test.example ESMTP for 127.0.0.1 on %d " \
            "(test.example)" % srv.port, r


def test_ehlo_lists_capabilities_in_order(make_postern):
    srv = make_postern(extra=["limit message-size 100000"])
    with srv.session() as c:
        c.expect(220)
        c.send("EHLO client.example")
        r = c.expect(250)
        assert r.texts[0] == "test.example Hello client.example", r
        assert r.texts[1:] == EHLO_KEYWORDS, r


def test_helo_is_250(postern):
    with postern.session() as c:
        c.expect(220)
        c.send("HELO client.example"); r = c.expect(250)
        assert len(r.lines) == 1, "HELO reply must be one line: %r" % r
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")


def test_smtplib_delivers_into_maildir(postern):
    msg = ("From: a@example.net\r\nTo: bob@example.org\r\n"
           "Subject: hello\r\nMessage-Id: <happy-1@example.net>\r\n\r\n"
           "Hello Bob.\r\n")
    with smtplib.SMTP("127.0.0.1", postern.port, local_hostname="client.example",
            timeout=5) as s:
        refused = s.sendmail("a@example.net", ["bob@example.org"], msg)
        assert refused == {}
        code, _ = s.quit()
        assert code == 221
    files = wait_for(lambda: postern.maildir("bob"), what="a file in bob's Maildir")
    assert len(files) == 1, files
    rp, rcv, body = split_delivered(read_bytes(files[0]))
    assert rp == "Return-Path: <a@example.net>"
    assert body == msg.replace("\r\n", "\n").encode()


def test_mail_rcpt_data_replies(postern):
    with postern.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        r = c.expect(250, "2.0.0")
        assert r.text.startswith("2.0.0 Ok: queued as "), r
        c.send("QUIT"); c.expect(221, "2.0.0")
        c.expect_closed()
    wait_for(lambda: postern.maildir("bob"), what="delivery to bob")


def test_rset_noop_quit(postern):
    with postern.session() as c:
        c.hello()
        c.send("NOOP"); c.expect(250, "2.0.0")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RSET"); c.expect(250, "2.0.0")
        # RSET dropped the transaction: RCPT is out of sequence again.
        c.send("RCPT TO:<bob@example.org>"); c.expect(503, "5.5.1")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("QUIT"); c.expect(221, "2.0.0")
        c.expect_closed()


def test_vrfy_expn_help(postern):
    with postern.session() as c:
        c.hello()
        c.send("VRFY bob"); c.expect(252, "2.5.0")
        c.send("EXPN staff"); c.expect(502, "5.5.1")
        c.send("HELP"); c.expect(214)
        c.send("NOOP"); c.expect(250, "2.0.0")


def test_unknown_verb_is_500(postern):
    with postern.session() as c:
        c.hello()
        c.send("FROB nicate"); c.expect(500, "5.5.2")
        c.send("MAILFROM:<a@example.net>"); c.expect(500, "5.5.2")
        c.send("NOOP"); c.expect(250, "2.0.0")


def test_mail_syntax_errors_are_501(postern):
    with postern.session() as c:
        c.hello()
        c.send("MAIL"); c.expect(501, "5.5.4")
        c.send("MAIL <a@example.net>"); c.expect(501, "5.5.4")
        c.send("MAIL FROM:a@example.net"); c.expect(501, "5.1.7")
        c.send("MAIL FROM:<a@@example.net>"); c.expect(501, "5.1.7")
        c.send("MAIL FROM:<a@example.net"); c.expect(501, "5.1.7")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")


def test_rcpt_syntax_errors_are_501(postern):
    # A separate session: the default "limit errors 10" counts these too.
    with postern.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT"); c.expect(501, "5.5.4")
        c.send("RCPT TO:bob@example.org"); c.expect(501, "5.1.3")
        c.send("RCPT TO:<bob@@example.org>"); c.expect(501, "5.1.3")
        c.send("RCPT TO:<>"); c.expect(501, "5.1.3")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")


def test_a_bad_domain_is_named_as_such(postern):
    """A domain with a byte no domain holds (a space, a byte that is not
    UTF-8) is refused as a bad domain, not as a path missing its '>'."""
    with postern.session() as c:
        c.hello()
        for arg in (b"<a@ex\xffample.org> SMTPUTF8", b"<a@exa mple.org>"):
            c.send(b"MAIL FROM:" + arg)
            r = c.expect(501, "5.1.7")
            assert r.text == "5.1.7 Bad sender address syntax (bad domain)", r
        c.send("MAIL FROM:<a@example.net"); r = c.expect(501, "5.1.7")
        assert r.text.endswith("(missing '>')"), r
        c.send("MAIL FROM:<a@example.net> SMTPUTF8"); c.expect(250, "2.1.0")
        c.send(b"RCPT TO:<b@ex\xc3ample.org>"); r = c.expect(501, "5.1.3")
        assert r.text.endswith("(bad domain)"), r


def test_a_bad_local_part_is_named_as_such(postern):
    """A local part with a byte no local part holds (a space, a control
    byte, a byte that is not UTF-8, a comma) is refused as a bad local
    part, not as an address missing its '@domain'."""
    with postern.session() as c:
        c.hello()
        for arg in (b"<a b@example.org>", b"<a\x1b@example.org>",
                b"<a\xff@example.org> SMTPUTF8", b"<a,b@example.org>"):
            c.send(b"MAIL FROM:" + arg)
            r = c.expect(501, "5.1.7")
            assert r.text == "5.1.7 Bad sender address syntax " \
                "(bad local part)", (arg, r)
        c.send("MAIL FROM:<postmaster>"); r = c.expect(501, "5.1.7")
        assert r.text.endswith("(missing '@domain')"), r
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<b c@example.org>"); r = c.expect(501, "5.1.3")
        assert r.text.endswith("(bad local part)"), r


def test_sequence_errors_are_503(postern):
    with postern.session() as c:
        c.expect(220)
        c.send("MAIL FROM:<a@example.net>"); c.expect(503, "5.5.1")
        c.send("EHLO client.example"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(503, "5.5.1")
        c.send("DATA"); c.expect(503, "5.5.1")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("DATA"); c.expect(503, "5.5.1")
        c.send("MAIL FROM:<b@example.net>"); c.expect(503, "5.5.1")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: seq\r\n\r\nok\r\n.\r\n"); c.expect(250, "2.0.0")
    files = wait_for(lambda: postern.maildir("bob"), what="delivery to bob")
    assert len(files) == 1
    assert split_delivered(read_bytes(files[0]))[0] == "Return-Path: <a@example.net>"


def test_unknown_parameters_are_555(postern):
    with postern.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net> FROB=1"); c.expect(555, "5.5.4")
        c.send("MAIL FROM:<a@example.net> SIZE=100 BODY=8BITMIME SMTPUTF8")
        c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@example.org> FROB=1"); c.expect(555, "5.5.4")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")


def test_verbs_are_case_insensitive(postern):
    with postern.session() as c:
        c.expect(220)
        c.send("ehlo client.example"); c.expect(250)
        c.send("mail from:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("Rcpt To:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("dAtA"); c.expect(354)
        c.send_raw(b"Subject: case\r\n\r\nx\r\n.\r\n"); c.expect(250, "2.0.0")
        c.send("noop"); c.expect(250, "2.0.0")
        c.send("quit"); c.expect(221, "2.0.0")
    wait_for(lambda: postern.maildir("bob"), what="delivery to bob")


def test_null_sender_is_accepted(postern):
    with postern.session() as c:
        c.hello()
        send_message(c, "", ["bob@example.org"],
            "Subject: bounce\r\nMessage-Id: <null-1@example.net>\r\n\r\nx\r\n")
    files = wait_for(lambda: postern.maildir("bob"), what="delivery to bob")
    assert split_delivered(read_bytes(files[0]))[0] == "Return-Path: <>"


def test_several_messages_in_one_session(postern):
    qids = []
    with postern.session() as c:
        c.hello()
        for i in range(3):
            r = send_message(c, "a@example.net", ["bob@example.org"],
                "Subject: m%d\r\nMessage-Id: <multi-%d@example.net>\r\n\r\nx\r\n"
                % (i, i))
            qids.append(queue_id(r))
        c.send("QUIT"); c.expect(221, "2.0.0")
    assert len(set(qids)) == 3, "queue ids not distinct: %r" % qids
    files = wait_for(lambda: len(postern.maildir("bob")) >= 3 and
        postern.maildir("bob"), what="three deliveries to bob")
    ids = sorted(headers_of(split_delivered(read_bytes(f))[2])["message-id"][0]
        for f in files)
    assert ids == ["<multi-%d@example.net>" % i for i in range(3)]


def test_unknown_user_in_our_domain_is_550_511(make_postern):
    srv = make_postern(rules=['match to "alice@example.org" action local'])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(550, "5.1.1")
        c.send("RCPT TO:<alice@example.org>"); c.expect(250, "2.1.5")
        c.send("RCPT TO:<x@other.net>"); c.expect(550, "5.7.1")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: only alice\r\n\r\nx\r\n.\r\n"); c.expect(250, "2.0.0")
    wait_for(lambda: srv.maildir("alice"), what="delivery to alice")
    assert srv.maildir("bob") == []


def test_other_domain_is_relay_denied(postern):
    with postern.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<someone@elsewhere.test>"); c.expect(550, "5.7.1")
        c.send("RCPT TO:<bob@example.org.elsewhere.test>"); c.expect(550, "5.7.1")
        c.send("DATA"); c.expect(503, "5.5.1")


def received_for(path):
    """The "for <...>" of the Received: header of a delivered file."""
    _rp, rcv, _body = split_delivered(read_bytes(path))
    return rcv.split(" for ", 1)[1].split(";", 1)[0] if " for " in rcv \
        else None


def test_bare_postmaster_is_the_hostnames(make_postern):
    # RFC 5321 4.5.1: RCPT TO:<Postmaster> (any case, no domain) must be
    # accepted; it is postmaster@ the hostname, routed like that address
    # and the same recipient.
    srv = make_postern(rules=["match to domain example.org action local",
        "match to domain test.example action local"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<Postmaster>"); c.expect(250, "2.1.5")
        c.send("RCPT TO:<postmaster@TEST.example>"); c.expect(250, "2.1.5")
        c.send("RCPT TO:<POSTMASTER>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: pm\r\n\r\nx\r\n.\r\n"); c.expect(250, "2.0.0")
    files = wait_for(lambda: srv.maildir("postmaster"),
        what="delivery to postmaster")
    assert len(files) == 1, files
    assert received_for(files[0]) == "<postmaster@test.example>"
    assert [kv["to"] for kv, _ in log_events(srv, "rcpt")] == [
        "<postmaster@test.example>"]


def test_unrouted_postmaster_of_the_hostname_says_so(make_postern):
    # No rule for test.example, then one for another user there: the
    # reply names the gap in the configuration, not a relay attempt or an
    # unknown user.
    for rule in ("match to domain example.org action local",
            'match to "alice@test.example" action local'):
        srv = make_postern(rules=[rule])
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
            c.send("RCPT TO:<Postmaster>")
            r = c.expect(550, "5.3.5")
            assert r.text == "5.3.5 <postmaster@test.example>: The " \
                "postmaster of this host is not routed here", r
            c.send("RCPT TO:<postmaster@test.example>"); c.expect(550, "5.3.5")
            c.send("RCPT TO:<someone@elsewhere.test>"); c.expect(550, "5.7.1")
        assert [kv["rcpt"] for kv, _ in log_events(srv, "route-error")] == \
            ["<postmaster@test.example>"] * 2


def test_quoted_local_part_is_the_unquoted_mailbox(make_postern):
    # RFC 5322 3.2.4: the quotes are not part of the local part; RFC 5321
    # 4.1.2: one that could be a dot-string should not be quoted.  One
    # mailbox, one copy, one spelling everywhere; a rule on the plain form
    # matches the quoted one.
    srv = make_postern(rules=['match to "bob@example.org" action local'])
    with srv.session() as c:
        c.hello()
        c.send('MAIL FROM:<"a.b"@example.net>'); c.expect(250, "2.1.0")
        c.send('RCPT TO:<"bob"@example.org>'); c.expect(250, "2.1.5")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send('RCPT TO:<"b\\ob"@example.org>'); c.expect(250, "2.1.5")
        c.send('RCPT TO:<"carol"@example.org>'); c.expect(550, "5.1.1")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: q\r\n\r\nx\r\n.\r\n"); c.expect(250, "2.0.0")
    files = wait_for(lambda: srv.maildir("bob"), what="delivery to bob")
    assert len(files) == 1, files
    assert sorted(os.listdir(srv.path("mail"))) == ["bob"]
    rp, _rcv, _body = split_delivered(read_bytes(files[0]))
    assert rp == "Return-Path: <a.b@example.net>"
    assert received_for(files[0]) == "<bob@example.org>"
    assert [kv["to"] for kv, _ in log_events(srv, "rcpt")] == [
        "<bob@example.org>"]
    assert log_events(srv, "mail")[0][0]["from"] == "<a.b@example.net>"


def test_too_many_recipients_is_452(make_postern):
    srv = make_postern(extra=["limit recipients 2"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("RCPT TO:<carol@example.org>"); c.expect(250, "2.1.5")
        c.send("RCPT TO:<dave@example.org>"); c.expect(452, "4.5.3")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: two\r\n\r\nx\r\n.\r\n"); c.expect(250, "2.0.0")
    wait_for(lambda: srv.maildir("bob") and srv.maildir("carol"),
        what="delivery to bob and carol")
    assert srv.maildir("dave") == []


def test_error_limit_gives_421_and_close(make_postern):
    # "limit errors 3": three protocol errors are allowed an answer; the
    # limit trips at the third or the fourth (the spec says "errors before
    # 421"), with 421 4.7.0 and a close, never later.
    srv = make_postern(extra=["limit errors 3"])
    with srv.session() as c:
        c.hello()
        c.send("FROB 1"); c.expect(500, "5.5.2")
        c.send("FROB 2"); c.expect(500, "5.5.2")
        c.send("FROB 3")
        r = c.read_reply()
        if r.code == 500:
            c.send("FROB 4")
            r = c.read_reply()
        assert (r.code, r.esc) == (421, "4.7.0"), \
            "got %r, want 421 4.7.0; transcript:\n%s" % (r, c.transcript())
        c.expect_closed()
    # The server itself is fine.
    with srv.session() as c:
        c.hello()
