#!/usr/bin/python3
"""A tiny authoritative DNS server on 127.0.0.1, UDP and TCP on one port,
for test_smtpc and the integration tests.

--zone is JSON: {"name": {"MX": [[pref, "host"], ...], "A": ["ip"],
"AAAA": ["ip6"]}}.  Names not in the zone get NXDOMAIN; a known name
without the asked type gets an empty NOERROR.  Over UDP, as RFC 1035 4.2.1
says, an answer over 512 octets is cut to its header and question with the
TC bit; a name may also say "tc": ["MX", "A"] (those types come truncated
with no records over UDP), "tcpartial": true (truncated with only the
first record), "badcount": true (one more answer record counted than
given, over both).  Over TCP every answer is whole.  --log FILE gets a
line "udp|tcp NAME TYPE" per query.  Prints READY.
"""
import argparse
import json
import os
import socket
import struct
import threading

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--zone", required=True)
ap.add_argument("--log", default=None)
args = ap.parse_args()
zone = {k.lower().rstrip("."): v for k, v in json.loads(args.zone).items()}
TYPES = {1: "A", 15: "MX", 28: "AAAA"}
loglock = threading.Lock()


def enc_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def parse_qname(msg, off):
    labels = []
    while msg[off]:
        n = msg[off]
        labels.append(msg[off + 1:off + 1 + n].decode())
        off += 1 + n
    return ".".join(labels), off + 1


def answer(msg, tcp):
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    name, off = parse_qname(msg, 12)
    qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
    question = msg[12:off + 4]
    key = name.lower()
    if args.log:
        with loglock, open(args.log, "a") as f:
            f.write("%s %s %s\n" % ("tcp" if tcp else "udp", key,
                                    TYPES.get(qtype, qtype)))
    rrs = []
    rcode = 0
    ent = zone.get(key, {})
    if key not in zone:
        rcode = 3
    else:
        for v in ent.get(TYPES.get(qtype, "?"), []):
            if qtype == 15:
                rdata = struct.pack("!H", v[0]) + enc_name(v[1])
            elif qtype == 1:
                rdata = socket.inet_pton(socket.AF_INET, v)
            else:
                rdata = socket.inet_pton(socket.AF_INET6, v)
            rrs.append(enc_name(name) + struct.pack("!HHIH", qtype, 1, 60,
                                                     len(rdata)) + rdata)
    tc = 0
    if not tcp and TYPES.get(qtype) in ent.get("tc", []):
        rrs, tc = [], 0x0200
    elif not tcp and ent.get("tcpartial"):
        rrs, tc = rrs[:1], 0x0200
    elif not tcp and 12 + len(question) + sum(map(len, rrs)) > 512:
        rrs, tc = [], 0x0200
    count = len(rrs) + (1 if ent.get("badcount") else 0)
    hdr = struct.pack("!HHHHHH", qid, 0x8180 | tc | rcode | (flags & 0x0100),
                      1, count, 0, 0)
    return hdr + question + b"".join(rrs)


def tcp_conn(c):
    """RFC 1035 4.2.2: each message after a two-octet length."""
    c.settimeout(10)
    try:
        while True:
            hdr = c.recv(2)
            if len(hdr) < 2:
                return
            n = struct.unpack("!H", hdr)[0]
            msg = b""
            while len(msg) < n:
                b = c.recv(n - len(msg))
                if not b:
                    return
                msg += b
            a = answer(msg, True)
            c.sendall(struct.pack("!H", len(a)) + a)
    except Exception:
        pass
    finally:
        c.close()


def tcp_loop(t):
    while True:
        c, _ = t.accept()
        threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()


s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", args.port))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", args.port))
t.listen(16)
threading.Thread(target=tcp_loop, args=(t,), daemon=True).start()
try:
    os.write(1, b"READY\n")
except OSError:
    pass
while True:
    msg, peer = s.recvfrom(4096)
    try:
        s.sendto(answer(msg, False), peer)
    except Exception:
        pass
