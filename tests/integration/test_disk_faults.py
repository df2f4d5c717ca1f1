"""
Disk faults on purpose: a spool and Maildirs on a small tmpfs that fills up
in the middle of a message, a Maildir full while the spool is not, a full
transcript folder, and fsync failing with EIO (a device-mapper error target
where the kernel has device-mapper, and strace's fault injection, which
makes the calls themselves fail, everywhere).  What must hold: never a 250
for a message that is not durable, nothing partial left behind, the
session and the server go on, and mail flows again once the fault is gone.
"""

import errno
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import (free_port, log_events, machine_lacks, make_config,
    needs, read_bytes, send_message, spool_empty, traced_by, wait_for)
from test_metrics import scrape
from test_relay import queue_cli, upstreams  # noqa: F401 (a fixture)

pytestmark = needs(os.geteuid() == 0,
    "root, which mounting file systems needs (run the suite as root)")

FULL = (452, "4.3.1")


def sh(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True,
        timeout=60, check=True).stdout.strip()


def umount(mnt):
    if subprocess.run(["umount", str(mnt)], capture_output=True,
            timeout=60).returncode:
        subprocess.run(["umount", "-l", str(mnt)], timeout=60)


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size) -> the path of a fresh tmpfs of that size ("2m").
    Tests list this fixture before make_postern: servers stop first."""
    mounts = []

    def make(size):
        mnt = tmp_path / ("fs%d" % len(mounts))
        mnt.mkdir()
        sh("mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs",
            str(mnt))
        mounts.append(mnt)
        return str(mnt)

    yield make
    for mnt in reversed(mounts):
        umount(mnt)


def fill(path):
    """Write a file at path until the file system has no byte left;
    returns path."""
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    return path


def on(fs, extra=()):
    """A config with the spool and the Maildirs on fs."""
    return make_config(extra=extra, actions='action local maildir '
        '"%s/mail/%%{rcpt.user}/Maildir"\n' % fs).replace(
        "spool {tmp}/spool", "spool %s/spool" % fs)


def lines(n):
    """n octets or more of message: a header, then 1000-octet lines."""
    return b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (n // 1000 + 1)


def attempt(c, body, rcpt="bob@example.org", bdat=False):
    """One transaction; the reply to the end of the message."""
    c.send("MAIL FROM:<alice@example.org>"); c.expect(250)
    c.send("RCPT TO:<%s>" % rcpt); c.expect(250)
    if bdat:
        c.send_raw(b"BDAT %d LAST\r\n" % len(body) + body)
    else:
        c.send("DATA"); c.expect(354)
        c.send_raw(body + b".\r\n")
    return c.read_reply(timeout=30)


def files_under(d):
    out = []
    for root, _dirs, names in os.walk(d):
        out += [os.path.join(root, n) for n in names]
    return sorted(out)


def nothing_partial(srv, fs, user, want):
    """The spool holds nothing, user's Maildir tmp/ nothing, new/ want
    files: what was refused left no trace."""
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    md = os.path.join(fs, "mail", user, "Maildir")
    assert files_under(os.path.join(md, "tmp")) == []
    got = files_under(os.path.join(md, "new"))
    assert len(got) == want, got
    return got


def test_full_disk_mid_message_is_452_and_leaves_nothing(tmpfs,
        make_postern):
    fs = tmpfs("2m")
    srv = make_postern(config=on(fs))
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: before\r\n\r\nfits\r\n")
        # Full to the last block: a small message (the Maildir fast path,
        # then the spool) finds no room.
        filler = fill(os.path.join(fs, "filler"))
        r = attempt(c, b"Subject: small\r\n\r\n" + b"y" * 70 + b"\r\n" * 40)
        assert (r.code, r.esc) == FULL, "%r\n%s" % (r, c.transcript())
        nothing_partial(srv, fs, "bob", 1)
        os.unlink(filler)
        # Bigger than the file system: the spool fills up mid-DATA, and
        # the rest of the message is read and dropped.
        for bdat in (False, True):
            r = attempt(c, lines(3 << 20), bdat=bdat)
            assert (r.code, r.esc) == FULL, "%r\n%s" % (r, c.transcript())
            c.send("NOOP"); c.expect(250)
        nothing_partial(srv, fs, "bob", 1)
        # Room again: mail flows in the same session.
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: after\r\n\r\nfits again\r\n")
    got = nothing_partial(srv, fs, "bob", 2)
    assert sorted(read_bytes(f).split(b"Subject: ")[1].split(b"\r\n")[0]
        .split(b"\n")[0] for f in got) == [b"after", b"before"]
    assert any("No space left on device" in kv.get("why", "")
        for kv, _ in log_events(srv, "spool-error")), srv.log()[-2000:]
    assert srv.alive()


def test_full_maildir_defers_and_delivers_when_room_returns(tmpfs,
        make_postern):
    """Only the Maildir's file system is full: the spool takes the message
    (250), the queue retries, and delivers once there is room."""
    fs = tmpfs("1m")
    srv = make_postern(config=make_config(extra=["queue retry-min 1s",
        "queue retry-max 1s"], actions='action local maildir '
        '"%s/mail/%%{rcpt.user}/Maildir"\n' % fs))
    os.makedirs(os.path.join(fs, "mail", "bob", "Maildir"))
    filler = fill(os.path.join(fs, "filler"))
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: waits\r\n\r\n" + "z" * 70 + "\r\n" * 100)
    wait_for(lambda: len(log_events(srv, "deferred")) >= 2, timeout=15,
        what="two deferred attempts")
    assert files_under(os.path.join(fs, "mail", "bob", "Maildir")) == [], \
        "a partial copy was left"
    os.unlink(filler)
    wait_for(lambda: spool_empty(srv), timeout=15, what="the delivery")
    got = files_under(os.path.join(fs, "mail", "bob", "Maildir"))
    assert len(got) == 1 and "/new/" in got[0], got
    assert b"Subject: waits" in read_bytes(got[0])


def test_full_transcript_folder_costs_transcripts_not_sessions(tmpfs,
        make_postern):
    fs = tmpfs("256k")
    srv = make_postern(extra=["transaction-log %s/trans" % fs])
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: one\r\n\r\nlogged\r\n")
    wait_for(lambda: files_under(os.path.join(fs, "trans")),
        what="a transcript")
    fill(os.path.join(fs, "filler"))
    for i in range(3):
        with srv.session() as c:
            c.hello()
            for k in range(20):	# more than a stdio buffer of lines
                c.send("NOOP " + "n" * 200); c.expect(250)
            send_message(c, "alice@example.org", ["bob@example.org"],
                "Subject: full %d\r\n\r\n%s\r\n" % (i, "w" * 200))
            c.send("QUIT"); c.expect(221)
    wait_for(lambda: len(srv.maildir("bob")) == 4, what="four deliveries")
    assert srv.alive()


def test_full_transcript_folder_warns_and_logs_again_with_room(tmpfs,
        make_postern):
    """The writer thread meets ENOSPC: one warning, the session and the
    message go on; with room again, the next session is logged whole."""
    fs = tmpfs("256k")
    trans = os.path.join(fs, "trans")
    srv = make_postern(extra=["transaction-log %s data 1M" % trans])
    filler = fill(os.path.join(fs, "filler"))
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: big\r\n\r\n" + "".join("%05d %s\r\n" % (i, "y" * 90)
            for i in range(300)))
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: "No space left on device; the rest of this session's "
        "log is dropped" in srv.log(), what="the writer's warning")
    os.unlink(filler)
    with srv.session() as c:
        c.hello()
        c.send("QUIT"); c.expect(221)
    sid = [kv["sid"] for kv, _ in log_events(srv, "connect")][-1]
    wait_for(lambda: [f for f in files_under(trans) if sid in f and
        "221 " in open(f, errors="replace").read()],
        what="the second session's whole log")
    wait_for(lambda: len(srv.maildir("bob")) == 1, what="the delivery")


# ----- fsync fails ------------------------------------------------------------

def eio_refused_then_recovered(srv, fault_on, fault_off):
    """With the fault on, a message gets a 4xx (never 250) and the session
    goes on; with it off again the next one is delivered."""
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: before\r\n\r\nok\r\n")
    wait_for(lambda: len(srv.maildir("bob")) == 1, what="the first copy")
    fault_on()
    with srv.session() as c:
        c.hello()
        for body in (b"Subject: eio small\r\n\r\nx\r\n", lines(200000)):
            r = attempt(c, body)
            assert r.code == 451 and r.esc == "4.3.0", "%r\n%s" % (r,
                c.transcript())
            c.send("NOOP"); c.expect(250)
    fault_off()
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: after\r\n\r\nok\r\n")
    wait_for(lambda: len(srv.maildir("bob")) == 2, what="the copy after")
    assert srv.alive()
    subjects = sorted(read_bytes(f).split(b"Subject: ")[1].split(b"\n")[0]
        for f in srv.maildir("bob"))
    assert subjects == [b"after", b"before"], subjects


def test_fsync_eio_injected_is_never_250(make_postern, tmp_path):
    """strace makes every fsync, fdatasync and sync_file_range of the server
    fail with EIO (the call does not run; the process sees an I/O error)."""
    assert shutil.which("strace"), "strace: scripts/bootstrap installs it"
    srv = make_postern()
    st = []

    def on():
        p = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null",
            "-e", "trace=fsync,fdatasync,sync_file_range",
            "-e", "inject=fsync,fdatasync,sync_file_range:error=EIO",
            "-p", str(srv.proc.pid)], stderr=subprocess.PIPE)
        st.append(p)
        wait_for(lambda: traced_by(srv.proc.pid, p.pid), 10,
            what="strace to attach to every thread")

    def off():
        st[0].terminate()
        st[0].wait(10)
        wait_for(lambda: traced_by(srv.proc.pid, 0), 10,
            what="strace to let go")

    try:
        eio_refused_then_recovered(srv, on, off)
    finally:
        for p in st:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert any("Input/output error" in kv.get("why", "")
        for kv, _ in log_events(srv, "spool-error")), srv.log()[-2000:]


def dm_error_target():
    """Skip unless the kernel has device-mapper with its error target."""
    r = subprocess.run(["dmsetup", "targets"], capture_output=True,
        text=True, timeout=30)
    if r.returncode != 0:
        machine_lacks("device-mapper in the kernel (dmsetup targets: %s)"
            % (r.stderr.strip().splitlines() or ["?"])[0])
    if not any(l.split()[:1] == ["error"] for l in r.stdout.splitlines()):
        machine_lacks("the device-mapper error target (dmsetup targets: %s)"
            % " ".join(l.split()[0] for l in r.stdout.splitlines() if l))


@pytest.fixture
def dm_disk(tmp_path):
    """An ext4 on a device-mapper device over a loop device; yields
    (mount point, fail(), heal()): fail() swaps the table for the error
    target, so every write and fsync that reaches the device gets EIO."""
    dm_error_target()
    img, mnt = tmp_path / "dm.img", tmp_path / "dm"
    name = "postern-test-%d" % os.getpid()
    mnt.mkdir()
    sh("truncate", "-s", "64M", str(img))
    try:
        loop = sh("losetup", "-f", "--show", str(img))
    except subprocess.CalledProcessError as e:
        machine_lacks("a loop device: %s" % e.stderr.strip())
    sectors = sh("blockdev", "--getsz", loop)
    linear = "0 %s linear %s 0" % (sectors, loop)
    sh("dmsetup", "create", name, "--table", linear)
    dev = "/dev/mapper/" + name
    try:
        sh("mkfs.ext4", "-q", "-F", dev)
        sh("mount", "-o", "errors=continue", dev, str(mnt))

        def swap(table):
            sh("dmsetup", "suspend", "--noflush", name)
            sh("dmsetup", "load", name, "--table", table)
            sh("dmsetup", "resume", name)
        yield (str(mnt), lambda: swap("0 %s error" % sectors),
            lambda: swap(linear))
    finally:
        umount(mnt)
        subprocess.run(["dmsetup", "remove", "--force", name], timeout=60)
        subprocess.run(["losetup", "-d", loop], timeout=60)


def test_fsync_eio_from_a_failing_disk_is_never_250(dm_disk, make_postern):
    """The block device itself fails (device-mapper error target): fsync
    returns EIO, the message gets a 4xx, the session and the server go on.
    (ext4 itself may stay unusable until a remount: no more mail there.)"""
    mnt, fail, heal = dm_disk
    srv = make_postern(config=on(mnt))
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", ["bob@example.org"],
            "Subject: before\r\n\r\nok\r\n")
    fail()
    with srv.session() as c:
        c.hello()
        r = attempt(c, b"Subject: eio\r\n\r\nx\r\n")
        assert r.code // 100 == 4, "%r\n%s" % (r, c.transcript())
        c.send("NOOP"); c.expect(250)
    heal()
    assert srv.alive()


def test_full_log_disk_costs_lines_not_mail_and_says_how_many(tmpfs,
        make_postern):
    """The log file's disk fills: mail goes on; once there is room, one
    line says how many lines were lost and why, before the next ones, and
    a line cut short by the full disk is ended first."""
    fs = tmpfs("256k")
    path = os.path.join(fs, "postern.log")
    port = free_port()
    srv = make_postern(extra=['log file "%s"' % path,
        "metrics listen 127.0.0.1:%d" % port])
    wait_for(lambda: os.path.exists(path) and b"metrics on" in
        read_bytes(path), what="the first lines in the log file")
    assert scrape(port)["postern_log_lines_lost_total"] == 0
    filler = fill(os.path.join(fs, "filler"))
    # The log's last page still has room: more sessions than fit there.
    for i in range(10):
        with srv.session() as c:
            c.hello("full%d.example" % i)
            send_message(c, "alice@example.org", ["bob@example.org"],
                "Subject: full %d\r\n\r\nlogged nowhere\r\n" % i)
            c.send("QUIT"); c.expect(221)
    wait_for(lambda: len(srv.maildir("bob")) == 10, what="ten deliveries")
    assert b"full9.example" not in read_bytes(path)
    os.unlink(filler)
    with srv.session() as c:
        c.hello("after.example")
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: b"after.example" in read_bytes(path),
        what="the session after the disk had room in the log")
    text = read_bytes(path).decode()
    lost = [l for l in text.splitlines() if " warn log-lost " in l]
    assert len(lost) == 1, text[-3000:]
    # The last session's connect, helo, mail, rcpt, delivery and
    # disconnect at least.
    n = int(lost[0].split("lines=")[1].split()[0])
    assert n >= 6, lost[0]
    assert scrape(port)["postern_log_lines_lost_total"] == n
    assert 'error="No space left on device"' in lost[0]
    assert text.index(lost[0]) < text.index("after.example")
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ")
    lines = text.splitlines()
    torn = lines.index(lost[0]) - 1	# the line the full disk cut, if any
    for i, line in enumerate(lines):
        if i == torn and len(stamp.findall(line)) == 0:
            continue	# cut inside its time stamp: still ended there
        assert (i == torn or stamp.match(line)) and \
            len(stamp.findall(line)) == 1, "a torn line: %r" % line
    assert srv.alive()


# ----- outcomes the full spool cannot record ---------------------------------

X, Y = "x@example.net", "y@example.net"


def relay_full(tmpfs, make_postern, up):
    """A server relaying example.net to up, local mail for example.org
    (bounces) in its own folder, the spool on a small tmpfs, retry-min
    30s: (server, the tmpfs)."""
    fs = tmpfs("4m")
    srv = make_postern(config=make_config(
        extra=["queue retry-min 30s", "queue retry-max 1h"],
        actions='action local maildir "{tmp}/mail/%%{rcpt.user}/Maildir"\n'
        'action out relay "smtp://127.0.0.1:%d"\n' % up.port,
        rules=["match to domain example.org action local",
            "match to domain example.net action out"]).replace(
        "spool {tmp}/spool", "spool %s/spool" % fs))
    return srv, fs


def relayed_while_full(tmpfs, make_postern, upstreams, refused,
        y_reply=None):
    """One message to X and Y (y_reply: the upstream's reply to Y's RCPT,
    else 250); once the upstream holds its reply to the dot, the spool's
    file system is filled, then the upstream answers, and the queue logs
    that the spool refused to record "refused" ("delivery", "failure"...).
    (upstream, server, tmpfs, the filler's path)."""
    up = upstreams.scripted(rcpt_replies={Y: y_reply} if y_reply else None)
    srv, fs = relay_full(tmpfs, make_postern, up)
    up.stall_data = True
    with srv.session() as c:
        c.hello()
        send_message(c, "alice@example.org", [X, Y],
            "Subject: once\r\n\r\nhello\r\n")
    wait_for(lambda: up.stalled_now() == 1, timeout=15,
        what="the reply to the dot held")
    filler = fill(os.path.join(fs, "filler"))
    up.released.set()
    if refused is not None:
        wait_for(lambda: "cannot record %s" % refused in srv.log(),
            timeout=15, what="the %s refused" % refused)
    return up, srv, fs, filler


def copies_to(up, rcpt):
    with up.lock:
        return sum(rcpts.count(rcpt) for _, rcpts, _ in up.stored)


def sessions(up):
    with up.lock:
        return sum(e.startswith("helo:") for e in up.events)


def queued(fs):
    return os.listdir(os.path.join(fs, "spool", "env"))


def one_session_for(up, seconds):
    """The upstream sees no session after the first for seconds (a
    bounded watch: a retry would come at once, or after retry-min)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert sessions(up) == 1, "%d sessions, %d copies to %s" % (
            sessions(up), copies_to(up, X), X)
        time.sleep(0.05)


def test_deliveries_the_full_spool_cannot_record_go_once(tmpfs,
        make_postern, upstreams):
    """The upstream took the message for both recipients in one
    transaction while the spool is full: the message's removal is their
    one record (an unlink needs no room), none refused.  Nothing is sent
    again.  (A delivery whose own record is refused: the next test.)"""
    up, srv, fs, _ = relayed_while_full(tmpfs, make_postern, upstreams,
        None)
    wait_for(lambda: not queued(fs) or copies_to(up, X) > 1, timeout=10,
        what="the message removed")
    assert (copies_to(up, X), copies_to(up, Y)) == (1, 1)
    one_session_for(up, 2)


def test_a_delivery_not_recorded_waits_with_the_deferred_one(tmpfs,
        make_postern, upstreams):
    """X is relayed, Y deferred (451), and neither can be recorded: the
    message waits for Y's retry, and that retry (a flush, once there is
    room) sends the message to Y alone, X's record written then."""
    up, srv, fs, filler = relayed_while_full(tmpfs, make_postern,
        upstreams, "deferral", "451 4.3.0 later")
    assert "cannot record delivery" in srv.log()
    one_session_for(up, 2)
    os.unlink(filler)
    del up.rcpt_replies[Y]
    assert queue_cli(srv, "flush").returncode == 0
    wait_for(lambda: not queued(fs), timeout=15, what="the retry to Y")
    assert (copies_to(up, X), copies_to(up, Y)) == (1, 1)


def test_a_failure_not_recorded_is_tried_again_after_retry_min(tmpfs,
        make_postern, upstreams):
    """X is relayed, Y refused (550), and neither can be recorded: Y is
    tried again only after retry-min (here a flush, once there is room),
    then bounced; X is never sent again."""
    up, srv, fs, filler = relayed_while_full(tmpfs, make_postern,
        upstreams, "failure", "550 5.1.1 no such user")
    one_session_for(up, 2)
    assert len(log_events(srv, "failed")) == 1
    os.unlink(filler)
    assert queue_cli(srv, "flush").returncode == 0
    wait_for(lambda: not queued(fs) and srv.maildir("alice"), timeout=15,
        what="Y bounced")
    assert copies_to(up, X) == 1
    assert Y.encode() in read_bytes(srv.maildir("alice")[0])
