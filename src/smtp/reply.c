/*
 * smtp/reply.c: formatting replies (RFC 5321 4.2, multi-line with "code-")
 * and checking the replies that decide_cb hands back: they are outside
 * input too, so codes are range-checked and text is made safe.
 */
#include "smtp/smtp_private.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Send one reply line: "code" sep text CRLF, text cut to fit 512 octets. */
static void
smtp_reply_line(struct smtp_session *s, int code, char sep, const char *text,
    size_t len)
{
	char line[SMTP_REPLY_LINE_MAX + 1];
	size_t n, i;

	if (len > SMTP_REPLY_LINE_MAX - 6)
		len = SMTP_REPLY_LINE_MAX - 6;
	if (code < 100 || code > 599)
		code = 451;
	line[0] = (char)('0' + code / 100);
	line[1] = (char)('0' + code / 10 % 10);
	line[2] = (char)('0' + code % 10);
	line[3] = sep;
	n = 4;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		line[n++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
	}
	/* "250" alone, not "250 "; but RFC 4954 4 wants "334 " for an
	   empty challenge. */
	if (n == 4 && sep == ' ' && code != 334)
		n = 3;
	line[n++] = '\r';
	line[n++] = '\n';
	if (s->hooks.trace_cb != NULL)
		s->hooks.trace_cb(s->ctx, false, line, n - 2);
	if (s->hooks.send_cb != NULL)
		s->hooks.send_cb(s->ctx, line, n);
	if (sep == ' ')
		s->at_eom = false;	/* whatever it was, it is answered */
}

bool
smtp_early_talk(struct smtp_session *s, const char *what)
{
	char when[64];

	if (!s->p.sync_replies || s->hooks.early_talker_cb == NULL ||
	    !smtp_input_pending(s))
		return false;
	if (strcmp(what, "the greeting") == 0)
		util_strlcpy(when, "before the greeting", sizeof(when));
	else if (strcmp(what, "354") == 0)
		util_strlcpy(when, "before the 354 reply", sizeof(when));
	else
		util_snprintf(when, sizeof(when), "before the reply to %s",
		    what);
	if (!s->hooks.early_talker_cb(s->ctx, when))
		return false;
	s->raw_reply = NULL;	/* our 554 instead of a relayed reply */
	smtp_replyf(s, 554, "5.5.0 %s Protocol error: talked %s, closing "
	    "connection", s->p.hostname, when);
	smtp_mark_closing(s);
	return true;
}

/* A reply given whole by smtp_session_resume_raw(): traced line by line. */
static void
smtp_reply_raw(struct smtp_session *s)
{
	const char *p = s->raw_reply, *end = p + s->raw_len, *nl;

	s->raw_reply = NULL;
	for (; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			break;
		if (s->hooks.trace_cb != NULL)
			s->hooks.trace_cb(s->ctx, false, p, (size_t)(nl - p) -
			    (nl > p && nl[-1] == '\r'));
	}
	if (s->hooks.send_cb != NULL)
		s->hooks.send_cb(s->ctx, end - s->raw_len, s->raw_len);
	s->at_eom = false;
}

/*
 * RFC 5321 4.2.3 and 3.8: "421 <domain> Service not available".  Every 421
 * names this host first (after the enhanced code); text that already does
 * is returned as it is, otherwise the host name goes in through buf.
 */
static const char *
smtp_reply_domain(const struct smtp_session *s, const char *text, char *buf,
    size_t bufsz)
{
	const char *host = s->p.hostname;
	size_t esc = util_esc_len(text), hl = strlen(host);
	const char *rest = text + esc + (esc > 0 && text[esc] == ' ');

	if (strncasecmp(rest, host, hl) == 0 && (rest[hl] == ' ' ||
	    rest[hl] == '\n' || rest[hl] == '\0'))
		return text;
	/* Cut to fit is still a reply: lines are cut at 512 anyway. */
	(void)util_snprintf(buf, bufsz, "%.*s%s%s%s%s", (int)esc, text,
	    esc > 0 ? " " : "", host, rest[0] != '\0' && rest[0] != '\n' ?
	    " " : "", rest);
	return buf;
}

void
smtp_reply(struct smtp_session *s, int code, const char *text)
{
	char named[SMTP_REPLY_TEXT_MAX * 3];
	const char *p = text, *nl;

	if (s->must_wait != NULL) {
		/* The client waits for this reply: did it? */
		const char *what = s->must_wait;
		s->must_wait = NULL;
		if (smtp_early_talk(s, what))
			return;
	}
	if (s->raw_reply != NULL) {
		smtp_reply_raw(s);
		return;
	}
	if (code == 421)
		p = smtp_reply_domain(s, text, named, sizeof(named));

	for (;;) {
		nl = strchr(p, '\n');
		if (nl == NULL || nl[1] == '\0') {
			smtp_reply_line(s, code, ' ', p,
			    nl != NULL ? (size_t)(nl - p) : strlen(p));
			return;
		}
		smtp_reply_line(s, code, '-', p, (size_t)(nl - p));
		p = nl + 1;
	}
}

void
smtp_replyf(struct smtp_session *s, int code, const char *fmt, ...)
{
	char text[SMTP_REPLY_TEXT_MAX * 2];
	va_list ap;

	va_start(ap, fmt);
	/* A cut reply is still a reply; lines are cut at 512 anyway. */
	if (vsnprintf(text, sizeof(text), fmt, ap) < 0)
		text[0] = '\0';
	va_end(ap);
	smtp_reply(s, code, text);
}

bool
smtp_count_error(struct smtp_session *s)
{
	if (s->errors < UINT32_MAX)
		s->errors++;
	if (s->errors <= s->p.lim.err_max)
		return false;
	smtp_reply(s, 421, "4.7.0 Too many errors");
	smtp_mark_closing(s);
	return true;
}

void
smtp_error(struct smtp_session *s, int code, const char *text)
{
	if (!smtp_count_error(s))
		smtp_reply(s, code, text);
}

/* An enhanced status code of class digit cls starts the line t. */
static bool
smtp_has_esc(const char *t, char cls)
{
	size_t n = util_esc_len(t);

	return n > 0 && t[0] == cls &&
	    (t[n] == ' ' || t[n] == '\0' || t[n] == '\n');
}

/*
 * Send a reply from decide_cb.  Every line of a 2xx/4xx/5xx reply gets an
 * enhanced status code (RFC 2034 3); "X.0.0" when the hook gave none.
 */
static void
smtp_reply_custom(struct smtp_session *s, const struct smtp_reply *r)
{
	char text[SMTP_REPLY_TEXT_MAX + 1], out[SMTP_REPLY_TEXT_MAX * 3];
	char cls = (char)('0' + r->code / 100), esc[16] = "X.0.0 ";
	size_t esc_len = 6;
	size_t n = 0, len;
	const char *p, *nl;
	bool need = cls == '2' || cls == '4' || cls == '5';

	len = strnlen(r->text, sizeof(r->text) - 1);
	memcpy(text, r->text, len);
	text[len] = '\0';
	for (p = text;; p = nl + 1) {
		nl = strchr(p, '\n');
		len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if (need && smtp_has_esc(p, cls) && p == text) {
			/* Later lines without one repeat the first line's. */
			esc_len = strcspn(p, " \n");
			memcpy(esc, p, esc_len);
			esc[esc_len++] = ' ';
		} else if (need && !smtp_has_esc(p, cls) &&
		    n + esc_len < sizeof(out)) {
			memcpy(out + n, esc, esc_len);
			out[n] = cls;
			n += esc_len;
		}
		if (len > sizeof(out) - n - 2)
			len = sizeof(out) - n - 2;
		memcpy(out + n, p, len);
		n += len;
		if (nl == NULL || nl[1] == '\0')
			break;
		out[n++] = '\n';
	}
	out[n] = '\0';
	smtp_reply(s, r->code, out);
}

void
smtp_reply_ok(struct smtp_session *s, const struct smtp_reply *r,
    int def_code, const char *def_text)
{
	if (r != NULL && r->code >= 200 && r->code <= 299)
		smtp_reply_custom(s, r);
	else
		smtp_reply(s, def_code, def_text);
}

void
smtp_reply_refusal(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r, int def_code, const char *def_text)
{
	bool valid = r != NULL && r->code >= 400 && r->code <= 599;

	if (v == SMTP_CLOSE) {
		if (valid)
			smtp_reply_custom(s, r);
		else
			smtp_reply(s, 421, "4.3.0 Service not available, "
			    "closing channel");
		smtp_mark_closing(s);
		return;
	}
	if (valid)
		smtp_reply_custom(s, r);
	else if (r == NULL || r->code == 0)
		smtp_reply(s, def_code, def_text);
	else
		smtp_reply(s, 451, "4.3.0 Temporary local problem");
}
