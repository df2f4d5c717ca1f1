"""Research modes: "nomail after-data" (the message is taken whole, then
521), the spool's keep folder (a copy of each message, capped, oldest
removed first), and soft-invalid recipients (accepted, never delivered)."""

import os
import re
import shutil

from conftest import (listen_config, log_events, make_config, queue_id,
    read_bytes, send_message, wait_for)

BODY = "Subject: sample\r\n\r\nbuy now\r\n"


def take_then_521(c, rcpts, body=BODY):
    """The whole dialogue answered 2xx/3xx, the content 521 and the close."""
    c.hello()
    c.send("MAIL FROM:<spammer@example.net>"); c.expect(250, "2.1.0")
    for r in rcpts:
        c.send("RCPT TO:<%s>" % r); c.expect(250, "2.1.5")
    c.send("DATA"); c.expect(354)
    c.send_raw(body.encode() + b".\r\n")
    r = c.expect(521, "5.3.2")
    assert "does not accept mail" in r.text, r
    c.expect_closed()


def assert_nothing_kept_in_spool(srv):
    wait_for(lambda: log_events(srv, "disconnect"), what="the disconnect")
    assert srv.spool_files("env") == [] and srv.spool_files("msg") == []
    wait_for(lambda: srv.unaccepted_files() == [],
        what="the refused content removed")


def test_listener_nomail_after_data(make_postern):
    srv = make_postern(config=listen_config("nomail after-data",
        extra=["transaction-log {tmp}/tlog data 1M"]))
    with srv.session() as c:
        # A relay attempt and a local user alike: taken, never routed.
        take_then_521(c, ["bob@example.org", "victim@elsewhere.test"])
    assert_nothing_kept_in_spool(srv)
    assert srv.maildir("bob") == []
    kv, line = wait_for(lambda: log_events(srv, "refused"),
        what="the refused line")[0]
    assert kv["why"] == "nomail after-data", line
    rcpts = [kv for kv, _ in log_events(srv, "rcpt")]
    assert len(rcpts) == 2 and all(r["action"] == "none" for r in rcpts), \
        rcpts


def test_plain_nomail_listener_still_refuses_at_connect(make_postern):
    srv = make_postern(config=listen_config("nomail"))
    with srv.session() as c:
        c.expect(521, "5.3.2")
        c.expect_closed()


def test_chain_nomail_after_data_runs_the_chains(make_postern):
    # The handlers of the later stages still decide: an unknown recipient
    # is refused, a known one taken (and never routed).
    srv = make_postern(extra=[
        "table users { bob@example.org }",
        "on mail { nomail after-data }",
        "on rcpt { verify <users> }"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<spammer@example.net>"); c.expect(250)
        c.send("RCPT TO:<ghost@example.org>"); c.expect(550, "5.1.1")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(BODY.encode() + b".\r\n")
        c.expect(521, "5.3.2")
        c.expect_closed()
    assert_nothing_kept_in_spool(srv)
    assert srv.maildir("bob") == []


def test_chain_nomail_after_data_only_where_it_is_set(make_postern):
    srv = make_postern(extra=['on mail { lua "{tmp}/pick.lua" }'],
        start=False)
    with open(srv.path("pick.lua"), "w") as f:
        f.write('function mail(f, state)\n'
                '  if f.sender == "spammer@example.net" then\n'
                '    state.session.set("nomail", "after-data")\n'
                '  end\n'
                'end\n')
    srv.start()
    with srv.session() as c:
        take_then_521(c, ["bob@example.org"])
    with srv.session() as c:
        c.hello()
        send_message(c, "friend@example.net", ["bob@example.org"], BODY)
    wait_for(lambda: len(srv.maildir("bob")) == 1, what="the friend's mail")


def kept(srv, sub="kept"):
    d = srv.path(sub)
    try:
        return sorted(n for n in os.listdir(d) if not n.startswith("."))
    except FileNotFoundError:
        return []


def keep_config(opts=""):
    return make_config().replace("spool {tmp}/spool",
        "spool {tmp}/spool keep {tmp}/kept" + opts)


def numbered_lines(n, ch):
    """n content lines of 79 octets: a number, then ch."""
    return "".join("%06d %s\r\n" % (i, ch * 70) for i in range(n))


def test_keep_copies_delivered_mail_byte_exact(make_postern):
    srv = make_postern(config=keep_config(" max 1M"))
    # In memory (the fast path) and through the spool and queue (large).
    big = "Subject: large\r\n\r\n" + "z" * 100 + "\r\n"
    big += numbered_lines(1200, "q")
    qids = []
    for body in (BODY, big):
        with srv.session() as c:
            c.hello()
            qids.append(queue_id(send_message(c, "a@example.net",
                ["bob@example.org"], body)))
    wait_for(lambda: len(kept(srv)) == 2 and len(srv.maildir("bob")) == 2,
        what="two deliveries and two copies")
    assert kept(srv) == sorted(q + ".eml" for q in qids), kept(srv)
    by_qid = {}
    for path in srv.maildir("bob"):
        data = read_bytes(path)
        q = re.search(rb"id ([0-9A-Za-z]+)", data).group(1).decode()
        by_qid[q] = data
    for q in qids:
        # The Maildir copy starts with the Return-Path: of its delivery.
        rp, rest = by_qid[q].split(b"\n", 1)
        assert rp == b"Return-Path: <a@example.net>", rp
        assert read_bytes(srv.path("kept", q + ".eml")) == rest, q
    wait_for(lambda: srv.spool_files("msg") == [], what="the spool emptied")


def test_keep_discarded_and_refused(make_postern):
    srv = make_postern(config=make_config([
        "table users { alice@example.org }",
        "on rcpt { verify <users> soft-invalid }"]).replace(
        "spool {tmp}/spool", "spool {tmp}/spool keep {tmp}/kept"))
    with srv.session() as c:
        c.hello()
        r = send_message(c, "a@example.net", ["ghost@example.org"], BODY)
    assert r.code == 250
    names = wait_for(lambda: kept(srv), what="the discarded copy")
    assert len(names) == 1 and names[0].endswith(".discarded.eml"), names
    text = read_bytes(srv.path("kept", names[0]))
    assert text.endswith(b"Subject: sample\n\nbuy now\n"), text

    srv2 = make_postern(config=listen_config("nomail after-data").replace(
        "spool {tmp}/spool", "spool {tmp}/spool keep {tmp}/kept"))
    with srv2.session() as c:
        take_then_521(c, ["bob@example.org"])
    names = wait_for(lambda: kept(srv2), what="the refused copy")
    assert len(names) == 1 and names[0].endswith(".refused.eml"), names
    assert read_bytes(srv2.path("kept", names[0])).endswith(
        b"\n\nbuy now\n")


def test_keep_cap_removes_the_oldest(make_postern):
    srv = make_postern(config=keep_config(" max 1M"))
    body = "Subject: bulk\r\n\r\n" + numbered_lines(4000, "k")  # 300 KiB
    qids = []
    for i in range(5):
        with srv.session() as c:
            c.hello()
            qids.append(queue_id(send_message(c, "a@example.net",
                ["bob@example.org"], body)))
        wait_for(lambda: qids[-1] + ".eml" in kept(srv),
            what="copy %d" % i)
    names = kept(srv)
    total = sum(os.path.getsize(srv.path("kept", n)) for n in names)
    assert total <= 1 << 20, total
    assert names == sorted(q + ".eml" for q in qids[-len(names):]) and \
        len(names) == 3, (names, qids)


def test_keep_copy_over_the_cap_is_not_made(make_postern):
    srv = make_postern(config=keep_config(" max 1M"))
    big = "Subject: big\r\n\r\n" + numbered_lines(20000, "k")  # 1.5 MiB
    qids = []
    with srv.session() as c:
        c.hello()
        for body in (BODY, BODY, big):
            qids.append(queue_id(send_message(c, "a@example.net",
                ["bob@example.org"], body)))
    [(kv, _)] = wait_for(lambda: log_events(srv, "keep-error"),
        what="the big copy's keep-error")
    assert kv["qid"] == qids[2], (kv, qids)
    assert re.fullmatch(r"keep .*/kept/%s\.eml: \d+ octets, more than the "
        r"folder's cap of 1048576" % qids[2], kv["why"]), kv
    wait_for(lambda: len(srv.maildir("bob")) == 3, what="three deliveries")
    # The older copies, which fit, stay.
    assert kept(srv) == sorted(q + ".eml" for q in qids[:2]), kept(srv)


def test_keep_folder_removed_is_made_again(make_postern):
    srv = make_postern(config=keep_config())
    # Small in memory (the fast path), large through the spool and queue.
    large = "Subject: large\r\n\r\n" + numbered_lines(1200, "q")
    with srv.session() as c:
        c.hello()
        first = queue_id(send_message(c, "a@example.net",
            ["bob@example.org"], BODY))
    wait_for(lambda: kept(srv) == [first + ".eml"], what="the first copy")
    shutil.rmtree(srv.path("kept"))
    qids = []
    with srv.session() as c:
        c.hello()
        for body in (BODY, large):
            qids.append(queue_id(send_message(c, "a@example.net",
                ["bob@example.org"], body)))
    wait_for(lambda: kept(srv) == sorted(q + ".eml" for q in qids),
        what="both copies in the folder made again")
    assert log_events(srv, "keep-error") == []


def test_soft_invalid_recipients_recipe(make_postern):
    # docs/chains.md: accept unknown local parts, deliver only the known.
    srv = make_postern(extra=[
        "table users { alice@example.org, bob@example.org }",
        "on rcpt { verify <users> soft-invalid }"])
    with srv.session() as c:
        c.hello()
        real = send_message(c, "a@example.net", ["alice@example.org",
            "ghost@example.org", "nobody@example.org"], BODY)
        # A message for unknown recipients only: 250, and dropped; its
        # reply looks like the other's, so it tells the sender nothing.
        r = send_message(c, "b@example.net", ["ghost@example.org"], BODY)
        assert r.code == 250
        assert re.sub(r"queued as \S+", "", r.text) == \
            re.sub(r"queued as \S+", "", real.text) and queue_id(r) != \
            queue_id(real), (r, real)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: len(srv.maildir("alice")) == 1, what="alice's copy")
    [(dropped, _)] = wait_for(lambda: log_events(srv, "discarded"),
        what="the dropped one")
    assert dropped["qid"] == queue_id(r), (dropped, r)
    assert srv.maildir("ghost") == [] and srv.maildir("nobody") == []
    none = sorted(kv["to"] for kv, _ in log_events(srv, "rcpt")
        if kv.get("action") == "none")
    assert none == ["<ghost@example.org>", "<ghost@example.org>",
        "<nobody@example.org>"], none
    # The accepted message names only the real recipient.
    [acc] = [kv for kv, _ in log_events(srv, "accepted")]
    assert acc["rcpts"] == "1", acc
