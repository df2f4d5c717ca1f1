/*
 * queue/dsn.c: delivery status notifications (RFC 3464): a multipart/report
 * (RFC 6522) with a human-readable part, a message/delivery-status part and
 * the original headers as text/rfc822-headers (quoted-printable when they
 * hold 8-bit bytes, so the notice is 7-bit throughout); when the sender or
 * a reported recipient is not ASCII, the RFC 6533 kinds of the last two, in
 * UTF-8.  Pure: builds bytes from values, no disk and no clock, so the unit
 * tests compare golden files.
 */
#include "queue/queue_private.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "spool/spool.h"
#include "util/util.h"

#define DSN_TEXT_MAX	900	/* diagnostic bytes kept (lines < 998) */

/* True if why starts like an SMTP reply: "550 " or "550-". */
static bool
dsn_is_smtp_reply(const char *why)
{
	return (why[0] == '4' || why[0] == '5') &&
	    isdigit((unsigned char)why[1]) && isdigit((unsigned char)why[2]) &&
	    (why[3] == ' ' || why[3] == '-');
}

void
queue_dsn_status(const char *why, bool temp, char out[16])
{
	const char *code = NULL;
	size_t n;

	if (why != NULL && dsn_is_smtp_reply(why))
		code = why + 4;
	else if (why != NULL)
		code = why;	/* a bare enhanced code: "5.3.5 ..." */
	if (code != NULL && (n = util_esc_len(code)) > 0 && n < 16 &&
	    (code[n] == ' ' || code[n] == '\0')) {
		memcpy(out, code, n);
		out[n] = '\0';
		/*
		 * RFC 3463 2, RFC 3464 2.3.4: the class is what happened, a
		 * permanent failure (5) or a delay (4), whatever class the far
		 * side wrote ("550 4.2.2"); subject and detail are kept.
		 */
		out[0] = temp ? '4' : '5';
		return;
	}
	util_strlcpy(out, temp ? "4.0.0" : "5.0.0", 16);
}

bool
queue_dsn_is_global(const struct queue_dsn *d)
{
	if (!util_is_ascii(d->env->sender))
		return true;
	for (size_t k = 0; k < d->n; k++)
		if (!util_is_ascii(d->env->rcpts[d->idx[k]].addr))
			return true;
	return false;
}

/*
 * Text that cannot end a header line, bounded: printable ASCII and, when
 * utf8 (a global DSN, RFC 6532 3.2), well-formed UTF-8; any other byte
 * becomes '?'.
 */
static void
dsn_add_text(struct util_buf *b, const char *s, bool utf8)
{
	const unsigned char *p, *end;
	size_t n = 0, k;

	if (s == NULL)
		return;
	p = (const unsigned char *)s;
	end = p + strlen(s);
	while (p < end && n < DSN_TEXT_MAX) {
		if (*p >= 0x20 && *p < 0x7f)
			k = 1;
		else if (!utf8 || (k = util_utf8_len(p, end)) == 0) {
			util_buf_addstr(b, "?");
			p++, n++;
			continue;
		} else if (k > DSN_TEXT_MAX - n)
			break;	/* never half a character */
		util_buf_add(b, p, k);
		p += k, n += k;
	}
	if (p < end)
		util_buf_addstr(b, "...");
}

static void
dsn_add_date(struct util_buf *b, const char *name, int64_t t)
{
	char date[64];

	util_rfc5322_date(date, sizeof(date), t);
	util_buf_printf(b, "%s: %s\n", name, date);
}

/*
 * An address for a report field: "rfc822; addr", or when it is not ASCII
 * (only in a global DSN) RFC 6533 3's "utf-8; " utf-8-addr-unitext: UTF-8
 * as it is; controls, space, backslash, '+' and '=' as \x{HEXPOINT}.
 */
static void
dsn_add_addr_field(struct util_buf *b, const char *name, const char *addr)
{
	const unsigned char *p = (const unsigned char *)addr;
	const unsigned char *end = p + strlen(addr);
	size_t k;

	if (util_is_ascii(addr)) {
		util_buf_printf(b, "%s: rfc822; ", name);
		for (; p < end; p++)
			util_buf_add(b, *p >= 0x20 && *p != 0x7f ?
			    (const char *)p : "?", 1);
		util_buf_addstr(b, "\n");
		return;
	}
	util_buf_printf(b, "%s: utf-8; ", name);
	for (; p < end; p += k) {
		k = *p >= 0x80 ? util_utf8_len(p, end) : 1;
		if (k > 1)
			util_buf_add(b, p, k);
		else if (k == 0) {
			util_buf_addstr(b, "?");	/* not UTF-8 */
			k = 1;
		} else if (*p > 0x20 && *p < 0x7f && *p != '\\' &&
		    *p != '+' && *p != '=')
			util_buf_add(b, p, 1);
		else
			util_buf_printf(b, "\\x{%02X}", *p);
	}
	util_buf_addstr(b, "\n");
}

static void
dsn_human(struct util_buf *b, const struct queue_dsn *d, bool global)
{
	util_buf_printf(b, "This is the mail system at host %s.\n\n",
	    d->reporting_mta);
	if (d->delayed) {
		util_buf_addstr(b,
		    "####################################################"
		    "################\n"
		    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND "
		    "YOUR MESSAGE. #\n"
		    "####################################################"
		    "################\n\n"
		    "Your message could not be delivered yet to the "
		    "recipients below.\n");
		util_buf_addstr(b, "The mail system will keep trying until ");
		char date[64];
		util_rfc5322_date(date, sizeof(date), d->retry_until);
		util_buf_printf(b, "%s.\n\n", date);
	} else
		util_buf_addstr(b,
		    "I'm sorry to have to inform you that your message "
		    "could not\nbe delivered to one or more recipients. "
		    "Its headers are attached below.\n\n"
		    "For further assistance, please send mail to "
		    "postmaster.\n\n");
	for (size_t k = 0; k < d->n; k++) {
		const struct spool_rcpt *r = &d->env->rcpts[d->idx[k]];
		util_buf_addstr(b, "<");
		dsn_add_text(b, r->addr, global);
		util_buf_addstr(b, ">: ");
		dsn_add_text(b, r->last_err != NULL ? r->last_err :
		    "(no details)", global);
		util_buf_addstr(b, "\n");
	}
}

/* RFC 3464 2.2 and 2.3: per-message, then per-recipient fields. */
static void
dsn_status(struct util_buf *b, const struct queue_dsn *d, bool global)
{
	util_buf_printf(b, "Reporting-MTA: dns; %s\n", d->reporting_mta);
	util_buf_printf(b, "X-Postern-Queue-ID: %s\n", d->env->qid);
	if (d->env->sender[0] != '\0')
		dsn_add_addr_field(b, "X-Postern-Sender", d->env->sender);
	dsn_add_date(b, "Arrival-Date", d->env->received);
	for (size_t k = 0; k < d->n; k++) {
		const struct spool_rcpt *r = &d->env->rcpts[d->idx[k]];
		const char *why = r->last_err != NULL ? r->last_err :
		    "(no details)";
		char status[16];

		if (!d->delayed && r->status[0] != '\0')
			util_strlcpy(status, r->status, sizeof(status));
		else
			queue_dsn_status(why, d->delayed, status);
		util_buf_addstr(b, "\n");
		dsn_add_addr_field(b, "Final-Recipient", r->addr);
		util_buf_printf(b, "Action: %s\n", d->delayed ? "delayed" :
		    "failed");
		util_buf_printf(b, "Status: %s\n", status);
		util_buf_printf(b, "Diagnostic-Code: %s; ",
		    dsn_is_smtp_reply(why) ? "smtp" : "X-Postern");
		/* RFC 6533 6.2: UTF-8 in the smtp type of a global DSN. */
		dsn_add_text(b, why, global);
		util_buf_addstr(b, "\n");
		dsn_add_date(b, "Last-Attempt-Date", d->now);
		if (d->delayed)
			dsn_add_date(b, "Will-Retry-Until", d->retry_until);
	}
}

/* The DSN's own header fields, up to the MIME preamble. */
static void
dsn_head(struct util_buf *out, const struct queue_dsn *d, bool global)
{
	char date[64];

	util_rfc5322_date(date, sizeof(date), d->now);
	util_buf_printf(out, "Received: by %s (postern) id %s; %s\n",
	    d->reporting_mta, d->qid, date);
	util_buf_printf(out, "Date: %s\n", date);
	util_buf_printf(out, "From: Mail Delivery System "
	    "<MAILER-DAEMON@%s>\n", d->reporting_mta);
	/* RFC 6532 3.2: a global DSN names a UTF-8 sender as it is. */
	util_buf_addstr(out, "To: <");
	dsn_add_text(out, d->env->sender, global);
	util_buf_addstr(out, ">\n");
	util_buf_printf(out, "Subject: %s\n", d->delayed ?
	    "Delayed Mail (still being retried)" :
	    "Undelivered Mail Returned to Sender");
	util_buf_printf(out, "Message-ID: <%s.dsn@%s>\n", d->qid,
	    d->reporting_mta);
	/* RFC 3834 5: automatic replies must not be answered. */
	util_buf_addstr(out, "Auto-Submitted: auto-replied\n");
	util_buf_addstr(out, "MIME-Version: 1.0\n");
	/* RFC 6522: multipart/report; report-type=delivery-status. */
	util_buf_printf(out, "Content-Type: multipart/report; "
	    "report-type=delivery-status;\n\tboundary=\"%s\"\n", d->boundary);
	/*
	 * RFC 2045 6.4: a multipart holding 8bit parts is 8bit itself.  Only
	 * a global DSN has them: a plain one is 7-bit throughout.
	 */
	if (global)
		util_buf_addstr(out, "Content-Transfer-Encoding: 8bit\n");
	util_buf_addstr(out, "\nThis is a MIME-encapsulated message.\n");
}

/* The header of a body part; cte: its transfer encoding, NULL for 7bit. */
static void
dsn_part(struct util_buf *out, const struct queue_dsn *d, const char *desc,
    const char *type, const char *cte)
{
	util_buf_printf(out, "\n--%s\nContent-Description: %s\n"
	    "Content-Type: %s\n", d->boundary, desc, type);
	if (cte != NULL)
		util_buf_printf(out, "Content-Transfer-Encoding: %s\n", cte);
	util_buf_addstr(out, "\n");
}

/*
 * The returned headers in quoted-printable (RFC 2045 6.7): '=', a byte that
 * is not printable ASCII, and a space or tab that ends a line as =XX; a
 * soft break ("=" at the end) keeps each line within 76 octets.  A NUL,
 * never right in a header, becomes '?' as in the other kinds.
 */
static void
dsn_add_qp(struct util_buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = s[i] == '\0' ? '?' : (unsigned char)s[i];
		bool ends = i + 1 == len || s[i + 1] == '\n';
		char enc[3] = { (char)c };
		size_t n = 1;

		if (c == '\n') {
			util_buf_addstr(b, "\n");
			col = 0;
			continue;
		}
		if ((c < 0x21 || c > 0x7e || c == '=') &&
		    !((c == ' ' || c == '\t') && !ends)) {
			enc[0] = '=';
			enc[1] = hex[c >> 4];
			enc[2] = hex[c & 15];
			n = 3;
		}
		if (col + n > 75) {	/* 76 with the soft break's '=' */
			util_buf_addstr(b, "=\n");
			col = 0;
		}
		util_buf_add(b, enc, n);
		col += n;
	}
}

void
queue_dsn_build(const struct queue_dsn *d, struct util_buf *out)
{
	bool hdrs_8bit = false, global = queue_dsn_is_global(d);

	for (size_t i = 0; i < d->headers_len; i++)
		if ((unsigned char)d->headers[i] >= 0x80)
			hdrs_8bit = true;
	dsn_head(out, d, global);
	/*
	 * RFC 6533 3, 6.3, 6.4: when an address to report is not ASCII, the
	 * report and the returned headers are the global kinds, all in UTF-8.
	 */
	dsn_part(out, d, "Notification", global ? "text/plain; charset=utf-8" :
	    "text/plain; charset=us-ascii", global ? "8bit" : NULL);
	dsn_human(out, d, global);
	dsn_part(out, d, "Delivery report", global ?
	    "message/global-delivery-status" : "message/delivery-status",
	    global ? "8bit" : NULL);
	dsn_status(out, d, global);
	/*
	 * RFC 6522 4: headers that are not 7-bit may be returned
	 * quoted-printable.  A plain DSN does so, and stays 7-bit: it can
	 * reach a sender behind a server without 8BITMIME (RFC 6152 3),
	 * where an 8bit one would fail and, being from <>, be lost.
	 */
	dsn_part(out, d, d->delayed ? "Delayed Message Headers" :
	    "Undelivered Message Headers", global ? "message/global-headers" :
	    "text/rfc822-headers", global ? "8bit" : hdrs_8bit ?
	    "quoted-printable" : NULL);
	if (!global && hdrs_8bit)
		dsn_add_qp(out, d->headers, d->headers_len);
	else
		for (size_t i = 0; i < d->headers_len; i++) {
			char c = d->headers[i];
			util_buf_add(out, c == '\0' ? "?" : &d->headers[i], 1);
		}
	if (d->headers_len > 0 && d->headers[d->headers_len - 1] != '\n')
		util_buf_addstr(out, "\n");
	util_buf_printf(out, "\n--%s--\n", d->boundary);
}
