"""The Debian package: built from a copy of the tree with
`dpkg-buildpackage -b -us -uc` (the developer's tree is not touched),
checked by lintian (no errors), then installed, started, used and purged
with dpkg on the machine as seen through an overlay (package_sandbox.sh),
so the install leaves nothing behind and port 25 is the sandbox's own:
once as on a host without systemd (the SysV script), once under a systemd
booted in the sandbox as PID 1 (the hardened postern.service).  About two
minutes on an idle machine."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import REPO, machine_lacks, needs

pytestmark = needs(os.geteuid() == 0, "root, which dpkg and the sandbox's "
    "namespaces need (run the suite as root)")

BUILD_TIMEOUT = 600
SANDBOX_TIMEOUT = 400


def need(prog):
    if shutil.which(prog) is None:
        pytest.fail("%s not found: scripts/bootstrap installs what the "
            "package build needs" % prog)


def copy_tree(dst):
    """The files git knows of (committed or not, but not ignored): what a
    checkout would hold, without build folders."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
        "--exclude-standard"], cwd=REPO, stdout=subprocess.PIPE, check=True)
    for rel in r.stdout.decode().split("\0"):
        if not rel or not os.path.lexists(os.path.join(REPO, rel)):
            continue
        os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), os.path.join(dst, rel),
            follow_symlinks=False)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    for prog in ("dpkg-buildpackage", "dh", "lintian", "scdoc"):
        need(prog)
    top = tmp_path_factory.mktemp("deb")
    src = top / "postern"
    copy_tree(str(src))
    r = subprocess.run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=src,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=BUILD_TIMEOUT, env=dict(os.environ,
        DEB_BUILD_OPTIONS="nocheck parallel=2"))
    assert r.returncode == 0, "dpkg-buildpackage failed:\n" + r.stdout[-6000:]
    debs = [p for p in top.iterdir() if p.name.startswith("postern_") and
        p.name.endswith(".deb")]
    assert len(debs) == 1, sorted(os.listdir(top))
    return debs[0]


def test_lintian_finds_no_errors(deb):
    changes = next(p for p in deb.parent.iterdir() if p.suffix == ".changes")
    r = subprocess.run(["lintian", "--fail-on", "error", "--tag-display-limit",
        "0", str(changes)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=300)
    errors = [l for l in r.stdout.splitlines() if l.startswith("E:")]
    assert r.returncode == 0 and not errors, r.stdout


def test_package_contents(deb):
    r = subprocess.run(["dpkg-deb", "-c", str(deb)], stdout=subprocess.PIPE,
        text=True, check=True)
    paths = {l.split()[5].lstrip(".") for l in r.stdout.splitlines()}
    for p in ("/usr/sbin/postern", "/etc/postern/postern.conf",
            "/var/spool/postern/", "/etc/init.d/postern",
            "/lib/systemd/system/postern.service",
            "/lib/systemd/system/postern.socket",
            "/usr/share/man/man5/postern.conf.5.gz",
            "/usr/share/man/man8/postern.8.gz",
            "/usr/share/doc/postern/config.md.gz",
            "/usr/share/doc/postern/metrics.md.gz",
            "/usr/share/doc/postern/proxy.md.gz",
            "/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq",
            "/usr/bin/newaliases"):
        assert p in paths, "%s not in the package:\n%s" % (p, r.stdout)
    r = subprocess.run(["dpkg-deb", "-f", str(deb), "Provides", "Conflicts",
        "Replaces"], stdout=subprocess.PIPE, text=True, check=True)
    assert r.stdout.count("mail-transport-agent") == 3, r.stdout


SANDBOXES = {}


def own_cgroup():
    """A new cgroup v2 below ours, for the sandbox's systemd to make its
    own in (the root of its cgroup namespace)."""
    root = "/sys/fs/cgroup/unified"
    if not os.path.exists(os.path.join(root, "cgroup.procs")):
        root = "/sys/fs/cgroup"
        if not os.path.exists(os.path.join(root, "cgroup.procs")):
            machine_lacks("a cgroup v2 file system (/sys/fs/cgroup or "
                "/sys/fs/cgroup/unified), which systemd in the sandbox needs")
    with open("/proc/self/cgroup") as f:
        mine = [l.split(":", 2)[2].strip() for l in f if l.startswith("0::")]
    cg = os.path.join(root + mine[0], "postern-package-%d" % os.getpid())
    os.mkdir(cg)
    return cg


def remove_cgroup(cg):
    """The sandbox's cgroups, deepest first, once their processes are gone
    (the PID namespace ended with its systemd)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            for d, _subs, _files in sorted(os.walk(cg), key=lambda w:
                    -w[0].count("/")):
                os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_sandbox(deb, tmp_path_factory, mode):
    """The report of package_inside.py run in a fresh sandbox (once a
    mode: the tests share it)."""
    if mode in SANDBOXES:
        return SANDBOXES[mode]
    need("unshare")
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            machine_lacks("overlayfs in the kernel (/proc/filesystems), "
                "which the package sandbox needs")
    if mode == "systemd" and not os.access("/lib/systemd/systemd", os.X_OK):
        pytest.fail("/lib/systemd/systemd not found: scripts/bootstrap "
            "installs the systemd package")
    top = tmp_path_factory.mktemp("sandbox-" + mode)
    work = top / "dir"
    work.mkdir()
    (top / "top").mkdir()
    shutil.copy(deb, work / "postern.deb")
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copy(os.path.join(here, "package_inside.py"), work)
    cg = own_cgroup() if mode == "systemd" else None
    try:
        r = subprocess.run(["sh", "-c", 'if [ -n "$1" ]; then echo $$ > '
            '"$1/cgroup.procs"; fi; shift; exec "$@"', "sh", cg or "",
            "unshare", "--mount", "--net", "--pid", "--cgroup", "--fork",
            "--propagation", "private", "sh",
            os.path.join(here, "package_sandbox.sh"), str(top / "top"),
            str(work), mode], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=SANDBOX_TIMEOUT)
    finally:
        if cg is not None:
            remove_cgroup(cg)
    path = work / "report.json"
    logs = "".join("\n--- %s:\n%s" % (n, (work / n).read_text()[-3000:])
        for n in ("inside.log", "systemd.log") if (work / n).exists())
    assert path.exists(), "the sandbox wrote no report (exit %d):\n%s%s" % (
        r.returncode, r.stdout[-4000:], logs)
    report = json.loads(path.read_text())
    assert "exception" not in report, report["exception"] + "\n" + \
        json.dumps(report, indent=1)[-6000:] + logs
    SANDBOXES[mode] = report
    return report


@pytest.fixture(scope="module", params=["sysv", "systemd"])
def sandbox(request, deb, tmp_path_factory):
    return run_sandbox(deb, tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def under_systemd(deb, tmp_path_factory):
    return run_sandbox(deb, tmp_path_factory, "systemd")


def test_install_starts_a_hardened_running_server(sandbox):
    rep = sandbox
    assert rep["install"]["rc"] == 0, rep["install"]["out"]
    # dpkg started it: the SysV script, or systemd (whichever is PID 1).
    assert rep["started_by_postinst"], rep["install"]["out"]
    run = rep["running"]
    assert run["pid"] and run["port25"] and run["status"] == 0, run
    assert run["user"] == "postern:mail", "the server runs as %s" % run["user"]
    assert rep["user"]["shell"] in ("/usr/sbin/nologin", "/bin/false"), \
        rep["user"]
    assert rep["spool"] == {"owner": "postern", "mode": "0o700"}, rep["spool"]
    assert rep["analyze"] == {"rc": 0, "out": ""}, rep["analyze"]["out"]


def test_mail_through_sendmail_and_smtp(sandbox):
    rep = sandbox
    assert rep["sendmail"] == {"rc": 0, "out": ""}, rep["sendmail"]
    assert len(rep["sendmail_delivered"]) == 1, rep
    m = rep["sendmail_delivered"][0]
    assert "hello from sendmail" in m and "Received: from local user root" \
        in m, m
    assert rep["ehlo"] == 250
    assert len(rep["smtp_delivered"]) == 1, rep
    assert "hello over SMTP" in rep["smtp_delivered"][0]
    assert rep["smtp_file_owner"] == "postern:mail"
    code, text = rep["relay_attempt"]
    assert code == 550 and text.startswith("5.7.1"), rep["relay_attempt"]
    assert rep["mailq"]["rc"] == 0, rep["mailq"]
    # Prometheus can scrape it (the connections include the test's probes
    # of port 25): sendmail's message delivered by the queue, the SMTP one
    # before its 250.
    status, body = rep["metrics"]
    assert status == 200, body
    assert re.search(r"^postern_connections_accepted_total [1-9]", body,
        re.M), body
    assert re.search(r'^postern_deliveries_total\{action="maildir",'
        r'result="delivered"\} 2$', body, re.M), body
    assert re.search(r"^postern_messages_accepted_total 1$", body, re.M), \
        body
    assert re.search(r'^postern_smtp_refusals_total\{stage="rcpt",'
        r'class="5xx"\} 1$', body, re.M), body
    assert rep["healthz"] == [200, "ok\n"], rep["healthz"]
    assert rep["newaliases"]["rc"] == 0, rep["newaliases"]


def test_manuals_are_installed(sandbox):
    man = sandbox["man"]
    assert man["5 postern.conf"].endswith("man5/postern.conf.5.gz"), man
    assert man["8 postern"].endswith("man8/postern.8.gz"), man
    # sendmail(8) is a link to postern-send(8), which man resolves.
    assert man["8 sendmail"].endswith("man8/postern-send.8.gz"), man
    assert "postern.conf - configuration of the postern SMTP server" in \
        " ".join(sandbox["man_text"].split()), sandbox["man_text"]


def test_reload_and_conffile_kept_on_reinstall(sandbox):
    rep = sandbox
    assert "/etc/postern/postern.conf" in rep["conffiles"], rep["conffiles"]
    assert rep["reload"]["rc"] == 0, rep["reload"]
    assert rep["after_reload"]["pid"] == rep["running"]["pid"], rep
    assert rep["reinstall"]["rc"] == 0, rep["reinstall"]["out"]
    assert rep["conf_after_reinstall"].endswith("# edited by the admin\n")
    again = rep["after_reinstall"]
    assert again["pid"] and again["port25"] and \
        again["user"] == "postern:mail", again


def test_purge_removes_it(sandbox):
    rep = sandbox
    assert rep["purge"]["rc"] == 0, rep["purge"]["out"]
    gone = rep["after_purge"]
    assert gone["process"] is False and gone["port25"] is False, gone
    assert gone["left"] == [], gone
    assert gone["dpkg_status"] != 0


CAPS = {"CAP_DAC_READ_SEARCH": 2, "CAP_KILL": 5, "CAP_SETGID": 6,
    "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10, "CAP_AUDIT_WRITE": 29}


def test_systemd_runs_the_hardened_unit(under_systemd):
    """Under systemd, dpkg's start is postern.service: Type=notify (the
    start waited for READY, the status text is postern's), and the running
    server has the unit's sandbox: no new privileges, no capability outside
    the bounding set, a system call filter, / read-only but the spool, a
    /tmp of its own; a reload keeps the process."""
    rep = under_systemd
    assert rep["init"] == "systemd", rep["init"]
    run = rep["running"]
    unit = dict(l.split("=", 1) for l in run["unit"].splitlines() if "=" in l)
    assert (unit["ActiveState"], unit["SubState"], unit["Type"]) == (
        "active", "running", "notify"), unit
    assert "accepting mail on" in unit["StatusText"], unit
    h = run["hardening"]
    assert h["NoNewPrivs"] == "1" and h["Seccomp"] == "2", h
    allowed = sum(1 << b for b in CAPS.values())
    assert int(h["CapBnd"], 16) == allowed, h
    assert int(h["CapEff"], 16) == 0, h		# after the drop to postern
    assert h["root"].startswith("ro"), h
    assert h["spool"] is not None and h["spool"].startswith("rw"), h
    assert h["tmp_own"], h
    assert rep["reload"]["rc"] == 0, rep["reload"]
    assert rep["after_reload"]["pid"] == run["pid"], rep["after_reload"]
    assert "reloaded" in rep["after_reload"]["unit"], rep["after_reload"]


def test_systemd_socket_activation(under_systemd):
    """postern.socket alone: the first connection starts postern.service,
    which greets on the socket systemd bound (127.0.0.1:25 and [::1]:25)."""
    sa = under_systemd["socket"]
    assert sa["stop"]["rc"] == 0 and sa["start"]["rc"] == 0, sa
    assert sa["before"] == "inactive" and sa["after"] == "active", sa
    assert sa["ehlo"] == 250, sa
    passed = [l for l in sa["journal"] if "(socket passed by the service "
        "manager)" in l]
    assert len(passed) == 2, sa["journal"]
    assert all(r["rc"] == 0 for r in sa["back"]), sa["back"]
