"""bench/run's workloads, a handful of messages each, against postern only:
STARTTLS on every connection (full handshakes with an RSA or an ECDSA
certificate, and sessions resumed), relay through the queue to an upstream sink,
ten recipients in ten Maildirs, one message of a few MiB, idle connections,
the plain workload under a handler chain and under a Lua handler, and
postern with its metrics endpoint scraped as the workload runs.  The
numbers are bench/run's business; here every message must arrive where the
scenario sends it, checked apart from the scenario's own count.  No
timing is asserted."""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

from conftest import POSTERN_BIN, REPO

sys.path.insert(0, os.path.join(REPO, "bench"))
from benchlib import report, scenarios  # noqa: E402

MESSAGES = 6


def maildir_files(base):
    """[(path, bytes)] of every file in a Maildir new/ below base."""
    out = []
    for d, _, files in os.walk(base):
        if os.path.basename(d) == "new":
            for f in files:
                with open(os.path.join(d, f), "rb") as fh:
                    out.append((os.path.join(d, f), fh.read()))
    return out


def tls_lines(srv):
    """The "tls" lines of postern's log."""
    with open(os.path.join(srv.dir, "postern.log"), errors="replace") as f:
        return [line for line in f if " tls " in line]


def tls_resumed(srv):
    """How many "tls" lines of postern's log say resumed=yes."""
    return sum(" resumed=yes" in line for line in tls_lines(srv))


def tls_ciphers(srv):
    """The ciphers postern's log names for its handshakes."""
    return sorted({w[len("cipher="):] for line in tls_lines(srv)
                   for w in line.split() if w.startswith("cipher=")})


def inspect(name, srv, up):
    """What arrived, seen from outside the scenario's own checks."""
    if name == "relay":
        return {"upstream": up.count()}
    if srv.mailbase is None:
        return {"sink": srv.count()}
    files = maildir_files(srv.mailbase)
    return {"files": len(files),
            "tls_resumed": tls_resumed(srv) if name.startswith("starttls")
            else None,
            "tls_ciphers": tls_ciphers(srv) if name.startswith("starttls")
            else None,
            "maildirs": sorted({os.path.dirname(os.path.dirname(p))
                                for p, _ in files}),
            "subjects": sum(b"\nSubject: bench\r\n" in b or
                            b"\nSubject: bench\n" in b for _, b in files),
            "largest": max((len(b) for _, b in files), default=0)}


@pytest.fixture
def tmp_path():
    """A short folder for the cells: a spool's control socket path must fit
    a unix socket (at most 107 bytes, which postern checks at start), and
    pytest's own folders nest deep."""
    d = tempfile.mkdtemp(prefix="pb-", dir="/tmp")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bench"))
    cert, key = scenarios.make_cert(d)
    ec_cert, ec_key = scenarios.make_cert(d, "ecdsa")
    return scenarios.Ctx(
        mount=scenarios.Folder, tools=scenarios.build_tools(d + "/tools"),
        cert=cert, key=key, ec_cert=ec_cert, ec_key=ec_key,
        binary=POSTERN_BIN, messages=MESSAGES,
        concurrency=3, big_len=3 << 20, idle=200, timeout=120,
        deliver_timeout=60, upstream="tls-sink", servers=("postern",),
        inspect=inspect)


def run(name, ctx, tmp_path, servers=None):
    if servers is not None:
        ctx = scenarios.Ctx(**dict(ctx.__dict__, servers=servers))
    cells = [scenarios.run_cell(name, v, ctx, str(tmp_path))
             for v in scenarios.variants(name, ctx)]
    for res in cells:
        assert res["ok"], res
    return cells


@pytest.mark.parametrize("name", ["starttls", "starttls-ecdsa",
                                  "starttls-resume", "chain", "lua"])
def test_messages_land_in_the_maildir(ctx, tmp_path, name):
    cells = run(name, ctx, tmp_path)
    assert [c["server"] for c in cells] == (
        ["postern"] if name.startswith("starttls") else
        ["postern", "postern+" + name])
    for c in cells:
        assert c["landed"] == MESSAGES
        assert c["inspect"]["files"] == MESSAGES, c
        assert c["inspect"]["subjects"] == MESSAGES, c
        assert c["cpu_ms"] > 0 and c["mem"]["rss"] > 0, c


def test_chain_runs_in_alternating_pairs_and_reports_their_ratios(
        ctx, tmp_path):
    """chain's two cells run as pairs, at least PAIRED_MIN over the runs,
    each pair in the order opposite to the one before; the report gives
    the median of the pairs' ratios from the cells that really ran."""
    orders = [scenarios.ordered_variants("chain", ctx, 3, run)
              for run in range(3)]
    pairs = [p for o in orders for p, _ in o]
    assert pairs == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    firsts = [o[k][1][0] for o in orders for k in (0, 2)]
    assert firsts == ["postern", "postern+chain"] * 3
    assert [p for p, _ in scenarios.ordered_variants("relay", ctx, 3, 0)
            ] == [None]
    cells = []
    for pair, v in orders[0]:
        res = scenarios.run_cell("chain", v, ctx, str(tmp_path))
        assert res["ok"], res
        res["pair"] = pair
        cells.append(res)
    by = {(c["pair"], c["server"]): c["rate"] for c in cells}
    want = sorted(by[(p, "postern+chain")] / by[(p, "postern")]
                  for p in (1, 2))
    rows = report.rows_by_server(
        cells, "chain")
    _, med, _, _ = report.message_table(rows, "chain")
    text = "\n".join(report.chain_lines(rows, med, "chain"))
    assert "median of the 2 pairs' ratios is %+.0f%%" % (
        100.0 * (want[0] + want[1]) / 2 - 100.0) in text, text


def test_starttls_sink_counts_what_it_was_sent(ctx, tmp_path):
    (c,) = run("starttls", ctx, tmp_path, servers=("smtp-sink",))
    assert c["server"] == "tls-sink"
    assert c["inspect"] == {"sink": MESSAGES}, c
    assert (c["handshakes"], c["resumed"]) == (MESSAGES, 0), c


@pytest.mark.parametrize("name,key", [("starttls", "RSA-2048/RSA-PSS"),
                                      ("starttls-ecdsa", "EC-P-256/ECDSA")])
def test_starttls_terms_are_the_same_for_every_server(ctx, tmp_path, name,
                                                      key):
    """Full handshakes only, with the scenario's key, and the same terms
    at the sink as at postern: the client's word for it, and postern's
    log for the cipher."""
    cells = run(name, ctx, tmp_path, servers=("smtp-sink", "postern"))
    assert scenarios.like_for_like(cells) == [], cells
    sink, pst = cells
    assert sink["tls"] == pst["tls"], cells
    proto, cipher, group, peer_key, sig = pst["tls"].split("/")
    assert "%s/%s" % (peer_key, sig.split("+")[0]) == key, pst
    assert pst["inspect"]["tls_ciphers"] == [cipher], pst
    for c in cells:
        assert (c["handshakes"], c["resumed"], c["tls_differ"]) == (
            MESSAGES, 0, 0), c


def test_starttls_ecdsa_fails_a_server_with_another_key(ctx, tmp_path):
    """Handed the RSA pair, the ECDSA scenario's cell fails and says
    what was negotiated."""
    rctx = scenarios.Ctx(**dict(ctx.__dict__, ec_cert=ctx.cert,
                                ec_key=ctx.key))
    (v,) = scenarios.variants("starttls-ecdsa", rctx)
    res = scenarios.run_cell("starttls-ecdsa", v, rctx, str(tmp_path))
    assert not res["ok"], res
    assert res["why"] == "negotiated %s, not a EC-P-256 key" % res["tls"]
    assert "/RSA-2048/" in res["tls"], res


def test_like_for_like_fails_a_server_that_negotiated_otherwise(ctx,
                                                                tmp_path):
    """postern with the RSA pair, the sink with the ECDSA one: the
    second cell of the run fails, naming both."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (a,) = run("starttls", ctx, tmp_path / "a", servers=("postern",))
    (b,) = run("starttls-ecdsa", ctx, tmp_path / "b",
               servers=("smtp-sink",))
    assert scenarios.like_for_like([a, b]) == [b]
    assert a["ok"] and not b["ok"]
    assert b["why"] == "negotiated %s, postern negotiated %s" % (
        b["tls"], a["tls"]), b


@pytest.mark.parametrize("servers", [("postern",), ("smtp-sink",)])
def test_starttls_resume_resumes_all_but_each_sessions_first(ctx, tmp_path,
                                                            servers):
    """Three client sessions, six messages: three full handshakes, then
    three resumed ones, counted by the client and, for postern, in its
    own log ("tls ... resumed=yes")."""
    (c,) = run("starttls-resume", ctx, tmp_path, servers=servers)
    assert (c["handshakes"], c["resumed"]) == (
        MESSAGES, MESSAGES - ctx.concurrency), c
    if servers == ("postern",):
        assert c["inspect"]["tls_resumed"] == MESSAGES - ctx.concurrency, c
    else:
        assert c["inspect"] == {"sink": MESSAGES}, c


def test_starttls_resume_fails_a_server_that_does_not_resume(ctx, tmp_path):
    """A server with resumption off: the cell fails and says why."""
    name = "starttls-resume"
    (v,) = scenarios.variants(name, ctx)
    v[2]["extra"] = "tls session-lifetime off\n"
    res = scenarios.run_cell(name, v, ctx, str(tmp_path))
    assert not res["ok"] and res["resumed"] == 0, res
    assert res["why"] == "0 of %d handshakes resumed (want %d)" % (
        MESSAGES, MESSAGES - ctx.concurrency), res


def test_relay_counts_messages_at_the_upstream(ctx, tmp_path):
    (c,) = run("relay", ctx, tmp_path)
    assert c["inspect"] == {"upstream": MESSAGES}, c
    assert c["e2e_rate"] > 0


def test_ten_recipients_land_in_ten_maildirs(ctx, tmp_path):
    (c,) = run("rcpt10", ctx, tmp_path)
    got = c["inspect"]
    assert got["files"] == 10 * MESSAGES, c
    assert [os.path.basename(os.path.dirname(m)) for m in got["maildirs"]] \
        == sorted("%duser" % i for i in range(1, 11)), got


def test_big_message_lands_whole(ctx, tmp_path):
    (c,) = run("big", ctx, tmp_path)
    assert c["inspect"]["files"] == 1
    # Lines of 78 characters, stored with LF line ends.
    assert c["inspect"]["largest"] >= ctx.big_len // 80 * 79, c
    assert c["mb_s"] > 0


def test_idle_connections_are_all_greeted(ctx, tmp_path):
    (c,) = run("idle", ctx, tmp_path)
    assert c["greeted"] == ctx.idle, c
    assert c["rss_after"] >= c["rss_before"] > 0, c


def test_metrics_variant_scrapes_what_it_accepted(ctx, tmp_path):
    out = str(tmp_path / "SCRAPE.txt")
    mctx = scenarios.Ctx(**dict(ctx.__dict__, scrape_out=out))
    (c,) = run("rcpt10", mctx, tmp_path, servers=("postern-metrics",))
    assert c["server"] == "postern+metrics"
    assert c["inspect"]["files"] == 10 * MESSAGES, c
    with open(out) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("# the last of "), lines[:3]
    assert "postern_messages_accepted_total %d" % MESSAGES in lines, lines
