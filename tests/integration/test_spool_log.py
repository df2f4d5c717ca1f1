"""The spool log (spool/log.c, spool/logrecover.c): on a file system that
journals in order, a message on the fast path is acknowledged once one
record naming its Maildir copies and holding their bytes is on the device
(fdatasync of <spool>/log), not after a journal commit.  A power cut may
lose copies that were acknowledged; the next start writes them again from
the log, exactly once.  A message committed into the spool (relayed) is
recorded the same way, envelope and content.  Where the log does not take
a record (full, too large a message) the copies, or the spool's files,
are fsynced before the 250, and a power cut right after loses nothing.
All run on real ext4 loop mounts, so these tests need root."""

import errno
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time

import pytest

from conftest import (make_config, needs, proc_status, queue_id,
    read_bytes, send_message, traced_by, wait_for)
from test_maildir_commit import (BODY, TEN, commits, crashed, delivered,
    ext4, no_log_size, send, sh, traced_order)
from test_disk_faults import FULL, attempt, fill
from test_relay import queue_cli, upstreams  # noqa: F401 (a fixture)

pytestmark = needs(os.geteuid() == 0,
    "root, which loop mounts need (run the suite as root to test this)")

assert ext4	# a fixture, used by name


def server(make_postern, mnt, log_size="8M", extra=()):
    """Spool and Maildirs on mnt; a log of log_size."""
    text = no_log_size(make_config(extra=extra, actions=
        'action local maildir "%s/%%{rcpt.user}/Maildir"\n' % mnt))
    return make_postern(config=text.replace("spool {tmp}/spool",
        "spool %s/spool\nspool log-size %s" % (mnt, log_size)))


def checkpoint_seq(mnt):
    """The first record the log's header says may still be needed (the
    newer of its two copies: magic "PSLH", epoch, generation, sequence)."""
    with open(os.path.join(mnt, "spool", "log"), "rb") as f:
        head = f.read(1024)
    best = None
    for at in (0, 512):
        magic, _epoch, gen, seq = struct.unpack_from("<IIQQ", head, at)
        if magic == 0x484c5350 and (best is None or gen > best[0]):
            best = (gen, seq)
    return best[1]


def checkpointed(mnt, records):
    """Wait until the checkpoint is past the first records of this run."""
    wait_for(lambda: checkpoint_seq(mnt) == records + 1, timeout=20,
        what="the checkpoint past record %d" % records)


def strace(srv, *args):
    """strace attached to every thread of srv with args (a Popen)."""
    st = subprocess.Popen(["strace", "-f", "-qq", *args, "-p",
        str(srv.proc.pid)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    wait_for(lambda: traced_by(srv.proc.pid, st.pid), 10,
        what="strace to attach to every thread")
    return st


def untrace(st):
    if st.poll() is None:
        st.terminate()
        st.wait(10)


def power_cut(ext4, dev, mnt, srv, copied=None):
    """The file system of dev as a power cut would leave it now, mounted
    in place of dev at mnt once srv is killed: what the kernel has not
    written to the device is not in it.  copied(): run once the image is
    copied, before the kill."""
    with open("/sys/block/%s/loop/backing_file" % dev) as f:
        image = f.read().strip()
    cut = image + ".cut"
    shutil.copyfile(image, cut)
    if copied is not None:
        copied()
    srv.kill9()
    sh("umount", mnt)
    sh("losetup", "-d", "/dev/" + dev)
    return ext4(image=cut, at=mnt)


def cut_while_unsynced(ext4, dev, mnt, srv, sends, records=1):
    """Once the checkpoint is past the first records, sends() runs with
    the checkpoint's syncfs held back (strace delays it), then the power
    is cut (power_cut): the copy's mount point.  strace lets go once the
    image is copied, before the kill: a process killed while strace
    holds its thread in a delayed call may stay a zombie until strace
    ends."""
    checkpointed(mnt, records)
    st = strace(srv, "-e", "trace=syncfs",
        "-e", "inject=syncfs:delay_enter=30000000")
    try:
        sends()
        return power_cut(ext4, dev, mnt, srv, lambda: untrace(st))[1]
    finally:
        untrace(st)


def renaming_thread_calls(out, first="renameat"):
    """The calls, in the strace -f output file out, of the first thread
    that made the call first (renamed: the one that committed the
    message)."""
    with open(out) as f:
        calls = [(tid, rest.split("(", 1)[0]) for tid, rest in
            (l.split(None, 1) for l in f if "(" in l)]
    tid = next(t for t, call in calls if call == first)
    return [c for t, c in calls if t == tid]


def users_mail(mnt, users):
    return {u: delivered(mnt, u) for u in users}


def restart(srv):
    """Start srv again and wait until it is done starting: it listens
    before the log is replayed, and serves no client until then."""
    srv.start()
    wait_for(lambda: "postern started" in srv.log().split("=== start ===")[-1],
        timeout=30, what="the start to finish")


def recovered_lines(srv):
    return [l for l in srv.log().splitlines() if "spool log: recovered" in l]


def test_acknowledged_copies_come_back_after_a_power_cut(ext4,
        make_postern):
    # commit=60: no timed journal commit; the checkpoint's syncfs is held
    # back (strace delays it), so the image has only what the 250s
    # waited for: the log's records.
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = server(make_postern, mnt)
    send(srv, 0, 1, ["bob@example.org"] + TEN)	# makes the Maildirs
    def sends():
        send(srv, 1, 5)
        send(srv, 6, 1, TEN)
    copy = cut_while_unsynced(ext4, dev, mnt, srv, sends)
    # The copies made without a sync are not in the image.
    assert delivered(copy) == [b"body 0\n"]
    assert delivered(copy, "u3") == [b"body 0\n"]
    restart(srv)
    # Before the first client: the log is replayed at start.
    assert recovered_lines(srv), srv.log()[-2000:]
    assert "recovered 6 messages: 0 copies found, 15 written again, " \
        "0 spooled, 0 lost" in recovered_lines(srv)[-1]
    want_bob = sorted(b"body %d\n" % i for i in range(6))
    want_ten = [b"body 0\n", b"body 6\n"]
    assert delivered(mnt) == want_bob
    for u in ("u%d" % i for i in range(10)):
        assert delivered(mnt, u) == want_ten, u
    for name in os.listdir(os.path.join(mnt, "bob", "Maildir", "new")):
        assert read_bytes(os.path.join(mnt, "bob", "Maildir", "new",
            name)).startswith(b"Return-Path: <a@example.net>\n")
    # A clean stop leaves nothing to replay: no copy twice.
    srv.stop()
    restart(srv)
    assert len(recovered_lines(srv)) == 1
    assert delivered(mnt) == want_bob
    for u in ("u%d" % i for i in range(10)):
        assert delivered(mnt, u) == want_ten, u


def test_a_copy_moved_to_cur_is_not_written_again(ext4, make_postern):
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = server(make_postern, mnt)
    send(srv, 0, 1)
    copy = cut_while_unsynced(ext4, dev, mnt, srv,
        lambda: send(srv, 1, 2))
    # A reader had it already (the copy of body 0 lives on: moved to
    # cur/ with flags); the lost ones are written again.
    new = os.path.join(copy, "bob", "Maildir", "new")
    (name,) = os.listdir(new)
    os.rename(os.path.join(new, name), os.path.join(copy, "bob", "Maildir",
        "cur", name + ":2,S"))
    restart(srv)
    assert "recovered 2 messages: 0 copies found, 2 written again" in \
        recovered_lines(srv)[-1]
    assert delivered(mnt) == [b"body 1\n", b"body 2\n"]


def test_a_torn_record_ends_the_replay(ext4, make_postern):
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = server(make_postern, mnt)
    send(srv, 0, 1)
    copy = cut_while_unsynced(ext4, dev, mnt, srv,
        lambda: send(srv, 1, 3))
    # Spoil the second record after the checkpoint (bytes of its body):
    # it and all after it are ignored; the first is replayed.
    log = os.path.join(copy, "spool", "log")
    with open(log, "r+b") as f:
        data = f.read()
        second = data.find(b"body 2\n")
        assert second > 0
        f.seek(second)
        f.write(b"BODY")
    restart(srv)
    assert "recovered 1 messages" in recovered_lines(srv)[-1]
    assert delivered(mnt) == [b"body 0\n", b"body 1\n"]


def test_a_folder_gone_hands_the_copy_to_the_queue(ext4, make_postern):
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = server(make_postern, mnt, extra=["queue retry-min 1s",
        "queue retry-max 1s"])
    send(srv, 0, 1, ["bob@example.org", "carol@example.org"])
    copy = cut_while_unsynced(ext4, dev, mnt, srv,
        lambda: send(srv, 1, 1, ["bob@example.org", "carol@example.org"]))
    # carol's Maildir cannot take it now: its tmp/ is a file.
    tmp = os.path.join(copy, "carol", "Maildir", "tmp")
    os.rmdir(tmp)
    with open(tmp, "w") as f:
        f.write("in the way\n")
    restart(srv)
    assert "1 written again, 1 spooled, 0 lost" in recovered_lines(srv)[-1]
    assert delivered(mnt) == [b"body 0\n", b"body 1\n"]
    # The queue has it, and delivers it once the Maildir is repaired.
    wait_for(lambda: "deferred" in srv.log().split("spool log: recovered")[-1],
        timeout=30, what="the queue's attempt")
    os.unlink(tmp)
    os.mkdir(tmp)
    wait_for(lambda: delivered(mnt, "carol") == [b"body 0\n", b"body 1\n"],
        timeout=60, what="the queue's delivery")


def sends_of_250_and_syncs(path):
    """[(tid, "sync"|"250")] in the order they finished, from an strace -f
    output of fdatasync and sendto."""
    out = []
    with open(path) as f:
        for line in f:
            tid, rest = line.split(None, 1)
            if "fdatasync" in rest and "unfinished" not in rest:
                out.append((tid, "sync"))
            elif rest.startswith("sendto(") and '"250 2.0.0' in rest:
                out.append((tid, "250"))
    return out


def test_the_250_waits_for_the_log(ext4, make_postern):
    _, mnt = ext4(journal=True)
    srv = server(make_postern, mnt)
    send(srv, 0, 1)
    checkpointed(mnt, 1)	# no checkpoint's fdatasync in the way
    out = srv.path("strace.out")
    st = strace(srv, "-s", "40", "-e", "trace=fdatasync,sendto,renameat",
        "-o", out)
    try:
        with srv.session() as c:
            c.hello()
            send_message(c, "a@example.net", ["bob@example.org"],
                BODY % (1, 1))
    finally:
        untrace(st)
    calls = sends_of_250_and_syncs(out)
    with open(out) as f:
        text = f.read()
    renames = [l.split(None, 1)[0] for l in text.splitlines()
        if "renameat(" in l]
    assert len(renames) == 1, text
    worker = renames[0]
    # The message's 250 comes after the delivering thread's fdatasync (of
    # the log) finished, and the copy's rename into new/ comes between.
    i250 = [i for i, (_, what) in enumerate(calls) if what == "250"]
    assert len(i250) == 1, calls
    assert (worker, "sync") in calls[:i250[0]], text
    mine = [l for l in text.splitlines() if l.startswith(worker + " ")]
    assert "fdatasync(" in mine[0] and "renameat(" in mine[1], text
    lines = text.splitlines()
    rename = next(i for i, l in enumerate(lines) if "renameat(" in l)
    sent = next(i for i, l in enumerate(lines) if '"250 2.0.0' in l)
    assert rename < sent, text


def test_a_message_too_large_for_the_log_is_fsynced(ext4, make_postern):
    # A log of 64k takes records up to 15k: a 20k message is fsynced.
    _, mnt = ext4(journal=True)
    srv = server(make_postern, mnt, log_size="64k")
    send(srv, 0, 1)
    checkpointed(mnt, 1)
    assert traced_order(srv, 1) == ["fdatasync", "renameat"]
    checkpointed(mnt, 2)	# none of its fdatasyncs in the trace below

    def big():
        with srv.session() as c:
            c.hello()
            send_message(c, "a@example.net", ["bob@example.org"],
                "Subject: big\r\n\r\n" + ("y" * 78 + "\r\n") * 256)
    out = srv.path("strace.big")
    st = strace(srv, "-e", "trace=fsync,fdatasync,renameat", "-o", out)
    try:
        big()
    finally:
        untrace(st)
    with open(out) as f:
        order = [l.split(None, 1)[1].split("(", 1)[0] for l in f
            if "(" in l]
    assert order == ["renameat", "fsync"]
    assert len(delivered(mnt)) == 3


def test_a_full_log_falls_back_to_fsync(ext4, make_postern):
    # Checkpoints held back: a 64k log fills after a few 10k messages;
    # the others are fsynced, and all are delivered.
    _, mnt = ext4(journal=True)
    srv = server(make_postern, mnt, log_size="64k")
    send(srv, 0, 1)
    checkpointed(mnt, 1)
    out = srv.path("strace.full")
    st = strace(srv, "-e", "trace=fsync,fdatasync,renameat,syncfs",
        "-e", "inject=syncfs:delay_enter=30000000", "-o", out)
    try:
        with srv.session() as c:
            c.hello()
            for i in range(12):
                send_message(c, "a@example.net", ["bob@example.org"],
                    "Subject: %d\r\n\r\n" % i + ("z" * 78 + "\r\n") * 120)
    finally:
        untrace(st)
    with open(out) as f:
        calls = [l.split(None, 1)[1].split("(", 1)[0] for l in f
            if "(" in l and "syncfs" not in l]
    # First through the log (fdatasync, rename), then fsync each.
    assert calls[:2] == ["fdatasync", "renameat"], calls
    assert calls[-2:] == ["renameat", "fsync"], calls
    assert 3 <= calls.count("fdatasync") <= 8, calls
    assert len(delivered(mnt)) == 13


def test_a_failed_checkpoint_keeps_the_records(ext4, make_postern):
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = server(make_postern, mnt)
    send(srv, 0, 1)
    checkpointed(mnt, 1)
    st = strace(srv, "-e", "trace=syncfs", "-e", "inject=syncfs:error=EIO")
    try:
        send(srv, 1, 3)
        wait_for(lambda: srv.log().count("checkpoint: syncfs: Input/output "
            "error; keeping the records, retrying") >= 2, timeout=20,
            what="two failed checkpoints")
        _, copy = power_cut(ext4, dev, mnt, srv)
    finally:
        untrace(st)
    restart(srv)
    # Every record since the last good checkpoint is replayed.
    assert "recovered 3 messages" in recovered_lines(srv)[-1]
    assert delivered(mnt) == [b"body %d\n" % i for i in range(4)]


def test_checkpoints_resume_after_a_failure(ext4, make_postern):
    _, mnt = ext4(journal=True)
    srv = server(make_postern, mnt)
    send(srv, 0, 1)
    checkpointed(mnt, 1)
    st = strace(srv, "-e", "trace=syncfs",
        "-e", "inject=syncfs:error=EIO:when=1")
    try:
        send(srv, 1, 1)
        wait_for(lambda: "keeping the records, retrying" in srv.log(),
            timeout=20, what="a failed checkpoint")
    finally:
        untrace(st)
    # The next one succeeds: a restart has nothing to replay.
    checkpointed(mnt, 2)
    srv.kill9()
    restart(srv)
    assert not recovered_lines(srv)
    assert delivered(mnt) == [b"body 0\n", b"body 1\n"]


def test_a_failed_log_write_falls_back_to_fsync(ext4, make_postern):
    # The log's fdatasync fails: that message's copy is fsynced before its
    # 250, and the log takes nothing more (every copy fsynced from then).
    _, mnt = ext4(journal=True)
    srv = server(make_postern, mnt)
    send(srv, 0, 1)
    checkpointed(mnt, 1)
    out = srv.path("strace.eio")
    st = strace(srv, "-e", "trace=fsync,fdatasync,renameat",
        "-e", "inject=fdatasync:error=EIO", "-o", out)
    try:
        send(srv, 1, 1)
    finally:
        untrace(st)
    # The delivering thread's (a checkpoint's header may fail meanwhile).
    assert renaming_thread_calls(out) == ["fdatasync", "renameat",
        "fsync"], out
    assert "acknowledging with fsync from now on" in srv.log()
    assert traced_order(srv, 2) == ["renameat", "fsync"]
    assert delivered(mnt) == [b"body 0\n", b"body 1\n", b"body 2\n"]


def test_no_log_on_tmpfs(ext4, make_postern, tmp_path):
    # A spool in memory makes nothing durable: no log, the copies synced
    # on their own (the one-commit order).
    _, mnt = ext4(journal=True)
    spool = tmp_path / "tmpfs"
    spool.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(spool))
    try:
        text = no_log_size(make_config(actions=
            'action local maildir "%s/%%{rcpt.user}/Maildir"\n' % mnt))
        srv = make_postern(config=text.replace("spool {tmp}/spool",
            "spool %s/spool" % spool))
        send(srv, 0, 1)
        assert "spool log: off (the spool is in memory)" in srv.log()
        assert not os.path.exists(os.path.join(str(spool), "spool", "log"))
        assert traced_order(srv, 1) == ["sync_file_range", "renameat",
            "fsync"]
        srv.stop()
    finally:
        sh("umount", str(spool))


def test_no_name_in_new_before_the_record_is_durable(ext4, make_postern):
    # The log's flush is held back (strace delays its fdatasync, and the
    # checkpoint's syncfs): the copy is written in tmp/ meanwhile, but has
    # no name in new/ and the client no 250.  The image a power cut would
    # leave now has no file in new/ for it, empty or not.  Once the flush
    # is done, the copy is named and the 250 follows.
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = server(make_postern, mnt)
    send(srv, 0, 1)
    checkpointed(mnt, 1)
    bob = os.path.join(mnt, "bob", "Maildir")
    st = strace(srv, "-e", "trace=fdatasync,syncfs",
        "-e", "inject=fdatasync:delay_enter=15000000",
        "-e", "inject=syncfs:delay_enter=15000000")
    try:
        with srv.session() as c:
            c.hello()
            for line, code in (("MAIL FROM:<a@example.net>", 250),
                    ("RCPT TO:<bob@example.org>", 250), ("DATA", 354)):
                c.send(line)
                c.expect(code)
            c.send_raw((BODY % (1, 1)).encode() + b".\r\n")
            wait_for(lambda: os.listdir(os.path.join(bob, "tmp")) or
                len(os.listdir(os.path.join(bob, "new"))) > 1, timeout=20,
                what="the copy in tmp/")
            assert len(os.listdir(os.path.join(bob, "new"))) == 1
            c.assert_silent()
            assert delivered(crashed(ext4, dev)) == [b"body 0\n"]
            untrace(st)
            c.expect(250)
    finally:
        untrace(st)
    assert delivered(mnt) == [b"body 0\n", b"body 1\n"]
    assert os.listdir(os.path.join(bob, "tmp")) == []


# ----- messages through the spool (relay) ---------------------------------

def relay_server(make_postern, mnt, port, log_size="8M", extra=()):
    """Spool on mnt, a log of log_size; example.org relayed to port."""
    text = no_log_size(make_config(extra=extra,
        actions='action out relay "smtp://127.0.0.1:%d"\n' % port,
        rules=["match to domain example.org action out"]))
    srv = make_postern(config=text.replace("spool {tmp}/spool",
        "spool %s/spool\nspool log-size %s" % (mnt, log_size)))
    wait_for(lambda: "postern started" in srv.log(), timeout=30,
        what="the start to finish")
    return srv


def two_upstreams(make_postern, mnt, up, up2):
    """relay_server, and example.com relayed to up2: a message for both
    goes in two transactions."""
    text = no_log_size(make_config(
        actions='action out relay "smtp://127.0.0.1:%d"\n'
        'action out2 relay "smtp://127.0.0.1:%d"\n' % (up.port, up2.port),
        rules=["match to domain example.org action out",
               "match to domain example.com action out2"]))
    srv = make_postern(config=text.replace("spool {tmp}/spool",
        "spool %s/spool\nspool log-size 8M" % mnt))
    wait_for(lambda: "postern started" in srv.log(), timeout=30,
        what="the start to finish")
    return srv


def two_upstreams_started(ext4, make_postern, up, up2):
    """two_upstreams on a new ext4 (no timed commit), one message relayed
    to up and its removal recorded (records 1 and 2): (dev, mnt, srv)."""
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = two_upstreams(make_postern, mnt, up, up2)
    relayed_and_recorded(srv, up, mnt, 0, 1)
    return dev, mnt, srv


GREYLISTED = {"carl@example.com": "451 4.7.1 greylisted, try later"}


def done_replayed(srv, mnt, up, up2):
    """Restarted after a cut that lost the done-record of message 1 for
    up: the start appends it again from the log, so up2 (released) gets
    message 1 once, and up nothing again."""
    up2.stall_data = False
    up2.released.set()
    restart(srv)
    assert "; 1 done-records" in recovered_lines(srv)[-1], \
        recovered_lines(srv)
    wait_for(lambda: len(bodies(up2)) == 1 and not os.listdir(
        os.path.join(mnt, "spool", "env")), timeout=30,
        what="the second upstream's delivery")
    assert bodies(up) == [b"body 0\r\n", b"body 1\r\n"]
    assert bodies(up2) == [b"body 1\r\n"]


def bodies(up):
    """The message bodies the upstream took, in order."""
    with up.lock:
        return [data.split(b"\r\n\r\n", 1)[1] for _, _, data in up.stored]


def spool_files(mnt):
    """{sub/qid: size} of the envelopes and contents in the spool."""
    out = {}
    for sub in ("env", "msg"):
        d = os.path.join(mnt, "spool", sub)
        for name in os.listdir(d):
            out["%s/%s" % (sub, name)] = os.path.getsize(os.path.join(d,
                name))
    return out


def log_records(mnt, magic):
    """Records of a kind ("PSLS" spooled, "PSLD" removed, "PSLA" a line
    for done/) in the log, of this run or earlier ones."""
    with open(os.path.join(mnt, "spool", "log"), "rb") as f:
        return f.read().count(magic)


def gone_names(mnt):
    """The names in gone/ but the mark that removed messages without files
    link to."""
    return [n for n in os.listdir(os.path.join(mnt, "spool", "gone"))
        if n != ".removed"]


def relayed_and_recorded(srv, up, mnt, first, count):
    """Send count messages, wait until each is relayed, removed and its
    removal recorded in the log."""
    want = len(bodies(up)) + count
    removed = log_records(mnt, b"PSLD") + count
    send(srv, first, count)
    wait_for(lambda: len(bodies(up)) == want and not os.listdir(
        os.path.join(mnt, "spool", "env")) and log_records(mnt, b"PSLD")
        >= removed, timeout=20, what="%d messages relayed and their "
        "removals recorded" % count)


def test_spooled_messages_come_back_after_a_power_cut(ext4, make_postern,
        upstreams):
    # Relayed messages acknowledged after their record only: a power cut
    # with the checkpoint held back loses their spool files (commit=60:
    # no timed journal commit); the next start writes them again from the
    # log and the queue delivers each once.  Those relayed and removed
    # before the cut (their removal recorded) are not brought back.
    up = upstreams.scripted()
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = relay_server(make_postern, mnt, up.port)
    relayed_and_recorded(srv, up, mnt, 0, 1)	# records 1 and 2
    live = {}

    def sends():
        relayed_and_recorded(srv, up, mnt, 1, 3)
        up.stall_data = True	# the next ones stay queued
        send(srv, 4, 3)
        wait_for(lambda: up.stalled_now() > 0, timeout=20,
            what="a delivery held at the upstream")
        live.update(spool_files(mnt))
    copy = cut_while_unsynced(ext4, dev, mnt, srv, sends, records=2)
    # What the 250s waited for is in the log, not in the spool's files:
    # the messages in delivery have none yet (held in memory until a
    # checkpoint), or none that the cut kept.
    cut = spool_files(copy)
    assert not [k for k in cut if k.startswith("env/")], (live, cut)
    assert sorted(bodies(up)) == [b"body %d\r\n" % i for i in range(4)]
    up.stall_data = False
    up.released.set()
    restart(srv)
    assert "recovered 3 messages: 0 copies found, 0 written again, " \
        "0 spooled, 0 lost; 3 in the spool: 0 whole, 3 written again, " \
        "0 lost, 3 removed since; " in recovered_lines(srv)[-1], \
        recovered_lines(srv)
    wait_for(lambda: len(bodies(up)) >= 7 and not os.listdir(
        os.path.join(mnt, "spool", "env")), timeout=30,
        what="the recovered messages relayed")
    # Each once: the removed ones not again, the recovered ones whole.
    assert sorted(bodies(up)) == [b"body %d\r\n" % i for i in range(7)]
    for _, _, data in up.stored[4:]:
        assert data.startswith(b"Received: ")
    # A clean stop leaves nothing to replay.
    srv.stop()
    restart(srv)
    assert len(recovered_lines(srv)) == 1


def test_a_recipient_done_is_recorded_by_the_log(ext4, make_postern,
        upstreams):
    # A message for two upstreams: the first takes it, the second holds
    # its dot.  The first recipient's done-record is made durable by a
    # record in the log (no journal commit, no file: the message and the
    # record are held in memory); `postern queue list` has them written
    # out.  A power cut with the checkpoint held back loses those files,
    # and the next start writes them again from the log: the first
    # upstream gets the message once, the second once when it answers.
    up, up2 = upstreams.scripted(), upstreams.scripted()
    dev, mnt, srv = two_upstreams_started(ext4, make_postern, up, up2)
    live = {}

    def sends():
        time.sleep(1.5)		# the checkpoint waits in its syncfs
        up2.stall_data = True
        before = commits(dev)
        send(srv, 1, 1, ("bob@example.org", "carl@example.com"))
        wait_for(lambda: len(bodies(up)) == 2 and up2.stalled_now() > 0
            and log_records(mnt, b"PSLA") == 1, timeout=20,
            what="one upstream done, the other held, the done-record "
            "in the log")
        live["commits"] = commits(dev) - before
        live["held"] = [os.listdir(os.path.join(mnt, "spool", sub))
            for sub in ("env", "done")]
        live["qid"] = re.search(r"accepted .* qid=(\w+) size=\d+ rcpts=2",
            srv.log()).group(1)
        live["list"] = queue_cli(srv, "list").stdout
        with open(os.path.join(mnt, "spool", "done", live["qid"])) as f:
            live["done"] = f.read()
    copy = cut_while_unsynced(ext4, dev, mnt, srv, sends, records=2)
    assert live["commits"] == 0 and live["held"] == [[], []], live
    assert live["done"] == "done 0\n", live
    # Listed with the one recipient left: the record was read with it.
    assert live["qid"] in live["list"] and "carl@example.com" in \
        live["list"] and "bob@example.org" not in live["list"], live
    assert not os.path.exists(os.path.join(copy, "spool", "done",
        live["qid"]))
    done_replayed(srv, mnt, up, up2)
    assert os.listdir(os.path.join(mnt, "spool", "done")) == []


def test_a_done_record_of_a_message_with_files_survives_a_power_cut(
        ext4, make_postern, upstreams):
    # As above, but the message has its files (written and synced by a
    # checkpoint while the first upstream held its dot): the done-record
    # goes into done/<qid> unsynced, its record into the log.  A power cut
    # loses the file's line; the start appends it again.
    up, up2 = upstreams.scripted(), upstreams.scripted()
    dev, mnt, srv = two_upstreams_started(ext4, make_postern, up, up2)
    up.stall_data = up2.stall_data = True
    send(srv, 1, 1, ("bob@example.org", "carl@example.com"))	# record 3
    wait_for(lambda: up.stalled_now() > 0, timeout=20,
        what="the first delivery held")
    live = {}

    def sends():
        time.sleep(1.5)		# the checkpoint waits in its syncfs
        before = commits(dev)
        up.stall_data = False
        up.released.set()
        wait_for(lambda: len(bodies(up)) == 2 and up2.stalled_now() > 0
            and log_records(mnt, b"PSLA") == 1, timeout=20,
            what="the first upstream done, its record in the log, the "
            "second held")
        live["commits"] = commits(dev) - before
        live["done"] = {n: open(os.path.join(mnt, "spool", "done",
            n)).read() for n in os.listdir(os.path.join(mnt, "spool",
            "done"))}
    copy = cut_while_unsynced(ext4, dev, mnt, srv, sends, records=3)
    assert live["commits"] == 0 and list(live["done"].values()) == \
        ["done 0\n"], live
    qid = list(live["done"])[0]
    # The message's files were durable before; its record's line was not.
    assert os.path.exists(os.path.join(copy, "spool", "env", qid))
    done = os.path.join(copy, "spool", "done", qid)
    assert not os.path.exists(done) or open(done).read() == "", qid
    done_replayed(srv, mnt, up, up2)


def test_a_deferral_is_recorded_by_the_log(ext4, make_postern, upstreams):
    # The second upstream refuses the recipient for now: the deferral's
    # record (attempt count, next try, reason) is made durable by the log,
    # with no journal commit.  A power cut with the checkpoint held back
    # loses it from done/ (and the message's files); the start writes both
    # again, so its try at start is the second attempt, not the first.
    up = upstreams.scripted()
    up2 = upstreams.scripted(rcpt_replies=GREYLISTED)
    dev, mnt, srv = two_upstreams_started(ext4, make_postern, up, up2)
    live = {}

    def sends():
        time.sleep(1.5)		# the checkpoint waits in its syncfs
        before = commits(dev)
        send(srv, 1, 1, ("carl@example.com",))
        wait_for(lambda: log_records(mnt, b"PSLA") == 1, timeout=20,
            what="the deferral's record in the log")
        live["commits"] = commits(dev) - before
        live["qid"] = re.findall(r"accepted .* qid=(\w+) ", srv.log())[-1]
    copy = cut_while_unsynced(ext4, dev, mnt, srv, sends, records=2)
    assert live["commits"] == 0, live
    assert not os.path.exists(os.path.join(copy, "spool", "done",
        live["qid"]))
    assert len(up2.mails) == 1
    restart(srv)
    assert "; 1 done-records" in recovered_lines(srv)[-1], \
        recovered_lines(srv)
    wait_for(lambda: srv.log().split("=== start ===")[-1].count(
        " deferred ") == 1, timeout=20, what="the try at start")
    r = queue_cli(srv, "show", live["qid"])
    assert "2 attempts, next " in r.stdout and "greylisted" in r.stdout, r
    assert len(up2.mails) == 2, up2.mails


@pytest.mark.parametrize("cut", ["kept", "zeros"])
def test_a_record_the_file_kept_is_not_replayed_twice(ext4, make_postern,
        upstreams, cut):
    # The deferral's record written out into done/ (`postern queue list`
    # has the message's files written), then a kill -9: the page cache
    # keeps the file, and the start, finding the record's line there,
    # does not append it again.  "zeros": the file as a power cut can
    # leave an append within a block it had (its size committed, not its
    # data: zeros, and a later line's end after them); the start cuts
    # them off and appends the record again, and the message is not
    # taken for damaged.
    up = upstreams.scripted()
    up2 = upstreams.scripted(rcpt_replies=GREYLISTED)
    _, mnt, srv = two_upstreams_started(ext4, make_postern, up, up2)
    checkpointed(mnt, 2)
    st = strace(srv, "-e", "trace=syncfs",
        "-e", "inject=syncfs:delay_enter=30000000")
    try:
        time.sleep(1.5)		# the checkpoint waits in its syncfs
        send(srv, 1, 1, ("carl@example.com",))
        wait_for(lambda: log_records(mnt, b"PSLA") == 1, timeout=20,
            what="the deferral's record in the log")
        qid = re.findall(r"accepted .* qid=(\w+) ", srv.log())[-1]
        assert "carl@example.com" in queue_cli(srv, "list").stdout
        done = os.path.join(mnt, "spool", "done", qid)
        assert open(done).read().startswith("defer 0 1 ")
    finally:
        untrace(st)
    srv.kill9()
    if cut == "zeros":
        with open(done, "wb") as f:
            f.write(b"\0" * 40 + b"later)\n")
    restart(srv)
    assert "; 1 done-records" in recovered_lines(srv)[-1], \
        recovered_lines(srv)
    wait_for(lambda: srv.log().split("=== start ===")[-1].count(
        " deferred ") == 1, timeout=20, what="the try at start")
    assert "damaged" not in srv.log()
    with open(done) as f:
        lines = f.read().splitlines()
    assert [l.split()[:3] for l in lines] == [["defer", "0", "1"],
        ["defer", "0", "2"]], lines


def test_messages_held_in_memory_reach_every_kind(ext4, make_postern,
        upstreams, tmp_path):
    # A spooled message the log committed is held in memory, no file made:
    # the relay sends it from there; a pipe, which reads a file, has the
    # message written out first.  Each gets it intact, the spool ends
    # empty, and only the piped one ever had files.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    out = tmp_path / "piped"
    prog = tmp_path / "save.sh"
    prog.write_text("#!/bin/sh\ncat > \"$1\"\n")
    prog.chmod(0o755)
    text = no_log_size(make_config(
        actions='action out relay "smtp://127.0.0.1:%d"\n'
        'action prog pipe "%s" "%s"\n' % (up.port, prog, out),
        rules=["match to domain example.org action out",
               "match to domain example.com action prog"]))
    srv = make_postern(config=text.replace("spool {tmp}/spool",
        "spool %s/spool\nspool log-size 8M" % mnt))
    st = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=openat",
        "-o", srv.path("strace.made"), "-p", str(srv.proc.pid)],
        stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: traced_by(srv.proc.pid, st.pid), 10,
            what="strace to attach to every thread")
        send(srv, 0, 1, ("bob@example.org",))
        send(srv, 1, 1, ("carl@example.com",))
        wait_for(lambda: bodies(up) == [b"body 0\r\n"] and out.exists() and
            out.read_bytes().endswith(b"\n\nbody 1\n") and not any(
            os.listdir(os.path.join(mnt, "spool", sub)) for sub in
            ("env", "msg", "done")), timeout=20, what="both delivered")
    finally:
        st.terminate()
        st.wait(10)
    with open(srv.path("strace.made")) as f:
        made = [l for l in f if "O_CREAT" in l and re.search(
            r'"\w+(\.tmp)?", O_', l)]
    # msg/<qid> and env/<qid>.tmp of the piped message alone.
    assert len(made) == 2, "".join(made)


def test_queue_list_shows_a_message_held_in_memory(ext4, make_postern,
        upstreams):
    # A message in its first delivery has no spool file (held in memory
    # until a checkpoint, here held back): `postern queue list` and `show`
    # have the server write it out first, and see it.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, up.port)
    relayed_and_recorded(srv, up, mnt, 0, 1)
    checkpointed(mnt, 2)
    st = strace(srv, "-e", "trace=syncfs",
        "-e", "inject=syncfs:delay_enter=30000000")
    try:
        time.sleep(1.5)		# the checkpoint waits in its syncfs
        up.stall_data = True
        with srv.session() as c:
            c.hello()
            qid = queue_id(send_message(c, "a@example.net",
                ["bob@example.org"], BODY % (1, 1)))
        wait_for(lambda: up.stalled_now() > 0, timeout=20,
            what="the delivery held at the upstream")
        assert not os.path.exists(os.path.join(mnt, "spool", "env", qid))
        r = queue_cli(srv, "list")
        assert r.returncode == 0 and qid in r.stdout, r
        r = queue_cli(srv, "show", qid)
        assert r.returncode == 0 and "bob@example.org" in r.stdout, r
    finally:
        untrace(st)
    up.stall_data = False
    up.released.set()
    wait_for(lambda: len(bodies(up)) == 2 and not os.listdir(os.path.join(
        mnt, "spool", "env")), timeout=20, what="the message relayed")


def test_a_full_spool_refuses_what_it_would_hold_in_memory(ext4,
        make_postern, upstreams):
    # The spool's file system full: a message the log could commit with
    # no file (its files written later) is refused at its end with 452,
    # as without the log, not acknowledged with no room for its files.
    # With room again, found by the next checkpoint, mail flows.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, up.port)
    relayed_and_recorded(srv, up, mnt, 0, 1)
    filler = fill(os.path.join(mnt, "filler"))
    time.sleep(2.5)		# a checkpoint (each second) finds no room
    with srv.session() as c:
        c.hello()
        r = attempt(c, b"Subject: full\r\n\r\nbody 1\r\n")
        assert (r.code, r.esc) == FULL, "%r\n%s" % (r, c.transcript())
    os.unlink(filler)
    time.sleep(2.5)		# and one finds room again
    relayed_and_recorded(srv, up, mnt, 2, 1)
    assert bodies(up) == [b"body 0\r\n", b"body 2\r\n"]
    assert srv.alive()


def test_spooled_message_needs_no_journal_commit(ext4, make_postern,
        upstreams):
    # Twenty messages spooled and held queued (the upstream does not
    # answer their dot): the log's fdatasync commits nothing, so only the
    # checkpoints (one a second) commit; each message took one commit
    # before (the envelope's fsync).
    up = upstreams.scripted()
    dev, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, up.port)
    relayed_and_recorded(srv, up, mnt, 0, 1)
    up.stall_data = True
    before, t0 = commits(dev), time.monotonic()
    send(srv, 1, 20)
    took, secs = commits(dev) - before, time.monotonic() - t0
    assert took <= 2 + secs, "%d journal commits for 20 messages in " \
        "%.1fs" % (took, secs)
    assert log_records(mnt, b"PSLS") == 21
    up.stall_data = False
    up.released.set()
    wait_for(lambda: len(bodies(up)) == 21, timeout=30,
        what="the messages relayed")


def test_spooled_messages_of_many_sessions_at_once(ext4, make_postern,
        upstreams):
    # Sixteen sessions commit at once: their records share the log's
    # writes, and the thread that writes a batch finishes the commits of
    # the others in it.  Each message is acknowledged, recorded, relayed
    # once and removed.
    up = upstreams.scripted()
    _dev, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, up.port)
    failed = []

    def session(k):
        try:
            send(srv, 10 * k, 10)
        except Exception as e:		# reported below, in the test
            failed.append(repr(e))
    threads = [threading.Thread(target=session, args=(k,))
        for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failed and not any(t.is_alive() for t in threads), failed
    wait_for(lambda: len(bodies(up)) >= 160 and not os.listdir(
        os.path.join(mnt, "spool", "env")), timeout=60,
        what="160 messages relayed")
    assert sorted(bodies(up)) == sorted(b"body %d\r\n" % i
        for i in range(160))
    assert log_records(mnt, b"PSLS") == 160


def test_a_failed_log_write_fsyncs_the_spooled_message(ext4, make_postern,
        upstreams):
    # The log's fdatasync fails under a relayed message's record: its
    # content and envelope are synced before its 250 instead (content
    # settled, envelope settled, named, fsynced), it is relayed once, and
    # the log takes nothing more.  The content is written under its own
    # name in msg/: no rename of it.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, up.port)
    relayed_and_recorded(srv, up, mnt, 0, 1)
    checkpointed(mnt, 2)
    out = srv.path("strace.eio")
    st = strace(srv, "-e", "trace=fsync,fdatasync,sync_file_range,"
        "renameat", "-e", "inject=fdatasync:error=EIO", "-o", out)
    try:
        send(srv, 1, 1)
    finally:
        untrace(st)
    # The committing thread: the failed record, then the fallback.
    mine = renaming_thread_calls(out, "fdatasync")
    assert mine[:5] == ["fdatasync", "sync_file_range",
        "sync_file_range", "renameat", "fsync"], mine
    assert "acknowledging with fsync from now on" in srv.log()
    wait_for(lambda: len(bodies(up)) == 2 and not os.listdir(
        os.path.join(mnt, "spool", "env")), timeout=20,
        what="the message relayed")
    assert bodies(up) == [b"body 0\r\n", b"body 1\r\n"]


def test_a_spooled_message_too_large_for_the_log_is_fsynced(ext4,
        make_postern):
    # A log of 64k takes records up to 15k: a 20k message is committed
    # as without the log (the content's and the envelope's data written
    # out, the envelope renamed and fsynced: one journal commit) and has
    # no record.
    _, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, 9, log_size="64k")
    send(srv, 0, 1)
    assert log_records(mnt, b"PSLS") == 1

    out = srv.path("strace.big")
    st = strace(srv, "-e", "trace=fsync,fdatasync,sync_file_range,renameat",
        "-o", out)
    try:
        with srv.session() as c:
            c.hello()
            send_message(c, "a@example.net", ["bob@example.org"],
                "Subject: big\r\n\r\n" + ("y" * 78 + "\r\n") * 256)
    finally:
        untrace(st)
    assert renaming_thread_calls(out)[:4] == ["sync_file_range",
        "sync_file_range", "renameat", "fsync"], out
    assert log_records(mnt, b"PSLS") == 1


def filler(i, lines):
    """A message of about 80 * lines bytes, its lines naming it (i)."""
    return "Subject: filler %d\r\n\r\n" % i + ("%04d" % i + "y" * 74 +
        "\r\n") * lines


def queue_held_cut(ext4, dev, mnt, srv, up, sends):
    """cut_while_unsynced with the upstream holding every dot: sends()
    queues messages; once they are committed (the 250s) and one is held
    at the upstream, the power is cut.  Returns the image's mount point
    and {sub/qid: size} of the spool's files before the cut.  Once the
    upstream saw the held sessions go, it takes what comes next."""
    live = {}

    def queued():
        up.stall_data = True
        sends()
        wait_for(lambda: up.stalled_now() > 0, timeout=20,
            what="a delivery held at the upstream")
        live.update(spool_files(mnt))
    copy = cut_while_unsynced(ext4, dev, mnt, srv, queued, records=2)
    # Released only once every held session is gone: none is taken.
    wait_for(lambda: up.stalled_now() == 0, timeout=20,
        what="the upstream to see the held sessions go")
    up.stall_data = False
    up.released.set()
    return copy, live


def test_a_spooled_message_too_large_for_the_log_survives_a_power_cut(
        ext4, make_postern, upstreams):
    # A 20k message, over a quarter of a 64k log, queued (the upstream
    # holds its dot) while the checkpoint is held back: it has no record,
    # and its spool files were fsynced before its 250, so a power cut
    # right after leaves them whole on the disk (commit=60: no timed
    # journal commit).  The next start has nothing to replay, and the
    # queue relays it once, intact.
    up = upstreams.scripted()
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = relay_server(make_postern, mnt, up.port, log_size="64k")
    relayed_and_recorded(srv, up, mnt, 0, 1)	# records 1 and 2
    big, qid = filler(1, 256), []

    def sends():
        with srv.session() as c:
            c.hello()
            qid.append(queue_id(send_message(c, "a@example.net",
                ["bob@example.org"], big)))
    copy, live = queue_held_cut(ext4, dev, mnt, srv, up, sends)
    assert sorted(live) == ["env/" + qid[0], "msg/" + qid[0]], live
    # Over the largest record a 64k log takes ((64k - 4k) / 4).
    assert live["msg/" + qid[0]] > (65536 - 4096) // 4
    assert spool_files(copy) == live
    with open(os.path.join(copy, "spool", "log"), "rb") as f:
        assert qid[0].encode() not in f.read()
    assert log_records(copy, b"PSLS") == 1	# the first message's
    restart(srv)
    assert not recovered_lines(srv)
    wait_for(lambda: len(bodies(up)) == 2 and not os.listdir(
        os.path.join(mnt, "spool", "env")), timeout=30,
        what="the large message relayed")
    assert bodies(up) == [b"body 0\r\n", big.split("\r\n\r\n", 1)[1]
        .encode()]
    assert up.stored[1][0] == "a@example.net"
    assert up.stored[1][1] == ["bob@example.org"]


def test_a_full_log_fsyncs_the_spooled_messages_it_cannot_take(ext4,
        make_postern, upstreams):
    # Checkpoints held back and the upstream holding every dot: a 64k log
    # fills after a few 10k messages, and the next ones are committed
    # with their fsyncs before the 250.  After a power cut right after
    # the last 250, each message is either recorded in the log (the first
    # ones) or whole on the disk; the next start writes again from the
    # log what the disk lost, and the queue relays every message once,
    # intact.
    up = upstreams.scripted()
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = relay_server(make_postern, mnt, up.port, log_size="64k")
    relayed_and_recorded(srv, up, mnt, 0, 1)	# records 1 and 2
    texts = {i: filler(i, 120) for i in range(1, 13)}
    qids = []

    def sends():
        with srv.session() as c:
            c.hello()
            for i, text in texts.items():
                qids.append(queue_id(send_message(c, "a@example.net",
                    ["bob@example.org"], text)))
    copy, live = queue_held_cut(ext4, dev, mnt, srv, up, sends)
    with open(os.path.join(copy, "spool", "log"), "rb") as f:
        log = f.read()
    logged = [q for q in qids if q.encode() in log]
    assert logged == qids[:len(logged)], (qids, logged)
    assert 3 <= len(logged) <= 8, logged
    # Those the log took may have no files yet (held in memory until a
    # checkpoint writes them); the others were written before their 250.
    for q in qids[len(logged):]:
        assert "env/" + q in live and "msg/" + q in live, (q, live)
    assert log_records(copy, b"PSLS") == 1 + len(logged)
    cut = spool_files(copy)
    for q in qids[len(logged):]:
        for k in ("env/" + q, "msg/" + q):
            assert cut.get(k) == live[k], (k, live, cut)
    restart(srv)
    assert "; %d in the spool: " % len(logged) in recovered_lines(srv)[-1]
    assert " 0 lost, 0 removed since;" in recovered_lines(srv)[-1], \
        recovered_lines(srv)
    wait_for(lambda: len(bodies(up)) >= 13 and not os.listdir(
        os.path.join(mnt, "spool", "env")), timeout=60,
        what="the twelve messages relayed")
    assert sorted(bodies(up)) == sorted([b"body 0\r\n"] + [t.split(
        "\r\n\r\n", 1)[1].encode() for t in texts.values()])


def test_a_recorded_removal_is_finished_after_a_power_cut(ext4,
        make_postern, upstreams):
    # Two messages queued (the upstream holds their dot) until the
    # checkpoint has synced their files; then, the checkpoint held back,
    # they are relayed and removed: their removal is made durable by the
    # log's records alone, so the image still has their envelopes.  The
    # next start unlinks them: neither is delivered again.
    up = upstreams.scripted()
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = relay_server(make_postern, mnt, up.port)
    relayed_and_recorded(srv, up, mnt, 0, 1)	# records 1 and 2
    up.stall_data = True
    send(srv, 1, 2)				# records 3 and 4
    wait_for(lambda: up.stalled_now() > 0, timeout=20,
        what="a delivery held at the upstream")
    # Held in memory until the checkpoint writes their files.
    queued = wait_for(lambda: sorted(os.listdir(os.path.join(mnt, "spool",
        "env"))) if len(os.listdir(os.path.join(mnt, "spool", "env"))) == 2
        else None, timeout=10, what="the checkpoint to write both")

    def sends():
        up.stall_data = False
        up.released.set()
        wait_for(lambda: len(bodies(up)) == 3 and not os.listdir(
            os.path.join(mnt, "spool", "env")) and
            log_records(mnt, b"PSLD") >= 3, timeout=20,
            what="both relayed, removed and recorded")
    copy = cut_while_unsynced(ext4, dev, mnt, srv, sends, records=4)
    assert sorted(os.listdir(os.path.join(copy, "spool", "env"))) == queued
    restart(srv)
    assert "0 removed since; 2 removals finished" in \
        recovered_lines(srv)[-1], recovered_lines(srv)
    assert os.listdir(os.path.join(mnt, "spool", "env")) == []
    assert os.listdir(os.path.join(mnt, "spool", "msg")) == []
    # The queue had nothing to deliver: the upstream got each once.
    srv.stop()
    assert sorted(bodies(up)) == [b"body %d\r\n" % i for i in range(3)]


# ----- a kill, not a power cut: the page cache keeps the removals -----------

def log_threads(srv, up, mnt):
    """(the spool's syncer, the log's checkpoint thread): the threads seen
    writing a removal record into the log and calling syncfs while the
    first message is relayed."""
    out = srv.path("strace.threads")
    st = subprocess.Popen(["strace", "-f", "-qq", "-o", out, "-e",
        "trace=pwrite64,syncfs", "-p", str(srv.proc.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def seen():
        with open(out) as f:
            lines = f.read().splitlines()
        syncer = [l.split()[0] for l in lines if "pwrite64(" in l and
            '"PSLD' in l]
        checkpoint = [l.split()[0] for l in lines if "syncfs(" in l]
        return syncer and checkpoint and (syncer[0], checkpoint[0])
    try:
        wait_for(lambda: traced_by(srv.proc.pid, st.pid), 10,
            what="strace to attach to every thread")
        relayed_and_recorded(srv, up, mnt, 0, 1)
        return wait_for(seen, 10, what="a removal record and a checkpoint")
    finally:
        untrace(st)


def held(srv, tids):
    """strace holding the threads tids a minute in each pwrite64 and
    syncfs: no removal record is written, the checkpoint does not move."""
    st = subprocess.Popen(["strace", "-qq", "-e", "trace=pwrite64,syncfs",
        "-e", "inject=pwrite64,syncfs:delay_enter=60000000", *sum((["-p",
        t] for t in tids), [])], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    wait_for(lambda: all(proc_status(srv.proc.pid, t)["TracerPid"] ==
        str(st.pid) for t in tids), 10, what="strace to attach")
    return st


def killed_while_held(srv, st, removed):
    """Once removed() holds, kill -9 srv (its threads held by strace st,
    which lets go after the kill), then start it again."""
    try:
        wait_for(removed, timeout=20, what="the removal")
        os.kill(srv.proc.pid, signal.SIGKILL)
    finally:
        untrace(st)
    srv.kill9()
    restart(srv)


def test_a_kill_after_a_removal_delivers_nothing_again(ext4, make_postern,
        upstreams):
    # A relayed message delivered and removed, the process killed before
    # the removal's record is written (and before a checkpoint): the
    # unlinks are in the page cache, the message's record after the
    # checkpoint.  The start must not take the missing files for a power
    # cut's loss: nothing is written again, nothing delivered twice.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, up.port)
    st = held(srv, log_threads(srv, up, mnt))
    env = os.path.join(mnt, "spool", "env")
    send(srv, 1, 1)
    killed_while_held(srv, st, lambda: len(bodies(up)) == 2 and
        not os.listdir(env))
    assert log_records(mnt, b"PSLD") == 1	# message 0's alone
    wait_for(lambda: not os.listdir(env), timeout=20, what="an empty queue")
    assert bodies(up) == [b"body 0\r\n", b"body 1\r\n"]
    assert " 0 written again, 0 lost, 1 removed since;" in \
        recovered_lines(srv)[-1], recovered_lines(srv)
    assert gone_names(mnt) == []


def test_a_kill_after_queue_delete_brings_nothing_back(ext4, make_postern,
        upstreams):
    # `postern queue delete` answers once the message is removed; a kill
    # right after it (the removal's record not written) does not bring
    # the message back at the next start.
    up = upstreams.scripted(rcpt_replies={"carol@example.org":
        "451 4.3.0 later"})
    _, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, up.port, extra=(
        "queue retry-min 1h", "queue retry-max 2h"))
    st = held(srv, log_threads(srv, up, mnt))
    with srv.session() as c:
        c.hello()
        qid = queue_id(send_message(c, "a@example.net",
            ["carol@example.org"], BODY % (1, 1)))
    env = os.path.join(mnt, "spool", "env", qid)
    wait_for(lambda: "deferred" in srv.log(), timeout=20, what="a deferral")
    r = queue_cli(srv, "delete", qid)
    assert (r.returncode, r.stdout) == (0, "%s: deleted\n" % qid), r
    killed_while_held(srv, st, lambda: not os.path.exists(env))
    assert " 0 written again, 0 lost, 1 removed since;" in \
        recovered_lines(srv)[-1], recovered_lines(srv)
    assert not os.path.exists(env)
    assert "deferred" not in srv.log().split("=== start ===")[-1]


def test_a_removal_on_a_full_disk_unlinks_the_envelope(ext4, make_postern,
        upstreams):
    # The disk full and gone/ too (no room for one more name, and none to
    # grow): the envelope of the message delivered is unlinked instead of
    # moved there, and the message is removed all the same, sent once.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_server(make_postern, mnt, up.port)
    gone = os.path.join(mnt, "spool", "gone")
    env = os.path.join(mnt, "spool", "env")
    up.stall_data = True
    send(srv, 0, 1)
    wait_for(lambda: up.stalled_now() == 1, timeout=20,
        what="the reply to the dot held")
    # Its envelope written (by the checkpoint), not held in memory.
    wait_for(lambda: os.listdir(env), timeout=10, what="its envelope")
    fill(os.path.join(mnt, "filler"))
    names = 0
    while True:
        try:
            open(os.path.join(gone, "x%06d" % names), "w").close()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            break
        names += 1
    up.released.set()
    wait_for(lambda: not os.listdir(env), timeout=20,
        what="the message removed")
    assert bodies(up) == [b"body 0\r\n"]
    assert len(os.listdir(gone)) == names
    assert "cannot" not in srv.log()
