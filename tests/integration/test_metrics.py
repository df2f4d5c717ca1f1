"""The Prometheus endpoint: scraped over HTTP after a known mix of sessions,
its counters move by what happened; /healthz says when the spool cannot be
written; the endpoint stays on loopback unless told."""

import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest
import yaml

from conftest import (unverified_context, HOST, REPO, Client, free_port, machine_lacks, make_config,
    run_cli, send_message, wait_for)
from test_relay import upstreams  # noqa: F401


def get(port, path, method="GET"):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


BODY = "Subject: sample\r\n\r\nhello\r\n"


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
    assert get(port, "/metrics", "POST")[0] == 405
    assert get(port, "/metrics", "PUT")[0] == 405


def raw_http(port, request):
    """The status line of the answer to REQUEST, sent as bytes."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(request)
        f = s.makefile("rb")
        return f.readline().decode().rstrip("\r\n")


def test_endpoint_answers_malformed_requests_as_http_says(make_postern):
    """RFC 9112 3.2: HTTP/1.1 needs exactly one Host; the answer's version
    is the server's, never the client's; RFC 9110 15.5.6: a method not
    served is 405."""
    srv, port = metrics_server(make_postern)
    assert raw_http(port, b"GET /metrics HTTP/1.1\r\n\r\n") == \
        "HTTP/1.1 400 Bad Request"
    assert raw_http(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n"
        b"Host: b\r\n\r\n") == "HTTP/1.1 400 Bad Request"
    assert raw_http(port, b"GET /metrics HTTP/1.2\r\nHost: a\r\n\r\n") \
        == "HTTP/1.1 200 OK"
    assert raw_http(port, b"GET /metrics HTTP/1.0\r\n\r\n") == \
        "HTTP/1.0 200 OK"
    assert raw_http(port, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n") \
        == "HTTP/1.1 200 OK"
    assert raw_http(port, b"OPTIONS /metrics HTTP/1.1\r\nHost: a\r\n"
        b"\r\n") == "HTTP/1.1 405 Method Not Allowed"


def test_endpoint_out_of_descriptors_pauses_instead_of_spinning(
        make_postern):
    """Clients of the endpoint use up the descriptors: accept(2) fails,
    and the endpoint pauses its accepts instead of trying again at once,
    burning a CPU and flooding the log; once they go, it serves again."""
    import resource
    import time
    from test_nofile import cpu_s
    srv, port = metrics_server(make_postern)
    resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (96, 96))
    size0 = len(srv.log())
    cpu0 = cpu_s(srv.proc.pid)
    flood = []
    for _ in range(150):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, port))
        flood.append(s)
    time.sleep(3)
    cpu = cpu_s(srv.proc.pid) - cpu0
    grew = len(srv.log()) - size0
    for s in flood:
        s.close()
    assert cpu < 1.0, "%.2f s of CPU in 3 s" % cpu
    assert grew < 4096, srv.log()[size0:size0 + 2000]
    wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=15,
        what="the endpoint to serve again")
    assert srv.alive()


def test_connection_counters(make_postern):
    srv, port = metrics_server(make_postern, ["limit connection-rate 3/1h",
        "trusted none"])
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
        machine_lacks("the immutable flag on this file system (chattr +i: "
            "%s)" % r.stdout.strip())
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


def test_metrics_on_ipv6_leaves_the_ipv4_port_to_a_listener(make_postern):
    # Every IPv6 socket of postern's takes IPv6 only: the endpoint on
    # [::]:P and SMTP on 127.0.0.1:P are apart, for check and run alike.
    # The same port and family stays refused.
    if not socket.has_ipv6:
        machine_lacks("IPv6 sockets")
    srv = make_postern(extra=["metrics listen [::]:{port} public"])
    r = run_cli("check", "-c", srv.conf, cwd=srv.dir)
    assert r.returncode == 0, r
    c = http.client.HTTPConnection("::1", srv.port, timeout=10)
    try:
        c.request("GET", "/healthz")
        assert c.getresponse().status == 200
    finally:
        c.close()
    with srv.session() as s:
        s.hello()
    clash = make_postern(start=False, extra=[
        "metrics listen 0.0.0.0:{port} public"])
    r = run_cli("check", "-c", clash.conf, cwd=clash.dir)
    assert r.returncode == 1 and "has that address and port" in \
        r.stdout + r.stderr, r


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


def doc_blocks(lang):
    with open(os.path.join(REPO, "docs", "metrics.md")) as f:
        text = f.read()
    return re.findall(r"^```%s\n(.*?)^```" % lang, text, re.M | re.S)


SERIES = re.compile(r"\b(postern_[a-z_]+|process_[a-z_]+)\b")


def served_names(port):
    """Metric names a scrape shows (a histogram's _bucket/_sum/_count)."""
    names = set()
    for series in scrape(port):
        names.add(series.split("{")[0])
    return names


def test_dashboard_and_alerts_name_metrics_that_exist(make_postern):
    """docs/metrics.md: the dashboard is valid JSON, the alert rules valid
    YAML, and every series they query is one postern serves."""
    srv, port = metrics_server(make_postern, ["on rcpt { tag x=y }"])
    with srv.session() as c:	# a handler kind with a verdict, and a
        c.hello()		# spool commit (a relay-denied rcpt stays out)
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("QUIT"); c.expect(221)
    names = served_names(port)
    dash = json.loads(doc_blocks("json")[0])
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load(doc_blocks("yaml")[1])
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) > 20
    for e in exprs:
        for name in SERIES.findall(e):
            assert name in names, "%s: %s is not served" % (e, name)
    # The table of the page lists every family served.
    with open(os.path.join(REPO, "docs", "metrics.md")) as f:
        page = f.read()
    for name in names:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert "`%s`" % base in page, "%s is not in docs/metrics.md" % base


def test_counters_move_by_a_known_session_mix(make_postern, tmp_path):
    """Accepted, refused at RCPT, a TLS session with a failed AUTH, and a
    message for a relay that is down (deferred): every counter they touch
    moves by exactly what happened."""
    import crypt
    mport = free_port()
    dead = free_port()		# nothing listens: the relay is down
    h = crypt.crypt("right", crypt.mksalt(crypt.METHOD_SHA512))
    (tmp_path / "users").write_text("alice@example.org %s\n" % h)
    srv = make_postern(config=make_config(
        ["metrics listen 127.0.0.1:%d" % mport, "tls self-signed {tmp}/tls",
         "table users file:{tmp}/users", "auth <users>",
         "auth-guard 100/1m tarpit 0s", "queue retry-min 1h"],
        actions='action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"\n' +
            ('action up relay "smtp://127.0.0.1:%d"\n' % dead),
        rules=["match to domain example.org action local",
               "match to domain relay.example action up"]).replace(
        "listen 127.0.0.1:{port}", "listen 127.0.0.1:{port} auth"))
    wait_for(lambda: "metrics on http" in srv.log(), what="the endpoint")
    before = scrape(mport)
    body = "Subject: counted\r\n\r\n" + ("x" * 70 + "\r\n") * 15
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<x@elsewhere.test>"); c.expect(550, "5.7.1")
        c.send("RSET"); c.expect(250)
        send_message(c, "a@example.net", ["bob@example.org"], body)
        send_message(c, "a@example.net", ["y@relay.example"], body)
        c.send("QUIT"); c.expect(221)
    ctx = unverified_context()
    with srv.session() as c:
        c.hello()
        c.starttls(ctx)
        c.send("EHLO client.example"); c.expect(250)
        c.send("AUTH PLAIN " + base64.b64encode(
            b"\0alice@example.org\0wrong").decode())
        c.expect(535, "5.7.8")
        # A refusal of a SASL answer is AUTH's, an empty line's a command's.
        c.send("AUTH LOGIN"); c.expect(334)
        c.send(base64.b64encode(b"alice@example.org").decode())
        c.expect(334)
        c.send(base64.b64encode(b"wrong").decode()); c.expect(535, "5.7.8")
        c.send(""); c.expect(500, "5.5.2")
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: scrape(mport).get(
        'postern_deliveries_total{action="relay",result="deferred"}', 0) >
        before.get('postern_deliveries_total{action="relay",'
        'result="deferred"}', 0), timeout=30, what="the relay attempt")
    wait_for(lambda: scrape(mport)["postern_connections_open"] == 0,
        what="both sessions closed")
    m = scrape(mport)
    d = lambda k: m.get(k, 0) - before.get(k, 0)
    want = {
        "postern_connections_accepted_total": 2,
        "postern_messages_accepted_total": 2,
        'postern_smtp_refusals_total{stage="rcpt",class="5xx"}': 1,
        'postern_smtp_refusals_total{stage="auth",class="5xx"}': 2,
        'postern_smtp_refusals_total{stage="command",class="5xx"}': 1,
        'postern_smtp_refusals_total{stage="connect",class="5xx"}': 0,
        'postern_tls_sessions_total{version="TLSv1.3"}': 1,
        'postern_auth_total{result="failure"}': 2,
        'postern_auth_total{result="success"}': 0,
        'postern_deliveries_total{action="maildir",result="delivered"}': 1,
        'postern_deliveries_total{action="relay",result="deferred"}': 1,
        'postern_deliveries_total{action="relay",result="delivered"}': 0,
        'postern_queue_messages{state="deferred"}': 1,
        # Both commits: the Maildir copy (the fast path), the relay's spool.
        "postern_spool_commit_duration_seconds_count": 2,
    }
    got = {k: d(k) for k in want}
    assert got == want, "moved: %s" % {k: v for k, v in got.items()
        if v != want[k]}
    # The octets of the two messages, as their size was logged.
    sizes = [int(x) for x in re.findall(r" accepted sid=\S+ qid=\S+ "
        r"size=(\d+)", srv.log())]
    assert len(sizes) == 2 and d("postern_received_bytes_total") == sum(
        sizes), (sizes, d("postern_received_bytes_total"))
    assert m["postern_queue_oldest_message_age_seconds"] >= 0
    log = srv.log()
    assert log.count(" stage=AUTH code=535 ") == 2, log
    assert log.count(" stage=command code=500 ") == 1, log


def test_line_too_long_is_refused_at_stage_command(make_postern):
    """A line over line-length answers no command: its 500 is counted and
    logged at stage "command", first line of the session or after MAIL."""
    srv, mport = metrics_server(make_postern)
    before = scrape(mport)
    with srv.session() as c:
        c.expect(220)
        c.send("X" * 1200); c.expect(500, "5.5.2")
        c.send("EHLO client.example"); c.expect(250)
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("Y" * 1200); c.expect(500, "5.5.2")
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: scrape(mport)["postern_connections_open"] == 0,
        what="the session closed")
    m = scrape(mport)
    moved = {k: v - before.get(k, 0) for k, v in m.items()
        if k.startswith("postern_smtp_refusals_total") and
        v != before.get(k, 0)}
    assert moved == {'postern_smtp_refusals_total{stage="command",'
        'class="5xx"}': 2}, moved
    rejects = re.findall(r" reject sid=\S+ (stage=\S+ code=\d+)", srv.log())
    assert rejects == ["stage=command code=500"] * 2, srv.log()


def refusals_moved(before, after):
    return {k: v - before.get(k, 0) for k, v in after.items()
        if k.startswith("postern_smtp_refusals_total") and
        v != before.get(k, 0)}


def reject_stages(srv):
    """"stage=S code=C" of each reject line, in order."""
    return re.findall(r" reject sid=\S+ (?:qid=\S+ )?(stage=\S+ code=\d+)",
        srv.log())


def to_bob(c):
    """Greeted, with a transaction for bob@example.org open."""
    c.hello()
    c.send("MAIL FROM:<a@example.net>"); c.expect(250)
    c.send("RCPT TO:<bob@example.org>"); c.expect(250)


def test_refusals_count_at_the_stage_their_log_line_names(make_postern):
    """A reply that answers no command (an idle timeout's 421, after the
    greeting or after MAIL's 250) is counted and logged at "command"; a
    refusal while the text streams (a stall) or of DATA itself (text
    before the 354) at "data", though a queue id is given by then; only
    the replies to a message's end (too big, an eom chain's) at "eom"."""
    srv, mport = metrics_server(make_postern, ["limit idle-timeout 1s",
        "limit data-timeout 1s", "limit message-size 1k",
        'on eom { reject 550 5.7.1 "not this one" }'])
    before = scrape(mport)
    with srv.session() as c:
        c.expect(220)
        c.expect(421, "4.4.2", timeout=10)
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.expect(421, "4.4.2", timeout=10)
    with srv.session() as c:
        to_bob(c)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: stalled\r\n")
        r = c.expect(421, "4.4.2", timeout=10)
        assert "message text" in r.text, r
    with srv.session() as c:
        to_bob(c)
        c.send_raw(b"DATA\r\nSubject: early\r\n")
        c.expect(554, "5.5.0")
    with srv.session() as c:
        to_bob(c)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: big\r\n\r\n" + (
            b"x" * 98 + b"\r\n") * 20 + b".\r\n")
        c.expect(552, "5.3.4")
        c.send("MAIL FROM:<a@example.net>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: refused\r\n\r\nx\r\n.\r\n")
        c.expect(550, "5.7.1")
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: scrape(mport)["postern_connections_open"] == 0,
        what="the sessions closed")
    assert refusals_moved(before, scrape(mport)) == {
        'postern_smtp_refusals_total{stage="command",class="4xx"}': 2,
        'postern_smtp_refusals_total{stage="data",class="4xx"}': 1,
        'postern_smtp_refusals_total{stage="data",class="5xx"}': 1,
        'postern_smtp_refusals_total{stage="eom",class="5xx"}': 2,
    }
    rejects = reject_stages(srv)
    assert rejects == ["stage=command code=421", "stage=command code=421",
        "stage=DATA code=421", "stage=DATA code=554", "stage=DATA code=552",
        "stage=DATA code=550"], srv.log()


def test_stop_421_after_a_message_ended_in_the_stop_is_of_no_command(
        make_postern):
    """SIGTERM while a client is in DATA: its message gets its 250, then
    the stop's 421, which answers no command: counted and logged at
    "command", not "data"."""
    srv, mport = metrics_server(make_postern)
    before = scrape(mport)
    with srv.session() as c, srv.session() as other:
        for s in (c, other):	# other keeps the server up to be scraped
            to_bob(s)
            s.send("DATA"); s.expect(354)
            s.send_raw(b"Subject: in the stop\r\n\r\n")
        srv.sigterm()
        wait_for(lambda: "shutdown: signal" in srv.log(), what="the stop")
        c.send_raw(b"text\r\n.\r\n")
        c.expect(250, "2.0.0")
        c.expect(421, "4.3.2")
        assert refusals_moved(before, scrape(mport)) == {
            'postern_smtp_refusals_total{stage="command",class="4xx"}': 1}
        other.send_raw(b"text\r\n.\r\n")
        other.expect(250, "2.0.0")
        other.expect(421, "4.3.2")
    assert srv.wait_exit() == 0
    rejects = reject_stages(srv)
    assert rejects == ["stage=command code=421"] * 2, srv.log()


def test_messages_dropped_after_their_250_are_counted_accepted(
        make_postern):
    """A message for soft-invalid recipients only gets the final 250 as
    any other: it is counted accepted, with its octets."""
    srv, port = metrics_server(make_postern, [
        "table users { alice@example.org }",
        "on rcpt { verify <users> soft-invalid }"])
    before = scrape(port)
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["alice@example.org"], BODY)
        assert send_message(c, "b@example.net", ["ghost@example.org"],
            BODY).code == 250
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: len(srv.maildir("alice")) == 1, what="alice's copy")
    m = scrape(port)
    sizes = [int(x) for x in re.findall(r" (?:accepted|discarded) sid=\S+ "
        r"qid=\S+ size=(\d+)", srv.log())]
    assert len(sizes) == 2, srv.log()
    assert m["postern_messages_accepted_total"] - before[
        "postern_messages_accepted_total"] == 2
    assert m["postern_received_bytes_total"] - before.get(
        "postern_received_bytes_total", 0) == sum(sizes)


def test_proxy_counters(make_postern):
    """Three proxy listeners: one in front of a working upstream, one of
    an upstream nobody listens on, one of an upstream that answers RCPT
    with 354: three proxy sessions, one unavailable upstream, one out of
    protocol, and the message relayed counts as no message of ours."""
    from proxy_upstream import RawUpstream, Upstream
    good, bad = Upstream(), RawUpstream(rcpt_reply=b"354 what")
    try:
        mport, dead, p2, p3 = free_port(), free_port(), free_port(), \
            free_port()
        srv = make_postern(config="hostname front.example\n"
            "spool {tmp}/spool\nmetrics listen 127.0.0.1:%d\n" % mport +
            "".join("listen 127.0.0.1:%s proxy smtp://127.0.0.1:%d\n" % l
                for l in (("{port}", good.port), (p2, dead),
                    (p3, bad.port))))
        wait_for(lambda: "metrics on http" in srv.log(), what="the endpoint")
        before = scrape(mport)
        with srv.session() as c:
            c.hello()
            send_message(c, "a@example.org", ["b@example.org"],
                "Subject: up\r\n\r\nhi\r\n")
            c.send("QUIT"); c.expect(221)
        with Client(p2) as c:
            c.expect(220)
            c.send("EHLO client.example"); c.expect(421, "4.4.2")
        with Client(p3) as c:
            c.hello()
            c.send("MAIL FROM:<a@example.org>"); c.expect(250)
            c.send("RCPT TO:<b@example.org>"); c.expect(421, "4.4.2")
        wait_for(lambda: scrape(mport)["postern_connections_open"] == 0,
            what="the sessions closed")
        m = scrape(mport)
        d = lambda k: m.get(k, 0) - before.get(k, 0)
        fail = 'postern_proxy_upstream_failures_total{reason="%s"}'
        want = {"postern_proxy_sessions_total": 3,
            "postern_connections_accepted_total": 3,
            fail % "unavailable": 1, fail % "protocol": 1,
            fail % "refused": 0, fail % "lost": 0,
            "postern_messages_accepted_total": 0}
        got = {k: d(k) for k in want}
        assert got == want, got
        assert len(good.messages) == 1
    finally:
        good.stop()
        bad.stop()


STORE_ERRORS = 'postern_state_store_errors_total{engine="sqlite"}'


def greeting(srv):
    with srv.session() as c:
        return c.read_reply().code


def test_a_state_store_that_cannot_be_opened_is_unhealthy(make_postern):
    """A state store whose file cannot be made (at start, and after a
    reload to such a path): sessions get 421, each failed open counts as
    an error of its engine and /healthz says 503 why, until an open
    succeeds."""
    srv, port = metrics_server(make_postern, [
        "state sqlite {tmp}/none/state.db",
        "on connect { ratelimit 1000/1m per ip }"])
    assert greeting(srv) == 421
    assert get(port, "/healthz")[0::2] == (503,
        "state store (sqlite): cannot be opened\n")
    assert scrape(port)[STORE_ERRORS] >= 1
    os.mkdir(srv.path("none"))		# a failed store is tried again
    wait_for(lambda: greeting(srv) == 220, timeout=10,
        what="the store opened at connect")
    assert get(port, "/healthz")[0::2] == (200, "ok\n")
    before = scrape(port)[STORE_ERRORS]
    n = srv.log().count("reload: configuration")
    with open(srv.conf) as f:
        conf = f.read()
    srv.write_config(conf.replace("/none/", "/gone/"))
    srv.sighup()
    wait_for(lambda: srv.log().count("reload: configuration") > n,
        what="the reload")
    assert greeting(srv) == 421
    assert get(port, "/healthz")[0::2] == (503,
        "state store (sqlite): cannot be opened\n")
    assert scrape(port)[STORE_ERRORS] > before


def test_process_start_time_stays_put(make_postern):
    """process_start_time_seconds is the same at every scrape of one
    process (a change would count as a restart), and it is the start."""
    t0 = time.time()
    srv, port = metrics_server(make_postern)
    seen = set()
    deadline = time.monotonic() + 2.5	# across whole seconds of the clocks
    while time.monotonic() < deadline:
        seen.add(scrape(port)["process_start_time_seconds"])
        time.sleep(0.02)
    assert len(seen) == 1, sorted(seen)
    assert abs(seen.pop() - t0) < 5


def test_messages_waiting_for_a_destination_slot_are_not_deferred(
        make_postern, upstreams):
    """queue destination-concurrency 1 and an upstream that holds the
    first message's dot: the two messages after it wait for the slot,
    counted as "waiting", neither "ready" nor "deferred" (no delivery of
    theirs was deferred)."""
    up = upstreams.scripted()
    up.stall_data = True
    mport = free_port()
    srv = make_postern(extra=["metrics listen 127.0.0.1:%d" % mport,
        "queue destination-concurrency 1",
        'action out relay "smtp://127.0.0.1:%d"' % up.port],
        rules=["match to domain relay.example action out"])
    wait_for(lambda: "metrics on http" in srv.log(), what="the endpoint")
    with srv.session() as c:
        c.hello()
        for i in range(3):
            send_message(c, "a@example.net", ["r%d@relay.example" % i],
                "Subject: %d\r\n\r\nhi\r\n" % i)
        c.send("QUIT"); c.expect(221)
    state = lambda m: {s: m.get('postern_queue_messages{state="%s"}' % s,
        0) for s in ("active", "ready", "waiting", "deferred")}

    def two_tried():		# both found the slot taken
        m = scrape(mport)
        s = state(m)
        return m if s["active"] == 1 and s["ready"] == 0 and \
            s["waiting"] + s["deferred"] == 2 else None
    m = wait_for(two_tried, timeout=10, what="two messages tried")
    assert state(m) == {"active": 1, "ready": 0, "waiting": 2,
        "deferred": 0}, state(m)
    assert m['postern_deliveries_total{action="relay",result="deferred"}'] \
        == 0
    up.released.set()
    wait_for(lambda: up.count() == 3, timeout=20, what="all three relayed")
    wait_for(lambda: sum(state(scrape(mport)).values()) == 0,
        what="an empty queue")
