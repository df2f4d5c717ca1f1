/*
 * table/table.c: the table front: picks the engine of a kind, keeps the
 * connection pool and the cache, and runs blocking lookups (a worker
 * thread's, or one of the table's own threads for an event loop).  An
 * outage is logged once, when it starts, and once when it ends; after a
 * failed connect, lookups fail at once for a second instead of each
 * waiting for its own timeout.  A pooled connection the server closed is
 * no outage: the lookup asks again on a new one.  Knows nothing of who
 * asks.
 */
#include "table/table.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "table/table_private.h"
#include "util/util.h"

#define TABLE_RETRY_MS	1000	/* after a failed connect */
#define TABLE_KEY_MAX	1024

/* ----- values ----- */

void
table_values_add(struct table_values *tv, const char *s, size_t len)
{
	tv->v = xreallocarray(tv->v, tv->n + 1, sizeof(*tv->v));
	tv->v[tv->n++] = xstrndup(s, len);
}

void
table_values_clear(struct table_values *tv)
{
	for (size_t i = 0; i < tv->n; i++)
		free(tv->v[i]);
	free(tv->v);
	tv->v = NULL;
	tv->n = 0;
}

void
table_values_split(const struct table_values *in, struct table_values *out)
{
	for (size_t i = 0; i < in->n; i++)
		for (const char *s = in->v[i]; *s != '\0';) {
			size_t len = strcspn(s, ",");
			const char *b = s, *e = s + len;
			while (b < e && (*b == ' ' || *b == '\t'))
				b++;
			while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if (e > b)
				table_values_add(out, b, (size_t)(e - b));
			s += len;
			if (*s == ',')
				s++;
		}
}

/* ----- open, free ----- */

static const struct table_engine *
table_engine_of(enum config_table_kind kind)
{
	switch (kind) {
	case CONFIG_TABLE_INLINE:
		return &table_inline_engine;
	case CONFIG_TABLE_FILE:
		return &table_file_engine;
	case CONFIG_TABLE_PASSWD:
		return &table_passwd_engine;
	case CONFIG_TABLE_SQLITE:
		return &table_sqlite_engine;
	case CONFIG_TABLE_PGSQL:
		return &table_pgsql_engine;
	case CONFIG_TABLE_REDIS:
		return &table_redis_engine;
	}
	return NULL;
}

struct table *
table_open(const struct config_table *ct, const char **err_out)
{
	struct table *t = xcalloc(1, sizeof(*t));

	t->eng = table_engine_of(ct->kind);
	ASSERT(t->eng != NULL);
	t->name = xstrdup(ct->name);
	t->kind = ct->kind;
	t->path = ct->path != NULL ? xstrdup(ct->path) : NULL;
	t->query = ct->query != NULL ? xstrdup(ct->query) : NULL;
	t->prefix = ct->prefix != NULL ? xstrdup(ct->prefix) : NULL;
	t->redis_set = ct->redis_set;
	t->items = ct->items;
	t->pool = ct->pool > 0 ? ct->pool : 4;
	t->timeout_ms = ct->timeout_ms > 0 ? ct->timeout_ms : 5000;
	t->cache_ms = ct->cache_ms;
	t->neg_cache_ms = ct->neg_cache_ms;
	t->jobs_tail = &t->jobs;
	if (pthread_mutex_init(&t->mu, NULL) != 0 ||
	    pthread_cond_init(&t->cv, NULL) != 0)
		fatal("pthread_mutex_init failed");
	if (!t->eng->memory && (t->cache_ms > 0 || t->neg_cache_ms > 0))
		t->cache = table_cache_new();
	t->idle = xcalloc(t->pool, sizeof(*t->idle));
	if (t->eng->open_fn(t, err_out) == -1) {
		/* err_out is thread-local: freeing does not touch it. */
		table_free(&t);
		return NULL;
	}
	t->items = NULL;
	return t;
}

void
table_free(struct table **tp)
{
	struct table *t = *tp;

	if (t == NULL)
		return;
	pthread_mutex_lock(&t->mu);
	t->stopping = true;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	for (unsigned i = 0; i < t->nthreads; i++)
		pthread_join(t->threads[i], NULL);
	free(t->threads);
	/* Still queued: nobody will run them. */
	while (t->jobs != NULL) {
		struct table_req *req = t->jobs;
		t->jobs = table_req_next(req);
		table_req_finish(req, TABLE_ERROR);
	}
	for (unsigned i = 0; i < t->nidle; i++)
		t->eng->disconnect_fn(t, t->idle[i]);
	free(t->idle);
	if (t->priv != NULL || t->eng->memory)
		t->eng->close_fn(t);
	table_cache_free(&t->cache);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	free(t->name);
	free(t->path);
	free(t->query);
	free(t->prefix);
	free(t);
	*tp = NULL;
}

const char *
table_name(const struct table *t)
{
	return t->name;
}

bool
table_is_remote(const struct table *t)
{
	return !t->eng->memory;
}

/* ----- blocking lookups ----- */

/*
 * Outage bookkeeping (t->mu held): log the start and the end once.  The
 * failed lookups are counted where their askers hear of them.
 */
static void
table_note(struct table *t, bool ok, const char *why)
{
	if (ok && t->down) {
		t->down = false;
		log_msg(LOG_LVL_INFO, "table=%s backend=%s answers again",
		    t->name, t->eng->name);
	} else if (!ok && !t->down) {
		char safe[512];

		t->down = true;
		log_safe_into(safe, sizeof(safe), why, strlen(why));
		/* The backend's text, quoted: its words are no fields. */
		log_msg(LOG_LVL_WARN, "table=%s backend=%s unavailable (its "
		    "lookups fail temporarily until it answers) why=\"%s\"",
		    t->name, t->eng->name, safe);
	}
}

/*
 * A new connection in a slot already counted in t->nconns, made by
 * deadline_ms; NULL on error, the slot given back.  Within a second of a
 * failed connect, fails at once.
 */
static void *
table_conn_new(struct table *t, uint64_t deadline_ms, const char **err_out)
{
	void *conn = NULL;
	bool wait;

	pthread_mutex_lock(&t->mu);
	wait = t->retry_ms != 0 && util_now_ms() < t->retry_ms;
	pthread_mutex_unlock(&t->mu);
	if (wait)
		*err_out = "backend down (a connect failed just now)";
	else if ((conn = t->eng->connect_fn(t, deadline_ms, err_out)) != NULL)
		return conn;
	pthread_mutex_lock(&t->mu);
	t->nconns--;
	if (!wait)
		t->retry_ms = util_now_ms() + TABLE_RETRY_MS;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

/*
 * A connection from the pool, or made if there is room (*idle_out false);
 * NULL on error.
 */
static void *
table_conn_take(struct table *t, bool *idle_out, const char **err_out)
{
	uint64_t deadline = util_now_ms() + t->timeout_ms;
	void *conn;

	pthread_mutex_lock(&t->mu);
	while (t->nidle == 0 && t->nconns >= t->pool) {
		struct timespec ts;
		uint64_t now = util_now_ms();
		if (now >= deadline || t->stopping) {
			pthread_mutex_unlock(&t->mu);
			*err_out = util_err("all %u connections busy for %llu "
			    "ms", t->pool, (unsigned long long)t->timeout_ms);
			return NULL;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 0;
		ts.tv_nsec += 20 * 1000000L;	/* re-check the deadline */
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	}
	*idle_out = t->nidle > 0;
	if (t->nidle > 0) {
		conn = t->idle[--t->nidle];
		pthread_mutex_unlock(&t->mu);
		return conn;
	}
	t->nconns++;
	pthread_mutex_unlock(&t->mu);
	return table_conn_new(t, util_now_ms() + t->timeout_ms, err_out);
}

/* Give conn back, or drop it (broken). */
static void
table_conn_give(struct table *t, void *conn, bool broken)
{
	if (broken)
		t->eng->disconnect_fn(t, conn);
	pthread_mutex_lock(&t->mu);
	if (broken)
		t->nconns--;
	else {
		t->idle[t->nidle++] = conn;
		t->retry_ms = 0;
	}
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

/* The key as every engine sees it: lower case, bounded, printable. */
static int
table_key(const char *key, char *buf, size_t bufsz)
{
	size_t n = strlen(key);

	if (n == 0 || n >= bufsz)
		return -1;
	for (size_t i = 0; i <= n; i++) {
		char c = key[i];
		buf[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	return 0;
}

/*
 * Look k up on conn and give conn back (dropped after an error).  The
 * server may have closed a connection while it sat idle in the pool (a
 * restart, an ended session): then the lookup runs again at once on a new
 * connection, within the same timeout, so only a backend that does not
 * answer makes a lookup fail.  1, 0 or -1 as get_fn.
 */
static int
table_get_on(struct table *t, void *conn, bool idle, const char *k,
    struct table_values *tv, const char **err_out)
{
	uint64_t deadline = util_now_ms() + t->timeout_ms;
	int rc = t->eng->get_fn(t, conn, k, deadline, tv, err_out);

	if (rc == TABLE_GET_CLOSED && idle) {
		char safe[512];

		log_msg(LOG_LVL_DEBUG, "table=%s backend=%s idle connection "
		    "closed by the server; asking on a new one why=\"%s\"",
		    t->name, t->eng->name, log_safe_into(safe, sizeof(safe),
		    *err_out, strlen(*err_out)));
		t->eng->disconnect_fn(t, conn);
		table_values_clear(tv);
		/* Its slot in t->nconns goes to the new connection. */
		if ((conn = table_conn_new(t, deadline, err_out)) == NULL)
			return -1;
		rc = t->eng->get_fn(t, conn, k, deadline, tv, err_out);
	}
	table_conn_give(t, conn, rc < 0);
	return rc < 0 ? -1 : rc;
}

int
table_get_uncounted(struct table *t, const char *key,
    struct table_values *out)
{
	struct table_values tv = { 0 };
	char k[TABLE_KEY_MAX];
	const char *err = NULL;
	void *conn = NULL;
	bool idle;
	int rc;

	if (table_key(key, k, sizeof(k)) == -1)
		return TABLE_MISSING;
	if (t->eng->memory) {
		rc = t->eng->get_fn(t, NULL, k, 0, &tv, &err);
		goto done;
	}
	if (t->cache != NULL && (rc = table_cache_get(t->cache, k, &tv,
	    util_now_ms())) != -1)
		goto done;
	if ((conn = table_conn_take(t, &idle, &err)) == NULL)
		rc = -1;
	else
		rc = table_get_on(t, conn, idle, k, &tv, &err);
	pthread_mutex_lock(&t->mu);
	table_note(t, rc != -1, err != NULL ? err : "error");
	pthread_mutex_unlock(&t->mu);
	if (rc == -1) {
		table_values_clear(&tv);
		return TABLE_ERROR;
	}
	uint64_t ttl = rc == 1 ? t->cache_ms : t->neg_cache_ms;
	if (t->cache != NULL && ttl > 0)
		table_cache_put(t->cache, k, rc, &tv, util_now_ms() + ttl);
done:
	if (rc == 1 && out != NULL)
		for (size_t i = 0; i < tv.n; i++)
			table_values_add(out, tv.v[i], strlen(tv.v[i]));
	table_values_clear(&tv);
	return rc == 1 ? TABLE_FOUND : rc == 0 ? TABLE_MISSING : TABLE_ERROR;
}

int
table_get(struct table *t, const char *key, struct table_values *out)
{
	int rc = table_get_uncounted(t, key, out);

	if (rc == TABLE_ERROR)
		metrics_inc(MET_TABLE_ERRORS, 0, 0);
	return rc;
}

int
table_get_first(struct table *t, const char *key, char **value_out)
{
	struct table_values tv = { 0 };
	int rc = table_get(t, key, &tv);

	if (rc == TABLE_FOUND && value_out != NULL)
		*value_out = xstrdup(tv.n > 0 ? tv.v[0] : "");
	table_values_clear(&tv);
	return rc;
}

bool
table_has_domain(struct table *t, const char *domain)
{
	char d[TABLE_KEY_MAX];

	if (t->eng->has_domain_fn == NULL || table_key(domain, d,
	    sizeof(d)) == -1)
		return false;
	return t->eng->has_domain_fn(t, d);
}

/* ----- for the asynchronous side ----- */

/* Answer now when it needs no backend: memory, cache, known outage. */
int
table_try_now(struct table *t, const char *key, struct table_values *out)
{
	char k[TABLE_KEY_MAX];
	int rc;

	if (t->eng->memory)
		return table_get(t, key, out);
	if (table_key(key, k, sizeof(k)) == -1)
		return TABLE_MISSING;
	if (t->cache != NULL && (rc = table_cache_get(t->cache, k, out,
	    util_now_ms())) != -1)
		return rc;
	pthread_mutex_lock(&t->mu);
	rc = t->retry_ms != 0 && t->nidle == 0 && util_now_ms() <
	    t->retry_ms ? TABLE_ERROR : TABLE_PENDING;
	pthread_mutex_unlock(&t->mu);
	if (rc == TABLE_ERROR)	/* a failed lookup like any other */
		metrics_inc(MET_TABLE_ERRORS, 0, 0);
	return rc;
}

/* A timeout seen by an asker counts as an outage too. */
void
table_note_timeout(struct table *t)
{
	metrics_inc(MET_TABLE_ERRORS, 0, 0);
	pthread_mutex_lock(&t->mu);
	table_note(t, false, util_err("no answer within %llu ms",
	    (unsigned long long)t->timeout_ms));
	pthread_mutex_unlock(&t->mu);
}
