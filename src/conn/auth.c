/*
 * conn/auth.c: checking SMTP AUTH credentials against the "auth" backends
 * in their order: a table of crypt(3) hashes (any kind; the lookup never
 * blocks the loop, and crypt, slow on purpose, runs on the worker pool) or
 * PAM through the privileged helper.  The first that accepts wins; when
 * none does and one of them could not answer, the result is "unavailable"
 * (454), never a refusal.  The guard ("auth-guard") refuses a client on
 * the ban list first, and counts failures per IP and per user in the
 * state store, banning the IP once either is over the limit.
 */
#include "conn/conn_private.h"

#include <crypt.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain.h"
#include "config/config.h"
#include "log/log.h"
#include "priv/priv.h"
#include "route/route.h"
#include "store/store.h"
#include "table/table.h"

struct conn_auth_job {
	conn_auth_done_cb	*done_cb;
	void			*arg;		/* NULL once the caller let go */
	int			 refs;		/* the caller + each async step */
	struct conn_ctx		*ctx;		/* borrowed */
	struct conn_rt		*rt;		/* ref: tables, backends */
	struct chain_loop	*cl;		/* ref: the session's store and
						   table answers, or NULL */
	char			*ip;		/* owned */
	char			*user;		/* owned */
	char			*pass;		/* owned; wiped */
	size_t			 idx;		/* backend being tried */
	bool			 unavailable;	/* one could not answer */
	struct table_req	*treq;		/* a table lookup under way */
	struct priv_req		*preq;		/* a PAM check under way */
	struct event		*ev;		/* owned: crypt done */
	struct event		*done_ev;	/* owned: the answer, later */
	int			 result;
	char			*hash;		/* owned: for the worker */
	bool			 crypt_ok;
};

static void	conn_auth_next(struct conn_auth_job *j);

static void
conn_auth_unref(struct conn_auth_job *j)
{
	if (--j->refs > 0)
		return;
	table_lookup_cancel(&j->treq);
	priv_cancel(&j->preq);
	event_free(j->ev);
	event_free(j->done_ev);
	conn_rt_unref(&j->rt);
	chain_loop_unref(&j->cl);
	OPENSSL_cleanse(j->pass, strlen(j->pass));
	free(j->pass);
	free(j->user);
	free(j->ip);
	free(j->hash);
	free(j);
}

/* On the loop, never inside conn_auth_start(): the answer. */
static void
conn_auth_done_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn_auth_job *j = arg;

	(void)fd;
	(void)what;
	if (j->arg != NULL) {
		void *a = j->arg;
		j->arg = NULL;
		j->refs--;	/* the caller's; the answer's keeps j for the call */
		j->done_cb(a, j->result, j->user);
	}
	conn_auth_unref(j);		/* the answer's */
}

/*
 * The answer: 1 ok, 0 refused, -1 unavailable, -2 the IP is banned for
 * failed AUTHs, -3 the IP is banned for something else.
 */
static void
conn_auth_finish(struct conn_auth_job *j, int rc)
{
	j->result = rc;
	j->refs++;
	event_active(j->done_ev, EV_TIMEOUT, 1);
}

/* On a worker: compare hashes in constant time. */
static void
conn_auth_crypt(void *arg)
{
	struct conn_auth_job *j = arg;
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	const char *got;

	/* A strong hash takes long: no commit waits behind a password. */
	util_pool_block_begin();
	if ((got = crypt_r(j->pass, j->hash, cd)) != NULL && got[0] != '*' &&
	    strlen(got) == strlen(j->hash))
		j->crypt_ok = CRYPTO_memcmp(got, j->hash, strlen(j->hash)) == 0;
	util_pool_block_end();
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	event_active(j->ev, EV_TIMEOUT, 1);
}

static void
conn_auth_crypt_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn_auth_job *j = arg;

	(void)fd;
	(void)what;
	if (j->arg == NULL) {
		conn_auth_unref(j);
		return;
	}
	if (j->crypt_ok)
		conn_auth_finish(j, 1);
	else {
		j->idx++;
		conn_auth_next(j);
	}
	conn_auth_unref(j);
}

/* A table's answer: true when a hash is being checked; else the next
 * backend is due (j->idx moved on). */
static bool
conn_auth_table_answer(struct conn_auth_job *j, int rc,
    const struct table_values *vals)
{
	if (rc == TABLE_FOUND && vals->n > 0 && vals->v[0][0] != '\0') {
		free(j->hash);
		j->hash = xstrdup(vals->v[0]);
		j->crypt_ok = false;
		j->refs++;
		util_pool_submit(j->ctx->pool, conn_auth_crypt, j);
		return true;
	}
	if (rc == TABLE_ERROR)
		j->unavailable = true;
	j->idx++;
	return false;
}

static void
conn_auth_table_cb(void *arg, int rc, const struct table_values *vals)
{
	struct conn_auth_job *j = arg;

	j->treq = NULL;
	if (j->arg != NULL && !conn_auth_table_answer(j, rc, vals))
		conn_auth_next(j);
	conn_auth_unref(j);
}

static void
conn_auth_pam_cb(void *arg, int rc)
{
	struct conn_auth_job *j = arg;

	j->preq = NULL;
	if (j->arg == NULL)
		;
	else if (rc == 1)
		conn_auth_finish(j, 1);
	else {
		if (rc == -1)
			j->unavailable = true;
		j->idx++;
		conn_auth_next(j);
	}
	conn_auth_unref(j);
}

/* Try backend j->idx, or give the answer when none is left. */
static void
conn_auth_next(struct conn_auth_job *j)
{
	const struct config *cfg = j->rt->cfg;
	struct table_values tv = { 0 };

	while (j->idx < cfg->nauths) {
		const struct config_auth *a = &cfg->auths[j->idx];
		if (a->table == NULL) {
			j->refs++;
			j->preq = priv_auth_start(j->ctx->priv, j->ctx->base,
			    a->pam_service, j->user, j->pass, conn_auth_pam_cb,
			    j);
			return;
		}
		struct table *t = route_table_of(j->rt->router, a->table);
		int rc = table_lookup_start(t, j->cl != NULL ?
		    chain_loop_tables(j->cl) : NULL, j->user,
		    conn_auth_table_cb, j, &tv, &j->treq);
		if (rc == TABLE_PENDING) {
			j->refs++;
			return;
		}
		bool crypting = conn_auth_table_answer(j, rc, &tv);
		table_values_clear(&tv);
		if (crypting)
			return;
	}
	conn_auth_finish(j, j->unavailable ? -1 : 0);
}

static void
conn_auth_banned_cb(void *arg, int rc, const char *value)
{
	struct conn_auth_job *j = arg;

	if (j->arg == NULL) {
		conn_auth_unref(j);
		return;
	}
	/* The ban's value says who banned (the guard, or a ban handler). */
	if (rc == 1)
		conn_auth_finish(j, strcmp(value, "auth-guard") == 0 ||
		    strcmp(value, "auth-failure") == 0 ? -2 : -3);
	else
		conn_auth_next(j);	/* a store error locks nobody out */
	conn_auth_unref(j);
}

struct conn_auth_job *
conn_auth_start(struct conn *c, const char *user, const char *pass,
    conn_auth_done_cb *done_cb, void *arg)
{
	struct conn_ctx *ctx = c->ctx;
	struct conn_rt *rt = c->rt;
	struct conn_auth_job *j = xcalloc(1, sizeof(*j));
	char key[STORE_KEY_MAX];

	j->done_cb = done_cb;
	j->arg = arg;
	j->refs = 2;		/* the caller's, and this first step's */
	j->ctx = ctx;
	j->rt = conn_rt_ref(rt);
	j->cl = c->chain_loop != NULL ? chain_loop_ref(c->chain_loop) : NULL;
	j->ev = event_new(ctx->base, -1, 0, conn_auth_crypt_done_cb, j);
	j->done_ev = event_new(ctx->base, -1, 0, conn_auth_done_ev_cb, j);
	j->ip = xstrdup(c->ip);
	j->user = xstrdup(user);
	j->pass = xstrdup(pass);
	if (rt->cfg->auth_guard.max > 0 && j->cl != NULL) {
		chain_ban_key_of(c->ip, key, sizeof(key));
		store_get(chain_loop_store(j->cl), key,
		    conn_auth_banned_cb, j);
		return j;
	}
	conn_auth_next(j);
	conn_auth_unref(j);
	return j;
}

void
conn_auth_abandon(struct conn_auth_job **jp)
{
	struct conn_auth_job *j = *jp;

	*jp = NULL;
	if (j == NULL)
		return;
	j->arg = NULL;
	/* Their callbacks will not come: drop the references they held. */
	if (j->treq != NULL) {
		table_lookup_cancel(&j->treq);
		j->refs--;
	}
	if (j->preq != NULL) {
		priv_cancel(&j->preq);
		j->refs--;
	}
	conn_auth_unref(j);		/* the caller's */
}

/* ----- the guard: failures counted in the store ----- */

struct conn_guard_step {
	struct store		*st;		/* borrowed: the loop's */
	int			 waiting;	/* counts not back yet */
	int64_t			 n_ip;		/* failures: the IP's */
	int64_t			 n_user;	/* the user name's */
	uint64_t		 ban_ms;
	unsigned		 max;
	char			 ip[INET6_ADDRSTRLEN];
	char			 user[300];	/* escaped, for the log */
};

/*
 * The store key counting failures for user (peer text, any bytes): one
 * counter per name, however long or strange.
 */
static void
conn_guard_user_key(const char *user, char *key, size_t keysz)
{
	int r;

	util_strlcpy(key, "authfail:user:", keysz);
	r = store_key_add(key, keysz, user, strlen(user), SIZE_MAX);
	ASSERT(r == 0);		/* a part always fits in a key */
}

/*
 * The ban's mark was counted: n 1 when no failure of this ban logged it
 * yet (sessions from one IP that fail at once each ban it); on an error,
 * once more rather than not at all.
 */
static void
conn_guard_marked_cb(void *arg, int rc, int64_t n)
{
	struct conn_guard_step *g = arg;

	if (rc == -1 || n == 1) {
		if (g->n_ip > (int64_t)g->max)
			log_msg(LOG_LVL_WARN, "auth-guard ip=%s over %u "
			    "failures: %s banned for %llus user=\"%s\"",
			    g->ip, g->max, g->ip,
			    (unsigned long long)g->ban_ms / 1000, g->user);
		else
			log_msg(LOG_LVL_WARN, "auth-guard user=\"%s\" over %u "
			    "failures: %s banned for %llus", g->user, g->max,
			    g->ip, (unsigned long long)g->ban_ms / 1000);
	}
	free(g);
}

/* The IP is on the ban list (rc 0), or not: nothing to log then. */
static void
conn_guard_banned_cb(void *arg, int rc, int64_t n)
{
	struct conn_guard_step *g = arg;
	char key[STORE_KEY_MAX];

	(void)n;
	if (rc == -1) {
		free(g);
		return;
	}
	util_snprintf(key, sizeof(key), "authfail:ban:%s", g->ip);
	store_incr(g->st, key, 1, g->ban_ms, conn_guard_marked_cb, g);
}

/* Both counts are back: over the limit, the IP goes on the ban list. */
static void
conn_guard_counted(struct conn_guard_step *g)
{
	char key[STORE_KEY_MAX];

	if (--g->waiting > 0)
		return;
	if (g->n_ip <= (int64_t)g->max && g->n_user <= (int64_t)g->max) {
		free(g);
		return;
	}
	chain_ban_key_of(g->ip, key, sizeof(key));
	store_set(g->st, key, "auth-guard", g->ban_ms, conn_guard_banned_cb,
	    g);
}

static void
conn_guard_ip_cb(void *arg, int rc, int64_t n)
{
	struct conn_guard_step *g = arg;

	g->n_ip = rc == 0 ? n : 0;	/* a store error locks nobody out */
	conn_guard_counted(g);
}

static void
conn_guard_user_cb(void *arg, int rc, int64_t n)
{
	struct conn_guard_step *g = arg;

	g->n_user = rc == 0 ? n : 0;
	conn_guard_counted(g);
}

void
conn_auth_failed(struct conn *c, const char *user)
{
	const struct config_guard *gd = &conn_cfg(c)->auth_guard;
	struct conn_guard_step *g;
	char key[STORE_KEY_MAX];

	if (gd->max == 0 || c->chain_loop == NULL)
		return;
	g = xcalloc(1, sizeof(*g));
	g->st = chain_loop_store(c->chain_loop);
	g->waiting = 2;
	g->max = gd->max;
	g->ban_ms = gd->ban_ms;
	util_strlcpy(g->ip, c->ip, sizeof(g->ip));
	log_safe_into(g->user, sizeof(g->user), user, strlen(user));
	util_snprintf(key, sizeof(key), "authfail:ip:%s", g->ip);
	store_incr(g->st, key, 1, gd->period_ms, conn_guard_ip_cb, g);
	conn_guard_user_key(user, key, sizeof(key));
	store_incr(g->st, key, 1, gd->period_ms, conn_guard_user_cb, g);
}
