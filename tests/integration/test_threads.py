"""
The server's threads under ThreadSanitizer.

A postern built with -Db_sanitize=thread (build-tsan, made here when it is
missing; POSTERN_TSAN_BIN names another) takes mail over many sessions at
once: Maildir copies on the fast path, mail relayed through the queue to a
second postern, messages for both (spooled, then delivered by the queue),
webhooks posted to an HTTP service, STARTTLS, a handler chain with a state store and Lua, every recipient
looked up in an SQLite table, transaction logs.  Meanwhile it is reloaded
with its log settings changed, its log file reopened and its queue listed,
again and again.  ThreadSanitizer must report no data race, the
server must exit 0, and every message must arrive.

Two parts stay out, for what ThreadSanitizer cannot see into: the metrics
listener (libevent's HTTP server makes an epoll_ctl on a descriptor number
another thread has since reused, reported as a race in whichever thread
closes the new descriptor) and the MIME parser of JSON webhooks (GLib hands
a type's class, made once by the first thread to use it, to the others
with atomics of its own), so the webhook posts the raw message.
"""

import os
import platform
import signal
import smtplib
import sqlite3
import subprocess
import threading

import pytest

from conftest import REPO, make_config, run_cli, unverified_context, wait_for
from httpd import Api

SESSIONS = 16		# client threads at once
MESSAGES = 16		# messages each thread sends, one session each
LUA = '''
function eom(facts, state)
  state.tx.set("header.octets", tostring(#(facts.headers or "")))
end
'''


@pytest.fixture(scope="module")
def tsan_binary():
    """A ThreadSanitizer build of postern."""
    path = os.environ.get("POSTERN_TSAN_BIN")
    if path:
        return path
    build = os.path.join(REPO, "build-tsan")
    if not os.path.exists(os.path.join(build, "build.ninja")):
        r = subprocess.run(["meson", "setup", build, "-Db_sanitize=thread",
            "-Db_lundef=false", "-Dtests=disabled"], cwd=REPO,
            capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, "meson setup build-tsan:\n" + \
            r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(["ninja", "-C", build, "postern"], cwd=REPO,
        capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, "ninja -C build-tsan:\n" + r.stdout[-3000:]
    return os.path.join(build, "postern")


def make_cert(d):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
        "/CN=test.example", "-keyout", os.path.join(d, "key.pem"),
        "-out", os.path.join(d, "cert.pem")], check=True,
        capture_output=True, timeout=30)


@pytest.fixture
def api():
    a = Api().start()
    yield a
    a.stop()


def config(d, up_port, hook_url, json):
    return make_config(extra=[
        'transaction-log "%s/tlog"' % d,
        'tls cert "%s/cert.pem" key "%s/key.pem"' % (d, d),
        'log file "%s/postern.log"' % d,
        "log format json" if json else "log format text",
        "log level debug" if json else "log level info",
        "state sqlite %s/state.db" % d,
        'table aliases sqlite:%s/aliases.db query "SELECT target FROM '
        'aliases WHERE address = $1" cache off negative-cache off' % d,
        "alias <aliases>",
        "on connect { ratelimit 1000000/1m per ip }",
        "on eom { header max-size 64k }",
        'on eom { lua "%s/filter.lua" }' % d,
        'action up relay "smtp://127.0.0.1:%d"' % up_port,
        'action hook webhook "%s" format raw' % hook_url,
    ], rules=["match to domain example.org action local",
              "match to domain remote.test action up",
              "match to domain hook.test action hook"])


def send_all(port, k, errors):
    """Thread k's messages: to a local box, to the relay, to both, to the
    webhook; every third session with STARTTLS."""
    for i in range(MESSAGES):
        rcpts = (["l%d@example.org" % k], ["r%d@remote.test" % k],
                 ["l%d@example.org" % k, "r%d@remote.test" % k],
                 ["h%d@hook.test" % k])[i % 4]
        msg = ("From: a@sender.test\r\nSubject: %d.%d\r\n\r\n" % (k, i) +
               "line\r\n" * 200)
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.ehlo("client%d.test" % k)
                if (k + i) % 3 == 0:
                    s.starttls(context=unverified_context())
                    s.ehlo("client%d.test" % k)
                s.sendmail("a@sender.test", rcpts, msg)
        except (OSError, smtplib.SMTPException) as e:
            errors.append("thread %d message %d: %r" % (k, i, e))
            return


def logged(srv, text):
    """Lines with text in the log file and the ones renamed from it."""
    n = 0
    for name in os.listdir(srv.dir):
        if name.startswith("postern.log"):
            with open(srv.path(name)) as f:
                n += f.read().count(text)
    return n


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return str(e)


def stop(srv, timeout=60):
    """SIGTERM and the exit status; if none comes, what each thread waits
    on (from /proc), then SIGKILL and a failure."""
    srv.sigterm()
    try:
        return srv.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    task = "/proc/%d/task" % srv.proc.pid	# setarch execs postern
    threads = []
    for tid in sorted(os.listdir(task), key=int):
        comm, wchan, stack = (read_text(os.path.join(task, tid, name))
                              for name in ("comm", "wchan", "stack"))
        threads.append("%s %s wchan=%s\n%s" % (tid, comm, wchan, stack))
    srv.kill9()
    pytest.fail("no exit within %ds of SIGTERM; its threads:\n%s" % (
        timeout, "\n".join(threads)), pytrace=False)


def count(srv, prefix):
    return sum(len(srv.maildir("%s%d" % (prefix, k)))
               for k in range(SESSIONS))


def test_no_data_race_under_load_and_reloads(make_postern, tsan_binary,
                                             api):
    up = make_postern(rules=["match to domain remote.test action local"])
    srv = make_postern(start=False, config="")
    make_cert(srv.dir)
    with open(srv.path("filter.lua"), "w") as f:
        f.write(LUA)
    db = sqlite3.connect(srv.path("aliases.db"))	# every recipient looked up
    db.execute("CREATE TABLE aliases (address text, target text)")
    db.commit()
    db.close()
    srv.write_config(config(srv.dir, up.port, api.url(), json=False))
    srv.bin = tsan_binary
    # gcc's ThreadSanitizer needs the address space laid out as it expects.
    srv.argv_prefix = ["setarch", platform.machine(), "-R"]
    srv.env = {"TSAN_OPTIONS": "halt_on_error=0 second_deadlock_stack=1 "
        "suppressions=%s" % os.path.join(os.path.dirname(os.path.abspath(
        __file__)),
        "tsan.supp")}
    srv.start()

    errors = []
    threads = [threading.Thread(target=send_all, args=(srv.port, k, errors))
               for k in range(SESSIONS)]
    for t in threads:
        t.start()
    logfile = srv.path("postern.log")
    n = 0
    while n < 3 or any(t.is_alive() for t in threads):
        assert n < 200, "the clients are still sending after 200 reloads"
        srv.write_config(config(srv.dir, up.port, api.url(),
                                json=n % 2 == 0))
        srv.sighup()
        wait_for(lambda: logged(srv, "reload: configuration") == n + 1,
                 timeout=30, what="reload %d" % (n + 1))
        os.replace(logfile, logfile + ".%d" % n)
        srv.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: logged(srv, "log file reopened") == n + 1,
                 timeout=30, what="log file reopened %d" % (n + 1))
        r = run_cli("queue", "-c", srv.conf, "list", timeout=30)
        assert r.returncode == 0, r.stderr
        n += 1
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a client thread hung"
    assert errors == [], errors

    per_box = MESSAGES // 4 * 2		# a box's own messages and the both
    wait_for(lambda: count(srv, "l") == SESSIONS * per_box and
             count(up, "r") == SESSIONS * per_box and
             len(api.requests) == SESSIONS * MESSAGES // 4, timeout=60,
             what="every message in its Maildir, here and upstream, and "
             "at the webhook")
    assert len(os.listdir(srv.path("tlog"))) > 0
    rc = stop(srv)
    assert rc == 0, "exit status %d (ThreadSanitizer's is 66):\n%s" % (
        rc, srv.log()[-3000:])
    assert "WARNING: ThreadSanitizer" not in srv.log(), \
        srv.sanitizer_report()
    assert logged(srv, "reload: configuration") == n
