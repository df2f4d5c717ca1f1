/*
 * deliver/lmtp.c: the lmtp action: the recipients of a message handed to
 * an LMTP server (RFC 2033: Dovecot, Cyrus) on a unix socket or TCP, by
 * the SMTP client in its LMTP mode, each recipient with its own answer.
 * Knows nothing of the queue.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "util/util.h"

void *
deliver_lmtp_open(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	struct deliver_smtp_opts *o = xcalloc(1, sizeof(*o));
	const struct config_lmtp *l = a->lmtp;

	(void)c;
	(void)err_out;
	o->lmtp = true;
	o->unix_path = l->unix_path;
	o->host = l->host;
	o->port = l->port;
	o->tls = DELIVER_TLS_NONE;
	o->timeouts.connect_ms = l->timeouts_ms[0];
	o->timeouts.greeting_ms = l->timeouts_ms[1];
	o->timeouts.command_ms = l->timeouts_ms[2];
	o->timeouts.data_init_ms = l->timeouts_ms[3];
	o->timeouts.data_block_ms = l->timeouts_ms[4];
	o->timeouts.data_term_ms = l->timeouts_ms[5];
	return o;
}

void
deliver_lmtp_close(void *runtime)
{
	free(runtime);
}

enum deliver_result
deliver_lmtp_kind(void *runtime, const char *arg, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    const char **err_out)
{
	(void)arg;
	return deliver_smtp(runtime, m, rcpts, n, st_out, err_out);
}
