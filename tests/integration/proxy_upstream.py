"""
Upstream servers for the proxy tests, in this process on free loopback
ports: Upstream (aiosmtpd, Debian's python3-aiosmtpd) records every command
it is given and every message, with STARTTLS, AUTH, extra EHLO lines and
the PROXY protocol on request; RawUpstream is a scripted server for what
aiosmtpd cannot be made to do (never greet, read slowly).
"""

import asyncio
import socket
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import close_listener

HOST = "127.0.0.1"


def free_port():
    s = socket.socket()
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


class Upstream:
    """aiosmtpd recording what it is told.

    events: ("EHLO", name), ("MAIL", addr), ("RCPT", addr), ("DATA", None),
    ("RSET", None), ("QUIT", None), ("PROXY", (src_addr, src_port,
    version)), in
    the order they came; messages: dicts with from, to, content (the bytes
    as received, dot-unstuffed, CRLF) and tls (STARTTLS done); sni: the
    TLS names asked for (tls=(CERT, KEY); implicit_tls: from the first
    byte instead of STARTTLS); rset_pause, data_pause: seconds it takes
    to answer RSET, a message's end; smtputf8: it offers SMTPUTF8."""

    def __init__(self, name="up.example", tls=None, require_starttls=False,
            extra_ehlo=(), users=None, proxy_protocol=False, refuse=(),
            implicit_tls=False, rset_pause=0.0, smtputf8=False,
            data_pause=0.0):
        self.name = name
        self.rset_pause = rset_pause
        self.data_pause = data_pause
        self.events = []
        self.proxy_dst = []	# (dst_addr, dst_port) of each PROXY header
        self.messages = []
        self.sni = []
        self.extra_ehlo = list(extra_ehlo)
        self.refuse = set(refuse)
        self.users = users
        self.port = free_port()
        kw = dict(hostname=HOST, port=self.port, server_hostname=name,
            ident="test upstream", ready_timeout=10)
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            ctx.sni_callback = self._sni
            if implicit_tls:
                kw.update(ssl_context=ctx)	# TLS from the first byte
            else:
                kw.update(tls_context=ctx, require_starttls=require_starttls)
        if users is not None:
            kw.update(authenticator=self._auth, auth_require_tls=False)
        if proxy_protocol:
            kw.update(proxy_protocol_timeout=5)
        if smtputf8:
            kw.update(enable_SMTPUTF8=True)
        self.ctl = Controller(self, **kw)
        self.ctl.start()

    def _sni(self, sock, name, ctx):
        self.sni.append(name)

    def _auth(self, server, session, envelope, mechanism, auth_data):
        ok = self.users.get(auth_data.login.decode()) == \
            auth_data.password.decode()
        self.events.append(("AUTH", auth_data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)

    def verbs(self):
        return [e[0] for e in self.events]

    async def handle_PROXY(self, server, session, envelope, proxy_data):
        self.events.append(("PROXY", (str(proxy_data.src_addr),
            proxy_data.src_port, proxy_data.version)))
        self.proxy_dst.append((str(proxy_data.dst_addr),
            proxy_data.dst_port))
        return True

    async def handle_EHLO(self, server, session, envelope, hostname,
            responses):
        self.events.append(("EHLO", hostname))
        session.host_name = hostname
        lines = [r[4:] for r in responses] + self.extra_ehlo
        return ["250-" + l for l in lines[:-1]] + ["250 " + lines[-1]]

    async def handle_HELO(self, server, session, envelope, hostname):
        self.events.append(("HELO", hostname))
        session.host_name = hostname
        return "250 %s" % self.name

    async def handle_MAIL(self, server, session, envelope, address, options):
        self.events.append(("MAIL", address))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 upstream takes the sender"

    async def handle_RCPT(self, server, session, envelope, address, options):
        self.events.append(("RCPT", address))
        if address in self.refuse:
            return "550 5.1.1 upstream knows no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 upstream takes the recipient"

    async def handle_DATA(self, server, session, envelope):
        self.events.append(("DATA", None))
        self.messages.append({"from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "content": envelope.original_content,
            "tls": session.ssl is not None})
        await asyncio.sleep(self.data_pause)
        return "250 2.0.0 upstream queued it as U%d" % len(self.messages)

    async def handle_RSET(self, server, session, envelope):
        self.events.append(("RSET", None))
        await asyncio.sleep(self.rset_pause)
        return "250 2.0.0 upstream reset"

    async def handle_QUIT(self, server, session, envelope):
        self.events.append(("QUIT", None))
        return "221 2.0.0 upstream says bye"

    def stop(self):
        self.ctl.stop()


class RawUpstream:
    """A scripted SMTP server: greets (unless silent), answers EHLO, MAIL,
    RCPT (with rcpt_reply), DATA and QUIT (with quit_reply; None: never),
    and reads the content read_chunk octets at a time with a pause of
    read_pause seconds after each; received counts the content octets,
    message keeps them when keep is set; quits and closes hold the
    time.monotonic() of each QUIT and of each close by the client."""

    def __init__(self, silent=False, read_chunk=1 << 16, read_pause=0.0,
            keep=False, rcpt_reply=b"250 ok", quit_reply=b"221 bye"):
        self.silent = silent
        self.rcpt_reply = rcpt_reply
        self.quit_reply = quit_reply
        self.quits = []
        self.closes = []
        self.read_chunk = read_chunk
        self.read_pause = read_pause
        self.keep = keep
        self.received = 0
        self.message = bytearray()
        self.done = threading.Event()
        self.conns = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if not self.silent:
                threading.Thread(target=self._serve, args=(c,),
                    daemon=True).start()

    def _serve(self, c):
        try:
            self._dialogue(c)
        except OSError:
            pass

    def _dialogue(self, c):
        f = c.makefile("rb")
        c.sendall(b"220 raw.example ESMTP\r\n")
        while True:
            line = f.readline()
            if not line:
                self.closes.append(time.monotonic())
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                c.sendall(b"250-raw.example\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                c.sendall(b"354 go\r\n")
                self._content(c, f)
                c.sendall(b"250 2.0.0 raw took it\r\n")
                self.done.set()
            elif verb == b"QUIT":
                self.quits.append(time.monotonic())
                if self.quit_reply is not None:
                    c.sendall(self.quit_reply + b"\r\n")
                    return
            elif verb == b"RCPT":
                c.sendall(self.rcpt_reply + b"\r\n")
            else:
                c.sendall(b"250 ok\r\n")

    def _content(self, c, f):
        tail = b""
        while True:
            data = f.read1(self.read_chunk)
            if not data:
                raise OSError("closed in DATA")
            self.received += len(data)
            if self.keep:
                self.message += data
            tail = (tail + data)[-5:]
            if tail == b"\r\n.\r\n":
                return
            if self.read_pause:
                time.sleep(self.read_pause)

    def stop(self):
        self.stopping = True
        close_listener(self.sock)
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.thread.join(2)
