"""One postern per spool and per listen address (docs/deploy.md): a second
`postern run` on the same spool, or on an address another process listens
on, stops at start with a clear error instead of sharing the spool or
taking a share of the connections (SO_REUSEPORT); the first keeps serving.
"""

import socket
import re
import subprocess

import pytest

from conftest import (HOST, Client, binary, free_port, make_config,
    run_cli, send_message, wait_for)


def run_second(tmp_path, text):
    """`postern run` with TEXT in its own folder: (exit code, stderr) once
    it exits; an instance still running after 15 s fails the test."""
    d = tmp_path / "second"
    d.mkdir()
    conf = d / "postern.conf"
    conf.write_text(text)
    p = subprocess.Popen([binary(), "run", "-c", str(conf)], cwd=str(d),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        _out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        _out, err = p.communicate(timeout=15)
        raise AssertionError("the second postern started and ran:\n" +
            err.decode(errors="replace")[-2000:])
    return p.returncode, err.decode(errors="replace")


def still_serves(srv, n):
    """n sessions in a row are all greeted by srv (hostname test.example)
    and the last one delivers a message."""
    for i in range(n):
        with srv.session() as c:
            r = c.read_reply()
            assert r.code == 220 and r.texts[0].startswith("test.example"), \
                "session %d greeted by %r" % (i, r.texts)
            if i == n - 1:
                c.send("EHLO client.example"); c.expect(250)
                send_message(c, "a@example.net", ["bob@example.org"],
                    "Subject: still here\r\n\r\nx\r\n")
    wait_for(lambda: srv.maildir("bob"), what="delivery by the first server")


def second_config(srv, spool, port):
    return make_config().replace("hostname test.example",
        "hostname second.example").replace("{tmp}/spool", spool).replace(
        "{port}", str(port)).replace("{tmp}", srv.dir + "/second")


def test_second_instance_on_the_same_spool_is_refused(postern, tmp_path):
    rc, err = run_second(tmp_path, second_config(postern,
        postern.path("spool"), free_port()))
    assert rc != 0, err
    assert "spool %s is in use by another postern (pid %d)" % (
        postern.path("spool"), postern.proc.pid) in err, err
    still_serves(postern, 5)


def test_second_instance_on_the_same_address_is_refused(postern, tmp_path):
    """Refused once its bind-retry tries are spent (the other process might
    have been on its way out); one short try here."""
    rc, err = run_second(tmp_path, second_config(postern,
        str(tmp_path / "second" / "spool"), postern.port) +
        "bind-retry 1 200ms\n")
    assert rc != 0, err
    assert "listen 127.0.0.1 port %d: in use by another process (another " \
        "postern?) (no more tries: bind-retry)" % postern.port in err, err
    assert err.count("trying again") == 1, err
    still_serves(postern, 30)


@pytest.mark.parametrize("workers", ["workers 1", "workers 2 spread",
    "workers 2"])
def test_no_other_socket_takes_a_share_of_the_connections(make_postern,
        workers):
    """A program of the same user that binds postern's address with
    SO_REUSEPORT joins the kernel's group of listen sockets; postern's own
    program picks the socket, so the intruder is never handed one of the
    connections."""
    srv = make_postern(extra=[workers])
    intruder = socket.socket()
    intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    intruder.bind((HOST, srv.port))		# the same user: root
    intruder.listen(64)
    intruder.setblocking(False)
    try:
        greeted = 0
        for _ in range(40):
            with Client(srv.port) as c:
                try:		# one the intruder holds is never greeted
                    if c.read_reply(timeout=3).code != 220:
                        break
                except (AssertionError, OSError):	# Closed, timeout
                    break
                greeted += 1
        with pytest.raises(BlockingIOError):
            intruder.accept()
        assert greeted == 40, "session %d was not greeted" % (greeted + 1)
    finally:
        intruder.close()


def test_a_wildcard_beside_a_specific_address_on_one_port(make_postern):
    """listen 127.0.0.1:P and listen 0.0.0.0:P: both are postern's own, so
    neither is "in use by another process"; a connection goes to the most
    specific address that listens (here: 127.0.0.2 to the wildcard's)."""
    text = make_config(["bind-retry 1 100ms",
        "listen 0.0.0.0:{port} nomail"])
    srv = make_postern(config=text, start=False)
    r = run_cli("check", "-c", srv.conf)
    assert r.returncode == 0, r
    srv.start()
    for host, code in (("127.0.0.1", b"220 "), ("127.0.0.2", b"521 ")) * 5:
        with socket.create_connection((host, srv.port), timeout=5) as s:
            s.settimeout(5)
            got = b""
            while not got.endswith(b"\r\n"):
                more = s.recv(512)
                if not more:
                    break
                got += more
            assert got.startswith(code), (host, got)
    log = srv.log()
    assert "listening on 127.0.0.1:%d" % srv.port in log, log
    assert "listening on 0.0.0.0:%d" % srv.port in log, log


def test_a_wildcard_over_another_servers_address_is_refused(postern,
        tmp_path):
    """Our own overlapping listeners are told apart from another
    process's: the wildcard on the first server's port is refused."""
    q = free_port()
    text = second_config(postern, str(tmp_path / "second" / "spool"), q) + \
        "listen 0.0.0.0:%d\nbind-retry 1 200ms\n" % postern.port
    rc, err = run_second(tmp_path, text)
    assert rc != 0, err
    assert "listen 0.0.0.0 port %d: in use by another process (another " \
        "postern?) (no more tries: bind-retry)" % postern.port in err, err
    still_serves(postern, 10)


def test_a_log_file_that_cannot_be_opened_stops_the_start_cleanly(
        tmp_path):
    # A folder where the file should be: its folder is there (what
    # postern check looks at), the open fails at the start itself.
    d = tmp_path / "second"
    logs = tmp_path / "logs"
    (logs / "postern.log").mkdir(parents=True)
    text = make_config(["log file %s/postern.log" % logs]).replace(
        "{tmp}", str(d)).replace("{port}", str(free_port()))
    rc, err = run_second(tmp_path, text)
    assert rc == 1, err
    assert re.search(r"fatal: \S+/postern.conf:\d+: log file %s/postern.log: "
        r"Is a directory" % re.escape(str(logs)), err), err
    assert "Sanitizer" not in err, err
