/*
 * table/cache.c: answers of a backend kept for a while (found keys for the
 * table's "cache" time, missing ones for its "negative-cache" time), so a
 * burst of recipients costs one query each.  One mutex; at most
 * TABLE_CACHE_MAX keys, and a full cache is emptied rather than sorted.
 */
#include "table/table.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "table/table_private.h"
#include "util/util.h"

#define TABLE_CACHE_BUCKETS	1024
#define TABLE_CACHE_MAX		20000

struct table_cache_ent {
	char			*key;		/* owned */
	int			 rc;		/* 1 found, 0 missing */
	struct table_values	 vals;
	uint64_t		 expires_ms;	/* monotonic */
	struct table_cache_ent	*next;
};

struct table_cache {
	pthread_mutex_t		 mu;
	struct table_cache_ent	*b[TABLE_CACHE_BUCKETS];
	size_t			 n;
};

static size_t
table_cache_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)(h % TABLE_CACHE_BUCKETS);
}

struct table_cache *
table_cache_new(void)
{
	struct table_cache *c = xcalloc(1, sizeof(*c));

	if (pthread_mutex_init(&c->mu, NULL) != 0)
		fatal("pthread_mutex_init failed");
	return c;
}

static void
table_cache_ent_free(struct table_cache_ent *e)
{
	table_values_clear(&e->vals);
	free(e->key);
	free(e);
}

static void
table_cache_empty(struct table_cache *c)
{
	for (size_t i = 0; i < TABLE_CACHE_BUCKETS; i++)
		while (c->b[i] != NULL) {
			struct table_cache_ent *e = c->b[i];
			c->b[i] = e->next;
			table_cache_ent_free(e);
		}
	c->n = 0;
}

void
table_cache_free(struct table_cache **cp)
{
	struct table_cache *c = *cp;

	if (c == NULL)
		return;
	table_cache_empty(c);
	pthread_mutex_destroy(&c->mu);
	free(c);
	*cp = NULL;
}

int
table_cache_get(struct table_cache *c, const char *key,
    struct table_values *out, uint64_t now_ms)
{
	struct table_cache_ent **ep, *e;
	int rc = -1;

	pthread_mutex_lock(&c->mu);
	for (ep = &c->b[table_cache_hash(key)]; (e = *ep) != NULL;
	    ep = &e->next)
		if (strcmp(e->key, key) == 0)
			break;
	if (e != NULL && e->expires_ms <= now_ms) {
		*ep = e->next;
		table_cache_ent_free(e);
		c->n--;
	} else if (e != NULL) {
		rc = e->rc;
		for (size_t i = 0; rc == 1 && out != NULL && i < e->vals.n; i++)
			table_values_add(out, e->vals.v[i],
			    strlen(e->vals.v[i]));
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

void
table_cache_put(struct table_cache *c, const char *key, int rc,
    const struct table_values *vals, uint64_t expires_ms)
{
	struct table_cache_ent **ep, *e;

	pthread_mutex_lock(&c->mu);
	for (ep = &c->b[table_cache_hash(key)]; (e = *ep) != NULL;
	    ep = &e->next)
		if (strcmp(e->key, key) == 0) {
			*ep = e->next;
			table_cache_ent_free(e);
			c->n--;
			break;
		}
	if (c->n >= TABLE_CACHE_MAX)
		table_cache_empty(c);
	e = xcalloc(1, sizeof(*e));
	e->key = xstrdup(key);
	e->rc = rc;
	e->expires_ms = expires_ms;
	for (size_t i = 0; rc == 1 && i < vals->n; i++)
		table_values_add(&e->vals, vals->v[i], strlen(vals->v[i]));
	ep = &c->b[table_cache_hash(key)];
	e->next = *ep;
	*ep = e;
	c->n++;
	pthread_mutex_unlock(&c->mu);
}
