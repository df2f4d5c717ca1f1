"""
Who may log in and who may send as whom: several "auth" backends tried in
order (a PostgreSQL table of crypt(3) hashes, then PAM with a real system
user), a backend that is down giving 454 rather than 535; the brute-force
guard (failures counted in a real Redis shared by two servers, the IP
banned on both, each failure tarpitted); sender protection (553 5.7.1 for
a hosted sender without AUTH, sender-login mapping users to addresses).
"""

import crypt
import time

from conftest import (Client, make_config, plain, send_message, wait_for,
    TEMPLATE_ACTIONS)


def hashed(password):
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def auth_listener(text):
    return text.replace("listen 127.0.0.1:{port}",
        "listen 127.0.0.1:{port} auth-plaintext")


def try_auth(srv, user, password):
    """One AUTH PLAIN in a fresh session: the reply."""
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain(user, password))
        return c.read_reply(timeout=30)


def test_auth_table_then_pam_and_a_backend_down_is_454(make_postern, pg,
        sysuser, pam_service):
    pg.sql("CREATE TABLE users (name text PRIMARY KEY, hash text)")
    pg.sql("INSERT INTO users VALUES ('tuser', '%s')" % hashed("table pw"))
    sysuser("pstnord", "pam pw")
    srv = make_postern(config=auth_listener(make_config([
        'table users pgsql:"%s" query "SELECT hash FROM users WHERE name '
        '= $1" timeout 3s cache off negative-cache off' % pg.conninfo(),
        "auth <users>", "auth pam %s" % pam_service,
        "auth-guard 100/1h tarpit 0"])))
    # The table knows tuser; PAM knows pstnord; the first to accept wins.
    assert try_auth(srv, "tuser", "table pw").code == 235
    assert try_auth(srv, "pstnord", "pam pw").code == 235
    assert try_auth(srv, "pstnord", "wrong").code == 535
    assert try_auth(srv, "tuser", "wrong").code == 535
    assert try_auth(srv, "nobody", "x").code == 535
    pg.ctl("stop")
    # PAM still answers for its users...
    assert try_auth(srv, "pstnord", "pam pw").code == 235
    # ...but a refusal while the table could not answer is temporary: the
    # user may be one of the table's, with the right password.
    r = try_auth(srv, "tuser", "table pw")
    assert (r.code, r.lines[0][4:9]) == (454, "4.7.0"), r
    r = try_auth(srv, "pstnord", "wrong")
    assert (r.code, r.lines[0][4:9]) == (454, "4.7.0"), r
    pg.ctl("start")
    wait_for(lambda: try_auth(srv, "tuser", "table pw").code == 235,
        timeout=20, interval=0.5, what="the table back")
    log = srv.log()
    assert 'why="backend unavailable"' in log, log[-3000:]
    assert log.count("backend=pgsql unavailable") == 1, log[-3000:]


def guard_config(redis, chain=()):
    return auth_listener(make_config(["table users file:{tmp}/users",
        "auth <users>", "state redis %s" % redis,
        "auth-guard 3/15m ban 1h tarpit 1s"] + list(chain)))


def test_auth_guard_tarpits_and_bans_on_every_node(make_postern, tmp_path,
        redis_server):
    (tmp_path / "users").write_text("alice %s\n" % hashed("good pw"))
    a = make_postern(config=guard_config(redis_server))
    (tmp_path / "srv1").mkdir()
    (tmp_path / "srv1" / "users").write_text((tmp_path / "users").read_text())
    b = make_postern(config=guard_config(redis_server,
        ["on connect { banned }"]))
    assert try_auth(a, "alice", "good pw").code == 235
    with a.session() as c:
        c.hello()
        # Four failures (the limit is three): each 535 waits the tarpit.
        for i in range(4):
            t0 = time.monotonic()
            c.send("AUTH PLAIN " + plain("alice", "bad %d" % i))
            c.expect(535, "5.7.8", timeout=10)
            assert time.monotonic() - t0 >= 0.95
        # Over the limit: even the right password is refused now.
        c.send("AUTH PLAIN " + plain("alice", "good pw"))
        c.expect(454, "4.7.0")
    wait_for(lambda: "auth-guard ip=127.0.0.1 over 3 failures" in a.log(),
        what="the ban logged")
    # The other node shares the ban list: it refuses at connect.
    c = Client(b.port)
    c.expect(554, "5.7.1")
    c.expect_closed()
    with a.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("alice", "good pw"))
        c.expect(454, "4.7.0")
    assert "good pw" not in a.log() + b.log()


def test_auth_guard_counts_per_user_across_addresses(make_postern, tmp_path,
        redis_server):
    """One user tried from many addresses: the address over the user's
    limit is banned, the earlier ones are not."""
    (tmp_path / "users").write_text("alice %s\n" % hashed("good pw"))
    srv = make_postern(config=guard_config(redis_server).replace(
        "tarpit 1s", "tarpit 0"))
    for i in range(4):
        with Client(srv.port, source="127.0.0.%d" % (10 + i)) as c:
            c.hello()
            c.send("AUTH PLAIN " + plain("alice", "bad"))
            c.expect(535)
    wait_for(lambda: "auth-guard user=\"alice\" over 3" in srv.log(),
        what="the user's limit logged")

    def refused():
        with Client(srv.port, source="127.0.0.13") as c:
            c.hello()
            c.send("AUTH PLAIN " + plain("alice", "good pw"))
            return c.read_reply().code == 454
    wait_for(refused, what="127.0.0.13 banned")
    with Client(srv.port, source="127.0.0.10") as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("alice", "good pw"))
        c.expect(235)


HOSTED = ["match to domain example.org action local",
          "match from authenticated action local"]


def test_sender_auth_refuses_a_hosted_sender_without_auth(make_postern):
    srv = make_postern(extra=["sender-auth example.org"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<boss@example.org>"); c.expect(553, "5.7.1")
        c.send("MAIL FROM:<boss@EXAMPLE.ORG>"); c.expect(553, "5.7.1")
        # Other domains, the null sender: as before.
        send_message(c, "a@far.example", ["bob@example.org"], "Subject: "
            "x\r\n\r\nhi\r\n")
        c.send("MAIL FROM:<>"); c.expect(250)
    assert 'stage=mail code=553 from=<boss@example.org>' in srv.log()


def test_listener_sender_auth_protects_every_hosted_domain(make_postern):
    srv = make_postern(config=make_config(rules=HOSTED + [
        "match to domain example.net action local"]).replace(
        "listen 127.0.0.1:{port}", "listen 127.0.0.1:{port} sender-auth"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<x@example.org>"); c.expect(553, "5.7.1")
        c.send("MAIL FROM:<x@example.net>"); c.expect(553, "5.7.1")
        c.send("MAIL FROM:<x@far.example>"); c.expect(250)


def test_sender_login_maps_users_to_their_addresses(make_postern, tmp_path):
    (tmp_path / "users").write_text("alice %s\nbob %s\n" % (
        hashed("alice pw"), hashed("bob pw")))
    (tmp_path / "logins").write_text(
        "alice alice@example.org, @alice.example\n")
    srv = make_postern(config=auth_listener(make_config([
        "table users file:{tmp}/users", "auth <users>",
        "table logins file:{tmp}/logins", "sender-login <logins>",
        "sender-auth example.org"], rules=HOSTED)))
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("alice", "alice pw")); c.expect(235)
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: own\r\n\r\nmine\r\n")
        send_message(c, "anything@alice.example", ["bob@example.org"],
            "Subject: domain\r\n\r\nmine too\r\n")
        c.send("MAIL FROM:<bob@example.org>"); c.expect(553, "5.7.1")
        c.send("MAIL FROM:<x@far.example>"); c.expect(553, "5.7.1")
    with srv.session() as c:
        c.hello()
        # A user the table does not name owns no address at all.
        c.send("AUTH PLAIN " + plain("bob", "bob pw")); c.expect(235)
        c.send("MAIL FROM:<bob@example.org>"); c.expect(553, "5.7.1")
    wait_for(lambda: len(srv.maildir("bob")) == 2, what="alice's two")
    assert "not owned by alice" in srv.log()


def test_sender_login_on_a_thread_after_a_waiting_mail_chain(make_postern,
        tmp_path):
    """MAIL waits twice: for its chain (a counter in the state store),
    then for a sender-login table answered on the table's thread.  The
    second wait keeps the sender the first one kept."""
    import sqlite3
    (tmp_path / "users").write_text("alice %s\n" % hashed("alice pw"))
    db = sqlite3.connect(str(tmp_path / "logins.db"))
    db.execute("CREATE TABLE logins (u TEXT, addr TEXT)")
    db.execute("INSERT INTO logins VALUES ('alice', 'alice@example.org')")
    db.commit()
    db.close()
    srv = make_postern(config=auth_listener(make_config([
        "table users file:{tmp}/users", "auth <users>",
        "table logins sqlite:{tmp}/logins.db query \"SELECT addr FROM "
        "logins WHERE u = $1\" cache off negative-cache off",
        "sender-login <logins>", "sender-auth example.org",
        "on mail { ratelimit 100/1m per sender }"], rules=HOSTED)))
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("alice", "alice pw")); c.expect(235)
        for _ in range(3):
            send_message(c, "alice@example.org", ["bob@example.org"],
                "Subject: own\r\n\r\nmine\r\n")
        c.send("MAIL FROM:<bob@example.org>"); c.expect(553, "5.7.1")
    wait_for(lambda: len(srv.maildir("bob")) == 3, what="alice's three")
    assert srv.alive()
