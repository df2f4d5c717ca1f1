/*
 * deliver/smtpc_txn.c: one transaction of the outbound SMTP client on a
 * session smtpc.c opened or took from the cache: what the server must
 * offer for this message (SIZE, 8BITMIME, SMTPUTF8, the loop guard), MAIL
 * with its parameters, the RCPTs (pipelined when offered, RFC 2920), DATA
 * and the content, and each recipient's outcome (one reply per recipient
 * for LMTP, RFC 2033).  Blocking: worker threads only.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

/* Buffer the content, flushing in large writes. */
static int
smtpc_put_cb(void *arg, const void *p, size_t n)
{
	struct smtpc *s = arg;

	util_buf_add(&s->out, p, n);
	if (s->out.len >= 32768)
		return smtpc_flush(s, TO_DBLOCK(s));
	return 0;
}

/* The content then ".": 0, or -1 (c.err or *err_out on a read error). */
static int
smtpc_stream(struct smtpc *s, const char **err_out)
{
	if (deliver_content_stream(s->m, s->o->rewrite, smtpc_put_cb, s,
	    err_out) == -1)
		return -1;
	return smtpc_flush(s, TO_DBLOCK(s));
}

/*
 * RFC 6531 3.4: why this message cannot go without SMTPUTF8, or NULL when
 * it can (its header block and addresses are ASCII, as RFC 6531 3.2 lets
 * a message received with SMTPUTF8 be).
 */
static const char *
smtpc_utf8_need(const struct smtpc *s, const struct deliver_content_scan *sc,
    const char *const *rcpts)
{
	bool addr_utf8 = !util_is_ascii(s->m->return_path);

	for (size_t i = 0; i < s->n; i++)
		addr_utf8 = addr_utf8 || !util_is_ascii(rcpts[i]);
	if (addr_utf8)
		return "non-ASCII address";
	if (s->m->smtputf8_needed)
		return "an internationalised DSN";
	if (s->m->smtputf8 && sc->hdr_eight_bit)
		return "UTF-8 header fields";
	return NULL;
}

/* Can this server take this message at all?  0, or -1 with statuses. */
static int
smtpc_check_ext(struct smtpc *s, const struct deliver_content_scan *sc,
    const char *const *rcpts, bool *utf8_out)
{
	const char *need = smtpc_utf8_need(s, sc, rcpts);
	/* As received, or as an address needs, where the server offers it. */
	bool utf8 = s->caps.smtputf8 && (s->m->smtputf8 || need != NULL);

	*utf8_out = utf8;
	if (s->o->max_received > 0 && sc->received > s->o->max_received) {
		char t[200];
		snprintf(t, sizeof(t), "5.4.6 mail forwarding loop: %u "
		    "Received: header fields (limit %u)", sc->received,
		    s->o->max_received);
		smtpc_fail_rest(s, DELIVER_PERMFAIL, 0, t);
		return -1;
	}
	if (s->caps.has_size && s->caps.size_max > 0 && sc->size > s->caps.size_max) {
		char t[600];
		snprintf(t, sizeof(t), "5.3.4 message size %" PRIu64 " exceeds "
		    "the limit of %s (SIZE %" PRIu64 ", RFC 1870)", sc->size,
		    s->c.peer, s->caps.size_max);
		smtpc_fail_rest(s, DELIVER_PERMFAIL, 0, t);
		return -1;
	}
	/* RFC 6531 3.2, 3.4: only where SMTPUTF8 is offered; no downgrade. */
	if (need != NULL && !s->caps.smtputf8) {
		char t[600];
		snprintf(t, sizeof(t), "5.6.7 the message needs SMTPUTF8 "
		    "(%s) and %s does not offer it (RFC 6531)", need,
		    s->c.peer);
		smtpc_fail_rest(s, DELIVER_PERMFAIL, 0, t);
		return -1;
	}
	/*
	 * RFC 6152 3: 8-bit data only to a server that offers 8BITMIME, or
	 * in a message sent with SMTPUTF8 (RFC 6531 3.3).
	 */
	if (sc->eight_bit && !s->caps.eightbitmime && !utf8) {
		char t[600];
		snprintf(t, sizeof(t), "5.6.3 the message has 8-bit content "
		    "and %s does not offer 8BITMIME (RFC 6152); it is not "
		    "converted", s->c.peer);
		smtpc_fail_rest(s, DELIVER_PERMFAIL, 0, t);
		return -1;
	}
	return 0;
}

static void
smtpc_mail_cmd(struct smtpc *s, const struct deliver_content_scan *sc,
    bool utf8)
{
	char params[128] = "";

	if (s->caps.has_size)
		snprintf(params, sizeof(params), " SIZE=%" PRIu64, sc->size);
	if (sc->eight_bit && s->caps.eightbitmime)
		strncat(params, " BODY=8BITMIME", sizeof(params) -
		    strlen(params) - 1);
	if (utf8)
		strncat(params, " SMTPUTF8", sizeof(params) - strlen(params) -
		    1);
	smtpc_cmd(s, "MAIL FROM:<%s>%s", s->m->return_path != NULL ?
	    s->m->return_path : "", params);
}

/*
 * The last reply as recipient i's to RCPT: 1 accepted, else 0 with its
 * status set.
 */
static int
smtpc_rcpt_reply(struct smtpc *s, size_t i)
{
	/*
	 * RFC 5321 4.5.3.1.10: a 552 to RCPT is the old "too many
	 * recipients", to be taken as 452 (as Postfix does); its text is
	 * kept as written.
	 */
	bool later = s->code < 500 || s->code == 552;

	if (s->code / 100 == 2) {
		s->accepted[i] = true;
		return 1;
	}
	if (later)
		s->rcpt_deferred++;
	smtpc_set(s, i, later ? DELIVER_TEMPFAIL : DELIVER_PERMFAIL, s->code,
	    "%s (in reply to RCPT TO)", s->text);
	return 0;
}

/* Read the MAIL and RCPT replies; the number of accepted recipients. */
static int
smtpc_envelope_replies(struct smtpc *s, bool *mail_ok)
{
	int naccepted = 0;

	if (smtpc_reply(s, TO_CMD(s)) == -1)
		return -1;
	*mail_ok = s->code / 100 == 2;
	s->mail_refused = !*mail_ok;
	if (!*mail_ok)
		smtpc_fail_reply(s, "MAIL FROM");
	s->step = "sending RCPT TO";
	for (size_t i = 0; i < s->n; i++) {
		if (!*mail_ok && !s->caps.pipelining)
			break;
		if (smtpc_reply(s, TO_CMD(s)) == -1)
			return -1;
		if (*mail_ok)	/* else the MAIL reply decided already */
			naccepted += smtpc_rcpt_reply(s, i);
	}
	return naccepted;
}

/* The last reply as recipient i's outcome of the whole transaction. */
static void
smtpc_set_final(struct smtpc *s, size_t i)
{
	if (s->code / 100 == 2)
		smtpc_set(s, i, DELIVER_OK, s->code, "%s", s->text);
	else
		smtpc_set(s, i, s->code >= 500 ? DELIVER_PERMFAIL :
		    DELIVER_TEMPFAIL, s->code, "%s (in reply to end of DATA)",
		    s->text);
}

/*
 * RFC 2033 4.2: after the content, one reply per accepted recipient, in
 * the order of the RCPTs.  0, or -1 when the connection failed (the ones
 * not yet answered stay undecided).
 */
static int
smtpc_lmtp_replies(struct smtpc *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (!s->accepted[i])
			continue;
		if (smtpc_reply(s, TO_DTERM(s)) == -1)
			return -1;
		smtpc_set_final(s, i);
	}
	return 0;
}

int
smtpc_transaction(struct smtpc *s, const struct deliver_content_scan *sc,
    const char *const *rcpts, const char **err_out)
{
	bool utf8, mail_ok = false;
	int nacc;

	if (smtpc_check_ext(s, sc, rcpts, &utf8) == -1)
		return -1;
	smtpc_mail_cmd(s, sc, utf8);
	s->dirty = true;
	s->uses++;
	s->step = "sending MAIL FROM";
	/* RFC 2920 3.1: MAIL, RCPTs and DATA in one group when offered. */
	if (!s->caps.pipelining) {
		if (smtpc_flush(s, TO_CMD(s)) == -1 ||
		    smtpc_reply(s, TO_CMD(s)) == -1)
			goto conn;
		if (s->code / 100 != 2) {
			s->mail_refused = true;
			smtpc_fail_reply(s, "MAIL FROM");
			return -1;
		}
		mail_ok = true;
		nacc = 0;
		s->step = "sending RCPT TO";
		for (size_t i = 0; i < s->n; i++) {
			smtpc_cmd(s, "RCPT TO:<%s>", rcpts[i]);
			if (smtpc_flush(s, TO_CMD(s)) == -1 ||
			    smtpc_reply(s, TO_CMD(s)) == -1)
				goto conn;
			nacc += smtpc_rcpt_reply(s, i);
		}
		if (nacc == 0)
			return -1;
		s->step = "sending DATA command";
		smtpc_cmd(s, "DATA");
		if (smtpc_flush(s, TO_CMD(s)) == -1)
			goto conn;
	} else {
		for (size_t i = 0; i < s->n; i++)
			smtpc_cmd(s, "RCPT TO:<%s>", rcpts[i]);
		smtpc_cmd(s, "DATA");
		if (smtpc_flush(s, TO_CMD(s)) == -1)
			goto conn;
		if ((nacc = smtpc_envelope_replies(s, &mail_ok)) == -1)
			goto conn;
		s->step = "sending DATA command";
	}
	if (smtpc_reply(s, TO_DINIT(s)) == -1)
		goto conn;
	if (s->code != 354) {
		if (mail_ok && nacc > 0)
			smtpc_fail_reply(s, "DATA");
		return -1;
	}
	if (nacc == 0) {
		/* RFC 2920 3.1: 354 with no recipient: end it empty. */
		smtpc_cmd(s, ".");
		if (smtpc_flush(s, TO_CMD(s)) == -1 ||
		    smtpc_reply(s, TO_DTERM(s)) == -1)
			goto conn;
		s->dirty = false;
		return -1;
	}
	s->dot_sent = true;
	s->step = "sending message body";
	if (smtpc_stream(s, err_out) == -1) {
		if (s->c.err[0] == '\0' && *err_out != NULL) {
			util_strlcpy(s->c.err, *err_out, sizeof(s->c.err));
			s->c.fail = DCONN_FAIL_OTHER;
		}
		goto conn;
	}
	/* Once the dot is out, the server may hold the message already. */
	s->step = "sending end of data -- message may be sent more than once";
	if (s->o->lmtp) {
		if (smtpc_lmtp_replies(s) == -1)
			goto conn;
		return 0;
	}
	if (smtpc_reply(s, TO_DTERM(s)) == -1)
		goto conn;
	s->dirty = false;
	for (size_t i = 0; i < s->n; i++)
		if (s->accepted[i])
			smtpc_set_final(s, i);
	return 0;
conn:
	smtpc_fail_conn(s);
	return -1;
}
