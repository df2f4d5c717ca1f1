/*
 * table/async.c: lookups for event loops.  A lookup that needs a backend
 * is queued to the table's own threads (as many as its pool has
 * connections), which run the blocking lookup and post the answer to the
 * asking loop's table_loop; a timer on that loop answers TABLE_ERROR if
 * the backend is slower than the table's timeout.  A request nobody waits
 * for any more (answered by its timer, cancelled) is dropped unasked when
 * a worker reaches it.  A request is freed only on its loop, or by the
 * worker once its loop has gone away, so no thread touches a freed event.
 * A failure is counted once, where the asker hears of it.
 */
#include "table/table.h"

#include <event2/event.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "metrics/metrics.h"
#include "table/table_private.h"
#include "util/util.h"

struct table_loop {
	struct event_base	*base;		/* borrowed */
	struct event		*ev;		/* owned: answers arrived */
	pthread_mutex_t		 mu;		/* guards done and dead */
	struct table_req	*done;		/* answered by workers */
	bool			 dead;		/* the loop let go */
	atomic_int		 refs;		/* the loop + each request */
	struct table_req	*pending;	/* loop thread: not answered */
};

struct table_req {
	struct table_loop	*tl;		/* ref */
	struct table		*t;		/* borrowed while cb != NULL */
	char			*key;		/* owned */
	struct table_values	 vals;
	int			 rc;
	table_done_cb		*cb;		/* NULL once answered or cancelled */
	atomic_bool		 unwanted;	/* cb went NULL: for the
						   workers */
	void			*arg;
	struct event		*timer;		/* owned by the loop; NULL after */
	struct table_req	*next;		/* table queue, then done list */
	struct table_req	*pnext, *pprev;	/* tl->pending (loop thread) */
};

static void
table_loop_unref(struct table_loop *tl)
{
	if (atomic_fetch_sub(&tl->refs, 1) == 1) {
		pthread_mutex_destroy(&tl->mu);
		free(tl);
	}
}

static void
table_req_free(struct table_req *req)
{
	struct table_loop *tl = req->tl;

	table_values_clear(&req->vals);
	free(req->key);
	free(req);
	table_loop_unref(tl);
}

/* Nobody waits for req's answer any more (loop thread). */
static void
table_req_unwanted(struct table_req *req)
{
	req->cb = NULL;
	atomic_store(&req->unwanted, true);
}

static void
table_req_unlink(struct table_req *req)
{
	struct table_loop *tl = req->tl;

	if (req->pprev != NULL)
		req->pprev->pnext = req->pnext;
	else if (tl->pending == req)
		tl->pending = req->pnext;
	if (req->pnext != NULL)
		req->pnext->pprev = req->pprev;
	req->pnext = req->pprev = NULL;
	if (req->timer != NULL) {
		event_free(req->timer);
		req->timer = NULL;
	}
}

/* On the loop: answers from the workers. */
static void
table_loop_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct table_loop *tl = arg;
	struct table_req *list, *req;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&tl->mu);
	list = tl->done;
	tl->done = NULL;
	pthread_mutex_unlock(&tl->mu);
	while ((req = list) != NULL) {
		list = req->next;
		table_req_unlink(req);
		if (req->cb != NULL) {
			table_done_cb *cb = req->cb;
			table_req_unwanted(req);
			if (req->rc == TABLE_ERROR)
				metrics_inc(MET_TABLE_ERRORS, 0, 0);
			cb(req->arg, req->rc, req->rc == TABLE_FOUND ?
			    &req->vals : NULL);
		}
		table_req_free(req);
	}
}

/* On the loop: the backend is too slow; the worker's answer comes later. */
static void
table_req_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct table_req *req = arg;
	table_done_cb *cb = req->cb;

	(void)fd;
	(void)what;
	if (cb == NULL)
		return;
	table_req_unwanted(req);
	table_note_timeout(req->t);
	cb(req->arg, TABLE_ERROR, NULL);
}

struct table_loop *
table_loop_new(struct event_base *base)
{
	struct table_loop *tl = xcalloc(1, sizeof(*tl));

	tl->base = base;
	atomic_init(&tl->refs, 1);
	if (pthread_mutex_init(&tl->mu, NULL) != 0)
		fatal("pthread_mutex_init failed");
	tl->ev = event_new(base, -1, 0, table_loop_done_cb, tl);
	if (tl->ev == NULL)
		fatal("event_new failed");
	return tl;
}

void
table_loop_free(struct table_loop **tlp)
{
	struct table_loop *tl = *tlp;
	struct table_req *list, *req;

	if (tl == NULL)
		return;
	*tlp = NULL;
	pthread_mutex_lock(&tl->mu);
	tl->dead = true;
	list = tl->done;
	tl->done = NULL;
	pthread_mutex_unlock(&tl->mu);
	while ((req = list) != NULL) {
		list = req->next;
		table_req_unlink(req);
		table_req_free(req);
	}
	/* The rest are with the workers, who free them now. */
	while ((req = tl->pending) != NULL) {
		table_req_unwanted(req);
		table_req_unlink(req);
	}
	event_free(tl->ev);
	tl->ev = NULL;
	table_loop_unref(tl);
}

int
table_lookup_start(struct table *t, struct table_loop *tl, const char *key,
    table_done_cb *cb, void *arg, struct table_values *out,
    struct table_req **req_out)
{
	struct table_req *req;
	struct timeval tv;
	int rc;

	*req_out = NULL;
	if ((rc = table_try_now(t, key, out)) != TABLE_PENDING)
		return rc;
	req = xcalloc(1, sizeof(*req));
	atomic_fetch_add(&tl->refs, 1);
	req->tl = tl;
	req->t = t;
	req->key = xstrdup(key);
	req->cb = cb;
	atomic_init(&req->unwanted, false);
	req->arg = arg;
	req->timer = evtimer_new(tl->base, table_req_timeout_cb, req);
	tv.tv_sec = (time_t)(t->timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(t->timeout_ms % 1000) * 1000;
	evtimer_add(req->timer, &tv);
	req->pnext = tl->pending;
	if (tl->pending != NULL)
		tl->pending->pprev = req;
	tl->pending = req;
	pthread_mutex_lock(&t->mu);
	*t->jobs_tail = req;
	t->jobs_tail = &req->next;
	table_workers_start(t);
	/* Connection waiters share the condition: wake everyone. */
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	*req_out = req;
	return TABLE_PENDING;
}

void
table_lookup_cancel(struct table_req **reqp)
{
	if (*reqp != NULL)
		table_req_unwanted(*reqp);	/* the answer frees it */
	*reqp = NULL;
}

void
table_req_finish(struct table_req *req, int rc)
{
	struct table_loop *tl = req->tl;

	req->rc = rc;
	req->next = NULL;
	pthread_mutex_lock(&tl->mu);
	if (tl->dead) {
		pthread_mutex_unlock(&tl->mu);
		table_req_free(req);
		return;
	}
	req->next = tl->done;
	tl->done = req;
	event_active(tl->ev, EV_TIMEOUT, 1);
	pthread_mutex_unlock(&tl->mu);
}

const char *
table_req_key(const struct table_req *req)
{
	return req->key;
}

struct table_values *
table_req_values(struct table_req *req)
{
	return &req->vals;
}

struct table_req *
table_req_next(struct table_req *req)
{
	return req->next;
}

void
table_req_set_next(struct table_req *req, struct table_req *next)
{
	req->next = next;
}

/* A lookup worker: queued jobs until the table stops. */
static void *
table_worker_main(void *arg)
{
	struct table *t = arg;
	struct table_req *req;

	pthread_mutex_lock(&t->mu);
	for (;;) {
		while (t->jobs == NULL && !t->stopping)
			pthread_cond_wait(&t->cv, &t->mu);
		if (t->stopping)
			break;
		req = t->jobs;
		if ((t->jobs = req->next) == NULL)
			t->jobs_tail = &t->jobs;
		pthread_mutex_unlock(&t->mu);
		/* Its asker had its answer: the backend is not asked. */
		table_req_finish(req, atomic_load(&req->unwanted) ?
		    TABLE_ERROR : table_get_uncounted(t, req->key,
		    &req->vals));
		pthread_mutex_lock(&t->mu);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

void
table_workers_start(struct table *t)
{
	if (t->nthreads > 0)
		return;
	t->threads = xcalloc(t->pool, sizeof(*t->threads));
	for (unsigned i = 0; i < t->pool; i++) {
		if (pthread_create(&t->threads[t->nthreads], NULL,
		    table_worker_main, t) != 0) {
			log_msg(LOG_LVL_ERROR, "table=%s: pthread_create "
			    "failed", t->name);
			break;
		}
		t->nthreads++;
	}
	if (t->nthreads == 0)
		fatal("table %s: cannot start a lookup thread", t->name);
}
