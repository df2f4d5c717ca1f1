/*
 * conn/auth.c: checking SMTP AUTH credentials against the "auth <TABLE>"
 * table of crypt(3) hashes.  crypt is slow on purpose, so the check runs
 * on the worker pool and answers on the loop; a connection that goes away
 * meanwhile only lets go of the job.
 */
#include "conn/conn_private.h"

#include <crypt.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "route/route.h"
#include "table/table.h"

struct conn_auth_job {
	conn_auth_done_cb	*done_cb;
	void			*arg;		/* NULL once the caller let go */
	struct conn_rt		*rt;		/* ref: its table */
	struct event		*ev;		/* owned: completion on the loop */
	char			*user;		/* owned */
	char			*pass;		/* owned; wiped */
	bool			 ok;
};

/* On a worker: look the user up and compare hashes in constant time. */
static void
conn_auth_run(void *arg)
{
	struct conn_auth_job *j = arg;
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	struct table *t = route_table_of(j->rt->router, j->rt->cfg->auth_table);
	char *hash = NULL;
	const char *got;

	if (table_lookup(t, j->user, &hash) && hash[0] != '\0' &&
	    (got = crypt_r(j->pass, hash, cd)) != NULL && got[0] != '*' &&
	    strlen(got) == strlen(hash))
		j->ok = CRYPTO_memcmp(got, hash, strlen(hash)) == 0;
	OPENSSL_cleanse(j->pass, strlen(j->pass));
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	free(hash);
	event_active(j->ev, EV_TIMEOUT, 1);
}

static void
conn_auth_done(evutil_socket_t fd, short what, void *arg)
{
	struct conn_auth_job *j = arg;

	(void)fd;
	(void)what;
	if (j->arg != NULL)
		j->done_cb(j->arg, j->ok, j->user);
	event_free(j->ev);
	conn_rt_unref(&j->rt);
	free(j->user);
	free(j->pass);
	free(j);
}

struct conn_auth_job *
conn_auth_start(struct conn_ctx *ctx, struct conn_rt *rt, const char *user,
    const char *pass, conn_auth_done_cb *done_cb, void *arg)
{
	struct conn_auth_job *j = xcalloc(1, sizeof(*j));

	j->done_cb = done_cb;
	j->arg = arg;
	j->rt = conn_rt_ref(rt);
	j->ev = event_new(ctx->base, -1, 0, conn_auth_done, j);
	j->user = xstrdup(user);
	j->pass = xstrdup(pass);
	util_pool_submit(ctx->pool, conn_auth_run, j);
	return j;
}

void
conn_auth_abandon(struct conn_auth_job **jp)
{
	if (*jp != NULL)
		(*jp)->arg = NULL;	/* the completion frees it */
	*jp = NULL;
}
