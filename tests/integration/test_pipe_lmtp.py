"""Delivery to programs and to an LMTP server, end to end.

pipe: a script that fails with EX_TEMPFAIL (75) once is retried and then
delivers; one that exits 1 bounces with its first line of stderr; one that
sends its own output to a log still gets a message larger than a pipe
holds; one that cannot be started is deferred, not bounced; one that
leaves a background child holding its output is judged by its own exit;
exit statuses still count when postern's parent left SIGCHLD ignored.
Started as root with `user`, a pipe's `user` postern can never become, and
a program the user it runs as may not execute, are refused at start, by
check and by a reload alike.  lmtp:
Debian's Dovecot (dovecot-lmtpd) started by the test on a unix socket in
a temporary folder; one recipient is refused, the other's mail is read
from Dovecot's own Maildir; a message that came with SMTPUTF8 goes in
without it when its header fields are ASCII, and is bounced when they are
UTF-8 (Dovecot does not offer SMTPUTF8).
"""

import grp
import os
import pathlib
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import (headers_of, log_events, make_config, needs, run_cli,
    send_message, spool_empty, wait_for)
from test_privdrop import GROUP, USER, ids, make_dropped  # noqa: F401
from test_webhook import wire

FAST = ["queue retry-min 1s", "queue retry-max 2s"]
LOCAL = 'action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"\n'
DOVECOT = "/usr/sbin/dovecot"


def pipe_config(action):
    return make_config(FAST, rules=["match to domain lda.example action lda",
        "match to domain example.org action local"],
        actions=LOCAL + action + "\n")


def test_pipe_tempfail_is_retried_then_delivered(make_postern, tmp_path):
    lda = tmp_path / "lda.sh"
    lda.write_text("#!/bin/sh\n"
        "# First call: EX_TEMPFAIL; then the message into $2.\n"
        "if [ ! -e \"$1\" ]; then : > \"$1\"; echo 'mailbox locked' >&2; "
        "exit 75; fi\n"
        "cat > \"$2\"\necho \"$SENDER $RECIPIENT\" > \"$2.env\"\n")
    lda.chmod(0o755)
    out = tmp_path / "delivered"
    srv = make_postern(config=pipe_config('action lda pipe "%s" "%s" '
        '"%s.%%{rcpt.user}"' % (lda, tmp_path / "seen", out)))
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@lda.example"],
            wire("Subject: via lda\n\nhello\n"))
    path = str(out) + ".joe"
    wait_for(lambda: os.path.exists(path + ".env"), 15, what="the delivery")
    kv = log_events(srv, "deferred")[0][0]
    assert kv["why"] == "4.3.0 mailbox locked"
    with open(path, "rb") as f:
        data = f.read()
    # What dovecot-lda expects first, then the message as received.
    assert data.startswith(b"Return-Path: <ann@example.org>\n"
        b"Delivered-To: joe@lda.example\nReceived: ")
    assert data.endswith(b"\nSubject: via lda\n\nhello\n")
    with open(path + ".env") as f:
        assert f.read() == "ann@example.org joe@lda.example\n"


def test_pipe_failure_bounces_with_stderr(make_postern, tmp_path):
    lda = tmp_path / "lda.sh"
    lda.write_text("#!/bin/sh\ncat > /dev/null\n"
        "echo 'lda: quota exceeded for joe' >&2\nexit 1\n")
    lda.chmod(0o755)
    srv = make_postern(config=pipe_config('action lda pipe "%s"' % lda))
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@lda.example"],
            wire("Subject: too big\n\nx\n"))
    wait_for(lambda: srv.maildir("ann"), 15, what="the DSN")
    with open(srv.maildir("ann")[0], "rb") as f:
        dsn = f.read()
    assert headers_of(dsn)["return-path"] == ["<>"]
    assert b"Status: 5.3.0" in dsn
    assert b"lda: quota exceeded for joe (exit status 1)" in dsn


def pipe_outcomes(srv, timeout=20):
    """Which of delivered, deferred and failed the log shows, once one does."""
    return wait_for(lambda: [ev for ev in ("delivered", "deferred", "failed")
        if log_events(srv, ev)], timeout, what="the pipe's outcome")


def test_pipe_program_that_logs_its_own_output_gets_a_large_message(
        make_postern, tmp_path):
    # A common script opening: stdout and stderr to a log, then the message
    # from stdin.  Its pipes close long before its stdin is read to the end.
    lda = tmp_path / "lda.sh"
    out = tmp_path / "delivered"
    lda.write_text("#!/bin/sh\nexec >>%s.log 2>&1\ncat > %s\n" % (out, out))
    lda.chmod(0o755)
    srv = make_postern(config=pipe_config('action lda pipe "%s" timeout 3s'
        % lda))
    body = "Subject: big\n\n" + ("0123456789" * 7 + "\n") * 3000
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@lda.example"], wire(body))
    assert pipe_outcomes(srv) == ["delivered"], srv.log()
    data = out.read_bytes()
    assert len(data) > 200 * 1024
    assert data.endswith(("0123456789" * 7 + "\n").encode() * 3000)


def test_pipe_program_that_cannot_start_is_deferred(make_postern, tmp_path):
    noint = tmp_path / "noint.sh"
    noint.write_text("#!/nonexistent/interpreter\n")
    gone = tmp_path / "gone.sh"
    out = tmp_path / "delivered"
    gone.write_text("#!/bin/sh\ncat > %s\n" % out)
    for p in (noint, gone):
        p.chmod(0o755)
    srv = make_postern(config=make_config(FAST, rules=[
        "match to domain a.example action noint",
        "match to domain b.example action gone",
        "match to domain example.org action local"],
        actions=LOCAL + 'action noint pipe "%s"\naction gone pipe "%s"\n'
        % (noint, gone)))
    gone.unlink()  # say, replaced by an upgrade after start-up
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@a.example"],
            wire("Subject: a\n\nhi\n"))
        send_message(c, "ann@example.org", ["joe@b.example"],
            wire("Subject: b\n\nhi\n"))
    kvs = wait_for(lambda: len(log_events(srv, "deferred")) >= 2 and
        [kv for kv, _ in log_events(srv, "deferred")], 20,
        what="both deferred")
    for path in (noint, gone):
        assert "4.3.0 %s: execve: No such file or directory" % path in \
            [kv["why"] for kv in kvs], kvs
    # Temporary: the program back in place, the mail is delivered.
    gone.write_text("#!/bin/sh\ncat > %s\n" % out)
    gone.chmod(0o755)
    wait_for(lambda: out.exists() and b"Subject: b" in out.read_bytes(), 20,
        what="the delivery once the program is back")
    assert log_events(srv, "failed") == []
    assert srv.maildir("ann") == []


def test_pipe_program_leaving_a_background_child_is_judged_by_its_exit(
        make_postern, tmp_path):
    # Like a script that starts a notifier with "&": the child keeps the
    # program's stdout and stderr open long after the program has exited.
    lda = tmp_path / "lda.sh"
    out = tmp_path / "delivered"
    lda.write_text("#!/bin/sh\n"
        "if [ ! -e %s.seen ]; then : > %s.seen; cat > /dev/null\n"
        "  echo 'mailbox locked' >&2; (sleep 20) & exit 75; fi\n"
        "cat >> %s\necho '--- copy' >> %s\n(sleep 20) &\nexit 0\n"
        % (out, out, out, out))
    lda.chmod(0o755)
    srv = make_postern(config=pipe_config('action lda pipe "%s" timeout 3s'
        % lda))
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@lda.example"],
            wire("Subject: once\n\nhi\n"))
    kv = wait_for(lambda: log_events(srv, "deferred"), 20,
        what="the first try")[0][0]
    assert kv["why"] == "4.3.0 mailbox locked"
    wait_for(lambda: log_events(srv, "delivered") or log_events(srv,
        "failed") or len(log_events(srv, "deferred")) > 1, 20,
        what="the second try")
    assert len(log_events(srv, "deferred")) == 1, srv.log()
    assert log_events(srv, "delivered")
    wait_for(lambda: spool_empty(srv), 10, what="the spool empty")
    assert out.read_text().count("--- copy") == 1
    assert srv.maildir("ann") == []


# Starts postern with SIGCHLD ignored and SIGTERM blocked, as execve keeps.
IGNORE_SIGCHLD = ("import os, signal, sys\n"
    "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n")
SIGCHLD_BIT = 1 << (signal.SIGCHLD - 1)
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def test_pipe_exit_status_counts_when_started_with_sigchld_ignored(
        make_postern, tmp_path):
    # Some supervisors and shells leave SIGCHLD ignored; the kernel would
    # then reap each program before its exit status can be read.
    tf = tmp_path / "tf.sh"
    tf.write_text("#!/bin/sh\ncat > /dev/null\necho 'mailbox locked' >&2\n"
        "exit 75\n")
    nouser = tmp_path / "nouser.sh"
    nouser.write_text("#!/bin/sh\ncat > /dev/null\necho 'no such user' >&2\n"
        "exit 67\n")
    for p in (tf, nouser):
        p.chmod(0o755)
    srv = make_postern(start=False, config=make_config(FAST, rules=[
        "match to domain tf.example action tf",
        "match to domain nouser.example action nouser",
        "match to domain example.org action local"],
        actions=LOCAL + 'action tf pipe "%s"\naction nouser pipe "%s"\n'
        % (tf, nouser)))
    srv.argv_prefix = ["/usr/bin/python3", "-c", IGNORE_SIGCHLD]
    srv.start()
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@tf.example"],
            wire("Subject: tf\n\nhi\n"))
        send_message(c, "ann@example.org", ["joe@nouser.example"],
            wire("Subject: nouser\n\nhi\n"))
    wait_for(lambda: srv.maildir("ann") and log_events(srv, "deferred"), 20,
        what="the DSN and the deferral")
    assert [kv["why"] for kv, _ in log_events(srv, "deferred")][0] == \
        "4.3.0 mailbox locked"
    with open(srv.maildir("ann")[0], "rb") as f:
        dsn = f.read()
    assert b"Status: 5.1.1" in dsn
    assert b"no such user (exit status 67)" in dsn
    assert [kv for kv, _ in log_events(srv, "delivered")
        if kv.get("action") == "pipe"] == [], srv.log()
    status = srv.pid_status()
    assert not int(status["SigIgn"], 16) & SIGCHLD_BIT, \
        "postern kept SIGCHLD ignored"
    assert not int(status["SigBlk"], 16) & SIGTERM_BIT, \
        "postern kept SIGTERM blocked"
    srv.stop()  # SIGTERM arrives: a clean stop


def test_sigterm_kills_a_hung_program_and_keeps_the_message(make_postern,
        tmp_path):
    """A program that never ends (the pipe's timeout is 10 min): a stop
    gives it the shutdown grace, then kills it; postern exits at once
    after, the message stays in the spool, and the next start delivers
    it."""
    lda = tmp_path / "lda.sh"
    lda.write_text("#!/bin/sh\necho $$ > \"$1.pid\"\n"
        "if [ -e \"$1.hang\" ]; then exec sleep 600; fi\ncat > \"$1\"\n")
    lda.chmod(0o755)
    out = tmp_path / "delivered"
    (tmp_path / "delivered.hang").write_text("")
    srv = make_postern(config=pipe_config('action lda pipe "%s" "%s"'
        % (lda, out)).replace("queue retry-min", "limit shutdown-grace 1s\n"
        "queue retry-min"))
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@lda.example"],
            wire("Subject: hung\n\nkept\n"))
    pid = int(wait_for(lambda: os.path.exists(str(out) + ".pid") and
        open(str(out) + ".pid").read().strip(), 10, what="the program"))
    t0 = time.monotonic()
    srv.sigterm()
    assert srv.wait_exit(10) == 0, srv.log()[-2000:]
    took = time.monotonic() - t0
    assert took < 5, "the stop took %.1fs with a grace of 1s" % took
    wait_for(lambda: not os.path.exists("/proc/%d" % pid), 5,
        what="the hung program killed")
    assert srv.spool_files("env"), "the message left the spool"
    kv = log_events(srv, "deferred")[0][0]
    assert kv["why"] == "4.3.0 %s cut short: postern is stopping" % lda, kv
    os.unlink(str(out) + ".hang")
    srv.start()
    wait_for(lambda: os.path.exists(out) and not srv.spool_files("env"), 15,
        what="delivery after the restart")
    assert out.read_bytes().endswith(b"\nSubject: hung\n\nkept\n")


# ----- the user a program runs as ----------------------------------------------

AS_ROOT = needs(os.geteuid() == 0,
    "root, which `user` needs (run the suite as root)")


def script(path, text, mode, owner=None):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return path


def check_lines(conf):
    """`postern check -c conf`: its exit status, and its lines by action."""
    r = run_cli("check", "-c", conf)
    lines = {}
    for line in r.stdout.splitlines():
        m = re.match(r"[^:]+:(\d+): action (\w+): (.*)$", line)
        if m:
            lines[m.group(2)] = (int(m.group(1)), m.group(3))
    return r.returncode, lines, r.stdout + r.stderr


def line_of(conf, start):
    with open(conf) as f:
        return [i for i, l in enumerate(f, 1) if l.startswith(start)][0]


@AS_ROOT
def test_a_pipe_user_postern_can_never_become_is_refused(make_dropped,
        public_dir):
    """Started as root with `user nobody`, postern becomes nobody and no
    one else: a pipe's or a reply command's `user daemon` is refused by
    check and by the start (naming the global user), as is a user that
    does not exist; `user nobody` is what it runs as anyway."""
    lda = script(os.path.join(public_dir, "lda"), "#!/bin/sh\ncat\n", 0o755)
    srv = make_dropped(extra=[
        'action other pipe "%s" user daemon' % lda,
        'action ghost pipe "%s" user no-such-user-pstn' % lda,
        'action agent reply command "%s" user daemon' % lda,
        'action own pipe "%s" user nobody' % lda,
        "match to domain own.example action own"], start=False)
    rc, lines, out = check_lines(srv.conf)
    assert rc == 1, out
    never = ('cannot run as "daemon": postern drops its privileges to user '
        '"nobody" (the "user" statement), which can become no other user')
    assert lines["other"] == (line_of(srv.conf, "action other"), never), out
    assert lines["agent"] == (line_of(srv.conf, "action agent"),
        "reply command: " + never), out
    assert lines["ghost"] == (line_of(srv.conf, "action ghost"),
        'no such user "no-such-user-pstn"'), out
    assert "own" not in lines, out
    r = run_cli("run", "-c", srv.conf, cwd=srv.dir, timeout=15)
    assert r.returncode == 1, r.stderr
    assert "%s:%d: action other: %s" % (srv.conf, line_of(srv.conf,
        "action other"), never) in r.stderr, r.stderr


@AS_ROOT
def test_a_pipe_user_postern_runs_as_keeps_the_servers_group(make_dropped,
        public_dir):
    """With `user nobody` and `group daemon` (not nobody's primary group),
    a pipe's `user nobody` runs with the server's group and no other: after
    the drop postern cannot change its group, as docs/actions.md says."""
    uid, _ = ids()
    daemon = grp.getgrnam("daemon").gr_gid
    assert pwd.getpwnam(USER).pw_gid != daemon
    own = script(os.path.join(public_dir, "own"), '#!/bin/sh\n'
        'cat > /dev/null\nid -u > "$1.new"\nid -G >> "$1.new"\n'
        'mv "$1.new" "$1"\n', 0o755)
    srv = make_dropped(start=False)
    srv.write_config(make_config(["user " + USER, "group daemon",
        'action lda pipe "%s" "{tmp}/mail/ran" user %s' % (own, USER),
        "match to domain lda.example action lda"]))
    srv.start()
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@lda.example"],
            wire("Subject: groups\n\nhi\n"))
    wait_for(lambda: os.path.exists(srv.path("mail", "ran")), 15,
        what="the program's ids")
    with open(srv.path("mail", "ran")) as f:
        assert f.read() == "%d\n%d\n" % (uid, daemon)


@AS_ROOT
def test_a_pipe_program_is_judged_as_the_user_that_runs_it(make_dropped,
        public_dir):
    """The program is judged at start as the user it will run as, so the
    start, check and a reload after the drop agree: with `user nobody` a
    program only root may run (0700) is refused; nobody's own is taken,
    runs as nobody, and an unchanged reload keeps it.  A reload that
    names a user nobody cannot become is refused and says why."""
    uid, _ = ids()
    root_only = script(os.path.join(public_dir, "root-only"),
        "#!/bin/sh\ncat > /dev/null\n", 0o700)
    own = script(os.path.join(public_dir, "own"),
        '#!/bin/sh\ncat > /dev/null\nid -u > "$1"\n', 0o700, owner=uid)
    srv = make_dropped(extra=['action lda pipe "%s"' % root_only,
        "match to domain lda.example action lda"], start=False)
    rc, lines, out = check_lines(srv.conf)
    denied = "%s: Permission denied (as user \"nobody\")" % root_only
    assert rc == 1 and lines["lda"] == (line_of(srv.conf, "action lda"),
        denied), out
    r = run_cli("run", "-c", srv.conf, cwd=srv.dir, timeout=15)
    assert r.returncode == 1 and denied in r.stderr, r.stderr
    # Root that stays root: judged as the pipe's own user.
    srv.write_config(make_config(['action lda pipe "%s" user nobody'
        % root_only, "match to domain lda.example action lda"]))
    rc, lines, out = check_lines(srv.conf)
    assert rc == 1 and lines["lda"][1] == denied, out

    dropped = ["user " + USER, "group " + GROUP]
    rule = "match to domain lda.example action lda"
    srv.write_config(make_config(dropped + ['action lda pipe "%s" '
        '"{tmp}/mail/ran" user nobody' % own, rule]))
    rc, lines, out = check_lines(srv.conf)
    assert rc == 0, out
    srv.start()
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["joe@lda.example"],
            wire("Subject: as nobody\n\nhi\n"))
    wait_for(lambda: log_events(srv, "delivered"), 15, what="the delivery")
    with open(srv.path("mail", "ran")) as f:
        assert f.read() == "%d\n" % uid
    srv.sighup()
    wait_for(lambda: "reload: configuration" in srv.log() or
        "reload failed" in srv.log(), 10, what="the reload to end")
    assert "reload failed" not in srv.log(), srv.log()[-2000:]

    srv.write_config(make_config(dropped + ['action lda pipe "%s" '
        '"{tmp}/mail/ran" user daemon' % own, rule]))
    srv.sighup()
    wait_for(lambda: "reload failed" in srv.log(), 10,
        what="the reload refused")
    assert ('action lda: cannot run as "daemon": postern drops its '
        'privileges to user "nobody"') in srv.log(), srv.log()[-2000:]
    assert srv.alive()


# ----- LMTP to Dovecot ---------------------------------------------------------

@pytest.fixture
def dovecot():
    """Dovecot serving LMTP on <tmp>/dovecot/run/lmtp, mail in
    <tmp>/dovecot/mail/<user>/Maildir for the users ann and full (whose
    1-byte quota refuses everything)."""
    if not os.access(DOVECOT, os.X_OK):
        pytest.fail("%s not found: run scripts/bootstrap (it installs "
            "dovecot-core and dovecot-lmtpd)" % DOVECOT)
    # Dovecot's own users must reach the folder: not under pytest's 0700
    # folders, so a folder of its own in /tmp.
    d = pathlib.Path(tempfile.mkdtemp(prefix="postern-dovecot-"))
    (d / "mail").mkdir()
    os.chmod(d, 0o755)
    os.chown(d / "mail", 8, 8)		# the mail user owns the mail
    (d / "users").write_text(
        "ann:{PLAIN}x:8:8::%s/mail/ann::\n"
        "full:{PLAIN}x:8:8::%s/mail/full::userdb_quota_rule=*:storage=1B\n"
        % (d, d))
    (d / "dovecot.conf").write_text("""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = lmtp
ssl = no
listen = 127.0.0.1
shutdown_clients = yes
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 8
auth_username_format = %Ln
mail_location = maildir:{d}/mail/%n/Maildir
mail_plugins = quota
plugin {{
  quota = maildir:User quota
  quota_rule = *:storage=100M
}}
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
""".format(d=d))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(d / "dovecot.conf")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    sock = d / "run" / "lmtp"
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, 15,
            what="dovecot's LMTP socket")
        assert proc.poll() is None, "dovecot exited: %s" % (
            (d / "dovecot.log").read_text(errors="replace")[-2000:])
        yield d
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def dovecot_mail(d, user):
    new = d / "mail" / user / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def dovecot_server(make_postern, dovecot):
    """postern with lmtp.example at Dovecot and example.org local."""
    return make_postern(config=make_config(FAST, rules=[
        "match to domain lmtp.example action dove",
        "match to domain example.org action local"],
        actions=LOCAL + 'action dove lmtp "unix:%s"\n'
        % (dovecot / "run" / "lmtp")))


def test_lmtp_to_dovecot(make_postern, dovecot):
    srv = dovecot_server(make_postern, dovecot)
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["ann@lmtp.example",
            "nobody@lmtp.example", "full@lmtp.example"],
            wire("Subject: via lmtp\nMessage-ID: <l1@example.org>\n\n"
                "hello dovecot\n"))
    files = wait_for(lambda: dovecot_mail(dovecot, "ann"), 15,
        what="the mail in Dovecot's Maildir")
    data = files[0].read_bytes()
    assert b"Return-Path: <ann@example.org>" in data
    assert b"Delivered-To: ann@lmtp.example" in data
    assert data.endswith(b"Subject: via lmtp\nMessage-ID: <l1@example.org>"
        b"\n\nhello dovecot\n")
    # One refused at RCPT, one after the content (its own reply): both
    # bounced in one DSN to the sender.
    wait_for(lambda: srv.maildir("ann"), 15, what="the DSN")
    dsn = open(srv.maildir("ann")[0], "rb").read()
    assert b"Final-Recipient: rfc822; nobody@lmtp.example" in dsn
    assert b"Final-Recipient: rfc822; full@lmtp.example" in dsn
    assert b"in reply to RCPT TO" in dsn
    assert b"in reply to end of DATA" in dsn
    assert dovecot_mail(dovecot, "full") == []
    wait_for(lambda: not srv.spool_files("env"), 10, what="spool empty")
    assert len(dovecot_mail(dovecot, "ann")) == 1


def test_lmtp_smtputf8_message_goes_in_unless_it_needs_smtputf8(
        make_postern, dovecot):
    """RFC 6531 3.2, 3.4: Dovecot's LMTP does not offer SMTPUTF8.  A
    message that came with it but has ASCII addresses and header fields
    goes in without it (its UTF-8 body as 8BITMIME); one with a UTF-8
    Subject: fails there (5.6.7) and is bounced, never handed over, in a
    plain DSN (its addresses are ASCII)."""
    srv = dovecot_server(make_postern, dovecot)
    with srv.session() as c:
        c.hello()
        send_message(c, "ann@example.org", ["ann@lmtp.example"],
            wire("Subject: Gr\u00fc\u00dfe\n\nhallo\n"),
            " SMTPUTF8 BODY=8BITMIME")
        send_message(c, "ann@example.org", ["ann@lmtp.example"],
            wire("Subject: ascii header\n\nhall\u00f6\n"),
            " SMTPUTF8 BODY=8BITMIME")
        send_message(c, "ann@example.org", ["ann@lmtp.example"],
            wire("Subject: plain\n\nhello\n"))
    files = wait_for(lambda: srv.maildir("ann"), 15, what="the DSN")
    dsn = open(files[0], "rb").read()
    assert b"Content-Type: message/delivery-status\n" in dsn, dsn[:600]
    assert max(dsn) < 0x80, dsn
    assert b"Final-Recipient: rfc822; ann@lmtp.example" in dsn, dsn
    assert b"Status: 5.6.7" in dsn, dsn
    wait_for(lambda: not srv.spool_files("env"), 15, what="spool empty")
    assert len(srv.maildir("ann")) == 1
    mail = [f.read_bytes() for f in dovecot_mail(dovecot, "ann")]
    assert len(mail) == 2, mail
    for tail in (b"Subject: ascii header\n\nhall\xc3\xb6\n",
            b"Subject: plain\n\nhello\n"):
        assert [m for m in mail if m.endswith(tail)], (tail, mail)
    assert b"(UTF-8 header fields)" in dsn, dsn
