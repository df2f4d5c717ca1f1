/*
 * deliver/memo.c: the reply memory of agents, "one reply per sender per
 * agent per period", kept in the state store (memory, SQLite or Redis, so
 * it holds across restarts and across nodes sharing Redis).  The store
 * answers on an event loop: this one has a private event_base, run by
 * the worker thread that asks until the answer (or a deadline) comes.
 * Knows nothing of what is remembered.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <event2/event.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "store/store.h"
#include "util/util.h"

#define MEMO_WAIT_MS	5000	/* the store must answer within this */

struct deliver_memo {
	pthread_mutex_t		 mu;	/* one question at a time */
	char			*spec;	/* owned */
	struct event_base	*base;	/* owned: the store answers here */
	struct store		*st;	/* owned; NULL until first needed */
};

/* On the heap: a late answer after the deadline finds it and frees it. */
struct memo_wait {
	bool		 done;
	bool		 abandoned;	/* the asker gave up waiting */
	int		 rc;
	int64_t		 n;
};

struct deliver_memo *
deliver_memo_open(const char *spec, const char **err_out)
{
	struct deliver_memo *mm = xcalloc(1, sizeof(*mm));

	pthread_mutex_init(&mm->mu, NULL);
	mm->spec = xstrdup(spec);
	if ((mm->base = event_base_new()) == NULL) {
		*err_out = "event_base_new failed";
		deliver_memo_close(&mm);
		return NULL;
	}
	return mm;
}

/*
 * The store, opened at the first question rather than with the action:
 * actions are built before the server has made its spool folder (where
 * the default SQLite file lives) and dropped its privileges.  A store
 * that cannot be opened now is tried again at the next question.  Called
 * with mm->mu held; NULL when it cannot be opened (the store logged why).
 */
static struct store *
memo_store(struct deliver_memo *mm)
{
	const char *err = NULL;

	if (mm->st == NULL && (mm->st = store_open(mm->base, mm->spec,
	    &err)) == NULL)
		log_msg(LOG_LVL_WARN, "agent reply memory: %s", err);
	return mm->st;
}

void
deliver_memo_close(struct deliver_memo **mp)
{
	struct deliver_memo *mm = *mp;

	if (mm == NULL)
		return;
	*mp = NULL;
	store_close(&mm->st);
	/* Callbacks the close answered (with -1) run now, then go. */
	if (mm->base != NULL) {
		event_base_loop(mm->base, EVLOOP_NONBLOCK);
		event_base_free(mm->base);
	}
	pthread_mutex_destroy(&mm->mu);
	free(mm->spec);
	free(mm);
}

static void
memo_int_cb(void *arg, int rc, int64_t n)
{
	struct memo_wait *w = arg;

	if (w->abandoned) {
		free(w);
		return;
	}
	w->done = true;
	w->rc = rc;
	w->n = n;
}

static void
memo_str_cb(void *arg, int rc, const char *value)
{
	(void)value;
	memo_int_cb(arg, rc, 0);
}

/*
 * Run the loop until w is answered: 0 with *rc_out and *n_out, and w
 * freed; -1 at the deadline (w is left to the late answer).
 */
static int
memo_wait(struct deliver_memo *mm, struct memo_wait *w, int *rc_out,
    int64_t *n_out)
{
	uint64_t deadline = util_now_ms() + MEMO_WAIT_MS;

	while (!w->done && util_now_ms() < deadline) {
		struct timeval tv = util_timeval_ms(50);

		event_base_loopexit(mm->base, &tv);
		event_base_loop(mm->base, EVLOOP_ONCE);
	}
	if (!w->done) {
		w->abandoned = true;
		return -1;
	}
	*rc_out = w->rc;
	*n_out = w->n;
	free(w);
	return 0;
}

/* The store key: readable when it can be, else a digest. */
static void
memo_key(const char *what, const char *a, const char *b, char *out,
    size_t outsz)
{
	if (util_snprintf(out, outsz, "%s:%s:%s", what, a, b) == 0 &&
	    store_key_ok(out)) {
		util_strlower(out);
		return;
	}
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	EVP_DigestUpdate(ctx, a, strlen(a) + 1);
	EVP_DigestUpdate(ctx, b, strlen(b));
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	int n = snprintf(out, outsz, "%s:sha256:", what);

	for (unsigned i = 0; i < mdlen && (size_t)n + 3 < outsz; i++)
		n += snprintf(out + n, outsz - (size_t)n, "%02x", md[i]);
}

int
deliver_memo_check(struct deliver_memo *mm, const char *agent,
    const char *sender, bool take, uint64_t period_ms)
{
	char key[STORE_KEY_MAX + 1];
	struct memo_wait *w = xcalloc(1, sizeof(*w));
	int rc = -1;
	int64_t n = 0;

	memo_key("reply", agent, sender, key, sizeof(key));
	pthread_mutex_lock(&mm->mu);
	if (memo_store(mm) == NULL) {
		pthread_mutex_unlock(&mm->mu);
		free(w);
		return -1;
	}
	if (take)
		store_incr(mm->st, key, 1, period_ms, memo_int_cb, w);
	else
		store_get(mm->st, key, memo_str_cb, w);
	if (memo_wait(mm, w, &rc, &n) == -1 || rc == -1)
		rc = -1;
	else if (take)
		rc = n == 1 ? 1 : 0;	/* the first in the period */
	else
		rc = rc == 1 ? 0 : 1;	/* nothing yet: may answer */
	pthread_mutex_unlock(&mm->mu);
	return rc;
}

void
deliver_memo_forget(struct deliver_memo *mm, const char *agent,
    const char *sender)
{
	char key[STORE_KEY_MAX + 1];
	struct memo_wait *w = xcalloc(1, sizeof(*w));
	int rc;
	int64_t n;

	memo_key("reply", agent, sender, key, sizeof(key));
	pthread_mutex_lock(&mm->mu);
	if (memo_store(mm) != NULL) {
		store_del(mm->st, key, memo_int_cb, w);
		(void)memo_wait(mm, w, &rc, &n);
	} else {
		free(w);
	}
	pthread_mutex_unlock(&mm->mu);
}
