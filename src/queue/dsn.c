/*
 * queue/dsn.c: delivery status notifications (RFC 3464): a multipart/report
 * (RFC 6522) with a human-readable part, a message/delivery-status part and
 * the original headers as text/rfc822-headers.  Pure: builds bytes from
 * values, no disk and no clock, so the unit tests compare golden files.
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

/* Text that cannot end a header line: printable ASCII, bounded. */
static void
dsn_add_text(struct util_buf *b, const char *s)
{
	size_t n = 0;

	for (; s != NULL && *s != '\0' && n < DSN_TEXT_MAX; s++, n++) {
		unsigned char c = (unsigned char)*s;
		util_buf_add(b, c >= 0x20 && c < 0x7f ? s : "?", 1);
	}
	if (s != NULL && *s != '\0')
		util_buf_addstr(b, "...");
}

static void
dsn_add_date(struct util_buf *b, const char *name, int64_t t)
{
	char date[64];

	util_rfc5322_date(date, sizeof(date), t);
	util_buf_printf(b, "%s: %s\n", name, date);
}

/* An address for a header: RFC 6533 "utf-8" type when not ASCII. */
static void
dsn_add_addr_field(struct util_buf *b, const char *name, const char *addr)
{
	bool ascii = true;

	for (const char *p = addr; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			ascii = false;
	util_buf_printf(b, "%s: %s; ", name, ascii ? "rfc822" : "utf-8");
	for (const char *p = addr; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		util_buf_add(b, c >= 0x20 && c != 0x7f ? p : "?", 1);
	}
	util_buf_addstr(b, "\n");
}

static void
dsn_human(struct util_buf *b, const struct queue_dsn *d)
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
		dsn_add_text(b, r->addr);
		util_buf_addstr(b, ">: ");
		dsn_add_text(b, r->last_err != NULL ? r->last_err :
		    "(no details)");
		util_buf_addstr(b, "\n");
	}
}

/* RFC 3464 2.2 and 2.3: per-message, then per-recipient fields. */
static void
dsn_status(struct util_buf *b, const struct queue_dsn *d)
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
		dsn_add_text(b, why);
		util_buf_addstr(b, "\n");
		dsn_add_date(b, "Last-Attempt-Date", d->now);
		if (d->delayed)
			dsn_add_date(b, "Will-Retry-Until", d->retry_until);
	}
}

void
queue_dsn_build(const struct queue_dsn *d, struct util_buf *out)
{
	bool hdrs_8bit = false;
	char date[64];

	for (size_t i = 0; i < d->headers_len; i++)
		if ((unsigned char)d->headers[i] >= 0x80)
			hdrs_8bit = true;
	util_rfc5322_date(date, sizeof(date), d->now);
	util_buf_printf(out, "Received: by %s (postern) id %s; %s\n",
	    d->reporting_mta, d->qid, date);
	util_buf_printf(out, "Date: %s\n", date);
	util_buf_printf(out, "From: Mail Delivery System "
	    "<MAILER-DAEMON@%s>\n", d->reporting_mta);
	util_buf_addstr(out, "To: <");
	dsn_add_text(out, d->env->sender);
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
	util_buf_addstr(out, "\nThis is a MIME-encapsulated message.\n\n");

	util_buf_printf(out, "--%s\n", d->boundary);
	util_buf_addstr(out, "Content-Description: Notification\n"
	    "Content-Type: text/plain; charset=us-ascii\n\n");
	dsn_human(out, d);

	util_buf_printf(out, "\n--%s\n", d->boundary);
	util_buf_addstr(out, "Content-Description: Delivery report\n"
	    "Content-Type: message/delivery-status\n\n");
	dsn_status(out, d);

	util_buf_printf(out, "\n--%s\n", d->boundary);
	util_buf_printf(out, "Content-Description: %s\n"
	    "Content-Type: text/rfc822-headers\n", d->delayed ?
	    "Delayed Message Headers" : "Undelivered Message Headers");
	if (hdrs_8bit)
		util_buf_addstr(out, "Content-Transfer-Encoding: 8bit\n");
	util_buf_addstr(out, "\n");
	for (size_t i = 0; i < d->headers_len; i++) {
		char c = d->headers[i];
		util_buf_add(out, c == '\0' ? "?" : &d->headers[i], 1);
	}
	if (d->headers_len > 0 && d->headers[d->headers_len - 1] != '\n')
		util_buf_addstr(out, "\n");
	util_buf_printf(out, "\n--%s--\n", d->boundary);
}
