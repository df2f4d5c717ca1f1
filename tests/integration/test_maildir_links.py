"""Several Maildir recipients of one message share one file
(deliver/maildir.c): written once, hard-linked into each other Maildir's
new/ under the recipient's own name, one fsync for all.  Maildirs on
another file system get a copy of their own, and so do Maildirs written
as their owner.  Both the fast path (the delivery is the commit) and the
queue deliver them together."""

import os
import subprocess

import pytest

from conftest import (log_events, make_config, needs, read_bytes,
    send_message, split_delivered, wait_for)

USERS = ["u%d" % i for i in range(10)]
BODY = "Subject: links\r\n\r\nthe same for all\r\n"


def copies(srv, root, users):
    """{user: (path, stat)} of the one file in each user's Maildir/new."""
    out = {}
    for u in users:
        d = os.path.join(root, u, "Maildir", "new")
        names = os.listdir(d) if os.path.isdir(d) else []
        assert len(names) == 1, "%s: %r" % (d, names)
        p = os.path.join(d, names[0])
        out[u] = (p, os.stat(p))
    return out


def all_delivered(root, users):
    return all(os.path.isdir(os.path.join(root, u, "Maildir", "new")) and
        len(os.listdir(os.path.join(root, u, "Maildir", "new"))) == 1
        for u in users)


def assert_whole(path, body=b"the same for all\n"):
    rp, _received, rest = split_delivered(read_bytes(path))
    assert rp == "Return-Path: <a@example.net>"
    assert rest.endswith(b"\n\n" + body), rest[-200:]


def assert_one_file(got):
    inodes = {(st.st_dev, st.st_ino) for _, st in got.values()}
    assert len(inodes) == 1, inodes
    for p, st in got.values():
        assert st.st_nlink == len(got), (p, st.st_nlink)
    names = {os.path.basename(p) for p, _ in got.values()}
    assert len(names) == len(got), names	# each its own name


def test_ten_recipients_share_one_file(postern):
    with postern.session() as c:
        c.hello()
        send_message(c, "a@example.net", [u + "@example.org" for u in USERS],
            BODY)
    got = copies(postern, postern.path("mail"), USERS)
    assert_one_file(got)
    for p, _ in got.values():
        assert_whole(p)
    assert read_bytes(got["u0"][0]) == read_bytes(got["u9"][0])


def test_queued_recipients_share_one_file(postern):
    # Over 64 KiB the content goes to the spool while it arrives, so the
    # queue delivers it, all ten recipients together.
    big = "".join("line %06d of a long message\r\n" % i for i in range(4000))
    with postern.session() as c:
        c.hello()
        send_message(c, "a@example.net", [u + "@example.org" for u in USERS],
            "Subject: big\r\n\r\n" + big)
    wait_for(lambda: all_delivered(postern.path("mail"), USERS), 30,
        what="ten queued copies")
    got = copies(postern, postern.path("mail"), USERS)
    assert_one_file(got)
    for p, _ in got.values():
        assert_whole(p, big.replace("\r\n", "\n").encode())


def test_symlinked_maildir_is_delivered_into(postern):
    """A Maildir folder that is a symlink to a real Maildir (moved to
    another disk and linked back) is delivered into like any other, alone
    and as a link of the message's one file, message after message."""
    store = postern.path("store", "u0")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(store, sub))
    os.makedirs(postern.path("mail", "u0"))
    os.symlink(store, postern.path("mail", "u0", "Maildir"))
    for rcpts in (["u0"], ["u1", "u0"], ["u0"]):
        with postern.session() as c:
            c.hello()
            send_message(c, "a@example.net", [u + "@example.org"
                for u in rcpts], BODY)
    names = os.listdir(os.path.join(store, "new"))
    assert len(names) == 3, names
    assert os.listdir(os.path.join(store, "tmp")) == []
    assert len(postern.maildir("u1")) == 1
    assert not log_events(postern, "deferred")


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs: another file system than the test's folder."""
    mnt = tmp_path / "other"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
        str(mnt)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.fail("mount tmpfs: %s" % r.stderr.strip())
    yield str(mnt)
    if subprocess.run(["umount", str(mnt)], timeout=60).returncode:
        subprocess.run(["umount", "-l", str(mnt)], timeout=60)


@needs(os.geteuid() == 0, "root, which mounting a tmpfs needs")
def test_two_file_systems_one_file_each(tmpfs, make_postern):
    # Mounted before the server starts; the server stops first.
    srv = make_postern(config=make_config(
        actions='action local maildir "{tmp}/mail/%%{rcpt.user}/Maildir"\n'
        'action other maildir "%s/%%{rcpt.user}/Maildir"\n' % tmpfs,
        rules=["match to domain example.org action local",
            "match to domain example.com action other"]))
    here, there = USERS[:5], USERS[5:]
    # Interleaved: a copy on one file system never links to the other's.
    rcpts = [x for pair in zip([u + "@example.org" for u in here],
        [u + "@example.com" for u in there]) for x in pair]
    try:
        with srv.session() as c:
            c.hello()
            send_message(c, "a@example.net", rcpts, BODY)
        a = copies(srv, srv.path("mail"), here)
        b = copies(srv, tmpfs, there)
        assert_one_file(a)
        assert_one_file(b)
        for p, _ in list(a.values()) + list(b.values()):
            assert_whole(p)
    finally:
        srv.stop()


def test_owners_get_their_own_copies(make_postern, sysuser, public_dir):
    """Maildirs written as their owner are each written by that owner:
    separate files with the right owners; the others still share one."""
    own = [sysuser("pstnlnk%d" % i, "Link pw %d" % i) for i in range(2)]
    srv = make_postern(config=make_config(
        extra=["maildir-root %s" % public_dir],
        actions='action local maildir "{tmp}/mail/%%{rcpt.user}/Maildir"\n'
        'action own0 maildir "%s/%%{rcpt.user}/Maildir" as pstnlnk0\n'
        'action own1 maildir "%s/%%{rcpt.user}/Maildir" as pstnlnk1\n'
        % (public_dir, public_dir),
        rules=["match to o0@example.com action own0",
            "match to o1@example.com action own1",
            "match to domain example.org action local"]))
    for i, pw in enumerate(own):
        d = os.path.join(public_dir, "o%d" % i)
        os.mkdir(d)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    plain = USERS[:4]
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", [u + "@example.org" for u in plain]
            + ["o0@example.com", "o1@example.com"], BODY)
    wait_for(lambda: all_delivered(public_dir, ["o0", "o1"]), 30,
        what="the owners' copies")
    got = copies(srv, public_dir, ["o0", "o1"])
    for i, pw in enumerate(own):
        p, st = got["o%d" % i]
        assert (st.st_uid, st.st_nlink) == (pw.pw_uid, 1), p
        assert_whole(p)
    assert got["o0"][1].st_ino != got["o1"][1].st_ino
    wait_for(lambda: all_delivered(srv.path("mail"), plain), 30,
        what="the other copies")
    mine = copies(srv, srv.path("mail"), plain)
    assert_one_file(mine)
    assert all(st.st_uid == os.geteuid() for _, st in mine.values())


def test_retry_delivers_the_missing_copies_once(make_postern):
    """Two Maildirs fail for a while (their folders lead to one that is
    missing): the others are delivered as one file, then the queue delivers
    the two together, once each, and the first eight stay as they were."""
    srv = make_postern(start=False, extra=["queue retry-min 2s",
        "queue retry-max 4s"])
    os.makedirs(srv.path("mail"))
    os.makedirs(srv.path("ready", "u3"))
    os.makedirs(srv.path("ready", "u7"))
    for u in ("u3", "u7"):
        os.symlink(srv.path("box", u), srv.path("mail", u))
    srv.start()
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", [u + "@example.org" for u in USERS],
            BODY)
    first = [u for u in USERS if u not in ("u3", "u7")]
    before = copies(srv, srv.path("mail"), first)
    assert_one_file(before)
    # Deferred on the fast path, then by the queue's first attempt: the
    # next one is seconds away.  One rename lets both through at once.
    wait_for(lambda: len(log_events(srv, "deferred")) >= 4, 30,
        what="the queue's first attempt")
    os.rename(srv.path("ready"), srv.path("box"))
    wait_for(lambda: all_delivered(srv.path("mail"), ["u3", "u7"]), 30,
        what="the two retried copies")
    later = copies(srv, srv.path("mail"), ["u3", "u7"])
    assert_one_file(later)
    after = copies(srv, srv.path("mail"), first)
    assert {u: st.st_ino for u, (_, st) in after.items()} == \
        {u: st.st_ino for u, (_, st) in before.items()}
    assert_one_file(after)
    for p, _ in later.values():
        assert_whole(p)


def test_maildir_refusal_names_the_link_or_the_folder_at_fault(
        make_postern):
    """Inside a Maildir nothing is followed: a tmp/ or new/ that is a
    symlink, even to a real folder, defers the message, and the reason says
    it is a symbolic link (not "Not a directory").  A Maildir that cannot be
    made names the folder on its way that failed, not the Maildir."""
    srv = make_postern(config=make_config(
        actions='action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"\n'
        'action deep maildir "{tmp}/deep/%{rcpt.user}/a/Maildir"\n',
        rules=["match to domain example.org action local",
               "match to domain deep.example action deep"]))
    os.makedirs(srv.path("elsewhere"))
    for user, link in (("u0", "new"), ("u1", "tmp")):
        for sub in ("tmp", "new", "cur"):
            p = srv.path("mail", user, "Maildir", sub)
            if sub == link:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                os.symlink(srv.path("elsewhere"), p)
            else:
                os.makedirs(p)
    # deep/zed is there, but the folder it leads to cannot be made.
    os.makedirs(srv.path("deep"))
    os.symlink(srv.path("gone", "zed"), srv.path("deep", "zed"))
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["u0@example.org",
            "u1@example.org", "zed@deep.example"], BODY)

    def why():
        return {kv["rcpt"]: kv["why"] for kv, _ in log_events(srv,
            "deferred") if "to" in kv}
    wait_for(lambda: len(why()) == 3, what="three deferrals")
    why = why()
    link = "): is a symbolic link, which postern does not follow"
    assert why == {
        "<u0@example.org>": "open(%s%s" % (srv.path("mail", "u0", "Maildir",
            "new"), link),
        "<u1@example.org>": "open(%s%s" % (srv.path("mail", "u1", "Maildir",
            "tmp"), link),
        "<zed@deep.example>": "mkdir(%s): No such file or directory" %
            srv.path("deep", "zed", "a"),
    }, why
    assert os.listdir(srv.path("elsewhere")) == []
