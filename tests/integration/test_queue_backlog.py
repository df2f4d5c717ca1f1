"""A deep queue: thousands of messages deferred while their upstream is down,
then delivered by `postern queue flush` once it is up, every one exactly
once (counted by Message-ID at the upstream).  All go to one destination,
so most of them wait for one of its slots (queue destination-concurrency)
while the others are delivered.
"""

import email.parser
import email.policy
import json
import os
import threading

from conftest import Client, free_port, send_message, spool_empty, wait_for
from test_relay import LOCAL_RULE, queue_cli, upstreams  # noqa: F401

SENDERS = 8		# sessions at once
PER_SENDER = 250	# messages each (messages-per-session is 1000)


def send_batch(srv, k, ids, errors):
    """Session k sends PER_SENDER messages; their Message-IDs into ids."""
    try:
        c = Client(srv.port)
        c.hello()
        for i in range(PER_SENDER):
            mid = "<backlog.%d.%d@example.org>" % (k, i)
            send_message(c, "alice@example.org", ["bob@remote.test"],
                "From: <alice@example.org>\r\nTo: <bob@remote.test>\r\n"
                "Subject: backlog %d %d\r\nMessage-ID: %s\r\n\r\nhello\r\n"
                % (k, i, mid))
            ids.append(mid)
        c.send("QUIT")
        c.expect(221)
        c.close()
    except Exception as e:		# reported by the test's thread
        errors.append(repr(e))


def message_ids(up):
    """The Message-ID of every message the upstream stored (repeats kept)."""
    parse = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    out = []
    for name in os.listdir(up.out):
        if name.endswith(".eml"):
            with open(os.path.join(up.out, name), "rb") as f:
                out.append(parse.parse(f)["Message-ID"])
    return out


def test_deep_queue_is_flushed_exactly_once(make_postern, upstreams):
    port = free_port()
    srv = make_postern(extra=("queue retry-min 1h", "queue retry-max 2h",
        'action out relay "smtp://127.0.0.1:%d" timeout connect 2s' % port),
        rules=(LOCAL_RULE, "match from local action out"))
    ids, errors = [], []
    senders = [threading.Thread(target=send_batch, args=(srv, k, ids, errors))
        for k in range(SENDERS)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(120)
    assert not errors, errors
    want = SENDERS * PER_SENDER
    assert len(set(ids)) == want
    # Every message is tried while the upstream is down, and waits an hour.
    def all_deferred():
        r = queue_cli(srv, "list", "--json")
        assert r.returncode == 0, r.stderr
        return sum(1 for m in json.loads(r.stdout)
            if m["recipients"][0]["status"] == "deferred") == want
    wait_for(all_deferred, timeout=60, interval=0.5,
        what="%d deferred messages" % want)

    up = upstreams(port=port)
    r = queue_cli(srv, "flush")
    assert r.returncode == 0 and r.stdout == "queue flushed\n", (r.stdout,
        r.stderr)
    wait_for(lambda: spool_empty(srv), timeout=120, interval=0.5,
        what="an empty spool after the flush")
    got = message_ids(up)
    assert len(got) == want, "%d copies for %d messages" % (len(got), want)
    assert sorted(got) == sorted(ids)
