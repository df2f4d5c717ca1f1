"""
A web service for the tests: Python's http.server on a free loopback
port, in a thread of the test process.  It records every request (method,
path, headers, body) and answers from a script the test sets: a list of
(status, body, headers, delay) taken in order, then the default.  An
answer may also be held until the client closes the connection (noted in
Api.closed), within a bound.  It can be stopped and started again on the
same port (the service is "down").
"""

import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import HOST, free_port, wait_for


class Request:
    def __init__(self, method, path, headers, body, when):
        self.method = method
        self.path = path
        self.headers = headers		# lower-case name -> value
        self.body = body		# bytes
        self.when = when		# time.monotonic() at arrival

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "Request(%s %s, %d bytes)" % (self.method, self.path,
            len(self.body))


class Answer:
    def __init__(self, status=200, body=b"ok", headers=(), delay=0.0,
                 ctype="text/plain", hold=0.0):
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode()
        self.headers = list(headers)
        self.delay = delay
        self.hold = hold		# seconds to wait for the client to close
        self.ctype = ctype


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass			# a client that gave up is no news


class Api:
    def __init__(self):
        self.port = free_port()
        self.requests = []
        self.closed = []		# when a held request's client closed
        self.script = []		# Answers to give next, in order
        self.default = Answer()
        self.lock = threading.Lock()
        self.srv = None
        self.thread = None

    def url(self, path="/hook"):
        return "http://%s:%d%s" % (HOST, self.port, path)

    def _answer(self):
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def _handler(self):
        api = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def handle_any(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n) if n else b""
                req = Request(self.command, self.path,
                    {k.lower(): v for k, v in self.headers.items()}, body,
                    time.monotonic())
                with api.lock:
                    api.requests.append(req)
                a = api._answer()
                if a.hold and self.client_closed(a.hold):
                    with api.lock:
                        api.closed.append(time.monotonic())
                    self.close_connection = True
                    return
                if a.delay:
                    time.sleep(a.delay)
                self.send_response(a.status)
                self.send_header("Content-Type", a.ctype)
                self.send_header("Content-Length", str(len(a.body)))
                for k, v in a.headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(a.body)

            def client_closed(self, hold):
                """Wait up to hold seconds for the client to close (it
                sends nothing more after its request): True if it did."""
                s = self.connection
                ready, _, _ = select.select([s], [], [], hold)
                if not ready:
                    return False
                try:
                    return s.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True		# reset

            do_POST = do_PUT = handle_any

        return H

    def start(self):
        deadline = time.monotonic() + 10
        while True:		# the port may linger a moment after a stop
            try:
                self.srv = _Server((HOST, self.port), self._handler())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.thread = threading.Thread(target=self.srv.serve_forever,
            kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.srv is not None:
            self.srv.shutdown()
            self.srv.server_close()
            self.thread.join(5)
            self.srv = None

    def wait(self, n, timeout=15.0):
        """The first n requests, once they came."""
        wait_for(lambda: len(self.requests) >= n, timeout,
            what="%d request(s) at the web service (got %d)"
            % (n, len(self.requests)))
        with self.lock:
            return list(self.requests[:n])


def reserved_port_is_closed(port):
    """True when nothing listens on the port (connection refused)."""
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return False
    except OSError:
        return True
