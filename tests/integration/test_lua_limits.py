"""
The Lua sandbox's bounds on work done inside Lua's C library, through the
real server with one worker loop: a script's call ends within about its run
time (1 s by default) with the documented answer or failure, and another
client on the same loop gets its greeting meanwhile, for plain searches
(string.find with plain, match of a pattern without specials), table.sort
of long strings and a loop of pattern calls that each fail "pattern too
complex".  And the eom line iterators of a script that names `message`
hold no descriptor between resumptions: a script that keeps thousands of
them leaves the server's descriptor count where it was, and other mail
goes on being delivered.
"""

import os
import re
import time

import pytest

from conftest import Client, log_events, make_config, wait_for

# The call's run time is 1 s (budget 1,000,000 at a microsecond each): a
# call ends within twice that, and so does the wait of another client.
HOLD_MAX = 2.5

LIMITS_LUA = r'''
function mail(f, state)
  local how = f.sender:match("^(%w+)@")
  if how == "plainfind" then
    local s = string.rep("a", 1500000) .. "b"
    local p = string.rep("a", 750000) .. "b"
    return {"reject", 550, "5.7.1", "found " ..
      table.concat({string.find(s, p, 1, true)}, " ")}
  elseif how == "match" then
    local s = string.rep("a", 60000) .. "b"
    local m = s:match(string.rep("a", 30000) .. "b")
    return {"reject", 550, "5.7.1", "matched " .. #m}
  elseif how == "sort" then
    local s, t = string.rep("a", 100000), {}
    for i = 1, 100000 do t[i] = s end
    table.sort(t)
    return {"reject", 550, "5.7.1", "sorted " .. #t}
  elseif how == "patloop" then
    local s = string.rep("a", 3000)
    while true do pcall(string.find, s, ".-.-.-.-b") end
  end
end
'''


@pytest.fixture
def limits_server(make_postern, tmp_path):
    (tmp_path / "limits.lua").write_text(LIMITS_LUA)
    return make_postern(config=make_config(["workers 1",
        'on mail { lua "%s" }' % (tmp_path / "limits.lua")]))


def handler_whys(srv):
    return [kv.get("why", "") for kv, _ in log_events(srv, "chain")
        if kv.get("verdict") == "error"]


@pytest.mark.parametrize("how,code,esc,text,why", [
    ("plainfind", 550, "5.7.1", "found 750001 1500001", None),
    ("match", 550, "5.7.1", "matched 30001", None),
    ("sort", 451, "4.3.0", None, "instruction budget of 1000000 exceeded"),
    ("patloop", 451, "4.3.0", None, " exceeded"),
])
def test_library_call_ends_within_run_time(limits_server, how, code, esc,
        text, why):
    """A call's work in Lua's C library ends within about its run time
    with the documented answer (a plain search is linear) or failure,
    and the loop greets another client meanwhile."""
    srv = limits_server
    with srv.session() as c:
        c.hello()
        c.send("MAIL FROM:<%s@example.org>" % how)
        t0 = time.monotonic()
        with Client(srv.port) as other:
            other.expect(220, timeout=HOLD_MAX)
            greeted = time.monotonic() - t0
        r = c.expect(code, esc, timeout=HOLD_MAX)
        answered = time.monotonic() - t0
        c.send("NOOP"); c.expect(250)
    assert answered < HOLD_MAX and greeted < HOLD_MAX, (answered, greeted)
    if text is not None:
        assert text in r.text, r.text
    if why is not None:
        wait_for(lambda: handler_whys(srv), what="the handler's error")
        assert why in handler_whys(srv)[0], handler_whys(srv)


LINES_LUA = r'''
keep = keep or {}
function eom(f, state)
  local path = f.message  -- names the message: lines come from its file
  if f.sender == "hoard@example.org" then
    for i = 1, 200 do
      local it = f.lines()
      it()
      keep[#keep + 1] = it
    end
    return {"tag", "kept", tostring(#keep)}
  end
  local n, long = 0, {}
  for line in f.lines() do
    n = n + 1
    if #line > 900 then long[#long + 1] = #line end
  end
  return {"tag", "lines", n .. ":" .. table.concat(long, ",") .. ":" ..
    tostring(keep[1] and keep[1]())}
end
'''

def iterator_lines(data):
    """The lengths of the lines f.lines() gives for a file of data (lines
    under its 65536 octets: SMTP's are)."""
    return [len(l) for l in data.split(b"\n")[:-1]]


def test_kept_line_iterators_hold_no_descriptor(make_postern, tmp_path):
    """A script that keeps every line iterator it makes (a thousand,
    each read once) leaves the server's descriptor count where it was;
    other mail is delivered, its lines all read, and an iterator kept
    from an earlier message reads nothing more."""
    (tmp_path / "lines.lua").write_text(LINES_LUA)
    srv = make_postern(config=make_config(["workers 1",
        'on eom { lua "%s" }' % (tmp_path / "lines.lua")]))

    def fds():
        return len(os.listdir("/proc/%d/fd" % srv.proc.pid))

    def send(sender, body):
        with srv.session() as c:
            c.hello()
            c.send("MAIL FROM:<%s>" % sender); c.expect(250)
            c.send("RCPT TO:<bob@localhost>"); c.expect(250)
            c.send("DATA"); c.expect(354)
            c.send_raw(b"Subject: lines\r\n\r\n" + body + b"\r\n.\r\n")
            c.expect(250)

    send("a@example.org", b"warm up")
    wait_for(lambda: len(srv.maildir("bob")) == 1, what="the first delivery")
    before = fds()
    for i in range(5):
        send("hoard@example.org", b"line %d\r\nmore" % i)
        wait_for(lambda: "tx.kept=%d" % (200 * (i + 1)) in srv.log(),
            what="the script's kept iterators")
    assert fds() < before + 20, (before, fds())
    # Lines across the iterator's reads of the file, 8 KiB at a time.
    send("a@example.org", b"short\r\n" + b"".join(b"%03d%s\r\n" %
        (i, b"x" * (900 + i)) for i in range(40)) + b"last")
    wait_for(lambda: srv.log().count("tx.lines=") == 2 and
        len(srv.maildir("bob")) == 7, what="the deliveries")
    for path in srv.maildir("bob"):
        with open(path, "rb") as f:
            if b"\nlast" in f.read():
                with open(path, "rb") as g:
                    data = g.read()
    # The script read the spooled message: all but our Return-Path.
    want = iterator_lines(data.split(b"\n", 1)[1])
    got = re.findall(r'tx\.lines=([^\s"]+)', srv.log())[-1]
    assert got == "%d:%s:nil" % (len(want), ",".join(str(n) for n in want
        if n > 900)), (got, want)
    assert fds() < before + 20, (before, fds())
