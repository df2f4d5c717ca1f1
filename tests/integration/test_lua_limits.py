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
