"""
Black-box harness for the postern binary.

Each test gets a server on a free loopback port, in its own temporary
directory, with a config built from TEMPLATE.  Tests talk to it through raw
sockets (Client) or smtplib and look at the Maildirs it writes.  Every wait
has a deadline; nothing sleeps for a fixed time.

    POSTERN_BIN   path of the binary (default <repo>/build/postern, or
                  <repo>/build/src/cli/postern)

    POSTERN_LONG  set to 1 to run the long variants too (tests marked
                  @pytest.mark.long: hundreds of crash trials and the like);
                  without it they are deselected, not skipped

Run with Debian's python:  /usr/bin/python3 -m pytest tests/integration

A test skips itself only when the machine lacks something it needs (root, a
loop device, device-mapper in the kernel): machine_lacks(WHAT) or the
needs(COND, WHAT) mark.  scripts/testrun.py counts those and fails the run
on any other skip: a feature that does not answer as expected must fail.
"""

import base64
import ctypes
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _default_bin():
    for rel in (("build", "postern"), ("build", "src", "cli", "postern")):
        p = os.path.join(REPO, *rel)
        if os.access(p, os.X_OK):
            return p
    return os.path.join(REPO, "build", "postern")


POSTERN_BIN = os.environ.get("POSTERN_BIN") or _default_bin()

HOST = "127.0.0.1"
REPLY_TIMEOUT = 5.0	# seconds for one reply
START_TIMEOUT = 10.0	# seconds until the port listens
STOP_TIMEOUT = 15.0	# seconds for a clean exit after SIGTERM

# The default config.  {tmp} and {port} are filled in (plain str.replace, so
# the %{rcpt.user} template of the action is left alone).  EXTRA lines go
# after "listen"; RULES replace the two match lines.
TEMPLATE_HEAD = """\
hostname test.example
spool {tmp}/spool
spool log-size 1M
listen 127.0.0.1:{port}
"""
TEMPLATE_ACTIONS = """\
action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"
"""
DEFAULT_RULES = (
    "match to domain example.org action local",
    "match to domain localhost action local",
)

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
    "runtime error:", "WARNING: ThreadSanitizer")


ENV_SKIP = "machine lacks: "	# scripts/testrun.py accepts these skips only


def host_stand_ins(text, tmp):
    """A documented example config with what it names on a real host made
    up under tmp, since `postern check` loads it: each `tls cert "C" key
    "K"` pair becomes one self-signed pair, a `file:/ABS` table an empty
    file, a relative `file:DIR/NAME` table an empty file there, `user` and
    `group` nobody and nogroup."""
    pem, key = os.path.join(tmp, "stand-in.pem"), os.path.join(tmp,
        "stand-in.key")
    if re.search(r'\btls cert "', text) and not os.path.exists(pem):
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
            "-out", pem, "-days", "3", "-subj", "/CN=stand-in.example"],
            timeout=30, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        assert r.returncode == 0, r.stderr
    text = re.sub(r'\btls cert "[^"]*" key "[^"]*"',
        'tls cert "%s" key "%s"' % (pem, key), text)

    def table_file(m):
        name = m.group(1)
        path = os.path.join(tmp, name.lstrip("/").replace("/", "_")
            if name.startswith("/") else name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()
        return "file:" + (path if name.startswith("/") else name)
    text = re.sub(r"\bfile:([^\s\"]+)", table_file, text)
    text = re.sub(r"^user \S+$", "user nobody", text, flags=re.M)
    return re.sub(r"^group \S+$", "group nogroup", text, flags=re.M)


def machine_lacks(what):
    """Skip the running test because this machine lacks WHAT (say which
    kernel feature, device or privilege, and how it showed)."""
    pytest.skip(ENV_SKIP + what)


def needs(ok, what):
    """A mark: skip unless ok, because the machine lacks WHAT."""
    return pytest.mark.skipif(not ok, reason=ENV_SKIP + what)


def pytest_configure(config):
    config.addinivalue_line("markers", "long: a long variant, run by hand "
        "with POSTERN_LONG=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("POSTERN_LONG") == "1":
        return
    long = [i for i in items if i.get_closest_marker("long") is not None]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [i for i in items if i.get_closest_marker("long") is None]


def wait_for(cond, timeout=5.0, interval=0.02, what=None):
    """Poll cond() until it returns a true value (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                % (timeout, what or getattr(cond, "__name__", "condition")))
        time.sleep(interval)


KEEP_FAILED_FOLDERS = 20    # failed tests whose folders stay for a look
kept_failed = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each test's outcome on its item, for fixtures' teardown to read.
    Once the last report is in, the test's tmp_path goes, so a whole run
    needs the disk of one test at a time, not of all of them (file-system
    images and crash-trial copies come to gigabytes).  A failed test's
    folder stays, for the first few failures."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)
    path = item.funcargs.get("tmp_path")
    if report.when != "teardown" or path is None:
        return
    failed = any(getattr(item, "report_" + when, report).failed
                 for when in ("setup", "call", "teardown"))
    if failed and len(kept_failed) < KEEP_FAILED_FOLDERS:
        kept_failed.append(path)
        return
    shutil.rmtree(path, ignore_errors=True)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def close_listener(sock):
    """Close a listening socket another thread may be blocked accepting on.
    close() alone does not wake that accept(): the socket goes on listening
    and its thread takes one more connection, in whatever test runs then,
    and a retried accept() may land on the descriptor's next owner (a
    later test's listener).  shutdown() wakes it with an error first."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def port_listening(port):
    """True when some socket listens on 127.0.0.1:port (no connection made)."""
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state = parts[1], parts[3]
                addr, p = local.split(":")
                if int(p, 16) == port and state == "0A" and \
                        addr in ("0100007F", "00000000"):
                    return True
        return False
    except OSError:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return True
        except OSError:
            return False


def binary():
    if not os.access(POSTERN_BIN, os.X_OK):
        pytest.fail("postern binary not found at %s (build it or set POSTERN_BIN)"
            % POSTERN_BIN)
    return POSTERN_BIN


def run_cli(*args, cwd=None, timeout=10.0, input=None):
    """Run `postern ARGS...` (input: text on its stdin); returns
    CompletedProcess with text output."""
    return subprocess.run([binary()] + list(args), cwd=cwd, timeout=timeout,
        input=input, stdin=None if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        errors="replace")


# ----- the SMTP client -------------------------------------------------------

class Closed(AssertionError):
    """The server closed the connection while a reply was expected."""


class Reply:
    def __init__(self, lines):
        self.lines = lines			# text after "NNN-" / "NNN "
        self.code = int(lines[0][:3])
        self.texts = [l[4:] for l in lines]
        self.text = self.texts[-1]
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})\b", self.text)
        self.esc = m.group(1) if m else None

    def __repr__(self):
        return "Reply(%r)" % ("\\r\\n".join(self.lines),)


class Client:
    """A raw-socket SMTP client that keeps a transcript for failure messages."""

    def __init__(self, port, timeout=REPLY_TIMEOUT, source=None):
        """source: connect from this loopback address (127.0.0.0/8)."""
        self.sock = socket.create_connection((HOST, port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.buf = b""
        self.eof = False
        self.log = []

    # -- transcript
    def _note(self, direction, data):
        s = data if isinstance(data, str) else data.decode("latin-1")
        if len(s) > 300:
            s = s[:150] + "...(%d octets)..." % len(s) + s[-60:]
        self.log.append("%s %s" % (direction, s.rstrip("\r\n")))

    def transcript(self):
        return "\n".join(self.log[-40:])

    # -- writing
    def send(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        self.send_raw(line + b"\r\n")

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self._note(">", data)
        self.sock.sendall(data)

    # -- reading
    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk

    def _readline_bytes(self, deadline):
        while b"\r\n" not in self.buf:
            if self.eof:
                return None
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _readline(self, deadline):
        line = self._readline_bytes(deadline)
        return None if line is None else line.decode("utf-8", "replace")

    def read_raw_line(self, timeout=REPLY_TIMEOUT):
        """One line as the server sent it: bytes, without its CRLF; None
        at EOF."""
        line = self._readline_bytes(time.monotonic() + timeout)
        if line is not None:
            self._note("<", line)
        return line

    def read_reply(self, timeout=REPLY_TIMEOUT):
        """One whole (multi-line) reply; raises Closed at EOF, timeout after
        the deadline."""
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            try:
                line = self._readline(deadline)
            except socket.timeout:
                raise AssertionError("no reply within %.1fs; transcript:\n%s"
                    % (timeout, self.transcript()))
            if line is None:
                raise Closed("connection closed %s; transcript:\n%s" % (
                    "mid-reply" if lines else "while a reply was expected",
                    self.transcript()))
            self._note("<", line)
            m = re.match(r"^(\d{3})([- ])", line)
            assert m, "malformed reply line %r; transcript:\n%s" % (
                line, self.transcript())
            assert not lines or line[:3] == lines[0][:3], \
                "reply code changed inside a multi-line reply; transcript:\n%s" \
                % self.transcript()
            lines.append(line)
            if m.group(2) == " ":
                return Reply(lines)

    def expect(self, code, esc=None, timeout=REPLY_TIMEOUT):
        r = self.read_reply(timeout)
        ok = r.code == code and (esc is None or r.esc == esc)
        assert ok, "got %d %s, want %d %s; transcript:\n%s" % (
            r.code, r.esc, code, esc or "", self.transcript())
        return r

    def expect_closed(self, timeout=REPLY_TIMEOUT):
        """The server closes the connection with nothing more to say."""
        deadline = time.monotonic() + timeout
        try:
            while not self.eof:
                self._fill(deadline)
        except socket.timeout:
            raise AssertionError("connection still open after %.1fs; "
                "transcript:\n%s" % (timeout, self.transcript()))
        except OSError:
            self.eof = True
        assert self.buf == b"", "unexpected bytes before close: %r; " \
            "transcript:\n%s" % (self.buf[:200], self.transcript())

    def assert_silent(self):
        """Nothing unread has arrived (a cheap check, no waiting)."""
        self.sock.setblocking(False)
        try:
            chunk = self.sock.recv(65536)
        except (BlockingIOError, socket.timeout, ssl.SSLWantReadError):
            chunk = None
        finally:
            self.sock.setblocking(True)
        assert not self.buf and not chunk, "unexpected extra data %r; " \
            "transcript:\n%s" % ((self.buf + (chunk or b""))[:300],
            self.transcript())

    # -- conveniences
    def hello(self, name="client.example"):
        self.expect(220)
        self.send("EHLO " + name)
        return self.expect(250)

    def wrap_tls(self, ctx, server_hostname=None, timeout=REPLY_TIMEOUT):
        """TLS handshake on the connection (after a 220 to STARTTLS, or
        first thing on an implicit-TLS listener).  Bytes the server sent
        before the handshake and not yet read are an error: they would be
        plaintext injected into the TLS session."""
        assert self.buf == b"", "plaintext left unread before the TLS " \
            "handshake: %r; transcript:\n%s" % (self.buf[:200], self.transcript())
        self._note("=", "TLS handshake (sni=%s)" % server_hostname)
        self.sock.settimeout(timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self._note("=", "TLS up: %s %s" % (self.sock.version(),
            self.sock.cipher()[0]))
        return self.sock

    def starttls(self, ctx, server_hostname=None):
        """STARTTLS, its 220 2.0.0, then the handshake."""
        self.send("STARTTLS")
        self.expect(220, "2.0.0")
        return self.wrap_tls(ctx, server_hostname)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----- the server ------------------------------------------------------------

class Server:
    def __init__(self, tmp, config_text):
        self.dir = str(tmp)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "postern.conf")
        self.log_path = os.path.join(self.dir, "postern.stderr")
        self.proc = None
        self.killed = False
        self.run_args = []	# more arguments for "postern run"
        self.env = {}		# more environment for it
        self.argv_prefix = []	# a command that runs it (sh -c ...)
        self.bin = None		# another build of postern than binary()
        self.pass_fds = ()	# descriptors it inherits
        self.clients = []
        self.problems = []
        self.write_config(config_text)

    def fill(self, text):
        return text.replace("{tmp}", self.dir).replace("{port}", str(self.port))

    def write_config(self, text):
        tmpname = self.conf + ".new"
        with open(tmpname, "w") as f:
            f.write(self.fill(text))
        os.replace(tmpname, self.conf)

    # -- process control
    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        self.killed = False
        logf = open(self.log_path, "ab")
        logf.write(b"=== start ===\n")
        logf.flush()
        env = dict(os.environ, **self.env)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.proc = subprocess.Popen(self.argv_prefix +
            [self.bin or binary(), "run", "-c", self.conf] + self.run_args,
            pass_fds=self.pass_fds,
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            env=env)
        logf.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not port_listening(self.port):
            if self.proc.poll() is not None:
                pytest.fail("postern exited with %d at start-up; stderr:\n%s"
                    % (self.proc.returncode, self.log()[-3000:]))
            if time.monotonic() >= deadline:
                pytest.fail("postern did not listen on %d within %.0fs; "
                    "stderr:\n%s" % (self.port, START_TIMEOUT, self.log()[-3000:]))
            time.sleep(0.02)
        return self

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("postern did not exit within %.0fs" % timeout)

    def sigterm(self):
        self.proc.send_signal(signal.SIGTERM)

    def sighup(self):
        self.proc.send_signal(signal.SIGHUP)

    def died_badly(self):
        """The process is gone on its own, with a nonzero status (a crash)."""
        if self.proc is None or self.killed or self.proc.poll() is None:
            return None
        return self.proc.returncode or None

    def stop(self):
        """SIGTERM and a clean exit (status 0) are required."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            rc = self.died_badly()
            assert rc is None, "postern had exited with %d; stderr:\n%s" % (
                rc, self.log()[-3000:])
            return
        self.sigterm()
        rc = self.wait_exit()
        assert rc == 0, "postern exited with %d after SIGTERM; stderr:\n%s" % (
            rc, self.log()[-3000:])

    def kill9(self):
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)

    def restart(self):
        self.stop()
        for c in self.clients:
            c.close()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return read_log(self.log_path)

    def sanitizer_report(self):
        text = self.log()
        for mark in SANITIZER_MARKS:
            i = text.find(mark)
            if i >= 0:
                return text[max(0, i - 200):i + 3000]
        return None

    # -- clients
    def session(self):
        c = Client(self.port)
        self.clients.append(c)
        return c

    def tls_session(self, ctx, server_hostname=None):
        """A client on an implicit-TLS listener: handshake, then the 220
        is left for the caller to read."""
        c = self.session()
        c.wrap_tls(ctx, server_hostname)
        return c

    def pid_status(self):
        """/proc/<pid>/status of the server as a dict of str."""
        return proc_status(self.proc.pid)

    # -- files
    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def maildir(self, user, sub="new"):
        d = self.path("mail", user, "Maildir", sub)
        try:
            names = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [os.path.join(d, n) for n in names if not n.startswith(".")]

    def spool_files(self, sub=None):
        """Regular files under the spool (or under spool/SUB)."""
        top = self.path("spool", sub) if sub else self.path("spool")
        out = []
        for root, _dirs, files in os.walk(top):
            out += [os.path.join(root, f) for f in files]
        return sorted(out)

    def unaccepted_files(self):
        """Content no envelope accounts for: a message being received,
        or left behind by one refused or cut short (msg/ without env/),
        and whatever is in tmp/."""
        env = {os.path.basename(p) for p in self.spool_files("env")}
        return self.spool_files("tmp") + [p for p in self.spool_files("msg")
            if os.path.basename(p) not in env]

    def teardown(self):
        try:
            rc = self.died_badly()
            if rc is not None:
                self.problems.append("postern exited on its own with %d" % rc)
            if self.alive():
                self.sigterm()
                try:
                    rc = self.proc.wait(STOP_TIMEOUT)
                    if rc != 0:
                        self.problems.append("postern exited with %d after "
                            "SIGTERM at teardown" % rc)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    self.problems.append("postern did not exit within %.0fs "
                        "of SIGTERM at teardown" % STOP_TIMEOUT)
        finally:
            for c in self.clients:
                c.close()
        rep = self.sanitizer_report()
        if rep:
            self.problems.append("sanitizer report in stderr:\n" + rep)
        return self.problems


def spool_empty(srv):
    """True when the spool holds no message at all (nothing received,
    queued or being delivered): whatever was accepted has been delivered,
    and nothing refused was kept."""
    return not [p for p in srv.spool_files()
        if os.path.basename(p) not in ("control.sock", "lock", "log")]


def make_config(extra=(), rules=None, actions=None):
    lines = TEMPLATE_HEAD + "".join(l + "\n" for l in extra)
    lines += actions if actions is not None else TEMPLATE_ACTIONS
    lines += "".join(l + "\n" for l in (DEFAULT_RULES if rules is None else rules))
    return lines


def listen_config(opts, extra=(), rules=None, actions=None):
    """make_config() with options on the listen line ("tls", "require-tls",
    "no-starttls", "nomail", ...)."""
    text = make_config(extra, rules, actions)
    line = "listen 127.0.0.1:{port}\n"
    assert line in text
    return text.replace(line, "listen 127.0.0.1:{port} %s\n" % opts, 1)


def proc_status(pid, task=None):
    """/proc/PID/status (or /proc/PID/task/TASK/status) as a dict:
    "VmRSS" -> "1234 kB", "Uid" -> "0 0 0 0"."""
    out = {}
    with open("/proc/%d/%sstatus" % (pid, "task/%s/" % task if task else "")) \
            as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def every_thread(pid, key, want):
    """True when /proc/PID/task/*/status says want for key in every thread
    of process pid."""
    tasks = os.listdir("/proc/%d/task" % pid)
    for t in tasks:
        try:
            if proc_status(pid, t).get(key) != want:
                return False
        except FileNotFoundError:
            pass	# a thread that has just ended
    return bool(tasks)


def traced_by(pid, tracer):
    """True when every thread of process pid is traced by tracer (ptrace:
    strace has attached to all of them)."""
    return every_thread(pid, "TracerPid", str(tracer))


def sigstop(proc, timeout=10.0):
    """SIGSTOP the Popen proc and return once every one of its threads has
    stopped.  kill() returns with the stop only pending: one thread takes
    it and stops the others when it next runs, and on a busy machine the
    others may go on reading and answering their sockets meanwhile."""
    proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: every_thread(proc.pid, "State", "T (stopped)"),
        timeout=timeout, interval=0.005,
        what="every thread of pid %d to stop" % proc.pid)


LOG_KV = re.compile(r'([A-Za-z][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def unverified_context():
    """A client TLS context that takes any certificate (self-signed ones
    of the tests)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def log_events(srv, event):
    """[(kv, line)] of the server's "<ts> <level> EVENT k=v ..." lines for one
    event ("tls", "early-talker", ...), the way test_logging reads them."""
    out = []
    for line in srv.log().splitlines():
        words = line.split()
        for i, w in enumerate(words[:4]):
            if w == event and i + 1 < len(words) and "=" in words[i + 1]:
                kv = {k: v.strip('"') for k, v in
                    LOG_KV.findall(" ".join(words[i + 1:]))}
                out.append((kv, line))
                break
    return out


def chain_verdicts(srv, n=1):
    """(stage, verdict, why) of each "chain" line, once there are n."""
    wait_for(lambda: len(log_events(srv, "chain")) >= n,
        what="%d chain line(s)" % n)
    return [(kv.get("stage"), kv.get("verdict"), kv.get("why")) for kv, _
        in log_events(srv, "chain")]


@pytest.fixture
def make_postern(tmp_path, request):
    """Factory: make_postern(extra=[...], rules=[...], config=TEXT, start=True,
    at=FOLDER): at, the server's folder (its spool and Maildirs), instead
    of one under the test's temporary folder.  When the test fails, the
    end of each server's log goes with the report."""
    servers = []

    def make(extra=(), rules=None, config=None, start=True, actions=None,
            at=None):
        d = tmp_path / ("srv%d" % len(servers)) if servers else tmp_path
        if at is not None:
            d = pathlib.Path(at)
        d.mkdir(exist_ok=True)
        text = config if config is not None else make_config(extra, rules, actions)
        srv = Server(d, text)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for s in servers:
            print("----- the log of the server in %s (its end) -----\n%s"
                % (s.dir, s.log()[-6000:]))
    problems = []
    for s in servers:
        problems += s.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def postern(make_postern):
    return make_postern()


# ----- state store engines ---------------------------------------------------

REDIS_BIN = "/usr/bin/redis-server"	# scripts/bootstrap installs it
REDIS_START_TIMEOUT = 10.0


def redis_ping(port):
    """True when a Redis server on 127.0.0.1:port answers PING (or says
    it wants a password first: it is up)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisProc:
    """A throw-away redis-server on a loopback port (a free one, or the
    one it had: restart() comes back where clients look), nothing saved;
    args: more of redis-server's options ("--requirepass", "pw")."""

    def __init__(self, d, args=()):
        if not os.access(REDIS_BIN, os.X_OK):
            pytest.fail("%s not found: run scripts/bootstrap (it installs "
                "redis-server)" % REDIS_BIN)
        self.dir = d
        self.args = list(args)
        self.log_path = d / "redis.log"
        self.proc = None
        self.port = None
        for _attempt in range(3):	# the free port may be taken meanwhile
            if self.start(free_port()):
                return
        pytest.fail("redis-server did not answer PING within %.0fs; log:\n%s"
            % (REDIS_START_TIMEOUT, self.log_path.read_text(
            errors="replace")[-2000:]))

    @property
    def spec(self):
        return "%s:%d" % (HOST, self.port)

    def start(self, port):
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([REDIS_BIN, "--port", str(port),
                "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(self.dir)] + self.args, cwd=str(self.dir),
                stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while self.proc.poll() is None and not redis_ping(port) and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is None and redis_ping(port):
            self.port = port
            return True
        self.kill()
        return False

    def restart(self):
        """Start again on the same port, after kill()."""
        assert self.proc is None
        if not self.start(self.port):
            pytest.fail("redis-server did not come back on %d; log:\n%s"
                % (self.port, self.log_path.read_text(errors="replace")
                [-2000:]))

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self):
        """SIGSTOP, returning once it took effect: connections stay open,
        nothing is answered."""
        sigstop(self.proc)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_proc(tmp_path):
    """A RedisProc, killed at teardown."""
    d = tmp_path / "redis"
    d.mkdir(exist_ok=True)
    r = RedisProc(d)
    try:
        yield r
    finally:
        r.kill()


@pytest.fixture
def redis_server(redis_proc):
    """A throw-away redis-server on a free loopback port, nothing saved to
    disk; yields "127.0.0.1:PORT" and is killed at teardown."""
    return redis_proc.spec


@pytest.fixture(params=["sqlite", "redis"])
def state_store(request, tmp_path):
    """The "state ..." line of a config, once per persistent engine: tests
    that use it run against SQLite and against a real Redis."""
    if request.param == "sqlite":
        return "state sqlite %s" % (tmp_path / "state.db")
    return "state redis %s" % request.getfixturevalue("redis_server")


# ----- helpers for Maildir files ---------------------------------------------

def read_log(path):
    """A process's log file as text ("" before it exists)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def split_delivered(data):
    """A delivered file -> (return_path_line, received_unfolded, rest).

    The file is "Return-Path: <..>\\n" then the Received: header (maybe
    folded) added by postern, then the message as sent (LF line ends)."""
    lines = data.split(b"\n")
    assert lines[0].startswith(b"Return-Path:"), \
        "first line is not Return-Path: %r" % lines[0][:200]
    assert lines[1].startswith(b"Received:"), \
        "second line is not Received: %r" % lines[1][:200]
    i = 2
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    received = b" ".join(l.strip() for l in lines[1:i])
    rest = b"\n".join(lines[i:])
    return lines[0].decode("latin-1"), received.decode("latin-1"), rest


def headers_of(body):
    """Header name (lower) -> list of values of a message body (bytes, LF)."""
    out = {}
    head = body.split(b"\n\n", 1)[0]
    for line in head.split(b"\n"):
        if b":" in line and line[:1] not in (b" ", b"\t"):
            k, v = line.split(b":", 1)
            out.setdefault(k.strip().lower().decode("latin-1"), []).append(
                v.strip().decode("latin-1"))
    return out


def send_message(c, sender, rcpts, body, mail_params=""):
    """MAIL/RCPT/DATA with one reply each; body: str or bytes with CRLF lines,
    already dot-stuffed, without the final ".".  Returns the 250 reply."""
    c.send("MAIL FROM:<%s>%s" % (sender, mail_params)); c.expect(250, "2.1.0")
    for r in rcpts:
        c.send("RCPT TO:<%s>" % r); c.expect(250, "2.1.5")
    c.send("DATA"); c.expect(354)
    if isinstance(body, str):
        body = body.encode("utf-8")
    c.send_raw(body + b".\r\n")
    return c.expect(250, "2.0.0")


def queue_id(reply):
    m = re.search(r"queued as (\S+)", reply.text)
    assert m, "no queue id in %r" % reply.text
    return m.group(1)


# ----- account backends: PostgreSQL, system users, PAM ------------------------

PG_BIN = "/usr/lib/postgresql/15/bin"
PAM_DIR = "/etc/pam.d"


def run(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True,
        text=True, timeout=60, **kw)


class Pg:
    def __init__(self, d, port):
        self.dir, self.port = d, port

    def ctl(self, what):
        run("runuser", "-u", "postgres", "--", PG_BIN + "/pg_ctl", "-D",
            self.dir + "/data", "-w", "-t", "30", "-l", self.dir + "/log",
            "-o", "-k %s -p %d -c listen_addresses=127.0.0.1" % (self.dir,
            self.port), what)

    def sql(self, text):
        return run("runuser", "-u", "postgres", "--", "psql", "-h",
            "127.0.0.1", "-p", str(self.port), "-U", "postern", "-d", "mail", "-v",
            "ON_ERROR_STOP=1", "-qAt", "-c", text).stdout

    def conninfo(self):
        return "host=127.0.0.1 port=%d dbname=mail user=postern " \
            "password=pw" % self.port


@pytest.fixture
def pg():
    if not os.access(PG_BIN + "/initdb", os.X_OK):
        pytest.fail("PostgreSQL 15 not installed (scripts/bootstrap "
            "installs postgresql)")
    d = tempfile.mkdtemp(prefix="postern-pg-")
    shutil.chown(d, "postgres", "postgres")
    port = free_port()
    run("runuser", "-u", "postgres", "--", PG_BIN + "/initdb", "-D",
        d + "/data", "-A", "trust", "-U", "postgres")
    p = Pg(d, port)
    p.ctl("start")
    for stmt in ("CREATE USER postern PASSWORD 'pw'",
            "CREATE DATABASE mail OWNER postern"):
        run("runuser", "-u", "postgres", "--", "psql", "-h", "127.0.0.1",
            "-p", str(port), "-qc", stmt)
    try:
        yield p
    finally:
        try:
            p.ctl("stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sysuser():
    """A system user with a home and a password, removed afterwards."""
    made = []

    def make(name, password):
        home = tempfile.mkdtemp(prefix="postern-home-")
        os.rmdir(home)
        run("useradd", "-m", "-d", home, "-s", "/bin/false", name)
        run("chpasswd", input="%s:%s\n" % (name, password))
        made.append(name)
        return pwd.getpwnam(name)

    yield make
    for name in made:
        home = pwd.getpwnam(name).pw_dir
        subprocess.run(["userdel", "-r", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def public_dir():
    """A folder under /tmp that every user can walk to (a test's own
    tmp_path is root's alone): for servers and Maildirs of other users."""
    d = tempfile.mkdtemp(prefix="postern-public-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pam_service():
    name = "postern-test-%d" % os.getpid()
    path = os.path.join(PAM_DIR, name)
    with open(os.path.join(REPO, "etc", "pam.d-postern")) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text)
    yield name
    os.unlink(path)


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
        password.encode()).decode()


SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438	# x86_64 and arm64 alike


def server_socket_for(pid, client):
    """The server's end of client's connection, duplicated into this
    process from postern's descriptors (pidfd_getfd; the tests run as
    root), or None."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    assert pidfd >= 0, "pidfd_open: %s" % os.strerror(ctypes.get_errno())
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)
                    ).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                continue
            s = socket.socket(fileno=fd)
            try:
                if s.type == socket.SOCK_STREAM and \
                    s.getpeername() == client.getsockname():
                    return s
            except OSError:
                pass
            s.close()
        return None
    finally:
        os.close(pidfd)
