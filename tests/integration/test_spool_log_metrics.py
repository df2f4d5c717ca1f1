"""What the metrics endpoint says of the spool log: each commit that tried
the log counts once in postern_spool_log_commits_total, by result: logged
(the record made durable), too-large (over a quarter of the log), full (no
room before the checkpoint), failed (the log's write failed, and every
commit after it).  A full log is also warned of in postern's log, at most
once a minute.  With the log off nothing is counted.  Real ext4 loop
mounts (test_spool_log.py's fixtures) and real scrapes over HTTP."""

import os

from conftest import free_port, queue_id, send_message, wait_for
from test_maildir_commit import delivered, ext4, send
from test_metrics import scrape
from test_relay import upstreams  # noqa: F401 (a fixture)
from test_spool_log import (bodies, checkpointed, filler, pytestmark,
    relay_server, relayed_and_recorded, server, strace, untrace)

assert ext4 and pytestmark	# a fixture, used by name; root needed

RESULTS = ("logged", "too-large", "full", "failed")
FULL_WARNING = "spool log: full: "
# Over a quarter of a 64k log ((64k - 4k) / 4 = 15k): about 20k.
BIG = "Subject: big\r\n\r\n" + ("y" * 78 + "\r\n") * 256


def with_metrics(make, *args, extra=(), **kw):
    """make(*args, extra=..., **kw), a server, with its metrics endpoint:
    (server, the endpoint's port)."""
    port = free_port()
    srv = make(*args, extra=["metrics listen 127.0.0.1:%d" % port] +
        list(extra), **kw)
    wait_for(lambda: "metrics on http://127.0.0.1:%d/metrics" % port in
        srv.log(), timeout=30, what="the metrics endpoint")
    return srv, port


def log_commits(port):
    """{result: count} of postern_spool_log_commits_total, scraped; None
    for a series not served."""
    m = scrape(port)
    return {r: m.get('postern_spool_log_commits_total{result="%s"}' % r)
        for r in RESULTS}


def counts(logged=0, too_large=0, full=0, failed=0):
    return {"logged": logged, "too-large": too_large, "full": full,
        "failed": failed}


def send_big(srv, rcpt="bob@example.org"):
    """BIG to rcpt: its queue id."""
    with srv.session() as c:
        c.hello()
        return queue_id(send_message(c, "a@example.net", [rcpt], BIG))


def test_maildir_commits_count_logged_and_too_large(ext4, make_postern):
    # A small message's copy is recorded in the 64k log; a 20k one is
    # larger than the log takes and is fsynced.  Both are delivered whole.
    _, mnt = ext4(journal=True)
    srv, port = with_metrics(server, make_postern, mnt, log_size="64k")
    assert log_commits(port) == counts()
    send(srv, 0, 1)
    assert log_commits(port) == counts(logged=1)
    send_big(srv)
    assert log_commits(port) == counts(logged=1, too_large=1)
    assert delivered(mnt) == sorted([b"body 0\n",
        BIG.split("\r\n\r\n", 1)[1].replace("\r\n", "\n").encode()])
    assert FULL_WARNING not in srv.log()


def test_spooled_commits_count_logged_and_too_large(ext4, make_postern):
    # Relayed messages, queued (the upstream's port is closed): a small
    # one has a record, a 20k one is committed with its fsyncs.  The
    # deferral of each is a record of its own, in the log.
    _, mnt = ext4(journal=True)
    srv, port = with_metrics(relay_server, make_postern, mnt, 9,
        log_size="64k")
    send(srv, 0, 1)
    wait_for(lambda: log_commits(port) == counts(logged=2), timeout=20,
        what="the message and its deferral logged")
    qid = send_big(srv)
    wait_for(lambda: log_commits(port) == counts(logged=3, too_large=1),
        timeout=20, what="the big message too large, its deferral logged")
    assert srv.log().count(" deferred ") == 2
    assert os.path.exists(os.path.join(mnt, "spool", "env", qid))
    with open(os.path.join(mnt, "spool", "log"), "rb") as f:
        assert b"y" * 78 not in f.read()	# the content is not


def test_a_full_log_counts_full_and_warns_once(ext4, make_postern,
        upstreams):
    # Checkpoints held back and the upstream holding every dot: a 64k log
    # fills after a few of twelve 10k messages.  Those with a record in
    # the log count as logged, the others as full; one warning says so.
    up = upstreams.scripted()
    _, mnt = ext4(journal=True)
    srv, port = with_metrics(relay_server, make_postern, mnt, up.port,
        log_size="64k")
    relayed_and_recorded(srv, up, mnt, 0, 1)	# records 1 and 2
    checkpointed(mnt, 2)
    assert log_commits(port) == counts(logged=1)
    texts = [filler(i, 120) for i in range(1, 13)]
    qids = []
    st = strace(srv, "-e", "trace=syncfs",
        "-e", "inject=syncfs:delay_enter=30000000")
    try:
        up.stall_data = True
        with srv.session() as c:
            c.hello()
            for text in texts:
                qids.append(queue_id(send_message(c, "a@example.net",
                    ["bob@example.org"], text)))
        with open(os.path.join(mnt, "spool", "log"), "rb") as f:
            log = f.read()
        got = log_commits(port)
    finally:
        untrace(st)
    logged = [q for q in qids if q.encode() in log]
    assert logged == qids[:len(logged)], (qids, logged)
    assert 3 <= len(logged) <= 8, logged
    assert got == counts(logged=1 + len(logged), full=12 - len(logged))
    warnings = [l for l in srv.log().splitlines() if FULL_WARNING in l]
    assert len(warnings) == 1, warnings
    assert 'a larger "spool log-size" keeps them on the log' in \
        warnings[0], warnings
    # Every message relayed once, intact.
    up.stall_data = False
    up.released.set()
    wait_for(lambda: len(bodies(up)) >= 13 and not os.listdir(
        os.path.join(mnt, "spool", "env")), timeout=60,
        what="the twelve messages relayed")
    assert sorted(bodies(up)) == sorted([b"body 0\r\n"] + [t.split(
        "\r\n\r\n", 1)[1].encode() for t in texts])


def test_a_failed_log_write_counts_failed_from_then_on(ext4,
        make_postern):
    # The log's fdatasync fails: that commit and every later one count
    # as failed (the log takes nothing more), none as full; no warning
    # of a full log.
    _, mnt = ext4(journal=True)
    srv, port = with_metrics(server, make_postern, mnt)
    send(srv, 0, 1)
    checkpointed(mnt, 1)
    st = strace(srv, "-e", "trace=fdatasync",
        "-e", "inject=fdatasync:error=EIO")
    try:
        send(srv, 1, 1)
    finally:
        untrace(st)
    assert "acknowledging with fsync from now on" in srv.log()
    send(srv, 2, 2)
    assert log_commits(port) == counts(logged=1, failed=3)
    assert delivered(mnt) == [b"body %d\n" % i for i in range(4)]
    assert FULL_WARNING not in srv.log()


def test_nothing_is_counted_with_the_log_off(ext4, make_postern):
    # spool log-size off: Maildir copies and spooled messages are fsynced
    # as ever, and the family stays at 0.
    _, mnt = ext4(journal=True)
    srv, port = with_metrics(server, make_postern, mnt, log_size="off")
    send(srv, 0, 1)
    send_big(srv)
    assert len(delivered(mnt)) == 2
    assert log_commits(port) == counts()
    _, mnt2 = ext4(journal=True)	# a spool of its own
    relay, rport = with_metrics(relay_server, make_postern, mnt2, 9,
        log_size="off")
    send(relay, 0, 1)
    send_big(relay)
    assert len(os.listdir(os.path.join(mnt2, "spool", "env"))) == 2
    assert log_commits(rport) == counts()
    for m in (mnt, mnt2):
        assert not os.path.exists(os.path.join(m, "spool", "log"))
