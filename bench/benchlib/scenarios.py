"""The workloads beyond plain SMTP: STARTTLS (full handshakes with an
RSA-2048 or an ECDSA P-256 certificate, or sessions resumed as an MTA with
a session cache does), relay through the queue, ten
recipients, one big message, idle connections, and postern with a handler
chain or a Lua handler.  Each cell starts one server on a fresh folder (a
fresh loop mount in bench/run), drives it with bench/tools/smtpload (or
idle sockets), then checks that every message is at its destination:
Maildir files, or the count of the sink that received them.  Every wait is
bounded."""

import os
import re
import shutil
import subprocess
import tempfile
import time

from benchlib.common import (BENCH, LABEL, MSG_LEN, RCPT, SENDER, MemSampler,
    log, sh, wait_count)
from benchlib.idle import measure_idle, tree_rss_kb
from benchlib.servers import CLASSES

NAMES = ("plain", "starttls", "starttls-ecdsa", "starttls-resume", "relay",
    "rcpt10", "big", "idle", "chain", "lua")
# The fewest pairs of cells chain and lua run, whatever --runs says.
PAIRED_MIN = 5
TLS_NAMES = ("starttls", "starttls-ecdsa", "starttls-resume")
# The certificate key each TLS scenario's handshakes must show, as
# smtpload names it; every server of a scenario gets the same pair.
TLS_KEYS = {"starttls": "RSA-2048", "starttls-ecdsa": "EC-P-256",
    "starttls-resume": "RSA-2048"}
TOOLS = os.path.join(BENCH, "tools")
BIG_LEN = 50 * 1024 * 1024
RCPTS = 10
CHAIN_RULES = ("table users { %s }\n"
    "on connect { ratelimit 1000000/1m per ip }\n"
    "on rcpt { verify <users> }\n"
    "on eom { header max-size 64k }\n" % RCPT)
LUA_RULES = "on eom { lua \"bench.lua\" }\n"
LUA_SCRIPT = """\
-- bench/run: a small policy on the header block at end of message
function eom(f, state)
  local h = f.headers or ""
  if h:find("\\nX-Bench-Reject:", 1, true) then
    return {"reject", 550, "5.7.1", "refused by the bench policy"}
  end
  if #h > 65536 then
    return {"reject", 552, "5.3.4", "header block too large"}
  end
  return nil
end
"""


def build_tools(outdir):
	"""Compile smtpload and tlssink into outdir; return {name: path}."""
	os.makedirs(outdir, exist_ok=True)
	out = {}
	for name in ("smtpload", "tlssink"):
		out[name] = os.path.join(outdir, name)
		sh(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-Wshadow",
		    "-o", out[name], os.path.join(TOOLS, name + ".c"),
		    os.path.join(TOOLS, "benchio.c"), "-lssl", "-lcrypto",
		    "-pthread"], timeout=120)
	return out


def make_cert(outdir, kind="rsa"):
	"""A self-signed certificate for every TLS server alike: RSA-2048
	(kind "rsa") or ECDSA P-256 ("ecdsa"); (cert, key) paths."""
	cert = os.path.join(outdir, "cert.pem" if kind == "rsa" else
	    "ec-cert.pem")
	key = os.path.join(outdir, "key.pem" if kind == "rsa" else
	    "ec-key.pem")
	newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else [
	    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
	sh(["openssl", "req", "-x509"] + newkey + ["-nodes",
	    "-keyout", key, "-out", cert, "-days", "30", "-subj",
	    "/CN=bench.localhost"], timeout=60)
	for p in (cert, key):
		os.chmod(p, 0o644)	# Postfix's smtpd reads them too
	return cert, key


class Folder:
	"""A plain folder in place of a loop mount (the functional test)."""

	def __init__(self, workdir, size=0):
		self.path = os.path.join(workdir, "mnt")

	def open(self):
		os.makedirs(self.path)
		return self

	def close(self):
		pass


class Ctx:
	"""What every cell needs.  mount: a class like common.Mount or
	Folder; servers: the variants to run; sizes of the workloads."""

	def __init__(self, **kw):
		self.messages = 3000
		self.concurrency = 50
		self.big_len = BIG_LEN
		self.idle = 10000
		self.timeout = 300
		self.deliver_timeout = 180
		self.img_size = 4 << 30
		self.binary = None
		self.upstream = "smtp-sink"
		self.servers = ("smtp-sink", "postfix", "postern")
		self.ec_cert = self.ec_key = None	# starttls-ecdsa's pair
		self.inspect = None	# f(name, server, upstream) -> a value
		self.scrape_out = None	# postern-metrics' last scrape
		self.__dict__.update(kw)


def variants(name, ctx):
	"""(label, server class, opts) of each cell of scenario name."""
	base = {"tools": ctx.tools, "scrape_out": ctx.scrape_out}
	if ctx.binary:
		base["binary"] = ctx.binary
	sink = "tls-sink" if name in TLS_NAMES else "smtp-sink"
	out = []
	if name in ("chain", "lua"):
		if "postern" in ctx.servers:
			out.append(("postern", "postern", dict(base)))
			extra = dict(base, extra=CHAIN_RULES if name == "chain"
			    else LUA_RULES)
			if name == "lua":
				extra["files"] = {"bench.lua": LUA_SCRIPT}
			out.append(("postern+" + name, "postern", extra))
		return out
	for s in ctx.servers:
		kind = sink if s == "smtp-sink" else s
		out.append((LABELS.get(kind, kind), kind, dict(base)))
	return out


def ordered_variants(name, ctx, runs, run):
	"""[(pair, variant)] of one run of scenario name.  chain and lua
	compare postern with itself, a difference of a few per cent on
	shared cores: their two cells run as pairs, at least
	PAIRED_MIN pairs over all the runs, each pair in the order
	opposite to the one before (ABBA), so that neither side always runs
	first, and the report takes the median of the pairs' ratios."""
	vs = variants(name, ctx)
	if name not in ("chain", "lua") or len(vs) != 2:
		return [(None, v) for v in vs]
	per_run = -(-PAIRED_MIN // runs)
	out = []
	for j in range(per_run):
		pair = run * per_run + j
		order = vs if pair % 2 == 0 else vs[::-1]
		out += [(pair + 1, v) for v in order]
	return out


LABELS = dict(LABEL, **{"tls-sink": "tls-sink"})


def server_opts(name, kind, opts, ctx, upstream_port):
	"""Fill in what scenario name changes for a server of kind."""
	if name in TLS_NAMES and kind != "smtp-sink":
		opts["cert"], opts["key"] = (ctx.ec_cert, ctx.ec_key) if \
		    name == "starttls-ecdsa" else (ctx.cert, ctx.key)
		opts["cert_type"] = "ecdsa" if name == "starttls-ecdsa" else \
		    "rsa"
	if kind in ("postern", "postern-metrics"):
		if name == "relay":
			opts["rules"] = ("action up relay \"smtp://127.0.0.1:%d\"\n"
			    "match to domain bench.test action up\n" %
			    upstream_port)
		if name == "big":
			opts["extra"] = "limit message-size 100M\n"
		if name == "idle":
			opts["connections"] = ctx.idle + 100
			opts["nofile"] = ctx.idle + 4000
	elif kind == "postfix":
		p = opts.setdefault("params", {})
		if name == "relay":
			p.update({"relayhost": "[127.0.0.1]:%d" % upstream_port,
			    "virtual_mailbox_domains": "",
			    "virtual_mailbox_maps": "",
			    "relay_domains": "bench.test"})
		if name == "rcpt10":
			p["virtual_mailbox_maps"] = "inline:{ %s }" % ", ".join(
			    "%d%s=%duser/Maildir/" % (i, RCPT, i)
			    for i in range(1, RCPTS + 1))
		if name == "big":
			# virtual(8) refuses to start with a mailbox limit
			# below the message size limit.
			p["message_size_limit"] = str(100 << 20)
			p["virtual_mailbox_limit"] = "0"
	elif kind == "smtp-sink" and name == "idle":
		opts["sessions"] = ctx.idle + 100
		opts["nofile"] = ctx.idle + 1000
	return opts


# ------------------------------------------------------------------ cells

def run_cell(name, variant, ctx, workroot):
	"""One measurement of scenario name on a fresh mount; a dict."""
	label, kind, opts = variant
	res = {"scenario": name, "server": label, "ok": False}
	wd = tempfile.mkdtemp(prefix="cell-", dir=workroot)
	os.chmod(wd, 0o755)	# Postfix's unprivileged daemons walk it
	m = ctx.mount(wd, ctx.img_size)
	srv = up = mem = None
	try:
		m.open()
		up_port = None
		if name == "relay" and kind != "smtp-sink":
			up = CLASSES[ctx.upstream](m.path, {"tools": ctx.tools,
			    "cert": ctx.cert, "key": ctx.key})
			up.start()
			up_port = up.port
		srv = CLASSES[kind](m.path, server_opts(name, kind, opts,
		    ctx, up_port))
		srv.start()
		mem = MemSampler(srv.rootpid)
		mem.start()
		MEASURE[name](srv, up, ctx, res)
		if ctx.inspect is not None:
			res["inspect"] = ctx.inspect(name, srv, up)
		if not res["ok"] and hasattr(srv, "maillog_tail"):
			res["why"] += " | maillog: " + " | ".join(
			    srv.maillog_tail(2))[:400]
		res["mem"] = mem.stop()
		mem = None
		if res.get("n"):
			res["cpu_ms"] = res["mem"]["cpu_s"] * 1000.0 / res["n"]
	except (RuntimeError, OSError, subprocess.SubprocessError) as e:
		res["why"] = str(e).strip()[:300]
	finally:
		if mem is not None:
			mem.stop()
		for s in (srv, up):
			if s is not None:
				try:
					s.stop()
				except Exception as e:	# keep cleaning up
					log("stop %s: %s" % (label, e))
		m.close()
		if not os.path.ismount(m.path):
			shutil.rmtree(wd, ignore_errors=True)
	return res


def smtpload(srv, ctx, n, conc, tls=False, rcpts=1, length=MSG_LEN,
    resume=False, counts=None):
	"""Run the load client; (start, end, error text or None).  counts, a
	dict: gets what smtpload reports (handshakes, resumed)."""
	cmd = [ctx.tools["smtpload"], "-m", str(n), "-s", str(conc), "-r",
	    str(rcpts), "-l", str(length), "-f", SENDER, "-T", RCPT]
	if tls:
		cmd.append("-t")
	if resume:
		cmd.append("-R")
	cmd.append("127.0.0.1:%d" % srv.port)
	t0 = time.monotonic()
	try:
		r = subprocess.run(cmd, capture_output=True, text=True,
		    timeout=ctx.timeout)
		err = None if r.returncode == 0 and not r.stderr.strip() else \
		    "smtpload exit %d: %s" % (r.returncode,
		    (r.stderr.strip().splitlines() or [""])[-1])
		if counts is not None:
			counts.update((k, int(v)) for k, v in re.findall(
			    r"(handshakes|resumed|tls_differ)=(\d+)", r.stdout))
			m = re.search(r"\btls=(\S+)", r.stdout)
			if m:
				counts["tls"] = m.group(1)
	except subprocess.TimeoutExpired:
		err = "smtpload timed out after %ds" % ctx.timeout
	return t0, time.monotonic(), err


def wait_sink(sink, want, deadline_s, stall_s):
	"""Like wait_count, on a sink's message counter."""
	end = time.monotonic() + deadline_s
	last, since = -1, time.monotonic()
	while True:
		n = sink.count() or 0
		now = time.monotonic()
		if n >= want:
			time.sleep(0.3)
			return sink.count(), now
		if n != last:
			last, since = n, now
		if now > end or now - since > stall_s:
			return n, None
		time.sleep(0.05)


def landed(srv, ctx, want, failed):
	"""Messages (or Maildir files) found for srv and when the last came."""
	stall = 5 if failed else 60
	if srv.mailbase is None:
		return wait_sink(srv, want, ctx.deliver_timeout, stall)
	return wait_count(srv.mailbase, want, ctx.deliver_timeout, stall)


def finish(res, t0, t1, n, want, got, t2, err):
	res.update({"n": n, "secs": t1 - t0, "rate": n / (t1 - t0),
	    "landed": got})
	if t2 is not None:
		res["e2e_rate"] = n / (t2 - t0)
	if err:
		res["why"] = err
	elif got != want:
		res["why"] = "%s of %d landed" % (got, want)
	else:
		res["ok"] = True


def measure_messages(srv, up, ctx, res, tls=False, rcpts=1, resume=False):
	n = ctx.messages
	counts = {}
	t0, t1, err = smtpload(srv, ctx, n, ctx.concurrency, tls, rcpts,
	    resume=resume, counts=counts)
	want = n * rcpts if srv.mailbase is not None else n
	got, t2 = landed(srv, ctx, want, err)
	finish(res, t0, t1, n, want, got, t2, err)
	if tls:
		res.update(counts)
	if not err and srv.mailbase is not None and rcpts > 1:
		per = per_maildir(srv.mailbase)
		if sorted(per.values()) != [n] * rcpts:
			res["ok"] = False
			res["why"] = "per Maildir: %s" % per


def per_maildir(base):
	"""{Maildir folder: files in new/ and cur/} below base."""
	out = {}
	for dirpath, dirnames, filenames in os.walk(base):
		if os.path.basename(dirpath) in ("new", "cur"):
			k = os.path.dirname(dirpath)
			out[k] = out.get(k, 0) + len(filenames)
	return out


def check_terms(name, res):
	"""A TLS cell fails unless every full handshake negotiated the same
	terms and they show the scenario's certificate key."""
	if not res["ok"]:
		return
	terms = res.get("tls", "none").split("/")
	if res.get("tls_differ", 0):
		res["why"] = "%d handshakes negotiated other terms than %s" % (
		    res["tls_differ"], res.get("tls"))
	elif len(terms) != 5 or terms[3] != TLS_KEYS[name]:
		res["why"] = "negotiated %s, not a %s key" % (res.get("tls"),
		    TLS_KEYS[name])
	else:
		return
	res["ok"] = False


def like_for_like(cells):
	"""The cells of one TLS scenario and run, every server: each whose
	negotiated terms differ from the first good cell's fails, so a table
	never compares handshakes of different kinds; the list of those."""
	good = [c for c in cells if c["ok"] and c.get("tls")]
	failed = [c for c in good[1:] if c["tls"] != good[0]["tls"]]
	for c in failed:
		c["ok"] = False
		c["why"] = "negotiated %s, %s negotiated %s" % (c["tls"],
		    good[0]["server"], good[0]["tls"])
	return failed


def measure_starttls(srv, up, ctx, res):
	measure_messages(srv, up, ctx, res, tls=True)
	check_terms("starttls", res)


def measure_starttls_ecdsa(srv, up, ctx, res):
	measure_messages(srv, up, ctx, res, tls=True)
	check_terms("starttls-ecdsa", res)


def measure_starttls_resume(srv, up, ctx, res):
	"""Each client thread offers its previous session: every handshake
	after a thread's first must have resumed, or the cell fails (a
	server that does not resume would be measured doing full ones)."""
	measure_messages(srv, up, ctx, res, tls=True, resume=True)
	check_terms("starttls-resume", res)
	want = ctx.messages - min(ctx.concurrency, ctx.messages)
	if res["ok"] and res.get("resumed", 0) < want:
		res["ok"] = False
		res["why"] = "%s of %d handshakes resumed (want %d)" % (
		    res.get("resumed"), res.get("handshakes", 0), want)


def measure_rcpt10(srv, up, ctx, res):
	measure_messages(srv, up, ctx, res, rcpts=RCPTS)


def measure_relay(srv, up, ctx, res):
	"""Accepted/s at the client, delivered/s counted at the upstream."""
	n = ctx.messages
	t0, t1, err = smtpload(srv, ctx, n, ctx.concurrency)
	got, t2 = wait_sink(up or srv, n, ctx.deliver_timeout,
	    5 if err else 60)
	finish(res, t0, t1, n, n, got, t2, err)


def body_lf_octets(length):
	"""The octets smtpload's body of length takes in a Maildir file: its
	lines of 78 characters, each ending in LF rather than CRLF."""
	return length // 80 * 79


def measure_big(srv, up, ctx, res):
	"""One message of big_len octets over one connection."""
	res["rss_before"] = tree_rss_kb(srv.rootpid())
	t0, t1, err = smtpload(srv, ctx, 1, 1, length=ctx.big_len)
	got, t2 = landed(srv, ctx, 1, err)
	finish(res, t0, t1, 1, 1, got, t2, err)
	res["mb_s"] = ctx.big_len / 1048576.0 / (t1 - t0)
	if t2 is not None:
		res["e2e_mb_s"] = ctx.big_len / 1048576.0 / (t2 - t0)
	if res["ok"] and srv.mailbase is not None:
		size = max(os.path.getsize(os.path.join(d, f))
		    for d, _, fs in os.walk(srv.mailbase) for f in fs
		    if os.path.basename(d) == "new")
		res["size"] = size
		if size < body_lf_octets(ctx.big_len):
			res["ok"] = False
			res["why"] = "Maildir file of %d octets" % size


MEASURE = {"starttls": measure_starttls,
    "starttls-ecdsa": measure_starttls_ecdsa,
    "starttls-resume": measure_starttls_resume, "relay": measure_relay,
    "rcpt10": measure_rcpt10, "big": measure_big,
    "chain": measure_messages, "lua": measure_messages,
    "idle": measure_idle}
