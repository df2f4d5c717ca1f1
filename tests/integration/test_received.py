"""The trace headers postern adds (RFC 5321 4.4)."""

import datetime
import email.utils
import re

from conftest import queue_id, read_bytes, send_message, split_delivered, wait_for

BODY = "Subject: trace\r\nMessage-Id: <trace@example.net>\r\n\r\nx\r\n"


def delivered(srv, user):
    files = wait_for(lambda: srv.maildir(user), what="delivery to " + user)
    assert len(files) == 1, files
    return split_delivered(read_bytes(files[0]))


def check_date(received):
    assert ";" in received, "no date in %r" % received
    when = email.utils.parsedate_to_datetime(received.rsplit(";", 1)[1].strip())
    assert when.tzinfo is not None, "date without a zone: %r" % received
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - when).total_seconds()) < 300, \
        "date %s is not now (%s)" % (when, now)


def test_received_after_ehlo_single_recipient(postern):
    with postern.session() as c:
        c.hello("client.example")
        qid = queue_id(send_message(c, "a@example.net", ["bob@example.org"], BODY))
    rp, rcv, body = delivered(postern, "bob")
    assert rp == "Return-Path: <a@example.net>"
    assert re.match(r"^Received: from client\.example \(\S+ \[127\.0\.0\.1\]\)"
        r"\s+by test\.example\s", rcv), rcv
    assert re.search(r"\swith ESMTP\s", rcv), rcv
    assert re.search(r"\sid %s[\s;]" % re.escape(qid), rcv), \
        "queue id %s not in %r" % (qid, rcv)
    assert re.search(r"\sfor <bob@example\.org>\s*;", rcv), rcv
    check_date(rcv)
    assert body.startswith(b"Subject: trace\n"), body[:100]


def test_received_after_helo_says_smtp(postern):
    with postern.session() as c:
        c.expect(220)
        c.send("HELO old.example"); c.expect(250)
        send_message(c, "a@example.net", ["bob@example.org"], BODY)
    _, rcv, _ = delivered(postern, "bob")
    assert rcv.startswith("Received: from old.example ("), rcv
    assert re.search(r"\swith SMTP\s", rcv), rcv
    check_date(rcv)


def test_received_without_for_when_several_recipients(postern):
    with postern.session() as c:
        c.hello()
        qid = queue_id(send_message(c, "a@example.net",
            ["bob@example.org", "carol@example.org"], BODY))
    for user in ("bob", "carol"):
        rp, rcv, _ = delivered(postern, user)
        assert rp == "Return-Path: <a@example.net>"
        assert " for " not in rcv, "several recipients, yet %r" % rcv
        assert re.search(r"\sid %s[\s;]" % re.escape(qid), rcv), rcv
        check_date(rcv)


def test_return_path_of_null_sender(postern):
    with postern.session() as c:
        c.hello()
        send_message(c, "", ["bob@example.org"], BODY)
    rp, _, _ = delivered(postern, "bob")
    assert rp == "Return-Path: <>"
