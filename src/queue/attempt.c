/*
 * queue/attempt.c: one delivery attempt of one recipient and its outcome,
 * recorded in the spool before anything else: done, deferred with the
 * next attempt (backoff and jitter, up to the lifetime), or failed for
 * good.  One the spool refuses is never a reason to try again at once: a
 * delivery stays done in memory, a failure waits retry-min.  The bounce
 * itself is bounce.c's.
 */
#include "queue/queue_private.h"

#include <stdlib.h>
#include <string.h>

#include "deliver/deliver.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "route/route.h"
#include "spool/spool.h"
#include "util/util.h"

/* Random bits for a retry's jitter: every attempt takes some, most never
 * use them, so they come from the thread's supply. */
static uint32_t
queue_random(void)
{
	uint32_t r;

	return util_random32(&r) ? r : (uint32_t)util_wall_us();
}

/* The next attempt's earliest time, as the delivery just asked for it. */
static __thread uint64_t queue_hint_ms;

void
queue_retry_after(uint64_t ms)
{
	queue_hint_ms = ms;
}

/* The kind the delivery just went through, when not the spool's. */
static __thread const char *queue_kind_now;

void
queue_delivered_as(const char *kind)
{
	queue_kind_now = kind;
}

/* The kind to log and count recipient r's attempt under. */
static const char *
queue_rcpt_kind(const struct spool_rcpt *r)
{
	return queue_kind_now != NULL ? queue_kind_now : r->action;
}

/*
 * When an attempt ended and the jitter of its retry: the same for the
 * recipients tried together (queue_attempt_copies, or queue_attempt's of
 * a kind that takes them together), so they are due together again and
 * their copies still share one file, one copy or one transaction.
 */
struct queue_when {
	uint64_t	now;
	uint32_t	rnd;
};

/* The attempt's recipients the delivery recorded as done itself
 * (queue_settle): queue_settled[0..queue_nsettled), room for all. */
static __thread size_t *queue_settled;
static __thread size_t queue_nsettled;
/* The message of this thread's run went with its last delivery. */
static __thread bool queue_gone;

void
queue_gone_reset(void)
{
	queue_gone = false;
}

/* The content of this thread's run, when held in memory (queue_run). */
static __thread const char *queue_mem;
static __thread size_t queue_mem_len;

void
queue_content_use(const char *mem, size_t len)
{
	queue_mem = mem;
	queue_mem_len = len;
}

void
queue_msg_content(struct deliver_msg *m, const char *content_path)
{
	m->content_path = content_path;
	if (queue_mem != NULL) {
		m->content_path = NULL;
		m->content = queue_mem;
		m->content_len = queue_mem_len;
	}
}

bool
queue_msg_is_gone(void)
{
	return queue_gone;
}

int
queue_finish(struct queue *q, const struct spool_env *env,
    const char **err_out)
{
	const char *err = NULL;

	if (spool_keeps(q->sp) && spool_keep_msg(q->sp, env->qid, &err) == -1)
		log_event(LOG_LVL_WARN, "keep-error", env->sid, env->qid,
		    "why=\"%s\"", err);
	return spool_remove(q->sp, env->qid, err_out);
}

/* Is i one of idx[0..n)? */
static bool
queue_idx_has(const size_t *idx, size_t n, size_t i)
{
	for (size_t g = 0; g < n; g++)
		if (idx[g] == i)
			return true;
	return false;
}

/* Is nothing of env kept for anything but a[0..na) and b[0..nb)? */
static bool
queue_only_these_left(const struct spool_env *env, const size_t *a,
    size_t na, const size_t *b, size_t nb)
{
	for (size_t j = 0; j < env->nrcpts; j++) {
		const struct spool_rcpt *r = &env->rcpts[j];
		if ((!r->done || (r->failed && !r->bounced)) &&
		    !queue_idx_has(a, na, j) && !queue_idx_has(b, nb, j))
			return false;
	}
	return true;
}

/* The message of env removed: the record of all that was left. */
static int
queue_finish_run(struct queue *q, const struct spool_env *env,
    const char **err_out)
{
	if (queue_finish(q, env, err_out) == -1)
		return -1;
	queue_gone = true;
	return 0;
}

/*
 * Record recipient i of env as delivered, durably; before[0..nbefore)
 * were just recorded so, which env does not say yet.  When nothing else
 * keeps the message (every other recipient done, every failure reported)
 * the record is the message's removal, with no done-record written for
 * it: the envelope's unlink, which is all a restart looks for, made
 * durable within 50 ms by one fsync shared with the other removals of
 * that interval, where a done-record and then the removal cost two or
 * three journal commits.  A crash before that fsync delivers the
 * recipient again, as a crash before its done-record would.
 */
static int
queue_record_done(struct queue *q, const struct spool_env *env, size_t i,
    const size_t *before, size_t nbefore, const char **err_out)
{
	if (!queue_only_these_left(env, &i, 1, before, nbefore))
		return spool_mark_done(q->sp, env->qid, i, err_out);
	return queue_finish_run(q, env, err_out);
}

int
queue_settle(struct queue *q, const struct spool_env *env, const size_t *idx,
    size_t n, const char **err_out)
{
	/* All that was left at once (a transaction's recipients): one
	   removal, no done-record for any of them. */
	if (n > 1 && queue_only_these_left(env, idx, n, queue_settled,
	    queue_nsettled)) {
		if (queue_finish_run(q, env, err_out) == -1)
			return -1;
		for (size_t g = 0; g < n; g++)
			if (!queue_idx_has(queue_settled, queue_nsettled, idx[g]))
				queue_settled[queue_nsettled++] = idx[g];
		return 0;
	}
	for (size_t g = 0; g < n; g++) {
		if (queue_idx_has(queue_settled, queue_nsettled, idx[g]))
			continue;
		if (queue_record_done(q, env, idx[g], queue_settled,
		    queue_nsettled, err_out) == -1)
			return -1;
		queue_settled[queue_nsettled++] = idx[g];
	}
	return 0;
}

void
queue_record_again(struct queue *q, struct spool_env *env, const size_t *idx,
    size_t n)
{
	const char *err = NULL;

	for (size_t k = 0; k < n; k++) {
		struct spool_rcpt *r = idx[k] < env->nrcpts ?
		    &env->rcpts[idx[k]] : NULL;
		if (r == NULL || r->done)	/* recorded after all */
			continue;
		r->done = true;
		r->unrecorded = queue_record_done(q, env, idx[k], NULL, 0,
		    &err) == -1;
	}
}

/*
 * An outcome that could not be recorded leaves its recipient pending: its
 * next attempt waits retry-min, as a deferral's first would, never due at
 * once (the spool full, each attempt would fail to record it again).
 */
static void
queue_unrecorded_later(struct queue *q, struct spool_rcpt *r,
    const struct queue_when *w)
{
	struct queue_opts o;

	queue_opts_now(q, &o);
	r->next_ms = w->now + o.retry_min_ms;
}

/* ---- one delivery ------------------------------------------------------ */

void
queue_deliver_default(void *arg, const struct spool_env *env,
    const size_t *idx, size_t n, const char *content_path,
    const char *hostname, struct deliver_rcpt_status *st_out)
{
	const struct spool_rcpt *r = &env->rcpts[idx[0]];
	const struct deliver_kind *k = deliver_kind_find(r->action);
	const char *addr = r->addr;
	struct deliver_msg m = {
		.return_path = env->sender,
		.smtputf8 = env->smtputf8,
		.smtputf8_needed = env->smtputf8_needed,
		.qid = env->qid, .rcpt_idx = idx[0],
		.received = env->received, .hostname = hostname,
	};
	const char *why = NULL;

	(void)arg;
	queue_msg_content(&m, content_path);
	/* Several only of a kind that takes them at once: none runs without
	 * a runtime. */
	ASSERT(n == 1);
	/* An alias member no rule took: the text of its bounce is kept. */
	if (strcmp(r->action, ROUTE_KIND_UNROUTABLE) == 0) {
		deliver_status_all(st_out, 1, DELIVER_PERMFAIL, r->arg != NULL ?
		    r->arg : "5.1.1 no rule for this alias member");
		return;
	}
	/* An action this build does not know is permanent: it bounces. */
	if (k == NULL) {
		deliver_status_all(st_out, 1, DELIVER_PERMFAIL,
		    "5.3.5 unknown action in the queue");
		return;
	}
	/*
	 * Kinds with a runtime need the server's deliver function (the
	 * configuration in force): without it they wait, never bounce for
	 * our omission.
	 */
	if (k->open != NULL) {
		deliver_status_all(st_out, 1, DELIVER_TEMPFAIL,
		    "4.3.5 remote delivery is not wired into the queue");
		return;
	}
	if (k->deliver(NULL, r->arg, &m, &addr, 1, st_out, &why) !=
	    DELIVER_OK && st_out->text[0] == '\0')
		util_strlcpy(st_out->text, why != NULL ? why :
		    "4.4.0 delivery failed", sizeof(st_out->text));
}

static void
queue_log_rcpt(enum log_level lvl, const char *event,
    const struct spool_env *env, size_t i, const char *why)
{
	const struct spool_rcpt *r = &env->rcpts[i];
	char addr[256], to[256], action[64], whybuf[512];

	log_safe_word_into(addr, sizeof(addr), r->addr, strlen(r->addr));
	log_safe_into(action, sizeof(action), queue_rcpt_kind(r),
	    strlen(queue_rcpt_kind(r)));
	log_safe_word_into(to, sizeof(to), r->arg != NULL ? r->arg : "-",
	    r->arg != NULL ? strlen(r->arg) : 1);
	if (why == NULL) {
		log_event(lvl, event, env->sid, env->qid,
		    "rcpt=<%s> action=%s to=%s", addr, action, to);
		return;
	}
	log_safe_into(whybuf, sizeof(whybuf), why, strlen(why));
	log_event(lvl, event, env->sid, env->qid,
	    "rcpt=<%s> action=%s to=%s why=\"%s\"", addr, action, to, whybuf);
}

/*
 * A temporary failure of recipient i at now: deferred with the next time,
 * or failed for good when the message has outlived its lifetime.
 */
static void
queue_tempfail(struct queue *q, struct spool_env *env, size_t i,
    const struct queue_when *w, const char *why)
{
	uint64_t now = w->now;
	struct spool_rcpt *r = &env->rcpts[i];
	uint64_t received_ms = (uint64_t)env->received * 1000;
	const char *err = NULL;
	struct queue_opts o;

	queue_opts_now(q, &o);
	if (queue_expired(&o, now, received_ms)) {
		char *text = xasprintf("delivery time expired after %u "
		    "attempt%s; last error: %s", r->attempts + 1,
		    r->attempts == 0 ? "" : "s", why);
		queue_log_rcpt(LOG_LVL_WARN, "expired", env, i, why);
		/* RFC 3463 4.4.7: delivery time expired. */
		if (spool_mark_failed(q->sp, env->qid, i, "4.4.7", text,
		    &err) == -1) {
			log_event(LOG_LVL_ERROR, "queue", env->sid, env->qid,
			    "cannot record expiry why=\"%s\"", err);
			queue_unrecorded_later(q, r, w);
		} else {
			r->done = r->failed = true;
			util_strlcpy(r->status, "4.4.7", sizeof(r->status));
			free(r->last_err);
			r->last_err = xstrdup(text);
		}
		free(text);
		return;
	}
	r->attempts++;
	r->next_ms = queue_next_attempt_ms(&o, r->attempts, now,
	    received_ms, w->rnd);
	/* Later when the far side said so (Retry-After), within the life. */
	if (queue_hint_ms > 0 && now + queue_hint_ms > r->next_ms)
		r->next_ms = received_ms + o.lifetime_ms < now +
		    queue_hint_ms ? received_ms + o.lifetime_ms :
		    now + queue_hint_ms;
	free(r->last_err);
	r->last_err = xstrdup(why);
	queue_log_rcpt(LOG_LVL_INFO, "deferred", env, i, why);
	if (spool_mark_deferred(q->sp, env->qid, i, r->attempts, r->next_ms,
	    why, &err) == -1)
		log_event(LOG_LVL_ERROR, "queue", env->sid, env->qid,
		    "cannot record deferral why=\"%s\"", err);
}

static void
queue_permfail(struct queue *q, struct spool_env *env, size_t i,
    const struct queue_when *w, const char *why)
{
	struct spool_rcpt *r = &env->rcpts[i];
	const char *err = NULL;
	char status[16];

	queue_dsn_status(why, false, status);
	queue_log_rcpt(LOG_LVL_WARN, "failed", env, i, why);
	if (spool_mark_failed(q->sp, env->qid, i, status, why, &err) == -1) {
		/* Tried again later: a permanent failure stays one. */
		log_event(LOG_LVL_ERROR, "queue", env->sid, env->qid,
		    "cannot record failure why=\"%s\"", err);
		queue_unrecorded_later(q, r, w);
		return;
	}
	r->done = r->failed = true;
	util_strlcpy(r->status, status, sizeof(r->status));
	free(r->last_err);
	r->last_err = xstrdup(why);
}

/* The outcome of one attempt, for metrics: what the record now says. */
static void
queue_count(const struct spool_rcpt *r)
{
	metrics_inc(MET_DELIVERIES, metrics_action(queue_rcpt_kind(r)),
	    r->failed ? MET_R_FAILED : r->done ? MET_R_DELIVERED :
	    MET_R_DEFERRED);
}

/*
 * Record what one attempt of recipient i did: r, and why when not OK;
 * settled: the delivery recorded it as done already.
 */
static void
queue_record(struct queue *q, struct spool_env *env, size_t i,
    const struct queue_when *w, enum deliver_result r, const char *why,
    bool settled)
{
	const char *err = NULL;

	switch (r) {
	case DELIVER_OK:
		queue_log_rcpt(LOG_LVL_INFO, "delivered", env, i, NULL);
		/* Durably done before anything else: never again. */
		if (!settled &&
		    queue_record_done(q, env, i, NULL, 0, &err) == -1) {
			/*
			 * Not sent again all the same (a relay's copy would
			 * be a duplicate): done while this process runs,
			 * which writes the record again at the message's
			 * next run (queue.c); a restart before it delivers
			 * it again, as a crash before its record would.
			 */
			log_event(LOG_LVL_ERROR, "queue", env->sid, env->qid,
			    "cannot record delivery why=\"%s\"", err);
			env->rcpts[i].unrecorded = true;
		}
		env->rcpts[i].done = true;
		break;
	case DELIVER_TEMPFAIL:
		queue_tempfail(q, env, i, w, why);
		break;
	case DELIVER_PERMFAIL:
		queue_permfail(q, env, i, w, why);
		break;
	}
	queue_count(&env->rcpts[i]);
}

/* Try recipients idx[0..n) once, together (their one slot is held). */
void
queue_attempt(struct queue *q, struct spool_env *env, const size_t *idx,
    size_t n, const char *content_path)
{
	queue_deliver_fn fn = q->o.deliver != NULL ? q->o.deliver :
	    queue_deliver_default;
	struct deliver_rcpt_status *st = xcalloc(n, sizeof(*st));
	struct queue_opts o;

	queue_opts_now(q, &o);
	queue_hint_ms = 0;
	queue_settled = xcalloc(n, sizeof(*queue_settled));
	queue_nsettled = 0;
	queue_kind_now = NULL;
	fn(o.deliver_arg, env, idx, n, content_path, o.hostname, st);
	struct queue_when w = { queue_wall_ms(), queue_random() };
	for (size_t g = 0; g < n; g++)
		queue_record(q, env, idx[g], &w, st[g].result,
		    st[g].text[0] != '\0' ? st[g].text :
		    "4.4.0 delivery failed",
		    queue_idx_has(queue_settled, queue_nsettled, idx[g]));
	free(queue_settled);
	queue_settled = NULL;
	queue_nsettled = 0;
	queue_kind_now = NULL;
	free(st);
}

void
queue_attempt_copies(struct queue *q, struct spool_env *env,
    const struct deliver_kind *k, const size_t *idx, size_t n,
    const char *content_path)
{
	struct queue_opts o;
	queue_opts_now(q, &o);
	struct deliver_msg m = {
		.return_path = env->sender,
		.smtputf8 = env->smtputf8,
		.smtputf8_needed = env->smtputf8_needed, .qid = env->qid,
		.received = env->received, .hostname = o.hostname,
	};
	const char **args = xcalloc(n, sizeof(*args));
	struct deliver_rcpt_status *st = xcalloc(n, sizeof(*st));

	queue_msg_content(&m, content_path);
	for (size_t g = 0; g < n; g++)
		args[g] = env->rcpts[idx[g]].arg;
	k->deliver_copies(args, idx, n, &m, st);
	queue_hint_ms = 0;
	struct queue_when w = { queue_wall_ms(), queue_random() };
	for (size_t g = 0; g < n; g++)
		queue_record(q, env, idx[g], &w, st[g].result, st[g].text,
		    false);
	free(st);
	free(args);
}
