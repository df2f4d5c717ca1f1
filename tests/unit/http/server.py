#!/usr/bin/python3
"""A small HTTP(S) server for the http/ unit tests.

Usage: server.py RECORD [CERT KEY].  Prints its port on the first line of
stdout, then serves until killed.  Every request is appended to RECORD as
one JSON line (method, path, headers, body in base64).  The path says what
to answer: /status/N[?retry-after=V] answers N, /slow/MS waits MS ms first,
/big/N sends N bytes, /echo sends the body back, /reply/json, /reply/text
and /reply/mime answer as a reply agent's web service would, /reply/empty
says nothing (204); anything else is 200 ok.
"""
import base64
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, code, body, extra=(), ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n) if n else b""
        rec = {"method": self.command, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": base64.b64encode(body).decode()}
        with LOCK, open(sys.argv[1], "a") as f:
            f.write(json.dumps(rec) + "\n")
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        q = parse_qs(url.query)
        if parts[0] == "status":
            extra = [("Retry-After", q["retry-after"][0])] \
                if "retry-after" in q else []
            self.answer(int(parts[1]), b"status " + parts[1].encode(), extra)
        elif parts[0] == "slow":
            time.sleep(int(parts[1]) / 1000)
            self.answer(200, b"late")
        elif parts[0] == "big":
            self.answer(200, b"x" * int(parts[1]))
        elif parts[0] == "echo":
            self.answer(200, body)
        elif parts[0] == "reply":
            self.reply(parts[1], body)
        else:
            self.answer(200, b"ok")

    def reply(self, kind, body):
        msg = json.loads(body)
        if kind == "json":
            out = {"text": "Sunny in NYC, dear " + msg["from"],
                   "html": "<p>Sunny in <b>NYC</b></p>",
                   "subject": "Weather for " + msg["envelope"]["rcpt"]}
            self.answer(200, json.dumps(out).encode(),
                        ctype="application/json")
        elif kind == "text":
            self.answer(200, ("Sunny, " + msg["subject"]).encode(),
                        ctype="text/plain; charset=utf-8")
        elif kind == "mime":
            self.answer(200, b"Subject: From MIME\r\nContent-Type: "
                        b"text/plain\r\n\r\nA MIME body\r\n",
                        ctype="message/rfc822")
        else:
            self.answer(204, b"")

    do_POST = do_PUT = do_GET = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128    # many clients at once

    def handle_error(self, request, client_address):
        pass                    # a client that gave up early is no news


def orphan_watch(parent):
    """A test that crashed leaves no server behind."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


def main():
    threading.Thread(target=orphan_watch, args=(os.getppid(),),
                     daemon=True).start()
    srv = Server(("127.0.0.1", 0), Handler)
    if len(sys.argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


main()
