"""The port-redirect recipe of docs/deploy.md, run as written: in a network
namespace of its own, each block's lines redirect 127.0.0.1:25 and [::1]:25
to a postern on port 2525, and its undo lines take that back."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, binary, needs

pytestmark = needs(os.geteuid() == 0, "root, which a network namespace and "
    "its firewall rules need (run the suite as root)")

DRIVER = r"""
import os, smtplib, socket, subprocess, sys, time
work, postern = sys.argv[1], sys.argv[2]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
log = open(os.path.join(work, "postern.log"), "w")
proc = subprocess.Popen([postern, "run", "-c", "postern.conf"], cwd=work,
    stdout=log, stderr=log)
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False
deadline = time.monotonic() + 20
while not (reach("127.0.0.1", 2525) and reach("::1", 2525)):
    assert time.monotonic() < deadline, "postern did not start"
    time.sleep(0.05)
subprocess.run(["sh", "-e", "apply.sh"], cwd=work, check=True)
for host in ("127.0.0.1", "::1"):
    try:
        with smtplib.SMTP(host, 25, timeout=10) as c:
            c.sendmail("a@example.org", ["bob@example.org"], "Subject: r\r\n\r\nx\r\n")
        print("redirected", host)
    except OSError as e:
        print("not redirected", host, e)
subprocess.run(["sh", "-e", "undo.sh"], cwd=work, check=True)
for host in ("127.0.0.1", "::1"):
    print("still open" if reach(host, 25) else "closed", host)
proc.terminate()
proc.wait(30)
"""


def recipes():
    with open(os.path.join(REPO, "docs", "deploy.md")) as f:
        doc = f.read()
    part = doc.split("## Port 25 without root: a redirect", 1)[1]
    part = part.split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", part, re.M | re.S)
    assert len(blocks) == 2, "deploy.md: the nftables and iptables blocks"
    out = []
    for b in blocks:
        apply, undo = re.split(r"^# undo.*\n", b, maxsplit=1, flags=re.M)
        out.append(pytest.param(apply, undo, id=b.split()[0]))
    return out


@pytest.mark.parametrize("apply,undo", recipes())
def test_redirect_recipe(tmp_path, apply, undo):
    tool = apply.split()[0]
    if shutil.which(tool) is None:
        pytest.fail("%s not found: scripts/bootstrap installs it" % tool)
    (tmp_path / "apply.sh").write_text(apply)
    (tmp_path / "undo.sh").write_text(undo)
    (tmp_path / "postern.conf").write_text(
        "hostname redirect.example\nspool %s/spool\n"
        "listen 127.0.0.1:2525\nlisten [::1]:2525\n"
        'action local maildir "%s/mail/%%{rcpt.user}/Maildir"\n'
        "match to domain example.org action local\n" % (tmp_path, tmp_path))
    r = subprocess.run(["unshare", "--net", "/usr/bin/python3", "-c", DRIVER,
        str(tmp_path), binary()], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    lines = r.stdout.split("\n")
    for want in ("redirected 127.0.0.1", "redirected ::1", "closed 127.0.0.1",
            "closed ::1"):
        assert want in lines, "%s\n--- postern:\n%s" % (r.stdout,
            (tmp_path / "postern.log").read_text())
    new = tmp_path / "mail" / "bob" / "Maildir" / "new"
    assert len(os.listdir(new)) == 2, "one message per address family"
