/*
 * store/store_cache.c: the SQLite engine's write-back cache of plain keys
 * (store_private.h).  Values live here once read or written; writes are
 * marked dirty and reach the database in one transaction per flush.  The
 * caller holds the cache's lock for every call.
 */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_private.h"
#include "util/util.h"

#define STORE_CACHE_BUCKETS	4096

static size_t
store_cache_hash(const char *key)
{
	return util_hash_str(key) % STORE_CACHE_BUCKETS;
}

void
store_cache_init(struct store_cache *c)
{
	c->tab = xcalloc(STORE_CACHE_BUCKETS, sizeof(*c->tab));
	c->n = 0;
}

struct store_cache_ent *
store_cache_find(struct store_cache *c, const char *key)
{
	for (struct store_cache_ent *e = c->tab[store_cache_hash(key)];
	    e != NULL; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

struct store_cache_ent *
store_cache_add(struct store_cache *c, const char *key, const char *val,
    int64_t exp)
{
	struct store_cache_ent *e = xcalloc(1, sizeof(*e));
	size_t h = store_cache_hash(key);

	e->key = xstrdup(key);
	e->val = val != NULL ? xstrdup(val) : NULL;
	e->exp = exp;
	e->next = c->tab[h];
	c->tab[h] = e;
	c->n++;
	return e;
}

static void
store_cache_set(struct store_cache_ent *e, const char *val, int64_t exp)
{
	/* A counter's new value most often fits where the old one was. */
	if (val != NULL && e->val != NULL && strlen(val) <= strlen(e->val))
		memmove(e->val, val, strlen(val) + 1);
	else {
		free(e->val);
		e->val = val != NULL ? xstrdup(val) : NULL;
	}
	e->exp = exp;
	e->dirty = true;
}

static bool
store_cache_live(const struct store_cache_ent *e, int64_t now)
{
	return e->val != NULL && (e->exp == 0 || e->exp > now);
}

/*
 * Apply req to its key's entry e, as the database would (store_sqlite.c
 * before the cache): GET, SET, INCR; DEL of the plain key (n: 1 when it
 * was there).  Sets the result in req.
 */
void
store_cache_apply(struct store_cache_ent *e, struct store_req *req,
    int64_t now)
{
	int64_t exp = req->ttl_ms != 0 ? now + (int64_t)req->ttl_ms : 0;
	char num[UTIL_DEC_MAX];

	req->rc = 0;
	switch (req->op) {
	case STORE_GET:
		req->rc = store_cache_live(e, now) ? 1 : 0;
		if (req->rc == 1)
			req->out = xstrdup(e->val);
		break;
	case STORE_SET:
		store_cache_set(e, req->val, exp);
		break;
	case STORE_INCR:
		if (store_cache_live(e, now)) {
			req->n = strtoll(e->val, NULL, 10) + req->delta;
			exp = e->exp;	/* an existing key keeps its expiry */
		} else
			req->n = req->delta;
		util_i64_dec(num, req->n);
		store_cache_set(e, num, exp);
		break;
	case STORE_DEL:
		req->n = store_cache_live(e, now) ? 1 : 0;
		if (e->val != NULL)
			store_cache_set(e, NULL, 0);
		break;
	default:
		req->rc = -1;
	}
}

size_t
store_cache_take_dirty(struct store_cache *c, struct store_cache_ent ***out)
{
	size_t n = 0, cap = 0;

	*out = NULL;
	for (size_t b = 0; b < STORE_CACHE_BUCKETS; b++)
		for (struct store_cache_ent *e = c->tab[b]; e != NULL;
		    e = e->next) {
			if (!e->dirty)
				continue;
			if (n == cap) {
				cap = cap == 0 ? 64 : cap * 2;
				*out = xreallocarray(*out, cap, sizeof(**out));
			}
			/* A copy: the loops go on changing the entry. */
			struct store_cache_ent *w = xcalloc(1, sizeof(*w));
			w->key = xstrdup(e->key);
			w->val = e->val != NULL ? xstrdup(e->val) : NULL;
			w->exp = e->exp;
			(*out)[n++] = w;
			e->dirty = false;
		}
	return n;
}

void
store_cache_ent_free(struct store_cache_ent *e)
{
	free(e->key);
	free(e->val);
	free(e);
}

void
store_cache_trim(struct store_cache *c, size_t max)
{
	for (size_t b = 0; b < STORE_CACHE_BUCKETS && c->n > max / 2; b++) {
		struct store_cache_ent **pp = &c->tab[b];
		while (*pp != NULL) {
			struct store_cache_ent *e = *pp;
			if (e->dirty) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			store_cache_ent_free(e);
			c->n--;
		}
	}
}

void
store_cache_clear(struct store_cache *c)
{
	for (size_t b = 0; b < STORE_CACHE_BUCKETS; b++)
		while (c->tab[b] != NULL) {
			struct store_cache_ent *e = c->tab[b];
			c->tab[b] = e->next;
			store_cache_ent_free(e);
		}
	free(c->tab);
	c->tab = NULL;
	c->n = 0;
}
