#!/usr/bin/python3
"""A tiny authoritative DNS server on 127.0.0.1 UDP for test_smtpc.

--zone is JSON: {"name": {"MX": [[pref, "host"], ...], "A": ["ip"],
"AAAA": ["ip6"]}}.  Names not in the zone get NXDOMAIN; a known name
without the asked type gets an empty NOERROR.  Prints READY.
"""
import argparse
import json
import os
import socket
import struct

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--zone", required=True)
args = ap.parse_args()
zone = {k.lower().rstrip("."): v for k, v in json.loads(args.zone).items()}
TYPES = {1: "A", 15: "MX", 28: "AAAA"}


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


def answer(msg):
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    name, off = parse_qname(msg, 12)
    qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
    question = msg[12:off + 4]
    key = name.lower()
    rrs = []
    rcode = 0
    if key not in zone:
        rcode = 3
    else:
        for v in zone[key].get(TYPES.get(qtype, "?"), []):
            if qtype == 15:
                rdata = struct.pack("!H", v[0]) + enc_name(v[1])
            elif qtype == 1:
                rdata = socket.inet_pton(socket.AF_INET, v)
            else:
                rdata = socket.inet_pton(socket.AF_INET6, v)
            rrs.append(enc_name(name) + struct.pack("!HHIH", qtype, 1, 60,
                                                     len(rdata)) + rdata)
    hdr = struct.pack("!HHHHHH", qid, 0x8180 | rcode | (flags & 0x0100),
                      1, len(rrs), 0, 0)
    return hdr + question + b"".join(rrs)


s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", args.port))
try:
    os.write(1, b"READY\n")
except OSError:
    pass
while True:
    msg, peer = s.recvfrom(4096)
    try:
        s.sendto(answer(msg), peer)
    except Exception:
        pass
