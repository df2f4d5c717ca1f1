"""
Aliases and mailbox maps from tables: fan-out (several rows) with each
final address delivered once, nesting, a per-domain catch-all, the loop
guard and the depth limit (451 4.4.6), the fan-out limit (452 4.5.3),
aliases that name no address (451 4.3.5), members no rule routes (bounced,
the rest delivered), the order of exact keys and catch-alls over several
tables, and a maildir action whose path comes from a table.  The alias tables are
SQLite, so every lookup goes to the table's own threads and the recipient
is resolved step by step on the event loop.
"""

import os
import sqlite3

from conftest import (log_events, run_cli, send_message, spool_empty,
    wait_for)


def alias_db(path, rows):
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE aliases (address text, target text)")
    db.executemany("INSERT INTO aliases VALUES (?, ?)", rows)
    db.commit()
    db.close()


def boxes_db(path, rows):
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE boxes (address text, path text)")
    db.executemany("INSERT INTO boxes VALUES (?, ?)", rows)
    db.commit()
    db.close()


BOXES_TABLE = ('table boxes sqlite:{tmp}/boxes.db query "SELECT path FROM '
               'boxes WHERE address = $1"')


def alias_table(name="aliases", limits=""):
    return ['table %s sqlite:{tmp}/%s.db query "SELECT target FROM aliases '
            'WHERE address = $1"' % (name, name),
            "alias <%s>%s" % (name, limits)]


def count(srv, user):
    return len(srv.maildir(user))


def test_fan_out_nesting_catch_all_one_copy_each(make_postern, tmp_path):
    alias_db(tmp_path / "aliases.db", [
        ("team@example.org", "a@example.org"),
        ("team@example.org", "b@example.org"),
        ("team@example.org", "c@example.org"),
        ("all@example.org", "team@example.org"),
        ("all@example.org", "a@example.org"),
        ("@example.net", "catch@example.org"),
        ("keep@example.org", "keep@example.org"),
        ("keep@example.org", "b@example.org"),
    ])
    srv = make_postern(extra=alias_table(),
        rules=["match to domain example.org action local"])
    with srv.session() as c:
        c.hello()
        send_message(c, "x@far.example", ["all@example.org"],
            "Subject: all\r\n\r\nto all\r\n")
        send_message(c, "x@far.example", ["who@example.net",
            "keep@example.org"], "Subject: more\r\n\r\ncaught\r\n")
    wait_for(lambda: count(srv, "catch") == 1 and count(srv, "keep") == 1,
        what="the catch-all and the self-alias")
    wait_for(lambda: count(srv, "c") == 1, what="team's copies")
    # a is named twice (all -> team -> a, all -> a): one copy.
    assert [count(srv, u) for u in ("a", "b", "c")] == [1, 2, 1]
    assert count(srv, "all") == count(srv, "team") == 0
    assert "alias=<a@example.org>" in srv.log()


def test_postmaster_and_quoted_forms_find_their_aliases(make_postern,
        tmp_path):
    """RCPT TO:<Postmaster> is postmaster@ the hostname (RFC 5321 4.1.1.3),
    and <"team"@...> is team@... (RFC 5321 4.1.2): both reach the alias
    of the plain address, the hostname needing no rule of its own."""
    alias_db(tmp_path / "aliases.db", [
        ("postmaster@test.example", "admin@example.org"),
        ("team@example.org", "a@example.org"),
        ("team@example.org", "b@example.org"),
    ])
    srv = make_postern(extra=alias_table(),
        rules=["match to domain example.org action local"])
    with srv.session() as c:
        c.hello()
        send_message(c, "x@far.example", ["Postmaster", '"team"@example.org'],
            "Subject: pm\r\n\r\nfor the admin\r\n")
    wait_for(lambda: [count(srv, u) for u in ("admin", "a", "b")] ==
        [1, 1, 1], what="the postmaster's and team's copies")
    assert sorted(os.listdir(srv.path("mail"))) == ["a", "admin", "b"]


def test_loop_and_depth_limit_are_451_4_4_6(make_postern, tmp_path):
    rows = [("ping@example.org", "pong@example.org"),
            ("pong@example.org", "ping@example.org")]
    rows += [("d%d@example.org" % i, "d%d@example.org" % (i + 1))
             for i in range(6)]
    alias_db(tmp_path / "aliases.db", rows)
    srv = make_postern(extra=alias_table(limits=" depth 3"),
        rules=["match to domain example.org action local"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<x@far.example>"); c.expect(250)
        c.send("RCPT TO:<ping@example.org>"); c.expect(451, "4.4.6")
        c.send("RCPT TO:<d0@example.org>"); c.expect(451, "4.4.6")
        # Three steps (d3 -> d4 -> d5 -> d6) are within the limit.
        c.send("RCPT TO:<d3@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: deep\r\n\r\nend\r\n.\r\n"); c.expect(250)
    wait_for(lambda: count(srv, "d6") == 1, what="d6's copy")
    log = srv.log()
    assert "alias loop through <ping@example.org>" in log, log[-2000:]
    assert "alias nesting deeper than the limit" in log


def test_too_many_targets_is_452_4_5_3(make_postern, tmp_path):
    alias_db(tmp_path / "aliases.db",
        [("big@example.org", "u%d@example.org" % i) for i in range(4)] +
        [("ok@example.org", "u%d@example.org" % i) for i in range(3)])
    srv = make_postern(extra=alias_table(limits=" targets 3"),
        rules=["match to domain example.org action local"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<x@far.example>"); c.expect(250)
        c.send("RCPT TO:<big@example.org>"); c.expect(452, "4.5.3")
        c.send("RCPT TO:<ok@example.org>"); c.expect(250)


def test_maildir_path_from_a_table(make_postern, tmp_path):
    boxes_db(tmp_path / "boxes.db", [
        ("anton@example.org", str(tmp_path / "boxes" / "anton")),
        ("@example.net", str(tmp_path / "boxes" / "net-catchall"))])
    srv = make_postern(
        extra=[BOXES_TABLE, "action boxed maildir <boxes>"],
        rules=["match to domain example.org action boxed",
               "match to domain example.net action boxed"])
    with srv.session() as c:
        c.hello()
        send_message(c, "x@far.example", ["Anton@example.org",
            "someone@example.net"], "Subject: boxed\r\n\r\nin a box\r\n")
        c.send("MAIL FROM:<x@far.example>"); c.expect(250)
        c.send("RCPT TO:<nobody@example.org>"); c.expect(550, "5.1.1")

    def files(sub):
        d = tmp_path / "boxes" / sub / "new"
        return os.listdir(d) if d.is_dir() else []
    wait_for(lambda: files("anton") and files("net-catchall"),
        what="both boxes")
    with open(tmp_path / "boxes" / "anton" / "new" / files("anton")[0]) as f:
        assert "in a box" in f.read()


def test_maildir_table_value_is_checked_as_a_template_is(make_postern,
        tmp_path):
    """A value of a maildir table meets the rules of a path template: one
    starting with ~ needs `as` (whose home it is), as the template "~/..."
    is refused by check.  Such a value is refused at RCPT, 451 4.3.5, with
    a route-error line naming the table and the value, and nothing is
    written to a folder named "~"; the table's other rows take mail."""
    boxes_db(tmp_path / "boxes.db", [
        ("tilde@example.org", "~/Maildir"),
        ("anton@example.org", str(tmp_path / "boxes" / "anton"))])
    srv = make_postern(
        extra=[BOXES_TABLE, "action boxed maildir <boxes>"],
        rules=["match to domain example.org action boxed"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<x@far.example>"); c.expect(250)
        c.send("RCPT TO:<tilde@example.org>"); c.expect(451, "4.3.5")
        c.send("RCPT TO:<anton@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: boxed\r\n\r\nin a box\r\n.\r\n")
        c.expect(250)
    new = tmp_path / "boxes" / "anton" / "new"
    wait_for(lambda: new.is_dir() and os.listdir(new), what="anton's copy")
    errors = [kv for kv, _ in log_events(srv, "route-error")]
    assert [e["rcpt"] for e in errors] == ["<tilde@example.org>"], errors
    # The log writes a quote as \x22.
    assert errors[0]["why"].replace("\\x22", '"') == "maildir table "\
        "<boxes>: value '~/Maildir' "\
        "for <tilde@example.org>: a path starting with ~ needs \"as USER\" "\
        "or \"as <TABLE>\" (whose home it is)", errors[0]
    assert not os.path.exists(srv.path("~")), os.listdir(srv.dir)


def test_bounces_and_local_submissions_go_through_the_aliases(make_postern,
        tmp_path):
    alias_db(tmp_path / "aliases.db", [
        ("team@example.org", "alice@example.org"),
        ("team@example.org", "carol@example.org")])
    srv = make_postern(extra=alias_table() + ["queue retry-min 1s",
        "queue retry-max 2s", "queue lifetime 2s"],
        rules=["match to domain example.org action local"])
    # bob's folder is a dangling symlink: his copy fails until it expires.
    os.makedirs(srv.path("mail"))
    os.symlink(srv.path("nowhere"), srv.path("mail", "bob"))
    with srv.session() as c:
        c.hello()
        send_message(c, "team@example.org", ["bob@example.org"],
            "Subject: to bob\r\n\r\nundeliverable\r\n")
    # The bounce to team@ reaches its members.
    wait_for(lambda: srv.maildir("alice") and srv.maildir("carol"),
        timeout=20, what="the bounce at alice and carol")
    with open(srv.maildir("alice")[0]) as f:
        assert "Return-Path: <>" in f.read()
    # postern send: the alias, and a member named again, one copy each.
    r = run_cli("send", "-C", srv.conf, "-f", "x@example.org",
        "team@example.org", "alice@example.org", input="Subject: sent\n\nx\n")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not [p for p in srv.spool_files("env")],
        timeout=10, what="an empty queue")
    assert len(srv.maildir("alice")) == len(srv.maildir("carol")) == 2
    assert srv.maildir("team") == []


def test_one_maildir_named_by_two_recipients_gets_one_copy(make_postern):
    srv = make_postern(actions='action shared maildir "{tmp}/shared"\n'
        'action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"\n',
        rules=['match to "info@example.org" action shared',
               'match to "sales@example.org" action shared',
               "match to domain example.org action local"])
    with srv.session() as c:
        c.hello()
        send_message(c, "x@far.example", ["info@example.org",
            "sales@example.org", "bob@example.org", "BOB@example.org"],
            "Subject: twice\r\n\r\none copy\r\n")
    # Maildirs only: the copies were made before the 250.
    shared = os.listdir(srv.path("shared", "new"))
    assert len(shared) == 1 and len(srv.maildir("bob")) == 1


def test_alias_with_no_address_is_refused_not_dropped(make_postern,
        tmp_path):
    """An alias that yields no address (an empty value, a target longer
    than an address may be, two addresses with a blank between them) would
    take the mail and drop it: each is refused at RCPT, 451 4.3.5, with a
    route-error line naming the alias and the bad value.  A target in <>
    is an address all the same."""
    alias_db(tmp_path / "aliases.db", [
        ("nobody@example.org", ""),
        ("list@example.org", "l" * 520 + "@example.org"),
        ("team@example.org", "frank@example.org gina@example.org"),
        ("staff@example.org", "<erin@example.org>"),
    ])
    srv = make_postern(extra=alias_table(),
        rules=["match to domain example.org action local"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<x@far.example>"); c.expect(250)
        for rcpt in ("nobody", "list", "team"):
            c.send("RCPT TO:<%s@example.org>" % rcpt); c.expect(451, "4.3.5")
        c.send("RCPT TO:<staff@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: staff\r\n\r\nfor erin\r\n.\r\n"); c.expect(250)
    wait_for(lambda: count(srv, "erin") == 1, what="erin's copy")
    assert sorted(os.listdir(srv.path("mail"))) == ["erin"]
    errors = [kv for kv, _ in log_events(srv, "route-error")]
    assert [e["rcpt"] for e in errors] == ["<nobody@example.org>",
        "<list@example.org>", "<team@example.org>"], errors
    assert errors[0]["why"] == "alias <nobody@example.org> has no target"
    assert "is not an address: longer than an address may be" in \
        errors[1]["why"]
    assert errors[2]["why"] == "alias <team@example.org>: target "\
        "'frank@example.org gina@example.org' is not an address: a blank in "\
        "an address (separate addresses with commas)", errors[2]


def test_member_no_rule_takes_bounces_the_others_get_it(make_postern,
        tmp_path):
    """An alias of ours whose member no rule routes (another domain without
    a relay rule) or has no mailbox (no row in a maildir table): the
    recipient is accepted, the other members get the message and the
    failed one comes back to the sender in a DSN; it is no relay attempt
    (no 5.7.1, no ban).  An alias none of whose members routes is refused
    550 5.1.1, each member and why in the log."""
    alias_db(tmp_path / "aliases.db", [
        ("info@example.org", "alice@example.org"),
        ("info@example.org", "bob@partner.example"),
        ("info@example.org", "zed@example.com"),
        ("ghosts@example.org", "nobody@partner.example"),
    ])
    boxes_db(tmp_path / "boxes.db", [("yan@example.com",
        str(tmp_path / "yan"))])
    srv = make_postern(extra=alias_table() + [
        BOXES_TABLE, "action boxed maildir <boxes>",
        "trusted none", "state memory",
        "on connect { banned; ban 1h on relay-attempt }"],
        rules=["match to domain example.org action local",
               "match to domain example.com action boxed"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<sender@example.org>"); c.expect(250)
        c.send("RCPT TO:<ghosts@example.org>"); c.expect(550, "5.1.1")
        c.send("RCPT TO:<info@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: info\r\n\r\nfor the team\r\n.\r\n")
        c.expect(250, "2.0.0")
    wait_for(lambda: count(srv, "alice") == 1, what="alice's copy")
    wait_for(lambda: count(srv, "sender") == 1, timeout=20,
        what="the DSN for bob and zed")
    with open(srv.maildir("sender")[0]) as f:
        dsn = f.read()
    assert "Return-Path: <>" in dsn
    assert "bob@partner.example" in dsn and "zed@example.com" in dsn
    assert "Status: 5.1.2" in dsn and "Status: 5.1.1" in dsn, dsn
    assert "Relay access denied" not in srv.log()
    members = {kv["member"]: kv["why"] for kv, _ in
        log_events(srv, "route-error") if "member" in kv}
    assert members == {
        "<nobody@partner.example>": "5.1.2 no rule for "
            "<nobody@partner.example>, a member of <ghosts@example.org>",
        "<bob@partner.example>": "5.1.2 no rule for <bob@partner.example>, "
            "a member of <info@example.org>",
        "<zed@example.com>": "5.1.1 no maildir for <zed@example.com>, a "
            "member of <info@example.org>",
    }, members
    # Not a relay attempt: the client is not banned.
    with srv.session() as c:
        c.expect(220)


def test_addresses_that_map_to_themselves_are_final(make_postern, tmp_path):
    """Two users who each keep a copy and forward to the other, and a
    catch-all to two mailboxes of its own domain: an address that maps to
    itself is final when reached again, not a loop; one copy each."""
    alias_db(tmp_path / "aliases.db", [
        ("ann@example.org", "ann@example.org"),
        ("ann@example.org", "ben@example.org"),
        ("ben@example.org", "ben@example.org"),
        ("ben@example.org", "ann@example.org"),
        ("@shared.example", "sales@shared.example"),
        ("@shared.example", "ops@shared.example"),
    ])
    srv = make_postern(extra=alias_table(),
        rules=["match to domain example.org action local",
               "match to domain shared.example action local"])
    with srv.session() as c:
        c.hello()
        for rcpt in ("ann@example.org", "sales@shared.example",
                "info@shared.example"):
            send_message(c, "x@far.example", [rcpt],
                "Subject: to %s\r\n\r\nhi\r\n" % rcpt)
    wait_for(lambda: [count(srv, u) for u in ("ann", "ben", "sales", "ops")]
        == [1, 1, 2, 2], what="one copy each per message")
    assert "4.4.6" not in srv.log()


def test_exact_key_in_any_table_before_a_catch_all(make_postern, tmp_path):
    """alias <t1> <t2>: the address's own key is looked for in every table
    before the catch-all "@domain" in any, so t1's catch-all does not hide
    t2's sales@."""
    alias_db(tmp_path / "t1.db", [("@example.org", "catchall@example.net")])
    alias_db(tmp_path / "t2.db", [("sales@example.org", "bob@example.net")])
    tables = ['table %s sqlite:{tmp}/%s.db query "SELECT target FROM '
              'aliases WHERE address = $1"' % (t, t) for t in ("t1", "t2")]
    srv = make_postern(extra=tables + ["alias <t1> <t2>"],
        rules=["match to domain example.org action local",
               "match to domain example.net action local"])
    with srv.session() as c:
        c.hello()
        send_message(c, "x@far.example", ["sales@example.org"],
            "Subject: sales\r\n\r\nfor bob\r\n")
        send_message(c, "x@far.example", ["other@example.org"],
            "Subject: other\r\n\r\nfor the catch-all\r\n")
    wait_for(lambda: count(srv, "bob") == 1 and count(srv, "catchall") == 1,
        what="bob's and the catch-all's copies")
    assert sorted(os.listdir(srv.path("mail"))) == ["bob", "catchall"]


def test_one_maildir_spelled_several_ways_gets_one_copy(make_postern,
        tmp_path):
    """Recipients whose table rows name one Maildir in different spellings
    (a trailing "/", "//", "/./", a symlinked parent) get one copy there,
    whether the message is delivered at once or from the queue."""
    shared = tmp_path / "boxes" / "shared"
    shared.mkdir(parents=True)
    os.symlink(tmp_path / "boxes", tmp_path / "link")
    (tmp_path / "boxes.txt").write_text(
        "info@example.org: %s/boxes/shared\n"
        "sales@example.org: %s/boxes/shared/\n"
        "ops@example.org: %s/boxes//./shared\n"
        "help@example.org: %s/link/shared\n" % ((tmp_path,) * 4))
    srv = make_postern(extra=["table boxes file:{tmp}/boxes.txt",
                              "action boxed maildir <boxes>"],
        rules=["match to domain example.org action boxed"])
    rcpts = ["info@example.org", "sales@example.org", "ops@example.org",
             "help@example.org"]
    big = "".join("line %06d of a long message\r\n" % i for i in range(4000))
    with srv.session() as c:
        c.hello()
        send_message(c, "x@far.example", rcpts,
            "Subject: once\r\n\r\none copy\r\n")
        # Over 64 KiB: spooled as it arrives, delivered by the queue.
        send_message(c, "x@far.example", rcpts,
            "Subject: big\r\n\r\n" + big)
    wait_for(lambda: len(os.listdir(shared / "new")) >= 2, timeout=30,
        what="both messages in the shared Maildir")
    wait_for(lambda: spool_empty(srv), timeout=30, what="the queue done")
    subjects = sorted(open(shared / "new" / n, "rb").read().split(
        b"Subject: ", 1)[1].split(b"\n", 1)[0] for n in
        os.listdir(shared / "new"))
    assert subjects == [b"big", b"once"], subjects
