/*
 * smtp/auth.c: the server side of SMTP AUTH (RFC 4954) with the PLAIN
 * (RFC 4616) and LOGIN mechanisms.  Decodes the client's answers and hands
 * user and password to the AUTH stage; checking them is the caller's job.
 * Secrets are wiped as soon as the stage has seen them.
 */
#include "smtp/smtp_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/util.h"

/* RFC 4648 base64, strict: no whitespace, padding where due.  Length or -1. */
static long
smtp_b64_decode(const char *in, size_t len, char *out, size_t outsz)
{
	static const char alpha[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t acc = 0;
	size_t o = 0, pad = 0;

	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		const char *p;
		unsigned v;
		if (in[i] == '=') {
			if (i < len - 2 || (i == len - 2 && in[len - 1] != '='))
				return -1;
			pad++;
			v = 0;
		} else if (in[i] == '\0' || (p = strchr(alpha, in[i])) == NULL)
			return -1;
		else if (pad > 0)
			return -1;
		else
			v = (unsigned)(p - alpha);
		acc = acc << 6 | v;
		if (i % 4 == 3) {
			char b[3] = { (char)(acc >> 16), (char)(acc >> 8),
			    (char)acc };
			size_t n = 3 - pad;
			if (n > outsz - o)
				return -1;
			memcpy(out + o, b, n);
			o += n;
			acc = 0;
		}
	}
	return (long)o;
}

void
smtp_auth_reset(struct smtp_session *s)
{
	if (s->auth_user != NULL && s->auth_step != SMTP_AUTH_DONE) {
		explicit_bzero(s->auth_user, strlen(s->auth_user));
		free(s->auth_user);
		s->auth_user = NULL;
	}
	if (s->auth_step != SMTP_AUTH_DONE)
		s->auth_step = SMTP_AUTH_NONE;
}

bool
smtp_auth_offered(const struct smtp_session *s)
{
	return s->p.auth && (s->tls_active || s->p.auth_plaintext);
}

/* Ask the AUTH stage about user/pass; the password is wiped after. */
static void
smtp_auth_check(struct smtp_session *s, const char *user, char *pass)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_AUTH, .arg = user,
	    .secret = pass };
	struct smtp_reply r;
	enum smtp_verdict v;

	free(s->auth_user);
	s->auth_user = xstrdup(user);	/* kept as the identity if accepted */
	s->auth_step = SMTP_AUTH_CHECKING;
	bool now = smtp_decide(s, &ev, &v, &r);
	explicit_bzero(pass, strlen(pass));
	if (now)
		smtp_stage_done(s, SMTP_STAGE_AUTH, v, &r);
}

void
smtp_done_auth(struct smtp_session *s, enum smtp_verdict v,
    const struct smtp_reply *r)
{
	if (v == SMTP_OK) {
		s->auth_step = SMTP_AUTH_DONE;
		smtp_reply_ok(s, r, 235, "2.7.0 Authentication successful");
		return;
	}
	smtp_auth_reset(s);
	smtp_reply_refusal(s, v, r, 535, "5.7.8 Authentication credentials "
	    "invalid");
}

/* PLAIN: authzid NUL authcid NUL passwd (RFC 4616 2). */
static void
smtp_auth_plain(struct smtp_session *s, const char *b64, size_t len)
{
	char buf[768], *user, *pass, *end;
	long n = smtp_b64_decode(b64, len, buf, sizeof(buf) - 1);

	if (n < 0) {
		smtp_auth_reset(s);
		smtp_error(s, 501, "5.5.2 Cannot decode the response");
		return;
	}
	buf[n] = '\0';
	end = buf + n;
	user = memchr(buf, '\0', (size_t)n);
	pass = user != NULL ? memchr(user + 1, '\0', (size_t)(end - user - 1)) :
	    NULL;
	if (user == NULL || pass == NULL || user + 1 == pass ||
	    memchr(pass + 1, '\0', (size_t)(end - pass - 1)) != NULL) {
		explicit_bzero(buf, sizeof(buf));
		smtp_auth_reset(s);
		smtp_error(s, 501, "5.5.2 Malformed PLAIN response");
		return;
	}
	if (buf[0] != '\0' && strcmp(buf, user + 1) != 0) {
		/* Well formed, but acting for someone else (an authzid of
		 * another name) is not offered: no password is tried. */
		explicit_bzero(buf, sizeof(buf));
		smtp_auth_reset(s);
		smtp_error(s, 535, "5.7.8 Authentication credentials invalid: "
		    "no acting for another identity");
		return;
	}
	smtp_auth_check(s, user + 1, pass + 1);
	explicit_bzero(buf, sizeof(buf));
}

/* A line while a mechanism waits for the client (after a 334). */
void
smtp_auth_line(struct smtp_session *s, const char *line, size_t len)
{
	char buf[512];
	long n;

	/* RFC 4954 4: "*" cancels the exchange. */
	if (len == 1 && line[0] == '*') {
		smtp_auth_reset(s);
		smtp_reply(s, 501, "5.0.0 Authentication cancelled");
		return;
	}
	switch (s->auth_step) {
	case SMTP_AUTH_PLAIN:
		smtp_auth_plain(s, line, len);
		return;
	case SMTP_AUTH_LOGIN_USER:
	case SMTP_AUTH_LOGIN_PASS:
		n = smtp_b64_decode(line, len, buf, sizeof(buf) - 1);
		if (n < 0 || memchr(buf, '\0', (size_t)n) != NULL) {
			explicit_bzero(buf, sizeof(buf));
			smtp_auth_reset(s);
			smtp_error(s, 501, "5.5.2 Cannot decode the response");
			return;
		}
		buf[n] = '\0';
		if (s->auth_step == SMTP_AUTH_LOGIN_USER) {
			free(s->auth_user);
			s->auth_user = xstrdup(buf);
			s->auth_step = SMTP_AUTH_LOGIN_PASS;
			smtp_reply(s, 334, "UGFzc3dvcmQ6");	/* "Password:" */
			return;
		}
		{
			char *user = xstrdup(s->auth_user);
			smtp_auth_check(s, user, buf);
			free(user);
		}
		explicit_bzero(buf, sizeof(buf));
		return;
	default:
		ASSERT(!"AUTH line without a mechanism");
	}
}

/* AUTH mechanism [initial-response] */
void
smtp_cmd_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
	const char *sp = memchr(c->arg, ' ', c->arg_len);
	size_t mlen = sp != NULL ? (size_t)(sp - c->arg) : c->arg_len;
	const char *init = sp != NULL ? sp + 1 : NULL;
	size_t ilen = sp != NULL ? c->arg_len - mlen - 1 : 0;

	if (!s->p.auth) {
		smtp_reply(s, 502, "5.5.1 AUTH not available");
		return;
	}
	if (!s->tls_active && !s->p.auth_plaintext) {
		/* RFC 4954 4: mechanisms that need TLS first. */
		smtp_reply(s, 538, "5.7.11 Encryption required for requested "
		    "authentication mechanism");
		return;
	}
	if (s->state == SMTP_ST_GREETED) {
		smtp_error(s, 503, "5.5.1 Send EHLO first");
		return;
	}
	if (s->auth_step == SMTP_AUTH_DONE) {
		smtp_error(s, 503, "5.5.1 Already authenticated");
		return;
	}
	if (s->state != SMTP_ST_READY) {
		/* RFC 4954 4: not during a mail transaction. */
		smtp_error(s, 503, "5.5.1 AUTH not allowed during a transaction");
		return;
	}
	if (c->arg_len == 0) {
		smtp_error(s, 501, "5.5.4 Syntax: AUTH mechanism "
		    "[initial-response]");
		return;
	}
	if (mlen == 5 && strncasecmp(c->arg, "PLAIN", 5) == 0) {
		s->auth_step = SMTP_AUTH_PLAIN;
		if (init == NULL)
			smtp_reply(s, 334, "");
		else if (ilen == 1 && init[0] == '=')
			smtp_auth_plain(s, "", 0);	/* empty response */
		else
			smtp_auth_plain(s, init, ilen);
		return;
	}
	if (mlen == 5 && strncasecmp(c->arg, "LOGIN", 5) == 0) {
		s->auth_step = SMTP_AUTH_LOGIN_USER;
		if (init == NULL)
			smtp_reply(s, 334, "VXNlcm5hbWU6");	/* "Username:" */
		else
			smtp_auth_line(s, init, ilen);
		return;
	}
	smtp_reply(s, 504, "5.5.4 Unrecognized authentication mechanism");
}
