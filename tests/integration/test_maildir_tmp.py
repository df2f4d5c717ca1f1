"""What a crash leaves in a Maildir's tmp/ is removed (docs/deploy.md): a
file there not read or written for 36 hours, as the Maildir convention
says, once postern delivers into that Maildir; fresh files, folders, and
everything in new/ and cur/ stay.
"""

import os
import time

from conftest import log_events, needs, send_message, wait_for

HOUR = 3600


def put(path, age_s=None):
    with open(path, "wb") as f:
        f.write(b"Subject: left over\n\nx\n")
    if age_s is not None:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def test_stale_tmp_files_go_fresh_ones_stay(postern):
    md = postern.path("mail", "bob", "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub))
    tmp = os.path.join(md, "tmp")
    stale = put(os.path.join(tmp, "1700000000.M1P2.other-writer"), 37 * HOUR)
    ours = put(os.path.join(tmp, "1700000000.1xa1QL1gSY000nyCN_0."
        "test.example"), 37 * HOUR)
    young = put(os.path.join(tmp, "1700000000.M3P4.a-day-old"), 35 * HOUR)
    fresh = put(os.path.join(tmp, "1700000000.M5P6.being-written"))
    old_dir = os.path.join(tmp, "a-folder")
    os.mkdir(old_dir)
    os.utime(old_dir, (time.time() - 40 * HOUR,) * 2)
    in_new = put(os.path.join(md, "new", "1700000000.M7P8.host"), 40 * HOUR)
    in_cur = put(os.path.join(md, "cur", "1700000000.M9P0.host:2,S"),
        40 * HOUR)

    with postern.session() as c:		# the Maildir is in use
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: new mail\r\n\r\nhello\r\n")
    wait_for(lambda: not os.path.exists(stale) and not os.path.exists(ours),
        timeout=10, what="the stale files in tmp/ to go; log:\n" +
        postern.log()[-1500:])
    for p in (young, fresh, old_dir, in_new, in_cur):
        assert os.path.exists(p), p
    assert len(postern.maildir("bob")) == 2	# in_new and the new message
    events = log_events(postern, "maildir-clean")
    assert [(kv["folder"], kv["removed"]) for kv, _ in events] == [
        (md, "2")], events


@needs(os.geteuid() == 0, "root, which a delivery as the owner needs")
def test_a_maildir_written_as_its_owner_is_swept_too(make_postern, sysuser):
    """A Maildir delivered `as` its owner is written by the privileged
    helper's child, as that user: the server's sweep never hears of it
    and could not read it.  The child sweeps its tmp/ at each delivery."""
    pw = sysuser("pstnsweep", "unused-password")
    md = os.path.join(pw.pw_dir, "Maildir")
    for sub in ("", "tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), mode=0o700, exist_ok=True)
        os.chown(os.path.join(md, sub), pw.pw_uid, pw.pw_gid)
    tmp = os.path.join(md, "tmp")
    stale = put(os.path.join(tmp, "1700000000.M1P2.crashed"), 48 * HOUR)
    young = put(os.path.join(tmp, "1700000000.M3P4.a-day-old"), 35 * HOUR)
    srv = make_postern(extra=['action own maildir "~/Maildir" as pstnsweep'],
        rules=["match to domain own.example action own"])
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["pstnsweep@own.example"],
            "Subject: new mail\r\n\r\nhello\r\n")
    wait_for(lambda: len(os.listdir(os.path.join(md, "new"))) == 1,
        what="the delivery as pstnsweep")
    wait_for(lambda: not os.path.exists(stale), timeout=10,
        what="the stale file in the owner's tmp/ to go")
    assert os.path.exists(young)
    events = log_events(srv, "maildir-clean")
    assert [(kv["folder"], kv["removed"]) for kv, _ in events] == [
        (md, "1")], events
