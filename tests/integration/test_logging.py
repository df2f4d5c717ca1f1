"""The event log on stderr and the per-session transaction log."""

import os
import re

from conftest import queue_id, send_message, wait_for

EVENTS = {"connect", "helo", "mail", "rcpt", "reject", "accepted", "delivered",
    "deferred", "disconnect"}
KV = re.compile(r'([A-Za-z][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def events(log):
    """[(event, {key: value})] of the "<ts> <level> <event> sid=.. k=v" lines."""
    out = []
    for line in log.splitlines():
        words = line.split()
        for i, w in enumerate(words[:4]):
            if w in EVENTS and i + 1 < len(words) and "=" in words[i + 1]:
                kv = {k: v.strip('"') for k, v in KV.findall(" ".join(words[i + 1:]))}
                out.append((w, kv, line))
                break
    return out


def of_session(log, sid):
    return [(e, kv, line) for e, kv, line in events(log) if kv.get("sid") == sid]


def test_event_lines_for_one_session(postern):
    with postern.session() as c:
        c.hello("client.example")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<x@elsewhere.test>"); c.expect(550, "5.7.1")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: logged\r\n\r\nhello\r\n.\r\n")
        qid = queue_id(c.expect(250, "2.0.0"))
        c.send("QUIT"); c.expect(221, "2.0.0")
    wait_for(lambda: any(e == "disconnect" for e, _, _ in events(postern.log())) and
        any(e == "delivered" for e, _, _ in events(postern.log())),
        what="delivered and disconnect lines")
    log = postern.log()
    connects = [kv for e, kv, _ in events(log) if e == "connect"]
    assert len(connects) == 1 and connects[0].get("sid"), log
    sid = connects[0]["sid"]
    seen = of_session(log, sid)
    names = [e for e, _, _ in seen]
    for want in ("connect", "helo", "mail", "rcpt", "reject", "accepted",
            "delivered", "disconnect"):
        assert want in names, "no %r line with sid=%s; log:\n%s" % (want, sid, log)
    assert names[0] == "connect" and names[-1] in ("disconnect", "delivered"), names

    def one(name):
        return [kv for e, kv, _ in seen if e == name][0]

    rej = one("reject")
    assert rej.get("code") == "550", rej
    assert rej.get("esc", "5.7.1") == "5.7.1", rej
    acc = one("accepted")
    assert acc.get("qid") == qid, acc
    assert acc.get("size", "").isdigit() and int(acc["size"]) > 0, acc
    assert acc.get("rcpts") == "1", acc
    dlv = one("delivered")
    assert dlv.get("qid") == qid, dlv
    assert dlv.get("rcpt") in ("bob@example.org", "<bob@example.org>"), dlv


def test_each_session_has_its_own_sid(postern):
    for _ in range(3):
        with postern.session() as c:
            c.hello()
            c.send("QUIT"); c.expect(221)
    wait_for(lambda: len([1 for e, _, _ in events(postern.log())
        if e == "disconnect"]) == 3, what="three disconnect lines")
    sids = [kv.get("sid") for e, kv, _ in events(postern.log()) if e == "connect"]
    assert len(sids) == 3 and len(set(sids)) == 3 and all(sids), sids


def test_listening_line_at_start(postern):
    assert "listening on" in postern.log(), postern.log()


TS = re.compile(r"\d{2}:\d{2}:\d{2}\.\d{6}")


def test_transaction_log(make_postern):
    srv = make_postern(extra=["transaction-log {tmp}/tlog"], start=False)
    os.makedirs(srv.path("tlog"))
    srv.start()
    marker = "BODY-MARKER-7f3a"
    with srv.session() as c:
        c.hello("client.example")
        send_message(c, "a@example.net", ["bob@example.org"],
            "Subject: tlog\r\n\r\n%s\r\n" % marker)
        c.send("QUIT"); c.expect(221, "2.0.0")

    def files():
        out = []
        for root, _, names in os.walk(srv.path("tlog")):
            out += [os.path.join(root, n) for n in names]
        return out

    def complete():
        fs = files()
        return fs and all("221" in open(f, errors="replace").read() for f in fs) and fs

    fs = wait_for(complete, what="a transaction log file with the 221")
    assert len(fs) == 1, fs
    text = open(fs[0], errors="replace").read()
    lines = [l for l in text.splitlines() if l.strip()]
    ins = [l for l in lines if re.search(r"(^|\s)>\s", l)]
    outs = [l for l in lines if re.search(r"(^|\s)<\s", l)]
    assert ins and outs, "no '>' / '<' lines:\n" + text
    for l in ins + outs:
        assert TS.search(l), "no microsecond timestamp: %r" % l
    joined = "\n".join(lines)
    for want in ("EHLO client.example", "MAIL FROM:<a@example.net>",
            "RCPT TO:<bob@example.org>", "DATA", "220 ", "250 2.1.0", "354",
            "250 2.0.0", "QUIT", "221 2.0.0"):
        assert want in joined, "%r missing from the transaction log:\n%s" % (
            want, text)
    assert marker not in text, "message body copied into the transaction log"


def test_sids_are_unique_across_a_restart(postern):
    # A supervisor may restart postern within the same second; log lines of
    # the two runs must still not share a session id.
    def one_session():
        with postern.session() as c:
            c.hello()
            c.send("QUIT"); c.expect(221)
    one_session()
    postern.restart()
    one_session()
    wait_for(lambda: len([1 for e, _, _ in events(postern.log())
        if e == "disconnect"]) == 2, what="two disconnect lines")
    sids = [kv.get("sid") for e, kv, _ in events(postern.log()) if e == "connect"]
    assert len(sids) == 2 and sids[0] != sids[1], \
        "session ids %s repeat across a restart" % sids


# ----- peer text in log lines ------------------------------------------------

def raw_log(srv):
    with open(srv.log_path, "rb") as f:
        return f.read()


def assert_log_is_plain(srv):
    """Every byte of the log is printable ASCII (or a newline): no terminal
    escape, no control byte, no UTF-8 (valid or not) from a peer."""
    bad = [(i, b) for i, b in enumerate(raw_log(srv))
        if b != 0x0a and not 0x20 <= b < 0x7f]
    assert not bad, "raw bytes in the log at %r:\n%r" % (bad[:5],
        raw_log(srv)[max(0, bad[0][0] - 200):bad[0][0] + 100])


def wait_logged(srv, event):
    """Wait for the first EVENT line, then check the whole log is plain."""
    wait_for(lambda: any(e == event for e, _, _ in events(srv.log())),
        what="the %s line" % event)
    assert_log_is_plain(srv)


def test_unknown_verb_is_escaped_in_stage(postern):
    verb = b'\x1b[2J"X=1\xff\xfe'
    with postern.session() as c:
        c.hello()
        c.send_raw(verb + b" FOO\r\n"); c.expect(500, "5.5.2")
        c.send("QUIT"); c.expect(221)
    wait_logged(postern, "disconnect")
    rejects = [(kv, line) for e, kv, line in events(postern.log())
        if e == "reject"]
    assert len(rejects) == 1, rejects
    kv, line = rejects[0]
    assert kv.get("stage") == r"\x1b[2J\x22X=1\xff\xfe", line
    assert "X" not in kv and kv.get("code") == "500", line


def test_helo_name_is_escaped(postern):
    with postern.session() as c:
        c.expect(220)
        c.send_raw(b'EHLO a"b X=2 \xff\xc3\r\n'); c.expect(250)
        c.send_raw(b"EHLO x\x1b[31m\r\n"); c.expect(501, "5.5.4")
        c.send("QUIT"); c.expect(221)
    wait_logged(postern, "disconnect")
    helos = [(kv, line) for e, kv, line in events(postern.log())
        if e == "helo"]
    assert len(helos) == 1, helos
    kv, line = helos[0]
    assert kv.get("name") == r"a\x22b X=2 \xff\xc3", line
    assert "X" not in kv, line


def test_addresses_are_escaped_one_way(postern):
    """A quoted local part cannot forge a key; a UTF-8 address reads the
    same in every line that names it (mail, rcpt, accepted, delivered)."""
    with postern.session() as c:
        c.hello()
        c.send('MAIL FROM:<"a X=3"@example.net>'); c.expect(250, "2.1.0")
        c.send("RSET"); c.expect(250)
        send_message(c, "jürgen@example.net", ["bøb@example.org"],
            "Subject: utf8\r\n\r\nhi\r\n", mail_params=" SMTPUTF8")
        c.send("QUIT"); c.expect(221)
    wait_logged(postern, "delivered")
    ev = events(postern.log())
    mails = [kv for e, kv, _ in ev if e == "mail"]
    assert mails[0].get("from") == r"<\x22a\x20X=3\x22@example.net>", mails
    assert all("X" not in kv for _, kv, _ in ev), [l for _, _, l in ev]
    sender, rcpt = r"<j\xc3\xbcrgen@example.net>", r"<b\xc3\xb8b@example.org>"
    assert mails[1].get("from") == sender, mails
    assert [kv.get("from") for e, kv, _ in ev if e == "accepted"] == [sender]
    assert [kv.get("to") for e, kv, _ in ev if e == "rcpt"] == [rcpt]
    assert [kv.get("rcpt") for e, kv, _ in ev if e == "delivered"] == [rcpt]
