/*
 * smtp/data.c: the decoder of message content, for DATA (dot-stuffed, RFC
 * 5321 4.5.2, ending at CRLF "." CRLF) and for BDAT chunks (raw, RFC 3030).
 * Strict: lines end in CRLF; a bare CR or LF, a NUL, a long line or too
 * many octets latch an error and the rest is drained.  Knows nothing of
 * sessions: decoded text goes to a sink.
 */
#include "smtp/smtp_private.h"

#include <string.h>

void
smtp_dec_init(struct smtp_dec *d, bool dot, size_t line_max,
    uint64_t msg_max, int (*sink_cb)(void *, const char *, size_t),
    void *sink_ctx)
{
	ASSERT(line_max >= 3);
	memset(d, 0, sizeof(*d));
	d->dot = dot;
	d->pos = SMTP_DEC_BOL;
	/* The start of DATA is the start of a line (RFC 5321 4.1.1.4). */
	d->clean_bol = true;
	d->line_max = line_max;
	d->msg_max = msg_max;
	d->sink_cb = sink_cb;
	d->sink_ctx = sink_ctx;
}

static void
smtp_dec_latch(struct smtp_dec *d, enum smtp_dec_err err)
{
	if (d->err == SMTP_DEC_OK)
		d->err = err;
}

static void
smtp_dec_emit(struct smtp_dec *d, const char *buf, size_t len)
{
	if (d->err != SMTP_DEC_OK || len == 0 || d->sink_cb == NULL)
		return;
	if (d->sink_cb(d->sink_ctx, buf, len) < 0)
		smtp_dec_latch(d, SMTP_DEC_LOCAL);
}

/* Count n octets of the message; sizes must not wrap. */
static void
smtp_dec_count(struct smtp_dec *d, uint64_t n)
{
	if (d->msg_max != 0 && (d->size > d->msg_max ||
	    n > d->msg_max - d->size))
		smtp_dec_latch(d, SMTP_DEC_BIG);
	d->size = n > UINT64_MAX - d->size ? UINT64_MAX : d->size + n;
}

/* One octet of text inside a line (not CR, not LF). */
static void
smtp_dec_text(struct smtp_dec *d, unsigned char c)
{
	if (c == '\0')
		smtp_dec_latch(d, SMTP_DEC_NUL);
	d->line_len++;
	/* RFC 5321 4.5.3.1.6: 1000 octets with the CRLF, dots unstuffed */
	if (d->line_len > d->line_max - 2)
		smtp_dec_latch(d, SMTP_DEC_LONG);
	smtp_dec_count(d, 1);
	d->pos = SMTP_DEC_TEXT;
}

/*
 * The plain text octets (no CR, LF or NUL) at the start of buf[0..len):
 * how many there are.  Three vectorised scans beat one branchy loop.
 */
static size_t
smtp_dec_plain(const char *buf, size_t len)
{
	const char *cr = memchr(buf, '\r', len);
	size_t n = cr != NULL ? (size_t)(cr - buf) : len;
	const char *lf = memchr(buf, '\n', n);

	if (lf != NULL)
		n = (size_t)(lf - buf);
	const char *nul = memchr(buf, '\0', n);
	return nul != NULL ? (size_t)(nul - buf) : n;
}

/*
 * A run of n plain text octets inside a line.  When the run crosses both
 * the line limit and the size limit, the one crossed first in byte order
 * is latched, as smtp_dec_text() would octet by octet: the reply must not
 * depend on how TCP cut the stream.
 */
static void
smtp_dec_text_run(struct smtp_dec *d, size_t n)
{
	size_t line_room = d->line_max - 2 > d->line_len ?
	    d->line_max - 2 - d->line_len : 0;
	uint64_t size_room = d->msg_max == 0 ? UINT64_MAX :
	    d->msg_max > d->size ? d->msg_max - d->size : 0;
	bool big_first = n > size_room && size_room < line_room;

	if (big_first)
		smtp_dec_count(d, n);
	d->line_len += n;
	if (d->line_len > d->line_max - 2)
		smtp_dec_latch(d, SMTP_DEC_LONG);
	if (!big_first)
		smtp_dec_count(d, n);
	d->pos = SMTP_DEC_TEXT;
}

/* The line ended: with a real CRLF (crlf) or a bare LF. */
static void
smtp_dec_eol(struct smtp_dec *d, bool crlf)
{
	if (!crlf)
		smtp_dec_latch(d, SMTP_DEC_BARE);
	smtp_dec_count(d, crlf ? 2 : 1);
	d->clean_bol = crlf;
	d->line_len = 0;
	d->pos = SMTP_DEC_BOL;
}

/*
 * The text from buf[run] up to each CR is handed to the sink; the CR is
 * skipped, so that "CRLF" comes out as the LF that starts the next run.
 */
size_t
smtp_dec_feed(struct smtp_dec *d, const char *buf, size_t len, bool *end_out)
{
	size_t i, run = 0;

	*end_out = false;
	for (i = 0; i < len; i++) {
		if (d->pos == SMTP_DEC_TEXT) {
			/* The common case: the rest of a line, in bulk. */
			size_t n = smtp_dec_plain(buf + i, len - i);
			if (n > 0) {
				smtp_dec_text_run(d, n);
				i += n;
				if (i == len)
					break;
			}
		}
		unsigned char c = (unsigned char)buf[i];

		switch (d->pos) {
		case SMTP_DEC_BOL:
			if (d->dot && c == '.') {
				smtp_dec_emit(d, buf + run, i - run);
				run = i + 1;
				d->pos = SMTP_DEC_DOT;
				continue;
			}
			break;
		case SMTP_DEC_TEXT:
			break;
		case SMTP_DEC_CR:
			if (c == '\n') {
				run = i;
				smtp_dec_eol(d, true);
				continue;
			}
			/* The CR was bare; it counts as text of the line. */
			smtp_dec_latch(d, SMTP_DEC_BARE);
			smtp_dec_text(d, '\r');
			break;
		case SMTP_DEC_DOT:
			if (c == '\r') {
				run = i + 1;
				d->pos = SMTP_DEC_DOT_CR;
				continue;
			}
			/*
			 * RFC 5321 4.5.2: a leading dot with more text after
			 * it was doubled; it is gone, c starts the text.  A
			 * bare LF here (<LF>.<LF>) is no end: it falls to
			 * the bare-LF case below.
			 */
			break;
		case SMTP_DEC_DOT_CR:
			if (c == '\n') {
				/*
				 * The end, but only after a real CRLF: after
				 * a bare LF this is text, so that
				 * <LF>.<CR><LF> cannot end the message here
				 * and start another one (SMTP smuggling).
				 */
				if (d->clean_bol) {
					*end_out = true;
					return i + 1;
				}
				run = i;
				smtp_dec_eol(d, true);
				continue;
			}
			smtp_dec_latch(d, SMTP_DEC_BARE);
			smtp_dec_text(d, '\r');
			break;
		}
		/* c is an octet of a line: text, CR or LF. */
		if (c == '\r') {
			smtp_dec_emit(d, buf + run, i - run);
			run = i + 1;
			d->pos = SMTP_DEC_CR;
		} else if (c == '\n')
			smtp_dec_eol(d, false);
		else
			smtp_dec_text(d, c);
	}
	/* After a CR or a leading dot, run == len: they are held back. */
	smtp_dec_emit(d, buf + run, len - run);
	return len;
}

void
smtp_dec_finish(struct smtp_dec *d)
{
	if (d->pos == SMTP_DEC_CR)
		smtp_dec_latch(d, SMTP_DEC_BARE);
	d->pos = SMTP_DEC_BOL;
}

int
smtp_dec_err_reply(enum smtp_dec_err err, const char **text_out)
{
	switch (err) {
	case SMTP_DEC_BARE:
		*text_out = "5.6.0 Bare CR or LF in message refused; "
		    "lines must end in CRLF";
		return 554;
	case SMTP_DEC_NUL:
		*text_out = "5.6.0 NUL character in message refused";
		return 554;
	case SMTP_DEC_LONG:
		*text_out = "5.6.0 Message refused: line too long";
		return 554;
	case SMTP_DEC_BIG:
		/* RFC 1870 6.2 */
		*text_out = "5.3.4 Message too big";
		return 552;
	case SMTP_DEC_LOCAL:
		*text_out = "4.3.0 Local error in processing";
		return 451;
	case SMTP_DEC_OK:
		break;
	}
	*text_out = "2.0.0 Ok";
	return 250;
}
