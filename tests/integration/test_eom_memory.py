"""An eom chain that reads no message file decides on the message in
memory: the delivery stays the commit (the fast path), and no spool file
is ever written; a chain that reads the file still gets it."""

import ctypes
import ctypes.util
import os
import struct

from conftest import make_config, send_message, wait_for, TEMPLATE_ACTIONS

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
IN_NONBLOCK = 0o4000

MSG = ("From: a@example.org\r\nSubject: in memory\r\n\r\n"
    "one\r\ntwo\r\nthree\r\n")

LUA = '''
function eom(f, state)
  if not f.headers:find("Subject: in memory", 1, true) then
    return {"reject", 550, "5.7.1", "no subject"}
  end
  local n = 0
  for line in f.lines() do n = n + 1 end
  return {"tag", "lines", tostring(n)}
end
'''

# "message" only in comments: still decided in memory.
LUA_COMMENTS = '''
-- a policy on the message header: the message itself stays unread
--[==[ a long comment: f.message, ]] still the comment ]==]
function eom(f, state)
  local s = "--"  -- a comment start inside a string starts none
  return {"tag", "seen", f.headers ~= nil and "yes" or "no"}
end
'''

# Names it in a string, after a "--" inside another one: reads the file.
LUA_STRING = '''
function eom(f, state)
  local dash, p = "--", f["message"]
  return {"tag", "path", p ~= nil and "yes" or "no"}
end
'''

LUA_FILE = '''
function eom(f, state)
  return {"tag", "path", f.message ~= nil and "yes" or "no"}
end
'''


class SpoolWatch:
    """inotify on the spool's folders: every file created or renamed in."""

    def __init__(self, srv):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(IN_NONBLOCK)
        assert self.fd >= 0, "inotify_init1: errno %d" % ctypes.get_errno()
        for sub in ("tmp", "msg", "env", "done"):
            p = srv.path("spool", sub).encode()
            # The listener is bound before the spool is opened.
            wait_for(lambda: os.path.isdir(p), what="the spool's " + sub)
            wd = libc.inotify_add_watch(self.fd, p, IN_CREATE | IN_MOVED_TO)
            assert wd >= 0, "inotify_add_watch %s" % p

    def names(self):
        out = []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return out
        off = 0
        while off < len(data):
            _wd, _mask, _cookie, n = struct.unpack_from("iIII", data, off)
            out.append(data[off + 16:off + 16 + n].rstrip(b"\0").decode())
            off += 16 + n
        return out

    def close(self):
        os.close(self.fd)


def spool_names_while_sending(srv, before=None):
    """Send MSG to bob (after before(c), if given) and wait for its
    delivery; the names of the files made in the spool meanwhile."""
    w = SpoolWatch(srv)
    try:
        with srv.session() as c:
            c.hello()
            if before is not None:
                before(c)
            send_message(c, "a@example.org", ["bob@localhost"], MSG)
        wait_for(lambda: srv.maildir("bob"), what="the delivery")
        return w.names()
    finally:
        w.close()


def config(tmp_path, chains):
    (tmp_path / "eom.lua").write_text(LUA)
    (tmp_path / "file.lua").write_text(LUA_FILE)
    (tmp_path / "comments.lua").write_text(LUA_COMMENTS)
    (tmp_path / "string.lua").write_text(LUA_STRING)
    return make_config(["state memory"] + chains,
        actions=TEMPLATE_ACTIONS)


def test_an_eom_chain_in_memory_writes_no_spool_file(make_postern, tmp_path):
    srv = make_postern(config=config(tmp_path, [
        "on eom { header max-size 64k; lua \"%s\" }"
        % (tmp_path / "eom.lua")]))
    assert spool_names_while_sending(srv) == [], "the spool was written"
    with open(srv.maildir("bob")[0], "rb") as f:
        data = f.read()
    assert data.endswith(b"one\ntwo\nthree\n"), data
    # The script counted the lines it saw in memory: all but Return-Path.
    wait_for(lambda: "tx.lines=%d" % (data.count(b"\n") - 1) in srv.log(),
        what="the accepted line with the script's count")


def test_a_refusing_eom_chain_in_memory_delivers_nothing(make_postern,
        tmp_path):
    srv = make_postern(config=config(tmp_path,
        ["on eom { header max-size 1k }"]))

    def refused(c):
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"".join(b"X-Pad-%d: %s\r\n" % (i, b"x" * 60)
            for i in range(40)) + b"\r\nbody\r\n.\r\n")
        c.expect(552, "5.3.4")
    assert spool_names_while_sending(srv, refused) == [], \
        "the spool was written"
    # Only the second message, the one the chain let through, arrived.
    assert len(srv.maildir("bob")) == 1


def test_a_script_that_reads_the_file_gets_it(make_postern, tmp_path):
    srv = make_postern(config=config(tmp_path,
        ["on eom { lua \"%s\" }" % (tmp_path / "file.lua")]))
    assert spool_names_while_sending(srv), \
        "no spool file for a script naming facts.message"
    wait_for(lambda: "tx.path=yes" in srv.log(),
        what="the script saw facts.message")


def test_message_named_only_in_comments_keeps_the_message_in_memory(
        make_postern, tmp_path):
    srv = make_postern(config=config(tmp_path,
        ["on eom { lua \"%s\" }" % (tmp_path / "comments.lua")]))
    assert spool_names_while_sending(srv) == [], "the spool was written"
    wait_for(lambda: "tx.seen=yes" in srv.log(),
        what="the script ran on the message in memory")


def test_message_named_in_a_string_gets_the_file(make_postern, tmp_path):
    srv = make_postern(config=config(tmp_path,
        ["on eom { lua \"%s\" }" % (tmp_path / "string.lua")]))
    assert spool_names_while_sending(srv), \
        "no spool file for a script naming f[\"message\"]"
    wait_for(lambda: "tx.path=yes" in srv.log(),
        what="the script saw facts[\"message\"]")


def test_a_program_at_eom_still_reads_the_message_file(make_postern,
        tmp_path):
    prog = tmp_path / "scan.sh"
    prog.write_text("#!/bin/sh\n"
        "grep -q '^three$' \"$POSTERN_MESSAGE_FILE\" || "
        "{ echo 'no three in the file'; exit 1; }\n"
        "grep -q '^three' || { echo 'no three on stdin'; exit 1; }\n"
        "exit 0\n")
    prog.chmod(0o755)
    srv = make_postern(config=config(tmp_path,
        ["on eom { program \"%s\" }" % prog]))

    def refused(c):
        c.send("MAIL FROM:<a@example.org>"); c.expect(250)
        c.send("RCPT TO:<bob@localhost>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: short\r\n\r\none\r\n.\r\n")
        assert "no three in the file" in c.expect(550, "5.7.1").text
    assert spool_names_while_sending(srv, refused), \
        "no spool file for a program at eom"
    assert len(srv.maildir("bob")) == 1
