"""A SIGHUP reload and each loop's chain state (the state store and the
resolver the handler chains use): made when a loop starts, made again when
a reload names another store, kept by the sessions that started with it;
a store that cannot be opened refuses the sessions that need it with 421
at connect, and the server recovers at the next good reload."""

import errno
import os
import shutil
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import time
import urllib.request

from conftest import (free_port, log_events, make_config, run_cli,
    send_message, unverified_context, wait_for)
from httpd import Api
from test_threads import make_cert

# A stalled loop would hold a reply this long at most.
BOUNDED = 20.0

CHAIN = "on helo { ratelimit 1000/1m per helo }"


def config(state):
    # One loop: the store in use is the only one.
    return make_config(["workers 1", "state " + state, CHAIN])


def reloads_done(srv):
    return srv.log().count("reload: configuration")


def reload(srv, state):
    n = reloads_done(srv)
    srv.write_config(config(state))
    srv.sighup()
    wait_for(lambda: reloads_done(srv) > n or "reload failed" in srv.log(),
        10, what="the reload to end")
    assert "reload failed" not in srv.log(), srv.log()[-2000:]


def counted(path):
    """HELO names the ratelimit counted in the sqlite file at path."""
    if not os.path.exists(path):
        return set()
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        rows = db.execute("SELECT k FROM kv WHERE k LIKE 'rl:%'").fetchall()
    finally:
        db.close()
    return {name for (k,) in rows for name in
        ("first.example", "old.example", "new.example", "back.example")
        if name in k}


def test_a_new_state_store_after_reload_and_old_sessions_keep_theirs(
        make_postern, tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    srv = make_postern(config=config("sqlite " + a))
    with srv.session() as c:
        c.hello("first.example")
    wait_for(lambda: "first.example" in counted(a), 10,
        what="first.example counted in a.db")
    with srv.session() as old:
        old.expect(220)
        reload(srv, "sqlite " + b)
        with srv.session() as c:
            c.hello("new.example")
        wait_for(lambda: "new.example" in counted(b), 10,
            what="new.example counted in b.db, the store named after the "
            "reload")
        # The session from before the reload counts where it started.
        old.send("EHLO old.example"); old.expect(250)
        wait_for(lambda: "old.example" in counted(a), 10,
            what="old.example counted in a.db")
    assert counted(a) == {"first.example", "old.example"}
    assert counted(b) == {"new.example"}


def test_a_store_that_cannot_be_opened_gives_421_until_a_good_reload(
        make_postern, tmp_path):
    a, c_db = str(tmp_path / "a.db"), str(tmp_path / "c.db")
    srv = make_postern(config=config("sqlite " + a))
    with srv.session() as old:
        old.expect(220)
        reload(srv, "sqlite %s/no-such-dir/x.db" % tmp_path)
        for _ in range(3):
            with srv.session() as c:
                c.expect(421, "4.3.0")
                c.expect_closed()
        assert "cannot open the sqlite state store" in srv.log()
        assert srv.alive()
        # A session from before the reload goes on with its own store.
        old.send("EHLO old.example"); old.expect(250)
        old.send("QUIT"); old.expect(221)
    reload(srv, "sqlite " + c_db)
    with srv.session() as c:
        c.hello("back.example")
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: "back.example" in counted(c_db), 10,
        what="back.example counted in c.db")
    assert srv.alive()


def test_the_state_store_is_opened_when_the_loops_start(make_postern,
        tmp_path):
    """Not at a loop's first connection, where a flood of clients could
    have taken the descriptors it needs: the file is there before any
    client came, once per loop."""
    a = str(tmp_path / "a.db")
    srv = make_postern(config=make_config(["workers 2 spread",
        "state sqlite " + a, CHAIN]))
    wait_for(lambda: os.path.exists(a), 10,
        what="a.db made before any connection")
    assert log_events(srv, "connect") == [], "a client connected"


def test_a_reload_never_stalls_the_loops_on_a_lookup_left_running(
        make_postern, redis_proc):
    """The configuration a reload replaces is freed when its last session
    ends, and freeing it waits for its tables' threads: one of them may
    still be in a lookup nobody waits for any more, up to the table's
    timeout.  The loops go on greeting and answering meanwhile, and the
    main thread goes on with signals: a second reload is not held up."""
    lines = ["workers 1",
        "table users redis:%s timeout 8s pool 1 cache off "
        "negative-cache off" % redis_proc.spec,
        "on rcpt { verify <users> }"]
    srv = make_postern(config=make_config(lines))
    redis_proc.pause()
    try:
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<bob@example.org>")	# the lookup hangs
            time.sleep(0.3)
        # The session is gone; its lookup goes on, with the old table.
        wait_for(lambda: "disconnect" in srv.log(), 10,
            what="the session's end in the log")
        srv.write_config(make_config(lines))
        srv.sighup()
        time.sleep(0.5)
        t0 = time.monotonic()
        with srv.session() as o:
            o.expect(220, timeout=BOUNDED)
            o.send("EHLO other.example"); o.expect(250, timeout=BOUNDED)
            o.send("QUIT"); o.expect(221, timeout=BOUNDED)
        took = time.monotonic() - t0
        # The lookup's timeout would be 7 s away still.
        assert took < 3.0, "a session waited %.1f s after the reload" % took
        wait_for(lambda: reloads_done(srv) == 1, BOUNDED,
            what="the reload's line")
        srv.sighup()
        wait_for(lambda: reloads_done(srv) == 2, 3.0,
            what="a second reload while the first one's tables close")
    finally:
        redis_proc.resume()
    assert srv.alive()


def leak_config(d, up_port, hook_url, metrics_port):
    """Something of each kind that holds descriptors or threads."""
    return make_config(extra=[
        "workers 2 spread",
        'transaction-log "%s/tlog"' % d,
        'tls cert "%s/cert.pem" key "%s/key.pem"' % (d, d),
        "metrics listen 127.0.0.1:%d" % metrics_port,
        "state sqlite %s/state.db" % d,
        'table aliases sqlite:%s/aliases.db query "SELECT target FROM '
        'aliases WHERE address = $1" cache off negative-cache off' % d,
        'table known file:%s/known' % d,
        "alias <aliases>",
        "on connect { ratelimit 1000000/1m per ip }",
        "on rcpt { verify <known> }",
        'on eom { lua "%s/filter.lua" }' % d,
        'action up relay "smtp://127.0.0.1:%d"' % up_port,
        'action hook webhook "%s"' % hook_url,
    ], rules=["match to domain example.org action local",
              "match to domain remote.test action up",
              "match to domain hook.test action hook"])


def held(pid):
    """(descriptors, threads) of process pid."""
    return (len(os.listdir("/proc/%d/fd" % pid)),
            len(os.listdir("/proc/%d/task" % pid)))


def test_reloads_leave_no_descriptor_or_thread_behind(make_postern, tmp_path):
    """Each reload builds tables, a state store, TLS contexts, a relay and
    a webhook client anew; once the sessions of the old configuration are
    gone, what it held is let go."""
    up = make_postern(rules=["match to domain remote.test action local"])
    api = Api().start()
    srv = make_postern(start=False, config="")
    make_cert(srv.dir)
    with open(srv.path("filter.lua"), "w") as f:
        f.write("function eom(facts, state)\n  return \"continue\"\nend\n")
    with open(srv.path("known"), "w") as f:
        f.write("bob@example.org\nbob@remote.test\nbob@hook.test\n")
    db = sqlite3.connect(srv.path("aliases.db"))
    db.execute("CREATE TABLE aliases (address text, target text)")
    db.commit()
    db.close()
    conf = leak_config(srv.dir, up.port, api.url(), free_port())
    srv.write_config(conf)
    srv.start()
    sent = [0]

    def round_of_mail():
        for i, rcpt in enumerate(["bob@example.org", "bob@remote.test",
                                  "bob@hook.test"]):
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
                s.ehlo("client.test")
                if i == 0:
                    s.starttls(context=unverified_context())
                    s.ehlo("client.test")
                s.sendmail("a@sender.test", [rcpt],
                    "Subject: %d\r\n\r\nhello\r\n" % sent[0])
            sent[0] += 1
        n = sent[0] // 3
        wait_for(lambda: len(srv.maildir("bob")) == n and
                 len(up.maildir("bob")) == n and len(api.requests) == n,
                 30, what="round %d delivered" % n)

    def reload():
        n = srv.log().count("reload: configuration")
        srv.write_config(conf)
        srv.sighup()
        wait_for(lambda: srv.log().count("reload: configuration") > n,
                 30, what="the reload")

    try:
        # Everything started lazily is started, and replaced once.
        round_of_mail()
        reload()
        round_of_mail()
        time.sleep(1)
        fds, threads = held(srv.proc.pid)
        for _ in range(20):
            reload()
            round_of_mail()
        # A kept relay session or two may come and go.
        wait_for(lambda: held(srv.proc.pid)[0] <= fds + 3 and
                 held(srv.proc.pid)[1] <= threads, 30,
                 what="descriptors and threads back to %d and %d (now %r)"
                 % (fds, threads, held(srv.proc.pid)))
        assert "reload failed" not in srv.log(), srv.log()[-2000:]
    finally:
        api.stop()


def make_pair(d, cn):
    """A self-signed EC pair for cn in folder d (made)."""
    os.makedirs(d, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
        "/CN=" + cn, "-keyout", os.path.join(d, "key.pem"),
        "-out", os.path.join(d, "cert.pem")], check=True,
        capture_output=True, timeout=30)


def install(src, dst, names=("cert.pem", "key.pem")):
    """Copy src's files over dst's the way renewals do: a new file
    renamed into place."""
    for name in names:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name + ".new"))
        os.replace(os.path.join(dst, name + ".new"), os.path.join(dst, name))


def der(folder):
    with open(os.path.join(folder, "cert.pem")) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def served(srv):
    """The certificate a new STARTTLS session is shown (DER)."""
    with srv.session() as c:
        c.hello()
        c.starttls(unverified_context())
        cert = c.sock.getpeercert(binary_form=True)
        c.send("QUIT"); c.expect(221)
        return cert


def test_a_renewed_certificate_is_served_after_a_reload(make_postern,
        tmp_path):
    """The files are replaced and SIGHUP sent: new sessions get the new
    certificate, a session already in TLS goes on with its own; a pair
    that does not match, or a key gone missing, fails the reload and the
    last good certificate stays."""
    a, b, live = (str(tmp_path / n) for n in ("a", "b", "live"))
    make_pair(a, "a.example")
    make_pair(b, "b.example")
    os.makedirs(live)
    install(a, live)
    conf = make_config(['tls cert "%s/cert.pem" key "%s/key.pem"'
        % (live, live)])
    srv = make_postern(config=conf)
    assert served(srv) == der(a)
    with srv.session() as old:
        old.hello()
        old.starttls(unverified_context())
        old.send("EHLO client.example"); old.expect(250)
        install(b, live)
        srv.write_config(conf)
        srv.sighup()
        wait_for(lambda: reloads_done(srv) == 1, 10, what="the reload")
        assert served(srv) == der(b)
        send_message(old, "a@example.net", ["bob@example.org"],
            "Subject: before\r\n\r\nover the old certificate\r\n")
        assert old.sock.getpeercert(binary_form=True) == der(a)
    wait_for(lambda: len(srv.maildir("bob")) == 1, what="the delivery")

    install(a, live, names=("key.pem",))	# b's certificate, a's key
    srv.sighup()
    wait_for(lambda: srv.log().count("reload failed") == 1, 10,
        what="the reload to fail")
    assert served(srv) == der(b)
    os.unlink(os.path.join(live, "key.pem"))
    srv.sighup()
    wait_for(lambda: srv.log().count("reload failed") == 2, 10,
        what="the second reload to fail")
    assert served(srv) == der(b)
    failed = [l for l in srv.log().splitlines() if "reload failed" in l]
    assert "key does not match certificate" in failed[0], failed
    assert "key.pem: No such file or directory" in failed[1], failed
    assert srv.alive()


# ----- listeners, and what only a restart changes ----------------------------

def reload_to(srv, text, ok=True):
    """Write text as the configuration, SIGHUP, and wait for the reload's
    outcome; returns the log lines it wrote."""
    before = len(srv.log().splitlines())
    done = srv.log().count("reload: configuration")
    failed = srv.log().count("reload failed")
    srv.write_config(text)
    srv.sighup()
    wait_for(lambda: srv.log().count("reload: configuration") > done or
        srv.log().count("reload failed") > failed, 10,
        what="the reload to end")
    lines = srv.log().splitlines()[before:]
    assert ok == (srv.log().count("reload failed") == failed), lines
    return lines


def greeted(port, host="127.0.0.1"):
    """A new session on host:port is greeted 220 (else False)."""
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            got = b""
            while len(got) < 4:
                more = s.recv(4 - len(got))
                if not more:
                    break
                got += more
            return got == b"220 "
    except OSError:
        return False


def test_a_reload_whose_new_address_cannot_be_bound_changes_nothing(
        make_postern):
    """An address in use by another process: the whole reload is refused in
    one line, the old listeners and the old configuration stay."""
    srv = make_postern(extra=["workers 2"])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(8)
    q = busy.getsockname()[1]
    try:
        lines = reload_to(srv, make_config(["workers 2",
            "listen 127.0.0.1:%d" % q], rules=["match to domain "
            "other.test action local"]), ok=False)
        assert [l for l in lines if "error" in l] == [l for l in lines
            if "reload failed: listen 127.0.0.1 port %d: in use by another "
            "process (another postern?): keeping the running configuration"
            % q in l], lines
        assert not [l for l in lines if "listening on" in l], lines
        for _ in range(10):
            assert greeted(srv.port)
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<a@example.net>"); c.expect(250)
            c.send("RCPT TO:<bob@example.org>"); c.expect(250)	# old rules
    finally:
        busy.close()
    # Once it is free, the same file loads.
    lines = reload_to(srv, srv.fill(open(srv.conf).read()))
    assert "listening on 127.0.0.1:%d" % q in "\n".join(lines), lines
    wait_for(lambda: greeted(q), 10, what="a greeting on the new address")


def test_a_listener_on_the_metrics_address_is_refused_for_that(
        make_postern):
    """A reload that adds a listener where postern's own metrics endpoint
    listens is refused with what postern check says of that file (not as
    another process's address); the endpoint runs on, as does the server.
    When the file no longer names the endpoint (it changes only at
    restart), the listener's line is the one at fault."""
    m = free_port()
    metrics = "metrics listen 127.0.0.1:%d" % m
    srv = make_postern(extra=[metrics])
    for extra, at, listener in (([metrics, "listen 127.0.0.1:%d" % m], 5, 6),
            (["listen 127.0.0.1:%d" % m], 5, 5)):
        lines = reload_to(srv, make_config(extra), ok=False)
        want = ("reload failed: %s:%d: metrics listen 127.0.0.1 port %d: the "
            "listener of line %d has that address and port: keeping the "
            "running configuration" % (srv.conf, at, m, listener))
        assert [l for l in lines if "error" in l] == [l for l in lines
            if want in l] != [], lines
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % m,
                timeout=5) as r:
            assert r.status == 200
        assert greeted(srv.port)


def test_a_specific_address_becomes_the_wildcard_and_back(make_postern):
    """Our own listener on 127.0.0.1:P does not keep 0.0.0.0:P from being
    bound beside it (and the other way round): the server goes on answering
    on the port, and the log says which address stopped."""
    srv = make_postern(extra=["workers 2"])
    wild = make_config(["workers 2"]).replace("listen 127.0.0.1:{port}",
        "listen 0.0.0.0:{port}")
    for text, now, was in ((wild, "0.0.0.0", "127.0.0.1"),
            (make_config(["workers 2"]), "127.0.0.1", "0.0.0.0")):
        lines = "\n".join(reload_to(srv, text))
        assert "listening on %s:%d" % (now, srv.port) in lines, lines
        assert "no longer listening on %s:%d" % (was, srv.port) in lines, \
            lines
        wait_for(lambda: greeted(srv.port), 10,
            what="a greeting on port %d after the reload to %s" % (
            srv.port, now))
        for _ in range(20):
            assert greeted(srv.port)
    assert greeted(srv.port, host="127.0.0.2") is False	# no wildcard now


def fifo_writer(path):
    """The FIFO at path opened for writing, once a reader has it open (the
    reader's open then returns); None before."""
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return None
        raise


def refused(port):
    """A connection to 127.0.0.1:port is refused: nothing listens there."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def test_an_address_a_busy_loop_never_took_is_closed_with_its_drop(
        make_postern, tmp_path):
    """A loop busy through two reloads takes only the second set of
    listeners.  An address the first added and the second dropped is
    closed on that loop's socket too: no longer listening, not left taking
    connections that no loop accepts."""
    fifo = str(tmp_path / "hold")
    os.mkfifo(fifo)
    (tmp_path / "hold.lua").write_text(
        'function connect()\n'
        '  local f = io.open("%s", "r")\n'
        '  if f then f:read("l"); f:close() end\n'
        'end\n' % fifo)
    held = ["workers 2",
        'on connect { lua "%s" allow-unsafe }' % (tmp_path / "hold.lua")]
    srv = make_postern(extra=held)
    q = free_port()
    # A light load is on loop 0: its first session holds it in the handler
    # until the FIFO gets a line.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10):
        w = wait_for(lambda: fifo_writer(fifo), 10,
            what="the handler waiting on the FIFO")
        try:
            reload_to(srv, make_config(held + ["listen 127.0.0.1:%d" % q]))
            reload_to(srv, make_config(held))
        finally:
            os.unlink(fifo)		# the next sessions pass
            os.write(w, b"go\n")
            os.close(w)
        wait_for(lambda: refused(q), 10,
            what="port %d closed after the reload that dropped it" % q)
    assert greeted(srv.port)


def test_a_reload_that_drops_an_address_says_so(make_postern):
    q = free_port()
    two = make_config(["listen 127.0.0.1:%d" % q])
    srv = make_postern(config=two)
    wait_for(lambda: greeted(q), 10, what="a greeting on the second address")
    lines = reload_to(srv, make_config())
    assert "no longer listening on 127.0.0.1:%d" % q in "\n".join(lines), \
        lines
    wait_for(lambda: not greeted(q), 10, what="the second address closed")
    assert greeted(srv.port)


def restart_only_warnings(lines):
    return [l[l.index("reload:"):] for l in lines if "only at restart" in l]


def test_a_reload_compares_with_what_runs_not_with_the_last_file(
        make_postern):
    """A setting that changes only at restart is named once, when the file
    changes it; the running configuration keeps the value that runs, so
    going back to it, or reloading the same file, names nothing."""
    def conf(workers, user=None):
        return make_config(["workers %d" % workers] +
            (["user " + user] if user else []))
    srv = make_postern(config=conf(2))
    assert restart_only_warnings(reload_to(srv, conf(1, "nobody"))) == [
        "reload: spool (and its keep folder) and workers change only at "
        "restart", "reload: user changes only at restart"]
    assert restart_only_warnings(reload_to(srv, conf(2))) == []
    assert restart_only_warnings(reload_to(srv, conf(2))) == []


def greeting(srv):
    with srv.session() as c:
        return c.expect(220).text


def test_a_reload_refuses_what_check_and_the_next_start_refuse(
        make_postern, tmp_path):
    """"user" changes only at restart, but a user this system lacks makes
    postern check and the next start fail: a reload is refused for it,
    with the error check names, before anything of the file is taken (its
    new greeting); the service manager hears that the reload failed.
    Several such errors come a line each."""
    from test_service import Notify
    notify = Notify(tmp_path / "notify.sock")
    try:
        srv = make_postern(start=False)
        srv.env = {"NOTIFY_SOCKET": notify.path}
        srv.start()
        notify.expect("READY")
        old = greeting(srv)
        bad = make_config(["user nosuchuser", 'greeting "NEW"'])
        srv.write_config(bad)
        r = run_cli("check", "-c", srv.conf)
        assert (r.returncode, r.stdout) == (1, "%s:5: user nosuchuser: no "
            "such user\n" % srv.conf), r
        lines = reload_to(srv, bad, ok=False)
        assert [l for l in lines if " error " in l or " warn " in l] == [
            l for l in lines if "error reload failed: %s:5: user "
            "nosuchuser: no such user: keeping the running configuration"
            % srv.conf in l] != [], lines
        notify.expect("RELOADING")
        msg = notify.expect("READY")
        assert "reload failed" in msg["STATUS"], msg
        assert greeting(srv) == old == "test.example ESMTP postern"
        lines = reload_to(srv, make_config(["user nosuchuser",
            "group nosuchgroup", "log file {tmp}/nodir/postern.log",
            'greeting "NEW"']), ok=False)
        assert [l[l.index("reload"):] for l in lines if " error " in l or
            " warn " in l] == ["reload: %s:%s" % (srv.conf, e) for e in (
            "5: user nosuchuser: no such user",
            "6: group nosuchgroup: no such group",
            "7: log file %s/nodir/postern.log: folder %s/nodir: No such "
            "file or directory" % (srv.dir, srv.dir))] + [
            "reload failed: keeping the running configuration"], lines
        assert greeting(srv) == old
        # What check takes, a reload takes: the greeting, and a warning
        # for the user, which changes only at restart.
        lines = reload_to(srv, make_config(["user nobody",
            'greeting "NEW"']))
        assert restart_only_warnings(lines) == [
            "reload: user changes only at restart"], lines
        assert greeting(srv) == "test.example NEW"
    finally:
        notify.close()


def test_a_new_spool_log_size_is_named_at_reload(make_postern):
    srv = make_postern()			# the test config's log-size 1M
    assert restart_only_warnings(reload_to(srv, make_config().replace(
        "spool log-size 1M", "spool log-size 2M"))) == [
        "reload: spool log-size changes only at restart"]
    assert restart_only_warnings(reload_to(srv, make_config())) == []


def test_a_new_pid_file_is_named_at_reload_and_the_old_one_kept(
        make_postern, tmp_path):
    pid_a, pid_b = str(tmp_path / "a.pid"), str(tmp_path / "b.pid")
    srv = make_postern(extra=["pid-file " + pid_a])
    assert restart_only_warnings(reload_to(srv, make_config(["pid-file " +
        pid_b]))) == ["reload: pid-file changes only at restart"]
    assert restart_only_warnings(reload_to(srv, make_config(["pid-file " +
        pid_a]))) == []
    assert open(pid_a).read().strip() == str(srv.proc.pid)
    assert not os.path.exists(pid_b)


def test_a_pid_file_of_the_command_line_is_no_change(make_postern, tmp_path):
    """postern run --pid-file wins over the file's, at a reload too."""
    srv = make_postern(start=False)
    srv.run_args = ["--pid-file", str(tmp_path / "cli.pid")]
    srv.start()
    for extra in ([], ["pid-file %s/other.pid" % tmp_path]):
        assert restart_only_warnings(reload_to(srv, make_config(extra))) == []
    assert open(tmp_path / "cli.pid").read().strip() == str(srv.proc.pid)
    assert not os.path.exists(tmp_path / "other.pid")


def test_reloads_refused_for_the_descriptor_limit_leak_nothing(make_postern):
    """Each refused reload frees the configuration it read (LeakSanitizer
    at exit would name it)."""
    srv = make_postern(start=False)
    srv.argv_prefix = ["prlimit", "--nofile=4096:4096", "--"]
    srv.start()
    for _ in range(3):
        lines = reload_to(srv, make_config(["limit connections 1000000"]),
            ok=False)
        assert "descriptor limit is 4096" in "\n".join(lines), lines
    assert greeted(srv.port)
    srv.stop()
    assert srv.sanitizer_report() is None, srv.sanitizer_report()
