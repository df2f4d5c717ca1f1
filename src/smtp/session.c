/*
 * smtp/session.c: the life of a session: creation, the line reader (the
 * border: CRLF, line_max, NUL), feeding bytes to the right reader for the
 * state, PENDING decisions and resume, and the facts others may read.
 * Commands themselves live in command.c.  No sockets, no disk, no clock.
 */
#include "smtp/smtp.h"
#include "smtp/smtp_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct smtp_session *
smtp_session_new(const struct smtp_params *p, const struct smtp_hooks *hooks,
    void *ctx)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));

	s->p = *p;
	if (s->p.hostname == NULL)
		s->p.hostname = "localhost";
	if (s->p.lim.line_max == 0)
		s->p.lim.line_max = SMTP_DEF_LINE_MAX;
	if (s->p.lim.line_max < SMTP_MIN_LINE_MAX)
		s->p.lim.line_max = SMTP_MIN_LINE_MAX;
	if (s->p.lim.rcpt_max == 0)
		s->p.lim.rcpt_max = SMTP_DEF_RCPT_MAX;
	if (s->p.lim.err_max == 0)
		s->p.lim.err_max = SMTP_DEF_ERR_MAX;
	s->hooks = *hooks;
	s->ctx = ctx;
	s->tls_active = p->tls_active;
	s->state = SMTP_ST_INIT;
	return s;
}

static void
smtp_line_free(struct smtp_session *s)
{
	free(s->line);
	s->line = NULL;
	s->line_len = 0;
}

static void
smtp_tx_clear(struct smtp_session *s)
{
	free(s->sender);
	s->sender = NULL;
	for (unsigned i = 0; i < s->rcpt_count; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->rcpt_count = s->rcpt_cap = 0;
	memset(&s->mail, 0, sizeof(s->mail));
	s->bdat_tx = false;
}

void
smtp_session_free(struct smtp_session **sp)
{
	struct smtp_session *s;

	if (sp == NULL || (s = *sp) == NULL)
		return;
	smtp_line_free(s);
	smtp_tx_clear(s);
	smtp_staged_clear(s);
	free(s->helo);
	free(s->auth_user);
	free(s);
	*sp = NULL;
}

void
smtp_set_state(struct smtp_session *s, enum smtp_state st)
{
	s->state = st;
}

void
smtp_mark_closing(struct smtp_session *s)
{
	s->closing = true;
	s->waiting = false;
	smtp_line_free(s);
}

bool
smtp_in_tx(const struct smtp_session *s)
{
	return s->state == SMTP_ST_MAIL || s->state == SMTP_ST_RCPT;
}

void
smtp_tx_reset(struct smtp_session *s)
{
	smtp_tx_clear(s);
	if (s->state >= SMTP_ST_MAIL && s->state <= SMTP_ST_BDAT)
		smtp_set_state(s, SMTP_ST_READY);
	if (s->hooks.reset_cb != NULL)
		s->hooks.reset_cb(s->ctx);
	s->content_open = false;
}

void
smtp_staged_clear(struct smtp_session *s)
{
	free(s->st_str);
	s->st_str = NULL;
}

bool
smtp_decide(struct smtp_session *s, const struct smtp_event *ev,
    enum smtp_verdict *v, struct smtp_reply *r)
{
	r->code = 0;
	r->text[0] = '\0';
	*v = SMTP_OK;
	if (s->hooks.decide_cb != NULL)
		*v = s->hooks.decide_cb(s->ctx, ev, r);
	r->text[sizeof(r->text) - 1] = '\0';
	/* A hook may have called smtp_session_close_with(). */
	if (s->closing)
		return false;
	switch (*v) {
	case SMTP_OK:
	case SMTP_REJECT:
	case SMTP_CLOSE:
		return true;
	case SMTP_PENDING:
		s->waiting = true;
		s->wait_stage = ev->stage;
		return false;
	}
	/* Not a verdict: a local problem, not the peer's. */
	*v = SMTP_REJECT;
	r->code = 451;
	util_strlcpy(r->text, "4.3.0 Temporary local problem", sizeof(r->text));
	return true;
}

void
smtp_session_start(struct smtp_session *s)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_CONNECT, .arg = "" };
	struct smtp_reply r;
	enum smtp_verdict v;

	if (s->state != SMTP_ST_INIT || s->closing)
		return;
	s->must_wait = "the greeting";
	if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_CONNECT, v, &r);
}

/*
 * resume() only finishes the decision: it sends the reply and changes the
 * state.  It never reads input, so it cannot recurse into the hooks more
 * than one stage deep; the caller feeds the bytes it kept afterwards.
 */
void
smtp_session_resume(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *reply)
{
	struct smtp_reply r;

	if (!s->waiting || s->closing)
		return;
	s->waiting = false;
	r.code = 0;
	r.text[0] = '\0';
	if (reply != NULL) {
		r.code = reply->code;
		memcpy(r.text, reply->text, sizeof(r.text));
		r.text[sizeof(r.text) - 1] = '\0';
	}
	if (v != SMTP_OK && v != SMTP_REJECT && v != SMTP_CLOSE) {
		v = SMTP_REJECT;
		r.code = 451;
		util_strlcpy(r.text, "4.3.0 Temporary local problem",
		    sizeof(r.text));
	}
	smtp_stage_done(s, s->wait_stage, v, &r);
}

void
smtp_session_resume_raw(struct smtp_session *s, enum smtp_verdict v,
    int code, const char *raw, size_t len)
{
	struct smtp_reply r = { 0 };

	/* Whole lines only: anything else gets the stage's own reply. */
	if (raw != NULL && len >= 5 && raw[len - 2] == '\r' &&
	    raw[len - 1] == '\n') {
		r.code = code;
		s->raw_reply = raw;
		s->raw_len = len;
	}
	smtp_session_resume(s, v, &r);
	s->raw_reply = NULL;
	s->raw_len = 0;
}

/*
 * A line the reader refuses.  Were it a SASL answer, the AUTH command it
 * answered fails with it: the next line is a command again (RFC 4954 4).
 */
static void
smtp_line_refused(struct smtp_session *s, const char *text)
{
	smtp_auth_reset(s);
	smtp_error(s, 500, text);
}

static bool
smtp_in_auth(const struct smtp_session *s)
{
	return s->auth_step != SMTP_AUTH_NONE && s->auth_step != SMTP_AUTH_DONE;
}

/* A line over line_max, refused unread: traced as what it stood for. */
static void
smtp_trace_too_long(struct smtp_session *s)
{
	const char *what = smtp_in_auth(s) ? SMTP_TRACE_AUTH_ANSWER :
	    SMTP_TRACE_LINE_TOO_LONG;

	if (s->hooks.trace_cb != NULL)
		s->hooks.trace_cb(s->ctx, true, what, strlen(what));
}

/* One whole line, CRLF included (len >= 2). */
static void
smtp_line(struct smtp_session *s, const char *line, size_t len)
{
	size_t n = len - 1;
	bool crlf = n > 0 && line[n - 1] == '\r';

	if (crlf)
		n--;
	s->lines++;
	/* Never log an AUTH answer: it carries the password. */
	if (s->hooks.trace_cb != NULL && smtp_in_auth(s))
		s->hooks.trace_cb(s->ctx, true, SMTP_TRACE_AUTH_ANSWER,
		    strlen(SMTP_TRACE_AUTH_ANSWER));
	else if (s->hooks.trace_cb != NULL)	/* AUTH: its mechanism only */
		s->hooks.trace_cb(s->ctx, true, line,
		    smtp_cmd_loggable(line, n));
	/* The line reader is the border: CRLF only. */
	if (!crlf || s->line_bare_lf || memchr(line, '\r', n) != NULL)
		s->saw_bare_eol = true;
	if (memchr(line, '\0', n) != NULL)
		smtp_line_refused(s, "5.5.2 NUL character in command refused");
	else if (!crlf || s->line_bare_lf)
		smtp_line_refused(s, "5.5.2 Bare LF in command refused; "
		    "lines must end in CRLF");
	else if (memchr(line, '\r', n) != NULL)
		smtp_line_refused(s, "5.5.2 Bare CR in command refused");
	else if (smtp_in_auth(s))
		smtp_auth_line(s, line, n);	/* a SASL answer, not a command */
	else
		smtp_command(s, line, n);
}

/*
 * Read at most one command line.  A line wholly inside buf is used in
 * place; only a line cut by the end of buf is copied, into a buffer of
 * line_max bytes that exists only while it holds something.
 */
/*
 * The first LF in buf[0..n) that ends a line: one right after a CR (in buf,
 * or as the last byte kept from before when prev_cr).  A bare LF on the
 * way is not an end; it only marks the line bad, so bytes after it can
 * never pass for a command of their own (RFC 5321 2.3.8, smuggling).
 */
static const char *
smtp_find_crlf(struct smtp_session *s, const char *buf, size_t n,
    bool prev_cr)
{
	const char *p = buf, *lf;

	while ((lf = memchr(p, '\n', n - (size_t)(p - buf))) != NULL) {
		if (lf > buf ? lf[-1] == '\r' : prev_cr)
			return lf;
		s->line_bare_lf = true;
		p = lf + 1;
	}
	return NULL;
}

/*
 * Read at most one command line.  A line wholly inside buf is used in
 * place; only a line cut by the end of buf is copied, into a buffer of
 * line_max bytes that exists only while it holds something.
 */
static size_t
smtp_line_feed(struct smtp_session *s, const char *buf, size_t len)
{
	size_t room, n, used;
	const char *lf;

	if (s->line_drain) {
		lf = smtp_find_crlf(s, buf, len, s->drain_cr);
		n = lf != NULL ? (size_t)(lf - buf) + 1 : len;
		if (n > SMTP_LINE_DRAIN_MAX - s->drained) {
			/* A line that never ends is cut, not drained forever. */
			smtp_trace_too_long(s);
			smtp_reply(s, 500, "5.5.2 Line too long, closing "
			    "connection");
			smtp_mark_closing(s);
			return n;
		}
		s->drained += (uint32_t)n;
		if (lf == NULL) {
			s->drain_cr = buf[len - 1] == '\r';
			return len;
		}
		s->line_drain = false;
		s->line_bare_lf = false;
		smtp_trace_too_long(s);
		/* RFC 5321 4.5.3.1.4 and 4.2.2 */
		smtp_line_refused(s, "5.5.2 Line too long");
		return (size_t)(lf - buf) + 1;
	}
	room = s->p.lim.line_max - s->line_len;
	n = len < room ? len : room;
	lf = smtp_find_crlf(s, buf, n,
	    s->line_len > 0 && s->line[s->line_len - 1] == '\r');
	if (lf == NULL) {
		if (n == room) {
			/* line_max octets and no CRLF yet: over the limit. */
			smtp_line_free(s);
			s->line_drain = true;
			s->drained = 0;
			s->drain_cr = buf[n - 1] == '\r';
			return n;
		}
		if (s->line == NULL)
			s->line = xmalloc(s->p.lim.line_max);
		memcpy(s->line + s->line_len, buf, n);
		s->line_len += n;
		return n;
	}
	used = (size_t)(lf - buf) + 1;
	s->feed_rest = len - used;
	if (s->line_len == 0) {
		smtp_line(s, buf, used);
		s->line_bare_lf = false;
		s->feed_rest = 0;
		return used;
	}
	memcpy(s->line + s->line_len, buf, used);
	s->line_len += used;
	{
		/* smtp_line() may free s->line (closing): keep our copy. */
		char *line = s->line;
		size_t line_len = s->line_len;

		s->line = NULL;
		s->line_len = 0;
		smtp_line(s, line, line_len);
		s->line_bare_lf = false;
		s->feed_rest = 0;
		free(line);
	}
	return used;
}

static bool
smtp_can_read(const struct smtp_session *s)
{
	return !s->closing && !s->waiting && s->state != SMTP_ST_INIT &&
	    s->state != SMTP_ST_TLS;
}

size_t
smtp_session_feed(struct smtp_session *s, const char *buf, size_t len)
{
	size_t off = 0, n;

	while (off < len && smtp_can_read(s)) {
		switch (s->state) {
		case SMTP_ST_DATA:
			n = smtp_data_feed(s, buf + off, len - off);
			break;
		case SMTP_ST_BDAT:
			n = smtp_bdat_feed(s, buf + off, len - off);
			break;
		default:
			n = smtp_line_feed(s, buf + off, len - off);
			break;
		}
		ASSERT(n > 0 && n <= len - off);
		off += n;
	}
	return off;
}

bool
smtp_input_pending(struct smtp_session *s)
{
	return s->feed_rest > 0 || (s->hooks.input_pending_cb != NULL &&
	    s->hooks.input_pending_cb(s->ctx));
}

bool
smtp_session_is_waiting(const struct smtp_session *s)
{
	return s->waiting;
}

uint32_t
smtp_session_lines(const struct smtp_session *s)
{
	return s->lines;
}

bool
smtp_session_is_closing(const struct smtp_session *s)
{
	return s->closing;
}

bool
smtp_session_content_dropped(const struct smtp_session *s,
    uint64_t *size_out)
{
	*size_out = s->dec.size;
	return s->content_open;
}

bool
smtp_session_in_data(const struct smtp_session *s)
{
	return s->state == SMTP_ST_DATA || s->bdat_tx ||
	    (s->state == SMTP_ST_BDAT && !s->chunk_drain);
}

bool
smtp_session_at_eom(const struct smtp_session *s)
{
	return s->at_eom;
}

void
smtp_session_close_with(struct smtp_session *s, int code, const char *text)
{
	if (s->closing)
		return;
	s->must_wait = NULL;	/* our own closing words */
	smtp_reply(s, code, text != NULL ? text : "");
	smtp_mark_closing(s);
}

void
smtp_session_tls_started(struct smtp_session *s)
{
	s->tls_active = true;
	free(s->helo);
	s->helo = NULL;
	free(s->auth_user);	/* RFC 3207 4.2: forget what came before */
	s->auth_user = NULL;
	s->auth_step = SMTP_AUTH_NONE;
	s->esmtp = false;
	s->line_drain = false;
	smtp_line_free(s);
	smtp_tx_reset(s);
	if (s->state != SMTP_ST_INIT && s->state != SMTP_ST_REFUSED)
		smtp_set_state(s, SMTP_ST_GREETED);
}

const char *
smtp_session_auth_user(const struct smtp_session *s)
{
	return s->auth_step == SMTP_AUTH_DONE ? s->auth_user : NULL;
}

const char *
smtp_session_helo(const struct smtp_session *s)
{
	return s->helo;
}

bool
smtp_session_saw_bare_eol(const struct smtp_session *s)
{
	return s->saw_bare_eol;
}

bool
smtp_session_is_esmtp(const struct smtp_session *s)
{
	return s->esmtp;
}

const char *
smtp_session_sender(const struct smtp_session *s)
{
	return s->sender;
}

unsigned
smtp_session_rcpt_count(const struct smtp_session *s)
{
	return s->rcpt_count;
}

const char *
smtp_session_rcpt(const struct smtp_session *s, unsigned i)
{
	return i < s->rcpt_count ? s->rcpts[i] : NULL;
}

bool
smtp_session_smtputf8(const struct smtp_session *s)
{
	return s->sender != NULL && s->mail.smtputf8;
}

enum smtp_body
smtp_session_body_type(const struct smtp_session *s)
{
	return s->sender != NULL ? s->mail.body : SMTP_BODY_UNSPEC;
}
