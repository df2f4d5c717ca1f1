"""SMTP smuggling: only CRLF.CRLF ends DATA; bare CR/LF is refused."""

import pytest

from conftest import wait_for

# The ends of data a lenient server might accept (SMTP smuggling).
FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
}

SMUGGLED = (b"MAIL FROM:<x@evil.test>\r\n"
            b"RCPT TO:<bob@example.org>\r\n"
            b"DATA\r\n"
            b"Subject: smuggled\r\n"
            b"\r\n"
            b"evil\r\n")


@pytest.mark.parametrize("name", sorted(FAKE_ENDS))
def test_fake_end_of_data_smuggles_nothing(postern, name):
    with postern.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<carol@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: carrier\r\n\r\nhello" + FAKE_ENDS[name] +
            SMUGGLED + b".\r\n")
        # Exactly one reply for the whole block: the latched error.
        c.expect(554, "5.6.0")
        # The next reply belongs to NOOP: nothing else was queued.
        c.send("NOOP"); c.expect(250, "2.0.0")
        c.send("RCPT TO:<bob@example.org>"); c.expect(503, "5.5.1")
        c.send("QUIT"); c.expect(221, "2.0.0")
        c.expect_closed()
    assert postern.maildir("carol") == [], "carrier message delivered"
    assert postern.maildir("bob") == [], "smuggled message delivered"


def test_real_end_after_crlf_still_delivers(postern):
    # The control: the same carrier with a proper end is one message.
    with postern.session() as c:
        c.hello()
        c.send("MAIL FROM:<a@example.net>"); c.expect(250, "2.1.0")
        c.send("RCPT TO:<carol@example.org>"); c.expect(250, "2.1.5")
        c.send("DATA"); c.expect(354)
        c.send_raw(b"Subject: carrier\r\n\r\nhello\r\n.\r\n")
        c.expect(250, "2.0.0")
    wait_for(lambda: postern.maildir("carol"), what="delivery to carol")
    assert postern.maildir("bob") == []


def test_bare_lf_in_command_is_500_and_hides_nothing(postern):
    with postern.session() as c:
        c.hello()
        # One line up to the CRLF, holding a bare LF: one 500, and the
        # MAIL after the LF is not executed.
        c.send_raw(b"NOOP\nMAIL FROM:<x@evil.test>\r\n")
        c.expect(500, "5.5.2")
        c.send("RCPT TO:<bob@example.org>"); c.expect(503, "5.5.1")
        c.send_raw(b"NOOP\nQUIT\r\n"); c.expect(500, "5.5.2")
        c.send("NOOP"); c.expect(250, "2.0.0")


def test_bare_cr_in_command_is_500(postern):
    with postern.session() as c:
        c.hello()
        c.send_raw(b"NOOP\rQUIT\r\n"); c.expect(500, "5.5.2")
        c.send("NOOP"); c.expect(250, "2.0.0")
