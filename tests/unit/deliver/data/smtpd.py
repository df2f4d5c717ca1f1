#!/usr/bin/python3
"""Upstream SMTP (and POP3) server for test_smtpc: aiosmtpd on 127.0.0.1.

Each message goes to OUT/N.env (MAIL FROM, options, RCPTs, AUTH) and
OUT/N.eml (the content exactly as received, dot-unstuffed, CRLF).
Prints READY when listening; SIGTERM ends it.
"""
import argparse
import warnings
import os
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--out", required=True)
ap.add_argument("--mode", default="plain",
                choices=["plain", "starttls", "tls", "busy421"])
ap.add_argument("--cert")
ap.add_argument("--key")
ap.add_argument("--tls-optional", action="store_true",
                help="starttls mode: offer STARTTLS but do not require it")
ap.add_argument("--auth", help="user:pass; then MAIL needs AUTH")
ap.add_argument("--auth-exclude", action="append", default=[])
ap.add_argument("--no-8bitmime", action="store_true")
ap.add_argument("--pipelining", action="store_true")
ap.add_argument("--smtputf8", action="store_true")
ap.add_argument("--size", type=int, default=0)
ap.add_argument("--rcpt-code", action="append", default=[],
                help="ADDR=CODE: answer CODE to RCPT TO:<ADDR>")
ap.add_argument("--pop-port", type=int)
ap.add_argument("--pop-user")
ap.add_argument("--pop-pass")
args = ap.parse_args()

warnings.simplefilter("ignore")
os.makedirs(args.out, exist_ok=True)
lock = threading.Lock()
state = {"n": 0, "pop_at": 0.0}
rcpt_codes = dict(x.split("=", 1) for x in args.rcpt_code)


def ready():
    """Tell the test we listen; it may close the pipe right after."""
    try:
        os.write(1, b"READY\n")
    except OSError:
        pass


def serve_busy():
    """Accept, answer 421, close: a host that refuses service."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.host, args.port))
    s.listen(16)
    ready()
    while True:
        c, _ = s.accept()
        c.sendall(b"421 4.3.2 busy.test Service not available\r\n")
        c.close()


class PopHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"+OK POP3 ready\r\n")
        user = None
        for raw in self.rfile:
            line = raw.decode("latin-1").rstrip("\r\n")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "USER":
                user = arg
                self.wfile.write(b"+OK\r\n")
            elif verb == "PASS":
                if user == args.pop_user and arg == args.pop_pass:
                    with lock:
                        state["pop_at"] = time.monotonic()
                        with open(os.path.join(args.out, "pop.log"),
                                  "a") as f:
                            f.write("login %s\n" % user)
                    self.wfile.write(b"+OK logged in\r\n")
                else:
                    self.wfile.write(b"-ERR bad login\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"+OK bye\r\n")
                return
            else:
                self.wfile.write(b"-ERR unknown\r\n")


def main():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname,
                              responses):
            session.host_name = hostname
            out = []
            for r in responses:
                if args.no_8bitmime and r[4:] == "8BITMIME":
                    continue
                out.append(r)
            if args.pipelining:
                out.insert(1, "250-PIPELINING")
            return out

        async def handle_RCPT(self, server, session, envelope, address,
                              rcpt_options):
            if args.pop_port:
                with lock:
                    ok = (state["pop_at"] and
                          time.monotonic() - state["pop_at"] < 30)
                if not ok:
                    return "550 5.7.1 POP before SMTP first"
            code = rcpt_codes.get(address)
            if code:
                return "%s %s.0.0 test reply for %s" % (code, code[0],
                                                        address)
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"

        async def handle_DATA(self, server, session, envelope):
            with lock:
                state["n"] += 1
                n = state["n"]
            base = os.path.join(args.out, str(n))
            with open(base + ".eml.tmp", "wb") as f:
                f.write(envelope.original_content)
            with open(base + ".env", "w") as f:
                f.write("from %s\n" % envelope.mail_from)
                f.write("options %s\n" % " ".join(envelope.mail_options))
                for r in envelope.rcpt_tos:
                    f.write("rcpt %s\n" % r)
                f.write("auth %s\n" % getattr(session, "t_login", "-"))
                f.write("mech %s\n" % getattr(session, "t_mech", "-"))
                tls = server.transport.get_extra_info("ssl_object")
                f.write("tls %s\n" % ("yes" if tls else "no"))
                # The client's port: which connection carried it.
                f.write("peer %s\n" % (session.peer[1],))
            os.rename(base + ".eml.tmp", base + ".eml")
            return "250 2.0.0 Ok: queued as T%d" % n

    def authenticator(server, session, envelope, mechanism, auth_data):
        user, _, pw = args.auth.partition(":")
        ok = (auth_data.login.decode() == user and
              auth_data.password.decode() == pw)
        if ok:
            session.t_login = user
            session.t_mech = mechanism
        return AuthResult(success=ok, handled=False)

    ctx = None
    if args.mode in ("starttls", "tls"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
    kw = dict(decode_data=False, enable_SMTPUTF8=args.smtputf8,
              data_size_limit=args.size or None)
    if args.auth:
        kw.update(authenticator=authenticator, auth_require_tls=False,
                  auth_required=True,
                  auth_exclude_mechanism=args.auth_exclude)
    if args.mode == "starttls":
        kw.update(tls_context=ctx, require_starttls=not args.tls_optional)
    if args.mode == "tls":
        ctrl = Controller(Handler(), hostname=args.host, port=args.port,
                          ssl_context=ctx, server_kwargs=kw)
    else:
        ctrl = Controller(Handler(), hostname=args.host, port=args.port,
                          server_kwargs=kw)
    if args.pop_port:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        pop = socketserver.ThreadingTCPServer((args.host, args.pop_port),
                                              PopHandler)
        pop.daemon_threads = True
        threading.Thread(target=pop.serve_forever, daemon=True).start()
    ctrl.start()
    ready()
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    ctrl.stop()
    os._exit(0)


if __name__ == "__main__":
    if args.mode == "busy421":
        serve_busy()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    main()
