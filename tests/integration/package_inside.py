"""Inside the package sandbox (package_sandbox.sh): install postern.deb with
dpkg, which starts it (MODE sysv: with its SysV script, as a host without
systemd does; MODE systemd: as postern.service, under the systemd that
booted the sandbox), send a message with sendmail and one over SMTP, check
the conffile survives a reinstall, then purge.  Writes what it saw to
DIR/report.json for test_package.py to judge; every wait is bounded."""

import grp
import json
import os
import pwd
import smtplib
import socket
import subprocess
import sys
import time
import traceback

DIR = sys.argv[1]
SYSTEMD = sys.argv[2] == "systemd"
DEB = os.path.join(DIR, "postern.deb")
CONF = "/etc/postern/postern.conf"
PIDFILE = "/run/postern/postern.pid"
report = {}


def run(*argv, stdin=None, timeout=120):
    p = subprocess.run(list(argv), input=stdin, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=timeout)
    return {"rc": p.returncode, "out": p.stdout.decode("utf-8", "replace")}


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    return cond()


def port_open(port=25):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def server_pid():
    if SYSTEMD:
        out = run("systemctl", "show", "-p", "MainPID", "--value",
            "postern.service")["out"].strip()
        pid = int(out) if out.isdigit() else 0
        return pid if pid and alive(pid) else 0
    try:
        with open(PIDFILE) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
    return pid if pid and alive(pid) else 0


def alive(pid):
    """pid runs (we are PID 1 here: a daemon that exited is our zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_user(pid):
    with open("/proc/%d/status" % pid) as f:
        st = dict(l.split(":", 1) for l in f)
    return "%s:%s" % (pwd.getpwuid(int(st["Uid"].split()[0])).pw_name,
        grp.getgrgid(int(st["Gid"].split()[0])).gr_name)


def maildir(user):
    d = "/var/mail/%s/Maildir/new" % user
    try:
        return [os.path.join(d, n) for n in sorted(os.listdir(d))]
    except OSError:
        return []


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def http_get(path):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", 9925, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return [r.status, r.read().decode()]
    finally:
        c.close()


def state():
    """Is postern installed, running, listening?"""
    pid = server_pid()
    out = {"pid": pid, "user": proc_user(pid) if pid else None,
        "port25": port_open(), "status": run("/etc/init.d/postern",
        "status")["rc"]}
    if SYSTEMD:
        out["status"] = run("systemctl", "is-active", "postern.service")["rc"]
        out["unit"] = run("systemctl", "show", "-p", "ActiveState,SubState,"
            "Type,NRestarts,StatusText", "postern.service")["out"]
        out["hardening"] = hardening(pid) if pid else None
    return out


def hardening(pid):
    """What the unit's sandbox left the server: its status lines, and
    whether / is read-only and /tmp its own."""
    with open("/proc/%d/status" % pid) as f:
        st = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
    mounts = {}
    with open("/proc/%d/mountinfo" % pid) as f:
        for l in f:
            w = l.split()
            mounts[w[4]] = w[5]
    return {k: st.get(k) for k in ("NoNewPrivs", "CapBnd", "CapEff",
        "Seccomp")} | {"root": mounts.get("/"), "tmp_own": os.stat(
        "/proc/%d/root/tmp" % pid).st_ino != os.stat("/tmp").st_ino,
        "spool": mounts.get("/var/spool/postern")}


def other_mtas():
    """Installed packages that provide mail-transport-agent (postfix, put
    there by bench/run): they conflict with postern, so the sandbox drops
    them first, as apt would."""
    out = run("dpkg-query", "-W", "-f", "${Package} ${Status} ${Provides}\n")
    return [l.split()[0] for l in out["out"].splitlines()
        if " installed" in l and "mail-transport-agent" in l]


def socket_activation():
    """postern.socket instead of the service: the first connection starts
    postern.service, which takes the sockets systemd bound."""
    out = {"stop": run("systemctl", "stop", "postern.service"),
        "start": run("systemctl", "start", "postern.socket")}
    out["before"] = run("systemctl", "is-active", "postern.service")[
        "out"].strip()
    with smtplib.SMTP("127.0.0.1", 25, timeout=60) as s:
        out["ehlo"] = s.ehlo("client.example")[0]
    out["after"] = run("systemctl", "is-active", "postern.service")[
        "out"].strip()
    out["journal"] = [l for l in run("journalctl", "--no-pager", "-o", "cat",
        "-u", "postern.service")["out"].splitlines() if "listening on" in l]
    # Back as installed: the service binds its own addresses.
    out["back"] = [run("systemctl", "stop", "postern.socket",
        "postern.service"), run("systemctl", "start", "postern.service")]
    return out


def main():
    # A container image's "exit 101" policy-rc.d would stop dpkg from
    # starting the service, which a real host does.
    report["policy_rc_d"] = os.path.exists("/usr/sbin/policy-rc.d")
    if report["policy_rc_d"]:
        os.unlink("/usr/sbin/policy-rc.d")
    if not SYSTEMD:
        # No init runs here: runlevel(8) answers as sysvinit's does in
        # multi-user mode, so invoke-rc.d starts what rc2.d starts.
        os.unlink("/sbin/runlevel")
        with open("/sbin/runlevel", "w") as f:
            f.write("#!/bin/sh\necho N 2\n")
        os.chmod("/sbin/runlevel", 0o755)
    report["init"] = read("/proc/1/comm").strip()
    mtas = other_mtas()
    report["removed_mtas"] = mtas
    if mtas:
        report["remove"] = run("dpkg", "--remove", "--force-depends", *mtas)
    report["install"] = run("dpkg", "-i", DEB)
    report["started_by_postinst"] = wait_for(lambda: port_open(), 15)
    if not report["started_by_postinst"]:
        report["start"] = run("systemctl", "start", "postern.service") if \
            SYSTEMD else run("/etc/init.d/postern", "start")
    wait_for(lambda: port_open() and server_pid(), 30)
    report["running"] = state()
    pw = pwd.getpwnam("postern")
    report["user"] = {"uid": pw.pw_uid, "home": pw.pw_dir,
        "shell": pw.pw_shell, "groups": run("id", "-nG", "postern")["out"]}
    st = os.stat("/var/spool/postern")
    report["spool"] = {"owner": pwd.getpwuid(st.st_uid).pw_name,
        "mode": oct(st.st_mode & 0o7777)}

    report["sendmail"] = run("/usr/sbin/sendmail", "-f", "root", "root",
        stdin=b"Subject: via sendmail\n\nhello from sendmail\n")
    files = wait_for(lambda: maildir("root"), 30)
    report["sendmail_delivered"] = [read(f) for f in files or []]

    with smtplib.SMTP("127.0.0.1", 25, timeout=30) as s:
        report["ehlo"] = s.ehlo("client.example")[0]
        s.sendmail("someone@localhost", ["alice@localhost"],
            b"Subject: via smtp\r\n\r\nhello over SMTP\r\n")
        code, text = s.docmd("MAIL FROM:<a@localhost>")
        code, text = s.docmd("RCPT TO:<victim@example.com>")
        report["relay_attempt"] = [code, text.decode()]
        s.docmd("RSET")
    files = wait_for(lambda: maildir("alice"), 30)
    report["smtp_delivered"] = [read(f) for f in files or []]
    if files:
        st = os.stat(files[0])
        report["smtp_file_owner"] = "%s:%s" % (pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)

    report["metrics"] = http_get("/metrics")
    report["healthz"] = http_get("/healthz")
    report["mailq"] = run("/usr/bin/mailq")
    report["newaliases"] = run("/usr/bin/newaliases")
    report["man"] = {page: run("man", "-w", *page.split())["out"].strip()
        for page in ("5 postern.conf", "8 postern", "8 sendmail")}
    report["man_text"] = run("man", "5", "postern.conf")["out"][:400]
    report["analyze"] = run("systemd-analyze", "verify",
        "/lib/systemd/system/postern.service",
        "/lib/systemd/system/postern.socket")
    report["conffiles"] = run("dpkg-query", "-W", "-f", "${Conffiles}",
        "postern")["out"]
    report["reload"] = run("systemctl", "reload", "postern.service") if \
        SYSTEMD else run("/etc/init.d/postern", "reload")
    if SYSTEMD and report["reload"]["rc"] != 0:
        report["reload"]["journal"] = run("journalctl", "--no-pager", "-n",
            "30", "-u", "postern.service")["out"]
    time.sleep(0.5)	# a reload keeps the process: it must still be there
    report["after_reload"] = state()

    if SYSTEMD:
        report["socket"] = socket_activation()

    # The admin edits the configuration; a reinstall keeps the edit.
    with open(CONF, "a") as f:
        f.write("# edited by the admin\n")
    report["reinstall"] = run("dpkg", "-i", DEB)
    report["conf_after_reinstall"] = read(CONF)
    if not wait_for(lambda: port_open() and server_pid(), 30):
        report["restart"] = run("systemctl", "start", "postern.service") \
            if SYSTEMD else run("/etc/init.d/postern", "start")
        wait_for(lambda: port_open() and server_pid(), 30)
    report["after_reinstall"] = state()

    pid = server_pid()
    report["purge"] = run("dpkg", "--purge", "postern")
    wait_for(lambda: not alive(pid), 30)
    report["after_purge"] = {
        "process": alive(pid) if pid else None,
        "port25": port_open(),
        "left": [p for p in ("/etc/postern", "/usr/sbin/postern",
            "/usr/sbin/sendmail", "/usr/bin/mailq", "/etc/init.d/postern",
            "/var/spool/postern", "/lib/systemd/system/postern.service")
            if os.path.lexists(p)],
        "dpkg_status": run("dpkg", "-s", "postern")["rc"],
    }


try:
    main()
except Exception:
    report["exception"] = traceback.format_exc()
with open(os.path.join(DIR, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
