"""
Users and mailboxes from real backends: a throw-away PostgreSQL cluster
(Debian's postgresql, initdb in a temporary folder, run as the postgres
user on a loopback port), a throw-away Redis, system users made with
useradd/chpasswd and a PAM service file.  The shipped example
(examples/slimsmtp/postern.conf and examples/slimsmtp/schema.sql) is what
the first test runs.
"""

import contextlib
import crypt
import os
import http.client
import re
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import (HOST, REPO, free_port, listen_config, make_config,
    plain, run_cli, send_message, wait_for, TEMPLATE_HEAD)

def example_config(pg):
    with open(os.path.join(REPO, "examples", "slimsmtp", "postern.conf")) as f:
        text = f.read()
    # The example's own lines, pointed at the test's cluster and folders.
    text = text.replace("host=/run/postgresql dbname=mail user=postern",
        pg.conninfo())
    text = text.replace("/var/mail/unsorted", "{tmp}/unsorted")
    keep = [l for l in text.splitlines() if not l.startswith(("hostname",
        "spool", "listen", "user ", "group "))]
    return TEMPLATE_HEAD + "\n".join(keep) + "\n"


def new_files(home):
    d = os.path.join(home, "Maildir", "new")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_example_schema_pam_alias_shared_catchall(make_postern, pg, sysuser):
    with open(os.path.join(REPO, "examples", "slimsmtp", "schema.sql")) as f:
        pg.sql(f.read())
    anton = sysuser("pstnanton", "antonpw")
    pg.sql("UPDATE smtp SET mailbox='pstnanton' WHERE mailbox='anton'")
    srv = make_postern(config=example_config(pg))
    with srv.session() as c:
        c.hello()
        # PAM row: into the user's home, as the user.
        send_message(c, "a@far.example", ["pstnanton@example.com"],
            "Subject: home\r\n\r\nto anton\r\n")
        # @SOCIAL rows: facebook@ and twitter@ fan out to the members.
        send_message(c, "a@far.example", ["facebook@example.com",
            "twitter@example.com"], "Subject: social\r\n\r\nshared\r\n")
        # No row: the default catch-all.
        send_message(c, "a@far.example", ["nobody@example.com"],
            "Subject: stray\r\n\r\nunsorted\r\n")
        # A foreign domain: relaying denied.
        c.send("MAIL FROM:<a@far.example>"); c.expect(250)
        c.send("RCPT TO:<x@elsewhere.example>"); c.expect(550, "5.7.1")
    # One copy for the PAM address, one for the message to both @SOCIAL
    # addresses (one Maildir named twice gets it once).
    files = wait_for(lambda: len(new_files(anton.pw_dir)) >= 2 and
        new_files(anton.pw_dir), timeout=15, what="anton's deliveries")
    md = os.path.join(anton.pw_dir, "Maildir")
    for sub in ("", "new", "tmp", "cur"):
        st = os.stat(os.path.join(md, sub))
        assert (st.st_uid, st.st_gid) == (anton.pw_uid, anton.pw_gid), sub
        assert st.st_mode & 0o777 == 0o700, (sub, oct(st.st_mode))
    for f in files:
        st = os.stat(os.path.join(md, "new", f))
        assert st.st_uid == anton.pw_uid and st.st_mode & 0o777 == 0o600
    bodies = b"".join(open(os.path.join(md, "new", f), "rb").read()
        for f in files)
    assert b"to anton" in bodies and b"shared" in bodies
    wait_for(lambda: os.listdir(srv.path("unsorted", "new")) if
        os.path.isdir(srv.path("unsorted", "new")) else None,
        what="the catch-all copy")
    wait_for(lambda: not srv.spool_files("env"), what="an empty queue")
    assert len(new_files(anton.pw_dir)) == 2


def test_unknown_user_refused_without_catchall(make_postern, pg):
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY, path text)")
    pg.sql("INSERT INTO boxes VALUES ('bob@example.org', '%s')" %
        "/tmp/never-used")
    srv = make_postern(extra=[
        'table boxes pgsql:"%s" query "SELECT path FROM boxes WHERE '
        'address = $1"' % pg.conninfo()],
        rules=["match to <boxes> action local"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@far.example>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("RCPT TO:<carol@example.org>"); c.expect(550)
        # SQL in the address is only a key: nothing runs, nobody matches.
        c.send("RCPT TO:<\"x' OR '1'='1\"@example.org>"); c.expect(550)
    assert pg.sql("SELECT count(*) FROM boxes") == "1\n"


def test_unknown_user_of_a_database_to_table_and_its_named_domains(
        make_postern, pg):
    """A database table cannot list the domains of its keys: an unknown
    user of a domain known only from a pgsql `to <boxes>` is relaying
    (5.7.1).  Naming the domains with `to domain <doms>` in the rule makes
    them ours: there an unknown user is 5.1.1."""
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY)")
    pg.sql("INSERT INTO boxes VALUES ('bob@pg.example'), "
        "('bob@hosted.example')")
    pg.sql("CREATE TABLE doms (domain text PRIMARY KEY)")
    pg.sql("INSERT INTO doms VALUES ('hosted.example')")
    srv = make_postern(extra=[
        'table boxes pgsql:"%s" query "SELECT address FROM boxes WHERE '
        'address = $1"' % pg.conninfo(),
        'table doms pgsql:"%s" query "SELECT domain FROM doms WHERE '
        'domain = $1"' % pg.conninfo()],
        rules=["match to domain <doms> to <boxes> action local",
            "match to <boxes> action local"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@far.example>"); c.expect(250)
        c.send("RCPT TO:<bob@pg.example>"); c.expect(250)
        c.send("RCPT TO:<carol@pg.example>"); c.expect(550, "5.7.1")
        c.send("RCPT TO:<bob@hosted.example>"); c.expect(250)
        c.send("RCPT TO:<carol@hosted.example>"); c.expect(550, "5.1.1")


def test_pgsql_down_is_451_then_accepted(make_postern, pg):
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY)")
    pg.sql("INSERT INTO boxes SELECT 'bob' || i || '@example.org' FROM "
        "generate_series(0, 99) i")
    srv = make_postern(extra=[
        'table boxes pgsql:"%s" query "SELECT address FROM boxes WHERE '
        'address = $1" timeout 2s cache off negative-cache off'
        % pg.conninfo()],
        rules=["match to <boxes> action local"])
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@far.example>"); c.expect(250)
        # (The same recipient twice is not asked again: one each.)
        c.send("RCPT TO:<bob0@example.org>"); c.expect(250)
        pg.ctl("stop")
        c.send("RCPT TO:<bob1@example.org>"); c.expect(451, "4.3.0")
        c.send("RCPT TO:<bob2@example.org>"); c.expect(451, "4.3.0")
        pg.ctl("start")
        n = iter(range(3, 100))

        def accepted():
            c.send("RCPT TO:<bob%d@example.org>" % next(n))
            return c.read_reply(timeout=10).code == 250
        wait_for(accepted, timeout=20, interval=0.5, what="PostgreSQL back")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: kept\r\n\r\nnothing lost\r\n.\r\n")
        c.expect(250)
    wait_for(lambda: srv.maildir("bob0"), what="bob0's message")
    log = srv.log()
    assert log.count("backend=pgsql unavailable") == 1, log[-3000:]
    assert "backend=pgsql answers again" in log


# ----- pooled connections the server closed ----------------------------------

POOL = 3


def fill_pool(lookup, open_conns):
    """POOL lookups at once, again until the table holds POOL connections
    (open_conns() counts them at the backend)."""
    def full():
        with ThreadPoolExecutor(POOL) as ex:
            codes = list(ex.map(lambda _: lookup().code, range(POOL)))
        assert all(c in (235, 250) for c in codes), codes
        return open_conns() >= POOL
    wait_for(full, timeout=30, interval=0.1, what="%d pooled connections"
        % POOL)


def all_answer(lookup, want):
    """POOL lookups at once, then POOL one after the other: each takes a
    pooled connection the server closed, or a new one; all answer."""
    with ThreadPoolExecutor(POOL) as ex:
        replies = list(ex.map(lambda _: lookup(), range(POOL)))
    replies += [lookup() for _ in range(POOL)]
    assert [r.code for r in replies] == [want] * len(replies), replies


def pg_auth(srv):
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("tuser", "pw1"))
        return c.read_reply(timeout=10)


def pg_pooled(pg):
    """postern's connections to the cluster (not psql's own)."""
    return int(pg.sql("SELECT count(*) FROM pg_stat_activity WHERE "
        "usename = 'postern' AND pid <> pg_backend_pid()"))


def test_pgsql_pooled_connections_terminated_cost_no_auth(make_postern, pg):
    """An administrator ends postern's idle sessions (pg_terminate_backend,
    as a failover or a pooler restart does): the next lookups find their
    connections closed and ask again on new ones: every AUTH succeeds, and
    no outage is logged."""
    pg.sql("CREATE TABLE users (name text PRIMARY KEY, hash text)")
    pg.sql("INSERT INTO users VALUES ('tuser', '%s')" % crypt.crypt("pw1",
        crypt.mksalt(crypt.METHOD_SHA512)))
    srv = make_postern(config=listen_config("auth-plaintext", extra=[
        'table users pgsql:"%s" query "SELECT hash FROM users WHERE '
        'name = $1" pool %d timeout 3s cache off negative-cache off'
        % (pg.conninfo(), POOL), "auth <users>",
        "auth-guard 1000/1h tarpit 0"]))
    fill_pool(lambda: pg_auth(srv), lambda: pg_pooled(pg))
    # (OFFSET 0: the filter runs first; other users' processes are not
    # postern's to end.)
    ended = pg.sql("SELECT count(*) FROM (SELECT pid FROM pg_stat_activity "
        "WHERE usename = 'postern' AND pid <> pg_backend_pid() OFFSET 0) p "
        "WHERE pg_terminate_backend(pid, 10000)")
    assert int(ended) == POOL, ended
    all_answer(lambda: pg_auth(srv), 235)
    assert "backend=pgsql unavailable" not in srv.log(), srv.log()[-3000:]


def rcpt_one(srv, who):
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@far.example>"); c.expect(250)
        c.send("RCPT TO:<%s>" % who)
        return c.read_reply(timeout=10)


def test_pgsql_restart_costs_no_rcpt_but_an_outage_is_451(make_postern, pg):
    """PostgreSQL restarted and up again: every RCPT lookup answers at
    once on new connections.  Stopped: the pooled connections are closed
    and no new one can be made, so RCPT gets the temporary answer."""
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY)")
    pg.sql("INSERT INTO boxes VALUES ('bob@example.org')")
    srv = make_postern(extra=[
        'table boxes pgsql:"%s" query "SELECT address FROM boxes WHERE '
        'address = $1" pool %d timeout 3s cache off negative-cache off'
        % (pg.conninfo(), POOL)], rules=["match to <boxes> action local"])
    lookup = lambda: rcpt_one(srv, "bob@example.org")
    fill_pool(lookup, lambda: pg_pooled(pg))
    pg.ctl("restart")
    all_answer(lookup, 250)
    assert "backend=pgsql unavailable" not in srv.log(), srv.log()[-3000:]
    pg.ctl("stop")
    r = lookup()
    assert (r.code, r.esc) == (451, "4.3.0"), r
    assert srv.log().count("backend=pgsql unavailable") == 1


# ----- what PostgreSQL says besides answers; slow and failed lookups --------

def test_pgsql_notices_are_logged_escaped(make_postern, pg):
    """A function the query calls raises a NOTICE and a WARNING that echo
    the key, a client's AUTH user name with a newline and an ESC in it:
    both are postern log lines, escaped, at info and warn; nothing of
    them reaches stderr raw, so no line is forged."""
    pg.sql("CREATE TABLE users (name text PRIMARY KEY, hash text)")
    pg.sql("INSERT INTO users VALUES ('tuser', '%s')" % crypt.crypt("pw1",
        crypt.mksalt(crypt.METHOD_SHA512)))
    pg.sql("CREATE FUNCTION user_hash(k text) RETURNS SETOF text "
        "LANGUAGE plpgsql AS $f$ BEGIN "
        "RAISE NOTICE 'auth lookup for %', k; "
        "RAISE WARNING 'slow lookup for %', k; "
        "RETURN QUERY SELECT hash FROM users WHERE name = k; END $f$")
    srv = make_postern(config=listen_config("auth-plaintext", extra=[
        'table users pgsql:"%s" query "SELECT user_hash($1)" '
        'cache off negative-cache off' % pg.conninfo(), "auth <users>",
        "auth-guard 1000/1h tarpit 0"]))
    forged = ("nobody\n2026-01-01T00:00:00.000000Z info auth sid=forged "
        "user=\"admin\"\x1b[2J")
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("tuser", "pw1")); c.expect(235)
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain(forged, "x")); c.expect(535)
    # (The lookup's lines come before the answer's.)
    wait_for(lambda: "auth-failed" in srv.log(), what="the failed AUTH")
    log = srv.log()
    assert "\x1b" not in log, log[-3000:]
    assert not re.search(r"^20\S+ info auth sid=forged", log, re.M), log
    assert "NOTICE:" not in log and "WARNING:" not in log, log[-3000:]
    assert re.search(r" info table=users backend=pgsql notice "
        r"severity=NOTICE text=\"auth lookup for nobody\\x0a2026-01-01"
        r"t00:00:00\.000000z info auth sid=forged user=\\x22admin\\x22"
        r"\\x1b\[2j\"$", log, re.M), log[-3000:]
    assert re.search(r" warn table=users backend=pgsql notice "
        r"severity=WARNING text=\"slow lookup for tuser\"$", log, re.M), \
        log[-3000:]


def pg_locked(pg, table, seconds):
    """An administrator's transaction holding table's exclusive lock."""
    return subprocess.Popen(["runuser", "-u", "postgres", "--", "psql",
        "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postern", "-d", "mail",
        "-qc", "BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; "
        "SELECT pg_sleep(%d); COMMIT;" % (table, seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pg_waiting(pg):
    """postern's sessions waiting for a lock."""
    return int(pg.sql("SELECT count(*) FROM pg_stat_activity WHERE "
        "usename = 'postern' AND wait_event_type = 'Lock' AND "
        "application_name <> 'psql'"))


def test_pgsql_timed_out_queries_are_cancelled(make_postern, pg):
    """A table locked by an administrator: each RCPT gets 451 at the
    table's timeout, and its query is cancelled on the server, so postern
    never holds more sessions there than its pool of 2."""
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY)")
    pg.sql("INSERT INTO boxes VALUES ('bob@example.org')")
    srv = make_postern(extra=[
        'table boxes pgsql:"%s" query "SELECT address FROM boxes WHERE '
        'address = $1" pool 2 timeout 1s cache off negative-cache off'
        % pg.conninfo()], rules=["match to <boxes> action local"])
    assert rcpt_one(srv, "bob@example.org").code == 250
    locker = pg_locked(pg, "boxes", 60)
    try:
        wait_for(lambda: int(pg.sql("SELECT count(*) FROM pg_locks WHERE "
            "mode = 'AccessExclusiveLock' AND granted AND relation = "
            "'boxes'::regclass")) == 1, what="the lock")
        for i in range(6):
            r = rcpt_one(srv, "bob@example.org")
            assert (r.code, r.esc) == (451, "4.3.0"), r
            # Past the second in which lookups fail at once after a
            # failed connect: each asks the server.
            time.sleep(1.1)
        wait_for(lambda: pg_waiting(pg) <= 2, timeout=5,
            what="at most the pool's 2 sessions waiting (%d)" %
            pg_waiting(pg))
    finally:
        # (Killing runuser would leave its psql holding the lock.)
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'psql' AND query LIKE '%pg_sleep%' "
            "AND pid <> pg_backend_pid()")
        locker.wait(10)
    # The lock gone, the table answers again.
    wait_for(lambda: rcpt_one(srv, "bob@example.org").code == 250,
        timeout=10, interval=0.5, what="an answer after the lock")


def test_pgsql_lookups_nobody_waits_for_are_not_run(make_postern, pg):
    """Four RCPTs at once on a pool of 1 against a query slower than the
    timeout: all get 451 at the timeout.  The three still queued then are
    dropped, not run after all: the server is asked once, and the next
    lookup is answered at once."""
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY)")
    pg.sql("INSERT INTO boxes VALUES ('fast@example.org')")
    # A sequence counts the calls: cancelling a call undoes no nextval.
    pg.sql("CREATE SEQUENCE calls")
    pg.sql("CREATE FUNCTION lk(k text) RETURNS SETOF text LANGUAGE plpgsql "
        "AS $f$ BEGIN IF k LIKE 'slow%' THEN PERFORM nextval('calls'); "
        "PERFORM pg_sleep(1.5); END IF; "
        "RETURN QUERY SELECT address FROM boxes WHERE address = k; END $f$")
    srv = make_postern(extra=[
        'table boxes pgsql:"%s" query "SELECT lk($1)" pool 1 timeout 500ms '
        'cache off negative-cache off' % pg.conninfo()],
        rules=["match to <boxes> action local"])
    # The pool's connection made, so the slow lookups only wait.
    assert rcpt_one(srv, "fast@example.org").code == 250
    # Four sessions brought to their RCPT first, so the four lookups are
    # asked together however slow the machine is at making sessions.
    with contextlib.ExitStack() as stack:
        cs = [stack.enter_context(srv.session()) for _ in range(4)]
        for c in cs:
            c.hello()
            c.send("MAIL FROM:<a@far.example>"); c.expect(250)
        for i, c in enumerate(cs):
            c.send("RCPT TO:<slow%d@example.org>" % i)
        replies = [c.read_reply(timeout=10) for c in cs]
    assert [(r.code, r.esc) for r in replies] == [(451, "4.3.0")] * 4, replies
    wait_for(lambda: rcpt_one(srv, "fast@example.org").code == 250,
        timeout=15, interval=0.2, what="the pool free again")
    calls = pg.sql("SELECT CASE WHEN is_called THEN last_value ELSE 0 END "
        "FROM calls")
    assert int(calls) == 1, "the slow query ran %s times" % calls.strip()


def table_errors(port):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    m = re.search(r"^postern_table_errors_total (\S+)$", body, re.M)
    return float(m.group(1))


def test_pgsql_down_every_failed_lookup_is_counted(make_postern, pg):
    """PostgreSQL stopped: five RCPTs get 451, the first after a failed
    connect, the rest at once (the backend is known down); the counter
    of failed lookups goes up by five, one for each."""
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY)")
    mport = free_port()
    srv = make_postern(extra=["metrics listen 127.0.0.1:%d" % mport,
        'table boxes pgsql:"%s" query "SELECT address FROM boxes WHERE '
        'address = $1" cache off negative-cache off' % pg.conninfo()],
        rules=["match to <boxes> action local"])
    wait_for(lambda: "metrics on http://127.0.0.1:%d/metrics" % mport in
        srv.log(), what="the metrics endpoint")
    pg.ctl("stop")
    before = table_errors(mport)
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@far.example>"); c.expect(250)
        for i in range(5):
            c.send("RCPT TO:<bob%d@example.org>" % i); c.expect(451, "4.3.0")
    assert table_errors(mport) - before == 5


def test_pgsql_sql_error_is_said_to_be_a_failure(make_postern, pg):
    """A query naming a relation that does not exist: 451, and the log
    says the lookup failed, the server's error in the table's line."""
    srv = make_postern(extra=[
        'table boxes pgsql:"%s" query "SELECT address FROM nosuch WHERE '
        'address = $1" cache off negative-cache off' % pg.conninfo()],
        rules=["match to <boxes> action local"])
    r = rcpt_one(srv, "bob@example.org")
    assert (r.code, r.esc) == (451, "4.3.0"), r
    log = wait_for(lambda: "route-error" in srv.log() and srv.log(),
        what="the route-error line")
    assert 'why="a table lookup failed (no answer in time, or an error) ' \
        'for <bob@example.org>"' in log, log[-3000:]
    assert re.search(r'table=boxes backend=pgsql unavailable .*why="pgsql '
        r'boxes: ERROR:  relation \\x22nosuch\\x22 does not exist', log), \
        log[-3000:]


def test_check_bad_conninfo_is_one_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(make_config(['table boxes pgsql:"bogus=1" query '
        '"SELECT $1"']).replace("{tmp}", str(tmp_path)).replace("{port}",
        str(free_port())))
    r = run_cli("check", "-c", str(conf), cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r"^%s:\d+: table boxes: bad conninfo: invalid "
        r"connection option \"bogus\"\n(?!\n)" % re.escape(str(conf)), out,
        re.M), repr(out)
    assert "\n\n" not in out, repr(out)


def redis_cmd(port, *args):
    """One command to Redis; its reply as raw bytes (one read)."""
    req = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" %
        (len(a), a) for a in (x.encode() for x in args))
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(req)
        return s.recv(65536)


def redis_pooled(redis_proc):
    """Clients connected to Redis, less the one asking."""
    info = redis_cmd(redis_proc.port, "INFO", "clients").decode()
    return int(info.split("connected_clients:")[1].split()[0]) - 1


def test_redis_restart_costs_no_rcpt_but_an_outage_is_451(make_postern,
        redis_proc):
    """The same for a redis: table: Redis restarted under the pooled
    connections, each RCPT lookup answers; Redis gone, 451."""
    srv = make_postern(config=make_config([
        "table users redis:%s pool %d timeout 3s cache off "
        "negative-cache off" % (redis_proc.spec, POOL),
        "on rcpt { verify <users> }"]))
    redis_cmd(redis_proc.port, "SET", "bob@example.org", "1")
    lookup = lambda: rcpt_one(srv, "bob@example.org")
    fill_pool(lookup, lambda: redis_pooled(redis_proc))
    redis_proc.kill()
    redis_proc.restart()
    redis_cmd(redis_proc.port, "SET", "bob@example.org", "1")
    all_answer(lookup, 250)
    assert "backend=redis unavailable" not in srv.log(), srv.log()[-3000:]
    redis_proc.kill()
    r = lookup()
    assert (r.code, r.esc) == (451, "4.3.0"), r
    assert srv.log().count("backend=redis unavailable") == 1


def proc_state(pid):
    """The state letter of a process ("R", "S", "Z"...), None when gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def helper_children(srv):
    """Pids of the processes under the server's keeper and helper."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="],
        capture_output=True, text=True).stdout.split("\n")
    kids = {}
    for line in out:
        if line.strip():
            pid, ppid = map(int, line.split())
            kids.setdefault(ppid, []).append(pid)
    keeper = kids.get(srv.proc.pid, [])
    helpers = [h for k in keeper for h in kids.get(k, [])]
    return keeper, helpers, [c for h in helpers for c in kids.get(h, [])]


# CAP_SETGID 6, CAP_SETUID 7, CAP_KILL 5, CAP_DAC_READ_SEARCH 2,
# CAP_AUDIT_WRITE 29 (linux/capability.h).
HELPER_CAPS = (1 << 6) | (1 << 7) | (1 << 5) | (1 << 2) | (1 << 29)


def test_pam_auth(make_postern, sysuser, pam_service):
    sysuser("pstnpam", "Right pw 1")
    srv = make_postern(config=make_config(["auth pam %s" % pam_service,
        "auth-guard 50/1h tarpit 0"]).replace("listen 127.0.0.1:{port}",
        "listen 127.0.0.1:{port} auth-plaintext"))
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("pstnpam", "wrong")); c.expect(535)
        c.send("AUTH PLAIN " + plain("nosuchuser", "x")); c.expect(535)
        c.send("AUTH PLAIN " + plain("pstnpam", "Right pw 1"))
        c.expect(235, "2.7.0")
    # The check's process killed mid-request (pam_unix waits before it
    # says no): 454, and the next one works.
    keeper, helpers, _ = helper_children(srv)
    assert len(keeper) == 1 and len(helpers) == 1, (keeper, helpers)
    # Root keeps only what PAM and owners need, and can never gain more.
    for pid in keeper + helpers:
        st = dict(l.split(":\t", 1) for l in
            open("/proc/%d/status" % pid).read().splitlines() if ":\t" in l)
        assert int(st["CapEff"], 16) == HELPER_CAPS, (pid, st["CapEff"])
        assert int(st["CapBnd"], 16) == HELPER_CAPS, (pid, st["CapBnd"])
        assert st["NoNewPrivs"].strip() == "1", pid
    def checking():
        # This request's check: running, not the last one's child the
        # helper has yet to reap (which may go at any moment).
        return [k for k in helper_children(srv)[2]
            if proc_state(k) not in (None, "Z")]
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("pstnpam", "wrong again"))
        kids = wait_for(checking, what="a check")
        os.kill(kids[0], 9)
        c.expect(454, "4.7.0")
        # The helper itself killed: 454 meanwhile, then a new one.
        os.kill(helpers[0], 9)
        wait_for(lambda: helper_children(srv)[1] not in ([], helpers),
            what="a new helper")
    with srv.session() as c:
        c.hello()
        c.send("AUTH PLAIN " + plain("pstnpam", "Right pw 1"))
        c.expect(235)
    assert "privileged helper restarted" in srv.log()
