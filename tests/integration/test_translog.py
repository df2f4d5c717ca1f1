"""Transaction logs: one file per session, written by a thread of their own:
commands, replies, the message content and its end, notes; the command-only
and reply-only variants; the content bound, the cap per file and on the
folder (oldest removed first).  A full disk: test_disk_faults.py."""

import os
import re
import shutil

import pytest

from conftest import (listen_config, log_events, make_config, send_message,
    wait_for)

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z (\S+) ?(.*)$")
BODY = ("Subject: research\r\nX-Tag: one\r\n\r\nfirst line\r\n"
    "..stuffed dot\r\n\r\nlast line\r\n")


def tlog_files(srv, sub="tlog"):
    d = srv.path(sub)
    try:
        return sorted(os.path.join(d, n) for n in os.listdir(d))
    except FileNotFoundError:
        return []


def parse(path):
    """[(stamp, mark, text)] of a log file; every line must parse."""
    out = []
    with open(path, "rb") as f:
        for raw in f.read().decode("utf-8", "replace").splitlines():
            m = LINE.match(raw)
            assert m, "malformed line %r in %s" % (raw, path)
            out.append(m.groups())
    return out


def finished(srv, n=1, sub="tlog"):
    """The n files, once each ends with the session's last reply (221)."""
    def done():
        fs = tlog_files(srv, sub)
        if len(fs) < n:
            return None
        if all(any(t.startswith("221") for _, _, t in parse(f)) for f in fs):
            return fs
        return None
    return wait_for(done, what="%d finished transaction logs" % n)


def one_message(srv, body=BODY, quit=True):
    with srv.session() as c:
        c.hello("client.example")
        r = send_message(c, "a@example.net", ["bob@example.org"], body)
        if quit:
            c.send("QUIT"); c.expect(221)
    return r


def index(lines, mark, prefix):
    for i, (_, m, t) in enumerate(lines):
        if m == mark and t.startswith(prefix):
            return i
    raise AssertionError("no %r line starting %r in:\n%s" % (mark, prefix,
        "\n".join("%s %s" % (m, t) for _, m, t in lines)))


def test_commands_replies_content_and_marks_in_order(make_postern):
    srv = make_postern(extra=["transaction-log {tmp}/tlog data 1M"])
    one_message(srv)
    [path] = finished(srv)
    lines = parse(path)
    stamps = [s for s, _, _ in lines]
    assert stamps == sorted(stamps), "timestamps go back:\n%s" % stamps
    want = [("#", "connect ip=127.0.0.1"), ("<", "220 "), (">", "EHLO "),
        ("<", "250-test.example"), (">", "MAIL FROM:<a@example.net>"),
        ("<", "250 2.1.0"), (">", "RCPT TO:<bob@example.org>"),
        ("<", "250 2.1.5"), (">", "DATA"), ("<", "354 "),
        ("D", "Subject: research"), (".", "end of data"),
        ("#", "accepted qid="), ("<", "250 2.0.0"), (">", "QUIT"),
        ("<", "221 ")]
    at = [index(lines, m, p) for m, p in want]
    assert at == sorted(at), "out of order: %s\n%s" % (at, lines)
    data = [t for _, m, t in lines if m == "D"]
    # The content as received, dot-unstuffed, one line each.
    assert data == ["Subject: research", "X-Tag: one", "", "first line",
        ".stuffed dot", "", "last line"], data
    assert "Received:" not in "\n".join(data), "our own header logged"


def test_content_is_off_unless_asked(make_postern):
    srv = make_postern(extra=["transaction-log {tmp}/tlog"])
    one_message(srv)
    [path] = finished(srv)
    marks = {m for _, m, _ in parse(path)}
    assert "D" not in marks and "." not in marks, marks


@pytest.mark.parametrize("variant,want,unwanted", [
    ("commands", ">", "<"), ("replies", "<", ">")])
def test_command_only_and_reply_only(make_postern, variant, want, unwanted):
    srv = make_postern(extra=["transaction-log {tmp}/tlog %s" % variant])
    one_message(srv, quit=False)
    path = wait_for(lambda: [f for f in tlog_files(srv)
        if any(t.startswith("accepted") for _, _, t in parse(f))],
        what="the accepted note")[0]
    # The session ends: its last line is its close.
    wait_for(lambda: log_events(srv, "disconnect"), what="the disconnect")
    marks = [m for _, m, _ in parse(path)]
    assert want in marks and unwanted not in marks, marks
    assert "#" in marks, marks


def test_command_lines_whole_up_to_the_limit(make_postern):
    """A command line is logged whole (escaped) however long the limit lets
    it be; one over the limit, refused unread, as "[line too long]"."""
    srv = make_postern(extra=["transaction-log {tmp}/tlog",
        "limit line-length 65536"])
    arg = "n" * 20000 + '"' * 10000 + "z"
    with srv.session() as c:
        c.hello()
        c.send("NOOP " + arg); c.expect(250)
        c.send("NOOP " + "x" * 70000); c.expect(500, "5.5.2")
        c.send("QUIT"); c.expect(221)
    [path] = finished(srv)
    ins = [t for _, m, t in parse(path) if m == ">"]
    want = "NOOP " + "n" * 20000 + r"\x22" * 10000 + "z"
    assert ins[1] == want, "logged %d octets, ending %r" % (len(ins[1]),
        ins[1][-20:])
    assert ins[2:] == ["[line too long]", "QUIT"], ins[2:]


def test_content_bound_per_message(make_postern):
    srv = make_postern(extra=["transaction-log {tmp}/tlog data 1k"])
    body = "Subject: big\r\n\r\n" + "".join("line %04d %s\r\n" % (i, "x" * 60)
        for i in range(100))
    one_message(srv, body)
    [path] = finished(srv)
    lines = parse(path)
    data = [t for _, m, t in lines if m == "D"]
    # The last line may be cut: no line end counted for it.
    assert 1000 < sum(len(t) + 1 for t in data) - 1 <= 1024, data
    cut = index(lines, "#", "data cut at 1024 octets")
    assert index(lines, ".", "end of data") > cut


def test_cap_per_file(make_postern):
    srv = make_postern(extra=["transaction-log {tmp}/tlog max-file 4k"])
    with srv.session() as c:
        c.hello()
        for _ in range(100):
            c.send("NOOP"); c.expect(250)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: log_events(srv, "disconnect"), what="the disconnect")
    path = wait_for(lambda: [f for f in tlog_files(srv) if "size cap" in
        open(f, errors="replace").read()], what="the cap note")[0]
    assert os.path.getsize(path) <= 4096
    lines = parse(path)
    assert lines[-1][1:] == ("#", "file size cap reached: the rest is not "
        "logged"), lines[-3:]


def test_total_cap_removes_the_oldest(make_postern):
    srv = make_postern(extra=["transaction-log {tmp}/tlog max-file 4k "
        "max-total 12k"])
    for i in range(12):
        one_message(srv)
        wait_for(lambda: len(log_events(srv, "disconnect")) == i + 1,
            what="session %d's end" % i)
    sids = [kv["sid"] for kv, _ in log_events(srv, "connect")]

    def size(f):
        try:
            return os.path.getsize(f)
        except FileNotFoundError:	# the writer removed it meanwhile
            return 0

    def settled():
        # The writer removes the oldest files after it wrote a new one:
        # settled once the last session is there and the folder is under
        # its cap.
        fs = tlog_files(srv)
        names = "\n".join(fs)
        try:
            whole = all(any(t.startswith("221") for _, _, t in parse(f))
                for f in fs)
        except FileNotFoundError:
            return False
        return (sids[-1] in names and whole and
            sum(size(f) for f in fs) <= 12 * 1024) and fs
    fs = wait_for(settled, what="the last session's log, the folder "
        "within max-total")
    kept = [s for s in sids if any(s in f for f in fs)]
    # What is left is the newest sessions, with none missing between.
    assert kept == sids[-len(kept):] and 2 <= len(kept) < 12, (kept, sids)


def test_proxied_session_names_its_balancer(make_postern):
    srv = make_postern(config=listen_config("proxy-protocol",
        extra=["transaction-log {tmp}/tlog"]))
    from test_proxy_protocol import proxied, v1
    with proxied(srv, v1("203.0.113.9")) as c:
        c.hello()
        c.send("QUIT"); c.expect(221)
    [path] = finished(srv)
    assert "203.0.113.9" in os.path.basename(path)
    assert parse(path)[0][1:] == ("#", "connect ip=203.0.113.9 port=40000 "
        "via=127.0.0.1 proxy=v1")


REFUSED = {
    # over "limit message-size 4k"; its first 2 KiB are logged, then cut
    "too big": (b"Subject: one\r\n\r\n" + b"".join(b"AAAA line %04d %s\r\n"
        % (i, b"a" * 50) for i in range(100)), 552),
    "bare LF": (b"Subject: one\r\n\r\nAAAA bare\nend\r\n", 554),
    "NUL": (b"Subject: one\r\n\r\nAAAA nul \0 here\r\n", 554),
    "long line": (b"Subject: one\r\n\r\nAAAA " + b"x" * 1200 + b"\r\n", 554),
}


def assert_second_message_whole(lines):
    """The refused content ends ("." before its refusal), and the next
    message's content is logged whole, then its end and its acceptance."""
    ends = [i for i, (_, m, _) in enumerate(lines) if m == "."]
    assert len(ends) == 2, "want a \".\" line for each message:\n" + \
        "\n".join("%s %s" % (m, t) for _, m, t in lines)
    second = index(lines, "D", "Subject: two")
    assert ends[0] < second < ends[1], (ends, second, lines)
    data = [t for _, m, t in lines[second:ends[1]] if m == "D"]
    assert data == ["Subject: two", "", "BBBB second message"], data
    assert lines[ends[1]][2] == "end of data, 37 octets", lines[ends[1]]
    _, mark, text = lines[ends[1] + 1]
    assert mark == "#" and text.startswith("accepted qid="), text


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_content_refused_ends_and_the_next_is_logged(make_postern, case):
    body, code = REFUSED[case]
    srv = make_postern(extra=["transaction-log {tmp}/tlog data 2k",
        "limit message-size 4k"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(body + b".\r\n")
        c.expect(code)
        send_message(c, "a@example.net", ["bob@example.org"],
            "Subject: two\r\n\r\nBBBB second message\r\n")
        c.send("QUIT"); c.expect(221)
    [path] = finished(srv)
    lines = parse(path)
    assert_second_message_whole(lines)
    end = index(lines, ".", "end of data")
    _, mark, text = lines[end + 1]
    assert mark == "<" and text.startswith("%d " % code), lines[end:end + 2]
    if case == "too big":
        assert lines[end][2] == "end of data, %d octets" % len(body), \
            lines[end]


def test_bdat_chunk_then_rset_ends_the_content(make_postern):
    srv = make_postern(extra=["transaction-log {tmp}/tlog data 2k"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        chunk = b"Subject: one\r\n\r\nabandoned\r\n"
        c.send_raw(b"BDAT %d\r\n" % len(chunk) + chunk); c.expect(250)
        c.send("RSET"); c.expect(250)
        send_message(c, "a@example.net", ["bob@example.org"],
            "Subject: two\r\n\r\nBBBB second message\r\n")
        c.send("QUIT"); c.expect(221)
    [path] = finished(srv)
    lines = parse(path)
    rset = index(lines, ">", "RSET")
    assert lines[rset + 1][1:] == (".", "end of data, %d octets" %
        len(chunk)), lines[rset:rset + 3]
    assert_second_message_whole(lines)


def test_removed_folder_is_made_again(make_postern):
    srv = make_postern(extra=["transaction-log {tmp}/tlog"])
    one_message(srv)
    finished(srv)
    shutil.rmtree(srv.path("tlog"))
    one_message(srv)
    [path] = finished(srv)
    index(parse(path), "#", "accepted qid=")
    assert "transaction-log" not in srv.log(), srv.log()
