"""The Prometheus endpoint: scraped over HTTP after a known mix of sessions,
its counters move by what happened; /healthz says when the spool cannot be
written; the endpoint stays on loopback unless told."""

import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess

import pytest

from conftest import (HOST, free_port, make_config, run_cli, send_message,
    wait_for)


def get(port, path, method="GET"):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$")


def scrape(port):
    """{series: value} of /metrics; every line is a comment or a sample."""
    status, ctype, body = get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    out = {}
    for line in body.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metrics_server(make_postern, extra=()):
    port = free_port()
    srv = make_postern(extra=["metrics listen 127.0.0.1:%d" % port] +
        list(extra))
    wait_for(lambda: "metrics on http://127.0.0.1:%d/metrics" % port in
        srv.log(), what="the metrics endpoint")
    return srv, port


def test_endpoint_answers_and_refuses_what_it_does_not_serve(make_postern):
    srv, port = metrics_server(make_postern)
    m = scrape(port)
    assert m["postern_connections_open"] == 0
    assert m["process_open_fds"] > 5 and m["process_resident_memory_bytes"] > 1e6
    assert m['postern_queue_messages{state="ready"}'] == 0
    assert get(port, "/healthz")[0::2] == (200, "ok\n")
    assert get(port, "/nothing")[0] == 404
    assert get(port, "/metrics", "POST")[0] in (405, 501)


def test_connection_counters(make_postern):
    srv, port = metrics_server(make_postern, ["limit connection-rate 3/1h"])
    before = scrape(port)
    for _ in range(5):		# 3 admitted, then 2 refused by the rate
        with srv.session() as c:
            r = c.read_reply()
            if r.code == 220:
                c.send("QUIT"); c.expect(221)
    m = scrape(port)
    d = lambda k: m[k] - before.get(k, 0)
    assert d("postern_connections_accepted_total") == 3
    assert d('postern_connections_refused_total{reason="connection-rate"}') == 2
    assert d('postern_connections_refused_total{reason="connections"}') == 0


def test_healthz_fails_when_the_spool_cannot_be_written(make_postern):
    if shutil.which("chattr") is None:
        pytest.fail("chattr (e2fsprogs) not found")
    srv, port = metrics_server(make_postern)
    tmp = srv.path("spool", "tmp")
    # Immutable: not even root may add a file (permissions would not stop
    # a server running as root).
    r = subprocess.run(["chattr", "+i", tmp], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        pytest.skip("this file system has no immutable flag: %s" % r.stdout)
    try:
        status, _, body = get(port, "/healthz")
        assert status == 503, body
        assert "spool %s is not writable: create(tmp/" % srv.path("spool") \
            in body, body
        assert "Operation not permitted" in body, body
    finally:
        subprocess.run(["chattr", "-i", tmp], check=True)
    assert get(port, "/healthz")[0::2] == (200, "ok\n")
    srv.sigterm()		# stopping: not healthy any more
    wait_for(lambda: srv.proc.poll() is not None or
        get(port, "/healthz")[0] == 503, what="503 while stopping")
    srv.wait_exit()


def test_metrics_stay_on_loopback_unless_public(tmp_path):
    conf = tmp_path / "p.conf"
    conf.write_text(make_config(["metrics listen 0.0.0.0:9925"]).replace(
        "{tmp}", str(tmp_path)).replace("{port}", "2525"))
    r = run_cli("check", "-c", str(conf))
    assert r.returncode == 1 and "not a loopback address" in r.stdout, r
    conf.write_text(make_config(["metrics listen 0.0.0.0:9925 public"])
        .replace("{tmp}", str(tmp_path)).replace("{port}", "2525"))
    r = run_cli("check", "-c", str(conf))
    assert r.returncode == 0, r


def test_metrics_port_in_use_fails_start_up(make_postern):
    holder = socket.socket()
    holder.bind((HOST, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        srv = make_postern(start=False, extra=["metrics listen "
            "127.0.0.1:%d" % port])
        r = run_cli("run", "-c", srv.conf, cwd=srv.dir, timeout=20)
        assert r.returncode == 1, r
        assert "metrics listen 127.0.0.1 port %d: Address already in use" % (
            port) in r.stderr, r.stderr
    finally:
        holder.close()
