"""postern under a service manager: sd_notify readiness (READY, RELOADING,
STOPPING) on a NOTIFY_SOCKET the test binds, listening sockets passed the
way a systemd socket unit passes them (LISTEN_FDS), and the shipped units
as `systemd-analyze verify` sees them."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import HOST, Client, binary, free_port, make_config, \
    needs, port_listening, run_cli, send_message, server_socket_for, \
    wait_for
from test_ipv6 import has_ipv6_loopback


class Notify:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.msgs = []

    def read(self, timeout=10.0):
        """Messages that arrived within timeout of the first (all new)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        msg = dict(l.split("=", 1) for l in data.decode().splitlines())
        self.msgs.append(msg)
        return msg

    def expect(self, key, timeout=10.0):
        """Read until a message with key=1 arrives; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.read(max(left, 0.01)) if left > 0 else None
            if msg is None:
                raise AssertionError("no %s=1 within %.0fs; got %r"
                    % (key, timeout, self.msgs))
            if msg.get(key) == "1":
                return msg

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = Notify(tmp_path / "notify.sock")
    yield n
    n.close()


def test_ready_reloading_stopping(make_postern, notify):
    srv = make_postern(start=False)
    srv.env = {"NOTIFY_SOCKET": notify.path}
    srv.start()
    msg = notify.expect("READY")
    assert port_listening(srv.port), "READY=1 before the port listens"
    assert "accepting mail on 1 address" in msg.get("STATUS", ""), msg
    with srv.session() as c:
        c.hello()
    srv.sighup()
    msg = notify.expect("RELOADING")
    assert int(msg["MONOTONIC_USEC"]) > 0, msg
    msg = notify.expect("READY")
    assert "reloaded" in msg["STATUS"], msg
    # A configuration with errors: still READY again, on the old one.
    srv.write_config("hostname x.example\nfrobnicate\n")
    srv.sighup()
    notify.expect("RELOADING")
    msg = notify.expect("READY")
    assert "reload failed" in msg["STATUS"], msg
    srv.sigterm()
    msg = notify.expect("STOPPING")
    assert "stopping" in msg["STATUS"], msg
    assert srv.wait_exit() == 0


def passed_socket(port):
    """A listening socket on 127.0.0.1:port, as a socket unit makes one
    (no SO_REUSEPORT: postern cannot bind the address beside it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, port))
    s.listen(16)
    return s


LAUNCH = """
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
tmp = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(tmp):
    os.dup2(fd, 3 + i)
    os.set_inheritable(3 + i, True)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())	# exec keeps the pid
os.execv(sys.argv[2], sys.argv[2:])
"""


def pass_sockets(srv, socks):
    """Start srv with socks as descriptors 3, 4, ... and LISTEN_FDS,
    LISTEN_PID set the way systemd sets them."""
    srv.argv_prefix = ["/usr/bin/python3", "-c", LAUNCH,
        ",".join(str(s.fileno()) for s in socks)]
    srv.pass_fds = tuple(s.fileno() for s in socks)


def test_socket_activation_takes_the_passed_socket(make_postern, notify):
    srv = make_postern(start=False, extra=["workers 2"])
    mine = passed_socket(srv.port)
    other = passed_socket(0)	# no listen statement names this one
    other_port = other.getsockname()[1]
    pass_sockets(srv, [mine, other])
    srv.env = {"NOTIFY_SOCKET": notify.path}
    # Made before postern runs: it waits in the passed socket's backlog.
    early = Client(srv.port)
    srv.clients.append(early)
    srv.start()
    notify.expect("READY")
    mine.close()	# from here on only postern holds the socket
    other.close()
    clients = [early]
    for _ in range(4):	# both loops' descriptors accept
        c = Client(srv.port)
        srv.clients.append(c)
        clients.append(c)
    for c in clients:
        c.hello()
        # Replies without the small-packet delay, the early one's too.
        mine_end = server_socket_for(srv.proc.pid, c.sock)
        assert mine_end is not None, "no server socket"
        with mine_end:
            assert mine_end.getsockopt(socket.IPPROTO_TCP,
                socket.TCP_NODELAY) != 0, "server side without NODELAY"
        c.send("QUIT"); c.expect(221)
    log = srv.log()
    assert "listening on 127.0.0.1:%d (socket passed by the service " \
        "manager)" % srv.port in log, log
    assert re.search(r"warn passed socket 127\.0\.0\.1 port %d: no listen "
        r"statement names it: closed" % other_port, log), log
    wait_for(lambda: not port_listening(other_port),
        what="the unnamed passed socket closed")
    srv.stop()


def test_socket_activation_only_where_passed(make_postern, notify):
    """A listen address with no passed socket is bound as usual."""
    srv = make_postern(start=False)
    second = socket.socket()
    second.bind((HOST, 0))
    port2 = second.getsockname()[1]
    second.close()
    srv.write_config(open(srv.conf).read().replace(
        "listen 127.0.0.1:%d\n" % srv.port,
        "listen 127.0.0.1:%d\nlisten 127.0.0.1:%d\n" % (srv.port, port2)))
    mine = passed_socket(srv.port)
    pass_sockets(srv, [mine])
    srv.env = {"NOTIFY_SOCKET": notify.path}
    srv.start()
    notify.expect("READY")
    mine.close()
    for port in (srv.port, port2):
        c = Client(port)
        srv.clients.append(c)
        c.hello()
        c.send("QUIT"); c.expect(221)
    assert "listening on 127.0.0.1:%d\n" % port2 in srv.log()


def dual_stack_socket(port):
    """A listening socket on [::]:port that takes IPv4 too (IPV6_V6ONLY
    off), as systemd makes one for ListenStream=[::]:PORT unless the unit
    says BindIPv6Only=ipv6-only."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(16)
    return s


@needs(has_ipv6_loopback(), "an IPv6 loopback address (::1)")
def test_a_dual_stack_passed_socket_shows_ipv4_clients_as_ipv4(
        make_postern, notify):
    """An IPv4 client of a passed dual-stack socket is 127.0.0.1 to
    everything, never ::ffff:127.0.0.1: the log, the facts (client.ip and
    local.ip in the greeting), a "from ip 127.0.0.0/8" rule, the trusted
    networks that spare it the connections-per-ip limit, and Received:.
    An IPv6 client on the same socket stays ::1."""
    port = free_port()	# the harness waits for srv.port, bound by postern
    srv = make_postern(start=False, config=make_config([
        "workers 1", "limit connections-per-ip 1", "listen [::]:%d" % port,
        'greeting "%{client.ip} %{local.ip}:%{local.port}"'],
        actions='action loopback maildir "{tmp}/mail/loopback/Maildir"\n'
        'action other maildir "{tmp}/mail/other/Maildir"\n',
        rules=["match from ip 127.0.0.0/8 to domain example.org "
        "action loopback", "match to domain example.org action other"]))
    mine = dual_stack_socket(port)
    pass_sockets(srv, [mine])
    srv.env = {"NOTIFY_SOCKET": notify.path}
    srv.start()
    notify.expect("READY")
    mine.close()
    c = Client(port)
    srv.clients.append(c)
    greeting = c.expect(220)
    assert greeting.text == "test.example 127.0.0.1 127.0.0.1:%d" % port, \
        greeting
    c.send("EHLO client.example"); c.expect(250)
    send_message(c, "a@example.net", ["bob@example.org"],
        "Subject: over IPv4\r\n\r\nx\r\n")
    second = Client(port)	# trusted: not held back by the first
    srv.clients.append(second)
    second.expect(220)
    six = socket.create_connection(("::1", port), timeout=10)
    try:
        assert six.recv(512).startswith(b"220 test.example ::1 ::1:"), \
            "the IPv6 client's greeting"
    finally:
        six.close()
    wait_for(lambda: srv.maildir("loopback"), what="the delivery")
    assert srv.maildir("other") == []
    with open(srv.maildir("loopback")[0], "rb") as f:
        head = f.read(2000).decode("latin-1")
    assert "(unknown [127.0.0.1])" in head, head
    assert "::ffff:" not in srv.log(), srv.log()[-3000:]
    assert re.search(r" connect sid=\S+ ip=127\.0\.0\.1 ", srv.log()), \
        srv.log()[-3000:]


def unit_path(name):
    p = os.path.join(os.path.dirname(binary()), "dist", name)
    assert os.path.exists(p), "%s was not generated by the build" % p
    return p


def test_units_pass_systemd_analyze_verify(tmp_path):
    """The units as the build writes them, with the binary they name in
    place (in a private mount namespace) and the manuals they cite on the
    MANPATH: systemd-analyze verify has nothing to say."""
    sa = shutil.which("systemd-analyze")
    if sa is None:
        pytest.fail("systemd-analyze not found: scripts/bootstrap installs "
            "the systemd package")
    service = unit_path("postern.service")
    with open(service) as f:
        text = f.read()
    exe = re.search(r"^ExecStart=(\S+) run ", text, re.M).group(1)
    assert "Type=notify" in text, "built without libsystemd?"
    units = tmp_path / "units"
    units.mkdir()
    for name in ("postern.service", "postern.socket"):
        shutil.copy(unit_path(name), units / name)
    man = tmp_path / "man"
    for sec in ("5", "8"):
        (man / ("man" + sec)).mkdir(parents=True)
    built = os.path.join(os.path.dirname(binary()), "man")
    for page in os.listdir(built):
        shutil.copy(os.path.join(built, page),
            man / ("man" + page.rsplit(".", 1)[1]) / page)
    script = ('set -e; d=$(dirname "$1"); mount -t tmpfs tmpfs "$d"; '
        'ln -s "$2" "$1"; shift 2; exec "$@"')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private",
        "sh", "-c", script, "sh", exe, binary(), sa, "verify",
        str(units / "postern.service"), str(units / "postern.socket")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=60, env=dict(os.environ, MANPATH=str(man)))
    assert (r.returncode, r.stdout) == (0, ""), r.stdout
    # And it does find fault: a unit naming a missing binary.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "postern.service").write_text(text.replace(exe,
        "/nonexistent/postern"))
    r = subprocess.run([sa, "verify", str(bad / "postern.service")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=60, env=dict(os.environ, MANPATH=str(man)))
    assert r.returncode != 0 and "/nonexistent/postern" in r.stdout, r.stdout


def test_service_unit_is_hardened():
    with open(unit_path("postern.service")) as f:
        unit = dict(l.split("=", 1) for l in f.read().splitlines()
            if "=" in l and not l.startswith("#"))
    assert unit["Type"] == "notify"
    assert unit["ProtectSystem"] == "strict"
    assert unit["PrivateTmp"] == "yes" and unit["NoNewPrivileges"] == "yes"
    # Binding port 25, the drop, and what the privileged helper keeps.
    assert set(unit["CapabilityBoundingSet"].split()) == {
        "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL",
        "CAP_DAC_READ_SEARCH", "CAP_AUDIT_WRITE"}
    paths = unit["ReadWritePaths"].split()
    assert any(p.endswith("/spool/postern") for p in paths), paths
    assert any(p.lstrip("-").endswith("/mail") for p in paths), paths


def read_pid(path):
    with open(path) as f:
        return f.read()


def test_pid_file_refuses_a_second_instance(make_postern):
    first = make_postern(start=False)
    pid_path = first.path("run", "postern.pid")
    os.mkdir(first.path("run"))
    first.run_args = ["--pid-file", pid_path]
    first.start()
    assert read_pid(pid_path) == "%d\n" % first.proc.pid
    # Another server, other port and spool, same pid file: refused at once.
    second = make_postern(start=False)
    r = subprocess.run([binary(), "run", "-c", second.conf, "--pid-file",
        pid_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        timeout=30, cwd=second.dir)
    assert r.returncode == 1, r
    assert "pid file %s: another postern (pid %d) is running with it" % (
        pid_path, first.proc.pid) in r.stderr, r.stderr
    assert not port_listening(second.port)
    assert read_pid(pid_path) == "%d\n" % first.proc.pid
    first.stop()
    assert not os.path.exists(pid_path), "pid file left after a clean stop"


def test_stale_pid_file_is_taken_over(make_postern):
    srv = make_postern(start=False)
    pid_path = srv.path("postern.pid")
    # A process that died: its number is there, nobody holds the lock.
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(pid_path, "w") as f:
        f.write("%d\n" % dead.pid)
    srv.run_args = ["--pid-file", pid_path]
    srv.start()
    assert read_pid(pid_path) == "%d\n" % srv.proc.pid
    assert "pid file %s: stale (pid %d holds it no more): taken over" % (
        pid_path, dead.pid) in srv.log()


def test_a_start_that_fails_removes_its_pid_file(make_postern):
    """A second server on a spool in use stops after it wrote its own PID
    file: the file goes with it, as at a clean stop."""
    first = make_postern()
    second = make_postern(start=False)
    second.write_config(make_config().replace("{tmp}", first.dir))
    pid_path = second.path("second.pid")
    r = run_cli("run", "-c", second.conf, "--pid-file", pid_path,
        cwd=second.dir, timeout=30)
    assert r.returncode == 1, r
    assert "spool %s/spool is in use by another postern (pid %d)" % (
        first.dir, first.proc.pid) in r.stderr, r.stderr
    assert not os.path.exists(pid_path), "pid file left by a failed start"


def hold_port(port):
    """Another program on 127.0.0.1:port (no SO_REUSEPORT: postern's bind
    fails with EADDRINUSE while it is there)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOST, port))
    s.listen(1)
    return s


def test_bind_retry_succeeds_when_the_port_frees(make_postern, notify):
    srv = make_postern(start=False, extra=["bind-retry 50 200ms"])
    holder = hold_port(srv.port)
    srv.env = {"NOTIFY_SOCKET": notify.path}
    proc_start = time.monotonic()
    srv.proc = None
    # Start without waiting for the port: it is ours for now.
    srv.argv_prefix = []
    log = open(srv.log_path, "ab")
    srv.proc = subprocess.Popen([binary(), "run", "-c", srv.conf],
        cwd=srv.dir, stdout=log, stderr=log, env=dict(os.environ,
        NOTIFY_SOCKET=notify.path))
    log.close()
    wait_for(lambda: srv.log().count("trying again") >= 2, timeout=15,
        what="two retries")
    msg = notify.read()
    assert msg is not None and "trying again" in msg.get("STATUS", ""), msg
    assert int(msg["EXTEND_TIMEOUT_USEC"]) >= 200000, msg
    assert re.search(r"warn listen 127\.0\.0\.1 port %d: in use by another "
        r"process \(another postern\?\): trying again in 200 ms \(1 of 50\)"
        % srv.port, srv.log())
    holder.close()
    notify.expect("READY", timeout=15)
    c = Client(srv.port)
    srv.clients.append(c)
    c.hello()
    c.send("QUIT"); c.expect(221)
    assert time.monotonic() - proc_start < 15


def test_bind_retry_gives_up_after_count(make_postern):
    srv = make_postern(start=False, extra=["bind-retry 2 100ms"])
    holder = hold_port(srv.port)
    try:
        t0 = time.monotonic()
        r = subprocess.run([binary(), "run", "-c", srv.conf], cwd=srv.dir,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=30)
        took = time.monotonic() - t0
    finally:
        holder.close()
    assert r.returncode == 1, r
    assert r.stderr.count("trying again") == 2, r.stderr
    assert "listen 127.0.0.1 port %d: in use by another process (another " \
        "postern?) (no more tries: bind-retry)" % srv.port in r.stderr, \
        r.stderr
    assert 0.2 <= took < 10, took


def test_bind_retry_stops_on_sigterm(make_postern):
    srv = make_postern(start=False, extra=["bind-retry 100 5s"])
    holder = hold_port(srv.port)
    try:
        log = open(srv.log_path, "ab")
        pid_path = srv.path("postern.pid")
        proc = subprocess.Popen([binary(), "run", "-c", srv.conf,
            "--pid-file", pid_path], cwd=srv.dir, stdout=log, stderr=log)
        log.close()
        wait_for(lambda: "trying again" in srv.log(), timeout=15,
            what="a retry")
        assert read_pid(pid_path) == "%d\n" % proc.pid
        t0 = time.monotonic()
        proc.terminate()
        assert proc.wait(10) == 0
        assert time.monotonic() - t0 < 3, "SIGTERM waited for the retry"
        assert "shutdown: signal 15 before every address was bound" in \
            srv.log()
        assert not os.path.exists(pid_path), "pid file left at the stop"
    finally:
        holder.close()


def test_other_bind_errors_are_not_retried(tmp_path):
    """EACCES (a port below 1024 for a normal user) will not go away by
    waiting: the first failure is the last."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) not found")
    d = tempfile.mkdtemp(prefix="postern-bind-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        conf = os.path.join(d, "postern.conf")
        with open(conf, "w") as f:
            f.write("hostname t.example\nspool %s/spool\nlisten "
                "127.0.0.1:999\nbind-retry 5 1s\naction l discard\n"
                "match any action l\n" % d)
        os.chmod(conf, 0o644)
        t0 = time.monotonic()
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
            "--clear-groups", binary(), "run", "-c", conf], cwd=d,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=30)
        assert r.returncode == 1, r
        assert "listen 127.0.0.1 port 999: Permission denied\n" in \
            r.stderr, r.stderr
        assert "trying again" not in r.stderr
        assert time.monotonic() - t0 < 5
    finally:
        shutil.rmtree(d, ignore_errors=True)
