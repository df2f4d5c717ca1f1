/*
 * store/store_mem.c: "memory:" engine, one plain list in the process's
 * memory shared by every loop's handle under a mutex (tests, and
 * single-node setups that need nothing to survive a restart).  Answers on
 * the next loop iteration like the real engines.
 */
#include "store/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_private.h"
#include "util/util.h"

struct store_mem_ent {
	char		*key;		/* owned */
	char		*member;	/* owned; NULL for a plain value */
	char		*val;		/* owned */
	uint64_t	 exp_ms;	/* wall clock; 0: never */
};

struct store_mem {
	struct store_mem_ent	*ents;
	size_t			 n;
	unsigned		 refs;		/* open handles */
};

/* Counters must agree across loops: one table per process. */
static pthread_mutex_t	 store_mem_mu = PTHREAD_MUTEX_INITIALIZER;
static struct store_mem	*store_mem_shared;

static uint64_t
store_mem_now(void)
{
	return util_wall_us() / 1000;
}

static int
store_mem_open(struct store *st, const char *arg, const char **err_out)
{
	(void)arg;
	(void)err_out;
	pthread_mutex_lock(&store_mem_mu);
	if (store_mem_shared == NULL)
		store_mem_shared = xcalloc(1, sizeof(*store_mem_shared));
	store_mem_shared->refs++;
	st->priv = store_mem_shared;
	pthread_mutex_unlock(&store_mem_mu);
	return 0;
}

static void
store_mem_drop(struct store_mem *m, size_t i)
{
	free(m->ents[i].key);
	free(m->ents[i].member);
	free(m->ents[i].val);
	m->ents[i] = m->ents[--m->n];
}

/* Entry for key (and member), expired ones dropped on the way. */
static struct store_mem_ent *
store_mem_find(struct store_mem *m, const char *key, const char *member)
{
	uint64_t now = store_mem_now();

	for (size_t i = 0; i < m->n; i++) {
		struct store_mem_ent *e = &m->ents[i];
		if (e->exp_ms != 0 && e->exp_ms <= now) {
			store_mem_drop(m, i--);
			continue;
		}
		if (strcmp(e->key, key) != 0)
			continue;
		if ((member == NULL) != (e->member == NULL))
			continue;
		if (member != NULL && strcmp(member, e->member) != 0)
			continue;
		return e;
	}
	return NULL;
}

static struct store_mem_ent *
store_mem_add(struct store_mem *m, const char *key, const char *member,
    const char *val, uint64_t ttl_ms)
{
	m->ents = xreallocarray(m->ents, m->n + 1, sizeof(*m->ents));
	struct store_mem_ent *e = &m->ents[m->n++];
	e->key = xstrdup(key);
	e->member = member != NULL ? xstrdup(member) : NULL;
	e->val = xstrdup(val);
	e->exp_ms = ttl_ms != 0 ? store_mem_now() + ttl_ms : 0;
	return e;
}

static void
store_mem_submit(struct store *st, struct store_req *req)
{
	struct store_mem *m = st->priv;
	struct store_mem_ent *e;
	char num[UTIL_DEC_MAX];

	pthread_mutex_lock(&store_mem_mu);
	switch (req->op) {
	case STORE_GET:
		e = store_mem_find(m, req->key, NULL);
		req->rc = e != NULL;
		if (e != NULL)
			req->out = xstrdup(e->val);
		break;
	case STORE_SET:
		while ((e = store_mem_find(m, req->key, NULL)) != NULL)
			store_mem_drop(m, (size_t)(e - m->ents));
		store_mem_add(m, req->key, NULL, req->val, req->ttl_ms);
		break;
	case STORE_INCR:
		e = store_mem_find(m, req->key, NULL);
		if (e == NULL)
			e = store_mem_add(m, req->key, NULL, "0", req->ttl_ms);
		req->n = strtoll(e->val, NULL, 10) + req->delta;
		util_i64_dec(num, req->n);
		free(e->val);
		e->val = xstrdup(num);
		break;
	case STORE_DEL:
		req->n = 0;
		while ((e = store_mem_find(m, req->key, NULL)) != NULL) {
			store_mem_drop(m, (size_t)(e - m->ents));
			req->n = 1;
		}
		for (size_t i = 0; i < m->n; i++)
			if (m->ents[i].member != NULL &&
			    strcmp(m->ents[i].key, req->key) == 0) {
				store_mem_drop(m, i--);
				req->n = 1;
			}
		break;
	case STORE_SADD:
		req->n = store_mem_find(m, req->key, req->val) == NULL;
		if (req->n == 1) {
			/* The set's expiry is its first member's. */
			uint64_t exp = 0;
			for (size_t i = 0; i < m->n; i++)
				if (m->ents[i].member != NULL &&
				    strcmp(m->ents[i].key, req->key) == 0)
					exp = m->ents[i].exp_ms;
			e = store_mem_add(m, req->key, req->val, "",
			    req->ttl_ms);
			if (exp != 0)
				e->exp_ms = exp;
		}
		break;
	case STORE_SISMEMBER:
		req->n = store_mem_find(m, req->key, req->val) != NULL;
		break;
	}
	pthread_mutex_unlock(&store_mem_mu);
	store_req_done_later(req);
}

static void
store_mem_close(struct store *st)
{
	struct store_mem *m = st->priv;

	pthread_mutex_lock(&store_mem_mu);
	if (--m->refs == 0) {
		while (m->n > 0)
			store_mem_drop(m, 0);
		free(m->ents);
		free(m);
		store_mem_shared = NULL;
	}
	pthread_mutex_unlock(&store_mem_mu);
	st->priv = NULL;
}

const struct store_engine store_mem_engine = {
	.name = "memory",
	.open_fn = store_mem_open,
	.submit_fn = store_mem_submit,
	.close_fn = store_mem_close,
};
