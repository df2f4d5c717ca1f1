"""The event log on stderr and the per-session transaction log."""

import json
import os
import re
import signal

import pytest

from conftest import make_config, queue_id, run_cli, send_message, \
    wait_for

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


def session_mix(srv):
    """One accepted message, one recipient refused at RCPT, a QUIT."""
    with srv.session() as c:
        c.hello("client.example")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<x@elsewhere.test>"); c.expect(550, "5.7.1")
        c.send("RCPT TO:<bob@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: logged\r\n\r\nhello\r\n.\r\n")
        qid = queue_id(c.expect(250, "2.0.0"))
        c.send("QUIT"); c.expect(221, "2.0.0")
    wait_for(lambda: "disconnect" in srv.log() and "delivered" in srv.log(),
        what="the disconnect and delivered lines")
    return qid


def test_event_lines_for_one_session(postern):
    qid = session_mix(postern)
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
        return fs and all("< 221 " in open(f, errors="replace").read()
            for f in fs) and fs

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


VARYING = {"time", "sid", "qid", "port", "duration_ms", "loop", "size",
    "to", "dsn_qid"}


def test_json_lines_carry_the_fields_of_key_value(make_postern):
    """The same session against a text and a JSON server: every JSON line
    parses, and each event has the same keys (and, but for ids and times,
    the same values) as its key=value line."""
    text_srv = make_postern()
    json_srv = make_postern(extra=["log format json"])
    session_mix(text_srv)
    session_mix(json_srv)
    json_srv.stop()
    text_srv.stop()
    objs = []
    for line in json_srv.log().splitlines():
        if line.startswith("===") or not line:
            continue
        obj = json.loads(line)		# every line: one object
        assert isinstance(obj, dict) and obj["level"] in (
            "error", "warn", "info", "debug"), line
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$",
            obj["time"]), line
        objs.append(obj)
    by_event = {}
    for o in objs:
        if "event" in o:
            by_event.setdefault(o["event"], []).append(o)
    text = {}
    for ev, kv, _line in events(text_srv.log()):
        text.setdefault(ev, []).append(kv)
    for ev in ("connect", "helo", "mail", "rcpt", "reject", "accepted",
            "delivered", "disconnect"):
        assert ev in by_event and ev in text, (ev, sorted(by_event))
        for t, j in zip(text[ev], by_event[ev]):
            jkeys = set(j) - {"time", "level", "event"}
            assert set(t) == jkeys, (ev, sorted(t), sorted(jkeys))
            for k in set(t) - VARYING:
                assert t[k] == j[k], (ev, k, t[k], j[k])
    rej = by_event["reject"][0]
    assert (rej["code"], rej["esc"]) == ("550", "5.7.1"), rej
    assert any("listening on" in o.get("msg", "") for o in objs), objs[:3]


def test_log_file_reopened_on_sigusr1(make_postern):
    srv = make_postern(extra=["log file {tmp}/postern.log"])
    path = srv.path("postern.log")
    wait_for(lambda: os.path.exists(path) and "postern started" in
        open(path).read(), what="the start-up lines in the log file")
    assert "postern started" not in srv.log(), "lines went to stderr too"
    session_mix_quiet(srv, "first.example")
    wait_for(lambda: "first.example" in open(path).read(),
        what="the first session in the file")
    os.rename(path, path + ".1")		# what logrotate does
    srv.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(path), what="a new log file")
    session_mix_quiet(srv, "second.example")
    wait_for(lambda: "second.example" in open(path).read(),
        what="the second session in the new file")
    old = open(path + ".1").read()
    assert "first.example" in old and "second.example" not in old
    assert "log file reopened" in open(path).read()


def test_sigusr1_without_a_log_file_says_nothing_was_reopened(postern):
    postern.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "reopen" in postern.log(), what="the SIGUSR1 line")
    assert "log file reopened" not in postern.log(), postern.log()
    assert "info SIGUSR1: no log file to reopen" in postern.log()


def session_mix_quiet(srv, helo):
    with srv.session() as c:
        c.hello(helo)
        c.send("QUIT"); c.expect(221)


def test_log_file_rotates_by_size(make_postern):
    srv = make_postern(extra=["log file {tmp}/p.log size 64k count 2",
        "log level debug"])
    path = srv.path("p.log")
    with srv.session() as c:
        c.hello()
        for _ in range(3000):		# about 75 bytes of debug line each
            c.send("NOOP")
        for _ in range(3000):
            c.expect(250)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: os.path.exists(path + ".2"), timeout=15,
        what="a second rotation")
    assert not os.path.exists(path + ".3")
    for p in (path + ".1", path + ".2"):
        size = os.path.getsize(p)
        # Rotated once past the size: by at most one loop's buffer.
        assert 64 * 1024 <= size <= 80 * 1024, (p, size)
        with open(p) as f:
            body = f.read()
        assert body.endswith("\n") and all(re.match(
            r"\d{4}-\d\d-\d\dT\S+ (error|warn|info|debug) ", l)
            for l in body.splitlines()), p


def test_journal_gets_priorities(make_postern):
    """Under systemd (JOURNAL_STREAM names stderr) each line starts with
    its syslog priority; with a JOURNAL_STREAM that is not stderr, not."""
    srv = make_postern(start=False, extra=["log level debug"])
    open(srv.log_path, "ab").close()
    st = os.stat(srv.log_path)
    srv.env = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}
    srv.start()
    session_mix_quiet(srv, "journal.example")
    wait_for(lambda: "journal.example" in srv.log(), what="the session")
    lines = [l for l in srv.log().splitlines() if l and not
        l.startswith("===")]
    prio = {"error": "3", "warn": "4", "info": "6", "debug": "7"}
    seen = set()
    for l in lines:
        m = re.match(r"<(\d)>\S+ (error|warn|info|debug) ", l)
        assert m, l
        assert m.group(1) == prio[m.group(2)], l
        seen.add(m.group(2))
    assert {"warn", "info", "debug"} <= seen, seen
    srv.stop()
    srv.env = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino + 1)}
    srv.start()
    wait_for(lambda: srv.log().count("postern started") == 2, what="start")
    tail = srv.log().split("=== start ===")[-1]
    assert "<6>" not in tail and re.search(r"^\S+ info ", tail, re.M), tail


def test_journal_priorities_come_back_after_a_log_file(make_postern):
    """From stderr to a log file and back, by reloads: the lines on stderr
    start with their priorities again."""
    srv = make_postern(start=False)
    open(srv.log_path, "ab").close()
    st = os.stat(srv.log_path)
    srv.env = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}
    srv.start()
    path = srv.path("p.log")

    def reloaded(extra):
        def done():
            return srv.log().count("reload: configuration") + (open(
                path).read().count("reload: configuration") if
                os.path.exists(path) else 0)
        n = done()
        srv.write_config(make_config(extra))
        srv.sighup()
        wait_for(lambda: done() > n, what="the reload")

    session_mix_quiet(srv, "before.example")
    reloaded(["log file {tmp}/p.log"])
    session_mix_quiet(srv, "infile.example")
    reloaded([])
    session_mix_quiet(srv, "after.example")
    wait_for(lambda: "after.example" in srv.log(), what="the last session")
    helos = {h: l for l in srv.log().splitlines() for h in ("before.example",
        "infile.example", "after.example") if 'name="%s"' % h in l}
    assert "infile.example" not in helos, helos
    for h in ("before.example", "after.example"):
        assert re.match(r"<6>\S+ info helo ", helos[h]), helos[h]


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


def hostile_session(srv):
    """Peer text meant to break a log line: quotes, escapes, key=value."""
    with srv.session() as c:
        c.expect(220)
        c.send_raw(b'EHLO a"b X=2 \\ \xff\xc3\r\n'); c.expect(250)
        c.send_raw(b'\x1b[2J"X=1\xff\\ FOO\r\n'); c.expect(500, "5.5.2")
        c.send('MAIL FROM:<"a X=3\\"}"@example.net>'); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: "disconnect" in srv.log(), what="the disconnect line")


def test_json_lines_of_peer_text_parse(make_postern):
    """Quotes, backslashes and key=value from a client: every JSON line
    still parses, with one field per key of the text line and the same
    (escaped) value."""
    text_srv = make_postern()
    json_srv = make_postern(extra=["log format json"])
    hostile_session(text_srv)
    hostile_session(json_srv)
    objs = [json.loads(l) for l in json_srv.log().splitlines()
        if l and not l.startswith("===")]
    by_event = {}
    for o in objs:
        by_event.setdefault(o.get("event"), []).append(o)
    text = {ev: kv for ev, kv, _ in events(text_srv.log())}
    for ev in ("helo", "reject", "mail"):
        j = by_event[ev][0]
        assert set(text[ev]) == set(j) - {"time", "level", "event"}, (ev, j)
        for k in set(text[ev]) - VARYING:
            assert text[ev][k] == j[k], (ev, k, text[ev][k], j[k])
    assert by_event["helo"][0]["name"] == r"a\x22b X=2 \x5c \xff\xc3"
    assert by_event["reject"][0]["stage"] == r"\x1b[2J\x22X=1\xff\x5c"
    assert "X" not in by_event["mail"][0], by_event["mail"][0]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_lua_log_of_client_text_forges_no_field(make_postern, fmt):
    """postern.log's text is one quoted value: the client's words in it
    give the line no level, event or sid of theirs."""
    srv = make_postern(extra=["log format %s" % fmt,
        'on mail { lua "{tmp}/h.lua" }'], start=False)
    with open(srv.path("h.lua"), "w") as f:
        f.write('function mail(f, state)\n'
            '  postern.log("sender is " .. f.sender)\nend\n')
    srv.start()
    with srv.session() as c:
        c.hello()
        c.send('MAIL FROM:<"x level=error event=forged sid=123"@example.net>')
        c.expect(250)
        c.send("QUIT"); c.expect(221)
    line = wait_for(lambda: [l for l in srv.log().splitlines()
        if "sender is" in l], what="the lua line")[0]
    said = r"sender is \x22x level=error event=forged sid=123\x22@example.net"
    if fmt == "json":
        obj = json.loads(line)
        assert (obj["level"], obj["event"], obj["msg"]) == ("info", "lua",
            said), line
        assert "sid" not in obj and obj["script"] == srv.path("h.lua"), line
    else:
        words = line.split()
        assert words[1:3] == ["info", "lua"], line
        kv = {k: v.strip('"') for k, v in KV.findall(" ".join(words[3:]))}
        assert kv == {"script": srv.path("h.lua"), "msg": said}, line


def test_a_backends_error_text_forges_no_field(make_postern, pg):
    """A table's backend is outside text too: the error a PostgreSQL
    function raises, with a quote, key=value words, a backslash, a control
    byte and a newline, is the one quoted value of the outage line, in the
    text and the JSON log alike."""
    pg.sql("CREATE FUNCTION hostile(k text) RETURNS text LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION '%', 'x\" level=error event=forged '"
        "|| 'forged=1' || chr(1) || E'\\\\' || chr(10) || 'y'; END $$")
    table = ('table boxes pgsql:"%s" query "SELECT hostile($1)" '
        'cache off negative-cache off' % pg.conninfo())
    said = (r"pgsql boxes: ERROR:  x\x22 level=error event=forged "
        r"forged=1\x01\x5c\x0ay\x0a")
    lines = {}
    for fmt in ("text", "json"):
        srv = make_postern(extra=["log format %s" % fmt, table],
            rules=["match to <boxes> action local"])
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@far.example>"); c.expect(250)
            c.send("RCPT TO:<bob@example.org>"); c.expect(451, "4.3.0")
            c.send("QUIT"); c.expect(221)
        lines[fmt] = wait_for(lambda: [l for l in srv.log().splitlines()
            if "backend=pgsql" in l or '"backend":"pgsql"' in l],
            what="the outage line")
    assert len(lines["text"]) == 1, lines["text"]
    _ts, level, rest = lines["text"][0].split(" ", 2)
    assert level == "warn", lines["text"][0]
    kv = {k: v.strip('"') for k, v in KV.findall(rest)}
    assert set(kv) == {"table", "backend", "why"}, lines["text"][0]
    assert kv["why"].startswith(said), kv["why"]
    assert len(lines["json"]) == 1, lines["json"]
    obj = json.loads(lines["json"][0])
    assert set(obj) == {"time", "level", "table", "backend", "why",
        "msg"}, obj
    assert obj["level"] == "warn" and obj["why"] == kv["why"], obj


def test_shutdown_421_after_a_message_is_of_no_command(postern):
    """The 421 of a stop, between commands, answers none: stage=command,
    not the DATA before it."""
    with postern.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"],
            "Subject: last\r\n\r\nhi\r\n")
        postern.sigterm()
        c.expect(421, "4.3.2")
    assert postern.wait_exit() == 0
    rejects = [kv for e, kv, _ in events(postern.log()) if e == "reject"]
    assert [(kv["stage"], kv["code"]) for kv in rejects] == [
        ("command", "421")], rejects
