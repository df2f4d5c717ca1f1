#!/usr/bin/python3
"""
A small real milter (Debian's python3-milter, i.e. libmilter underneath) for
the integration tests of postern's milter client.

    milter_filter.py SOCKET MODE [ARG...] [--record FILE] [--noreply]

SOCKET is a libmilter socket spec: "inet:PORT@127.0.0.1" or "unix:/path".
MODE chooses what the filter does:

  continue              every callback says CONTINUE
  modify                at eom: insheader(0, X-Top: first), chgheader Subject
                        #1 to "changed by milter", chgheader X-Remove #1 to ""
                        (delete), addheader X-Milter: yes,
                        chgfrom <new-sender@localhost>, addrcpt
                        <carol@localhost>, delrcpt <bob@localhost>
  mods FILE             at eom: the modifications listed in the JSON FILE, in
                        order: ["add", name, value], ["ins", idx, name, value],
                        ["chg", name, idx, value], ["chgfrom", addr],
                        ["addrcpt", addr], ["delrcpt", addr],
                        ["quarantine", reason]
  reject-rcpt ADDR      RCPT of ADDR (case-insensitive, with or without <>)
                        is REJECT, other recipients CONTINUE
  tempfail-mail         MAIL is TEMPFAIL
  reject-connect        connect is REJECT
  replycode STAGE CODE XCODE TEXT
                        at STAGE (mail, rcpt or eom) setreply(CODE, XCODE,
                        TEXT) and REJECT (5xx) or TEMPFAIL (4xx)
  verdict STAGE V       at STAGE (connect helo mail rcpt data header eoh body
                        eom) answer V (continue accept reject tempfail
                        discard)
  by-header             at eom the message says what to do in its
                        "X-Milter-Verdict:" header: accept, reject, tempfail,
                        discard, or "reply CODE XCODE TEXT"; none: continue
  record [FILE]         CONTINUE everywhere, and --record FILE

--record FILE writes every callback received to FILE (JSON, rewritten after
each one): a list of connections, each a list of events
  ["negotiate"], ["connect", hostname, family, addr], ["helo", name]
  (["helo", name, tls_version, cipher] when the HELO came with the TLS
  macros {tls_version} and {cipher}),
  ["mail", from, params...], ["rcpt", to, params...], ["data"],
  ["header", name, value], ["eoh"], ["body", chunk_len],
  ["eom", body_len, body_sha256], ["abort"], ["close"]
(strings are decoded as latin-1, so every byte survives).
--noreply marks connect, helo, mail, rcpt, data, header, eoh and body
@Milter.noreply, so a MTA that offers the SMFIP_NR_* steps gets no replies
to them.

SIGTERM stops it (libmilter notices within 5 s); the tests use SIGKILL.
"""

import argparse
import hashlib
import json
import os
import socket
import sys
import threading

import Milter

STAGES = ("connect", "helo", "mail", "rcpt", "data", "header", "eoh",
    "body", "eom")
VERDICTS = {"continue": Milter.CONTINUE, "accept": Milter.ACCEPT,
    "reject": Milter.REJECT, "tempfail": Milter.TEMPFAIL,
    "discard": Milter.DISCARD}

MODIFY_PRESET = [
    ["ins", 0, "X-Top", "first"],
    ["chg", "Subject", 1, "changed by milter"],
    ["chg", "X-Remove", 1, ""],
    ["add", "X-Milter", "yes"],
    ["chgfrom", "<new-sender@localhost>"],
    ["addrcpt", "<carol@localhost>"],
    ["delrcpt", "<bob@localhost>"],
]

OPTS = None			# the parsed command line
_lock = threading.Lock()
_record = []			# connections, each a list of events
_seq = [0]


def _s(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, str):
        # pymilter decodes with surrogateescape: back to the bytes.
        return v.encode("utf-8", "surrogateescape").decode("latin-1")
    if isinstance(v, (tuple, list)):
        return [_s(x) for x in v]
    return v


def _bare(addr):
    a = addr.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1]
    return a.lower()


def _note(conn, ev):
    if OPTS.record is None:
        return
    with _lock:
        conn.append([_s(x) for x in ev])
        tmp = "%s.%d.tmp" % (OPTS.record, threading.get_ident())
        with open(tmp, "w") as f:
            json.dump(_record, f, indent=1)
        os.replace(tmp, OPTS.record)


class Filter(Milter.Base):
    def __init__(self):
        self.events = []
        with _lock:
            _record.append(self.events)
        self.reset()

    def reset(self):
        self.body_len = 0
        self.body_hash = hashlib.sha256()
        self.verdict_header = None

    def log(self, *msg):
        print("milter_filter:", *msg, file=sys.stderr, flush=True)

    def stage_answer(self, stage):
        """The answer for a stage from "verdict STAGE V"."""
        if OPTS.mode == "verdict" and OPTS.args[0] == stage:
            return VERDICTS[OPTS.args[1]]
        if OPTS.mode == "replycode" and OPTS.args[0] == stage:
            code, xcode, text = OPTS.args[1], OPTS.args[2], \
                " ".join(OPTS.args[3:])
            self.setreply(code, xcode, text)
            return Milter.REJECT if code.startswith("5") else Milter.TEMPFAIL
        return Milter.CONTINUE

    def negotiate(self, opts):
        _note(self.events, ["negotiate"])
        return super().negotiate(opts)

    def connect(self, hostname, family, hostaddr):
        fam = {socket.AF_INET: "inet", socket.AF_INET6: "inet6",
            socket.AF_UNIX: "unix"}.get(family, str(family))
        _note(self.events, ["connect", hostname, fam, hostaddr])
        if OPTS.mode == "reject-connect":
            return Milter.REJECT
        return self.stage_answer("connect")

    def hello(self, name):
        tls = [self.getsymval(m) for m in ("{tls_version}", "{cipher}")]
        _note(self.events, ["helo", name] + (tls if any(tls) else []))
        return self.stage_answer("helo")

    def envfrom(self, f, *params):
        self.reset()
        _note(self.events, ["mail", f] + list(params))
        if OPTS.mode == "tempfail-mail":
            return Milter.TEMPFAIL
        return self.stage_answer("mail")

    def envrcpt(self, to, *params):
        _note(self.events, ["rcpt", to] + list(params))
        if OPTS.mode == "reject-rcpt" and _bare(to) == _bare(OPTS.args[0]):
            return Milter.REJECT
        return self.stage_answer("rcpt")

    def data(self):
        _note(self.events, ["data"])
        return self.stage_answer("data")

    def header_bytes(self, fld, val):
        # Raw bytes: no utf-8 decoding on the way.
        return self.header(fld, val)

    def header(self, name, value):
        _note(self.events, ["header", name, value])
        if _s(name).lower() == "x-milter-verdict":
            self.verdict_header = _s(value).strip()
        return self.stage_answer("header")

    def eoh(self):
        _note(self.events, ["eoh"])
        return self.stage_answer("eoh")

    def body(self, chunk):
        self.body_len += len(chunk)
        self.body_hash.update(chunk)
        _note(self.events, ["body", len(chunk)])
        return self.stage_answer("body")

    def apply_mods(self, mods):
        for m in mods:
            op = m[0]
            if op == "add":
                self.addheader(m[1], m[2])
            elif op == "ins":
                self.addheader(m[2], m[3], int(m[1]))
            elif op == "chg":
                self.chgheader(m[1], int(m[2]), m[3])
            elif op == "chgfrom":
                self.chgfrom(m[1])
            elif op == "addrcpt":
                self.addrcpt(m[1])
            elif op == "delrcpt":
                self.delrcpt(m[1])
            elif op == "quarantine":
                self.quarantine(m[1])
            else:
                raise ValueError("unknown modification %r" % (m,))

    def eom(self):
        _note(self.events, ["eom", self.body_len,
            self.body_hash.hexdigest()])
        if OPTS.mode == "modify":
            self.apply_mods(MODIFY_PRESET)
        elif OPTS.mode == "mods":
            with open(OPTS.args[0]) as f:
                self.apply_mods(json.load(f))
        elif OPTS.mode == "by-header" and self.verdict_header:
            words = self.verdict_header.split()
            if words[0] == "reply":
                code, xcode, text = words[1], words[2], " ".join(words[3:])
                self.setreply(code, xcode, text)
                return Milter.REJECT if code.startswith("5") \
                    else Milter.TEMPFAIL
            return VERDICTS[words[0]]
        return self.stage_answer("eom")

    def abort(self):
        _note(self.events, ["abort"])
        return Milter.CONTINUE

    def close(self):
        _note(self.events, ["close"])
        return Milter.CONTINUE


class QuietFilter(Filter):
    """The same, with no replies asked for before eom (SMFIP_NR_*)."""

    @Milter.noreply
    def connect(self, hostname, family, hostaddr):
        return Filter.connect(self, hostname, family, hostaddr)

    @Milter.noreply
    def hello(self, name):
        return Filter.hello(self, name)

    @Milter.noreply
    def envfrom(self, f, *params):
        return Filter.envfrom(self, f, *params)

    @Milter.noreply
    def envrcpt(self, to, *params):
        return Filter.envrcpt(self, to, *params)

    @Milter.noreply
    def data(self):
        return Filter.data(self)

    @Milter.noreply
    def header(self, name, value):
        return Filter.header(self, name, value)

    @Milter.noreply
    def eoh(self):
        return Filter.eoh(self)

    @Milter.noreply
    def body(self, chunk):
        return Filter.body(self, chunk)


NARGS = {"continue": 0, "modify": 0, "mods": 1, "reject-rcpt": 1,
    "tempfail-mail": 0, "reject-connect": 0, "verdict": 2, "by-header": 0,
}


def main():
    global OPTS
    p = argparse.ArgumentParser()
    p.add_argument("socket")
    p.add_argument("mode")
    p.add_argument("args", nargs="*")
    p.add_argument("--record")
    p.add_argument("--noreply", action="store_true")
    OPTS = p.parse_args()
    if OPTS.mode == "record":
        if len(OPTS.args) > 1 or not (OPTS.args or OPTS.record):
            p.error("record FILE (or record --record FILE)")
        OPTS.record = OPTS.args[0] if OPTS.args else OPTS.record
    elif OPTS.mode == "replycode":
        if len(OPTS.args) < 4:
            p.error("replycode STAGE CODE XCODE TEXT")
    elif OPTS.mode not in NARGS or len(OPTS.args) != NARGS[OPTS.mode]:
        p.error("bad mode or arguments: %s %s" % (OPTS.mode, OPTS.args))
    if OPTS.mode == "verdict" and (OPTS.args[0] not in STAGES or
            OPTS.args[1] not in VERDICTS):
        p.error("verdict STAGE V")
    if OPTS.record:
        with open(OPTS.record, "w") as f:
            json.dump([], f)
    Milter.factory = QuietFilter if OPTS.noreply else Filter
    print("milter_filter: %s on %s" % (OPTS.mode, OPTS.socket),
        file=sys.stderr, flush=True)
    Milter.runmilter("postern-test", OPTS.socket, 60)


if __name__ == "__main__":
    main()
