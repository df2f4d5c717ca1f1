"""Damaged messages (docs/queue.md): a queued message whose content file is
missing or not the size its envelope records, or whose envelope or status
records do not parse, is never delivered and never dropped.  It stays in
the spool for the operator: an error line at each try, the gauge
postern_queue_messages{state="damaged"}, and `postern queue list`, which
shows it with the reason and exits 1."""

import json
import os

from conftest import free_port, log_events, wait_for
from test_metrics import scrape
from test_relay import (LOCAL_RULE, queue_cli, queue_json, relay_server,
    settle, submit, upstreams)  # noqa: F401 (a fixture)


def deferred_server(make_postern, port, extra=()):
    """A server relaying remote.test to 127.0.0.1:port (down for now)."""
    return relay_server(make_postern, 'action out relay '
        '"smtp://127.0.0.1:%d" timeout connect 1s' % port, extra=extra,
        rules=(LOCAL_RULE, "match to domain remote.test action out"))


def wait_deferred(srv, qids):
    def cond():
        ms = queue_json(srv)
        return all(q in ms and ms[q]["recipients"][-1]["status"] ==
            "deferred" for q in qids)
    wait_for(cond, timeout=15, what="the deferrals while the relay is down")


def damaged_lines(srv, qid):
    """The why= of each `damaged` error logged for qid."""
    return [kv["why"] for kv, line in log_events(srv, "damaged")
        if kv.get("qid") == qid and " error " in line]


def test_a_content_file_cut_short_is_kept_not_relayed(make_postern,
        upstreams):
    port = free_port()
    srv = deferred_server(make_postern, port)
    qid = submit(srv, "alice@example.org", ["bob@remote.test"],
        subject="cut")
    wait_deferred(srv, [qid])
    srv.stop()
    path = srv.path("spool", "msg", qid)
    with open(path, "rb") as f:
        whole = f.read()
    os.truncate(path, 40)
    up = upstreams.scripted(port=port)
    srv.start()
    why = "msg/%s holds 40 octets, its envelope says %d" % (qid, len(whole))
    # The start tries every message at once: it goes up, or is found
    # damaged.
    wait_for(lambda: up.count() or damaged_lines(srv, qid), timeout=10,
        what="the start's try of the message")
    assert up.count() == 0, "relayed: %r" % up.stored[0][2]
    assert not [e for e in up.events if e.startswith("helo:")], up.events
    assert damaged_lines(srv, qid)[0] == why
    # The files are as they were.
    assert os.path.getsize(path) == 40
    assert os.path.exists(srv.path("spool", "env", qid))
    assert not [kv for kv, _ in log_events(srv, "delivered")]
    r = queue_cli(srv, "list")
    assert r.returncode == 1, r
    assert "%s?" % qid in r.stdout and "(damaged: %s)" % why in r.stdout, \
        r.stdout
    assert "1 damaged message" in r.stderr, r.stderr
    r = queue_cli(srv, "list", "--json")
    assert r.returncode == 1
    (m,) = json.loads(r.stdout)
    assert m["queue_id"] == qid and m["damaged"] == why
    assert m["recipients"][0]["address"] == "bob@remote.test"
    # The operator puts the content back: a flush delivers it, once.
    with open(path, "wb") as f:
        f.write(whole)
    r = queue_cli(srv, "flush", qid)
    assert r.returncode == 0, r.stderr
    settle(srv, up.count, 1, "the content put back")
    assert up.stored[0][2].endswith(b"hello upstream\r\n")


def test_damaged_envelope_and_records_are_listed_and_counted(make_postern,
        upstreams):
    port, mport = free_port(), free_port()
    srv = deferred_server(make_postern, port,
        extra=["metrics listen 127.0.0.1:%d" % mport])
    qids = [submit(srv, "alice@example.org", ["bob@remote.test"],
        subject="m%d" % i) for i in range(2)]
    wait_deferred(srv, qids)
    srv.stop()
    env = srv.path("spool", "env", qids[0])
    with open(env) as f:
        text = f.read()
    with open(env, "w") as f:
        f.write(text[:len(text) // 2])		# torn
    with open(srv.path("spool", "done", qids[1]), "a") as f:
        f.write("defer 0 x\n")			# a bad record
    upstreams.scripted(port=port)
    srv.start()
    r = queue_cli(srv, "list")
    assert r.returncode == 1, r
    assert "Mail queue is empty" not in r.stdout
    for q in qids:
        assert "%s?" % q in r.stdout, r.stdout
    assert "(damaged: done/%s: bad done record)" % qids[1] in r.stdout
    assert "2 damaged messages" in r.stderr, r.stderr
    r = queue_cli(srv, "list", "--json")
    assert r.returncode == 1
    got = {m["queue_id"]: m["damaged"] for m in json.loads(r.stdout)}
    assert set(got) == set(qids) and all(got.values()), got
    # The server says so too: at each try, and in a gauge.
    wait_for(lambda: all(damaged_lines(srv, q) for q in qids), timeout=10,
        what="an error line for each damaged message")
    assert damaged_lines(srv, qids[0])[0].startswith("env/%s: " % qids[0])
    assert damaged_lines(srv, qids[1])[0] == \
        "done/%s: bad done record" % qids[1]
    wait_for(lambda: scrape(mport).get(
        'postern_queue_messages{state="damaged"}') == 2, timeout=10,
        what="the damaged gauge at 2")
    # The operator may delete one all the same.
    r = queue_cli(srv, "delete", qids[0])
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(env)
    assert sorted(os.listdir(srv.path("spool", "env"))) == [qids[1]]


def test_content_lost_after_a_delivery_is_kept_not_dropped(make_postern):
    srv = deferred_server(make_postern, free_port())
    qid = submit(srv, "alice@example.org", ["bob@example.org",
        "x@remote.test"], subject="half")
    wait_deferred(srv, [qid])
    assert len(srv.maildir("bob")) == 1
    srv.stop()
    with open(srv.path("spool", "done", qid)) as f:
        assert f.read().startswith("done 0\n")
    os.unlink(srv.path("spool", "msg", qid))
    srv.start()
    why = "stat(msg/%s): No such file or directory" % qid
    wait_for(lambda: damaged_lines(srv, qid) or "removing unaccepted" in
        srv.log(), timeout=10, what="the start's look at the message")
    # Its records prove it was accepted: not removed as a commit cut short.
    assert "removing unaccepted" not in srv.log(), srv.log()[-1500:]
    assert os.path.exists(srv.path("spool", "env", qid))
    assert os.path.exists(srv.path("spool", "done", qid))
    assert damaged_lines(srv, qid)[0] == why
    r = queue_cli(srv, "show", qid)
    assert r.returncode == 1 and "State:       damaged: %s" % why in \
        r.stdout, r
