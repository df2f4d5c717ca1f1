"""RESULTS.md sections for the scenarios beyond plain SMTP: one table per
scenario, medians over the runs, a cell with any failed run FAILED."""

import statistics

TITLES = {
	"starttls": "STARTTLS on every connection",
	"starttls-ecdsa": "STARTTLS on every connection, ECDSA P-256 "
		"certificate",
	"starttls-resume": "STARTTLS on every connection, sessions resumed",
	"relay": "Relay through the queue to an upstream smtp-sink",
	"rcpt10": "Ten recipients per message, ten Maildirs",
	"big": "One big message",
	"idle": "Idle connections",
	"chain": "Handler chain: ratelimit (connect), verify (rcpt), "
			 "header max-size (eom)",
	"lua": "A Lua handler at eom",
}

HOW = {
	"starttls": "smtpload -t: a new connection per message, EHLO, STARTTLS, "
		"EHLO, MAIL, RCPT, DATA, QUIT; one RSA-2048 self-signed "
		"certificate for all. The sink is bench/tools/tlssink (the TLS "
		"dialogue alone, messages dropped): the client's own ceiling. "
		"Postfix: smtpd_tls_security_level = may. No session resumption "
		"(every connection a full handshake).",
	"starttls-ecdsa": "As starttls (full handshakes, the same dialogue), "
		"but one self-signed ECDSA P-256 certificate for all: postern "
		"`tls cert ... key ...`, Postfix `smtpd_tls_chain_files = key, "
		"cert`, tlssink -c/-k. The negotiated column is what smtpload saw "
		"in the full handshakes (protocol/cipher/group/server key/"
		"signature); a cell fails if its handshakes differ among "
		"themselves, show another key than the scenario's, or differ from "
		"another server's in the same run.",
	"starttls-resume": "smtpload -t -R: as starttls, but each of the "
		"client's sessions offers the TLS session of its previous "
		"connection (as an MTA with a TLS session cache does), so every "
		"handshake after a session's first is an abbreviated one, without "
		"the RSA operation. postern: `tls session-lifetime` at its "
		"default (1h, tickets); Postfix: its defaults (TLS 1.3 tickets, "
		"keys from tlsmgr); tlssink: OpenSSL's. A cell fails unless every "
		"handshake but each session's first resumed; the resumed column "
		"counts them.",
	"relay": "smtpload, a new connection per message; postern `action "
		"relay \"smtp://127.0.0.1:PORT\"`, Postfix `relayhost = "
		"[127.0.0.1]:PORT`, both to an smtp-sink on the same machine, "
		"counted there (-c). Accepted = messages / client time; delivered "
		"= messages / time until the upstream had them all. The smtp-sink "
		"row is the client straight to the sink.",
	"rcpt10": "smtpload -r 10: recipients 1user .. 10user@bench.test, "
		"one Maildir each (Postfix: virtual_mailbox_maps inline: map); "
		"every Maildir must hold every message. msgs/s counts messages, "
		"not deliveries (x10).",
	"big": "smtpload -m 1 -s 1 with a body of BIG octets (lines of 78 "
		"characters); MB/s = MiB / time; the Maildir file must hold the "
		"whole body. postern `limit message-size 100M`, Postfix "
		"message_size_limit 100 MiB and virtual_mailbox_limit 0. RSS sum before: "
	    "the server tree before the message; VmHWM sum: each process's "
	    "own peak, summed (exact for one process, an upper bound for "
	    "several).",
	"idle": "N connections opened from one process, each reads its 220 "
		"greeting and says nothing; KiB per connection = growth of the "
		"server tree's RSS sum (1 s after the last greeting) / greeted "
		"connections. postern: `limit connections` and "
		"`connections-per-ip` above N, nofile raised; smtp-sink: -m above "
		"N. Postfix runs one smtpd per session, at most "
		"default_process_limit (200) at once: the others wait unanswered "
		"in the listen queue.",
	"chain": "The plain workload (smtpload, new connection per message) "
		"through postern with and without `on connect { ratelimit "
		"1000000/1m per ip }`, `on rcpt { verify <users> }`, `on eom { "
		"header max-size 64k }` (state store: sqlite in the spool, the "
		"default), in the same sitting.",
	"lua": "The plain workload through postern with and without `on eom { "
		"lua \"bench.lua\" }` (a function that looks at facts.headers), "
		"in the same sitting.",
}


def fmt(v, spec="{:,.0f}"):
	return "-" if v is None else spec.format(v)


def fmt_kib(kb):
	return "-" if not kb else "%.1f MiB" % (kb / 1024.0)


def median_of(runs, key):
	vals = [r[key] for r in runs if r.get(key) is not None]
	return statistics.median(vals) if vals else None


def rows_by_server(cells, name):
	"""[(label, runs)] in the order the cells ran."""
	order, runs = [], {}
	for c in cells:
		if c.get("scenario") != name:
			continue
		if c["server"] not in runs:
			order.append(c["server"])
			runs[c["server"]] = []
		runs[c["server"]].append(c)
	return [(s, runs[s]) for s in order]


def message_table(rows, name):
	"""msgs/s accepted and delivered, CPU, peak RSS, per server."""
	big = name == "big"
	unit = "MiB/s" if big else "msgs/s"
	rate, e2e = ("mb_s", "e2e_mb_s") if big else ("rate", "e2e_rate")
	hdr = ["server", "%s accepted" % unit,
		   "%s %s" % (unit, "delivered upstream" if name == "relay"
					  else "delivered"),
		   "CPU ms/msg", "peak RSS sum", "found (last run)"]
	if big:	# is memory flat in the size of the message?
		hdr[4:4] = ["RSS sum before", "VmHWM sum"]
	tls = name.startswith("starttls")
	if tls:
		hdr += ["resumed handshakes (last run)", "negotiated (last run)"]
	out = ["| " + " | ".join(hdr) + " |", "|---|" + "---:|" * (
	    len(hdr) - 1)]
	med = {}
	notes = []
	for label, runs in rows:
		bad = [r for r in runs if not r["ok"]]
		resumed = " %s of %s | %s |" % (runs[-1].get("resumed", "-"),
		    runs[-1].get("handshakes", "-"), runs[-1].get("tls", "-")) \
		    if tls else ""
		if bad:
			out.append("| %s | FAILED | FAILED |%s - | - | %s |%s" % (
				label, " - | - |" if big else "",
				runs[-1].get("landed"), resumed))
			notes.append("%s: %s" % (label, bad[0].get("why", "failed")))
			continue
		m = {k: median_of(runs, k) for k in (rate, e2e, "cpu_ms")}
		m["rss"] = max(r["mem"]["rss"] for r in runs if "mem" in r)
		med[label] = m
		spec = "{:,.1f}" if big else "{:,.0f}"
		extra = ""
		if big:
			extra = " %s | %s |" % (fmt_kib(max(r["rss_before"]
			    for r in runs)), fmt_kib(max(r["mem"]["hwm_sum"]
			    for r in runs)))
		out.append("| %s | %s | %s | %s |%s %s | %s |%s" % (
			label, fmt(m[rate], spec), fmt(m[e2e], spec),
			fmt(m["cpu_ms"], "{:.2f}"), extra, fmt_kib(m["rss"]),
			runs[-1].get("landed"), resumed))
	return out, med, notes, (rate, e2e)


def ratio_line(med, keys, a, b, what, mem=True):
	if a not in med or b not in med:
		return []
	parts = []
	for k in keys:
		x, y = med[a].get(k), med[b].get(k)
		parts.append("%.2f" % (x / y) if x and y else "-")
	rss = ("%.3f" % (med[a]["rss"] / med[b]["rss"]) if med[b]["rss"]
		   else "-") if mem else ""
	return ["| %s | %s | %s | - |%s %s | |" % (
		"**%s**" % what if mem else what, parts[0], parts[1],
		" | |" if "mb_s" in keys else "", rss)]


def sink_lines(med, keys, name):
	"""The sink's ratio to Postfix, which bounds any server's on these
	cores, and postern's share of the sink."""
	sink = "tls-sink" if name.startswith("starttls") else "smtp-sink"
	return (ratio_line(med, keys, sink, "Postfix", "%s / Postfix (the "
					   "bound)" % sink, mem=False) +
			ratio_line(med, keys, "postern", sink, "postern / %s" % sink,
					   mem=False))


def chain_lines(rows, med, name):
	base, var = med.get("postern"), med.get("postern+" + name)
	if not base or not var:
		return []
	out = ["", "postern+%s, medians of the columns: %.0f%% of the no-chain "
			"rate accepted (%+.0f%%), %.0f%% delivered; CPU %.2f against "
			"%.2f ms per message." % (
				name, 100.0 * var["rate"] / base["rate"],
				100.0 * var["rate"] / base["rate"] - 100.0,
				100.0 * (var["e2e_rate"] or 0) / (base["e2e_rate"] or 1),
				var["cpu_ms"] or 0, base["cpu_ms"] or 0)]
	ratios = paired_ratios(dict(rows), "postern", "postern+" + name)
	if ratios:
		out += ["", "Paired (each pair ran back to back, in alternating "
			"order): the median of the %d pairs' ratios is %+.0f%%; "
			"the pairs: %s." % (len(ratios),
				100.0 * statistics.median(ratios) - 100.0,
				", ".join("%+.0f%%" % (100.0 * r - 100.0)
					for r in ratios))]
	return out


def paired_ratios(runs, a, b):
	"""The rate of b over that of a, for each pair both ran whole."""
	by = {}
	for label in (a, b):
		for r in runs.get(label, []):
			if r["ok"] and r.get("pair") and r.get("rate"):
				by.setdefault(r["pair"], {})[label] = r["rate"]
	return [p[b] / p[a] for _, p in sorted(by.items()) if len(p) == 2]


def idle_table(rows):
	out = ["| server | connections greeted | RSS sum before | RSS sum with "
	    "them | KiB per connection (RSS) | KiB per connection (PSS) | "
	    "processes |", "|---|---:|---:|---:|---:|---:|---:|"]
	notes = []
	for label, runs in rows:
		ok = [r for r in runs if r["ok"]]
		if len(ok) != len(runs):
			bad = [r for r in runs if not r["ok"]][0]
			out.append("| %s | FAILED | - | - | - | - | - |" % label)
			notes.append("%s: %s" % (label, bad.get("why", "failed")))
			continue
		last = ok[-1]
		out.append("| %s | %d of %d | %s | %s | %s | %s | %s |" % (
		    label, last["greeted"], last["conns"],
		    fmt_kib(last["rss_before"]), fmt_kib(last["rss_after"]),
		    fmt(median_of(ok, "kb_per_conn"), "{:.2f}"),
		    fmt(median_of(ok, "pss_kb_per_conn"), "{:.2f}"),
		    last["nproc"]))
	return out, notes


def scenario_sections(cells, names, info):
	"""Markdown lines for every scenario in names that has cells.  info:
	the figures the descriptions mention (messages, c, big, idle)."""
	out = []
	for name in names:
		rows = rows_by_server(cells, name)
		if not rows:
			continue
		how = HOW[name].replace("BIG", "{:,}".format(info["big"]))
		how = how.replace("N connections", "%d connections" % info["idle"])
		out += ["## %s" % TITLES[name], ""]
		if name not in ("big", "idle"):
			how += " %d messages of %d octets, %d sessions at once." % (
				info["messages"], info["msg_len"], info["c"])
		out += [how, ""]
		if name == "idle":
			lines, notes = idle_table(rows)
			out += lines
		else:
			lines, med, notes, keys = message_table(rows, name)
			out += lines
			out += ratio_line(med, keys, "postern", "Postfix",
							  "postern / Postfix")
			if name != "big":	# smtp-sink is no bound on one message
				out += sink_lines(med, keys, name)
			if name in ("chain", "lua"):
				out += chain_lines(rows, med, name)
		if notes:
			out += ["", "Failures:", ""] + ["- " + n for n in notes]
		out.append("")
	return out
