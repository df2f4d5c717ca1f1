/*
 * deliver/smtpc.c: the outbound SMTP client (RFC 5321) for one server and
 * one transaction, or LMTP (RFC 2033: LHLO, a reply per recipient after
 * the content) over TCP or a unix socket: the session (EHLO/HELO, STARTTLS
 * RFC 3207, AUTH PLAIN/LOGIN RFC 4954, QUIT), or one kept from an earlier
 * message (scache.c) and given up for a new connection when it turns out
 * dead; the transaction itself (SIZE, 8BITMIME, SMTPUTF8, PIPELINING, the
 * content as DATA) is smtpc_txn.c's.  A message with a NUL fails
 * permanently before any connection.  Blocking: worker threads only.
 * Knows nothing of the queue or of DNS.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "log/log.h"
#include "tls/tls.h"
#include "util/util.h"

/* ---- the session ---- */

void
smtpc_set(struct smtpc *s, size_t i, enum deliver_result r, int code,
    const char *fmt, ...)
{
	va_list ap;

	s->st[i].result = r;
	s->st[i].code = code;
	va_start(ap, fmt);
	if (vsnprintf(s->st[i].text, sizeof(s->st[i].text), fmt, ap) < 0)
		s->st[i].text[0] = '\0';
	va_end(ap);
	util_strlcpy(s->st[i].remote, code != 0 ? s->c.peer : "",
	    sizeof(s->st[i].remote));
}

void
smtpc_fail_rest(struct smtpc *s, enum deliver_result r, int code,
    const char *text)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->st[i].result == DELIVER_TEMPFAIL &&
		    s->st[i].code == -1)
			smtpc_set(s, i, r, code, "%s", text);
}

void
smtpc_fail_reply(struct smtpc *s, const char *stage)
{
	char t[600];

	snprintf(t, sizeof(t), "%s (in reply to %s)", s->text, stage);
	smtpc_fail_rest(s, s->code >= 500 ? DELIVER_PERMFAIL :
	    DELIVER_TEMPFAIL, s->code, t);
}

void
smtpc_fail_conn(struct smtpc *s)
{
	char t[sizeof(s->c.err) + sizeof(s->c.peer) + 100];

	s->conn_failed = true;
	/* Which step, as Postfix words it: a timeout alone says nothing. */
	if (s->step == NULL)
		util_strlcpy(t, s->c.err, sizeof(t));
	else if (s->c.fail == DCONN_FAIL_TIMEOUT)
		snprintf(t, sizeof(t), "conversation with %s timed out while "
		    "%s", s->c.peer, s->step);
	else if (s->c.fail == DCONN_FAIL_LOST)
		snprintf(t, sizeof(t), "lost connection with %s while %s",
		    s->c.peer, s->step);
	else
		snprintf(t, sizeof(t), "%s (while %s)", s->c.err, s->step);
	smtpc_fail_rest(s, DELIVER_TEMPFAIL, 0, t);
}

void
smtpc_cmd(struct smtpc *s, const char *fmt, ...)
{
	va_list ap;
	char *l;

	va_start(ap, fmt);
	if (vasprintf(&l, fmt, ap) == -1)
		fatal("vasprintf: out of memory");
	va_end(ap);
	/* Our own strings never carry CR or LF into the command line. */
	for (char *p = l; *p != '\0'; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	util_buf_addstr(&s->out, l);
	util_buf_add(&s->out, "\r\n", 2);
	free(l);
}

int
smtpc_flush(struct smtpc *s, uint64_t to)
{
	int r = 0;

	if (s->out.len > 0)
		r = dconn_write(&s->c, s->out.data, s->out.len, to);
	OPENSSL_cleanse(s->out.data, s->out.len);	/* may hold AUTH */
	util_buf_reset(&s->out);
	return r;
}

int
smtpc_reply(struct smtpc *s, uint64_t to)
{
	struct smtpc_reply r = { .lines = s->lines };
	char line[1024], esc[sizeof(s->text) * 4];
	const char *why = NULL;
	uint64_t deadline = util_now_ms() + to;
	int n, rc;

	smtpc_reply_reset(&r);
	do {
		/* The step's time is for the whole reply, however many lines. */
		uint64_t now = util_now_ms();

		n = dconn_readline(&s->c, line, sizeof(line), deadline > now ?
		    deadline - now : 0);
		rc = n == -1 ? -2 : smtpc_reply_line(&r, line, (size_t)n, &why);
	} while (rc == 0);
	s->lines = r.lines;		/* the buffer stays ours */
	s->code = rc == 1 ? r.code : -1;
	memcpy(s->text, r.text, sizeof(s->text));
	if (rc == -1) {
		snprintf(s->c.err, sizeof(s->c.err), "%s sent %s: %.100s",
		    s->c.peer, why, line);
		s->c.fail = DCONN_FAIL_OTHER;
	}
	if (rc != 1) {
		s->desync = true;
		return -1;
	}
	if (s->code == 421)
		s->closing = true;	/* RFC 5321 3.8: it closes */
	if (log_enabled(LOG_LVL_DEBUG))
		log_event(LOG_LVL_DEBUG, "smtpc", NULL, s->m->qid,
		    "host=%s reply=\"%s\"", s->c.peer, log_safe_into(esc,
		    sizeof(esc), s->text, strlen(s->text)));
	return s->code;
}

/* Parse the EHLO keywords of the last reply (RFC 5321 4.1.1.1). */
static void
smtpc_caps(struct smtpc *s)
{
	smtpc_caps_parse(s->lines.data, s->lines.len, &s->caps);
}

/* EHLO, or HELO when EHLO is refused (RFC 5321 4.1.4).  0 or -1. */
static int
smtpc_ehlo(struct smtpc *s)
{
	const char *name = s->o->helo != NULL ? s->o->helo :
	    s->m->hostname != NULL ? s->m->hostname : "localhost";
	const char *cmd = s->o->lmtp ? "LHLO" : "EHLO";

	s->esmtp = false;
	s->caps = (struct smtpc_caps){ 0 };
	s->step = s->o->lmtp ? "performing the LHLO handshake" :
	    "performing the EHLO handshake";
	smtpc_cmd(s, "%s %s", cmd, name);
	if (smtpc_flush(s, TO_CMD(s)) == -1 || smtpc_reply(s, TO_CMD(s)) == -1)
		goto conn;
	if (s->code / 100 == 2) {
		s->esmtp = true;
		smtpc_caps(s);
		return 0;
	}
	/* RFC 2033 4.1: an LMTP server has no HELO to fall back on. */
	if (s->code / 100 == 5 && !s->o->lmtp) {
		cmd = "HELO";	/* the reply that decides is HELO's */
		s->step = "performing the HELO handshake";
		smtpc_cmd(s, "HELO %s", name);
		if (smtpc_flush(s, TO_CMD(s)) == -1 ||
		    smtpc_reply(s, TO_CMD(s)) == -1)
			goto conn;
		if (s->code / 100 == 2)
			return 0;
	}
	smtpc_fail_reply(s, cmd);
	return -1;
conn:
	smtpc_fail_conn(s);
	return -1;
}

static int
smtpc_tls(struct smtpc *s)
{
	const char *name = s->o->tls_name != NULL ? s->o->tls_name :
	    s->o->host;
	struct tls_client *tc = s->o->tls_ctx;

	if (tc == NULL) {
		struct tls_client_opts to = { .no_verify = s->o->no_verify,
		    .ca_file = s->o->ca_file };
		const char *err;
		if (s->tc_own == NULL &&
		    (s->tc_own = tls_client_new(&to, &err)) == NULL) {
			smtpc_fail_rest(s, DELIVER_TEMPFAIL, 0, err);
			return -1;
		}
		tc = s->tc_own;
	}
	s->step = NULL;		/* dconn's text names the handshake */
	if (dconn_starttls(&s->c, tc, name, TO_CMD(s)) == -1) {
		smtpc_fail_conn(s);
		return -1;
	}
	return 0;
}

/* RFC 3207: STARTTLS when required or offered, then EHLO again. */
static int
smtpc_starttls(struct smtpc *s)
{
	enum deliver_tls mode = s->o->tls;

	if (mode != DELIVER_TLS_STARTTLS && mode != DELIVER_TLS_OPPORTUNISTIC)
		return 0;
	if (!s->caps.starttls) {
		if (mode == DELIVER_TLS_OPPORTUNISTIC)
			return 0;
		smtpc_fail_rest(s, DELIVER_TEMPFAIL, 0, "4.7.4 TLS required "
		    "but the server does not offer STARTTLS");
		return -1;
	}
	s->step = "sending STARTTLS";
	smtpc_cmd(s, "STARTTLS");
	if (smtpc_flush(s, TO_CMD(s)) == -1 || smtpc_reply(s, TO_CMD(s)) ==
	    -1) {
		smtpc_fail_conn(s);
		return -1;
	}
	if (s->code != 220) {
		if (mode == DELIVER_TLS_OPPORTUNISTIC)
			return 0;
		/* A refused STARTTLS is no reason to give up on mail. */
		char t[600];
		snprintf(t, sizeof(t), "%s (in reply to STARTTLS)", s->text);
		smtpc_fail_rest(s, DELIVER_TEMPFAIL, s->code, t);
		return -1;
	}
	if (smtpc_tls(s) == -1) {
		s->tls_failed = true;
		return -1;
	}
	return smtpc_ehlo(s);
}

static char *
smtpc_b64(const void *p, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

static void
smtpc_b64_free(char *b64)
{
	OPENSSL_cleanse(b64, strlen(b64));
	free(b64);
}

/* Send one secret-bearing line; the buffers are wiped (RFC 4954 14). */
static int
smtpc_secret(struct smtpc *s, const char *prefix, char *b64)
{
	util_buf_addstr(&s->out, prefix);
	util_buf_addstr(&s->out, b64);
	util_buf_add(&s->out, "\r\n", 2);
	smtpc_b64_free(b64);
	if (smtpc_flush(s, TO_CMD(s)) == -1 || smtpc_reply(s, TO_CMD(s)) ==
	    -1)
		return -1;
	return 0;
}

/* RFC 5321 4.5.3.1.4: a command line, CRLF included. */
#define SMTPC_CMD_LINE_MAX	512

/*
 * AUTH PLAIN (RFC 4616) with its response b64 (taken: wiped and freed).
 * RFC 4954 4: the response goes on the command line only when that line
 * stays within the limit; else "AUTH PLAIN", then the response on its own
 * line after the server's "334 ".  0 with the last reply in s, or -1 when
 * the connection failed.
 */
static int
smtpc_auth_plain(struct smtpc *s, char *b64)
{
	static const char cmd[] = "AUTH PLAIN ";

	if (strlen(b64) <= SMTPC_CMD_LINE_MAX - (sizeof(cmd) - 1) - 2)
		return smtpc_secret(s, cmd, b64);
	smtpc_cmd(s, "AUTH PLAIN");
	int rc = (smtpc_flush(s, TO_CMD(s)) == -1 ||
	    smtpc_reply(s, TO_CMD(s)) == -1) ? -1 : 0;
	if (rc == -1 || s->code != 334) {
		smtpc_b64_free(b64);
		return rc;	/* a refusal is the caller's to report */
	}
	return smtpc_secret(s, "", b64);
}

/* AUTH PLAIN (RFC 4616) or LOGIN.  0, or -1 with statuses set. */
static int
smtpc_auth(struct smtpc *s)
{
	const char *u = s->o->user, *p = s->o->pass != NULL ? s->o->pass : "";

	if (u == NULL)
		return 0;
	/*
	 * RFC 4954 4: no credentials in clear text over the network; the
	 * admin asks for TLS with smtp+starttls:// or smtp+tls://.
	 */
	if (s->c.ssl == NULL && !s->c.loopback) {
		smtpc_fail_rest(s, DELIVER_TEMPFAIL, 0, "4.7.0 refusing to "
		    "send credentials without TLS (use smtp+starttls:// or "
		    "smtp+tls://)");
		return -1;
	}
	s->step = "authenticating";
	if (s->caps.auth_plain) {
		size_t ul = strlen(u), pl = strlen(p);
		char *raw = xmalloc(ul + pl + 2);
		raw[0] = '\0';
		memcpy(raw + 1, u, ul);
		raw[ul + 1] = '\0';
		memcpy(raw + ul + 2, p, pl);
		char *b = smtpc_b64(raw, ul + pl + 2);
		OPENSSL_cleanse(raw, ul + pl + 2);
		free(raw);
		if (smtpc_auth_plain(s, b) == -1)
			goto conn;
	} else if (s->caps.auth_login) {
		smtpc_cmd(s, "AUTH LOGIN");
		if (smtpc_flush(s, TO_CMD(s)) == -1 ||
		    smtpc_reply(s, TO_CMD(s)) == -1)
			goto conn;
		if (s->code == 334 && smtpc_secret(s, "",
		    smtpc_b64(u, strlen(u))) == -1)
			goto conn;
		if (s->code == 334 && smtpc_secret(s, "",
		    smtpc_b64(p, strlen(p))) == -1)
			goto conn;
	} else {
		smtpc_fail_rest(s, DELIVER_TEMPFAIL, 0, "4.7.0 credentials "
		    "configured but the server offers no AUTH PLAIN or LOGIN");
		return -1;
	}
	if (s->code == 235)
		return 0;
	/*
	 * Wrong credentials are the operator's to fix: defer (as Postfix
	 * does) rather than bounce everything meanwhile.
	 */
	char t[600];
	snprintf(t, sizeof(t), "%s (in reply to AUTH)", s->text);
	smtpc_fail_rest(s, DELIVER_TEMPFAIL, s->code, t);
	return -1;
conn:
	smtpc_fail_conn(s);
	return -1;
}

static void
smtpc_quit(struct smtpc *s)
{
	if (s->c.fd == -1 || s->desync)
		return;
	/*
	 * RFC 5321 4.1.1.10 asks us to wait for the reply, but the fate of
	 * the message is settled: the queue must record it now, or a crash
	 * while a slow server answers QUIT would send it again.  A prompt
	 * server still gets its reply read.
	 */
	smtpc_cmd(s, "QUIT");
	if (smtpc_flush(s, 1000) == 0)
		(void)smtpc_reply(s, 100);
}

/* Every recipient undecided (code -1) before an attempt. */
static void
smtpc_undecided(struct deliver_rcpt_status *st, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		memset(&st[i], 0, sizeof(st[i]));
		st[i].result = DELIVER_TEMPFAIL;
		st[i].code = -1;
		util_strlcpy(st[i].text, "not attempted", sizeof(st[i].text));
	}
}

/* Connect, greeting, EHLO, STARTTLS, AUTH.  0, or -1 with statuses. */
static int
smtpc_open(struct smtpc *s)
{
	const struct deliver_smtp_opts *o = s->o;

	s->step = NULL;		/* dconn's text names the connect */
	if ((o->unix_path != NULL ? dconn_connect_unix(&s->c, o->unix_path,
	    TO_CONNECT(s)) : dconn_connect(&s->c, o->host, o->port,
	    TO_CONNECT(s))) == -1 ||
	    (o->tls == DELIVER_TLS_IMPLICIT && smtpc_tls(s) == -1))
		goto conn;
	s->step = "receiving the initial server greeting";
	if (smtpc_reply(s, TO_GREET(s)) == -1)
		goto conn;
	if (s->code != 220) {
		smtpc_fail_reply(s, "the greeting");
		return -1;
	}
	if (smtpc_ehlo(s) == -1 || smtpc_starttls(s) == -1 ||
	    smtpc_auth(s) == -1)
		return -1;
	return 0;
conn:
	s->desync = true;	/* no QUIT on what never began */
	smtpc_fail_conn(s);
	return -1;
}

/* A kept session for key, still open: true with it in s. */
static bool
smtpc_resume(struct smtpc *s, const char *key)
{
	struct smtpc_idle idle;

	while (key != NULL && scache_take(key, &idle)) {
		if (dconn_idle_ok(&idle.c)) {
			s->c = idle.c;
			s->tc_own = idle.tc_own;
			s->caps = idle.caps;
			s->esmtp = idle.esmtp;
			s->uses = idle.uses;
			s->reused = true;
			return true;
		}
		/* Closed or 421 while it waited: nothing to say to it. */
		dconn_close(&idle.c);
		tls_client_free(&idle.tc_own);
	}
	return false;
}

/*
 * A kept session that failed before the content went out (closed, 421,
 * MAIL refused, every RCPT put off: a limit of the session's, such as its
 * recipients) decided nothing: its outcome is dropped and the message
 * goes on a new connection.
 */
static bool
smtpc_stale(const struct smtpc *s)
{
	return s->reused && !s->dot_sent && (s->conn_failed || s->closing ||
	    s->mail_refused || s->rcpt_deferred == s->n);
}

static void smtpc_quit(struct smtpc *);

/* Forget the stale session: s as before a new connection. */
static void
smtpc_restart(struct smtpc *s)
{
	if (!s->conn_failed)
		smtpc_quit(s);
	dconn_close(&s->c);
	tls_client_free(&s->tc_own);
	dconn_init(&s->c);
	smtpc_undecided(s->st, s->n);
	memset(s->accepted, 0, s->n * sizeof(*s->accepted));
	s->reused = s->mail_refused = s->dot_sent = s->dirty = false;
	s->conn_failed = s->closing = s->desync = s->tls_failed = false;
	s->uses = 0;
	s->rcpt_deferred = 0;
	s->step = NULL;
}

/* Can the session wait for the next message (after an RSET if needed)? */
static bool
smtpc_keepable(struct smtpc *s)
{
	const struct deliver_reuse *r = s->o->reuse;

	/*
	 * A server that put a recipient off may be at a limit of this
	 * session's (RFC 5321 4.5.3.1.10: too many recipients): the next
	 * message is better served by a new connection.
	 */
	if (r == NULL || r->idle_ms == 0 || s->o->lmtp || s->c.fd == -1 ||
	    s->desync || s->conn_failed || s->closing || s->uses == 0 ||
	    s->uses >= r->max_uses || s->rcpt_deferred > 0)
		return false;
	if (!s->dirty)
		return true;
	smtpc_cmd(s, "RSET");
	return smtpc_flush(s, TO_CMD(s)) == 0 && smtpc_reply(s, TO_CMD(s)) ==
	    250;
}

/* Keep the session for the next message, or QUIT. */
static void
smtpc_end(struct smtpc *s, const char *key)
{
	struct smtpc_idle idle = { .esmtp = s->esmtp, .uses = s->uses };

	if (key == NULL || !smtpc_keepable(s)) {
		smtpc_quit(s);
		return;
	}
	idle.c = s->c;
	idle.tc_own = s->tc_own;
	idle.caps = s->caps;
	scache_put(key, s->o->reuse, &idle);
	dconn_init(&s->c);
	s->tc_own = NULL;
}

/* Anything still undecided failed with the connection. */
static void
smtpc_fail_undecided(struct smtpc *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->st[i].code == -1)
			smtpc_set(s, i, DELIVER_TEMPFAIL, 0, "%s",
			    s->c.err[0] != '\0' ? s->c.err : "not attempted");
}

static enum deliver_result
smtpc_once(const struct deliver_smtp_opts *o, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    bool *tls_failed, const char **err_out)
{
	struct smtpc s = { .o = o, .m = m, .st = st_out, .n = n };
	struct deliver_content_scan sc;
	const char *err = NULL;
	char *key = NULL;

	smtpc_undecided(st_out, n);
	dconn_init(&s.c);
	if (n == 0)
		return DELIVER_OK;
	s.accepted = xcalloc(n, sizeof(*s.accepted));
	if (deliver_content_scan(m, o->rewrite, &sc, &err) == -1) {
		smtpc_fail_rest(&s, DELIVER_TEMPFAIL, 0, err);
		goto out;
	}
	if (sc.nul) {
		smtpc_fail_rest(&s, DELIVER_PERMFAIL, 0, "5.6.0 the message "
		    "holds a NUL byte, which SMTP cannot carry; not sent");
		goto out;
	}
	if (o->reuse != NULL && o->reuse->idle_ms > 0 && !o->lmtp)
		key = scache_key(o, s.o->helo != NULL ? o->helo :
		    m->hostname != NULL ? m->hostname : "localhost");
	if (smtpc_resume(&s, key)) {
		(void)smtpc_transaction(&s, &sc, rcpts, &err);
		if (!smtpc_stale(&s))
			goto settle;
		log_event(LOG_LVL_DEBUG, "smtpc", NULL, m->qid, "host=%s "
		    "kept session unusable, new connection", s.c.peer);
		smtpc_restart(&s);
	}
	if (smtpc_open(&s) == -1)
		goto end;
	(void)smtpc_transaction(&s, &sc, rcpts, &err);
settle:
	/* Settled before QUIT: a crash after this never sends it twice. */
	if (m->settled_cb != NULL) {
		const char **took = xcalloc(n, sizeof(*took));
		size_t ntook = 0;
		for (size_t i = 0; i < n; i++)
			if (st_out[i].result == DELIVER_OK &&
			    st_out[i].code != -1)
				took[ntook++] = rcpts[i];
		if (ntook > 0)
			m->settled_cb(m->settled_arg, took, ntook);
		free(took);
	}
end:
	smtpc_fail_undecided(&s);
	smtpc_end(&s, key);
out:
	smtpc_fail_undecided(&s);
	dconn_close(&s.c);
	tls_client_free(&s.tc_own);
	util_buf_clear(&s.out);
	util_buf_clear(&s.lines);
	free(s.accepted);
	free(key);
	*tls_failed = s.tls_failed;
	return deliver_status_summary(st_out, n, err_out);
}

enum deliver_result
deliver_smtp(const struct deliver_smtp_opts *o, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    const char **err_out)
{
	bool tls_failed = false;
	enum deliver_result r;
	struct deliver_msg held;
	/* Read once: the scan, DATA and a fallback's DATA use this copy. */
	char *mem = deliver_content_hold(m, &held);

	r = smtpc_once(o, &held, rcpts, n, st_out, &tls_failed, err_out);
	if (tls_failed && o->tls == DELIVER_TLS_OPPORTUNISTIC) {
		/* RFC 7435 (opportunistic): a failed handshake falls back to
		 * clear text on a new connection, as Postfix does. */
		struct deliver_smtp_opts plain = *o;
		plain.tls = DELIVER_TLS_NONE;
		r = smtpc_once(&plain, &held, rcpts, n, st_out, &tls_failed,
		    err_out);
	}
	free(mem);
	return r;
}
