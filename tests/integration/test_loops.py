"""Which event loop takes a new connection ("workers N [pack|spread]").

pack (the default) steers new connections to loop 0 while it is not busy and
opens more loops as they get busy; spread leaves the choice to the kernel.
The "connect" log line names the loop of each session (loop=N)."""

import os
import re
import socket
import threading
import time

from conftest import HOST, free_port, make_config, port_listening, wait_for


def loop_of(srv, port, since=0):
    """The loop= of the session from client port PORT (its connect line),
    looked for from offset SINCE of the log on: under a flood of debug
    lines the log grows by megabytes a second, and reading it all for each
    probe would make the probes ever rarer."""
    line = re.compile(r" connect sid=\S+ ip=\S+ port=%d loop=(\d+)" % port)
    found = []

    def seen():
        with open(srv.log_path, "rb") as f:
            f.seek(since)
            found[:] = line.findall(f.read().decode("utf-8", "replace"))
        return found
    wait_for(seen, what="a connect line for client port %s" % port)
    return int(found[0])


def probe(srv, port=None):
    """One greeted session (on srv's port or PORT), closed again; the loop
    that had it."""
    since = os.path.getsize(srv.log_path)
    with socket.create_connection((HOST, port or srv.port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220"), "no greeting"
        s.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221"), "no 221 to QUIT"
        f.close()
        return loop_of(srv, s.getsockname()[1], since)


def test_light_load_stays_on_the_first_loop(make_postern):
    srv = make_postern(extra=["workers 4"])
    loops = [probe(srv) for _ in range(30)]
    assert set(loops) == {0}, loops


def test_a_listener_added_by_reload_is_packed_too(make_postern):
    srv = make_postern(extra=["workers 4"])
    port = free_port()
    srv.write_config(make_config(extra=["workers 4",
        "listen 127.0.0.1:%d" % port]))
    srv.sighup()
    wait_for(lambda: port_listening(port), 10, what="the new listener")
    loops = [probe(srv, port) for _ in range(30)]
    assert set(loops) == {0}, loops


def test_spread_leaves_it_to_the_kernel(make_postern):
    # 40 connections over 4 sockets of one SO_REUSEPORT group: all on one
    # loop by chance is 4 * 4**-40.
    srv = make_postern(extra=["workers 4 spread"])
    loops = [probe(srv) for _ in range(40)]
    assert len(set(loops)) >= 2, loops


class Flood:
    """Clients sending NOOPs as fast as the server answers them: they keep
    the loop they are on busy."""

    CHUNK = b"NOOP\r\n" * 5000
    REPLY = len(b"250 2.0.0 OK\r\n")

    def __init__(self, srv, n):
        self.stop = threading.Event()
        self.errors = []
        self.socks = []
        for _ in range(n):
            s = socket.create_connection((HOST, srv.port), timeout=10)
            s.recv(1000)		# the greeting
            self.socks.append(s)
        self.threads = [threading.Thread(target=self.run, args=(s,))
            for s in self.socks]
        for t in self.threads:
            t.start()

    def run(self, s):
        try:
            while not self.stop.is_set():
                s.sendall(self.CHUNK)
                want = 5000 * self.REPLY
                got = 0
                while got < want:	# bounded: the socket times out
                    d = s.recv(1 << 20)
                    if not d:
                        raise EOFError("closed by the server")
                    got += len(d)
        except (OSError, EOFError) as e:
            self.errors.append(e)

    def end(self):
        self.stop.set()
        for t in self.threads:
            t.join(20)
        for s in self.socks:
            s.close()
        assert not self.errors, self.errors


def test_a_busy_loop_opens_more_and_they_close_when_calm(make_postern):
    srv = make_postern(extra=["workers 4", "log level debug"])
    assert probe(srv) == 0
    flood = Flood(srv, 3)
    try:
        # The flooders are on loop 0; within a few samples (200 ms each)
        # new connections go to other loops too.
        elsewhere = []
        deadline = time.monotonic() + 20
        while not elsewhere and time.monotonic() < deadline:
            n = probe(srv)
            if n != 0:
                elsewhere.append(n)
            time.sleep(0.05)	# pacing the probes, not waiting for a condition
        assert elsewhere, "every probe on loop 0 for 20 s of flooding:\n" + \
            srv.log()[-3000:]
        assert 1 <= elsewhere[0] <= 3, elsewhere
    finally:
        flood.end()
    assert any("new connections go to" in l for l in srv.log().splitlines())

    # Calm again: back to loop 0 alone, ten probes in a row.
    run = 0
    deadline = time.monotonic() + 20
    while run < 10 and time.monotonic() < deadline:
        run = run + 1 if probe(srv) == 0 else 0
        time.sleep(0.05)
    assert run == 10, "not back on loop 0 alone 20 s after the flood"
