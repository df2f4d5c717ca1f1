/*
 * deliver/kind.c: the table of action kinds and what each does (see
 * struct deliver_kind).  A new kind is a file with its delivery and one
 * line here (and its statement in config/parse_action.c).  Knows nothing
 * of who calls: conn/ at RCPT and on the fast path, queue/ and net/ later.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "util/util.h"

/* ---- deliveries ---- */

void
deliver_status_all(struct deliver_rcpt_status *st, size_t n,
    enum deliver_result r, const char *text)
{
	for (size_t i = 0; i < n; i++) {
		memset(&st[i], 0, sizeof(st[i]));
		st[i].result = r;
		if (text != NULL)
			util_strlcpy(st[i].text, text, sizeof(st[i].text));
	}
}

enum deliver_result
deliver_status_summary(const struct deliver_rcpt_status *st, size_t n,
    const char **err_out)
{
	size_t ok = 0, perm = 0;
	const char *first = NULL;

	for (size_t i = 0; i < n; i++) {
		ok += st[i].result == DELIVER_OK;
		perm += st[i].result == DELIVER_PERMFAIL;
		if (st[i].result != DELIVER_OK && first == NULL)
			first = st[i].text;
	}
	if (first != NULL)
		*err_out = util_err("%s", first);
	if (ok == n)
		return DELIVER_OK;
	return perm == n ? DELIVER_PERMFAIL : DELIVER_TEMPFAIL;
}

static enum deliver_result
kind_maildir(void *runtime, const char *folder, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    const char **err_out)
{
	enum deliver_result r;

	(void)runtime;
	(void)rcpts;
	ASSERT(n == 1);		/* one copy per recipient: m->rcpt_idx */
	if (folder == NULL) {
		*err_out = "maildir action without a folder";
		r = DELIVER_PERMFAIL;
	} else
		r = deliver_maildir(folder, m, err_out);
	deliver_status_all(st_out, n, r, r == DELIVER_OK ? NULL : *err_out);
	return r;
}

static enum deliver_result
kind_discard(void *runtime, const char *arg, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    const char **err_out)
{
	(void)runtime;
	(void)arg;
	(void)m;
	(void)rcpts;
	(void)err_out;
	deliver_status_all(st_out, n, DELIVER_OK, NULL);
	return DELIVER_OK;
}

/* relay, mx, forward, relay-by-sender: a deliver_remote (remote.c). */
static void *
kind_remote_open(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	return deliver_remote_new(c, a, err_out);
}

static void
kind_remote_close(void *runtime)
{
	struct deliver_remote *dr = runtime;

	deliver_remote_free(&dr);
}

static enum deliver_result
kind_remote(void *runtime, const char *arg, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    const char **err_out)
{
	(void)arg;
	return deliver_remote_send(runtime, m, rcpts, n, st_out, err_out);
}

/* ---- the table ---- */

#define KIND_REMOTE(together)	false, together, kind_remote_open, \
	kind_remote_close, kind_remote, NULL, NULL, true

static const struct deliver_kind deliver_kinds[] = {
	{ CONFIG_ACTION_MAILDIR, true, DELIVER_ALONE, NULL, NULL,
	    kind_maildir, deliver_maildir_copies, deliver_maildir_check,
	    true },
	{ CONFIG_ACTION_DISCARD, true, DELIVER_ALONE, NULL, NULL,
	    kind_discard, NULL, NULL, true },
	{ CONFIG_ACTION_RELAY, KIND_REMOTE(DELIVER_ONE_TXN) },
	{ CONFIG_ACTION_MX, KIND_REMOTE(DELIVER_ONE_TXN) },
	{ CONFIG_ACTION_FORWARD, KIND_REMOTE(DELIVER_ONE_COPY) },
	{ CONFIG_ACTION_RELAY_BY_SENDER, KIND_REMOTE(DELIVER_ONE_TXN) },
	{ CONFIG_ACTION_WEBHOOK, false, DELIVER_ALONE, deliver_webhook_open,
	    deliver_webhook_close, deliver_webhook_kind, NULL,
	    deliver_webhook_check, false },
	{ CONFIG_ACTION_REPLY, false, DELIVER_ALONE, deliver_agent_open,
	    deliver_agent_close, deliver_agent_kind, NULL,
	    deliver_agent_check, false },
	{ CONFIG_ACTION_PASS_THROUGH, false, DELIVER_ALONE,
	    deliver_passthrough_open, deliver_passthrough_close,
	    deliver_passthrough_kind, NULL, NULL, false },
	{ CONFIG_ACTION_PIPE, false, DELIVER_ALONE, deliver_pipe_open,
	    deliver_pipe_close, deliver_pipe_kind, NULL, deliver_pipe_check,
	    false },
	/* Alone: Dovecot writes Delivered-To only into a copy that came
	 * with one recipient. */
	{ CONFIG_ACTION_LMTP, false, DELIVER_ALONE, deliver_lmtp_open,
	    deliver_lmtp_close, deliver_lmtp_kind, NULL, NULL, true },
};
#define DELIVER_NKINDS	(sizeof(deliver_kinds) / sizeof(deliver_kinds[0]))

const struct deliver_kind *
deliver_kind_of(enum config_action_kind kind)
{
	for (size_t i = 0; i < DELIVER_NKINDS; i++)
		if (deliver_kinds[i].kind == kind)
			return &deliver_kinds[i];
	return NULL;
}

const struct deliver_kind *
deliver_kind_find(const char *name)
{
	enum config_action_kind kind;

	if (name == NULL || !config_action_kind_find(name, &kind))
		return NULL;
	return deliver_kind_of(kind);
}

const char *
deliver_kind_name(const struct deliver_kind *k)
{
	return config_action_kind_name(k->kind);
}
