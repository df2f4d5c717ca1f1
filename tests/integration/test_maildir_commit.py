"""The Maildir write order follows the file system (deliver/maildir.c,
spool/log.c).

On ext4 with a journal a copy costs no journal commit of its own: it is
written and renamed into new/ without a sync, and one record naming it in
the spool log, a preallocated file, is made durable by fdatasync (a data
write and a cache flush) before the 250; a checkpoint each second syncs
the file system.  Without the log (`spool log-size off`) a copy costs one
journal commit: its data is written out and waited for
(sync_file_range), it is renamed into new/, then the file is fsynced.  On
ext4 without a journal nothing orders the rename after the file's size, so
the classic order is kept: fsync, rename, fsync new/.  The spool does the
same with its two files (spool/spool.c).  A copy of the disk image taken
right after the 250, as a power cut would leave it, shows the message
whole (the log replayed at the next start: test_spool_log.py).  Several
recipients' copies are links of one file, recorded together (without the
log: made durable by the same one commit; without a journal: the file's
fsync then each new/).  All run on real ext4 loop mounts, so these tests
need root."""

import os
import re
import resource
import shutil
import socket
import subprocess
import time

import pytest

from conftest import (binary, machine_lacks, make_config, needs, read_bytes,
    send_message, traced_by, wait_for)

pytestmark = needs(os.geteuid() == 0,
    "root, which loop mounts need (run the suite as root to test this)")

BODY = "Subject: commit order %d\r\n\r\nbody %d\r\n"
TRACED = "fsync,fdatasync,sync_file_range,rename,renameat,renameat2"


def sh(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True,
        timeout=60, check=True).stdout.strip()


@pytest.fixture
def ext4(tmp_path):
    """ext4(journal, opts, image, at, size) -> (device name, mount point) of
    a fresh ext4 of size (64 MiB), or of the file system in image (its
    journal replayed); mounted at the folder at if given."""
    mounts = []

    def make(journal=True, opts=None, image=None, at=None, size="64M"):
        n = len(mounts)
        img, mnt = tmp_path / ("fs%d.img" % n), tmp_path / ("mnt%d" % n)
        if at is not None:		# in place of a file system unmounted
            mnt = at
        else:
            mnt.mkdir()
        if image is not None:
            shutil.copyfile(image, img)
        else:
            sh("truncate", "-s", size, str(img))
            sh("mkfs.ext4", "-q", "-F", *([] if journal else
                ["-O", "^has_journal"]), str(img))
        try:
            dev = sh("losetup", "-f", "--show", str(img))
        except subprocess.CalledProcessError as e:
            machine_lacks("a loop device: %s" % e.stderr.strip())
        mounts.append((dev, mnt))
        sh("mount", *(["-o", opts] if opts else []), dev, str(mnt))
        return os.path.basename(dev), str(mnt)

    yield make
    # Tests list this fixture before make_postern: servers stop first.
    for dev, mnt in reversed(mounts):
        if subprocess.run(["umount", str(mnt)], timeout=60).returncode:
            subprocess.run(["umount", "-l", str(mnt)], timeout=60)
        subprocess.run(["losetup", "-d", dev], timeout=60)


@pytest.fixture(params=["folder", pytest.param("spool-log", marks=needs(
    os.geteuid() == 0, "root, which loop mounts need"))])
def server_dir(request, ext4):
    """Where a test's server keeps its spool and Maildirs, once for each
    way the spool commits: None, its temporary folder (the classic order
    where that file system keeps none: no spool log), or a fresh ext4 with
    a journal, where the spool log is on (room for the crash trials'
    mail).  List it before make_postern."""
    if request.param == "folder":
        return None
    return ext4(journal=True, size="1G")[1]


def no_log_size(text):
    """The configuration text without its spool log-size (the default)."""
    return re.sub(r"spool log-size \S+\n", "", text)


def server_on(make_postern, mnt, log=True, spool=None, start=True):
    """A server delivering into mnt; its spool at spool (else its own);
    log=False: `spool log-size off`."""
    text = no_log_size(make_config(actions=
        'action local maildir "%s/%%{rcpt.user}/Maildir"\n' % mnt))
    if spool is not None:		# on a small file system: a small log
        text = text.replace("spool {tmp}/spool", "spool %s\nspool "
            "log-size 8M" % spool)
    if not log:
        text = text.replace("\nspool ", "\nspool log-size off\nspool ", 1)
    return make_postern(config=text, start=start)


def send(srv, first, count, rcpts=("bob@example.org",)):
    with srv.session() as c:
        c.hello()
        for i in range(first, first + count):
            send_message(c, "a@example.net", list(rcpts), BODY % (i, i))


def commits(dev):
    with open("/proc/fs/jbd2/%s-8/info" % dev) as f:
        return int(f.readline().split()[0])


def delivered(mnt, user="bob"):
    d = os.path.join(mnt, user, "Maildir", "new")
    return sorted(read_bytes(os.path.join(d, n)).split(b"\n\n", 1)[1]
        for n in os.listdir(d))


def test_journaled_ext4_no_commit_per_copy(ext4, make_postern):
    # The spool log's fdatasync commits nothing: only the checkpoints
    # (one a second) do.
    dev, mnt = ext4(journal=True)
    srv = server_on(make_postern, mnt, spool=mnt + "/spool")
    send(srv, 0, 1)			# makes the Maildir's folders
    before, t0 = commits(dev), time.monotonic()
    send(srv, 1, 20)
    took, secs = commits(dev) - before, time.monotonic() - t0
    assert took <= 2 + secs, "%d journal commits for 20 copies in %.1fs" % (
        took, secs)
    assert delivered(mnt) == sorted(b"body %d\n" % i for i in range(21))


def test_copies_published_with_no_maildir_kept(ext4, make_postern):
    # With no descriptor to spare no Maildir stays open between copies:
    # each is opened afresh to be written into tmp/, and again to be named
    # in new/ once recorded in the log, its links with it.
    dev, mnt = ext4(journal=True)
    srv = server_on(make_postern, mnt, spool=mnt + "/spool", start=False)
    r = subprocess.run([binary(), "check", "-c", srv.conf], text=True,
        capture_output=True, timeout=20, preexec_fn=lambda:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
    need = re.search(r"needs (\d+) descriptors", r.stdout + r.stderr)
    assert need, r
    n = int(need.group(1))		# all taken: nothing left to keep
    srv.argv_prefix = ["prlimit", "--nofile=%d:%d" % (n, n), "--"]
    srv.start()
    users = ("bob", "ann", "cid")
    send(srv, 0, 4)
    send(srv, 4, 4, rcpts=["%s@example.org" % u for u in users])
    assert delivered(mnt) == sorted(b"body %d\n" % i for i in range(8))
    for u in users[1:]:
        assert delivered(mnt, u) == sorted(b"body %d\n" % i
            for i in range(4, 8))
    for u in users:
        assert os.listdir(os.path.join(mnt, u, "Maildir", "tmp")) == []
    held = []
    for f in os.listdir("/proc/%d/fd" % srv.proc.pid):
        try:	# one may close meanwhile (the last session's socket)
            held.append(os.readlink("/proc/%d/fd/%s" % (srv.proc.pid, f)))
        except FileNotFoundError:
            pass
    # A kept Maildir holds its tmp/ (the log holds a new/ for syncfs).
    assert not [h for h in held if h.endswith("/Maildir/tmp")], held
    assert " deferred " not in srv.log() and "-error " not in srv.log()


def test_journaled_ext4_one_commit_per_copy_without_log(ext4, make_postern):
    dev, mnt = ext4(journal=True)
    srv = server_on(make_postern, mnt, log=False)
    send(srv, 0, 1)			# makes the Maildir's folders
    before = commits(dev)
    send(srv, 1, 20)
    # The classic order needs two commits per copy, one after the other.
    took = commits(dev) - before
    assert 15 <= took <= 26, "%d journal commits for 20 copies" % took
    assert delivered(mnt) == sorted(b"body %d\n" % i for i in range(21))


def traced(srv, first, rcpts=("bob@example.org",), calls=TRACED):
    """[(thread, call)] of postern's traced calls while one message arrives."""
    out = srv.path("strace.%d" % first)
    st = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=" + calls,
        "-o", out, "-p", str(srv.proc.pid)], stderr=subprocess.PIPE)
    try:
        # strace has attached once it traces every thread of postern.
        wait_for(lambda: traced_by(srv.proc.pid, st.pid), 10,
            what="strace to attach to every thread")
        send(srv, first, 1, rcpts)
    finally:
        st.terminate()
        st.wait(10)
    with open(out) as f:
        return [(tid, rest.split("(", 1)[0]) for tid, rest in
            (l.split(None, 1) for l in f if "(" in l)]


def traced_order(srv, first, rcpts=("bob@example.org",), calls=TRACED):
    return [call for _, call in traced(srv, first, rcpts, calls)]


def committing_thread_calls(srv, first, n, by="renameat"):
    """The first n traced calls of the thread that made the call by first:
    the one that committed the message (the queue's own fsyncs come from
    another)."""
    calls = traced(srv, first)
    tid = next((t for t, call in calls if call == by), None)
    return [call for t, call in calls if t == tid][:n]


def test_write_order_follows_the_file_system(ext4, make_postern):
    _, journaled = ext4(journal=True)
    _, plain = ext4(journal=False)
    srv = server_on(make_postern, journaled)
    send(srv, 0, 1)
    # No sync of the copy: the log's record is what the 250 waits for,
    # and only once it is on the device is the copy named in new/.
    assert traced_order(srv, 1) == ["fdatasync", "renameat"]
    srv.stop()
    srv = server_on(make_postern, journaled, log=False)
    send(srv, 0, 1)
    assert traced_order(srv, 1) == ["sync_file_range", "renameat", "fsync"]
    srv.stop()
    srv = server_on(make_postern, plain)
    send(srv, 0, 1)
    assert traced_order(srv, 1) == ["fsync", "renameat", "fsync"]


TEN = ["u%d@example.org" % i for i in range(10)]


def test_ten_recipients_no_commit_per_message(ext4, make_postern):
    # The copies are links of one file, in one record of the log.
    dev, mnt = ext4(journal=True)
    srv = server_on(make_postern, mnt, spool=mnt + "/spool")
    send(srv, 0, 1, TEN)		# makes the Maildirs' folders
    before, t0 = commits(dev), time.monotonic()
    send(srv, 1, 20, TEN)
    took, secs = commits(dev) - before, time.monotonic() - t0
    assert took <= 2 + secs, "%d journal commits for 20 messages in " \
        "%.1fs" % (took, secs)
    for i in range(10):
        assert delivered(mnt, "u%d" % i) == sorted(b"body %d\n" % j
            for j in range(21))


def test_ten_recipients_one_commit_per_message_without_log(ext4,
        make_postern):
    # The copies are links of one file: one commit for all ten.
    dev, mnt = ext4(journal=True)
    srv = server_on(make_postern, mnt, log=False)
    send(srv, 0, 1, TEN)		# makes the Maildirs' folders
    before = commits(dev)
    send(srv, 1, 20, TEN)
    took = commits(dev) - before
    assert took <= 26, "%d journal commits for 20 messages" % took
    for i in range(10):
        assert delivered(mnt, "u%d" % i) == sorted(b"body %d\n" % j
            for j in range(21))


def test_ten_recipients_write_order_follows_the_file_system(ext4,
        make_postern):
    calls = TRACED + ",link,linkat"
    _, journaled = ext4(journal=True)
    _, plain = ext4(journal=False)
    srv = server_on(make_postern, journaled)
    send(srv, 0, 1, TEN)
    assert traced_order(srv, 1, TEN, calls) == ["fdatasync", "renameat"] + \
        ["linkat"] * 9
    srv.stop()
    srv = server_on(make_postern, journaled, log=False)
    send(srv, 0, 1, TEN)
    assert traced_order(srv, 1, TEN, calls) == ["sync_file_range",
        "renameat"] + ["linkat"] * 9 + ["fsync"]
    srv.stop()
    # Without the journal's order: the file first, then each new/.
    srv = server_on(make_postern, plain)
    send(srv, 0, 1, TEN)
    assert traced_order(srv, 1, TEN, calls) == ["fsync", "renameat"] + \
        ["linkat", "fsync"] * 9 + ["fsync"]


def test_spool_commit_order_follows_the_file_system(ext4, make_postern):
    # A relay to a closed port: every message is spooled, then deferred.
    # The content is written under its name in msg/ (no rename of it).
    # On journaled ext4 with the log: the record (envelope and content)
    # made durable, and no file written: the message is kept in memory
    # until the deferral's record (or the checkpoint) writes its files.
    # Without the log: each file's data written out before the envelope's
    # rename, then one fsync (one journal commit); without the journal's
    # order, an fsync of each folder too.
    relay = 'action out relay "smtp://127.0.0.1:9"\n'
    for journal, log, want in (
            (True, "8M", ["fdatasync"]),
            (True, "off", ["sync_file_range", "sync_file_range", "renameat",
                "fsync"]),
            (False, "8M", ["fdatasync", "fdatasync", "renameat", "fsync",
                "fsync"])):
        _, mnt = ext4(journal=journal)
        text = no_log_size(make_config(actions=relay,
            rules=["match to domain example.org action out"]))
        srv = make_postern(config=text.replace("spool {tmp}/spool",
            "spool %s/spool\nspool log-size %s" % (mnt, log)))
        send(srv, 0, 1)
        by_log = journal and log != "off"
        got = committing_thread_calls(srv, 1, len(want) + 1,
            "fdatasync" if by_log else "renameat")
        assert got[:len(want)] == want, "journal=%s log=%s" % (journal, log)
        if by_log:
            # Nothing more before the 250: no file named or synced.
            assert "fsync" not in got and "renameat" not in got, got
            # The deferral's record comes with the files.
            wait_for(lambda: os.listdir(os.path.join(mnt, "spool",
                "env")), 10, what="the deferred message's envelope")
        srv.stop()


def crashed(ext4, dev):
    """Mount a copy of dev's image as it is on the device now, as a power
    cut would leave it: what the kernel has not written is not in it."""
    with open("/sys/block/%s/loop/backing_file" % dev) as f:
        image = f.read().strip()
    return ext4(image=image)[1]


def test_acknowledged_copy_survives_a_power_cut_without_log(ext4, make_postern):
    # commit=60: no timed journal commit lands while the image is copied,
    # so only the commits postern waited for are in the copy.
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = server_on(make_postern, mnt, log=False)
    send(srv, 0, 3)
    assert delivered(crashed(ext4, dev)) == [b"body 0\n", b"body 1\n",
        b"body 2\n"]


def test_acknowledged_links_survive_a_power_cut_without_log(ext4, make_postern):
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = server_on(make_postern, mnt, log=False)
    send(srv, 0, 2, TEN)
    copy = crashed(ext4, dev)
    for i in range(10):
        assert delivered(copy, "u%d" % i) == [b"body 0\n", b"body 1\n"]


def test_spooled_message_survives_a_power_cut_without_log(ext4,
        make_postern):
    # The relay target accepts and then says nothing: the queue waits on
    # it and writes nothing more while the image is copied.  With the log
    # the files may be missing from the image: test_spool_log.py.
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    dev, mnt = ext4(journal=True, opts="commit=60")
    text = no_log_size(make_config(actions='action out relay '
        '"smtp://127.0.0.1:%d"\n' % mute.getsockname()[1],
        rules=["match to domain example.org action out"]))
    srv = make_postern(config=text.replace("spool {tmp}/spool",
        "spool %s/spool\nspool log-size off" % mnt))
    try:
        send(srv, 0, 1)
        copy = crashed(ext4, dev)
    finally:
        mute.close()
    envs = os.listdir(os.path.join(copy, "spool", "env"))
    assert len(envs) == 1 and not envs[0].endswith(".tmp"), envs
    content = read_bytes(os.path.join(copy, "spool", "msg", envs[0]))
    assert content.endswith(b"\n\nbody 0\n"), content[-40:]
