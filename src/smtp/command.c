/*
 * smtp/command.c: the commands: a table of what is allowed when, each
 * command's checks, its stage for decide_cb, and what happens on the
 * verdict (the smtp_done_* functions, shared with smtp_session_resume()).
 * DATA and BDAT are transfer.c's.  Knows no sockets.
 */
#include "smtp/smtp.h"
#include "smtp/smtp_private.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* What a command needs before it may run. */
enum smtp_need {
	SMTP_NEED_NONE,
	SMTP_NEED_NO_TX,	/* HELO done, no transaction (MAIL) */
	SMTP_NEED_MAIL,		/* a transaction (RCPT) */
	SMTP_NEED_RCPT,		/* a transaction with a recipient (DATA) */
};

/* What a command takes after the verb. */
enum smtp_args {
	SMTP_ARGS_ANY,
	SMTP_ARGS_NONE,
	SMTP_ARGS_NEED,
};

struct smtp_cmd_def {
	enum smtp_verb	 verb;
	void		(*fn)(struct smtp_session *, const struct smtp_cmd *);
	enum smtp_need	 need;
	enum smtp_args	 args;
	const char	*usage;		/* 501 text */
};

static void	smtp_cmd_helo(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_mail(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_rcpt(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_rset(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_noop(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_quit(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_vrfy(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_expn(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_help(struct smtp_session *, const struct smtp_cmd *);
static void	smtp_cmd_starttls(struct smtp_session *,
		    const struct smtp_cmd *);

static const struct smtp_cmd_def smtp_cmds[] = {
	{ SMTP_VERB_HELO, smtp_cmd_helo, SMTP_NEED_NONE, SMTP_ARGS_NEED,
	    "5.5.4 Syntax: HELO hostname" },
	{ SMTP_VERB_EHLO, smtp_cmd_helo, SMTP_NEED_NONE, SMTP_ARGS_NEED,
	    "5.5.4 Syntax: EHLO hostname" },
	{ SMTP_VERB_MAIL, smtp_cmd_mail, SMTP_NEED_NO_TX, SMTP_ARGS_NEED,
	    "5.5.4 Syntax: MAIL FROM:<address> [parameters]" },
	{ SMTP_VERB_RCPT, smtp_cmd_rcpt, SMTP_NEED_MAIL, SMTP_ARGS_NEED,
	    "5.5.4 Syntax: RCPT TO:<address>" },
	{ SMTP_VERB_DATA, smtp_cmd_data, SMTP_NEED_RCPT, SMTP_ARGS_NONE,
	    "5.5.4 Syntax: DATA" },
	/* BDAT checks itself: a refused chunk must still be read. */
	{ SMTP_VERB_BDAT, smtp_cmd_bdat, SMTP_NEED_NONE, SMTP_ARGS_ANY,
	    "5.5.4 Syntax: BDAT size [LAST]" },
	{ SMTP_VERB_RSET, smtp_cmd_rset, SMTP_NEED_NONE, SMTP_ARGS_NONE,
	    "5.5.4 Syntax: RSET" },
	{ SMTP_VERB_NOOP, smtp_cmd_noop, SMTP_NEED_NONE, SMTP_ARGS_ANY, "" },
	{ SMTP_VERB_QUIT, smtp_cmd_quit, SMTP_NEED_NONE, SMTP_ARGS_NONE,
	    "5.5.4 Syntax: QUIT" },
	{ SMTP_VERB_VRFY, smtp_cmd_vrfy, SMTP_NEED_NONE, SMTP_ARGS_NEED,
	    "5.5.4 Syntax: VRFY address" },
	{ SMTP_VERB_EXPN, smtp_cmd_expn, SMTP_NEED_NONE, SMTP_ARGS_ANY, "" },
	{ SMTP_VERB_HELP, smtp_cmd_help, SMTP_NEED_NONE, SMTP_ARGS_ANY, "" },
	/* STARTTLS checks itself: RFC 3207 4 orders its refusals. */
	{ SMTP_VERB_STARTTLS, smtp_cmd_starttls, SMTP_NEED_NONE,
	    SMTP_ARGS_ANY, "5.5.4 Syntax: STARTTLS" },
	{ SMTP_VERB_AUTH, smtp_cmd_auth, SMTP_NEED_NONE, SMTP_ARGS_ANY, "" },
};

/* The state check of the table; replies itself (503) and returns false. */
static bool
smtp_cmd_allowed(struct smtp_session *s, const struct smtp_cmd_def *d)
{
	const char *why = NULL;

	switch (d->need) {
	case SMTP_NEED_NONE:
		break;
	case SMTP_NEED_NO_TX:
		if (s->state < SMTP_ST_READY)
			why = "5.5.1 Send HELO/EHLO first";
		else if (smtp_in_tx(s))
			why = "5.5.1 Nested MAIL command";
		break;
	case SMTP_NEED_MAIL:
		if (!smtp_in_tx(s))
			why = "5.5.1 Need MAIL before RCPT";
		break;
	case SMTP_NEED_RCPT:
		if (!smtp_in_tx(s))
			why = "5.5.1 Need MAIL before DATA";
		else if (s->state == SMTP_ST_MAIL)
			why = "5.5.1 No valid recipients";
		break;
	}
	if (why == NULL)
		return true;
	/* RFC 5321 4.3.2: sequence errors are 503 */
	smtp_error(s, 503, why);
	return false;
}

static const char *
smtp_verb_name(enum smtp_verb v)
{
	static const char *const names[] = {
		[SMTP_VERB_UNKNOWN] = "UNKNOWN", [SMTP_VERB_HELO] = "HELO",
		[SMTP_VERB_EHLO] = "EHLO", [SMTP_VERB_MAIL] = "MAIL",
		[SMTP_VERB_RCPT] = "RCPT", [SMTP_VERB_DATA] = "DATA",
		[SMTP_VERB_BDAT] = "BDAT", [SMTP_VERB_RSET] = "RSET",
		[SMTP_VERB_NOOP] = "NOOP", [SMTP_VERB_QUIT] = "QUIT",
		[SMTP_VERB_VRFY] = "VRFY", [SMTP_VERB_EXPN] = "EXPN",
		[SMTP_VERB_HELP] = "HELP", [SMTP_VERB_STARTTLS] = "STARTTLS",
		[SMTP_VERB_AUTH] = "AUTH",
	};
	return (unsigned)v < sizeof(names) / sizeof(names[0]) &&
	    names[v] != NULL ? names[v] : "UNKNOWN";
}

/*
 * Must the client wait for this command's reply before it sends more?
 * RFC 2920 3.1: EHLO, VRFY, EXPN, NOOP (and HELO) end a group; AUTH's
 * reply is a challenge or the outcome; a client that was not offered
 * PIPELINING (HELO, or nothing yet) waits after every command.  STARTTLS
 * (RFC 3207 4.2: what follows is dropped) and DATA (params.sync_data)
 * have rules of their own, BDAT's chunk follows it at once, and after
 * QUIT nothing is read.
 */
static bool
smtp_ends_group(const struct smtp_session *s, enum smtp_verb v)
{
	switch (v) {
	case SMTP_VERB_STARTTLS:
	case SMTP_VERB_DATA:
	case SMTP_VERB_BDAT:		/* its chunk follows at once */
	case SMTP_VERB_QUIT:
		return false;
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
	case SMTP_VERB_VRFY:
	case SMTP_VERB_EXPN:
	case SMTP_VERB_NOOP:
	case SMTP_VERB_AUTH:
		return true;
	default:
		return !s->esmtp;
	}
}

static bool
smtp_ok_before_tls(enum smtp_verb v)
{
	return v == SMTP_VERB_EHLO || v == SMTP_VERB_HELO ||
	    v == SMTP_VERB_STARTTLS || v == SMTP_VERB_NOOP ||
	    v == SMTP_VERB_RSET || v == SMTP_VERB_QUIT || v == SMTP_VERB_BDAT;
}

/* A session-wide policy refused the command: true once it replied. */
static bool
smtp_command_refused(struct smtp_session *s, enum smtp_verb verb)
{
	struct smtp_reply r = { 0 };
	enum smtp_verdict v;

	if (s->hooks.command_cb == NULL)
		return false;
	v = s->hooks.command_cb(s->ctx, smtp_verb_name(verb), &r);
	if (v != SMTP_REJECT && v != SMTP_CLOSE)
		return false;
	smtp_reply_refusal(s, v, &r, 550, "5.7.1 Refused");
	return true;
}

void
smtp_command(struct smtp_session *s, const char *line, size_t len)
{
	const struct smtp_cmd_def *d = NULL;
	struct smtp_cmd c;

	if (smtp_cmd_parse(line, len, &c) == -1 ||
	    c.verb == SMTP_VERB_UNKNOWN) {
		/*
		 * A policy that refuses every command refuses this line too,
		 * without counting an error: the text of a message sent
		 * after a refused DATA must not end the session at err_max.
		 */
		if (!smtp_command_refused(s, SMTP_VERB_UNKNOWN))
			smtp_error(s, 500, "5.5.2 Command unrecognized");
		return;
	}
	s->must_wait = smtp_ends_group(s, c.verb) ? smtp_verb_name(c.verb) :
	    NULL;
	/* BDAT must read its chunk: its stages decide instead. */
	if (c.verb != SMTP_VERB_BDAT && smtp_command_refused(s, c.verb))
		return;
	/* RFC 5321 3.1: after a refused connection only QUIT is useful. */
	if (s->state == SMTP_ST_REFUSED && c.verb != SMTP_VERB_QUIT) {
		smtp_error(s, 503, "5.5.1 No SMTP service here");
		return;
	}
	/*
	 * RFC 3207 4: a server that requires TLS refuses everything but
	 * these with 530, command by command.  BDAT is let through: it must
	 * still read its chunk, and without MAIL it gets 503 anyway.
	 */
	if (s->p.require_tls && !s->tls_active && !smtp_ok_before_tls(c.verb)) {
		smtp_error(s, 530, "5.7.0 Must issue a STARTTLS command first");
		return;
	}
	for (size_t i = 0; i < sizeof(smtp_cmds) / sizeof(smtp_cmds[0]); i++)
		if (smtp_cmds[i].verb == c.verb)
			d = &smtp_cmds[i];
	ASSERT(d != NULL);
	if (!smtp_cmd_allowed(s, d))
		return;
	if ((d->args == SMTP_ARGS_NONE && c.arg_len > 0) ||
	    (d->args == SMTP_ARGS_NEED && c.arg_len == 0)) {
		smtp_error(s, 501, d->usage);
		return;
	}
	d->fn(s, &c);
}

/* ----- HELO / EHLO ----- */

static void
smtp_cmd_helo(struct smtp_session *s, const struct smtp_cmd *c)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_HELO };
	struct smtp_reply r;
	enum smtp_verdict v;

	for (size_t i = 0; i < c->arg_len; i++) {
		unsigned char ch = (unsigned char)c->arg[i];

		if (ch < 0x20 || ch == 0x7f) {
			smtp_error(s, 501, "5.5.4 Bad HELO/EHLO argument");
			return;
		}
	}
	smtp_staged_clear(s);
	s->st_str = xstrndup(c->arg, c->arg_len);
	s->st_esmtp = c->verb == SMTP_VERB_EHLO;
	ev.arg = s->st_str;
	ev.esmtp = s->st_esmtp;
	if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_HELO, v, &r);
}

/* RFC 1869 4.3: the EHLO reply; the keywords in a fixed order. */
static void
smtp_reply_ehlo(struct smtp_session *s)
{
	static const char tail[] =
	    "\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8\nCHUNKING";
	char text[SMTP_REPLY_TEXT_MAX * 2], size[UTIL_DEC_MAX];
	struct util_buf b = { 0 };

	util_buf_addstr(&b, s->p.hostname);
	util_buf_add(&b, " Hello ", 7);
	util_buf_add(&b, s->helo, strnlen(s->helo, 255));
	util_buf_add(&b, "\nPIPELINING\nSIZE ", 17);
	util_buf_addstr(&b, util_i64_dec(size, (int64_t)s->p.lim.msg_max));
	util_buf_add(&b, tail, sizeof(tail) - 1);
	if (s->p.starttls && !s->tls_active)
		util_buf_addstr(&b, "\nSTARTTLS");
	if (smtp_auth_offered(s))
		util_buf_addstr(&b, "\nAUTH PLAIN LOGIN");
	util_strlcpy(text, util_buf_cstr(&b), sizeof(text));
	util_buf_clear(&b);
	smtp_reply(s, 250, text);
}

static void
smtp_done_helo(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	if (v != SMTP_OK) {
		smtp_reply_refusal(s, v, r, 550, "5.7.1 HELO/EHLO refused");
		smtp_staged_clear(s);
		return;
	}
	free(s->helo);
	s->helo = s->st_str;
	s->st_str = NULL;
	s->esmtp = s->st_esmtp;
	/* RFC 5321 4.1.4: a new EHLO/HELO is also a RSET. */
	smtp_tx_reset(s);
	smtp_set_state(s, SMTP_ST_READY);
	/* RFC 2034 3: no enhanced code on the EHLO/HELO reply. */
	if (s->esmtp)
		smtp_reply_ehlo(s);
	else
		smtp_replyf(s, 250, "%s Hello %.255s", s->p.hostname, s->helo);
}

/* ----- MAIL / RCPT ----- */

/* "FROM:" or "TO:" (any case) and one optional space (RFC 5321 4.1.1.2). */
static const char *
smtp_skip_prefix(const struct smtp_cmd *c, const char *prefix)
{
	size_t n = strlen(prefix);

	if (c->arg_len < n || strncasecmp(c->arg, prefix, n) != 0)
		return NULL;
	if (c->arg_len > n && c->arg[n] == ' ')
		n++;
	return c->arg + n;
}

static void
smtp_cmd_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
	const char *lim = c->arg + c->arg_len, *p, *end, *err;
	struct smtp_event ev = { .stage = SMTP_STAGE_MAIL };
	struct smtp_mail_params mp;
	struct smtp_addr a;
	struct smtp_reply r;
	enum smtp_verdict v;
	int code;

	if ((p = smtp_skip_prefix(c, "FROM:")) == NULL) {
		smtp_error(s, 501, "5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (smtp_addr_parse(p, (size_t)(lim - p), true, &a, &end, &err) ==
	    -1) {
		if (!smtp_count_error(s))
			smtp_replyf(s, 501, "5.1.7 Bad sender address syntax "
			    "(%s)", err);
		return;
	}
	if (end < lim && *end != ' ') {
		smtp_error(s, 501, "5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (smtp_mail_params_parse(end, lim, s->esmtp, s->p.lim.msg_max, &mp,
	    &code, &err) == -1) {
		if (code == 552)
			smtp_reply(s, code, err);
		else
			smtp_error(s, code, err);
		return;
	}
	/*
	 * RFC 4954 5: a server that offers AUTH accepts the AUTH parameter
	 * (and may ignore it, which we do: the submitter is not trusted).
	 */
	if (mp.auth && !smtp_auth_offered(s)) {
		smtp_error(s, 555, "5.5.4 Unsupported MAIL parameter");
		return;
	}
	/* RFC 6531 3.5: UTF-8 addresses only with SMTPUTF8 */
	if (!mp.smtputf8 && smtp_has_8bit(a.addr, strlen(a.addr))) {
		smtp_reply(s, 553, "5.6.7 Non-ASCII address needs SMTPUTF8");
		return;
	}
	smtp_staged_clear(s);
	s->st_str = xstrdup(a.addr);
	s->st_mail = mp;
	ev.arg = s->st_str;
	ev.size = mp.size;
	ev.body = mp.body;
	ev.smtputf8 = mp.smtputf8;
	if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_MAIL, v, &r);
}

static void
smtp_done_mail(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	if (v != SMTP_OK) {
		smtp_reply_refusal(s, v, r, 550, "5.7.1 Sender rejected");
		smtp_staged_clear(s);
		return;
	}
	free(s->sender);
	s->sender = s->st_str;
	s->st_str = NULL;
	s->mail = s->st_mail;
	smtp_set_state(s, SMTP_ST_MAIL);
	smtp_reply_ok(s, r, 250, "2.1.0 Ok");
}

static void
smtp_cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c)
{
	const char *lim = c->arg + c->arg_len, *p, *end, *err;
	struct smtp_event ev = { .stage = SMTP_STAGE_RCPT };
	struct smtp_param prm;
	struct smtp_addr a;
	struct smtp_reply r;
	enum smtp_verdict v;
	int rc;

	if (s->bdat_tx) {
		smtp_error(s, 503, "5.5.1 RCPT after BDAT");
		return;
	}
	if ((p = smtp_skip_prefix(c, "TO:")) == NULL) {
		smtp_error(s, 501, "5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if ((size_t)(lim - p) >= 12 && strncasecmp(p, "<postmaster>", 12) ==
	    0) {
		/*
		 * RFC 5321 4.1.1.3 and 4.5.1: "<Postmaster>" needs no domain
		 * and must be accepted; it is routed as our host name's.
		 */
		smtp_addr_postmaster(s->p.hostname, &a);
		end = p + 12;
	} else if (smtp_addr_parse(p, (size_t)(lim - p), false, &a, &end,
	    &err) == -1) {
		if (!smtp_count_error(s))
			smtp_replyf(s, 501, "5.1.3 Bad recipient address "
			    "syntax (%s)", err);
		return;
	}
	if (end < lim && *end != ' ') {
		smtp_error(s, 501, "5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if ((rc = smtp_param_next(&end, lim, &prm)) != 0) {
		if (rc == -1)
			smtp_error(s, 501, "5.5.4 Bad RCPT parameter syntax");
		else
			smtp_error(s, 555, "5.5.4 Unsupported RCPT parameter");
		return;
	}
	if (!s->mail.smtputf8 && smtp_has_8bit(a.addr, strlen(a.addr))) {
		smtp_reply(s, 553, "5.6.7 Non-ASCII address needs SMTPUTF8");
		return;
	}
	for (unsigned i = 0; i < s->rcpt_count; i++) {
		if (strcasecmp(s->rcpts[i], a.addr) == 0) {
			/* Already accepted: say so again, keep one copy. */
			smtp_reply(s, 250, "2.1.5 Ok");
			return;
		}
	}
	if (s->rcpt_count >= s->p.lim.rcpt_max) {
		/* RFC 5321 4.5.3.1.10 */
		smtp_reply(s, 452, "4.5.3 Too many recipients");
		return;
	}
	smtp_staged_clear(s);
	s->st_str = xstrdup(a.addr);
	ev.arg = s->st_str;
	if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_RCPT, v, &r);
}

static void
smtp_done_rcpt(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	if (v != SMTP_OK) {
		smtp_reply_refusal(s, v, r, 550, "5.7.1 Recipient rejected");
		smtp_staged_clear(s);
		return;
	}
	if (s->rcpt_count == s->rcpt_cap) {
		s->rcpt_cap = s->rcpt_cap == 0 ? 4 : s->rcpt_cap * 2;
		s->rcpts = xreallocarray(s->rcpts, s->rcpt_cap,
		    sizeof(*s->rcpts));
	}
	s->rcpts[s->rcpt_count++] = s->st_str;
	s->st_str = NULL;
	smtp_set_state(s, SMTP_ST_RCPT);
	smtp_reply_ok(s, r, 250, "2.1.5 Ok");
}

/* ----- the others ----- */

static void
smtp_cmd_rset(struct smtp_session *s, const struct smtp_cmd *c)
{
	(void)c;
	smtp_tx_reset(s);
	smtp_reply(s, 250, "2.0.0 Ok");
}

static void
smtp_cmd_noop(struct smtp_session *s, const struct smtp_cmd *c)
{
	(void)c;
	smtp_reply(s, 250, "2.0.0 Ok");
}

static void
smtp_cmd_quit(struct smtp_session *s, const struct smtp_cmd *c)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_QUIT, .arg = "" };
	struct smtp_reply r;
	enum smtp_verdict v;

	(void)c;
	if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_QUIT, v, &r);
}

static void
smtp_done_quit(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	/*
	 * RFC 5321 4.1.1.10: QUIT gets 221 and the end of the session; a
	 * refusal cannot stand in for it.  Only a closing verdict (421/521,
	 * which 3.8 allows at any time) is sent instead.
	 */
	if (v == SMTP_CLOSE)
		smtp_reply_refusal(s, v, r, 221, "2.0.0 Bye");
	else
		smtp_reply_ok(s, r, 221, "2.0.0 Bye");
	smtp_mark_closing(s);
}

static void
smtp_cmd_vrfy(struct smtp_session *s, const struct smtp_cmd *c)
{
	(void)c;
	/* RFC 5321 3.5.3 */
	smtp_reply(s, 252, "2.5.0 Cannot VRFY user, but will accept message "
	    "and attempt delivery");
}

static void
smtp_cmd_expn(struct smtp_session *s, const struct smtp_cmd *c)
{
	(void)c;
	smtp_reply(s, 502, "5.5.1 EXPN not available");
}

/* The commands this session takes now: STARTTLS and AUTH as EHLO says. */
static void
smtp_cmd_help(struct smtp_session *s, const struct smtp_cmd *c)
{
	char text[128];

	(void)c;
	snprintf(text, sizeof(text), "2.0.0 Commands: HELO EHLO MAIL RCPT DATA "
	    "BDAT RSET NOOP QUIT VRFY HELP%s%s; see RFC 5321",
	    s->p.starttls && !s->tls_active ? " STARTTLS" : "",
	    smtp_auth_offered(s) ? " AUTH" : "");
	smtp_reply(s, 214, text);
}


static void
smtp_cmd_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_STARTTLS, .arg = "" };
	struct smtp_reply r;
	enum smtp_verdict v;

	if (s->tls_active)
		smtp_error(s, 503, "5.5.1 TLS already active");
	else if (!s->p.starttls)
		smtp_error(s, 502, "5.5.1 STARTTLS not available");
	else if (c->arg_len > 0)
		smtp_error(s, 501, "5.5.4 Syntax: STARTTLS");
	else if (smtp_in_tx(s))
		smtp_error(s, 503, "5.5.1 MAIL transaction in progress");
	else if (smtp_decide(s, &ev, &v, &r))
		smtp_stage_done(s, SMTP_STAGE_STARTTLS, v, &r);
}

static void
smtp_done_starttls(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	if (v != SMTP_OK) {
		/* RFC 3207 4 */
		smtp_reply_refusal(s, v, r, 454,
		    "4.7.0 TLS not available due to temporary reason");
		return;
	}
	/*
	 * RFC 3207 4.2: nothing after this line is read; the caller drops
	 * what it holds and calls smtp_session_tls_started().
	 */
	smtp_set_state(s, SMTP_ST_TLS);
	smtp_reply(s, 220, "2.0.0 Ready to start TLS");
}

static void
smtp_done_connect(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	/*
	 * RFC 5321 3.1 and 4.3.2: a greeting is 220, or 554 (then wait for
	 * QUIT); a temporary refusal can only be 421 and the close (3.8).
	 */
	if (v == SMTP_REJECT && r->code != 0 &&
	    (r->code < 500 || r->code > 599)) {
		struct smtp_reply t = *r;
		t.code = 421;
		smtp_reply_refusal(s, SMTP_CLOSE, r->code >= 400 &&
		    r->code < 500 ? &t : NULL, 0, NULL);
		return;
	}
	if (v != SMTP_OK) {
		smtp_reply_refusal(s, v, r, 554, "5.3.2 No SMTP service here");
		if (!s->closing)
			smtp_set_state(s, SMTP_ST_REFUSED);
		return;
	}
	smtp_set_state(s, SMTP_ST_GREETED);
	/* RFC 2034 3: no enhanced code in the greeting */
	if (r->code == 220 && r->text[0] != '\0') {
		smtp_reply(s, 220, r->text);
		return;
	}
	char text[SMTP_REPLY_TEXT_MAX * 2];
	util_strjoin(text, sizeof(text), s->p.hostname, " ", s->p.greeting !=
	    NULL ? s->p.greeting : "ESMTP postern", NULL);
	smtp_reply(s, 220, text);
}

void
smtp_stage_done(struct smtp_session *s, enum smtp_stage stage,
    enum smtp_verdict v, struct smtp_reply *r)
{
	switch (stage) {
	case SMTP_STAGE_CONNECT:
		smtp_done_connect(s, v, r);
		break;
	case SMTP_STAGE_HELO:
		smtp_done_helo(s, v, r);
		break;
	case SMTP_STAGE_STARTTLS:
		smtp_done_starttls(s, v, r);
		break;
	case SMTP_STAGE_MAIL:
		smtp_done_mail(s, v, r);
		break;
	case SMTP_STAGE_RCPT:
		smtp_done_rcpt(s, v, r);
		break;
	case SMTP_STAGE_DATA:
		smtp_done_data(s, v, r);
		break;
	case SMTP_STAGE_EOM:
		smtp_done_eom(s, v, r);
		break;
	case SMTP_STAGE_QUIT:
		smtp_done_quit(s, v, r);
		break;
	case SMTP_STAGE_AUTH:
		smtp_done_auth(s, v, r);
		break;
	default:
		ASSERT(!"stage without a command");
	}
}
