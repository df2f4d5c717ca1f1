/*
 * deliver/pop.c: POP-before-SMTP (smtpproxy's popbeforesmtp): log in to
 * a POP3 server (RFC 1939 USER/PASS, STLS from RFC 2595 or implicit
 * TLS) so that its SMTP relay accepts us for a while, then QUIT.  Knows
 * nothing of when to do it; remote.c decides.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "log/log.h"
#include "tls/tls.h"
#include "util/util.h"

/* Read one POP3 status line: 0 for "+OK", 1 for "-ERR", -1 I/O error. */
static int
pop_status(struct dconn *c, char *line, size_t linesz, uint64_t to)
{
	if (dconn_readline(c, line, linesz, to) == -1)
		return -1;
	if (strncmp(line, "+OK", 3) == 0)
		return 0;
	return 1;
}

static int
pop_cmd(struct dconn *c, const char *verb, const char *arg, char *line,
    size_t linesz, uint64_t to)
{
	size_t n = strlen(verb) + (arg != NULL ? strlen(arg) + 1 : 0) + 3;
	char *buf = xmalloc(n);
	int r;

	snprintf(buf, n, "%s%s%s\r\n", verb, arg != NULL ? " " : "",
	    arg != NULL ? arg : "");
	r = dconn_write(c, buf, n - 1, to);
	OPENSSL_cleanse(buf, n);	/* PASS carries the secret */
	free(buf);
	if (r == -1)
		return -1;
	return pop_status(c, line, linesz, to);
}

static int
pop_tls(struct dconn *c, const struct deliver_pop_opts *o, uint64_t to,
    const char **err_out)
{
	struct tls_client_opts to_ = { .no_verify = o->no_verify,
	    .ca_file = o->ca_file };
	const char *err;
	struct tls_client *tc = tls_client_new(&to_, &err);
	int r;

	if (tc == NULL) {
		*err_out = util_err("POP3 %s: %s", c->peer, err);
		return -1;
	}
	r = dconn_starttls(c, tc, o->host, to);
	tls_client_free(&tc);
	if (r == -1)
		*err_out = util_err("POP3: %s", c->err);
	return r;
}

int
deliver_pop_login(const struct deliver_pop_opts *o, const char **err_out)
{
	uint64_t to = o->timeout_ms != 0 ? o->timeout_ms : 60000;
	struct dconn c;
	char line[512], esc[256];
	int r, rc = -1;

	dconn_init(&c);
	if (dconn_connect(&c, o->host, o->port, to) == -1) {
		*err_out = util_err("POP3: %s", c.err);
		return -1;
	}
	if (o->tls == DELIVER_TLS_IMPLICIT && pop_tls(&c, o, to, err_out) ==
	    -1)
		goto out;
	if ((r = pop_status(&c, line, sizeof(line), to)) != 0)
		goto bad;
	if (o->tls == DELIVER_TLS_STARTTLS) {
		/* RFC 2595 4: STLS, then the session starts over. */
		if ((r = pop_cmd(&c, "STLS", NULL, line, sizeof(line), to)) !=
		    0)
			goto bad;
		if (pop_tls(&c, o, to, err_out) == -1)
			goto out;
	}
	if ((r = pop_cmd(&c, "USER", o->user, line, sizeof(line), to)) != 0)
		goto bad;
	if ((r = pop_cmd(&c, "PASS", o->pass != NULL ? o->pass : "", line,
	    sizeof(line), to)) != 0)
		goto bad;
	(void)pop_cmd(&c, "QUIT", NULL, line, sizeof(line), to);
	log_event(LOG_LVL_INFO, "pop-login", NULL, NULL, "host=%s", c.peer);
	rc = 0;
	goto out;
bad:
	if (r == -1)
		*err_out = util_err("POP3: %s", c.err);
	else
		*err_out = util_err("POP3 %s refused the login: %s", c.peer,
		    log_safe_into(esc, sizeof(esc), line, strlen(line)));
out:
	dconn_close(&c);
	return rc;
}
