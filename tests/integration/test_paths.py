"""Relative paths in a configuration are relative to the configuration
file's folder (docs/config.md), so `postern run`, `check`, `queue` and
`send` find the same spool and Maildirs wherever they are started, and
the shipped etc/postern.conf works as the README's quick start says.

The tests copy the repository's layout into a temporary folder ROOT:
ROOT/etc/postern.conf is the shipped file, only its port changed; mail
must land in ROOT/var/mail/<user>/Maildir/new/.
"""

import os
import subprocess

from conftest import (REPO, binary, read_bytes, run_cli, send_message,
    split_delivered, wait_for)

SHIPPED = os.path.join(REPO, "etc", "postern.conf")


def shipped_tree(make_postern, tmp_path):
    """A server (not started) whose config is the shipped one at
    ROOT/etc/postern.conf; srv.dir is ROOT."""
    with open(SHIPPED) as f:
        text = f.read()
    assert "\nlisten 127.0.0.1:2525\n" in text, "the shipped listen line moved"
    text = text.replace("\nlisten 127.0.0.1:2525\n",
        "\nlisten 127.0.0.1:{port}\n")
    srv = make_postern(config=text, start=False)
    os.mkdir(srv.path("etc"))
    srv.conf = srv.path("etc", "postern.conf")
    srv.write_config(text)
    os.unlink(srv.path("postern.conf"))
    return srv


def maildir_new(root, user):
    d = os.path.join(root, "var", "mail", user, "Maildir", "new")
    try:
        return [os.path.join(d, n) for n in sorted(os.listdir(d))]
    except FileNotFoundError:
        return []


def smtp_to(srv, rcpt, subject):
    """One message over SMTP, as swaks in the README's quick start."""
    with srv.session() as c:
        c.hello()
        send_message(c, "someone@localhost", [rcpt],
            "Subject: %s\r\n\r\nhello\r\n" % subject)


def send_from(cwd, conf, rcpts, msg):
    return subprocess.run([binary(), "send", "-C", conf] + rcpts, input=msg,
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)


def test_quick_start_and_send_from_another_folder(make_postern, tmp_path):
    """As scripts/run starts it (from ROOT, -c etc/postern.conf): SMTP mail
    for alice@localhost lands in ROOT/var/mail/alice/Maildir/new/, and so
    does `postern send` run from an unrelated folder; check and queue
    agree from there too, and nothing is created beside the caller."""
    srv = shipped_tree(make_postern, tmp_path)
    root = srv.dir
    conf = srv.conf
    srv.conf = os.path.join("etc", "postern.conf")	# relative, from ROOT
    srv.start()
    smtp_to(srv, "alice@localhost", "quick start")
    wait_for(lambda: maildir_new(root, "alice"), timeout=10,
        what="the quick start's message in ROOT/var/mail/alice")

    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    wait_for(lambda: os.path.exists(os.path.join(root, "var", "spool",
        "control.sock")), what="the control socket")
    r = send_from(str(elsewhere), conf, ["alice@localhost"],
        b"Subject: from elsewhere\n\nsent from another folder\n")
    assert r.returncode == 0, r.stderr
    files = wait_for(lambda: len(maildir_new(root, "alice")) == 2 and
        maildir_new(root, "alice"), timeout=10,
        what="the sent message in the server's Maildir; log:\n" +
        srv.log()[-2000:])
    got = b"".join(split_delivered(read_bytes(p))[2] for p in files)
    assert b"sent from another folder\n" in got
    # "../var/spool" read from the caller's folder would be a/var/spool.
    assert not os.path.exists(tmp_path / "a" / "var"), \
        os.listdir(tmp_path / "a")
    assert os.listdir(elsewhere) == []

    r = run_cli("check", "-c", conf, cwd=str(elsewhere))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
    r = run_cli("queue", "-c", conf, "list", cwd=str(elsewhere))
    assert r.returncode == 0 and "Mail queue is empty" in r.stdout, r
    assert not os.path.exists(tmp_path / "a" / "var")


def test_run_from_another_folder_uses_the_configs_folder(make_postern,
        tmp_path):
    """A server started elsewhere with a relative -c still keeps its spool
    and Maildirs beside its configuration."""
    srv = shipped_tree(make_postern, tmp_path)
    root = srv.dir
    elsewhere = tmp_path / "x" / "y"
    elsewhere.mkdir(parents=True)
    srv.dir = str(elsewhere)			# the server's working folder
    srv.log_path = os.path.join(root, "postern.stderr")
    srv.conf = os.path.relpath(os.path.join(root, "etc", "postern.conf"),
        str(elsewhere))
    srv.start()
    smtp_to(srv, "bob@localhost", "run elsewhere")
    wait_for(lambda: maildir_new(root, "bob"), timeout=10,
        what="delivery into ROOT/var/mail/bob; log:\n" + srv.log()[-2000:])
    assert os.path.isdir(os.path.join(root, "var", "spool"))
    assert os.listdir(elsewhere) == []
    assert not os.path.exists(tmp_path / "x" / "var")
