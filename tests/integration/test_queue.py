"""The queue on a running server: retries with backoff, lifetime and RFC 3464
bounces, `postern queue` commands, and local submission (`postern send`,
`sendmail`).

A temporary Maildir failure is a dangling symlink in place of the user's
mail folder (ENOENT: temporary even for root); removing it lets delivery
work.
"""

import email
import email.header
import email.policy
import email.utils
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import (binary, headers_of, log_events, make_config, read_bytes,
    run_cli, send_message, split_delivered, spool_empty, queue_id, wait_for,
    free_port)

FAST_RETRY = ("queue retry-min 1s", "queue retry-max 2s")


def wired(srv):
    """Wait until the server's queue listens on its control socket;
    returns srv."""
    wait_for(lambda: not srv.alive() or os.path.exists(
        srv.path("spool", "control.sock")), timeout=15,
        what="spool/control.sock")
    assert srv.alive(), "postern exited at start-up:\n" + srv.log()[-2000:]
    return srv


@pytest.fixture
def qpostern(make_postern):
    """make_postern() for servers whose control socket is used at once."""
    def make(*args, **kw):
        return wired(make_postern(*args, **kw))
    return make


def block(srv, user):
    os.makedirs(srv.path("mail"), exist_ok=True)
    os.symlink(srv.path("nowhere", user), srv.path("mail", user))


def unblock(srv, user):
    os.unlink(srv.path("mail", user))


def queue_cli(srv, *args):
    return run_cli("queue", "-c", srv.conf, *args)


def queue_json(srv):
    r = queue_cli(srv, "list", "--json")
    assert r.returncode == 0, r.stderr
    return {m["queue_id"]: m for m in json.loads(r.stdout)}


def rcpt_of(msg, addr):
    return next(r for r in msg["recipients"] if r["address"] == addr)


def submit(srv, sender, rcpts, subject="queued"):
    with srv.session() as c:
        c.hello()
        reply = send_message(c, sender, rcpts,
            "Subject: %s\r\nMessage-ID: <%s@example.net>\r\n\r\nhello\r\n"
            % (subject, subject))
    return queue_id(reply)


def stamp(line):
    """Epoch seconds (float) of a log line's leading timestamp."""
    ts = line.split()[0].rstrip("Z")
    whole, _, frac = ts.partition(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + \
        float("0." + (frac or "0"))


def test_temporary_failure_is_retried_with_backoff_and_listed(qpostern):
    srv = qpostern(extra=FAST_RETRY)
    block(srv, "bob")
    qid = submit(srv, "alice@example.org", ["bob@example.org"])

    def deferred_twice():
        m = queue_json(srv).get(qid)
        return m and rcpt_of(m, "bob@example.org")["attempts"] >= 2 and m
    m = wait_for(deferred_twice, timeout=10, what="two deferrals")
    bob = rcpt_of(m, "bob@example.org")
    assert bob["status"] == "deferred"
    assert "No such file or directory" in bob["last_error"]
    assert bob["next_attempt"] >= m["arrival_time"]
    # The human listing names the message, the error and the recipient.
    r = queue_cli(srv, "list")
    assert r.returncode == 0, r.stderr
    assert qid in r.stdout and "No such file or directory" in r.stdout
    assert "bob@example.org" in r.stdout and "1 Request." in r.stdout
    # Retries back off: the queue's deferrals are retry-min (1 s) apart,
    # plus up to 1/8 jitter.
    times = [stamp(l) for kv, l in log_events(srv, "deferred") if "to" in kv]
    assert len(times) >= 2 and 1.0 <= times[1] - times[0] < 2.0, times
    r = queue_cli(srv, "show", qid)
    assert r.returncode == 0 and "deferred, " in r.stdout, r.stdout

    unblock(srv, "bob")
    wait_for(lambda: len(srv.maildir("bob")) == 1, timeout=10,
        what="delivery after the fix")
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert queue_cli(srv, "list").stdout.strip() == "Mail queue is empty"
    # Nothing left in the spool: no second copy can follow.
    assert len(srv.maildir("bob")) == 1


def test_lifetime_expires_with_a_well_formed_dsn(qpostern):
    srv = qpostern(extra=FAST_RETRY + ("queue lifetime 3s",))
    block(srv, "bob")
    qid = submit(srv, "alice@example.org", ["bob@example.org"], "expiring")
    wait_for(lambda: srv.maildir("alice"), timeout=15, what="the bounce")
    ret, received, rest = split_delivered(read_bytes(srv.maildir("alice")[0]))
    assert ret == "Return-Path: <>"
    msg = email.message_from_bytes(rest, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == "<alice@example.org>"
    assert msg["Auto-Submitted"] == "auto-replied"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain",
        "message/delivery-status", "text/rfc822-headers"]
    assert "bob@example.org" in parts[0].get_payload()
    per_msg, per_rcpt = parts[1].get_payload()
    assert per_msg["Reporting-MTA"] == "dns; test.example"
    assert per_msg["Arrival-Date"]
    assert per_msg["X-Postern-Queue-ID"] == qid
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.org"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "4.4.7"
    assert "expired" in per_rcpt["Diagnostic-Code"]
    assert "Subject: expiring" in parts[2].get_payload()
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert [kv["kind"] for kv, _ in log_events(srv, "dsn")] == ["failure"]


def test_no_bounce_for_null_sender(qpostern):
    srv = qpostern(extra=FAST_RETRY + ("queue lifetime 2s",))
    block(srv, "bob")
    submit(srv, "", ["bob@example.org"], "bounce-of-a-bounce")
    wait_for(lambda: log_events(srv, "dsn-skipped"), timeout=10,
        what="the skipped DSN")
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    assert not log_events(srv, "dsn")
    assert not os.path.isdir(srv.path("mail", "MAILER-DAEMON"))


def test_hold_release_delete_flush(qpostern):
    # Retries an hour apart: only the commands make anything happen.
    srv = qpostern(extra=("queue retry-min 1h",))
    block(srv, "bob")
    held = submit(srv, "alice@example.org", ["bob@example.org"], "held")
    other = submit(srv, "alice@example.org", ["bob@example.org"], "other")
    gone = submit(srv, "alice@example.org", ["bob@example.org"], "gone")
    last = submit(srv, "alice@example.org", ["bob@example.org"], "last")
    wait_for(lambda: all(rcpt_of(m, "bob@example.org")["attempts"] == 1
        for m in queue_json(srv).values()) and len(queue_json(srv)) == 4,
        what="four deferrals")

    r = queue_cli(srv, "hold", held)
    assert r.returncode == 0 and "on hold" in r.stdout, r.stderr
    assert queue_json(srv)[held]["held"] is True
    assert (held + "!") in queue_cli(srv, "list").stdout
    # A held message is not tried by a flush of its id, and that says why.
    r = queue_cli(srv, "flush", held)
    assert (r.returncode, r.stdout, r.stderr) == (1, "",
        "postern queue: %s: on hold; release it first\n" % held), r
    r = queue_cli(srv, "delete", gone)
    assert r.returncode == 0, r.stderr
    assert gone not in queue_json(srv)
    r = queue_cli(srv, "hold", gone)
    assert r.returncode == 1 and "no such message" in r.stderr

    unblock(srv, "bob")
    r = queue_cli(srv, "flush", other)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(srv.maildir("bob")) == 1, what="the flushed one")
    r = queue_cli(srv, "flush")		# the held one stays
    assert r.returncode == 0, r.stderr
    # The flush sends "last"; the restart below waits for any delivery
    # still running, so a held message it wrongly took shows after it.
    wait_for(lambda: last not in queue_json(srv), what="the flush of last")
    assert held in queue_json(srv)

    # The hold survives a restart.
    srv.restart()
    wait_for(lambda: os.path.exists(srv.path("spool", "control.sock")),
        what="the control socket after the restart")
    assert queue_json(srv)[held]["held"] is True
    assert len(srv.maildir("bob")) == 2
    r = queue_cli(srv, "release", held)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(srv.maildir("bob")) == 3, what="the released one")
    wait_for(lambda: spool_empty(srv), what="an empty spool")
    subjects = sorted(headers_of(split_delivered(read_bytes(f))[2])["subject"][0]
        for f in srv.maildir("bob"))
    assert subjects == ["held", "last", "other"]


def test_queue_commands_never_bypass_a_server_that_holds_the_spool(qpostern):
    """A server that holds the spool's lock runs, though its socket is
    gone (removed by hand here; so it is at the last instant of a stop):
    hold, delete and flush change nothing and say why, where the offline
    path would pull the message from under it.  Once it has stopped, the
    offline path works."""
    srv = qpostern(extra=("queue retry-min 1h",))
    block(srv, "bob")
    qid = submit(srv, "alice@example.org", ["bob@example.org"], "kept")
    wait_for(lambda: qid in queue_json(srv) and rcpt_of(queue_json(srv)[qid],
        "bob@example.org")["attempts"] == 1, what="the deferral")
    os.unlink(srv.path("spool", "control.sock"))
    pid = str(srv.proc.pid)
    for verb in ("delete", "hold", "flush"):
        r = queue_cli(srv, verb, qid)
        assert r.returncode == 1 and r.stdout == "", (verb, r)
        assert r.stderr == "postern queue: %s: spool %s is in use by " \
            "another postern (pid %s), which does not answer (stopping?); " \
            "nothing done\n" % (verb, srv.path("spool"), pid), r.stderr
    for sub in ("env", "msg"):
        assert os.path.exists(srv.path("spool", sub, qid)), sub
    assert not queue_json(srv)[qid]["held"]
    srv.stop()
    r = queue_cli(srv, "delete", qid)
    assert (r.returncode, r.stdout) == (0, "%s: deleted\n" % qid), r
    assert spool_empty(srv), srv.spool_files()


def test_list_and_show_change_nothing_in_the_spool(make_postern):
    """list and show only read: what has no envelope (a message being
    received, or one being removed, its envelope gone first) is passed
    over without a word and left where it is; removing leftovers is the
    server start's business."""
    srv = make_postern(extra=("queue retry-min 1h",))
    block(srv, "bob")
    qid = submit(srv, "alice@example.org", ["bob@example.org"], "listed")
    wait_for(lambda: os.path.exists(srv.path("spool", "done", qid)),
        what="the deferral")
    srv.stop()
    leftovers = [srv.path("spool", "msg", "Orphan0msg"),
        srv.path("spool", "done", "Orphan0done"),
        srv.path("spool", "tmp", "Orphan0tmp"),
        srv.path("spool", "env", "Orphan0env.tmp")]
    for p in leftovers:
        with open(p, "w") as f:
            f.write("x\n")
    with open(srv.path("spool", "env", qid)) as f:
        env = f.read()
    with open(srv.path("spool", "env", "Orphan0env"), "w") as f:
        f.write(env.replace(qid, "Orphan0env"))	# content-less: a torn commit
    leftovers.append(srv.path("spool", "env", "Orphan0env"))
    before = srv.spool_files()
    r = queue_cli(srv, "list")
    assert r.returncode == 0 and r.stderr == "", r
    assert qid in r.stdout and "Orphan0" not in r.stdout, r.stdout
    assert "1 Request." in r.stdout, r.stdout
    r = queue_cli(srv, "list", "--json")
    assert r.returncode == 0 and r.stderr == "", r
    assert [m["queue_id"] for m in json.loads(r.stdout)] == [qid]
    for name in ("Orphan0msg", "Orphan0done"):
        r = queue_cli(srv, "show", name)
        assert r.returncode == 1 and r.stderr == "postern queue: %s: " \
            "no such message\n" % name, r
    assert srv.spool_files() == before
    # The next start is what removes them.
    wired(srv.start())
    for p in leftovers:
        assert not os.path.exists(p), p
    assert "spool: removing unaccepted msg/Orphan0msg" in srv.log()


def test_queue_commands_usage(postern):
    r = queue_cli(postern, "show", "NoSuchQid")
    assert r.returncode == 1 and "no such message" in r.stderr
    r = queue_cli(postern, "hold", "../etc")
    assert r.returncode == 1 and "not a queue id" in r.stderr
    r = queue_cli(postern, "frobnicate")
    assert r.returncode == 2
    r = queue_cli(postern, "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_queue_commands_refuse_what_is_no_queue_id(postern):
    """Every command refuses an argument that is no queue id, show as
    hold does (it names no message, damaged or not), and echoes it with
    its control characters made harmless."""
    for args in (["show", "../etc/passwd"], ["show", "--json", "../etc/passwd"],
            ["hold", "../etc/passwd"], ["flush", "../etc/passwd"]):
        r = queue_cli(postern, *args)
        assert (r.returncode, r.stdout, r.stderr) == (1, "",
            "postern queue: ../etc/passwd: not a queue id\n"), (args, r)
    r = queue_cli(postern, "show", "x\x1b]0;owned\x07")
    assert (r.returncode, r.stdout, r.stderr) == (1, "",
        "postern queue: x?]0;owned?: not a queue id\n"), r
    r = queue_cli(postern, "frob\x1b[2J")
    assert r.returncode == 2 and "unknown command frob?[2J\n" in r.stderr, r


def test_flush_takes_what_the_queue_has_not_picked_up(qpostern):
    """A message put into the spool of a running server by hand (moved
    from another server) is tried by a flush at once, not only by the
    queue's scan of the spool a minute later."""
    old = qpostern(extra=("queue retry-min 1h",))
    block(old, "bob")
    qid = submit(old, "alice@example.org", ["bob@example.org"], "moved")

    def deferred():
        m = queue_json(old).get(qid)
        return m and rcpt_of(m, "bob@example.org")["attempts"] == 1
    wait_for(deferred, what="the deferral")
    old.stop()
    unblock(old, "bob")		# the envelope names old's Maildir
    new = qpostern(extra=("queue retry-min 1h",))
    # After the start-up's own look at the spool.
    wait_for(lambda: "postern started" in new.log(), what="the start")
    for sub in ("msg", "env", "done"):
        if os.path.exists(old.path("spool", sub, qid)):
            shutil.copy2(old.path("spool", sub, qid),
                new.path("spool", sub, qid))
    assert qid in queue_json(new)
    r = queue_cli(new, "flush")
    assert (r.returncode, r.stdout) == (0, "queue flushed\n"), r
    wait_for(lambda: len(old.maildir("bob")) == 1, timeout=10,
        what="the flushed message's delivery")
    wait_for(lambda: spool_empty(new), what="an empty spool")
    _, _, rest = split_delivered(read_bytes(old.maildir("bob")[0]))
    assert headers_of(rest)["subject"] == ["moved"]


def test_queue_commands_make_no_spool(make_postern):
    """Before a server ever ran, the spool folder does not exist: the queue
    is empty, and reading it makes no folder (one made by root would be
    root's, and a server that drops to its user could not use it)."""
    srv = make_postern(start=False)
    r = queue_cli(srv, "list")
    assert (r.returncode, r.stdout) == (0, "Mail queue is empty\n"), r
    r = queue_cli(srv, "list", "--json")
    assert (r.returncode, r.stdout) == (0, "[]\n"), r
    for args in (["show", "NoSuchQid"], ["hold", "NoSuchQid"]):
        r = queue_cli(srv, *args)
        assert r.returncode == 1 and "no such message" in r.stderr, r
    r = queue_cli(srv, "flush")
    assert r.returncode == 1 and "not running" in r.stderr, r
    assert not os.path.exists(srv.path("spool")), os.listdir(srv.dir)


def send_cmd(srv, args, stdin, argv0=None):
    exe = argv0 or binary()
    argv = [exe] + ([] if argv0 else ["send"]) + ["-C", srv.conf] + list(args)
    return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=10)


MESSAGE = (b"From: Alice <alice@example.org>\n"
    b"To: Bob <bob@example.org>\n"
    b"Cc: \"Carol, C\" <carol@example.org>\n"
    b"Bcc: dave@example.org,\n eve@example.org\n"
    b"Subject: local\n"
    b"\n"
    b"line one\n.\nline after a lone dot\n")


def test_send_t_delivers_with_bcc_removed(postern):
    wired(postern)
    r = send_cmd(postern, ["-t", "-f", "alice@example.org"], MESSAGE)
    assert r.returncode == 0, r.stderr
    for user in ("bob", "carol", "dave", "eve"):
        wait_for(lambda: postern.maildir(user), what="delivery to " + user)
    ret, received, rest = split_delivered(read_bytes(postern.maildir("dave")[0]))
    assert ret == "Return-Path: <alice@example.org>"
    assert received.startswith("Received: from local user ")
    h = headers_of(rest)
    assert "bcc" not in h and h["subject"] == ["local"]
    assert h["date"] and h["message-id"]
    assert rest.endswith(b"line one\n.\nline after a lone dot\n")


def test_send_t_reads_fields_in_the_obsolete_form(postern):
    """RFC 5322 4.5: "Bcc :" is a Bcc field too: its addresses are
    recipients and the field is never passed on."""
    wired(postern)
    r = send_cmd(postern, ["-t", "-f", "alice@example.org"],
        b"From: alice@example.org\nTo : bob@example.org\n"
        b"Bcc\t: dave@example.org\nSubject: old form\n\nhi\n")
    assert r.returncode == 0, r.stderr
    for user in ("bob", "dave"):
        wait_for(lambda: postern.maildir(user), what="delivery to " + user)
    rest = split_delivered(read_bytes(postern.maildir("bob")[0]))[2]
    assert b"dave@" not in rest, rest


def test_sendmail_symlink_and_exit_codes(postern, tmp_path):
    wired(postern)
    link = str(tmp_path / "sendmail")
    os.symlink(binary(), link)
    r = send_cmd(postern, ["-oi", "-F", "Root", "bob@example.org"],
        b"Subject: via sendmail\n\nhi\n", argv0=link)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: postern.maildir("bob"), what="delivery via sendmail")
    h = headers_of(split_delivered(read_bytes(postern.maildir("bob")[0]))[2])
    assert h["subject"] == ["via sendmail"] and h["from"][0].startswith("Root <")

    r = send_cmd(postern, ["someone@elsewhere.example"], b"x\n", argv0=link)
    assert r.returncode == 67 and b"elsewhere.example" in r.stderr
    r = send_cmd(postern, [], b"Subject: nobody\n\nx\n", argv0=link)
    assert r.returncode == 64
    r = send_cmd(postern, ["bad address@"], b"x\n", argv0=link)
    assert r.returncode == 65
    r = subprocess.run([link, "-C", str(tmp_path / "missing.conf"),
        "bob@example.org"], input=b"x\n", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=10)
    assert r.returncode == 75
    # Each refusal came before anything was queued: the spool stays empty.
    wait_for(lambda: spool_empty(postern), what="an empty spool")
    assert len(postern.maildir("bob")) == 1


def test_send_takes_quoted_local_parts(postern):
    """A quoted local part ("bob x"@example.org, RFC 5321 4.1.2, RFC 5322
    3.4.1) is one address: as an argument, in To: with -t and in -f, as
    the SMTP listener takes it; quoted text before <addr> stays a display
    name."""
    wired(postern)
    r = send_cmd(postern, ["-f", '"a b"@example.org', '"bob x"@example.org'],
        b"Subject: argument\n\nx\n")
    assert r.returncode == 0, r.stderr
    r = send_cmd(postern, ["-t", "-f", "alice@example.org"],
        b'To: "bob x"@example.org, "Carol, C" '
        b'<carol@example.org>\nSubject: header\n\nx\n')
    assert r.returncode == 0, r.stderr
    # %{rcpt.user} of "bob x" is _bob_x_ (docs/config.md, path-safe).
    files = wait_for(lambda: len(postern.maildir("_bob_x_")) == 2 and
        postern.maildir("_bob_x_"), what="two deliveries to \"bob x\"")
    wait_for(lambda: postern.maildir("carol"), what="delivery to carol")
    got = sorted((split_delivered(read_bytes(f))[0], headers_of(
        split_delivered(read_bytes(f))[2])["subject"][0]) for f in files)
    assert got == [('Return-Path: <"a b"@example.org>', "argument"),
        ("Return-Path: <alice@example.org>", "header")], got


def test_send_drops_mbox_from_lines(postern):
    """A message piped out of a mailbox starts with "From alice@... date",
    which is no header field (RFC 5322 2.2): it is dropped (">From " too),
    as sendmail and Postfix's sendmail drop it, so the header block holds
    fields only; the envelope sender stays -f's."""
    wired(postern)
    r = send_cmd(postern, ["-f", "alice@example.org", "bob@example.org"],
        b"From alice@example.org Mon Jan  1 00:00:00 2024\n"
        b">From alice@example.org Mon Jan  1 00:00:00 2024\n"
        b"Subject: mbox\n\nbody\nFrom here on, a body line\n")
    assert r.returncode == 0, r.stderr
    f = wait_for(lambda: postern.maildir("bob"), what="delivery to bob")[0]
    ret, _, rest = split_delivered(read_bytes(f))
    assert ret == "Return-Path: <alice@example.org>"
    head, _, body = rest.partition(b"\n\n")
    for line in head.split(b"\n"):
        assert line[:1] in (b" ", b"\t") or re.match(rb"[!-9;-~]+:", line), \
            "not a header field: %r in\n%r" % (line, rest)
    assert headers_of(rest)["subject"] == ["mbox"]
    assert body == b"body\nFrom here on, a body line\n", body


def test_send_ends_the_header_at_the_first_line_that_is_no_field(postern):
    """The header block ends at the first line that is neither a field
    nor the continuation of one (RFC 5322 2.2); an empty line goes before
    the body when the input has none, as sendmail and Postfix put it.  So
    text with no header is all body, a first line starting with a blank
    continues no field, and with -t a "Cc:" line in such a body names no
    recipient."""
    wired(postern)
    for rcpt, text in (("bob", b"hello world\nsecond line\n"),
            ("carol", b"  indented first line\nSubject: x\n\nbody\n"),
            ("alice", b"Subject: no gap\nhello\n\nmore\n")):
        r = send_cmd(postern, ["-f", "alice@example.org",
            rcpt + "@example.org"], text)
        assert r.returncode == 0, r.stderr
    r = send_cmd(postern, ["-t", "-f", "alice@example.org", "dave@example.org"],
        b"Nightly report\nCc: erin@example.org\n")
    assert r.returncode == 0, r.stderr
    got = {}
    for user in ("bob", "carol", "alice", "dave"):
        f = wait_for(lambda: postern.maildir(user), what="delivery to " + user)
        got[user] = split_delivered(read_bytes(f[0]))[2]
    wait_for(lambda: spool_empty(postern), what="an empty spool")
    assert postern.maildir("erin") == [], "a body line named a recipient"
    want = {"bob": b"hello world\nsecond line\n",
        "carol": b"  indented first line\nSubject: x\n\nbody\n",
        "alice": b"hello\n\nmore\n",
        "dave": b"Nightly report\nCc: erin@example.org\n"}
    for user, rest in got.items():
        head, _, body = rest.partition(b"\n\n")
        assert body == want[user], (user, rest)
        for line in head.split(b"\n"):
            assert re.match(rb"[!-9;-~]+:", line), (user, line, rest)
    assert headers_of(got["alice"])["subject"] == ["no gap"]
    assert "subject" not in headers_of(got["carol"]), got["carol"]


def test_send_keeps_a_from_field_in_the_obsolete_form(postern):
    """"From : Name <addr>" is the From field in RFC 5322 4.5's obsolete
    form, not an mbox "From " line: it is kept (and no From: added), while
    an mbox line before it is still dropped."""
    wired(postern)
    for mbox in (b"", b"From author@example.org Mon Jan  1 00:00:00 2024\n"):
        r = send_cmd(postern, ["-f", "bounces@example.org", "bob@example.org"],
            mbox + b"From : Real Author <author@example.org>\n"
            b"Subject: obs-from\n\nbody\n")
        assert r.returncode == 0, r.stderr
    files = wait_for(lambda: len(postern.maildir("bob")) == 2 and
        postern.maildir("bob"), what="two deliveries to bob")
    for f in files:
        rest = split_delivered(read_bytes(f))[2]
        assert headers_of(rest)["from"] == [
            "Real Author <author@example.org>"], rest
        assert rest.endswith(b"\n\nbody\n"), rest


def test_send_full_name_is_a_7bit_display_name(postern):
    """-F's name in the From: send adds is 7-bit however it is spelt: an
    RFC 2047 encoded-word for UTF-8 (no SMTPUTF8 needed, RFC 6532 3), a
    quoted string for specials, folded when long (RFC 5322 2.1.1)."""
    wired(postern)
    names = ["J\u00f6rg M\u00fcller", 'Smith, John "JJ" \\ Jr.',
        "\u00c9mile Zolad\u00e9 " * 6]
    for i, name in enumerate(names):
        r = send_cmd(postern, ["-F", name, "-f", "j@example.org",
            "bob@example.org"], b"Subject: %d\n\nx\n" % i)
        assert r.returncode == 0, r.stderr
    files = wait_for(lambda: len(postern.maildir("bob")) == len(names) and
        postern.maildir("bob"), what="the deliveries to bob")
    got = {}
    for f in files:
        rest = split_delivered(read_bytes(f))[2]
        head = rest.partition(b"\n\n")[0]
        assert max(head) < 0x80, head
        assert max(len(l) for l in head.split(b"\n")) <= 78, head
        msg = email.message_from_bytes(rest, policy=email.policy.compat32)
        # RFC 2047 6.2 (blanks between encoded-words go), which
        # email.policy.default does not quite follow.
        name, addr = email.utils.parseaddr(str(email.header.make_header(
            email.header.decode_header(msg["From"]))))
        assert addr == "j@example.org", rest
        got[int(msg["Subject"])] = name
    assert got == {i: name.strip() for i, name in enumerate(names)}, got


@pytest.mark.parametrize("mode", [0o700, 0o777])
def test_send_by_a_user_without_access_to_the_spool(public_dir, sysuser,
        make_postern, mode):
    """A user who may not use the spool (it is 0700 for the server's
    user) while a server runs there is told that, not that no server
    runs; nothing is queued and the exit is 75, to try again.  Write access
    to the spool folder would not help (its socket and folders are its
    owner's): the hint names who may submit instead."""
    pw = sysuser("pstnsend", "Send pw 1")
    srv = wired(make_postern(at=public_dir))
    os.chmod(srv.conf, 0o644)
    os.chmod(srv.path("spool"), mode)
    r = subprocess.run([binary(), "send", "-C", srv.conf, "bob@example.org"],
        input=b"Subject: x\n\nbody\n", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=10, user=pw.pw_uid, group=pw.pw_gid,
        extra_groups=[])
    assert srv.alive()
    assert r.returncode == 75, (r.returncode, r.stderr)
    assert b"access to the spool %s was denied" % srv.path("spool").encode() \
        in r.stderr, r.stderr
    assert r.stderr.endswith(b": run postern send as the spool's owner or "
        b"as root; no other user may submit, whatever the spool's mode "
        b"(sudo -u root postern send ...); the message was not queued\n"), \
        r.stderr
    assert b"no postern server" not in r.stderr, r.stderr
    assert spool_empty(srv) and srv.maildir("bob") == []


def test_queue_by_a_user_without_access_to_the_spool(public_dir, sysuser,
        make_postern):
    """postern queue run by a user who may not use the spool says so, in
    postern send's words, not which folder it could not make."""
    pw = sysuser("pstnqueue", "Queue pw 1")
    srv = wired(make_postern(at=public_dir))
    os.chmod(srv.conf, 0o644)
    for verb in ("list", "flush"):
        r = subprocess.run([binary(), "queue", "-c", srv.conf, verb],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=10, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        spool = srv.path("spool")
        assert (r.returncode, r.stdout, r.stderr) == (1, "",
            "postern queue: access to the spool %s was denied (%s: "
            "Permission denied): run postern queue as the spool's owner or "
            "as root\n" % (spool, spool)), (verb, r)
    assert srv.alive()


def test_queue_by_a_user_on_a_spool_folder_others_may_enter(public_dir,
        sysuser, make_postern):
    """A spool folder of 0755 (what `install -d` makes) lets another user
    in, but not into its 0700 folders: every command is refused in the
    same words as on a 0700 spool, naming the folder it could not open."""
    pw = sysuser("pstnqueue", "Queue pw 1")
    srv = wired(make_postern(at=public_dir))
    os.chmod(srv.conf, 0o644)
    spool = srv.path("spool")
    os.chmod(spool, 0o755)
    for verb in (["list"], ["flush"], ["hold", "1xach90jvR000fbwY"]):
        r = subprocess.run([binary(), "queue", "-c", srv.conf] + verb,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=10, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        assert (r.returncode, r.stdout) == (1, ""), (verb, r)
        assert re.fullmatch(r"postern queue: access to the spool %s was "
            r"denied \(open\(%s/[a-z]+\): Permission denied\): run postern "
            r"queue as the spool's owner or as root\n" % (re.escape(spool),
            re.escape(spool)), r.stderr), (verb, r.stderr)
    assert srv.alive()


def test_send_takes_grouped_flags(postern):
    """Flags group as getopt allows, as sendmail's do: -ti, -it, -tf ADDR;
    an unknown letter in a group is still refused."""
    wired(postern)
    for flags in (["-ti"], ["-it"], ["-tf", "carol@example.org"],
            ["-itfcarol@example.org"]):
        r = send_cmd(postern, flags, b"To: carol@example.org\nSubject: "
            + " ".join(flags).encode() + b"\n\nx\n")
        assert r.returncode == 0, (flags, r.stderr)
    files = wait_for(lambda: len(postern.maildir("carol")) == 4 and
        postern.maildir("carol"), what="four deliveries to carol")
    assert [split_delivered(read_bytes(f))[0] for f in files].count(
        "Return-Path: <carol@example.org>") == 2, files
    r = send_cmd(postern, ["-tx", "carol@example.org"], b"x\n")
    assert r.returncode == 64 and b"unsupported option -x" in r.stderr, r
    r = send_cmd(postern, ["-tf"], b"x\n")
    assert r.returncode == 64 and b"-f needs an argument" in r.stderr, r


@pytest.mark.parametrize("null", ["", "<>"])
def test_send_null_sender_adds_a_from_with_a_domain(postern, null):
    """-f '' and -f '<>' send from the null sender; the From: added for
    it is an address with a domain (RFC 5322 3.4.1), as Postfix's is."""
    wired(postern)
    r = send_cmd(postern, ["-f", null, "bob@example.org"],
        b"Subject: null\n\nx\n")
    assert r.returncode == 0, r.stderr
    f = wait_for(lambda: postern.maildir("bob"), what="delivery to bob")[0]
    ret, _, rest = split_delivered(read_bytes(f))
    assert ret == "Return-Path: <>"
    assert headers_of(rest)["from"] == ["<MAILER-DAEMON@test.example>"]


def test_send_without_server_fails_and_leaves_nothing(make_postern):
    """No server listens on the spool's control socket: nothing would
    deliver the message, so send says so with EX_TEMPFAIL (75) and writes
    nothing; the caller keeps the message and tries again."""
    srv = make_postern(start=False)
    r = send_cmd(srv, ["bob@example.org"], b"Subject: early\n\nx\n")
    assert r.returncode == 75, (r.returncode, r.stderr)
    assert b"no postern server" in r.stderr, r.stderr
    assert not os.path.exists(srv.path("spool")), os.listdir(srv.dir)
    wired(srv.start())
    r = send_cmd(srv, ["bob@example.org"], b"Subject: later\n\nx\n")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: srv.maildir("bob"), what="delivery of the sent message")
    h = headers_of(split_delivered(read_bytes(srv.maildir("bob")[0]))[2])
    assert h["subject"] == ["later"]


def test_mailq_and_newaliases_entry_points(make_postern, tmp_path):
    """Installed as mailq and newaliases (and sendmail -bp, -bi), the binary
    lists the queue and says there is no aliases database."""
    srv = wired(make_postern())
    block(srv, "bob")		# the message waits in the queue
    r = send_cmd(srv, ["-f", "alice@example.org", "bob@example.org"],
        b"Subject: waiting\n\nx\n")
    assert r.returncode == 0, r.stderr
    qid = wait_for(lambda: list(queue_json(srv)), what="the queued message")
    assert len(qid) == 1
    qid = qid[0]
    links = {}
    for name in ("mailq", "newaliases", "sendmail"):
        links[name] = str(tmp_path / name)
        os.symlink(binary(), links[name])
    env = dict(os.environ, POSTERN_CONFIG=srv.conf)

    def run(*argv):
        return subprocess.run(list(argv), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, timeout=10, env=env)

    for argv in ([links["mailq"]], [links["sendmail"], "-bp"]):
        r = run(*argv)
        assert r.returncode == 0, (argv, r.stderr)
        assert qid in r.stdout and "bob@example.org" in r.stdout, (argv,
            r.stdout)
        assert "Kbytes in 1 Request" in r.stdout, r.stdout
    # -C applies to -bp as to sending: its queue, not $POSTERN_CONFIG's.
    env["POSTERN_CONFIG"] = str(tmp_path / "missing.conf")
    for argv in ([links["sendmail"], "-C", srv.conf, "-bp"],
            [binary(), "send", "-bp", "-C", srv.conf]):
        r = run(*argv)
        assert r.returncode == 0 and qid in r.stdout, (argv, r)
    for argv in ([links["newaliases"]], [links["sendmail"], "-bi"]):
        r = run(*argv)
        assert (r.returncode, r.stdout) == (0, ""), (argv, r)
        assert "no aliases database" in r.stderr, r.stderr
    assert list(queue_json(srv)) == [qid]    # nothing sent by -bp / -bi


def queued_for_relay(qpostern):
    """A server whose action `out` relays to a port nobody listens on, and
    bob@remote.example's message deferred there, not retried for an hour:
    (server, its queue id)."""
    head = ["queue retry-min 1h", "queue retry-max 1h"]
    rules = ["match to domain example.org action local",
        "match to domain remote.example action out"]
    srv = qpostern(extra=head + ['action out relay "smtp://127.0.0.1:%d"'
        % free_port()], rules=rules)
    qid = submit(srv, "alice@example.org", ["bob@remote.example"], "kind")
    wait_for(lambda: qid in queue_json(srv) and rcpt_of(queue_json(srv)[qid],
        "bob@remote.example")["attempts"] >= 1, what="the first deferral")
    return srv, lambda action: make_config(head + [action], rules=rules), qid


def reload_and_flush(srv, text):
    done = srv.log().count("reload: configuration")
    srv.write_config(text)
    srv.sighup()
    wait_for(lambda: srv.log().count("reload: configuration") > done,
        what="the reload")
    r = queue_cli(srv, "flush")
    assert r.returncode == 0, r.stderr


def test_a_queued_recipient_goes_through_its_action_of_another_kind_now(
        qpostern, tmp_path):
    """The spool keeps an outbound recipient's action by name: a reload that
    makes `out` a pipe delivers the queued message through the pipe, and
    the log says action=pipe."""
    srv, config, qid = queued_for_relay(qpostern)
    piped = tmp_path / "piped"
    reload_and_flush(srv, config('action out pipe "/bin/sh" "-c" "cat > %s"'
        % piped))
    wait_for(lambda: spool_empty(srv), timeout=15, what="the delivery")
    assert b"Subject: kind" in read_bytes(str(piped))
    assert [kv["action"] for kv, _ in log_events(srv, "delivered")
        if kv.get("rcpt") == "<bob@remote.example>"] == ["pipe"]


def test_a_queued_recipient_waits_when_its_action_became_a_maildir(qpostern):
    """A maildir's folder is resolved per recipient when it is routed, and
    the spool has none for a message routed to a relay: a reload that makes
    `out` a maildir leaves it queued, and the reason says what changed."""
    srv, config, qid = queued_for_relay(qpostern)
    reload_and_flush(srv, config('action out maildir '
        '"{tmp}/mail/relayed/Maildir"'))
    wait_for(lambda: rcpt_of(queue_json(srv)[qid], "bob@remote.example")[
        "attempts"] >= 2, what="the attempt after the reload")
    assert rcpt_of(queue_json(srv)[qid], "bob@remote.example")[
        "last_error"] == "4.3.5 action out is now a maildir action; the " \
        "message was routed to it as a relay action"
    assert srv.maildir("relayed") == []


def test_a_reload_applies_the_queue_times_and_the_hostname(qpostern):
    """A message deferred for an hour; a reload shortens the retries and
    the lifetime and renames the host: flushed, it is tried with the new
    times, expires and bounces under the new name.  The number of
    workers is only changed by a restart, and the log says so."""
    srv = qpostern(extra=("queue retry-min 1h", "queue retry-max 1h"))
    block(srv, "bob")
    qid = submit(srv, "alice@example.org", ["bob@example.org"], "slow")
    wait_for(lambda: qid in queue_json(srv) and rcpt_of(queue_json(srv)[qid],
        "bob@example.org")["attempts"] >= 1, what="the first deferral")
    srv.write_config(make_config(["queue retry-min 1s", "queue retry-max 2s",
        "queue lifetime 3s", "queue concurrency 5"]).replace(
        "hostname test.example", "hostname renamed.example"))
    srv.sighup()
    wait_for(lambda: "reload: configuration" in srv.log(), what="the reload")
    assert "reload: queue concurrency changes only at restart" in srv.log()
    r = queue_cli(srv, "flush")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: srv.maildir("alice"), timeout=15, what="the bounce")
    _, _, rest = split_delivered(read_bytes(srv.maildir("alice")[0]))
    msg = email.message_from_bytes(rest, policy=email.policy.compat32)
    per_msg, per_rcpt = msg.get_payload()[1].get_payload()
    assert per_msg["Reporting-MTA"] == "dns; renamed.example"
    assert per_rcpt["Status"] == "4.4.7"
    wait_for(lambda: spool_empty(srv), what="an empty spool")
