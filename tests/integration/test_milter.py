"""
The milter client against a real milter: milter_filter.py, a
python3-milter (libmilter) filter started here on a free loopback port or a
unix socket.  Replies at each stage, the eom modifications byte-exact in the
delivered Maildir files, the replay of earlier callbacks to a milter that
sits only in a later chain, and a milter that is down or never answers.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import (HOST, chain_verdicts, close_listener, make_config,
    free_port, port_listening, read_bytes, read_log, run_cli, sigstop,
    split_delivered, spool_empty, unverified_context, wait_for)
from test_relay import upstreams  # noqa: F401 (a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
FILTER = os.path.join(HERE, "milter_filter.py")
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) \
    else sys.executable
MILTER_START_TIMEOUT = 10.0

STAGES = ("connect", "helo", "mail", "rcpt", "data", "header", "eom")


# ----- the milter process ----------------------------------------------------

def unix_listening(path):
    """True when a unix socket listens on path (no connection made)."""
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split()
                # Num RefCount Protocol Flags Type St Inode Path;
                # flag 0x10000 is __SO_ACCEPTCON (listening).
                if len(parts) >= 8 and parts[7] == path and \
                        int(parts[3], 16) & 0x10000:
                    return True
    except OSError:
        pass
    return False


class MilterProc:
    def __init__(self, tmp, mode, args, unix=False, record=False,
            noreply=False, port=None):
        self.dir = str(tmp)
        n = len(os.listdir(self.dir))
        self.log_path = os.path.join(self.dir, "milter%d.stderr" % n)
        self.record_path = os.path.join(self.dir, "milter%d.json" % n) \
            if record else None
        if unix:
            self.path = os.path.join(self.dir, "m%d.sock" % n)
            self.spec = "unix:" + self.path
            self.port = None
        else:
            self.port = port or free_port()	# port: where one was before
            self.spec = "inet:%d@%s" % (self.port, HOST)
        argv = [PYTHON, FILTER, self.spec, mode] + [str(a) for a in args]
        if record:
            argv += ["--record", self.record_path]
        if noreply:
            argv.append("--noreply")
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()
        listening = (lambda: unix_listening(self.path)) if unix else \
            (lambda: port_listening(self.port))
        deadline = time.monotonic() + MILTER_START_TIMEOUT
        while not listening():
            if self.proc.poll() is not None:
                pytest.fail("milter_filter exited with %d at start-up:\n%s"
                    % (self.proc.returncode, self.log()))
            if time.monotonic() >= deadline:
                self.stop()
                pytest.fail("milter_filter did not listen on %s within "
                    "%.0fs:\n%s" % (self.spec, MILTER_START_TIMEOUT,
                    self.log()))
            time.sleep(0.02)

    def log(self):
        return read_log(self.log_path)

    def events(self):
        """The recorded connections: a list of event lists."""
        with open(self.record_path) as f:
            return json.load(f)

    def stop(self):
        # SIGKILL: libmilter notices SIGTERM only at its next 5 s poll,
        # and the filter has nothing to save.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)	# if paused
            self.proc.kill()
        self.proc.wait()

    def pause(self):
        """SIGSTOP, returning once every thread has stopped: the filter
        keeps its sockets and answers nothing (libmilter serves each
        connection in a thread of its own, which may still answer while
        the stop is only pending)."""
        sigstop(self.proc)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    kill9 = stop


@pytest.fixture
def make_milter(tmp_path):
    """Factory: make_milter(mode, *args, unix=False, record=False,
    noreply=False, port=None) starts milter_filter.py and waits until it
    listens."""
    d = tmp_path / "milter"
    d.mkdir()
    procs = []

    def make(mode, *args, **kw):
        m = MilterProc(d, mode, args, **kw)
        procs.append(m)
        return m

    yield make
    problems = []
    for m in procs:
        m.stop()
        if "Traceback" in m.log():
            problems.append("milter_filter %s raised:\n%s" % (m.spec,
                m.log()[-3000:]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


class SilentListener:
    """A TCP listener that accepts and never says a word."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.spec = "inet:%d@%s" % (self.port, HOST)
        self.conns = []
        self.received = []
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(0.2)
            self.conns.append(c)

    def close(self):
        self.stopping = True
        close_listener(self.sock)
        for c in self.conns:
            c.close()
        self.thread.join(2)


@pytest.fixture
def silent_listener():
    s = SilentListener()
    yield s
    s.close()


# ----- helpers ---------------------------------------------------------------

def milter_config(spec, stages=("eom",), opts="", extra=()):
    """A config with `milter "SPEC" OPTS` in the chain of each stage."""
    chains = ['on %s { milter "%s"%s }' % (st, spec,
        " " + opts if opts else "") for st in stages]
    return make_config(list(extra) + ["state memory"] + chains)


def wire(lines):
    """Logical message lines (bytes) -> the DATA block with the final dot."""
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n"
        for l in lines) + b".\r\n"


def lf(lines):
    """Logical lines -> the Maildir form (LF line ends)."""
    return b"".join(l + b"\n" for l in lines)


def transaction(c, sender, rcpts, lines):
    """MAIL, RCPTs (each must be 250), DATA; returns the final reply."""
    c.send("MAIL FROM:<%s>" % sender); c.expect(250, "2.1.0")
    for r in rcpts:
        c.send("RCPT TO:<%s>" % r); c.expect(250, "2.1.5")
    c.send("DATA"); c.expect(354)
    c.send_raw(wire(lines))
    return c.read_reply(timeout=15)


def assert_bytes(got, want, what):
    """Byte-exact comparison; on failure names the first differing line and
    shows both texts."""
    if got == want:
        return
    g, w = got.split(b"\n"), want.split(b"\n")
    for i in range(max(len(g), len(w))):
        gl = g[i] if i < len(g) else None
        wl = w[i] if i < len(w) else None
        if gl != wl:
            break
    raise AssertionError("%s differs at line %d: got %r, want %r\n"
        "--- got ---\n%r\n--- want ---\n%r" % (what, i + 1, gl, wl, got,
        want))


def delivered(srv, user, n=1, timeout=10.0):
    files = wait_for(lambda: len(srv.maildir(user)) >= n and
        srv.maildir(user), timeout=timeout,
        what="%d delivery(s) to %s; stderr:\n%s" % (n, user,
        srv.log()[-2000:]))
    return files


def stays_empty(srv, user):
    """user got no copy, and none is on its way: called after the replies,
    once the spool is empty nothing accepted is left to deliver."""
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert srv.maildir(user) == [], "%s got a copy: %r" % (user,
        [read_bytes(f)[:400] for f in srv.maildir(user)])


# ----- modifications, byte-exact ---------------------------------------------

MOD_MESSAGE = [
    b"X-Keep: 1",
    b"Subject: original",
    b"X-Remove: gone",
    b" continued",
    b"\tand continued again",
    b"From: <a@example.net>",
    b"To: <bob@localhost>, <alice@localhost>",
    b"Message-Id: <milter-mod-1@example.net>",
    b"",
    b"body line 1",
    b".leading dot",
    b"",
    b"Subject: not a header, in the body",
    b"last line",
]

MOD_EXPECTED = [
    b"X-Top: first",
    b"X-Keep: 1",
    b"Subject: changed by milter",
    b"From: <a@example.net>",
    b"To: <bob@localhost>, <alice@localhost>",
    b"Message-Id: <milter-mod-1@example.net>",
    b"X-Milter: yes",
    b"",
    b"body line 1",
    b".leading dot",
    b"",
    b"Subject: not a header, in the body",
    b"last line",
]


@pytest.mark.parametrize("stages", [("eom",), STAGES],
    ids=["eom-only", "every-stage"])
def test_modifications_byte_exact_in_maildir(make_postern, make_milter,
        stages):
    m = make_milter("modify")
    srv = make_postern(config=milter_config(m.spec, stages))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost",
            "alice@localhost"], MOD_MESSAGE)
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s\nmilter:\n%s" \
            % (r, c.transcript(), m.log()[-2000:])
    for user in ("alice", "carol"):
        files = delivered(srv, user)
        assert len(files) == 1, "%s: %d copies" % (user, len(files))
        data = read_bytes(files[0])
        rp, _received, rest = split_delivered(data)
        assert rp == "Return-Path: <new-sender@localhost>", \
            "%s: got %r after chgfrom, want Return-Path: " \
            "<new-sender@localhost>" % (user, rp)
        assert_bytes(rest, lf(MOD_EXPECTED), "%s's Maildir file after the "
            "Return-Path and Received lines" % user)
    stays_empty(srv, "bob")


def send_mods(make_postern, make_milter, tmp_path, mods, message):
    """Send message to bob through a milter doing mods at eom; returns the
    server and the final reply."""
    f = tmp_path / "mods.json"
    f.write_text(json.dumps(mods))
    m = make_milter("mods", str(f))
    srv = make_postern(config=milter_config(m.spec))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"], message)
    return srv, r


def run_mods(make_postern, make_milter, tmp_path, mods, message,
        return_path="<a@example.net>"):
    """Deliver message to bob through a milter doing mods at eom; returns
    the delivered file after the Return-Path and Received lines."""
    srv, r = send_mods(make_postern, make_milter, tmp_path, mods, message)
    assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
        srv.log()[-2000:])
    files = delivered(srv, "bob")
    assert len(files) == 1
    rp, _, rest = split_delivered(read_bytes(files[0]))
    assert rp == "Return-Path: " + return_path, rp
    return rest


def test_chgheader_nth_occurrence_is_case_insensitive(make_postern,
        make_milter, tmp_path):
    msg = [b"Subject: one", b"X-A: 1", b"subject: two", b"X-B: 2",
        b"SUBJECT: three", b"", b"body"]
    rest = run_mods(make_postern, make_milter, tmp_path,
        [["chg", "Subject", 2, "second changed"]], msg)
    lines = rest.split(b"\n")
    # The name's spelling on the changed line is the original's or the
    # milter's; everything else is byte-exact.
    assert lines[2] in (b"subject: second changed", b"Subject: second changed"), \
        "the 2nd Subject (\"subject: two\", line 3) should be changed in " \
        "place; got %r" % rest
    want = lf([b"Subject: one", b"X-A: 1", lines[2], b"X-B: 2",
        b"SUBJECT: three", b"", b"body"])
    assert_bytes(rest, want, "the file after chgheader(Subject, 2)")


def test_chgheader_past_the_count_appends(make_postern, make_milter,
        tmp_path):
    msg = [b"Subject: s", b"X-New: old one", b"", b"body"]
    rest = run_mods(make_postern, make_milter, tmp_path,
        [["chg", "X-New", 2, "appended"], ["chg", "X-Absent", 1, "also"]],
        msg)
    assert_bytes(rest, lf([b"Subject: s", b"X-New: old one",
        b"X-New: appended", b"X-Absent: also", b"", b"body"]),
        "the file after chgheader past the count")


def test_chgheader_empty_value_deletes_folded_header(make_postern,
        make_milter, tmp_path):
    msg = [b"X-Del: first", b"Subject: s", b"X-Del: second", b"  fold 1",
        b"\tfold 2", b"X-After: kept", b"", b" body starting with a space"]
    rest = run_mods(make_postern, make_milter, tmp_path,
        [["chg", "X-Del", 2, ""]], msg)
    assert_bytes(rest, lf([b"X-Del: first", b"Subject: s", b"X-After: kept",
        b"", b" body starting with a space"]),
        "the file after deleting the 2nd (folded) X-Del")


def test_insheader_counts_fields_not_lines(make_postern, make_milter,
        tmp_path):
    msg = [b"X-A: 1", b" folded", b"X-B: 2", b"X-C: 3", b"", b"body"]
    rest = run_mods(make_postern, make_milter, tmp_path,
        [["ins", 2, "X-Ins", "at two"], ["ins", 99, "X-Far", "past the end"],
         ["add", "X-Add-1", "a"], ["add", "X-Add-2", "b"]], msg)
    assert_bytes(rest, lf([b"X-A: 1", b" folded", b"X-B: 2",
        b"X-Ins: at two", b"X-C: 3", b"X-Far: past the end",
        b"X-Add-1: a", b"X-Add-2: b", b"", b"body"]),
        "the file after insheader(2), insheader(99) and two addheaders")


def test_addheader_on_a_message_without_body(make_postern, make_milter,
        tmp_path):
    rest = run_mods(make_postern, make_milter, tmp_path,
        [["add", "X-Milter", "yes"]], [b"Subject: headers only"])
    assert_bytes(rest, lf([b"Subject: headers only", b"X-Milter: yes"]),
        "the file of a header-only message after addheader")


def test_header_value_line_breaks_make_no_blank_line(make_postern,
        make_milter, tmp_path):
    """RFC 5322 3.2.2: a folded line of white space only MUST NOT be
    generated.  A filter's value ending in a line break, or holding an
    empty or blank line, is folded on its other lines only."""
    rest = run_mods(make_postern, make_milter, tmp_path,
        [["add", "X-Nl", "value\n"], ["add", "X-Gap", "a\n\nb"],
         ["add", "X-Blank", "c\n \t\n d\n\n"],
         ["chg", "Subject", 1, "\nfolded at once\n"]],
        [b"Subject: s", b"", b"body"])
    assert_bytes(rest, lf([b"Subject:", b"\tfolded at once",
        b"X-Nl: value", b"X-Gap: a", b"\tb", b"X-Blank: c", b" d", b"",
        b"body"]), "the file after edits whose values hold line breaks")


def test_later_milter_sees_earlier_header_edits(make_postern, make_milter,
        tmp_path):
    """libmilter's xxfi_header: later filters see the header changes and
    additions of earlier ones (a DKIM signer after a tagging filter signs
    what is delivered), and so does a Lua script's facts.headers.  The
    edits reach the Maildir file once."""
    f = tmp_path / "mods.json"
    f.write_text(json.dumps([["chg", "Subject", 1, "[tagged] hello"],
        ["add", "X-Scan", "clean"], ["ins", 0, "X-Top", "1"],
        ["chg", "X-Drop", 1, ""]]))
    a = make_milter("mods", str(f))
    b = make_milter("record", record=True)
    lua = tmp_path / "seen.lua"
    lua.write_text('function eom(f, state)\n'
        '  local h = f.headers or ""\n'
        '  local ok = h:find("Subject: [tagged] hello\\n", 1, true) and\n'
        '    h:find("\\nX-Scan: clean\\n", 1, true) and\n'
        '    not h:find("X-Drop", 1, true)\n'
        '  return {"tag", "edited", ok and "yes" or "no"}\n'
        'end\n')
    srv = make_postern(config=make_config(["state memory",
        'on eom { milter "%s"; lua "%s"; milter "%s" }' % (a.spec, lua,
        b.spec)]))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"From: <a@example.net>", b"X-Drop: x", b"Subject: hello",
            b"", b"body"])
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
        c.send("QUIT"); c.expect(221)
    seen = [ev[1:] for ev in closed_events(b)[0] if ev[0] == "header"]
    assert seen == [["X-Top", "1"], ["From", "<a@example.net>"],
        ["Subject", "[tagged] hello"], ["X-Scan", "clean"]], \
        "the second filter was shown %r" % (seen,)
    log = wait_for(lambda: "accepted" in srv.log() and srv.log(),
        what="the accepted line")
    assert 'state="tx.edited=yes"' in log, log[-2000:]
    rest = split_delivered(read_bytes(delivered(srv, "bob")[0]))[2]
    assert_bytes(rest, lf([b"X-Top: 1", b"From: <a@example.net>",
        b"Subject: [tagged] hello", b"X-Scan: clean", b"", b"body"]),
        "the file after the first filter's edits")


def test_modifications_byte_exact_when_relayed(make_postern, make_milter,
        tmp_path, upstreams):
    # Relayed, the message goes through the spool; whole in memory at eom,
    # it is edited there before its one write.  The upstream gets the
    # edits byte for byte.
    up = upstreams.scripted()
    f = tmp_path / "mods.json"
    f.write_text(json.dumps([["add", "X-Milter", "yes"],
        ["chg", "Subject", 1, "edited"], ["ins", 0, "X-First", "1"]]))
    m = make_milter("mods", str(f))
    srv = make_postern(config=milter_config(m.spec, extra=(
        'action out relay "smtp://127.0.0.1:%d"' % up.port,
        "match to domain example.org action out")))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@example.org"],
            [b"Subject: original", b"To: <bob@example.org>", b"",
            b"body line", b".dot line"])
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
    wait_for(lambda: len(up.stored) == 1, timeout=20,
        what="the message relayed")
    head, body = up.stored[0][2].split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    # Our Received: first: the milter's fields start after it.
    assert lines[0].startswith(b"Received: "), lines
    rest = [l for l in lines[1:] if not l.startswith((b" ", b"\t"))]
    assert rest == [b"X-First: 1", b"Subject: edited",
        b"To: <bob@example.org>", b"X-Milter: yes"], lines
    assert body == b"body line\r\n.dot line\r\n", body


def test_chgfrom_null_sender(make_postern, make_milter, tmp_path):
    """smfi_chgfrom("<>"): the null reverse-path is a sender like any
    other (a filter turning a message into a notification makes it so)."""
    rest = run_mods(make_postern, make_milter, tmp_path,
        [["chgfrom", "<>"]], [b"Subject: s", b"", b"body"],
        return_path="<>")
    assert_bytes(rest, lf([b"Subject: s", b"", b"body"]),
        "the file after chgfrom <>")


@pytest.mark.parametrize("n", [1000, 1001])
def test_more_than_1000_modifications(make_postern, make_milter, tmp_path,
        n):
    """1000 modifications of one message are applied; one more fails the
    handler, logged as what it is."""
    srv, r = send_mods(make_postern, make_milter, tmp_path,
        [["add", "X-A", "v"]] * n, [b"Subject: many", b"", b"body"])
    if n == 1000:
        assert (r.code, r.esc) == (250, "2.0.0"), r
        rest = split_delivered(read_bytes(delivered(srv, "bob")[0]))[2]
        assert rest.count(b"\nX-A: v") == 1000, rest[:400]
        return
    assert (r.code, r.esc) == (451, "4.3.0"), r
    assert 'why="more than 1000 modifications of one message"' in \
        srv.log(), srv.log()[-2000:]
    stays_empty(srv, "bob")


@pytest.mark.parametrize("reason,kept", [("r" * 300, "r" * 255),
    ("suspect attachment", "suspect attachment")], ids=["long", "short"])
def test_quarantine_reason_kept(make_postern, make_milter, tmp_path, reason,
        kept):
    """smfi_quarantine's reason is kept as tx.milter.quarantine; one
    longer than a state value is cut to 255 characters, and the log says
    so."""
    srv, r = send_mods(make_postern, make_milter, tmp_path,
        [["quarantine", reason]], [b"Subject: q", b"", b"body"])
    assert (r.code, r.esc) == (250, "2.0.0"), r
    log = wait_for(lambda: "accepted" in srv.log() and srv.log(),
        what="the accepted line")
    assert 'state="tx.milter.quarantine=%s"' % kept in log, log[-2000:]
    note = 'note="quarantine reason of 300 bytes kept as 255 printable ' \
        'characters"'
    assert (note in log) == (reason != kept), log[-2000:]


@pytest.mark.parametrize("stages", [("eom",), STAGES],
    ids=["eom-only", "every-stage"])
def test_header_block_too_large_then_next_message(make_postern,
        make_milter, stages):
    """A header block over the 256 KiB kept cannot be shown to the filter
    whole: the message is refused for good (552 5.3.4), and the filter's
    connection serves the next message of the session."""
    m = make_milter("record", record=True)
    srv = make_postern(config=milter_config(m.spec, stages))
    big = [b"X-Big-%d: %s" % (i, b"y" * 900) for i in range(300)] + \
        [b"Subject: big", b"", b"body"]
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"], big)
        assert (r.code, r.text) == (552, "5.3.4 Message header block too "
            "large (over 256 KiB)"), "got %r\n%s" % (r, srv.log()[-2000:])
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: small", b"", b"body"])
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r, want 250 for " \
            "the next message\n%s" % (r, srv.log()[-2000:])
    files = delivered(srv, "bob")
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert len(srv.maildir("bob")) == 1
    assert b"\nSubject: small\n" in read_bytes(files[0])
    assert "milter-error" not in srv.log(), srv.log()[-2000:]
    conns = m.events()
    assert len(conns) == 1, "want one connection to the filter: %r" % [
        [e[0] for e in conn] for conn in conns]
    assert [e[0] for e in conns[0]].count("eom") == 1, conns


# ----- replies ---------------------------------------------------------------

def test_reject_rcpt_per_recipient(make_postern, make_milter):
    m = make_milter("reject-rcpt", "bob@localhost")
    srv = make_postern(config=milter_config(m.spec, ("rcpt",)))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>"); c.expect(550, "5.7.1")
        c.send("RCPT TO:<alice@localhost>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(wire([b"Subject: per rcpt", b"", b"hi"]))
        c.expect(250, "2.0.0")
    delivered(srv, "alice")
    stays_empty(srv, "bob")


def test_tempfail_at_mail(make_postern, make_milter):
    m = make_milter("tempfail-mail")
    srv = make_postern(config=milter_config(m.spec, ("mail",)))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(451, "4.7.1")
        c.send("RCPT TO:<bob@localhost>"); c.expect(503)
        c.send("QUIT"); c.expect(221)


def test_reject_at_connect(make_postern, make_milter):
    m = make_milter("reject-connect")
    srv = make_postern(config=milter_config(m.spec, ("connect",)))
    with srv.session() as c:
        c.expect(554, "5.7.1")
    assert chain_verdicts(srv) == [("connect", "reject",
        "Connection rejected")], srv.log()[-2000:]


@pytest.mark.parametrize("stage", ["helo", "mail", "rcpt", "data", "header",
    "eoh", "body", "eom"])
@pytest.mark.parametrize("verdict,code,esc", [("reject", 550, "5.7.1"),
    ("tempfail", 451, "4.7.1")])
def test_verdict_at_each_stage(make_postern, make_milter, stage, verdict,
        code, esc):
    m = make_milter("verdict", stage, verdict)
    srv = make_postern(config=milter_config(m.spec, STAGES))
    at = {"helo": "EHLO", "mail": "MAIL", "rcpt": "RCPT", "data": "DATA"}.get(
        stage, "end of data")
    with srv.session() as c:
        c.expect(220)
        for cmd in ("EHLO client.example", "MAIL FROM:<a@example.net>",
                "RCPT TO:<bob@localhost>", "DATA", None):
            if cmd is None:
                c.send_raw(wire([b"Subject: verdict", b"", b"body"]))
            else:
                c.send(cmd)
            r = c.read_reply(timeout=15)
            if (cmd or "end of data").startswith(at):
                assert (r.code, r.esc) == (code, esc), \
                    "%s %s at %s: got %r, want %d %s\n%s" % (verdict, stage,
                    at, r, code, esc, c.transcript())
                break
            assert r.code in (250, 354), "before %s: got %r\n%s" % (at, r,
                c.transcript())
        c.send("NOOP"); c.expect(250)
    stays_empty(srv, "bob")
    # The chain line says why, in the words the client got.
    assert [v[1:] for v in chain_verdicts(srv)] == [("reject",
        "Command rejected" if verdict == "reject" else
        "Please try again later")], srv.log()[-2000:]


@pytest.mark.parametrize("stage,code,esc,text", [
    ("rcpt", "550", "5.7.0", "milter says no"),
    ("mail", "452", "4.3.1", "milter is busy"),
    ("rcpt", "421", "4.7.0", "milter says bye")])
def test_replycode_exact_line(make_postern, make_milter, stage, code, esc,
        text):
    """The milter's line goes out as it is, a 421 with this host's name
    put first; a 421 then closes the channel (RFC 5321 3.8), the others
    leave the session open."""
    m = make_milter("replycode", stage, code, esc, text)
    srv = make_postern(config=milter_config(m.spec, (stage,)))
    want = "%s %s %s%s" % (code, esc, "test.example " if code == "421" else
        "", text)
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>")
        if stage == "rcpt":
            c.expect(250, "2.1.0")
            c.send("RCPT TO:<bob@localhost>")
        r = c.read_reply()
        assert r.lines == [want], "got %r, want exactly %s" % (r, want)
        if code == "421":
            c.expect_closed()
        else:
            c.send("NOOP"); c.expect(250)
    assert chain_verdicts(srv) == [(stage, "reject", text)], \
        srv.log()[-2000:]


def test_eom_replies_by_header(make_postern, make_milter):
    """One session, one milter in `on eom`: each message asks for its own
    answer; only the accepted ones are delivered."""
    m = make_milter("by-header")
    srv = make_postern(config=milter_config(m.spec))
    cases = [
        ("reject", (550, "5.7.1"), None),
        ("tempfail", (451, "4.7.1"), None),
        ("discard", (250, None), None),
        ("reply 554 5.7.9 milter did not like it", (554, "5.7.9"),
            "554 5.7.9 milter did not like it"),
        ("reply 452 4.2.2 milter mailbox full", (452, "4.2.2"),
            "452 4.2.2 milter mailbox full"),
        ("accept", (250, "2.0.0"), None),
        (None, (250, "2.0.0"), None),
    ]
    with srv.session() as c:
        c.hello()
        for verdict, (code, esc), line in cases:
            lines = [b"Subject: case %s" % (verdict or "plain").encode()]
            if verdict:
                lines.append(b"X-Milter-Verdict: " + verdict.encode())
            r = transaction(c, "a@example.net", ["bob@localhost"],
                lines + [b"", b"body"])
            assert r.code == code and (esc is None or r.esc == esc), \
                "%s: got %r, want %d %s\n%s" % (verdict, r, code, esc or "",
                c.transcript())
            if line:
                assert r.lines == [line], "%s: got %r, want exactly %r" % (
                    verdict, r, line)
            c.send("NOOP"); c.expect(250)
    files = delivered(srv, "bob", 2)
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    subjects = sorted(read_bytes(f).split(b"Subject: ", 1)[1].split(b"\n")[0]
        for f in srv.maildir("bob"))
    assert subjects == [b"case accept", b"case plain"], \
        "delivered: %r (discard/reject/tempfail must not be)" % subjects


def test_unix_socket(make_postern, make_milter):
    m = make_milter("by-header", unix=True)
    srv = make_postern(config=milter_config(m.spec))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: no", b"X-Milter-Verdict: reject", b"", b"x"])
        assert (r.code, r.esc) == (550, "5.7.1"), "got %r\n%s" % (r,
            c.transcript())
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: yes", b"", b"x"])
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
    files = delivered(srv, "bob")
    assert_bytes(split_delivered(read_bytes(files[0]))[2],
        b"Subject: yes\n\nx\n", "the message through the unix: milter")


# ----- what the milter saw ---------------------------------------------------

REC_MESSAGE = [
    b"Subject: hello",
    b"From: <a@example.net>",
    b"X-Two: a  b",
    b"",
    b"line one",
    b".dot line",
    b"",
    b"last",
]
REC_BODY = b"line one\r\n.dot line\r\n\r\nlast\r\n"
REC_MESSAGE2 = [b"Subject: second", b"", b"tiny"]
REC_BODY2 = b"tiny\r\n"


def collapse(events):
    """Sum the body chunks into one ["body", total] event; drop an abort
    right after an eom (some MTAs reset the filter between messages)."""
    out = []
    for ev in events:
        if ev[0] == "body" and out and out[-1][0] == "body":
            out[-1] = ["body", out[-1][1] + ev[1]]
        elif ev[0] == "abort" and out and out[-1][0] == "eom":
            continue
        else:
            out.append(list(ev))
    return out


def message_events(sender, rcpts, headers, body):
    return ([["mail", "<%s>" % sender]] + [["rcpt", "<%s>" % r]
        for r in rcpts] + [["data"]] + [["header", n, v] for n, v in headers]
        + [["eoh"], ["body", len(body)],
        ["eom", len(body), hashlib.sha256(body).hexdigest()]])


def closed_events(m):
    """The recording milter m's connections, once the last one is closed."""
    return wait_for(lambda: (lambda e: e and e[-1] and e[-1][-1] == ["close"]
        and e)(m.events()), timeout=10, what="the milter's close callback "
        "after QUIT; recorded so far: %r" % (m.events(),))


@pytest.mark.parametrize("stages,noreply", [(("eom",), False),
    (STAGES, False), (STAGES, True)],
    ids=["replayed-at-eom", "live", "live-noreply"])
def test_milter_sees_every_callback(make_postern, make_milter, stages,
        noreply):
    m = make_milter("record", record=True, noreply=noreply)
    srv = make_postern(config=milter_config(m.spec, stages))
    with srv.session() as c:
        client_port = c.sock.getsockname()[1]
        c.hello("client.example")
        r = transaction(c, "a@example.net", ["bob@localhost",
            "alice@localhost"], REC_MESSAGE)
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
        r = transaction(c, "b@example.net", ["alice@localhost"], REC_MESSAGE2)
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
        c.send("QUIT"); c.expect(221)
    conns = closed_events(m)
    assert len(conns) == 1, "want one milter connection for the session, " \
        "got %d: %r" % (len(conns), conns)
    got = collapse(conns[0])
    assert got[1][:3] == ["connect", got[1][1], "inet"] and got[1][1], \
        "connect event %r" % (got[1],)
    want = [["negotiate"], ["connect", got[1][1], "inet",
        ["127.0.0.1", client_port]], ["helo", "client.example"]]
    want += message_events("a@example.net", ["bob@localhost",
        "alice@localhost"], [("Subject", "hello"),
        ("From", "<a@example.net>"), ("X-Two", "a  b")], REC_BODY)
    want += message_events("b@example.net", ["alice@localhost"],
        [("Subject", "second")], REC_BODY2)
    want += [["close"]]
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        assert g == w, "event %d: got %r, want %r\nall got:\n%s" % (i, g, w,
            "\n".join(map(repr, got)))


def test_helo_after_starttls_carries_tls_macros(make_postern, make_milter):
    """RFC 3207 4.2: after STARTTLS the client greets again.  The filter is
    given that HELO, with {tls_version} and {cipher}, even under the name
    it already had."""
    m = make_milter("record", record=True)
    srv = make_postern(config=milter_config(m.spec, ("helo", "eom"),
        extra=["tls self-signed {tmp}/tls"]))
    with srv.session() as c:
        c.hello("client.example")
        sock = c.starttls(unverified_context())
        tls = [sock.version(), sock.cipher()[0]]
        c.send("EHLO client.example"); c.expect(250)
        r = transaction(c, "a@example.net", ["bob@localhost"],
            REC_MESSAGE2)
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
        c.send("QUIT"); c.expect(221)
    conns = closed_events(m)
    helos = [ev for ev in conns[0] if ev[0] == "helo"]
    assert helos == [["helo", "client.example"], ["helo", "client.example"]
        + tls], "the filter's HELOs: %r\n" \
        "all events: %r" % (helos, conns)


# ----- a milter that is not there or does not answer -------------------------

def test_dead_milter_is_451_and_nothing_delivered(make_postern):
    spec = "inet:%d@%s" % (free_port(), HOST)
    srv = make_postern(config=milter_config(spec))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: dead", b"", b"x"])
        assert (r.code, r.esc) == (451, "4.3.0"), "got %r, want 451 4.3.0\n%s" \
            % (r, c.transcript())
        c.send("NOOP"); c.expect(250)
    stays_empty(srv, "bob")


def delivered_as_sent(srv, subject, what):
    """A message with subject to bob gets 250, and bob's copy is the
    message as it was sent."""
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: " + subject, b"", b"x"])
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
    files = delivered(srv, "bob")
    assert_bytes(split_delivered(read_bytes(files[0]))[2],
        b"Subject: " + subject + b"\n\nx\n", what)


def test_dead_milter_on_error_accept_delivers(make_postern):
    spec = "inet:%d@%s" % (free_port(), HOST)
    srv = make_postern(config=milter_config(spec, opts="on-error accept"))
    delivered_as_sent(srv, b"dead but accepted", "the message delivered "
        "past a dead milter")


def test_dead_milter_on_error_reject_is_5xx(make_postern):
    spec = "unix:/nonexistent/postern-test-milter.sock"
    srv = make_postern(config=milter_config(spec, opts="on-error reject"))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: dead, rejected", b"", b"x"])
        assert r.code // 100 == 5, "got %r, want a 5xx\n%s" % (r,
            c.transcript())
    stays_empty(srv, "bob")


def test_silent_milter_times_out(make_postern, silent_listener):
    srv = make_postern(config=milter_config(silent_listener.spec,
        opts="timeout 1s"))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        t0 = time.monotonic()
        c.send_raw(wire([b"Subject: silent", b"", b"x"]))
        r = c.read_reply(timeout=15)
        took = time.monotonic() - t0
        assert r.code == 451, "got %r, want 451 after the 1s timeout\n%s" % (
            r, c.transcript())
        assert 0.8 <= took <= 12.0, "the 451 came after %.2fs; want about " \
            "the 1s timeout" % took
        c.send("NOOP"); c.expect(250)
    assert silent_listener.conns, "postern never connected to the listener"
    stays_empty(srv, "bob")


def test_milter_dying_between_messages(make_postern, make_milter):
    m = make_milter("continue")
    srv = make_postern(config=milter_config(m.spec))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: first", b"", b"x"])
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
        m.kill9()
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: second", b"", b"x"])
        assert (r.code, r.esc) == (451, "4.3.0"), "got %r, want 451 4.3.0 " \
            "once the milter is gone\n%s" % (r, c.transcript())
        c.send("NOOP"); c.expect(250)
    files = delivered(srv, "bob")
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert len(srv.maildir("bob")) == 1


def milter_packet(cmd, data=b""):
    """One milter packet: 32-bit length (command byte included), command,
    data."""
    return len(data + b"x").to_bytes(4, "big") + cmd + data


class RawFilter:
    """A filter on a raw socket, for what libmilter would never send: one
    connection, each packet from postern answered with what answer(cmd,
    data) returns (bytes, written at once), after which it closes the
    connection when answer set hang_up.  OPTNEG is answered with version 6,
    the actions in `actions` and no protocol steps declined; D, A and Q
    packets get no answer."""

    actions = 0xfd			# what postern offers
    hang_up = False

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(4)
        self.spec = "inet:%d@%s" % (self.sock.getsockname()[1], HOST)
        self.commands = b""		# every command byte received
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def answer(self, cmd, data):
        return milter_packet(b"c")

    def run(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        c.settimeout(10)
        buf = b""
        with c:
            for _ in range(10000):      # bounded: one short conversation
                while len(buf) < 4 or len(buf) < 4 + int.from_bytes(
                        buf[:4], "big"):
                    chunk = c.recv(262144)
                    if not chunk:
                        return
                    buf += chunk
                n = int.from_bytes(buf[:4], "big")
                cmd, data, buf = buf[4:5], buf[5:4 + n], buf[4 + n:]
                self.commands += cmd
                if cmd == b"O":
                    out = milter_packet(b"O", (6).to_bytes(4, "big") +
                        self.actions.to_bytes(4, "big") +
                        (0).to_bytes(4, "big"))
                elif cmd in (b"D", b"A"):
                    continue
                elif cmd == b"Q":
                    return
                else:
                    out = self.answer(cmd, data)
                c.sendall(out)
                if self.hang_up:
                    return

    def close(self):
        close_listener(self.sock)
        self.thread.join(2)


@pytest.fixture
def raw_filter():
    """Factory: raw_filter(cls, *args) starts a RawFilter subclass."""
    made = []

    def make(cls, *args):
        f = cls(*args)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


class GreedyFilter(RawFilter):
    """Like rspamd, asks for every action (CHGBODY and SETSYMLIST included)
    whatever it is offered; at end of message it adds a header, and with
    replace_body also sends a body replacement ('b'), which postern does
    not support."""

    actions = 0x1ff

    def __init__(self, replace_body):
        self.replace_body = replace_body
        super().__init__()

    def answer(self, cmd, data):
        if cmd != b"E":
            return milter_packet(b"c")
        out = milter_packet(b"h", b"X-Greedy\0yes\0")
        if self.replace_body:
            out += milter_packet(b"b", b"new body\r\n")
        return out + milter_packet(b"c")


class ExtraReplyFilter(RawFilter):
    """Answers the command `extra` with two CONTINUEs in one write, one
    reply too many, and RCPT with REJECT."""

    def __init__(self, extra):
        self.extra = extra
        super().__init__()

    def answer(self, cmd, data):
        if cmd == self.extra:
            return milter_packet(b"c") * 2
        return milter_packet(b"r" if cmd == b"R" else b"c")


@pytest.mark.parametrize("stages,extra", [
    (("mail", "rcpt", "eom"), b"M"), (("eom",), b"C")],
    ids=["between-runs", "within-a-run"])
def test_reply_nobody_asked_for(make_postern, raw_filter, stages, extra):
    """A filter that answers a command twice broke the protocol: the handler
    fails (451 4.3.0), logged with why; the reply too many is never taken as
    the next command's answer (which would let the filter's REJECT of the
    RCPT fall on a later command)."""
    f = raw_filter(ExtraReplyFilter, extra)
    srv = make_postern(config=milter_config(f.spec, stages,
        opts="timeout 5s"))
    with srv.session() as c:
        c.hello()
        if extra == b"M":
            c.send("MAIL FROM:<a@example.net>")
            r = c.read_reply(timeout=15)
        else:
            r = transaction(c, "a@example.net", ["bob@localhost"],
                [b"Subject: one reply too many", b"", b"x"])
        assert (r.code, r.esc) == (451, "4.3.0"), "got %r, want 451 4.3.0" \
            "\n%s\nfilter saw %r" % (r, c.transcript(), f.commands)
        c.send("NOOP"); c.expect(250)
    wait_for(lambda: 'milter-error' in srv.log() and
        'why="reply nobody asked for"' in srv.log(),
        what="the milter-error line; log:\n%s" % srv.log()[-2000:])
    stays_empty(srv, "bob")


class FailingEditsFilter(RawFilter):
    """At end of message adds a header and deletes bob (the first half of a
    redirect), then fails as `how` says: closes the connection, says
    nothing more, or sends a zero-length packet."""

    def __init__(self, how):
        self.how = how
        super().__init__()

    def answer(self, cmd, data):
        if cmd != b"E":
            return milter_packet(b"c")
        out = milter_packet(b"h", b"X-Half\0done\0") + \
            milter_packet(b"-", b"<bob@localhost>\0")
        self.hang_up = self.how == "close"
        return out + (b"\0\0\0\0" if self.how == "zero-length" else b"")


@pytest.mark.parametrize("how", ["close", "silent", "zero-length"])
def test_failed_filter_edits_dropped(make_postern, raw_filter, how):
    """A filter that fails at end of message after some edits: with on-error
    accept the chain goes on as if it were not there, so none of its edits
    take effect and the message reaches bob as sent (not 250'd and dropped
    with him deleted)."""
    f = raw_filter(FailingEditsFilter, how)
    srv = make_postern(config=milter_config(f.spec,
        opts="timeout 1s on-error accept"))
    delivered_as_sent(srv, b"half done", "bob's copy past a filter that "
        "failed after its edits")
    assert " milter-error " in srv.log(), srv.log()[-2000:]


def test_body_pieces_go_out_without_delay(make_postern, raw_filter):
    """The filter's TCP socket has TCP_NODELAY: each 64 KiB body piece is a
    packet the filter answers before the next goes out, and with Nagle's
    algorithm the tail of each waits for the filter's delayed ACK (some
    40 ms or more a piece: 2 MiB took 2.8 s).  Only time tells the two
    apart on the wire, so this is a timing bound, a wide one: the 250 for
    2 MiB within 1.5 s of the final dot (well under 0.5 s without Nagle,
    even under the sanitizers)."""
    f = raw_filter(RawFilter)
    srv = make_postern(config=milter_config(f.spec, opts="timeout 30s"))
    line = b"n" * 98
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<bob@localhost>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: big\r\n\r\n" + (line + b"\r\n") * 20972)
        t0 = time.monotonic()
        c.send_raw(b".\r\n")
        r = c.read_reply(timeout=30)
        took = time.monotonic() - t0
        assert (r.code, r.esc) == (250, "2.0.0"), "got %r\n%s" % (r,
            c.transcript())
    assert f.commands.count(b"B") >= 32, f.commands
    assert took < 1.5, "2 MiB reached the filter in %.2fs: small " \
        "packets delayed (Nagle's algorithm)?" % took
    delivered(srv, "bob")


@pytest.mark.parametrize("replace_body", [False, True],
    ids=["asks-for-all", "replaces-body"])
def test_filter_asking_for_every_action(make_postern, raw_filter,
        replace_body):
    """rspamd asks for every action (0xff) even when offered fewer: the
    negotiation goes on (logged), and only a body replacement actually sent
    fails the handler (451 4.3.0, nothing delivered)."""
    f = raw_filter(GreedyFilter, replace_body)
    srv = make_postern(config=milter_config(f.spec, opts="timeout 5s"))
    with srv.session() as c:
        c.hello()
        r = transaction(c, "a@example.net", ["bob@localhost"],
            [b"Subject: greedy", b"", b"x"])
    if replace_body:
        assert (r.code, r.esc) == (451, "4.3.0"), r
        assert "body replacement is not supported" in srv.log()
        stays_empty(srv, "bob")
    else:
        assert r.code == 250, r
        got = read_bytes(delivered(srv, "bob")[0])
        assert b"\nSubject: greedy\nX-Greedy: yes\n\nx\n" in got, got
        assert 'note="asked for actions 0x1ff, offered 0xfd"' in \
            srv.log()


@pytest.mark.parametrize("spec,ok", [
    ("inet:8891@127.0.0.1", True), ("inet6:8891@::1", True),
    ("inet:8891@localhost", True), ("inet6:8891@localhost", True),
    ("inet6:8891@127.0.0.1", False), ("inet:8891@::1", False),
    ("inet:8891@milter.example", False), ("inet:0@127.0.0.1", False),
    ("inet:8891", False), ("tcp:8891@127.0.0.1", False)])
def test_socket_spec_checked(tmp_path, spec, ok):
    """inet is IPv4 and inet6 IPv6, numeric or localhost; postern check
    refuses anything else with the forms it takes."""
    conf = tmp_path / "spec.conf"
    conf.write_text(milter_config(spec).replace("{tmp}", str(tmp_path))
        .replace("{port}", "2"))
    out = run_cli("check", "-c", str(conf))
    if ok:
        assert out.returncode == 0, out.stdout + out.stderr
    else:
        assert out.returncode != 0
        assert 'bad milter socket "%s" (inet:PORT@IP, inet6:PORT@IP or ' \
            "unix:/PATH)" % spec in out.stdout + out.stderr
