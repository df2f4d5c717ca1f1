"""Concurrency: stalled clients do not hold up others; thousands of idle
connections are all greeted and cost little memory."""

import errno
import resource
import select
import socket
import time

from conftest import HOST, machine_lacks, send_message, wait_for

BODY = "Subject: fast\r\n\r\nquick\r\n"
MANY = 2000
MANY_DEADLINE = 60.0	# seconds for connect + greet + QUIT of all of them
RSS_PER_CONN_KB = 20
STALL = 10.0	# seconds without any new greeting: give up


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(srv):
    v = srv.pid_status()["VmRSS"]
    assert v.endswith(" kB"), v
    return int(v.split()[0])


def flood_without_reading(port, max_octets=400000, seconds=1.0):
    """A client that pipelines NOOPs and never reads a reply: it sends until
    its socket would block (the server's replies back up) or MAX_OCTETS."""
    s = socket.create_connection((HOST, port), timeout=5)
    s.setblocking(False)
    chunk = b"NOOP\r\n" * 1000
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < max_octets and time.monotonic() < deadline:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            select.select([], [s], [], 0.05)
    return s


def fast_message(srv):
    t0 = time.monotonic()
    with srv.session() as c:
        c.hello("fast.example")
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    return time.monotonic() - t0


def test_stalled_clients_do_not_delay_others(make_postern):
    srv = make_postern(extra=["limit connections-per-ip 100"])
    stalled = []
    try:
        for i in range(7):	# half a command line, then nothing
            c = srv.session()
            c.expect(220)
            c.send_raw(b"MAIL FROM:<stalled%d@exa" % i)
            stalled.append(c)
        for i in range(7):	# in the middle of DATA, then nothing
            c = srv.session()
            c.hello()
            c.send("MAIL FROM:<a@example.net>"); c.expect(250)
            c.send("RCPT TO:<stalled@example.org>"); c.expect(250)
            c.send("DATA"); c.expect(354)
            c.send_raw(b"Subject: never ends\r\n\r\nhalf a li")
            stalled.append(c)
        for i in range(6):	# pipelines and never reads its replies
            stalled.append(flood_without_reading(srv.port))
        times = [fast_message(srv) for _ in range(5)]
        print("fast client times with %d stalled: %s" % (len(stalled),
            ", ".join("%.3fs" % t for t in times)))
        # Stalled clients would hold a blocked server for their whole
        # timeouts (minutes); a busy machine may take a few seconds.
        assert max(times) < 10.0, "a fast client took %.2fs while %d " \
            "clients stalled" % (max(times), len(stalled))
        wait_for(lambda: len(srv.maildir("bob")) == 5, what="five deliveries")
        assert srv.maildir("stalled") == []
    finally:
        for c in stalled:
            c.close()


def test_2000_idle_connections_greeted_and_quit(make_postern):
    nofile = raise_nofile(MANY * 2 + 256)	# the server inherits this too
    if nofile < MANY + 128:
        machine_lacks("room for %d descriptors (RLIMIT_NOFILE hard limit "
            "%d)" % (MANY + 128, nofile))
    srv = make_postern(extra=["limit connections 5000",
        "limit connections-per-ip 5000"])
    # Baseline: one session served, so lazy start-up costs are paid.
    assert fast_message(srv) < 5
    base = rss_kb(srv)

    t0 = time.monotonic()
    deadline = t0 + MANY_DEADLINE
    socks, bufs, state = [], {}, {}
    poller = select.poll()
    try:
        for i in range(MANY):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((HOST, srv.port))
            assert rc in (0, errno.EINPROGRESS), "connect #%d: %s" % (
                i, errno.errorcode.get(rc, rc))
            socks.append(s)
            bufs[s.fileno()] = b""
            state[s.fileno()] = s
            poller.register(s, select.POLLIN)

        # Wait until every socket has its whole 220 line.  Connections the
        # server never accepted (a full accept queue: with SYN cookies the
        # client sees an established connection the server dropped) wait
        # forever, so stop once nothing has moved for STALL seconds.
        greeted = 0
        waiting = {s.fileno() for s in socks}
        progress = time.monotonic()
        while waiting:
            now = time.monotonic()
            left = deadline - now
            assert left > 0 and now - progress < STALL, \
                "%d of %d connections greeted (none more for %.0fs, %.0fs " \
                "in all); the server logged %d connects: the others were " \
                "never accepted (listen backlog?)" % (greeted, MANY,
                now - progress, now - t0, srv.log().count(" connect sid="))
            for fd, ev in poller.poll(min(left, 1.0) * 1000):
                if fd not in waiting:
                    continue
                progress = time.monotonic()
                try:
                    data = state[fd].recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionError as e:
                    raise AssertionError("connection #%d: %s after %d "
                        "greeted" % (socks.index(state[fd]), e, greeted))
                assert data, "connection closed before its 220 after %d " \
                    "greeted (got %r)" % (greeted, bufs[fd])
                bufs[fd] += data
                if b"\r\n" in bufs[fd]:
                    assert bufs[fd].startswith(b"220 "), \
                        "connection greeted with %r" % bufs[fd][:200]
                    waiting.discard(fd)
                    bufs[fd] = b""
                    greeted += 1
        t_greeted = time.monotonic() - t0

        rss = rss_kb(srv)
        per = (rss - base) / MANY
        print("RSS: idle %d kB, with %d idle connections %d kB "
            "(+%d kB, %.1f kB per connection); all greeted in %.2fs"
            % (base, MANY, rss, rss - base, per, t_greeted))

        # A new client is still served at once.
        assert fast_message(srv) < 2.0

        # Everyone says QUIT and gets 221, then the server closes.
        for s in socks:
            s.setblocking(True)
            s.sendall(b"QUIT\r\n")
            s.setblocking(False)
        waiting = {s.fileno() for s in socks}
        done = 0
        while waiting:
            left = deadline - time.monotonic()
            assert left > 0, "%d of %d sessions ended cleanly within %.0fs" % (
                done, MANY, MANY_DEADLINE)
            for fd, ev in poller.poll(min(left, 1.0) * 1000):
                if fd not in waiting:
                    continue
                try:
                    data = state[fd].recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionError as e:
                    raise AssertionError("QUIT: %s (got %r)" % (e, bufs[fd]))
                if data:
                    bufs[fd] += data
                    continue
                assert bufs[fd].startswith(b"221 ") and \
                    bufs[fd].endswith(b"\r\n"), \
                    "QUIT answered %r before the close" % bufs[fd][:200]
                waiting.discard(fd)
                poller.unregister(fd)
                done += 1
        print("all %d QUIT cleanly after %.2fs" % (MANY, time.monotonic() - t0))
        assert rss - base < MANY * RSS_PER_CONN_KB, \
            "%d idle connections cost %d kB of RSS (limit %d kB)" % (
            MANY, rss - base, MANY * RSS_PER_CONN_KB)
    finally:
        for s in socks:
            s.close()
