"""Privilege drop: bind (also a port < 1024) as root, then run as `user`.

Only meaningful as root; skipped otherwise.  The server's directory must be
reachable by nobody, so these tests use their own directory under /tmp
(pytest's tmp_path sits in a 0700 directory) and clean it up."""

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import (unverified_context, HOST, Client, Server, binary, machine_lacks,
    log_events, make_config, needs, plain, proc_status, read_bytes, read_log,
    run_cli, send_message, split_delivered, wait_for)

pytestmark = needs(os.geteuid() == 0,
    "root, which the privilege drop needs (run the suite as root)")

USER, GROUP = "nobody", "nogroup"
BODY = "Subject: dropped\r\n\r\nas nobody\r\n"


def ids():
    try:
        uid = pwd.getpwnam(USER).pw_uid
        gid = grp.getgrnam(GROUP).gr_gid
    except KeyError as e:
        machine_lacks("a %s user and %s group: %s" % (USER, GROUP, e))
    return uid, gid


@pytest.fixture
def make_dropped(public_dir):
    """make(extra=[...]) -> a started Server running with user/group."""
    uid, gid = ids()
    servers = []

    def make(extra=(), start=True):
        d = os.path.join(public_dir, "srv%d" % len(servers))
        os.mkdir(d)
        os.chmod(d, 0o755)
        for sub in ("spool", "mail"):
            os.mkdir(os.path.join(d, sub))
            os.chown(os.path.join(d, sub), uid, gid)
        srv = Server(d, make_config(["user " + USER, "group " + GROUP] +
            list(extra)))
        os.chmod(srv.conf, 0o644)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    problems = []
    for s in servers:
        problems += s.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def id_fields(status, key):
    return [int(x) for x in status[key].split()]


def test_runs_as_nobody_with_no_groups_and_delivers(make_dropped):
    uid, gid = ids()
    srv = make_dropped()
    # It listens before the drop: look once it has started.
    wait_for(lambda: "postern started" in srv.log(), what="the start")
    # Every thread (the workers too), not only the main one.
    tasks = os.listdir("/proc/%d/task" % srv.proc.pid)
    assert tasks, "no tasks"
    for t in tasks:
        st = {}
        with open("/proc/%d/task/%s/status" % (srv.proc.pid, t)) as f:
            for line in f:
                k, _, v = line.partition(":")
                st[k] = v.strip()
        assert id_fields(st, "Uid") == [uid] * 4, \
            "task %s Uid: %s, want %d x4" % (t, st["Uid"], uid)
        assert id_fields(st, "Gid") == [gid] * 4, \
            "task %s Gid: %s, want %d x4" % (t, st["Gid"], gid)
        assert st.get("Groups", "") == "", \
            "task %s keeps supplementary groups: %r" % (t, st["Groups"])
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    files = wait_for(lambda: srv.maildir("bob"), what="delivery to bob")
    st = os.stat(files[0])
    assert (st.st_uid, st.st_gid) == (uid, gid), \
        "delivered file owned by %d:%d, want %d:%d" % (st.st_uid, st.st_gid,
        uid, gid)
    assert b"as nobody" in split_delivered(read_bytes(files[0]))[2]
    for f in srv.spool_files():
        assert os.stat(f).st_uid == uid, "spool file %s not nobody's" % f


def free_privileged_port():
    for port in (465, 587, 24, 999):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # As the server binds: a port the run before left in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    return None


def test_privileged_port_is_bound_before_the_drop(make_dropped):
    port = free_privileged_port()
    if port is None:
        machine_lacks("a free privileged port on %s (tried 465, 587, 24, "
            "999)" % HOST)
    srv = make_dropped(extra=["listen %s:%d" % (HOST, port)])
    wait_for(lambda: srv.pid_status()["Uid"].split()[0] == str(ids()[0]),
        what="the drop to nobody")
    c = Client(port)
    srv.clients.append(c)
    r = c.hello()
    assert r.code == 250
    c.send("QUIT"); c.expect(221)


@pytest.mark.parametrize("stmt, name", [
    ("user no-such-user-pstn", "no-such-user-pstn"),
    ("group no-such-group-pstn", "no-such-group-pstn"),
])
def test_unknown_account_fails_start_up(public_dir, stmt, name):
    d = os.path.join(public_dir, "bad")
    os.mkdir(d)
    conf = os.path.join(d, "postern.conf")
    port = socket.socket()
    port.bind((HOST, 0))
    p = port.getsockname()[1]
    port.close()
    extra = [stmt] if stmt.startswith("user") else ["user " + USER, stmt]
    with open(conf, "w") as f:
        f.write(make_config(extra).replace("{tmp}", d).replace("{port}",
            str(p)))
    try:
        r = run_cli("run", "-c", conf, cwd=d, timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError("postern kept running with %r" % stmt)
    assert r.returncode == 1, "exit %d with %r; stderr:\n%s" % (
        r.returncode, stmt, r.stderr)
    assert name in r.stderr, "the error does not name %s:\n%s" % (
        name, r.stderr)
    assert len(r.stderr) < 2000 and "AddressSanitizer" not in r.stderr, r.stderr


def test_root_without_user_is_warned_about(make_postern):
    srv = make_postern()
    log = srv.log()
    warn = [l for l in log.splitlines() if " warn " in l and "root" in l]
    assert warn, "no warning about running as root:\n" + log
    assert srv.pid_status()["Uid"].split()[0] == "0"


def test_sendmail_run_by_root_queues_as_the_spool_owner(make_dropped):
    """root's sendmail writes the spool as its owner: the server, running as
    nobody, can read the message, deliver it and remove it."""
    uid, gid = ids()
    srv = make_dropped()
    # The port answers before the queue listens on its control socket.
    wait_for(lambda: os.path.exists(srv.path("spool", "control.sock")),
        what="the control socket")
    link = os.path.join(srv.dir, "sendmail")
    os.symlink(binary(), link)
    r = subprocess.run([link, "-C", srv.conf, "-f", "root@example.org",
        "bob@example.org"], input=b"Subject: from root\n\nqueued by root\n",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    assert r.returncode == 0, r.stderr
    files = wait_for(lambda: srv.maildir("bob"), timeout=10,
        what="delivery of root's message")
    rest = split_delivered(read_bytes(files[0]))[2]
    assert b"queued by root" in rest
    assert b"(uid 0)" in read_bytes(files[0]), "Received: names the sender"
    wait_for(lambda: not [f for f in srv.spool_files() if "/msg/" in f],
        what="the message leaving the spool")
    for f in srv.spool_files():
        st = os.stat(f)
        assert (st.st_uid, st.st_gid) == (uid, gid), "%s owned by %d:%d" % (
            f, st.st_uid, st.st_gid)


def test_queue_commands_run_by_root_leave_the_spool_the_servers(make_dropped):
    """root's `postern queue` and mailq, before the server's first start,
    act as the spool's owner: the folders they make are nobody's, and the
    server, running as nobody, starts on the spool and delivers."""
    uid, gid = ids()
    srv = make_dropped(start=False)
    spool = srv.path("spool")
    mailq = os.path.join(srv.dir, "mailq")
    os.symlink(binary(), mailq)
    r = subprocess.run([mailq], env=dict(os.environ, POSTERN_CONFIG=srv.conf),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    assert (r.returncode, r.stdout) == (0, "Mail queue is empty\n"), r
    for args in (["list"], ["show", "NoSuchQid"], ["flush"],
            ["delete", "NoSuchQid"]):
        r = run_cli("queue", "-c", srv.conf, *args)
        assert r.returncode == (0 if args == ["list"] else 1), (args, r)
    made = [os.path.join(top, n) for top, dirs, files in os.walk(spool)
        for n in dirs + files]
    assert made, "the queue commands made no spool folder"
    for path in made:
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (uid, gid), "%s owned by %d:%d" % (
            path, st.st_uid, st.st_gid)
    srv.start()
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
        c.send("QUIT"); c.expect(221)
    wait_for(lambda: srv.maildir("bob"), what="delivery after the queue list")


def test_pid_file_in_a_root_folder_is_emptied_at_stop(make_dropped,
        public_dir):
    """Written as root before the drop; at the stop nobody may not remove
    it from root's folder, so it is left empty (which reads as stale)."""
    run = os.path.join(public_dir, "run")
    os.mkdir(run, 0o755)
    pid_path = os.path.join(run, "postern.pid")
    srv = make_dropped(start=False)
    srv.run_args = ["--pid-file", pid_path]
    srv.start()
    with open(pid_path) as f:
        assert f.read() == "%d\n" % srv.proc.pid
    assert os.stat(pid_path).st_uid == 0
    srv.stop()
    with open(pid_path) as f:
        assert f.read() == ""


def test_service_manager_hears_ready_after_the_drop(make_dropped, public_dir):
    """The notify socket sits in a folder only root may enter (as
    start-stop-daemon --notify-await makes it): postern connects to it
    before the drop, and READY=1 still arrives from nobody."""
    hidden = os.path.join(public_dir, "notify")
    os.mkdir(hidden, 0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(hidden, "sock"))
    sock.settimeout(15)
    try:
        srv = make_dropped(start=False)
        srv.env = {"NOTIFY_SOCKET": os.path.join(hidden, "sock")}
        srv.start()
        msgs = []
        while not any(m.startswith(b"READY=1") for m in msgs):
            msgs.append(sock.recv(4096))
        assert srv.pid_status()["Uid"].split()[0] == str(ids()[0])
    finally:
        sock.close()


# What the shipped service unit allows, applied without systemd: the unit's
# capability bounding set and no new privileges (setpriv), and the whole
# file system read-only but the server's folder (ProtectSystem=strict with
# its ReadWritePaths), in a mount namespace of its own.
HARDEN = """set -e
d=$1; shift
mount --bind "$d" "$d"
mount -o remount,bind,ro /
exec "$@"
"""


def unit_settings():
    from test_service import unit_path
    with open(unit_path("postern.service")) as f:
        return dict(l.split("=", 1) for l in f.read().splitlines()
            if "=" in l and not l.startswith("#"))


@pytest.mark.parametrize("narrow", [False, True])
def test_runs_within_the_units_hardening(make_dropped, sysuser,
        pam_service, narrow):
    """Started as the unit starts it, the server binds a port below 1024,
    drops to nobody, checks a password with PAM and writes a Maildir as
    its owner through the privileged helper, with nothing beyond the
    unit's capabilities (or an admin's narrower set: port, user and group
    alone); every process has no new privileges and none of its
    capabilities outside that set."""
    for prog in ("setpriv", "unshare"):
        if shutil.which(prog) is None:
            pytest.fail("%s (util-linux) not found" % prog)
    unit = unit_settings()
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["ProtectSystem"] == "strict"
    caps = unit["CapabilityBoundingSet"].split()
    if narrow:
        caps = ["CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"]
    port = free_privileged_port()
    if port is None:
        machine_lacks("a free privileged port on %s (tried 465, 587, 24, "
            "999)" % HOST)
    owner = sysuser("pstnhard", "Hard pw 1")
    srv = make_dropped(start=False, extra=["listen %s:%d auth-plaintext" % (
        HOST, port), "auth pam %s" % pam_service, "maildir-root {tmp}/mail"])
    srv.write_config(open(srv.conf).read().replace(
        'maildir "%s/mail/%%{rcpt.user}/Maildir"' % srv.dir,
        'maildir "%s/mail/%%{rcpt.user}/Maildir" as pstnhard' % srv.dir))
    os.chown(srv.path("mail"), owner.pw_uid, owner.pw_gid)
    srv.argv_prefix = ["unshare", "--mount", "--propagation", "private",
        "sh", "-c", HARDEN, "sh", srv.dir, "setpriv", "--bounding-set",
        "-all," + ",".join("+" + c[4:].lower() for c in caps),
        "--no-new-privs"]
    srv.start()
    wait_for(lambda: srv.pid_status()["Uid"].split()[0] == str(ids()[0]),
        what="the drop to nobody")
    c = Client(port)
    srv.clients.append(c)
    c.hello()
    c.send("AUTH PLAIN " + plain("pstnhard", "wrong")); c.expect(535)
    c.send("AUTH PLAIN " + plain("pstnhard", "Hard pw 1")); c.expect(235)
    send_message(c, "a@example.net", ["bob@example.org"], BODY)
    c.send("QUIT"); c.expect(221)
    files = wait_for(lambda: srv.maildir("bob"), what="delivery as pstnhard")
    assert os.stat(files[0]).st_uid == owner.pw_uid
    assert b"as nobody" in split_delivered(read_bytes(files[0]))[2]
    # The file system outside the server's folder was read-only to it.
    with open("/proc/%d/mountinfo" % srv.proc.pid) as f:
        root = [l for l in f if l.split()[4] == "/"]
    assert root and " ro," in root[0], root
    allowed = 0
    for c in caps:
        allowed |= 1 << CAP_BITS[c]
    procs = [srv.proc.pid] + [p for ps in helper_processes(srv) for p in ps]
    assert len(procs) >= 3, procs		# the server, keeper, helper
    for pid in procs:
        st = proc_status(pid)
        assert st["NoNewPrivs"] == "1", (pid, st["NoNewPrivs"])
        for k in ("CapBnd", "CapPrm", "CapEff"):
            assert int(st[k], 16) & ~allowed == 0, (pid, k, st[k])


CAP_BITS = {"CAP_DAC_READ_SEARCH": 2, "CAP_KILL": 5, "CAP_SETGID": 6,
    "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10, "CAP_AUDIT_WRITE": 29}


def helper_processes(srv):
    from test_backends import helper_children
    keeper, helpers, _ = helper_children(srv)
    return keeper, helpers


def reloads_done(srv):
    return srv.log().count("reload: configuration")


def test_reload_after_the_drop_reads_the_self_signed_pair(make_dropped):
    """The pair made as root before the drop is the user's, so a SIGHUP
    reload running as that user reads it again, and STARTTLS goes on."""
    uid, gid = ids()
    srv = make_dropped(extra=["tls self-signed {tmp}/tls"])
    srv.write_config(make_config(["user " + USER, "group " + GROUP,
        "tls self-signed {tmp}/tls", "limit recipients 7"]))
    os.chmod(srv.conf, 0o644)
    srv.sighup()
    wait_for(lambda: reloads_done(srv) == 1 or "reload failed" in srv.log(),
        10, what="the reload to end")
    assert "reload failed" not in srv.log(), srv.log()[-2000:]
    ctx = unverified_context()
    with srv.session() as c:
        c.hello()
        c.starttls(ctx)
        c.send("EHLO client.example"); c.expect(250)
        c.send("QUIT"); c.expect(221)
    assert srv.alive()
    for name in ("tls", "tls/cert.pem", "tls/key.pem"):
        st = os.stat(srv.path(name))
        assert (st.st_uid, st.st_gid) == (uid, gid), \
            "%s owned by %d:%d, want %d:%d" % (name, st.st_uid, st.st_gid,
            uid, gid)
    assert os.stat(srv.path("tls/key.pem")).st_mode & 0o077 == 0, \
        "the key is readable by others"


def test_a_reload_reads_renewed_root_only_certificates(make_dropped):
    """Certificates and keys only root may read (a 0700 folder, a 0600
    key, as certbot leaves them): renewed in place, a reload after the
    drop still reads them, through the privileged helper; a key the
    configuration did not name at start is not read for it."""
    from test_reload import der, install, make_pair, served
    uid, _ = ids()
    srv = make_dropped(start=False)
    live, a, b, other = (srv.path(n) for n in ("live", "a", "b", "other"))
    make_pair(a, "a.example")
    make_pair(b, "b.example")
    make_pair(other, "other.example")
    os.makedirs(live)
    install(a, live)
    for d in (live, other):
        os.chmod(d, 0o700)
        os.chmod(os.path.join(d, "key.pem"), 0o600)
    tls = 'tls cert "%s/cert.pem" key "%s/key.pem"'
    conf = make_config(["user " + USER, "group " + GROUP,
        tls % (live, live)])
    srv.write_config(conf)
    os.chmod(srv.conf, 0o644)
    srv.start()
    # It listens before the drop: look once it has started.
    wait_for(lambda: proc_status(srv.proc.pid)["Uid"].split()[0] == str(uid),
        what="the drop to nobody")
    assert served(srv) == der(a)
    install(b, live)
    os.chmod(os.path.join(live, "key.pem"), 0o600)
    srv.sighup()
    wait_for(lambda: reloads_done(srv) == 1 or "reload failed" in srv.log(),
        10, what="the reload to end")
    assert "reload failed" not in srv.log(), srv.log()[-2000:]
    assert served(srv) == der(b)
    # Another pair, root's only too, not named at start: not read.
    srv.write_config(make_config(["user " + USER, "group " + GROUP,
        tls % (other, other)]))
    os.chmod(srv.conf, 0o644)
    srv.sighup()
    wait_for(lambda: "reload failed" in srv.log(), 10,
        what="the reload to fail")
    line = [l for l in srv.log().splitlines() if "reload failed" in l][0]
    assert "cert %s/cert.pem: privileged helper: not a file named at " \
        "start-up" % other in line, line
    assert served(srv) == der(b)
    assert srv.alive()


def test_the_helper_opens_no_file_another_user_could_have_put_there(
        make_dropped):
    """A key named at start-up, in a folder the dropped user may write
    to: that user could swap the key for a link to any file of root's,
    so the helper does not open it at a reload; the last good
    certificate stays."""
    from test_reload import der, install, make_pair, served
    uid, gid = ids()
    srv = make_dropped(start=False)
    theirs, secret = srv.path("theirs"), srv.path("secret")
    make_pair(theirs, "theirs.example")
    make_pair(secret, "secret.example")
    os.chown(theirs, uid, gid)
    os.chmod(os.path.join(theirs, "key.pem"), 0o600)	# root's still
    os.chmod(secret, 0o700)
    srv.write_config(make_config(["user " + USER, "group " + GROUP,
        'tls cert "%s/cert.pem" key "%s/key.pem"' % (theirs, theirs)]))
    os.chmod(srv.conf, 0o644)
    srv.start()
    first = der(theirs)
    assert served(srv) == first
    # What the user could do in its folder: links to root's files.
    for name in ("cert.pem", "key.pem"):
        os.unlink(os.path.join(theirs, name))
        os.symlink(os.path.join(secret, name), os.path.join(theirs, name))
    srv.sighup()
    wait_for(lambda: "reload failed" in srv.log(), 10,
        what="the reload to fail")
    line = [l for l in srv.log().splitlines() if "reload failed" in l][0]
    assert "privileged helper: a folder on its way may be written by " \
        "others than root" in line, line
    assert served(srv) == first
    assert srv.alive()


# ----- what the helper trusts postern with -----

def forge_delivery(srv, owner, folder, body_path):
    """What a compromised server could do: send the helper a delivery
    request of its own on the helper's socket, taken from the running
    server (pidfd_getfd), as postern's client.c spells one."""
    import array
    import ctypes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/net/unix") as f:
        seqpacket = {l.split()[6] for l in f.read().splitlines()[1:]
            if l.split()[4] == "0005"}
    pid = srv.proc.pid
    pidfd = libc.syscall(434, pid, 0)		# pidfd_open
    assert pidfd >= 0, os.strerror(ctypes.get_errno())
    sent = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if not (t.startswith("socket:[") and t[8:-1] in seqpacket):
                continue
            nfd = libc.syscall(438, pidfd, int(fd), 0)	# pidfd_getfd
            assert nfd >= 0, os.strerror(ctypes.get_errno())
            sk = socket.socket(fileno=nfd)
            strs = [owner, folder, "a@example.net", "1forged000000000",
                "evil.example", "0", "0", "1"]
            pay = struct.pack("<IIiI", 0x7fff0001, 2, 0, len(strs)) + \
                b"".join(s.encode() + b"\0" for s in strs)
            body = os.open(body_path, os.O_RDONLY)
            try:
                sk.sendmsg([pay], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                    array.array("i", [body]))])
                sent += 1
            finally:
                os.close(body)
                sk.close()
    finally:
        os.close(pidfd)
    assert sent, "no helper socket in the server"


def refusals(srv):
    return [l for l in srv.log().splitlines()
        if "privileged helper refused a delivery" in l]


@pytest.mark.parametrize("owners", ["name", "table"])
def test_the_helper_delivers_only_as_owners_the_config_allows(make_dropped,
        sysuser, owners):
    """A request for an owner the configuration does not allow (`as USER`
    names one; `as <TABLE>` allows ordinary accounts, not system ones
    like nobody), or for a dot folder like ~/.ssh, is refused and logged
    by the helper itself, whatever postern asks; an allowed one is
    delivered (the forged request reaches the helper)."""
    ann = sysuser("pstnann", "Ann pw 1")
    vic = sysuser("pstnvic", "Vic pw 1")
    owner = "as pstnann" if owners == "name" else "as <pw>"
    srv = make_dropped(start=False, extra=["maildir-root {tmp}/mail",
        "table pw passwd"])
    srv.write_config(open(srv.conf).read().replace(
        'maildir "%s/mail/%%{rcpt.user}/Maildir"' % srv.dir,
        'maildir "~/Maildir" %s' % owner))
    srv.start()
    body = srv.path("forged.eml")
    with open(body, "w") as f:
        f.write("Subject: forged\r\n\r\nnot from the queue\r\n")
    forge_delivery(srv, "pstnann", "~/Maildir", body)
    wait_for(lambda: os.path.isdir(os.path.join(ann.pw_dir, "Maildir",
        "new")) and os.listdir(os.path.join(ann.pw_dir, "Maildir", "new")),
        10, what="the allowed owner's copy")
    refused = [("pstnann", "~/.ssh"), ("pstnann", "~/.config/x"),
        ("pstnann", "~//.ssh"), ("pstnann", "~/x/./.ssh"),
        ("nobody", srv.path("mail", "nobody"))]
    if owners == "name":
        refused.append(("pstnvic", "~/Maildir"))
    for who, folder in refused:
        forge_delivery(srv, who, folder, body)
    lines = wait_for(lambda: len(refusals(srv)) >= len(refused) and
        refusals(srv), 10, what="the helper's refusals")
    for who, folder in refused:
        line = [l for l in lines
            if 'owner="%s" folder="%s"' % (who, folder) in l][0]
        if folder in ("~//.ssh", "~/x/./.ssh"):
            assert "an empty, . or .. folder name" in line, line
        elif who == "pstnann":
            assert "a dot folder" in line, line
        else:
            assert "%s is not an owner the configuration allows" % who \
                in line, line
    for d in (".ssh", ".config"):
        assert not os.path.exists(os.path.join(ann.pw_dir, d))
    assert not os.path.exists(srv.path("mail", "nobody"))
    assert not os.path.exists(os.path.join(vic.pw_dir, "Maildir"))


def shared_root(srv, name, mode=0o1777):
    d = srv.path(name)
    os.mkdir(d)
    os.chmod(d, mode)
    return d


def outcomes(srv):
    """{rcpt: ("delivered", None) or ("deferred", why)} from the log."""
    out = {}
    for event in ("delivered", "deferred"):
        for kv, _ in log_events(srv, event):
            out[kv["rcpt"]] = (event, kv.get("why"))
    return out


def test_no_delivery_into_folders_others_own_or_may_write(make_dropped,
        sysuser):
    """In a shared maildir-root (1777), a folder another user made on the
    way to an owner's Maildir, or a Maildir others may write to, defers
    the message with the folder named: nobody but the owner (and root
    above the owner's part) may read or remove the owner's mail."""
    ann = sysuser("pstnann", "Ann pw 1")
    bob = sysuser("pstnbob", "Bob pw 1")
    srv = make_dropped(start=False, extra=["maildir-root {tmp}/shared",
        "table pw passwd"])
    srv.write_config(open(srv.conf).read().replace(
        'maildir "%s/mail/%%{rcpt.user}/Maildir"' % srv.dir,
        'maildir "%s/shared/%%{rcpt.user}/Maildir" as <pw>' % srv.dir))
    shared = shared_root(srv, "shared")
    # Bob makes Ann's Maildir before her first mail; his own new/ is 0777.
    for who, sub, mode in ((bob, "pstnann/Maildir/new", 0o777),
            (bob, "pstnbob/Maildir/new", 0o700)):
        for i in range(1, 4):
            p = os.path.join(shared, *sub.split("/")[:i])
            os.makedirs(p, exist_ok=True)
            os.chown(p, who.pw_uid, who.pw_gid)
            os.chmod(p, mode)
    os.chmod(os.path.join(shared, "pstnbob/Maildir/new"), 0o777)
    srv.start()
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["pstnann@example.org",
            "pstnbob@example.org"], BODY)
    got = wait_for(lambda: len(outcomes(srv)) == 2 and outcomes(srv), 15,
        what="both outcomes")
    assert got["<pstnann@example.org>"] == ("deferred", "as pstnann: "
        "%s/pstnann belongs to pstnbob, not to the owner or root" % shared)
    assert got["<pstnbob@example.org>"] == ("deferred", "as pstnbob: "
        "%s/pstnbob/Maildir/new may be written by others than its owner "
        "(mode 0777)" % shared)
    for who in ("pstnann", "pstnbob"):
        assert os.listdir(os.path.join(shared, who, "Maildir", "new")) == []


def test_a_folder_owners_share_is_roots_and_failures_name_the_folder(
        make_dropped, sysuser):
    """A folder several owners share (%{rcpt.domain}), made on the first
    delivery in a shared maildir-root (1777), is root's with the root's
    mode, so the next owner makes a folder in it too; the owner's own
    folder is the owner's (0700).  A folder the owner may not search
    defers with that folder named."""
    ann = sysuser("pstnann", "Ann pw 1")
    bob = sysuser("pstnbob", "Bob pw 1")
    srv = make_dropped(start=False)
    srv.write_config(make_config(["user " + USER, "group " + GROUP,
        "maildir-root {tmp}/shared {tmp}/locked", "table pw passwd"],
        actions='action own maildir "{tmp}/shared/%{rcpt.domain}/'
        '%{rcpt.user}/Maildir" as <pw>\n'
        'action lck maildir "{tmp}/locked/inner/%{rcpt.user}/Maildir" '
        'as <pw>\n', rules=["match to domain own.test action own",
        "match to domain lck.test action lck"]))
    os.chmod(srv.conf, 0o644)
    shared = shared_root(srv, "shared")
    shared_root(srv, "locked", 0o755)
    shared_root(srv, "locked/inner", 0o700)
    srv.start()
    for rcpt in ("pstnann@own.test", "pstnbob@own.test", "pstnann@lck.test"):
        with srv.session() as c:
            c.hello()
            send_message(c, "a@example.net", [rcpt], BODY)
        got = wait_for(lambda: outcomes(srv).get("<%s>" % rcpt), 15,
            what="%s's outcome" % rcpt)
        if rcpt.endswith("own.test"):
            assert got == ("delivered", None), (rcpt, got)
    st = os.stat(os.path.join(shared, "own.test"))
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o1777)
    for pw in (ann, bob):
        st = os.stat(os.path.join(shared, "own.test", pw.pw_name))
        assert (st.st_uid, st.st_mode & 0o7777) == (pw.pw_uid, 0o700)
    for pw in (ann, bob):
        new = os.path.join(shared, "own.test", pw.pw_name, "Maildir", "new")
        assert len(os.listdir(new)) == 1
    assert got == ("deferred", "as pstnann: lstat(%s/pstnann): Permission "
        "denied" % srv.path("locked", "inner"))


def test_a_named_owner_makes_every_folder_of_its_own(make_dropped, sysuser):
    """With one owner for every mailbox (`as USER`), no folder in a shared
    maildir-root is root's 1777: a per-recipient folder made so would let
    any local user plant a Maildir there first."""
    ann = sysuser("pstnann", "Ann pw 1")
    srv = make_dropped(start=False)
    srv.write_config(make_config(["user " + USER, "group " + GROUP,
        "maildir-root {tmp}/shared"],
        actions='action own maildir "{tmp}/shared/%{rcpt.domain}/'
        '%{rcpt.user}/Maildir" as pstnann\n',
        rules=["match to domain own.test action own"]))
    os.chmod(srv.conf, 0o644)
    shared = shared_root(srv, "shared")
    srv.start()
    with srv.session() as c:
        c.hello()
        send_message(c, "a@example.net", ["x@own.test"], BODY)
    got = wait_for(lambda: outcomes(srv).get("<x@own.test>"), 15,
        what="the outcome")
    assert got == ("delivered", None), got
    for d in ("own.test", "own.test/x"):
        st = os.stat(os.path.join(shared, d))
        assert (st.st_uid, st.st_mode & 0o7777) == (ann.pw_uid, 0o700), d


@pytest.mark.parametrize("existing", [False, True],
    ids=["made", "left-readable"])
def test_the_state_store_is_the_users_alone(make_dropped, existing):
    """The state store holds addresses (greylist triplets).  With the spool
    folder 0755 (as `install -d` makes it) and umask 0, the database and
    the files SQLite keeps beside it are 0600, whether the server makes it
    or finds one others may read; the start warns about the folder."""
    uid, _ = ids()
    srv = make_dropped(["on rcpt { greylist delay 2m }"], start=False)
    spool = srv.path("spool")
    os.chmod(spool, 0o755)
    if existing:
        db = os.path.join(spool, "state.db")
        open(db, "wb").close()
        os.chown(db, *ids())
        os.chmod(db, 0o644)
    old = os.umask(0)
    try:
        srv.start()
    finally:
        os.umask(old)
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<secret@corp.example>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(451, "4.7.1")
    names = ("state.db", "state.db-wal", "state.db-shm")
    wait_for(lambda: all(os.path.exists(os.path.join(spool, n))
        for n in names), what="the state store and its -wal, -shm")
    got = {n: (oct(os.stat(os.path.join(spool, n)).st_mode & 0o777),
        os.stat(os.path.join(spool, n)).st_uid) for n in names}
    assert got == {n: ("0o600", uid) for n in names}, got
    assert "warn spool %s is mode 755: other local users may look into " \
        "it; make it 0700" % spool in srv.log(), srv.log()[-2000:]


def dropped_with_log_file(make_dropped):
    """A server dropping to nobody, logging to log/postern.log in a folder
    of nobody's (as docs/deploy.md says); not started."""
    uid, gid = ids()
    srv = make_dropped(start=False)
    os.mkdir(srv.path("log"))
    os.chown(srv.path("log"), uid, gid)
    os.chmod(srv.path("log"), 0o750)
    srv.write_config(make_config(["user " + USER, "group " + GROUP,
        "log file {tmp}/log/postern.log"]))
    os.chmod(srv.conf, 0o644)
    return srv, srv.path("log", "postern.log")


def test_the_log_file_made_at_start_is_the_users(make_dropped):
    """The log file, made as root before the drop, is given to the user,
    so that SIGUSR1 (logrotate) can open it again after the drop."""
    uid, gid = ids()
    srv, log = dropped_with_log_file(make_dropped)
    srv.start()
    wait_for(lambda: "postern started" in read_log(log), what="the start")
    st = os.stat(log)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o640), \
        (st.st_uid, st.st_gid, oct(st.st_mode))
    srv.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "SIGUSR1" in read_log(log) or
        "log file reopened" in read_log(log), what="the reopen")
    assert "error SIGUSR1" not in read_log(log), read_log(log)[-2000:]
    assert "log file reopened" in read_log(log)


def test_a_log_file_of_roots_found_at_start_is_warned_about(make_dropped):
    """A log file root made before (an older start, an admin): left as it
    is, with a warning that a reopen after the drop will fail."""
    srv, log = dropped_with_log_file(make_dropped)
    open(log, "w").close()
    os.chmod(log, 0o640)
    srv.start()
    wait_for(lambda: "postern started" in read_log(log), what="the start")
    assert "warn log file %s belongs to uid 0, not to the user postern " \
        "runs as (uid %d): reopening it (SIGUSR1, logrotate) and rotating " \
        "it will fail; chown it to that user" % (log, ids()[0]) \
        in read_log(log), read_log(log)[-2000:]
    assert os.stat(log).st_uid == 0

@pytest.fixture
def root_alias():
    """A second account with uid 0 ("pstntoor"), removed afterwards."""
    name = "pstntoor"
    subprocess.run(["userdel", "-f", name], capture_output=True)
    r = subprocess.run(["useradd", "-o", "-u", "0", "-g", "0", "-M", "-d",
        "/root", "-s", "/usr/sbin/nologin", name], capture_output=True,
        text=True)
    if r.returncode != 0:
        machine_lacks("useradd for a uid 0 account: %s" % r.stderr)
    yield name
    subprocess.run(["userdel", "-f", name], capture_output=True)


def test_maildir_as_an_unusable_account_is_refused(make_dropped,
        root_alias):
    """`maildir ... as USER` names an account the Maildir can be written
    as: one that does not exist, or root under another name (uid 0), is
    refused by check, by the start and by a reload, as `as root` is,
    rather than taking mail that could never be delivered."""
    srv = make_dropped(start=False, extra=[
        'action ghost maildir "{tmp}/mail/ghost/Maildir" as pstn-no-such',
        'action toor maildir "{tmp}/mail/toor/Maildir" as %s' % root_alias,
        "match to domain ghost.example action ghost",
        "match to domain toor.example action toor"])
    with open(srv.conf) as f:
        text = f.read()
    at = {n: i for i, l in enumerate(text.splitlines(), 1)
          for n in ("ghost", "toor") if l.startswith("action " + n + " ")}
    r = run_cli("check", "-c", srv.conf)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "%s:%d: action ghost: as pstn-no-such: no such user" % (
        srv.conf, at["ghost"]) in out, out
    assert "%s:%d: action toor: as %s: uid 0 is root" % (srv.conf,
        at["toor"], root_alias) in out, out
    r = run_cli("run", "-c", srv.conf, cwd=srv.dir, timeout=15)
    assert r.returncode == 1 and "as pstn-no-such: no such user" in \
        r.stderr, r.stderr

    good = text.replace("as pstn-no-such", "as " + USER).replace(
        "as " + root_alias, "as " + USER)
    srv.write_config(good)
    srv.start()
    srv.write_config(text)
    srv.sighup()
    wait_for(lambda: "reload failed" in srv.log(), 10,
        what="the reload refused")
    assert "action ghost: as pstn-no-such: no such user" in srv.log(), \
        srv.log()[-2000:]
    assert srv.alive()
