/*
 * smtp/transfer.c: the commands that carry a message, DATA (RFC 5321 4.1.1.4)
 * and BDAT (RFC 3030), and the end of its content: the checks of the 354,
 * the chunks, the end-of-message stage and the latched errors.  Decoding
 * itself is data.c's.  Knows no sockets.
 */
#include "smtp/smtp.h"
#include "smtp/smtp_private.h"

#include <inttypes.h>

static int
smtp_body_sink(void *ctx, const char *buf, size_t len)
{
	struct smtp_session *s = ctx;

	if (s->closing)
		return -1;
	if (s->hooks.body_cb != NULL && s->hooks.body_cb(s->ctx, buf, len) < 0)
		return -1;
	return s->closing ? -1 : 0;
}

void
smtp_cmd_data(struct smtp_session *s, const struct smtp_cmd *c)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_DATA, .arg = "" };
	struct smtp_reply r;
	enum smtp_verdict v;

	(void)c;
	/* RFC 3030 2: DATA and BDAT do not mix in one transaction */
	if (s->bdat_tx) {
		smtp_error(s, 503, "5.5.1 DATA after BDAT");
		return;
	}
	s->st_bdat = false;
	if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_DATA, v, &r);
}

/* Start reading a BDAT chunk of n octets (drain: drop them). */
static void	smtp_chunk_done(struct smtp_session *s);

static void
smtp_chunk_start(struct smtp_session *s, uint64_t n, bool last, bool drain)
{
	s->chunk_left = s->chunk_size = n;
	s->chunk_last = last;
	s->chunk_drain = drain;
	s->chunk_ret = s->state;
	if (!drain && !s->bdat_tx) {
		smtp_dec_init(&s->dec, false, s->p.lim.line_max,
		    s->p.lim.msg_max, smtp_body_sink, s);
		s->bdat_tx = true;
		s->content_open = true;
	}
	if (n == 0)
		smtp_chunk_done(s);
	else
		smtp_set_state(s, SMTP_ST_BDAT);
}

void
smtp_done_data(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	if (v != SMTP_OK) {
		smtp_reply_refusal(s, v, r, 554, "5.7.1 Transaction refused");
		smtp_tx_reset(s);
		/* RFC 3030 2: the refused chunk is still read, and dropped */
		if (s->st_bdat && !s->closing)
			smtp_chunk_start(s, s->st_chunk, s->st_last, true);
		return;
	}
	if (s->st_bdat) {
		smtp_chunk_start(s, s->st_chunk, s->st_last, false);
		return;
	}
	/*
	 * RFC 2920 3.1: DATA ends a group; the client waits for the 354.
	 * Text already sent is a client out of step (or one that smuggles
	 * a transaction in): refuse and close, as Postfix does.
	 */
	if (s->p.sync_data && smtp_input_pending(s)) {
		/* An early talker too; its 554, or this one, and the close. */
		if (!smtp_early_talk(s, "354"))
			smtp_reply(s, 554, "5.5.0 Protocol error: message text "
			    "sent before the 354 reply (RFC 2920 3.1), closing "
			    "connection");
		smtp_tx_reset(s);
		smtp_mark_closing(s);
		return;
	}
	smtp_dec_init(&s->dec, true, s->p.lim.line_max, s->p.lim.msg_max,
	    smtp_body_sink, s);
	s->content_open = true;
	smtp_set_state(s, SMTP_ST_DATA);
	/* RFC 5321 4.3.2; RFC 2034 gives 3xx no enhanced code */
	if (r->code == 354)
		smtp_reply(s, 354, r->text);
	else
		smtp_reply(s, 354, "End data with <CR><LF>.<CR><LF>");
}

void
smtp_cmd_bdat(struct smtp_session *s, const struct smtp_cmd *c)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_DATA, .arg = "" };
	const char *why = NULL;
	struct smtp_reply r;
	enum smtp_verdict v;
	uint64_t n;
	bool last;

	if (smtp_bdat_parse(c->arg, c->arg_len, &n, &last) == -1) {
		smtp_error(s, 501, "5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	if (s->state < SMTP_ST_READY)
		why = "5.5.1 Send EHLO first";
	else if (!s->esmtp)
		why = "5.5.1 BDAT needs EHLO";
	else if (!smtp_in_tx(s))
		why = "5.5.1 Need MAIL before BDAT";
	else if (s->state == SMTP_ST_MAIL)
		why = "5.5.1 No valid recipients";
	if (why != NULL) {
		/*
		 * RFC 3030 2: the chunk follows anyway; read and drop it so
		 * that its octets are not taken for commands.  The reply can
		 * go now: it still comes before the next command's.
		 */
		if (!smtp_count_error(s)) {
			smtp_reply(s, 503, why);
			smtp_chunk_start(s, n, last, true);
		}
		return;
	}
	if (s->bdat_tx) {
		smtp_chunk_start(s, n, last, false);
		return;
	}
	s->st_bdat = true;
	s->st_chunk = n;
	s->st_last = last;
	if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_DATA, v, &r);
}

/* The content broke a rule (bare CR/LF, size): the transaction dropped
 * (its content with it), and its reply.  False when the content is fine. */
static bool
smtp_dec_refused(struct smtp_session *s)
{
	const char *text;
	int code;

	if (s->dec.err == SMTP_DEC_OK)
		return false;
	s->saw_bare_eol |= s->dec.err == SMTP_DEC_BARE;
	code = smtp_dec_err_reply(s->dec.err, &text);
	smtp_tx_reset(s);
	smtp_reply(s, code, text);
	return true;
}

static void
smtp_eom(struct smtp_session *s)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_EOM, .arg = "" };
	struct smtp_reply r;
	enum smtp_verdict v;

	s->at_eom = true;	/* until the reply (reply.c) */
	/* Latch, drain, reply once: the session stays in step. */
	if (smtp_dec_refused(s))
		return;
	ev.size = s->dec.size;
	s->content_open = false;	/* the stage sees its end */
	if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_EOM, v, &r);
}

void
smtp_done_eom(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	if (v == SMTP_OK)
		smtp_reply_ok(s, r, 250, "2.0.0 Ok");
	else
		smtp_reply_refusal(s, v, r, 550, "5.7.1 Message refused");
	smtp_tx_reset(s);
}

size_t
smtp_data_feed(struct smtp_session *s, const char *buf, size_t len)
{
	bool end;
	size_t n;

	n = smtp_dec_feed(&s->dec, buf, len, &end);
	if (end && !s->closing) {
		smtp_set_state(s, SMTP_ST_RCPT);
		smtp_eom(s);
	}
	return n;
}

static void
smtp_chunk_done(struct smtp_session *s)
{
	smtp_set_state(s, s->chunk_ret);
	if (s->chunk_drain) {
		s->chunk_drain = false;
		return;
	}
	if (s->chunk_last) {
		smtp_dec_finish(&s->dec);
		smtp_eom(s);
		return;
	}
	if (smtp_dec_refused(s))	/* later BDATs get 503 */
		return;
	smtp_replyf(s, 250, "2.0.0 %" PRIu64 " octets received",
	    s->chunk_size);
}

size_t
smtp_bdat_feed(struct smtp_session *s, const char *buf, size_t len)
{
	size_t n = len;
	bool end;

	if ((uint64_t)n > s->chunk_left)
		n = (size_t)s->chunk_left;
	if (!s->chunk_drain)
		(void)smtp_dec_feed(&s->dec, buf, n, &end);
	s->chunk_left -= n;
	if (s->chunk_left == 0 && !s->closing)
		smtp_chunk_done(s);
	return n;
}
