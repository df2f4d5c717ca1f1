"""The idle scenario: N connections that each read the greeting and then
say nothing; memory per connection is the server tree's RSS growth over
the greeted connections.  Every wait is bounded."""

import errno
import resource
import selectors
import socket
import time

from benchlib.common import pss_kb, status_kb, tree


def tree_rss_kb(root):
	return sum(status_kb(p, ("VmRSS",)).get("VmRSS", 0)
	    for p in tree(root))


def tree_pss_kb(root):
	"""PSS shares each shared page out among the processes mapping it:
	fairer than the RSS sum to a server of many processes."""
	return sum(pss_kb(p) for p in tree(root))


def raise_nofile(n):
	soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
	if soft < n:	# root may raise the hard limit too
		resource.setrlimit(resource.RLIMIT_NOFILE, (n, max(hard, n)))
	return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


PENDING_MAX = 256	# connections opened but not yet greeted


def open_idle(port, n, deadline_s, stall_s):
	"""Open n connections and read each one's greeting, at most
	PENDING_MAX waiting at a time (more would overflow the server's
	listen queue, and the kernel's SYN retries would back off for
	seconds); return the open sockets and how many got a 220."""
	sel = selectors.DefaultSelector()
	socks = []
	greeted = 0
	end = time.monotonic() + deadline_s
	since = time.monotonic()
	try:
		while greeted < n:
			while len(sel.get_map()) < PENDING_MAX and \
			    len(socks) < n:
				socks.append(connect_one(port, sel))
			now = time.monotonic()
			if not sel.get_map() or now > end or \
			    now - since > stall_s:
				break
			for key, _ in sel.select(0.5):
				sel.unregister(key.fileobj)
				if greeting(key.fileobj):
					greeted += 1
					since = time.monotonic()
	finally:
		sel.close()
	return socks, greeted


def connect_one(port, sel):
	s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	s.setblocking(False)
	if s.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS):
		sel.register(s, selectors.EVENT_READ)
	return s


def greeting(s):
	try:
		return s.recv(512).startswith(b"220")
	except OSError:
		return False


def measure_idle(srv, up, ctx, res):
	"""RSS of the server tree before and with ctx.idle idle sessions."""
	res["limit_nofile"] = raise_nofile(ctx.idle + 200)
	time.sleep(0.5)
	root = srv.rootpid()
	before = tree_rss_kb(root)
	pss_before = tree_pss_kb(root)
	t0 = time.monotonic()
	socks, greeted = open_idle(srv.port, ctx.idle, 180, 10)
	try:
		res["secs"] = time.monotonic() - t0
		time.sleep(1.0)	# let the last sessions settle
		after = tree_rss_kb(root)
		pss_after = tree_pss_kb(root)
		res.update({"n": 0, "conns": ctx.idle, "greeted": greeted,
		    "rss_before": before, "rss_after": after,
		    "pss_before": pss_before, "pss_after": pss_after,
		    "nproc": len(tree(root))})
		if greeted:
			res["kb_per_conn"] = (after - before) / float(greeted)
			res["pss_kb_per_conn"] = (pss_after - pss_before) / \
			    float(greeted)
		if greeted == ctx.idle:
			res["ok"] = True
		elif srv.name == "postfix" and greeted:
			# One smtpd per session, at most default_process_limit.
			res["ok"] = True
			res["note"] = "greeted %d of %d (process limit)" % (
			    greeted, ctx.idle)
		else:
			res["why"] = "greeted %d of %d" % (greeted, ctx.idle)
	finally:
		for s in socks:
			s.close()
