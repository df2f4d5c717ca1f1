"""`postern check`, `postern version` and --help."""

import os
import re
import resource
import socket
import sqlite3
import subprocess

import pytest

from conftest import (binary, free_port, make_config, run_cli, send_message,
    wait_for)

GOOD = make_config(extra=["limit message-size 10M", "limit idle-timeout 30s",
    "table friends { a@example.net, b@example.net }"])

# (label, config text, lines that must be reported)
BROKEN = [
    ("unknown statement", "hostname h\nfrobnicate on\n", [2]),
    ("bad port", "hostname h\nlisten 127.0.0.1:notaport\n", [2]),
    ("port out of range", "listen 127.0.0.1:70000\n", [1]),
    ("bad size", "limit message-size lots\n", [1]),
    ("bad count", "limit recipients -3\n", [1]),
    ("bad duration", "\n\nlimit idle-timeout soon\n", [3]),
    ("unknown limit", "limit frobs 3\n", [1]),
    ("unterminated quote", 'action local maildir "/tmp/x\n', [1]),
    ("unknown action kind", "action local teleport\n", [1]),
    ("match names no action", 'action local discard\nmatch any action nosuch\n', [2]),
    ("match without action", "action local discard\nmatch to domain x.test\n", [2]),
    ("unknown table", "action local discard\nmatch to <nosuch> action local\n", [2]),
    ("unknown condition", "action local discard\nmatch sideways action local\n", [2]),
    # Punctuation where a word must be, options given twice, names that
    # are not host or domain names: one line each, never a crash.  Line 3
    # of a whole file (the others are fine).
] + [(label, "listen 127.0.0.1:2525\naction a discard\n%s\nmatch any action a\n"
        % line, [3]) for label, line in (
    ("metrics listen }", "metrics listen }"),
    ("metrics listen ADDR ,", "metrics listen 127.0.0.1:9925 ,"),
    ("table with ',' for a kind", "table t , file:t.txt"),
    ("table with '}' for a kind", "table t } { a@example.org }"),
    ("hostname .", "hostname ."),
    ("hostname with a 64-octet label", "hostname %s.org" % ("a" * 64)),
    ("wildcard domain", "match to domain *.example.org action a"),
    ("domain with a blank", 'match to domain "exa mple.org" action a'),
    ("domain with '..'", "match to domain example..org action a"),
    ("address with '@@'", 'match to "a@@b.org" action a'),
    ("nomail twice", "listen 127.0.0.1:2526 nomail nomail"),
    ("commands and replies", "transaction-log tl commands replies"),
    ("pool twice", "table t passwd pool 2 pool 3"),
    ("pipe timeout without a value", 'action p pipe "/bin/cat" timeout'),
    # A state store or resolver that could never open: run would answer
    # every connection 421, so check refuses it as table redis:... is.
    ("state redis without a port", "state redis 127.0.0.1"),
    ("state redis port out of range", "state redis 127.0.0.1:99999"),
    ("state resolver by name", "state resolver ns.example.org"),
    ("state resolver port out of range", "state resolver 127.0.0.1:99999"),
    ("mx resolver port 99999", "action m mx resolver 127.0.0.1:99999"),
    ("mx resolver 10.0.1", "action m mx resolver 10.0.1"),
)]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def error_lines(out, path):
    """Line numbers of the "PATH:LINE: message" lines in out."""
    nums = []
    for line in out.splitlines():
        m = re.match(r"^%s:(\d+): \S" % re.escape(path), line)
        if m:
            nums.append(int(m.group(1)))
    return nums


def test_check_good_config_is_silent(tmp_path):
    path = write(tmp_path, "good.conf", GOOD.replace("{tmp}", str(tmp_path))
        .replace("{port}", "2525"))
    r = run_cli("check", "-c", path, cwd=str(tmp_path))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r


@pytest.mark.parametrize("label,text,want", BROKEN, ids=[b[0] for b in BROKEN])
def test_check_reports_the_error_line(tmp_path, label, text, want):
    path = write(tmp_path, "bad.conf", text)
    r = run_cli("check", "-c", path, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, "case %r: exit %d, want 1; output:\n%s" % (
        label, r.returncode, out)
    got = error_lines(out, path)
    assert set(want) <= set(got), "case %r: error lines %s, want %s; output:\n%s" % (
        label, got, want, out)


def test_check_reports_every_error_in_one_run(tmp_path):
    text = ("hostname test.example\n"			# 1
            "listen 127.0.0.1:notaport\n"		# 2
            "limit recipients many\n"			# 3
            'action local maildir "/tmp/x"\n'		# 4
            "match to domain example.org action nosuch\n"	# 5
            "frobnicate\n"				# 6
            "limit idle-timeout 5m\n"			# 7 (fine)
            "listen 127.0.0.1:2525\n"			# 8 (fine)
            "match to domain example.org action local\n")	# 9 (fine)
    path = write(tmp_path, "many.conf", text)
    r = run_cli("check", "-c", path, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    got = error_lines(out, path)
    assert set(got) >= {2, 3, 5, 6}, "error lines %s; output:\n%s" % (got, out)
    assert not set(got) & {1, 4, 7, 8, 9}, "good lines reported: %s\n%s" % (got, out)
    for line in out.splitlines():
        if line.strip():
            assert line.startswith(path + ":"), "not FILE:LINE: %r" % line


def test_check_refuses_a_lua_finalizer(tmp_path):
    """A finalizer would run outside any call's budget (when the state is
    closed): setmetatable refuses __gc, so `postern check` answers about a
    script that sets one that never returns, naming its line."""
    write(tmp_path, "gc.lua", "function mail(f, s) end\n"
        "local keep = setmetatable({}, {__gc = function() while true do "
        "end end})\n")
    path = write(tmp_path, "gc.conf", make_config(extra=["state memory",
        'on mail { lua "gc.lua" }']).replace("{tmp}", str(tmp_path))
        .replace("{port}", "2525"))
    r = run_cli("check", "-c", path, cwd=str(tmp_path), timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "gc.lua:2: bad argument #2 to " \
        "'setmetatable' (__gc is not allowed)" in out, (r.returncode, out)


def test_check_missing_file_fails(tmp_path):
    path = str(tmp_path / "nosuch.conf")
    r = run_cli("check", "-c", path, cwd=str(tmp_path))
    assert r.returncode != 0, r
    assert "nosuch.conf" in r.stdout + r.stderr, r


def test_version():
    r = run_cli("version")
    assert (r.returncode, r.stdout) == (0, "postern 0.1.0\n"), r


@pytest.mark.parametrize("cmd", ["run", "check", "version"])
def test_help_exits_0_with_usage(cmd):
    r = run_cli(cmd, "--help")
    assert r.returncode == 0, r
    assert "usage" in r.stdout.lower(), r


def test_unknown_command_fails():
    r = run_cli("frobnicate")
    assert r.returncode != 0, r


def test_check_loads_what_the_actions_name(tmp_path):
    """Templates, Lua scripts and programs are tried by postern check."""
    (tmp_path / "notjson.json").write_text('{"a": %{text}\n')
    (tmp_path / "typo.txt").write_text("Hello %{form}\n")
    (tmp_path / "broken.lua").write_text("function reply(msg\n")
    (tmp_path / "other.lua").write_text("function other() end\n")
    text = make_config(actions=(
        'action local maildir "{tmp}/mail/%%{rcpt.user}/Maildir"\n'
        'action a webhook "http://127.0.0.1:9/x" format template '
        '"%s/notjson.json"\n'
        'action b webhook "http://127.0.0.1:9/x" format template '
        '"%s/missing.json"\n'
        'action c reply text "%s/typo.txt"\n'
        'action d reply lua "%s/broken.lua"\n'
        'action e reply lua "%s/other.lua"\n'
        'action f pipe "/nonexistent/lda"\n'
        'action g pipe "/bin/cat" "%%{recipient}"\n'
        'action h reply command "/nonexistent/agent"\n') % ((tmp_path,) * 5))
    conf = write(tmp_path, "p.conf", text.replace("{tmp}", str(tmp_path))
        .replace("{port}", "2525"))
    r = run_cli("check", "-c", conf)
    assert r.returncode == 1
    out = r.stdout
    for name, why in (("a", "not JSON"), ("b", "missing.json: No such file"),
            ("c", 'unknown field "form"'), ("d", "broken.lua"),
            ("e", 'no function "reply"'), ("f", "/nonexistent/lda: No such"),
            ("g", "unknown variable"), ("h", "/nonexistent/agent: No such")):
        line = [l for l in out.splitlines() if ": action %s: " % name in l]
        assert line and why in line[0], "action %s: %r in\n%s" % (name,
            why, out)


def test_default_config_is_postern_config_else_the_installed_one(tmp_path):
    """Without -c, check (and run) read $POSTERN_CONFIG, else the file under
    the installation's configuration folder that --help names."""
    bad = tmp_path / "env.conf"
    bad.write_text("hostname a.example\nfrobnicate\n")
    env = dict(os.environ, POSTERN_CONFIG=str(bad))
    r = subprocess.run([binary(), "check"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=10, env=env)
    assert r.returncode == 1 and "%s:2: unknown keyword" % bad in r.stdout, r
    r = run_cli("check", "--help")
    m = re.search(r"else (/\S+/postern/postern\.conf)\)", r.stdout)
    assert m, r.stdout
    env.pop("POSTERN_CONFIG")
    r = subprocess.run([binary(), "check"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=10, env=env)
    if not os.path.exists(m.group(1)):
        assert r.returncode == 1 and m.group(1) in r.stdout + r.stderr, r


def test_check_reads_a_bounded_file_up_to_its_first_nul(tmp_path):
    """/dev/zero is refused at once, at its first line, not read for ever
    (a short deadline: reading it all would take memory by the gigabyte)."""
    r = subprocess.run([binary(), "check", "-c", "/dev/zero"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=2)
    assert (r.returncode, r.stdout) == (1,
        "/dev/zero:1: NUL byte in the file\n"), r


def test_a_config_error_at_reload_keeps_the_server_running(make_postern):
    """A file the parser refuses (here punctuation where "metrics listen"
    wants a word) fails the reload with FILE:LINE in the log; the server
    goes on with the configuration it has and still takes mail."""
    srv = make_postern()
    srv.write_config(make_config(["metrics listen }"]))
    srv.sighup()
    wait_for(lambda: "reload failed" in srv.log() or not srv.alive(), 10,
        what="the reload to fail")
    assert srv.alive(), srv.log()[-3000:]
    lines = [l for l in srv.log().splitlines() if "reload: " in l]
    assert any("%s:5: metrics: unexpected '}'" % srv.conf in l
        for l in lines), srv.log()[-3000:]
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"],
            "Subject: after\r\n\r\nstill here\r\n")
    wait_for(lambda: len(srv.maildir("bob")) == 1, what="the delivery")


def test_a_leading_dot_matches_every_domain_below(make_postern):
    """"to domain .example.com" holds for sub.example.com and
    a.b.example.com, not for example.com itself (nor xexample.com), which
    gets 550 5.7.1 like any domain not ours."""
    srv = make_postern(config=make_config(rules=(
        "match to domain .example.com action local",)))
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@sub.example.com>"); c.expect(250)
        c.send("RCPT TO:<bob@a.b.Example.COM>"); c.expect(250)
        c.send("RCPT TO:<bob@example.com>"); c.expect(550, "5.7.1")
        c.send("RCPT TO:<bob@xexample.com>"); c.expect(550, "5.7.1")


# ----- what run would refuse, found by check ---------------------------------

def selfsigned_pair(d, stem):
    """A self-signed ECDSA certificate and key: d/stem.pem, d/stem.key."""
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        stem + ".key", "-out", stem + ".pem", "-days", "3", "-subj",
        "/CN=test.example"], cwd=str(d), timeout=30,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr


def nofile(n):
    """preexec_fn: soft and hard RLIMIT_NOFILE n."""
    def pre():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return pre


# (label, statements, the one at fault, what its error says); {tmp} is the
# test's folder, {port} the listener's port.
REFUSED = [
    ("unknown user", ["user no-such-user-pstn"], 0,
        "user no-such-user-pstn: no such user"),
    ("unknown group", ["user nobody", "group no-such-group-pstn"], 1,
        "group no-such-group-pstn: no such group"),
    ("missing table file", ["table t file:/nonexistent/table.txt"], 0,
        "table t: /nonexistent/table.txt: No such file or directory"),
    ("missing certificate", ['tls cert "{tmp}/none.pem" key "{tmp}/none.key"'],
        0, "cert {tmp}/none.pem: No such file or directory"),
    ("key of another certificate", ['tls cert "{tmp}/a.pem" key "{tmp}/b.key"'],
        0, "key does not match certificate {tmp}/a.pem"),
    ("unknown cipher", ["tls self-signed {tmp}/tls", 'tls ciphers "NOSUCHCIPHER"'],
        1, 'ciphers "NOSUCHCIPHER"'),
    ("missing CA file",
        ['action y relay "smtp://127.0.0.1:9" ca /nonexistent/ca.pem'], 0,
        "action y: ca_file /nonexistent/ca.pem: No such file or directory"),
    ("log folder missing", ["log file {tmp}/no/such/dir/postern.log"], 0,
        "log file {tmp}/no/such/dir/postern.log: folder {tmp}/no/such/dir: "
        "No such file or directory"),
    ("metrics on a listener's port", ["metrics listen 127.0.0.1:{port}"], 0,
        "metrics listen 127.0.0.1 port {port}: the listener of line 4 has "
        "that address and port"),
    ("more connections than descriptors", ["limit connections 5000"], 0,
        "limit connections 5000 needs "),
]


@pytest.mark.parametrize("label,stmts,bad,why", REFUSED,
    ids=[c[0] for c in REFUSED])
def test_check_refuses_what_run_refuses(tmp_path, label, stmts, bad, why):
    """What postern run would refuse at its start, postern check refuses
    first (docs/deploy.md runs it before each start), each error as
    FILE:LINE: message on the statement at fault; and run's own refusal
    names that FILE:LINE too."""
    selfsigned_pair(tmp_path, "a")
    selfsigned_pair(tmp_path, "b")
    port = free_port()
    fill = lambda t: t.replace("{tmp}", str(tmp_path)).replace("{port}",
        str(port))
    text = fill(make_config(stmts))
    conf = write(tmp_path, "p.conf", text)
    line = text.splitlines().index(fill(stmts[bad])) + 1
    want = "%s:%d: %s" % (conf, line, fill(why))
    before = sorted(os.listdir(str(tmp_path)))
    r = subprocess.run([binary(), "check", "-c", conf], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=20, preexec_fn=nofile(4096))
    assert r.returncode == 1, "case %r: check exit %d, want 1; output:\n%s" % (
        label, r.returncode, r.stdout + r.stderr)
    assert r.stdout.startswith(want) and r.stdout.count("\n") == 1, \
        "case %r: want one line starting %r, got:\n%s" % (label, want,
        r.stdout + r.stderr)
    assert sorted(os.listdir(str(tmp_path))) == before, \
        "case %r: check made files" % label
    r = subprocess.run([binary(), "run", "-c", conf], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=20, preexec_fn=nofile(4096))
    assert r.returncode == 1, "case %r: run exit %d; stderr:\n%s" % (label,
        r.returncode, r.stderr)
    assert "postern: fatal: " + want in r.stderr, \
        "case %r: run's error does not start %r:\n%s" % (label, want,
        r.stderr)


def test_check_refuses_a_spool_too_deep_for_its_control_socket(tmp_path):
    """A spool whose control socket path does not fit a unix socket's
    address (107 bytes) would leave postern queue and postern send unable
    to reach the server: check and run refuse it on the spool's line."""
    spool = str(tmp_path / ("s" * 60) / ("t" * 60))
    text = make_config().replace("spool {tmp}/spool", "spool " + spool
        ).replace("{tmp}", str(tmp_path)).replace("{port}", str(free_port()))
    assert text.splitlines()[1] == "spool " + spool
    conf = write(tmp_path, "p.conf", text)
    want = ("%s:2: spool: %s/control.sock: path too long for a unix socket "
        "(%d bytes, at most 107)\n" % (conf, spool, len(spool) + 13))
    r = run_cli("check", "-c", conf)
    assert (r.returncode, r.stdout) == (1, want), r
    r = run_cli("run", "-c", conf, timeout=20)
    assert r.returncode == 1 and "postern: fatal: " + want in r.stderr, r
    assert not os.path.exists(spool)


def test_check_reports_each_statement_at_fault(tmp_path):
    """Several statements that would stop run: each one's line, in one run."""
    text = make_config([
        "user no-such-user-pstn",			# 5
        "table t file:/nonexistent/table.txt",		# 6
        'tls cert "{tmp}/none.pem" key "{tmp}/none.key"',	# 7
        'action y relay "smtp://127.0.0.1:9" ca /nonexistent/ca.pem',	# 8
    ]).replace("{tmp}", str(tmp_path)).replace("{port}", str(free_port()))
    conf = write(tmp_path, "p.conf", text)
    r = run_cli("check", "-c", conf)
    assert r.returncode == 1, r
    assert sorted(error_lines(r.stdout, conf)) == [5, 6, 7, 8], r.stdout


def test_check_makes_nothing_and_asks_no_database(tmp_path):
    """A good configuration with a self-signed certificate still to make, a
    log file, a SQLite table and the state store, PostgreSQL and Redis
    tables: check passes, makes no file or folder (no spool, certificate,
    log file, SQLite database) and connects to neither server (run
    connects on the first lookup).  Without the SQLite file, check says
    so and does not make one (read-only, as run opens it)."""
    db = str(tmp_path / "t.db")
    with sqlite3.connect(db) as c:
        c.execute("create table t (k text, v text)")
    os.chmod(db, 0o444)
    servers = [socket.socket() for _ in range(2)]
    for s in servers:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
    pg, redis = (s.getsockname()[1] for s in servers)
    text = make_config([
        "tls self-signed {tmp}/tls",
        "log file {tmp}/postern.log",
        "state sqlite {tmp}/state.db",
        'table s sqlite:%s query "select v from t where k = $1"' % db,
        'table p pgsql:"host=127.0.0.1 port=%d dbname=x" query '
        '"select 1 where $1 = $1"' % pg,
        "table r redis:127.0.0.1:%d" % redis,
        "metrics listen 127.0.0.1:%d" % free_port(),
    ]).replace("{tmp}", str(tmp_path)).replace("{port}", str(free_port()))
    conf = write(tmp_path, "p.conf", text)
    before = sorted(os.listdir(str(tmp_path)))
    try:
        r = run_cli("check", "-c", conf)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
        assert sorted(os.listdir(str(tmp_path))) == before
        for s, what in zip(servers, ("PostgreSQL", "Redis")):
            try:
                s.accept()[0].close()
            except BlockingIOError:	# nobody came: check has exited
                continue
            raise AssertionError("check connected to " + what)
        os.unlink(db)
        r = run_cli("check", "-c", conf)
        assert r.returncode == 1 and error_lines(r.stdout, conf) == [8], r
        assert "unable to open database file" in r.stdout, r.stdout
        assert not os.path.exists(db)
    finally:
        for s in servers:
            s.close()


def test_an_ipv4_mapped_listen_address_is_refused(tmp_path):
    """postern's IPv6 sockets are IPv6-only, so none can bind an
    IPv4-mapped address ([::ffff:127.0.0.1]): check and run both refuse
    the statement as FILE:LINE: message, saying what to write instead,
    and run binds nothing."""
    port = free_port()
    text = make_config().replace("listen 127.0.0.1:{port}",
        "listen [::ffff:127.0.0.1]:{port}").replace("{tmp}", str(tmp_path)) \
        .replace("{port}", str(port))
    conf = write(tmp_path, "p.conf", text)
    want = ('%s:4: listen: "[::ffff:127.0.0.1]:%d" is an IPv4-mapped IPv6 '
        "address, which postern's IPv6-only sockets cannot bind: write the "
        "IPv4 address (127.0.0.1:%d)" % (conf, port, port))
    r = run_cli("check", "-c", conf)
    assert (r.returncode, r.stdout) == (1, want + "\n"), r
    r = run_cli("run", "-c", conf)
    assert r.returncode == 1 and want + "\n" in r.stderr, r
    assert "Invalid argument" not in r.stderr, r.stderr
