"""
Several nodes, one service: two postern servers with their tables in one
PostgreSQL cluster and their state in one Redis.  An alias added in
PostgreSQL applies on both within the cache time without a reload; a
greylist entry, a rate count and a ban made on one hold on the other.
And a lookup that takes PostgreSQL two seconds never holds up the event
loop: other sessions on the same loop get their replies meanwhile.
"""

import select
import time

from conftest import Client, make_config, send_message, wait_for


def node_config(pg, redis):
    return make_config([
        'table boxes pgsql:"%s" query "SELECT address FROM boxes WHERE '
        'address = $1" cache 2s negative-cache 2s' % pg.conninfo(),
        'table domains pgsql:"%s" query "SELECT name FROM domains WHERE '
        'name = $1"' % pg.conninfo(),
        'table aliases pgsql:"%s" query "SELECT target FROM aliases WHERE '
        'address = $1" cache 2s negative-cache 2s' % pg.conninfo(),
        "alias <aliases>",
        "state redis %s" % redis,
        "on connect { banned; ban 1h on relay-attempt }",
        "on header { ratelimit 3/1h per subject }",
        "on rcpt { greylist delay 3s lifetime 1h }",
    ], rules=["match to domain <domains> to <boxes> action local"])


def rcpt_code(srv, rcpt, sender="x@far.example", source=None):
    with Client(srv.port, source=source) as c:
        c.hello()
        c.send("MAIL FROM:<%s>" % sender); c.expect(250)
        c.send("RCPT TO:<%s>" % rcpt)
        return c.read_reply(timeout=10).code


def test_two_nodes_share_tables_and_state(make_postern, pg, redis_server):
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY)")
    pg.sql("CREATE TABLE aliases (address text, target text)")
    pg.sql("INSERT INTO boxes VALUES ('bob@example.org')")
    pg.sql("CREATE TABLE domains (name text PRIMARY KEY)")
    pg.sql("INSERT INTO domains VALUES ('example.org')")
    a = make_postern(config=node_config(pg, redis_server))
    b = make_postern(config=node_config(pg, redis_server))

    # Greylisting: first sight on A, the retry after the delay passes on B.
    t0 = time.monotonic()
    assert rcpt_code(a, "bob@example.org") == 451
    assert rcpt_code(b, "bob@example.org") == 451	# within the delay
    wait_for(lambda: time.monotonic() - t0 > 3.5, timeout=6,
        what="the greylist delay")
    assert rcpt_code(b, "bob@example.org") == 250
    # (The client's network is whitelisted now, on both.)
    assert rcpt_code(a, "bob@example.org") == 250

    # An alias added in PostgreSQL: unknown on both, then known on both
    # within the cache time, without a reload.
    assert rcpt_code(a, "new@example.org") == 550
    assert rcpt_code(b, "new@example.org") == 550
    pg.sql("INSERT INTO aliases VALUES ('new@example.org', "
        "'bob@example.org')")
    for srv in (a, b):
        wait_for(lambda: rcpt_code(srv, "new@example.org") == 250,
            timeout=10, interval=0.3, what="the new alias")
        with srv.session() as c:
            c.hello()
            send_message(c, "y@far.example", ["new@example.org"],
                "Subject: alias\r\n\r\nvia the new alias\r\n")
        wait_for(lambda: srv.maildir("bob"), what="bob's copy")

    # Rate counts add up across nodes: 3 per subject, the 4th is refused.
    for srv in (a, b, a):
        with srv.session() as c:
            c.hello()
            send_message(c, "z@far.example", ["bob@example.org"],
                "Subject: counted\r\n\r\nbulk\r\n")
    with b.session() as c:
        c.hello()
        c.send("MAIL FROM:<z@far.example>"); c.expect(250)
        c.send("RCPT TO:<bob@example.org>"); c.expect(250)
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: counted\r\n\r\nbulk\r\n.\r\n")
        c.expect(450, "4.7.1")

    # A ban made on A (a relay attempt from 127.0.0.5) holds on B.
    assert rcpt_code(a, "x@elsewhere.example", source="127.0.0.5") == 550
    c = Client(b.port, source="127.0.0.5")
    c.expect(554, "5.7.1")
    c.expect_closed()
    with Client(b.port, source="127.0.0.6") as c:
        c.expect(220)


def test_a_slow_lookup_does_not_hold_up_other_sessions(make_postern, pg):
    pg.sql("CREATE TABLE boxes (address text PRIMARY KEY)")
    pg.sql("INSERT INTO boxes VALUES ('slow@example.org'), "
        "('fast@example.org')")
    pg.sql("CREATE FUNCTION lookup(k text) RETURNS SETOF text "
        "LANGUAGE plpgsql AS $$ BEGIN IF k = 'slow@example.org' THEN "
        "PERFORM pg_sleep(2); END IF; RETURN QUERY SELECT address FROM "
        "boxes WHERE address = k; END $$")
    srv = make_postern(extra=[
        "workers 1",
        'table boxes pgsql:"%s" query "SELECT lookup($1)" cache off '
        'negative-cache off' % pg.conninfo()],
        rules=["match to <boxes> action local"])
    slow, other = srv.session(), srv.session()
    for c in (slow, other):
        c.hello()
        c.send("MAIL FROM:<x@far.example>"); c.expect(250)
    other.send("RCPT TO:<fast@example.org>"); other.expect(250)	# connected
    t0 = time.monotonic()
    slow.send("RCPT TO:<slow@example.org>")
    trips = []
    while not select.select([slow.sock], [], [], 0)[0]:
        assert time.monotonic() - t0 < 10, "the slow lookup never answered"
        t1 = time.monotonic()
        other.send("EHLO client.example"); other.expect(250)
        other.send("MAIL FROM:<x@far.example>"); other.expect(250)
        other.send("RCPT TO:<fast@example.org>"); other.expect(250)
        trips.append(time.monotonic() - t1)
        # Pacing a client, not waiting for a condition: round trips take
        # about a millisecond, and a session takes 1000 recipients.
        time.sleep(0.02)
    slow.expect(250)
    took = time.monotonic() - t0
    assert took >= 1.9, took
    # The other session was served all along, the loop never waited.
    assert len(trips) >= 5 and max(trips) < 1.0, (took, trips)
