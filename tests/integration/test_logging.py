"""The event log on stderr and the per-session transaction log."""

import os
import re

from conftest import queue_id, run_cli, send_message, wait_for

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


def debug_lines(log):
    return [l for l in log.splitlines() if len(l.split()) > 1 and
        l.split()[1] == "debug"]


def test_log_level_on_the_command_line_beats_the_config(make_postern):
    """run --log-level debug logs debug lines although the config says
    warn, and still does after a reload (SIGHUP reads 'log level warn'
    again)."""
    srv = make_postern(extra=["log level warn"], start=False)
    srv.run_args = ["--log-level", "debug"]
    srv.start()

    def session():
        with srv.session() as c:
            c.hello()
            c.send("QUIT"); c.expect(221)

    session()
    wait_for(lambda: debug_lines(srv.log()), what="debug lines")
    srv.sighup()
    wait_for(lambda: "reload: configuration" in srv.log(), what="the reload")
    before = len(debug_lines(srv.log()))
    session()
    wait_for(lambda: len(debug_lines(srv.log())) > before,
        what="debug lines after the reload")


def test_log_level_option_is_checked(make_postern):
    srv = make_postern(start=False)
    for bad in (["--log-level", "loud"], ["--log-level"]):
        r = run_cli("run", "-c", srv.conf, *bad)
        assert r.returncode == 2, (bad, r)
        assert "log-level" in r.stderr, (bad, r.stderr)
