"""Never lose mail: what got a 250 survives kill -9, exactly once.  Each
test runs twice: in the test's temporary folder, and on an ext4 with a
journal, where the spool log takes the commits (server_dir)."""

import collections
import os

import pytest

from conftest import headers_of, read_bytes, send_message, split_delivered, wait_for
from test_maildir_commit import ext4, server_dir  # noqa: F401 (fixtures)


@pytest.fixture
def postern(server_dir, make_postern):
    return make_postern(at=server_dir)


def message_ids(srv, user):
    return collections.Counter(
        headers_of(split_delivered(read_bytes(f))[2]).get("message-id", ["?"])[0]
        for f in srv.maildir(user))


def body(mid):
    return "Subject: durable\r\nMessage-Id: <%s>\r\n\r\nx\r\n" % mid


def settled(srv, users, want):
    """Every user holds `want` (a Counter) and the spool holds no content
    that was not accepted."""
    def cond():
        return all(message_ids(srv, u) == want for u in users) and \
            not srv.unaccepted_files()
    return cond


def describe(srv, users):
    return "maildirs: %s; spool: %s" % (
        {u: dict(message_ids(srv, u)) for u in users},
        [os.path.relpath(p, srv.dir) for p in srv.spool_files()])


def wait_settled(srv, users, want, timeout=10):
    try:
        wait_for(settled(srv, users, want), timeout, what="delivery to settle")
    except AssertionError as e:
        raise AssertionError("%s\nwant each of %s to hold %s\n%s" % (
            e, users, dict(want), describe(srv, users)))


def marker_delivered_again(srv, users, want):
    """Restart cleanly, send a marker, and check nothing was delivered twice
    while the new instance recovered its spool."""
    srv.restart()
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", [u + "@example.org" for u in users],
            body("marker@example.net"))
    want = want + collections.Counter({"<marker@example.net>": 1})
    wait_settled(srv, users, want)


def test_acknowledged_messages_survive_kill9(postern):
    users = ["bob", "carol"]
    mids = ["<kill9-%d@example.net>" % i for i in range(5)]
    with postern.session() as c:
        c.hello()
        for m in mids:
            send_message(c, "a@example.net",
                ["bob@example.org", "carol@example.org"], body(m.strip("<>")))
        postern.kill9()
    postern.start()
    want = collections.Counter({m: 1 for m in mids})
    wait_settled(postern, users, want)
    marker_delivered_again(postern, users, want)


def test_acknowledged_but_undeliverable_is_delivered_once_after_kill9(postern):
    # bob's mail directory is a dangling symlink: creating the Maildir fails
    # with ENOENT, a temporary failure even for root (chmod would not stop
    # root; a regular file there gives ENOTDIR, which deliver/ calls
    # permanent).  The message is acknowledged all the same: the spool
    # holds it until delivery works.
    os.makedirs(postern.path("mail"), exist_ok=True)
    blocker = postern.path("mail", "bob")
    os.symlink(postern.path("nowhere", "bob"), blocker)
    mids = ["<deferred-%d@example.net>" % i for i in range(3)]
    with postern.session() as c:
        c.hello()
        for m in mids:
            send_message(c, "a@example.net", ["bob@example.org"], body(m.strip("<>")))
        # carol is fine and gets hers whatever happens to bob's.
        send_message(c, "a@example.net", ["carol@example.org", "bob@example.org"],
            body("both@example.net"))
    wait_for(lambda: message_ids(postern, "carol") ==
        collections.Counter({"<both@example.net>": 1}), what="carol's delivery")
    postern.kill9()
    os.unlink(blocker)
    postern.start()
    want = collections.Counter({m: 1 for m in mids + ["<both@example.net>"]})
    wait_settled(postern, ["bob"], want, timeout=15)
    assert message_ids(postern, "carol") == \
        collections.Counter({"<both@example.net>": 1})
    marker_delivered_again(postern, ["bob"], want)


def test_kill9_mid_data_delivers_only_the_finished_message(postern):
    with postern.session() as a:
        a.hello()
        send_message(a, "a@example.net", ["bob@example.org"], body("done@example.net"))
        with postern.session() as b:
            b.hello()
            b.send("MAIL FROM:<a@example.net>"); b.expect(250, "2.1.0")
            b.send("RCPT TO:<bob@example.org>"); b.expect(250, "2.1.5")
            b.send("DATA"); b.expect(354)
            b.send_raw(b"Subject: half\r\nMessage-Id: <half@example.net>\r\n\r\n" +
                b"half a message\r\n" * 2000)
            postern.kill9()
    postern.start()
    want = collections.Counter({"<done@example.net>": 1})
    wait_settled(postern, ["bob"], want)
    marker_delivered_again(postern, ["bob"], want)


def test_kill9_after_data_before_dot_then_restart_is_clean(postern):
    # The same with the spool directory checked: nothing half-written left
    # behind in the spool, and no Maildir file for the half message.
    with postern.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: cut\r\n\r\n" + b"y" * 900 + b"\r\n")
        postern.kill9()
    postern.start()
    wait_settled(postern, ["bob"], collections.Counter())
    marker_delivered_again(postern, ["bob"], collections.Counter())
