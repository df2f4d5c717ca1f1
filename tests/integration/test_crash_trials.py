"""
kill -9 under load, again and again: clients keep sending (small messages
that take the Maildir fast path, large ones that go through the spool and
the queue, some to two recipients) while the server is killed at a random
moment and started again on the same spool.  After the last trial the
server drains its queue; then every message that got a 250 is in each of
its recipients' Maildirs exactly once, no message is there twice, and the
spool is empty.  The trials run in the test's temporary folder and again
on an ext4 with a journal, where the spool log takes the commits.  A
relay variant sends everything through the queue to an upstream, most
messages held in memory with no spool file until delivered: every one
acknowledged reaches the upstream.

20 trials run in the suite; the long variant (200 trials) runs by hand:
    POSTERN_LONG=1 /usr/bin/python3 -m pytest -s tests/integration \\
        -k crash_trials_long
Each run prints its figures (trials, acknowledged, delivered, duplicated).
"""

import collections
import os
import random
import re
import threading
import time

import pytest

from conftest import Client, make_config, read_bytes, spool_empty, wait_for
from test_maildir_commit import (ext4, no_log_size,  # noqa: F401
    server_dir)
from test_relay import queue_cli, upstreams  # noqa: F401 (a fixture)

CLIENTS = 4
BIG = 100 * 1024	# over the in-memory threshold: spooled, then queued


class Load:
    """CLIENTS threads sending messages until stopped or cut off; acked
    maps each Message-Id that got a 250 to its recipients."""

    def __init__(self, port, trial, rng):
        self.port = port
        self.trial = trial
        self.stop = threading.Event()
        self.acked = {}
        self.sent = 0
        self.lock = threading.Lock()
        self.seeds = [rng.random() for _ in range(CLIENTS)]
        self.threads = [threading.Thread(target=self.run, args=(i,),
            daemon=True) for i in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def message(self, rng, mid):
        size = BIG if rng.random() < 0.2 else 200
        rcpts = ["bob@example.org"] + (["carol@example.org"]
            if rng.random() < 0.3 else [])
        body = b"Subject: trial\r\nMessage-Id: <%s>\r\n\r\n" % mid.encode() \
            + (b"z" * 78 + b"\r\n") * (size // 80 + 1)
        return rcpts, body

    def transaction(self, c, rng, mid):
        rcpts, body = self.message(rng, mid)
        c.send("MAIL FROM:<load@example.net>"); c.expect(250)
        for r in rcpts:
            c.send("RCPT TO:<%s>" % r); c.expect(250)
        c.send("DATA"); c.expect(354)
        with self.lock:
            self.sent += 1
        c.send_raw(body + b".\r\n")
        if c.read_reply(timeout=30).code == 250:
            with self.lock:
                self.acked[mid] = rcpts

    def run(self, i):
        rng = random.Random(self.seeds[i])
        n = 0
        while not self.stop.is_set():
            try:
                with Client(self.port, timeout=30) as c:
                    c.hello()
                    for _ in range(rng.randint(1, 10)):
                        if self.stop.is_set():
                            break
                        n += 1
                        self.transaction(c, rng, "t%d-c%d-m%d@example.net"
                            % (self.trial, i, n))
            except (AssertionError, OSError):
                # Killed mid-session, or not up yet: what got no 250 was
                # never ours.
                time.sleep(0.01)

    def end(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), "a load client hung"


MID = re.compile(rb"^Message-Id: <([^>]*)>", re.M | re.I)


def copies(srv):
    """Counter of (Message-Id, user) over every delivered file."""
    got = collections.Counter()
    for user in ("bob", "carol"):
        for f in srv.maildir(user):
            m = MID.search(read_bytes(f))
            got[(m.group(1).decode() if m else "?", user)] += 1
    return got


def killed_under_load(srv, trials, rng):
    """srv killed trials times under load, started again after each and
    at the end: ({Message-Id: recipients} acknowledged, messages sent)."""
    acked, sent = {}, 0
    for trial in range(trials):
        if trial > 0:
            srv.start()
        load = Load(srv.port, trial, rng)
        try:
            # Some load first, so every trial kills something in flight.
            wait_for(lambda: load.sent >= 2, timeout=30,
                what="the load to start")
            time.sleep(rng.uniform(0.05, 0.8))	# the moment to kill at
            srv.kill9()
        finally:
            load.end()
        acked.update(load.acked)
        sent += load.sent
    srv.start()
    return acked, sent


def crash_trials(make_postern, trials, seed, at=None):
    rng = random.Random(seed)
    srv = make_postern(extra=["queue retry-min 1s", "queue retry-max 2s"],
        at=at)
    acked, sent = killed_under_load(srv, trials, rng)
    wait_for(lambda: spool_empty(srv), timeout=120,
        what="the queue to drain after the last restart")
    got = copies(srv)
    want = collections.Counter({(mid, r.split("@")[0]): 1
        for mid, rcpts in acked.items() for r in rcpts})
    lost = sorted(k for k in want if got[k] == 0)
    dup = sorted(k for k, n in got.items() if n > 1)
    delivered = sum(1 for k in want if got[k] == 1)
    print("crash trials: %d trials (seed %r), %d messages sent, %d "
        "acknowledged (%d copies), %d copies delivered, %d lost, %d "
        "duplicated, %d copies of unacknowledged messages" % (trials, seed,
        sent, len(acked), len(want), delivered, len(lost), len(dup),
        sum(n for k, n in got.items() if k not in want)))
    assert not lost, "acknowledged but lost: %s" % lost[:20]
    assert not dup, "delivered more than once: %s" % dup[:20]
    assert ("?", "bob") not in got, "a delivered file without Message-Id"
    return srv


def test_crash_trials(server_dir, make_postern):
    crash_trials(make_postern, 20, seed=int(time.time()), at=server_dir)


def relay_trials(make_postern, ups, mnt, trials, seed):
    """crash_trials with every message relayed to ups[0] (a scripted
    upstream; carol's copies to ups[1] when there is one), the spool on
    mnt: each acknowledged copy reaches its upstream once or, killed
    between its 250 and the record of it, more."""
    rng = random.Random(seed)
    rules = ["match to domain example.org action out"]
    actions = "".join('action %s relay "smtp://127.0.0.1:%d"\n' % (name,
        up.port) for name, up in zip(("out", "out2"), ups))
    if len(ups) > 1:
        rules.insert(0, "match to carol@example.org action out2")
    text = no_log_size(make_config(extra=["queue retry-min 1s",
        "queue retry-max 2s"], actions=actions, rules=rules))
    srv = make_postern(config=text.replace("spool {tmp}/spool",
        "spool %s/spool\nspool log-size 8M" % mnt))
    acked, sent = killed_under_load(srv, trials, rng)
    want = {(mid, r) for mid, rcpts in acked.items() for r in rcpts}

    def got():
        out = collections.Counter()
        for up in ups:
            with up.lock:
                for _, rcpts, data in up.stored:
                    m = MID.search(data)
                    for r in rcpts:
                        out[(m.group(1).decode() if m else "?", r)] += 1
        return out

    def drained():
        files = [n for sub in ("msg", "env", "done") for n in
            os.listdir(os.path.join(mnt, "spool", sub))]
        return not files and all(got()[k] for k in want) and \
            "Mail queue is empty" in queue_cli(srv, "list").stdout
    try:
        wait_for(drained, timeout=120, interval=0.5,
            what="the queue to drain after the last restart")
    except AssertionError:
        pass			# what is missing is said below
    copies = got()
    lost = sorted(k for k in want if copies[k] == 0)
    dup = sorted(k for k, n in copies.items() if n > 1)
    print("relay crash trials: %d trials (seed %r), %d messages sent, %d "
        "acknowledged (%d copies), %d lost, %d sent again" % (trials, seed,
        sent, len(acked), len(want), len(lost), len(dup)))
    assert not lost, "acknowledged but lost: %s" % lost[:20]
    assert drained(), "the queue did not drain"


def test_crash_trials_relay(ext4, make_postern, upstreams):
    _, mnt = ext4(journal=True)
    relay_trials(make_postern, [upstreams.scripted()], mnt, 10,
        seed=int(time.time()))


def test_crash_trials_relay_two_upstreams(ext4, make_postern, upstreams):
    # carol's copies go to an upstream of their own: a message for bob and
    # carol is two transactions, the first one's done-record in the log.
    _, mnt = ext4(journal=True)
    relay_trials(make_postern, [upstreams.scripted(), upstreams.scripted()],
        mnt, 10, seed=int(time.time()))


@pytest.mark.long
def test_crash_trials_long(make_postern):
    crash_trials(make_postern, 200, seed=int(time.time()))
