"""File descriptors (docs/deploy.md): postern refuses to start with more
`limit connections` than its descriptor limit can hold next to what it
keeps for itself, and out of descriptors anyway (another program's doing,
a lowered limit) it answers the clients it cannot take with 421 and pauses
accepting instead of spinning on EMFILE; once descriptors are free again
it serves as before.  The Maildirs kept open between deliveries use no
more than half of what the limit leaves over.
"""

import os
import re
import resource
import select
import socket
import subprocess
import time

from conftest import (HOST, binary, listen_config, make_config, send_message,
    wait_for)


def nofile(n):
    """preexec_fn: soft and hard RLIMIT_NOFILE n."""
    def pre():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return pre


def write_conf(tmp_path, extra):
    p = tmp_path / "postern.conf"
    p.write_text(make_config(extra).replace("{tmp}", str(tmp_path))
        .replace("{port}", "2525"))
    return str(p)


def test_check_and_run_refuse_more_connections_than_descriptors(tmp_path):
    conf = write_conf(tmp_path, ["limit connections 1000"])
    r = subprocess.run([binary(), "check", "-c", conf], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=20, preexec_fn=nofile(1024))
    assert r.returncode == 1, r
    assert r.stdout.startswith(conf + ":5: limit connections 1000 needs ") and \
        "the descriptor limit is 1024" in r.stdout, r
    r = subprocess.run([binary(), "run", "-c", conf], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=20, preexec_fn=nofile(1024))
    assert r.returncode == 1, r
    assert conf + ":5: limit connections 1000 needs " in r.stderr, r.stderr
    assert "listening on" not in r.stderr, r.stderr

    conf = write_conf(tmp_path, ["limit connections 100"])
    r = subprocess.run([binary(), "check", "-c", conf], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=20, preexec_fn=nofile(1024))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r


def cpu_s(pid):
    """User plus system CPU seconds of process pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_socks(socks, timeout, enough):
    """Read each socket until enough(what it got, the last chunk), or
    TIMEOUT seconds: what each got, and those the server closed."""
    got = {s: b"" for s in socks}
    closed = set()
    deadline = time.monotonic() + timeout
    waiting = set(socks)
    while waiting and time.monotonic() < deadline:
        r, _, _ = select.select(list(waiting)[:1000], [], [], 0.2)
        for s in r:
            try:
                d = s.recv(512)
            except OSError:
                d = b""
            got[s] += d
            if not d:
                closed.add(s)
            if enough(got[s], d):
                waiting.discard(s)
    return got, closed


def first_lines(socks, timeout):
    """The first reply line of each socket (b"" when none came in time)."""
    return read_socks(socks, timeout, lambda got, d: not d or b"\n" in got)[0]


def starve(srv):
    """Lower the running server's limit: it runs out long before a flood
    is all in (about 40 descriptors are in use already)."""
    resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (96, 96))


def connect_many(srv, n):
    """N connections to srv, made without waiting for them."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, srv.port))
        socks.append(s)
    return socks


def test_out_of_descriptors_421_then_serves_again(make_postern):
    srv = make_postern(extra=["workers 1", "limit connections-per-ip 5000"])
    starve(srv)
    cpu0 = cpu_s(srv.proc.pid)
    t0 = time.monotonic()
    flood = connect_many(srv, 400)
    replies = first_lines(flood, 15)
    time.sleep(max(0, 3 - (time.monotonic() - t0)))	# a 3 s window, then
    cpu = cpu_s(srv.proc.pid) - cpu0			# measure the CPU
    codes = [v[:3] for v in replies.values()]
    assert codes.count(b"") == 0, "%d clients got no reply" % codes.count(b"")
    assert set(codes) <= {b"220", b"421"}, set(codes)
    assert codes.count(b"421") > 0 and codes.count(b"220") > 0, codes
    assert any(v.startswith(b"421 4.3.2 ") for v in replies.values())
    assert cpu < 1.0, "%.2f s of CPU in the first 3 s of the flood" % cpu
    log = srv.log()
    pauses = [l for l in log.splitlines() if "accept:" in l]
    assert pauses and len(pauses) < 100, (len(pauses), pauses[:5])
    assert "pausing accepts" in pauses[0], pauses[0]

    for s in flood:
        s.close()
    wait_for(lambda: "disconnect" in srv.log() and
        srv.log().count(" disconnect ") >= codes.count(b"220"), timeout=15,
        what="the flood's sessions to end")
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"],
            "Subject: after the flood\r\n\r\nx\r\n")
    wait_for(lambda: srv.maildir("bob"), what="delivery after the flood")


def test_out_of_descriptors_on_a_tls_listener_no_plaintext(make_postern):
    """On a tls listener the clients it cannot take are closed without a
    word: a 421 in plain text would be garbage to a TLS client."""
    srv = make_postern(config=listen_config("tls", extra=["workers 1",
        "limit connections-per-ip 5000", "tls self-signed {tmp}/tls"]))
    starve(srv)
    flood = connect_many(srv, 400)
    # The sessions it took wait for a ClientHello, the others are closed.
    got, closed = read_socks(flood, 5, lambda got, d: not d)
    said = [v[:40] for v in got.values() if v]
    assert said == [], "%d clients got plain text: %r" % (len(said), said[:3])
    assert closed and len(closed) < len(flood), len(closed)
    pauses = [l for l in srv.log().splitlines() if "accept:" in l]
    assert pauses and "pausing accepts" in pauses[0], pauses[:5]
    for s in flood:
        s.close()


def reserve_of(tmp_path):
    """What postern keeps for itself under the test config, as `postern
    check` reports it."""
    conf = write_conf(tmp_path, ["limit connections 1000000"])
    r = subprocess.run([binary(), "check", "-c", conf], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=20, preexec_fn=nofile(1024))
    m = re.search(r"needs \d+ descriptors \(\d+ for the connections, "
        r"(\d+) postern keeps for itself\)", r.stdout)
    assert m, r
    return int(m.group(1))


def test_kept_maildirs_stay_within_the_descriptor_limit(make_postern,
        tmp_path):
    # The limit leaves 2 * KEEP over: the kept Maildirs may use KEEP of it,
    # fewer than one delivery thread alone would keep.
    KEEP = 8
    limit = reserve_of(tmp_path) + 20 + 2 * KEEP
    srv = make_postern(extra=["limit connections 20"], start=False)
    srv.argv_prefix = ["prlimit", "--nofile=%d:%d" % (limit, limit), "--"]
    srv.start()

    def fds():
        return len(os.listdir("/proc/%d/fd" % srv.proc.pid))

    body = "Subject: kept\r\n\r\nx\r\n"
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["warm@example.org"], body)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: srv.maildir("warm"), what="the first delivery")
    base = fds()
    users = ["k%d" % i for i in range(60)]
    for n in range(30):
        with srv.session() as c:
            c.hello()
            send_message(c, "a@example.net", ["%s@example.org" % users[(n *
                7 + j) % 60] for j in range(10)], body)
            c.send("QUIT"); c.expect(221)
    got = sum(len(srv.maildir(u)) for u in users)
    assert got == 300, got
    wait_for(lambda: fds() <= base + KEEP, timeout=15,
        what="the server's descriptors to be at most %d over %d" % (KEEP,
        base))
