"""
Internationalized domain names (RFC 5890, RFC 5891): a domain written
with UTF-8 labels (bücher.example) and in its A-label form
(xn--bcher-kva.example) is one domain to the match rules, their `.D`
form, `to "addr"`, tables and alias catch-alls, whichever spelling the
configuration and the client use; a domain of the configuration that is
not valid IDNA is refused at load.  MX lookups ask for the A-label: in
test_relay.py, beside the other MX tests.
"""

import os

from conftest import run_cli, send_message, wait_for

BUECHER_U, BUECHER_A = "b\u00fccher.example", "xn--bcher-kva.example"
MUELLER_A = "xn--mller-kva.example"		# müller.example
CAFE_U, CAFE_A = "caf\u00e9.example", "xn--caf-dma.example"


def rcpt_replies(srv, rcpts):
    """{address: "code esc"} for each RCPT of one SMTPUTF8 transaction."""
    got = {}
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@far.example> SMTPUTF8"); c.expect(250)
        for r in rcpts:
            c.send("RCPT TO:<%s>" % r)
            reply = c.read_reply()
            got[r] = "%d %s" % (reply.code, reply.esc)
    return got


def test_rules_take_a_domain_in_either_spelling(make_postern):
    """A rule's domain in UTF-8 holds for the A-label form a client
    without SMTPUTF8 must use, and one in A-labels for the UTF-8 form:
    `to domain`, `to domain .D` and `to "addr"` alike; the domain stays
    ours (5.1.1, not 5.7.1) for an unknown user in either spelling."""
    srv = make_postern(rules=(
        "match to domain %s action local" % BUECHER_U,
        "match to domain .%s action local" % MUELLER_A,
        'match to "ceo@%s" action local' % CAFE_U))
    got = rcpt_replies(srv, [
        "x@" + BUECHER_A, "y@B\u00dcCHER.example", "z@" + BUECHER_U,
        "s@sub.m\u00fcller.example", "t@m\u00fcller.example",
        "ceo@" + CAFE_A, "ceo@" + CAFE_U, "other@" + CAFE_A,
        "n@b\u00fccher.test"])
    assert got == {
        "x@" + BUECHER_A: "250 2.1.5", "y@B\u00dcCHER.example": "250 2.1.5",
        "z@" + BUECHER_U: "250 2.1.5",
        "s@sub.m\u00fcller.example": "250 2.1.5",
        "t@m\u00fcller.example": "550 5.7.1",
        "ceo@" + CAFE_A: "250 2.1.5", "ceo@" + CAFE_U: "250 2.1.5",
        "other@" + CAFE_A: "550 5.1.1", "n@b\u00fccher.test": "550 5.7.1",
    }, got
    # The A-label client needs no SMTPUTF8; the Maildir is the local part's.
    with srv.session() as c:
        c.hello()
        send_message(c, "a@far.example", ["x@" + BUECHER_A],
            "Subject: plain\r\n\r\nfrom a client without SMTPUTF8\r\n")
    wait_for(lambda: len(srv.maildir("x")) == 1, what="x's copy")


def test_tables_and_alias_catch_alls_take_either_spelling(make_postern,
        tmp_path):
    """A table key or an alias's @domain catch-all written in one
    spelling holds for an address in the other."""
    with open(str(tmp_path / "aliases"), "w") as f:
        f.write("@%s catch@example.org\n" % CAFE_A)
    srv = make_postern(extra=(
        "table hosted { @%s }" % BUECHER_U,
        "table aliases file:{tmp}/aliases", "alias <aliases>"),
        rules=("match to <hosted> action local",
            "match to domain example.org action local"))
    got = rcpt_replies(srv, ["x@" + BUECHER_A, "who@" + CAFE_U,
        "n@" + MUELLER_A])
    assert got == {"x@" + BUECHER_A: "250 2.1.5",
        "who@" + CAFE_U: "250 2.1.5", "n@" + MUELLER_A: "550 5.7.1"}, got
    with srv.session() as c:
        c.hello()
        send_message(c, "a@far.example", ["who@" + CAFE_U],
            "Subject: caught\r\n\r\nto the catch-all\r\n", " SMTPUTF8")
    wait_for(lambda: len(srv.maildir("catch")) == 1, what="the catch-all")
    assert sorted(os.listdir(srv.path("mail"))) == ["catch"]


def test_a_utf8_key_holds_whatever_case_the_address_has(make_postern,
        tmp_path):
    """A table key written with a lower-case U-label holds for an address
    whose U-label has capitals (B\u00dcCHER is b\u00fccher, as a rule
    takes it): alias keys, and sender-auth tables, so that no spelling of
    a protected domain passes without AUTH."""
    with open(str(tmp_path / "aliases"), "w") as f:
        f.write("boss@%s chief@example.org\n" % BUECHER_U)
    srv = make_postern(extra=(
        "table aliases file:{tmp}/aliases", "alias <aliases>",
        "table protected { %s }" % BUECHER_U, "sender-auth <protected>"),
        rules=("match to domain %s action local" % BUECHER_U,
            "match to domain example.org action local"))
    with srv.session() as c:
        c.hello()
        for sender in ("x@" + BUECHER_U, "x@" + BUECHER_A,
                "x@B\u00dcCHER.example", "x@b\u00dccher.Example"):
            c.send("MAIL FROM:<%s> SMTPUTF8" % sender)
            r = c.expect(553, "5.7.1")
            assert "authentication" in r.text, (sender, r)
        send_message(c, "a@far.example", ["boss@B\u00dcCHER.example"],
            "Subject: capitals\r\n\r\nto the alias\r\n", " SMTPUTF8")
    wait_for(lambda: len(srv.maildir("chief")) == 1, what="chief's copy")
    assert sorted(os.listdir(srv.path("mail"))) == ["chief"]
    assert "alias=<chief@example.org>" in srv.log(), srv.log()


def test_a_domain_that_is_not_valid_idna_is_a_config_error(tmp_path):
    """A bad A-label (no Punycode behind "xn--") or a character IDNA2008
    disallows is refused with its line, in a rule, in sender-auth and in
    a relay-by-sender key."""
    path = str(tmp_path / "bad.conf")
    with open(path, "w") as f:
        f.write("hostname test.example\n"			# 1
            "action local discard\n"				# 2
            "match to domain xn--zz.example action local\n"	# 3
            'match from "a@\u2764.example" action local\n'	# 4
            "sender-auth %s xn--zz.test\n" % BUECHER_U +	# 5
            'account isp relay "smtp://127.0.0.1:2"\n'		# 6
            "action out relay-by-sender { @xn--zz.example: isp }\n")  # 7
    r = run_cli("check", "-c", path, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert '%s:3: match: to domain "xn--zz.example" is not a valid ' \
        "internationalized domain name (string contains invalid punycode " \
        "data)" % path in out, out
    assert '%s:5: sender-auth: "xn--zz.test" is not a valid ' \
        "internationalized domain name" % path in out, out
    # The configuration's text is quoted with its UTF-8 escaped.
    assert [l for l in out.splitlines() if l.startswith(path + ":4: match: "
        "from ") and "is not a valid internationalized domain name (string "
        "contains a disallowed character)" in l], out
    assert '%s:7: relay-by-sender: the domain "xn--zz.example" is not a ' \
        "valid internationalized domain name" % path in out, out
    assert out.count("internationalized") == 4, out
