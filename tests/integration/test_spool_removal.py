"""What the queue writes once a relayed message is delivered
(spool/spool.c, spool/remove.c, queue/attempt.c): the last recipient's
delivery is recorded by removing the message, the envelope first, with
no done-record written for it; one fsync of env/ on the spool's own
thread makes the removals of 50 ms durable together, or, with the spool
log where the journal keeps the order, one write of the log recording
them (test_spool_log.py shows what a power cut leaves then).  An earlier
recipient gets a done-record, whose new file needs no fsync of done/
where the journal keeps the order.  On journaled ext4 a relayed message
then costs about one journal commit, to accept it.  A copy of the disk
image, as a power cut would leave it, holds a new done-record whole, and
no envelope of a message removed once that fsync is done.  A queue
worker reads no envelope and looks for no done-record at a message's
first attempt, an envelope in one read(2) at a retry, the content of a
small message once, and draws no random bits per attempt; a delivery
wakes no idle thread.  Real ext4 loop mounts
(root)."""

import os
import re
import subprocess

import pytest

from conftest import make_config, traced_by, wait_for
from test_maildir_commit import (commits, crashed, ext4,  # noqa: F401
    no_log_size, send)
from test_relay import upstreams  # noqa: F401 (a fixture)

TRACED = "fsync,fdatasync,unlinkat,openat"


def relay_on(make_postern, mnt, port, extra=(), log="1M"):
    """A server relaying example.org to port, and example.net there by
    another action (another transaction), its spool on mnt with a log of
    log ("off": removals made durable by an fsync of env/)."""
    text = no_log_size(make_config(extra=extra,
        actions='action out relay "smtp://127.0.0.1:%d"\n'
        'action out2 relay "smtp://127.0.0.1:%d"\n' % (port, port),
        rules=["match to domain example.org action out",
               "match to domain example.net action out2"]))
    srv = make_postern(config=text.replace("spool {tmp}/spool",
        "spool %s/spool\nspool log-size %s" % (mnt, log)))
    srv.mounted_spool = os.path.join(mnt, "spool")
    return srv


def spool_empty(srv):
    """No message in the spool on the mount, in any of its folders."""
    return not any(os.listdir(os.path.join(srv.mounted_spool, sub))
        for sub in ("tmp", "msg", "env", "done"))


def copies(up):
    """Recipients the upstream took."""
    with up.lock:
        return sum(len(rcpts) for _, rcpts, _ in up.stored)


def relayed(srv, up, first, count, rcpts=("bob@example.org",)):
    """Send count messages one at a time, each relayed and gone from the
    spool before the next: their journal commits never group."""
    want = copies(up)
    for i in range(first, first + count):
        send(srv, i, 1, rcpts)
        want += len(rcpts)
        wait_for(lambda: copies(up) == want and spool_empty(srv), 10,
            what="message %d relayed and removed" % i)


def test_relayed_message_costs_at_most_two_commits(ext4, make_postern,
        upstreams):
    up = upstreams.scripted()
    dev, mnt = ext4(journal=True)
    srv = relay_on(make_postern, mnt, up.port)
    relayed(srv, up, 0, 1)
    before = commits(dev)
    relayed(srv, up, 1, 20)
    # A done-record, an fsync of done/ and the removal took three or four.
    took = commits(dev) - before
    print("journal commits for 20 relayed messages: %d" % took)
    assert took <= 2 * 20 + 6, "%d journal commits for 20 messages" % took


def strace_lines(srv, up, first, count, rcpts, calls, until=None,
        send_all=None):
    """strace -y -ttt lines of calls while count messages are relayed
    (send_all(first, count): another way of sending them), and until
    until(lines) holds."""
    out = srv.path("strace.%d" % first)
    st = subprocess.Popen(["strace", "-f", "-qq", "-y", "-ttt", "-e",
        "trace=" + calls, "-o", out, "-p", str(srv.proc.pid)],
        stderr=subprocess.PIPE)

    def lines():
        with open(out) as f:
            return [l.split(None, 2)[0] + " " + l.split(None, 2)[2]
                for l in f if len(l.split(None, 2)) == 3]
    try:
        wait_for(lambda: traced_by(srv.proc.pid, st.pid), 10,
            what="strace to attach to every thread")
        (send_all or (lambda f, n: relayed(srv, up, f, n, rcpts)))(
            first, count)
        if until is not None:
            wait_for(lambda: until(lines()), 10, what="the traced calls")
    finally:
        st.terminate()
        st.wait(10)
    return lines()


def stamps(srv, up, first, rcpts, calls, until=None):
    """strace lines of calls, one relayed message, as (tid, seconds,
    call, sub/name, rest)."""
    out = []
    strace_lines(srv, up, first, 1, rcpts, calls, until)
    with open(srv.path("strace.%d" % first)) as f:
        for line in f:
            m = re.match(r"(\d+) +([\d.]+) (\w+)\(\d+<[^>]*/spool/"
                r"(\w+(?:/\w+)?)>?(.*)", line)
            if m is not None:
                tid, t, call, where, rest = m.groups()
                out.append((tid, float(t), call, where, rest))
    return out


def env_synced(lines):
    """True once some thread's fsync of the folder env/ itself returned 0
    after the last unlink in env/ or msg/ (a removal unlinks both; the
    fsync's journal commit takes what came before it).  strace shows a
    call other threads interrupt as "<unfinished ...>", then "<... fsync
    resumed>"."""
    synced, pending = False, set()
    for l in lines:
        tid = l.split()[0]
        if re.search(r"unlinkat\(\d+<[^>]*/spool/(env|msg)>", l):
            synced = False
            pending.clear()	# begun before the unlink: not enough
        elif re.search(r"fsync\(\d+<[^>]*/spool/env>\) += 0", l):
            synced = True
        elif re.search(r"fsync\(\d+<[^>]*/spool/env> <unfinished", l):
            pending.add(tid)
        elif tid in pending and "<... fsync resumed>" in l:
            pending.discard(tid)
            synced = synced or re.search(r"\) += 0", l) is not None
    return synced


def writes(srv, up, first, rcpts):
    """The spool writes of the thread that removed the message, one
    relayed message: ["fdatasync done", "unlinkat env", ...], and the
    fsyncs of the folder env/ by other threads after its unlink."""
    calls = []
    for tid, t, call, where, rest in stamps(srv, up, first, rcpts, TRACED,
            env_synced):
        if call == "openat" and "O_CREAT" not in rest:
            continue	# reads
        calls.append((tid, t, "%s %s" % (call, where.split("/")[0]),
            where))
    tid, t0 = next((t, s) for t, s, c, _ in calls if c == "unlinkat env")
    mine = [c for t, _, c, _ in calls if t == tid]
    synced = [(t, s - t0) for t, s, c, w in calls
        if c == "fsync env" and w == "env" and s >= t0]
    return mine, synced


def test_removal_order_and_done_records(ext4, make_postern, upstreams):
    # Two recipients of two actions: two transactions, the first one's
    # recipient recorded as done, the second's removing the message.
    up = upstreams.scripted()
    two = ("bob@example.org", "carol@example.net")
    removal = ["unlinkat env", "unlinkat msg"]
    for journal, want_two in (
            (True, ["openat done", "fdatasync done"]),
            (False, ["openat done", "fdatasync done", "fsync done"])):
        _, mnt = ext4(journal=journal)
        srv = relay_on(make_postern, mnt, up.port, log="off")
        n = up.count()
        relayed(srv, up, n, 1)
        # One recipient: no done file is ever made, nor unlinked; the
        # removing worker does not wait for the fsync of env/, which
        # another thread does.
        for k, rcpts, want in ((1, ("bob@example.org",), removal),
                (2, two, want_two + removal + ["unlinkat done"])):
            mine, synced = writes(srv, up, n + k, rcpts)
            assert mine == want, "journal=%s" % journal
            assert synced, "journal=%s: env/ never fsynced" % journal
            # Within 50 ms, and a generous margin for a busy machine.
            assert synced[0][1] < 2.0, synced
        srv.stop()
        assert not os.listdir(os.path.join(mnt, "spool", "done"))


def twenty_released(ext4, make_postern, upstreams, log, calls, until,
        done=lambda mnt: True):
    """Twenty deliveries held at the upstream's reply to the dot, then let
    go at once, traced (calls) until until(lines) and done(mnt): the
    fsyncs of env/ and all the lines, once each envelope was unlinked (or,
    with the log, moved into gone/)."""
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_on(make_postern, mnt, up.port, log=log)
    relayed(srv, up, 0, 1)
    want = copies(up) + 20
    up.stall_data = True
    send(srv, 1, 20)
    wait_for(lambda: up.waiting == 20, 20, what="20 deliveries held")
    # Their files written (with the log, by its checkpoint, within a
    # second): each removal has an envelope to remove.
    wait_for(lambda: len(os.listdir(os.path.join(mnt, "spool", "env"))) ==
        20, 10, what="20 envelopes")

    def release(first, count):
        up.released.set()
        wait_for(lambda: copies(up) == want and spool_empty(srv) and
            done(mnt), 20, what="20 messages relayed and removed")
    lines = strace_lines(srv, up, 1, 20, None, calls, until, release)
    removals = [l for l in lines if re.search(r"(unlinkat|renameat2?)\("
        r"\d+<[^>]*/spool/env>", l)]
    syncs = [l for l in lines if re.search(r"fsync\(\d+<[^>]*/spool/env>",
        l)]
    assert len(removals) == 20, removals
    return syncs, lines


def test_removals_share_an_fsync(ext4, make_postern, upstreams):
    # Their removals fall within a 50 ms interval or two and share an
    # fsync of env/, where each removal fsynced it before.
    syncs, _ = twenty_released(ext4, make_postern, upstreams, "off",
        "fsync,unlinkat", env_synced)
    assert 1 <= len(syncs) <= 5, "%d fsyncs of env/ for 20 removals" % \
        len(syncs)


def test_removals_share_a_log_write(ext4, make_postern, upstreams):
    # The same with the spool log where the journal keeps the order: no
    # fsync of env/ (no journal commit), the removals recorded in the log
    # instead, one write and one fdatasync for those of an interval.  Each
    # envelope waits in gone/ until its record is written.
    def recorded(mnt):
        with open(os.path.join(mnt, "spool", "log"), "rb") as f:
            return f.read().count(b"PSLD") >= 21 and not [n for n in
                os.listdir(os.path.join(mnt, "spool", "gone"))
                if n != ".removed"]
    syncs, lines = twenty_released(ext4, make_postern, upstreams, "1M",
        "fsync,pwrite64,unlinkat,renameat,renameat2", None, recorded)
    writes = [l for l in lines if re.search(r"pwrite64\(\d+<[^>]*"
        r"/spool/log>", l)]
    assert syncs == [], syncs
    assert not [l for l in lines if re.search(r"unlinkat\(\d+<[^>]*"
        r"/spool/env>", l)]
    assert 1 <= len(writes) <= 5, "%d writes of the log for 20 removals" % \
        len(writes)


def test_removal_survives_a_power_cut_once_synced(ext4, make_postern,
        upstreams):
    # commit=60: no timed journal commit; once the removals' fsync of
    # env/ has run, a power cut leaves no envelope of the message.
    up = upstreams.scripted()
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = relay_on(make_postern, mnt, up.port, log="off")
    relayed(srv, up, 0, 1)
    strace_lines(srv, up, 1, 1, ("bob@example.org",), "fsync,unlinkat",
        env_synced)
    copy = crashed(ext4, dev)
    assert os.listdir(os.path.join(copy, "spool", "env")) == []
    assert os.listdir(os.path.join(copy, "spool", "msg")) == []


def test_new_done_record_survives_a_power_cut(ext4, make_postern, upstreams):
    # The first recipient is relayed, the second deferred for an hour: the
    # done file made for the first holds both records, and the queue
    # writes nothing more while the image is copied (commit=60: no timed
    # journal commit lands meanwhile either).
    up = upstreams.scripted(rcpt_replies={
        "carol@example.org": "451 4.3.0 later"})
    dev, mnt = ext4(journal=True, opts="commit=60")
    srv = relay_on(make_postern, mnt, up.port, ["queue retry-min 1h",
        "queue retry-max 2h"])
    send(srv, 0, 1, ("bob@example.org", "carol@example.org"))
    done = os.path.join(mnt, "spool", "done")

    def records():
        names = os.listdir(done)
        if len(names) != 1:
            return []
        with open(os.path.join(done, names[0])) as f:
            return [l.split()[0] for l in f]
    wait_for(lambda: records() == ["done", "defer"], 10,
        what="the done and defer records")
    copy = crashed(ext4, dev)
    names = os.listdir(os.path.join(copy, "spool", "done"))
    assert len(names) == 1, names
    with open(os.path.join(copy, "spool", "done", names[0])) as f:
        assert [l.split()[0] for l in f] == ["done", "defer"]
    assert os.path.exists(os.path.join(copy, "spool", "env", names[0]))


def test_queue_reads_an_envelope_once_and_only_for_a_retry(ext4,
        make_postern, upstreams):
    # A message's first attempt reads no envelope and looks for no
    # done-record: the spool kept the envelope it committed, which has no
    # record yet.  A retry reads the envelope up to the size fstat gave,
    # with no read to find its end, and its records.  A retry's jitter
    # comes from a supply of random bits, not a getrandom per attempt.
    up = upstreams.scripted(data_replies=["451 4.3.0 later"] * 10)
    _, mnt = ext4(journal=True)
    # Two queue workers: each tries several of the ten messages.
    srv = relay_on(make_postern, mnt, up.port, ["queue concurrency 2",
        "queue retry-min 1s", "queue retry-max 2s"])
    want = copies(up) + 10

    def deferred_then_relayed(first, count):
        send(srv, first, count)
        wait_for(lambda: copies(up) == want and spool_empty(srv), 30,
            what="ten messages deferred once, then relayed")
    lines = strace_lines(srv, up, 0, 10, None, "openat,read,getrandom",
        send_all=deferred_then_relayed)
    env_opens = [l for l in lines if re.match(
        r"\d+ +openat\(\d+<[^>]*/spool/env>, \"\w+\", O_RDONLY", l)]
    done_opens = [l for l in lines if re.match(
        r"\d+ +openat\(\d+<[^>]*/spool/done>, \"\w+\", O_RDONLY", l)]
    env_reads = [l.split()[0] for l in lines
        if re.match(r"\d+ +read\(\d+<[^>]*/spool/env/", l)]
    assert len(env_opens) == 10, "".join(env_opens)	# the retries only
    assert len(done_opens) == 10, "".join(done_opens)
    assert len(env_reads) == 10, lines
    for tid in set(env_reads):
        drawn = [l for l in lines if l.split()[0] == tid and
            l.split(None, 1)[1].startswith("getrandom(")]
        assert len(drawn) <= 1, "%d getrandom for %d messages" % (
            len(drawn), env_reads.count(tid))


@pytest.mark.parametrize("log", ["off", "1M"])
def test_delivery_reads_the_content_once(ext4, make_postern, upstreams, log):
    # A small message is read into memory once per delivery: the scan for
    # what the upstream must offer and DATA use that copy (one openat and
    # one read of msg/<qid> for each message, not one per pass).  With
    # the spool log, a message delivered before a checkpoint never has a
    # file: the delivery takes the content the spool holds in memory.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_on(make_postern, mnt, up.port, log=log)
    relayed(srv, up, 0, 1)
    lines = strace_lines(srv, up, 1, 5, ("bob@example.org",),
        "openat,read")
    opens = [l for l in lines if re.match(
        r"\d+ +openat\(.*/spool/msg/\w+\", O_RDONLY", l)]
    reads = [l for l in lines if re.match(r"\d+ +read\(\d+<[^>]*/spool/msg/",
        l)]
    made = [l for l in lines if re.match(r"\d+ +openat\(\d+<[^>]*/spool/"
        r"(msg|env)>, \"\w+(\.tmp)?\", O_[A-Z|]*O_CREAT", l)]
    want = 5 if log == "off" else 0
    assert len(opens) == want, "".join(opens)
    assert len(reads) == want, "".join(reads)
    assert len(made) == 2 * want, "".join(made)
    with up.lock:
        got = b"".join(data for _, _, data in up.stored)
    for i in range(1, 6):
        assert b"Subject: commit order %d\r\n\r\nbody %d\r\n" % (i, i) \
            in got, got


def test_recipients_of_one_transaction_are_removed_together(ext4,
        make_postern, upstreams):
    # Five recipients the upstream takes in one transaction: their
    # message is removed once for all, with no done-record for any, and
    # (held in memory by the log) no spool file is ever made for it.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_on(make_postern, mnt, up.port)
    rcpts = tuple("r%d@example.org" % i for i in range(5))
    relayed(srv, up, 0, 1)
    lines = strace_lines(srv, up, 1, 3, rcpts, "openat")
    made = [l for l in lines if re.match(r"\d+ +openat\(\d+<[^>]*/spool/"
        r"(msg|env|done)>", l)]
    assert made == [], "".join(made)
    with up.lock:
        assert [sorted(r) for _, r, _ in up.stored[1:]] == \
            [sorted(rcpts)] * 3, up.stored


def idle_wakeups(lines):
    """Wake-ups for nothing: a thread woken from a condition wait (a
    FUTEX_WAIT_BITSET that returned 0) whose next call, but those on a
    mutex, is another condition wait that is woken in turn."""
    woken, pending, n = {}, {}, 0
    for l in lines:
        tid, rest = l.split(None, 1)
        rest = rest.strip()
        if rest.startswith("<... futex resumed>"):
            kind = pending.pop(tid, None)
        elif rest.startswith("futex("):
            kind = "cond" if "FUTEX_WAIT_BITSET" in rest else "mutex"
            if rest.endswith("<unfinished ...>"):
                pending[tid] = kind
                continue
        else:
            woken.pop(tid, None)	# it did something
            continue
        if kind != "cond":
            continue
        ok = rest.endswith(") = 0")
        n += ok and woken.get(tid, False)
        woken[tid] = ok
    return n


def test_delivery_wakes_no_idle_thread(ext4, make_postern, upstreams):
    # A delivery wakes no sleeping thread that has nothing to do: not a
    # queue worker when no job waits for the destination slot it frees,
    # not the session cache's thread when the session it puts back
    # expires after the one that thread waits for.  Each did, once per
    # message.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv = relay_on(make_postern, mnt, up.port, ["queue concurrency 4"])
    relayed(srv, up, 0, 1)
    lines = strace_lines(srv, up, 1, 10, ("bob@example.org",),
        "futex,openat,unlinkat,fsync,sendto,recvfrom,poll,close")
    assert idle_wakeups(lines) < 3, "".join(l for l in lines if "futex" in l)
