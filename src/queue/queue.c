/*
 * queue/queue.c: the delivery scheduler.  Worker threads take due jobs (one
 * per message, never two workers on one qid), deliver each pending
 * recipient through deliver/, record it done in the spool, and remove the
 * message when every recipient is done.  Temporary failures come back
 * later with exponential backoff; the spool keeps the message, so a
 * restart retries it too.  Knows nothing of each action's wire format.
 */
#include "queue/queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "deliver/deliver.h"
#include "log/log.h"
#include "spool/spool.h"
#include "util/util.h"

#define QUEUE_RETRY_FIRST_MS	(30 * 1000)
#define QUEUE_RETRY_MAX_MS	(60 * 60 * 1000)

struct queue_job {
	char			 qid[SPOOL_QID_MAX];
	uint64_t		 due_ms;	/* monotonic clock */
	unsigned		 attempts;	/* that ended in a deferral */
	bool			 running;	/* a worker owns it now */
	struct queue_job	*next;
};

struct queue {
	struct spool		*sp;		/* borrowed */
	char			*hostname;	/* owned */
	pthread_mutex_t		 mu;		/* guards everything below */
	pthread_cond_t		 work_cv;	/* a job may be due */
	pthread_cond_t		 idle_cv;	/* a job finished */
	/*
	 * XXX: a list scanned on submit and pick; fine for thousands of
	 * queued messages, a heap plus a hash once queues get large.
	 */
	struct queue_job	*jobs;		/* owned */
	unsigned		 nrunning;
	bool			 stopping;
	pthread_t		*threads;	/* owned */
	unsigned		 nthreads;
};

enum queue_outcome {
	QUEUE_FINISHED,		/* every recipient done, spool entry gone */
	QUEUE_RETRY,		/* some recipient deferred */
	QUEUE_DROP,		/* cannot go on; left in the spool for a restart */
};

/* The delay before retry number `attempts` (1, 2, ...), with 0..1/8 jitter. */
static uint64_t
queue_backoff_ms(unsigned attempts)
{
	uint64_t d = QUEUE_RETRY_FIRST_MS;
	uint32_t rnd = 0;

	for (unsigned i = 1; i < attempts && d < QUEUE_RETRY_MAX_MS; i++)
		d *= 2;
	if (d > QUEUE_RETRY_MAX_MS)
		d = QUEUE_RETRY_MAX_MS;
	/* Jitter spreads retries of a burst that failed together. */
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint32_t)util_wall_us();
	return d + rnd % (d / 8 + 1);
}

/* Deliver recipient i; the reason for a failure in *why_out. */
static enum deliver_result
queue_deliver_one(struct queue *q, const struct spool_env *env, size_t i,
    const char *content_path, const char **why_out)
{
	const struct spool_rcpt *r = &env->rcpts[i];
	struct deliver_msg m = {
		.content_path = content_path, .return_path = env->sender,
		.qid = env->qid, .rcpt_idx = i, .received = env->received,
		.hostname = q->hostname,
	};

	if (strcmp(r->action, "maildir") == 0)
		return deliver_maildir(r->arg, &m, why_out);
	if (strcmp(r->action, "discard") == 0)
		return DELIVER_OK;
	/*
	 * XXX: an action this build cannot perform is permanent; issue 5
	 * adds bounces (DSN), until then the recipient is only logged.
	 */
	*why_out = "unknown action";
	return DELIVER_PERMFAIL;
}

static void
queue_log_rcpt(enum log_level lvl, const char *event,
    const struct spool_env *env, size_t i, const char *why)
{
	const struct spool_rcpt *r = &env->rcpts[i];
	char addr[256], to[256], action[64], whybuf[512];

	log_safe_into(addr, sizeof(addr), r->addr, strlen(r->addr));
	log_safe_into(action, sizeof(action), r->action, strlen(r->action));
	log_safe_into(to, sizeof(to), r->arg != NULL ? r->arg : "-",
	    r->arg != NULL ? strlen(r->arg) : 1);
	if (why == NULL) {
		log_event(lvl, event, env->sid, env->qid,
		    "rcpt=<%s> action=%s to=%s", addr, action, to);
		return;
	}
	log_safe_into(whybuf, sizeof(whybuf), why, strlen(why));
	log_event(lvl, event, env->sid, env->qid,
	    "rcpt=<%s> action=%s to=%s why=%s", addr, action, to, whybuf);
}

/* One pass over a message's pending recipients (no lock held). */
static enum queue_outcome
queue_run(struct queue *q, const char *qid)
{
	struct spool_env env;
	const char *err = NULL;
	char *content_path;
	bool pending = false;

	if (spool_env_load(q->sp, qid, &env, &err) == -1) {
		if (errno == ENOENT) {	/* submitted again after delivery */
			log_event(LOG_LVL_DEBUG, "queue", NULL, qid,
			    "not in the spool (any more)");
			return QUEUE_DROP;
		}
		log_event(LOG_LVL_ERROR, "queue", NULL, qid,
		    "envelope unreadable, left in the spool why=%s", err);
		return QUEUE_DROP;
	}
	content_path = spool_content_path(q->sp, qid);
	for (size_t i = 0; i < env.nrcpts; i++) {
		const char *why = "(none)";

		if (env.rcpts[i].done)
			continue;
		switch (queue_deliver_one(q, &env, i, content_path, &why)) {
		case DELIVER_OK:
			queue_log_rcpt(LOG_LVL_INFO, "delivered", &env, i,
			    NULL);
			break;
		case DELIVER_TEMPFAIL:
			queue_log_rcpt(LOG_LVL_INFO, "deferred", &env, i, why);
			pending = true;
			continue;
		case DELIVER_PERMFAIL:
			/* XXX: bounce here (issue 5). */
			queue_log_rcpt(LOG_LVL_ERROR, "failed", &env, i, why);
			break;
		}
		/* Delivered or given up: never again, even after a crash. */
		if (spool_mark_done(q->sp, qid, i, &err) == -1) {
			/* A retry is safe: deliveries are idempotent. */
			log_event(LOG_LVL_ERROR, "queue", env.sid, qid,
			    "cannot record delivery why=%s", err);
			pending = true;
		}
	}
	free(content_path);
	if (!pending && spool_remove(q->sp, qid, &err) == -1) {
		log_event(LOG_LVL_ERROR, "queue", env.sid, qid,
		    "cannot remove from the spool why=%s", err);
		spool_env_clear(&env);
		return QUEUE_DROP;
	}
	spool_env_clear(&env);
	return pending ? QUEUE_RETRY : QUEUE_FINISHED;
}

/*
 * The due job with the earliest due time, or NULL; *next_due_out is the
 * earliest due time of the waiting jobs (UINT64_MAX if none).  Locked.
 */
static struct queue_job *
queue_pick(struct queue *q, uint64_t now, uint64_t *next_due_out)
{
	struct queue_job *best = NULL;

	*next_due_out = UINT64_MAX;
	for (struct queue_job *j = q->jobs; j != NULL; j = j->next) {
		if (j->running)
			continue;
		if (j->due_ms < *next_due_out)
			*next_due_out = j->due_ms;
		if (j->due_ms <= now && (best == NULL ||
		    j->due_ms < best->due_ms))
			best = j;
	}
	return best;
}

static void
queue_unlink(struct queue *q, struct queue_job *job)
{
	for (struct queue_job **jp = &q->jobs; *jp != NULL;
	    jp = &(*jp)->next)
		if (*jp == job) {
			*jp = job->next;
			free(job);
			return;
		}
	ASSERT(!"job not in the list");
}

static void
queue_wait_until(struct queue *q, uint64_t due_ms, uint64_t now)
{
	struct timespec ts;
	uint64_t wait_ms = due_ms - now;

	if (due_ms == UINT64_MAX) {
		pthread_cond_wait(&q->work_cv, &q->mu);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(wait_ms / 1000);
	ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&q->work_cv, &q->mu, &ts);
}

static void *
queue_worker(void *arg)
{
	struct queue *q = arg;
	struct queue_job *job;
	uint64_t now, next_due;

	pthread_mutex_lock(&q->mu);
	while (!q->stopping) {
		now = util_now_ms();
		if ((job = queue_pick(q, now, &next_due)) == NULL) {
			queue_wait_until(q, next_due, now);
			continue;
		}
		job->running = true;
		q->nrunning++;
		pthread_mutex_unlock(&q->mu);
		/* job stays ours: submit skips running jobs, free joins us. */
		enum queue_outcome out = queue_run(q, job->qid);
		pthread_mutex_lock(&q->mu);
		q->nrunning--;
		if (out == QUEUE_RETRY) {
			job->attempts++;
			job->due_ms = util_now_ms() +
			    queue_backoff_ms(job->attempts);
			job->running = false;
			/* Sleeping workers recompute their deadline. */
			pthread_cond_broadcast(&q->work_cv);
		} else
			queue_unlink(q, job);
		pthread_cond_broadcast(&q->idle_cv);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

struct queue *
queue_new(struct spool *sp, const char *hostname, unsigned nthreads)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	pthread_condattr_t ca;

	if (nthreads == 0)
		nthreads = 1;
	q->sp = sp;
	q->hostname = xstrdup(hostname != NULL ? hostname : "localhost");
	pthread_mutex_init(&q->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->work_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&q->idle_cv, NULL);
	q->threads = xcalloc(nthreads, sizeof(*q->threads));
	for (unsigned i = 0; i < nthreads; i++) {
		int rc = pthread_create(&q->threads[i], NULL, queue_worker, q);
		if (rc != 0)
			fatal("queue: pthread_create: %s", strerror(rc));
		q->nthreads++;
	}
	return q;
}

void
queue_submit(struct queue *q, const char *qid)
{
	struct queue_job *j, **tail;

	pthread_mutex_lock(&q->mu);
	for (tail = &q->jobs; (j = *tail) != NULL; tail = &j->next)
		if (strcmp(j->qid, qid) == 0)
			break;
	if (j == NULL) {
		j = xcalloc(1, sizeof(*j));
		util_strlcpy(j->qid, qid, sizeof(j->qid));
		*tail = j;	/* appended: submission order among equals */
	}
	/*
	 * Already known: a running job will see every pending recipient; a
	 * deferred one is simply made due now (a "flush").
	 */
	if (!j->running)
		j->due_ms = util_now_ms();
	pthread_cond_signal(&q->work_cv);
	pthread_mutex_unlock(&q->mu);
}

void
queue_recover(struct queue *q)
{
	const char *err = NULL;
	char **qids;
	size_t n;

	if (spool_list(q->sp, &qids, &n, &err) == -1) {
		log_msg(LOG_LVL_ERROR, "queue: recovery: %s", err);
		return;
	}
	if (n > 0)
		log_msg(LOG_LVL_INFO, "queue: recovered %zu message%s", n,
		    n == 1 ? "" : "s");
	for (size_t i = 0; i < n; i++) {
		queue_submit(q, qids[i]);
		free(qids[i]);
	}
	free(qids);
}

void
queue_drain(struct queue *q)
{
	uint64_t next_due;

	pthread_mutex_lock(&q->mu);
	while (!q->stopping && (q->nrunning > 0 ||
	    queue_pick(q, util_now_ms(), &next_due) != NULL))
		pthread_cond_wait(&q->idle_cv, &q->mu);
	pthread_mutex_unlock(&q->mu);
}

void
queue_free(struct queue **qp)
{
	struct queue *q = *qp;

	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	q->stopping = true;
	pthread_cond_broadcast(&q->work_cv);
	pthread_cond_broadcast(&q->idle_cv);
	pthread_mutex_unlock(&q->mu);
	for (unsigned i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	while (q->jobs != NULL) {
		struct queue_job *j = q->jobs;
		q->jobs = j->next;
		free(j);
	}
	pthread_cond_destroy(&q->work_cv);
	pthread_cond_destroy(&q->idle_cv);
	pthread_mutex_destroy(&q->mu);
	free(q->threads);
	free(q->hostname);
	free(q);
	*qp = NULL;
}
