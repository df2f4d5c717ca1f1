/*
 * queue/queue.c: the delivery scheduler.  Worker threads take ready jobs
 * (one per message, never two workers on one qid), deliver each recipient
 * that is due (attempt.c records each outcome in the spool before moving
 * on), and have the failures reported (bounce.c).  So a restart resumes
 * the schedule, and nothing that got a 250 or was written is delivered
 * twice.  Deliveries are limited in total (the workers) and per
 * destination, so a slow destination holds at most dest_concurrency
 * workers.  A stop cuts short the deliveries that outlast its grace.
 * Knows nothing of each action's wire format, nor of connections.
 */
#include "queue/queue_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"
#include "spool/spool.h"
#include "util/util.h"

enum queue_outcome {
	QUEUE_FINISHED,		/* every recipient done, spool entry gone */
	QUEUE_RETRY,		/* some recipient pending: due at *due_out */
	QUEUE_HELD,		/* on hold (found so in the spool) */
	QUEUE_DAMAGED,		/* its files are damaged: left in the
				   spool, tried again at *due_out */
	QUEUE_DROP,		/* not in the spool (any more), or cannot
				   be removed: left for a restart */
};

uint64_t
queue_wall_ms(void)
{
	return util_wall_us() / 1000;
}

uint64_t
queue_backoff_ms(unsigned attempts, uint64_t min_ms, uint64_t max_ms,
    uint32_t rnd)
{
	uint64_t d = min_ms;

	for (unsigned i = 1; i < attempts && d < max_ms; i++)
		d *= 2;
	if (d > max_ms)
		d = max_ms;
	/* Jitter spreads the retries of a burst that failed together. */
	return d + rnd % (d / 8 + 1);
}

bool
queue_expired(const struct queue_opts *o, uint64_t now_ms,
    uint64_t received_ms)
{
	return now_ms >= received_ms && now_ms - received_ms >= o->lifetime_ms;
}

uint64_t
queue_next_attempt_ms(const struct queue_opts *o, unsigned attempts,
    uint64_t now_ms, uint64_t received_ms, uint32_t rnd)
{
	uint64_t next = now_ms + queue_backoff_ms(attempts, o->retry_min_ms,
	    o->retry_max_ms, rnd);
	uint64_t end = received_ms + o->lifetime_ms;

	/* One last try when the lifetime ends, not a backoff later. */
	if (next > end && end > now_ms)
		next = end;
	return next;
}

void
queue_opts_init(struct queue_opts *o, const struct config *cfg)
{
	memset(o, 0, sizeof(*o));
	o->hostname = cfg != NULL ? cfg->hostname : "localhost";
	o->concurrency = cfg != NULL ? cfg->queue.concurrency : 30;
	o->dest_concurrency = cfg != NULL ? cfg->queue.dest_concurrency : 20;
	o->retry_min_ms = cfg != NULL ? cfg->queue.retry_min_ms : 30 * 1000;
	o->retry_max_ms = cfg != NULL ? cfg->queue.retry_max_ms :
	    60 * 60 * 1000;
	o->lifetime_ms = cfg != NULL ? cfg->queue.lifetime_ms :
	    5 * 86400000ULL;
	o->delay_warning_ms = cfg != NULL ? cfg->queue.delay_warning_ms :
	    4 * 3600000ULL;
	o->pickup_ms = 60 * 1000;
	o->sweep_maildirs = true;
}

/* ---- destinations ------------------------------------------------------ */

/* "kind arg": what a destination limit counts (a folder, a relay host). */
static char *
queue_dest_name(const struct spool_rcpt *r)
{
	return xasprintf("%s %s", r->action, r->arg != NULL ? r->arg : "");
}

/* Take a slot of destination name; false when it is at its limit. */
static bool
queue_dest_acquire(struct queue *q, const char *name)
{
	bool ok;

	pthread_mutex_lock(&q->mu);
	ok = queue_jobs_acquire(&q->jobs, name);
	pthread_mutex_unlock(&q->mu);
	return ok;
}

/* Wake a worker for each of n jobs that became ready (locked or not). */
static void
queue_wake(struct queue *q, unsigned n)
{
	while (n-- > 0)
		pthread_cond_signal(&q->work_cv);
}

static void
queue_dest_release(struct queue *q, const char *name)
{
	unsigned n;

	pthread_mutex_lock(&q->mu);
	/*
	 * One slot is free: its first waiting job becomes ready, and one
	 * sleeping worker is enough to take it (waking them all makes each
	 * pick for nothing); none when no job waits for this destination
	 * (a wake-up per delivery for nothing).  A job blocked while this
	 * ran finds the slot free when its run ends and is ready at once.
	 */
	n = queue_jobs_release(&q->jobs, name);
	pthread_mutex_unlock(&q->mu);
	queue_wake(q, n);
}

/* ---- one pass over a message ------------------------------------------- */

static void
queue_add_blocked(char ***list, size_t *n, const char *dest)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*list)[i], dest) == 0)
			return;
	*list = xreallocarray(*list, *n + 1, sizeof(**list));
	(*list)[(*n)++] = xstrdup(dest);
}

/* One pass over a message's recipients: which are due, what was done. */
struct queue_pass {
	uint64_t	 now;
	bool		 force;		/* every pending one is due */
	bool		*skipped;	/* at its destination's limit */
	bool		*tried;		/* attempted in this pass */
	char		***blocked;	/* the destinations at their limit */
	size_t		*nblocked;
};

static bool
queue_is_due(const struct queue_pass *p, const struct spool_env *env,
    size_t i)
{
	const struct spool_rcpt *r = &env->rcpts[i];

	return !r->done && !p->tried[i] && (p->force || r->next_ms <= p->now);
}

/* Take recipient i's destination slot (*dest_out), or false: blocked. */
static bool
queue_take(struct queue *q, struct queue_pass *p,
    const struct spool_env *env, size_t i, char **dest_out)
{
	char *dest = queue_dest_name(&env->rcpts[i]);

	if (!queue_dest_acquire(q, dest)) {
		queue_add_blocked(p->blocked, p->nblocked, dest);
		p->skipped[i] = true;
		free(dest);
		return false;
	}
	*dest_out = dest;
	return true;
}

/* Recipients idx[0..n) of env: one attempt, in their one slot. */
static void
queue_run_one(struct queue *q, struct queue_pass *p, struct spool_env *env,
    const size_t *idx, size_t n, const char *content_path)
{
	char *dest;

	for (size_t g = 0; g < n; g++)
		p->tried[idx[g]] = true;
	if (!queue_take(q, p, env, idx[0], &dest)) {
		for (size_t g = 1; g < n; g++)
			p->skipped[idx[g]] = true;
		return;
	}
	queue_attempt(q, env, idx, n, content_path);
	queue_dest_release(q, dest);
	free(dest);
}

/*
 * Recipients idx[0..n) of env, all of kind k, which takes several copies
 * at once: together, each holding its destination's slot.
 */
static void
queue_run_copies(struct queue *q, struct queue_pass *p,
    struct spool_env *env, const struct deliver_kind *k, size_t *idx,
    size_t n, const char *content_path)
{
	size_t ntaken = 0;
	char **dests = xcalloc(n, sizeof(*dests));

	for (size_t g = 0; g < n; g++) {
		p->tried[idx[g]] = true;
		if (queue_take(q, p, env, idx[g], &dests[ntaken]))
			idx[ntaken++] = idx[g];
	}
	if (ntaken > 0)
		queue_attempt_copies(q, env, k, idx, ntaken, content_path);
	for (size_t g = 0; g < ntaken; g++) {
		queue_dest_release(q, dests[g]);
		free(dests[g]);
	}
	free(dests);
}

/* Does recipient j go with i, of kind k, in one attempt? */
static bool
queue_goes_with(const struct spool_env *env, size_t i, size_t j,
    const struct deliver_kind *k)
{
	const char *a = env->rcpts[i].arg, *b = env->rcpts[j].arg;

	if (deliver_kind_find(env->rcpts[j].action) != k)
		return false;
	/* One copy or one transaction is one action's: the spool arg names
	 * it. */
	return k->together == DELIVER_ALONE ||
	    (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * Recipient i with the other due ones that go with it, when its kind
 * takes them together and there are several: those of its kind when it
 * takes several copies at once (Maildirs), so identical copies share one
 * write and one commit; those of its action when its delivery is one copy
 * for all (forward), so that copy is sent once, or one transaction (relay,
 * mx), so the upstream gets one copy with all of them as
 * recipients.  False when i goes alone.
 */
static bool
queue_run_group(struct queue *q, struct queue_pass *p,
    struct spool_env *env, size_t i, const char *content_path)
{
	const struct deliver_kind *k = deliver_kind_find(env->rcpts[i].action);
	size_t n = 0, *idx;

	if (k == NULL || (k->deliver_copies == NULL &&
	    k->together == DELIVER_ALONE))
		return false;
	idx = xcalloc(env->nrcpts, sizeof(*idx));
	for (size_t j = i; j < env->nrcpts && n < (k->together ==
	    DELIVER_ONE_TXN ? QUEUE_TXN_RCPTS : env->nrcpts); j++)
		if (queue_is_due(p, env, j) && queue_goes_with(env, i, j, k))
			idx[n++] = j;
	if (n >= 2 && k->together != DELIVER_ALONE)
		queue_run_one(q, p, env, idx, n, content_path);
	else if (n >= 2)
		queue_run_copies(q, p, env, k, idx, n, content_path);
	free(idx);
	return n >= 2;
}

/*
 * May the run of job try another recipient?  Not once the queue stops,
 * nor once an operator held or deleted the message meanwhile.
 */
static bool
queue_run_goes_on(struct queue *q, const struct queue_job *job)
{
	bool on;

	pthread_mutex_lock(&q->mu);
	on = !q->stopping && !job->held && !job->deleted;
	pthread_mutex_unlock(&q->mu);
	return on;
}

/* Did an operator hold or delete job during its run?  why_out: which. */
static bool
queue_run_halted(struct queue *q, const struct queue_job *job,
    const char **why_out)
{
	bool halted;

	pthread_mutex_lock(&q->mu);
	halted = job->held || job->deleted;
	*why_out = job->deleted ? "delete" : "hold";
	pthread_mutex_unlock(&q->mu);
	return halted;
}

/* Which recipients of env job remembers as delivered but not recorded. */
static void
queue_note_unrecorded(struct queue_job *job, const struct spool_env *env)
{
	job->nunrecorded = 0;
	for (size_t i = 0; i < env->nrcpts; i++) {
		if (!env->rcpts[i].unrecorded)
			continue;
		job->unrecorded = xreallocarray(job->unrecorded,
		    job->nunrecorded + 1, sizeof(*job->unrecorded));
		job->unrecorded[job->nunrecorded++] = i;
	}
}

/*
 * A message whose envelope, records or content are not what was committed
 * (a file cut short or lost while the server was stopped, a disk's fault)
 * is never delivered: the rest of it may be anything.  It stays in the
 * spool for the operator, who may put the files back (tried again every
 * retry-max, each time with this line) or delete it.
 */
static enum queue_outcome
queue_damaged(struct queue *q, const char *sid, const char *qid,
    const char *why, uint64_t *due_out)
{
	struct queue_opts o;

	queue_opts_now(q, &o);
	log_event(LOG_LVL_ERROR, "damaged", sid, qid, "not delivered, left "
	    "in the spool for the operator why=\"%s\"", why);
	*due_out = queue_wall_ms() + o.retry_max_ms;
	return QUEUE_DAMAGED;
}

/*
 * May the recipients of env still pending have the content from memory:
 * is each one's kind one that reads it there?
 */
static bool
queue_from_memory(const struct spool_env *env)
{
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct deliver_kind *k;
		if (env->rcpts[i].done)
			continue;
		k = deliver_kind_find(env->rcpts[i].action);
		if (k == NULL || !k->from_memory)
			return false;
	}
	return true;
}

/*
 * Deliver the due recipients of job (ours while it runs; force: every
 * pending one), record each outcome, send DSNs, remove the message when
 * all is done.  On QUEUE_RETRY, *due_out is the next attempt and
 * *blocked_out the destinations that were at their limit.  No lock held.
 */
static enum queue_outcome
queue_run(struct queue *q, struct queue_job *job, bool force,
    uint64_t *due_out, char ***blocked_out, size_t *nblocked_out)
{
	const char *qid = job->qid, *halt = NULL;
	struct spool_env env;
	const char *err = NULL;
	char *content_path, *mem;
	size_t mem_len;
	uint64_t now = queue_wall_ms(), due = UINT64_MAX;
	bool pending = false, unreported = false, *skipped;
	size_t npending = 0;
	struct queue_pass p = { .now = now, .force = force,
	    .blocked = blocked_out, .nblocked = nblocked_out };

	queue_gone_reset();
	if (spool_env_load(q->sp, qid, &env, &err) == -1) {
		if (errno == ENOENT) {	/* submitted again after delivery */
			log_event(LOG_LVL_DEBUG, "queue", NULL, qid,
			    "not in the spool (any more)");
			return QUEUE_DROP;
		}
		return queue_damaged(q, NULL, qid, err, due_out);
	}
	if (env.held) {
		spool_env_clear(&env);
		return QUEUE_HELD;
	}
	if (spool_content_load(q->sp, &env, &mem, &mem_len, &err) == -1) {
		enum queue_outcome out = queue_damaged(q, env.sid, qid, err,
		    due_out);
		spool_env_clear(&env);
		return out;
	}
	if (mem != NULL && !queue_from_memory(&env)) {
		free(mem);
		mem = NULL;
		if (spool_content_write(q->sp, qid, &err) == -1) {
			struct queue_opts o;
			queue_opts_now(q, &o);
			log_event(LOG_LVL_ERROR, "queue", env.sid, qid,
			    "cannot write the message out of memory "
			    "why=\"%s\"", err);
			*due_out = now + o.retry_min_ms;
			spool_env_clear(&env);
			return QUEUE_RETRY;
		}
	}
	/* Delivered in an earlier run: never sent again by this process. */
	queue_record_again(q, &env, job->unrecorded, job->nunrecorded);
	content_path = spool_content_path(q->sp, qid);
	skipped = xcalloc(env.nrcpts + 1, sizeof(*skipped));
	p.skipped = skipped;
	p.tried = xcalloc(env.nrcpts + 1, sizeof(*p.tried));
	queue_content_use(mem, mem_len);
	for (size_t i = 0; i < env.nrcpts && queue_run_goes_on(q, job); i++)
		if (queue_is_due(&p, &env, i) &&
		    !queue_run_group(q, &p, &env, i, content_path))
			queue_run_one(q, &p, &env, &i, 1, content_path);
	queue_content_use(NULL, 0);
	free(mem);
	queue_note_unrecorded(job, &env);
	free(p.tried);
	free(content_path);
	if (queue_msg_is_gone()) {	/* its last delivery removed it */
		free(skipped);
		spool_env_clear(&env);
		return QUEUE_FINISHED;
	}
	if (queue_run_halted(q, job, &halt)) {
		/*
		 * The operator's word holds from the delivery in progress
		 * on: no other attempt, no DSN; a deleted message goes when
		 * the run ends (queue_job_done), a held one waits.
		 */
		for (size_t i = 0; i < env.nrcpts; i++)
			if (!env.rcpts[i].done)
				npending++;
		log_event(LOG_LVL_INFO, "halted", env.sid, qid,
		    "by=operator why=%s pending=%zu", halt, npending);
		free(skipped);
		spool_env_clear(&env);
		return QUEUE_HELD;
	}
	now = queue_wall_ms();
	/* Blocked recipients wait for their destination, not for a timer. */
	for (size_t i = 0; i < env.nrcpts; i++) {
		const struct spool_rcpt *r = &env.rcpts[i];
		if (!r->done) {
			pending = true;
			if (!skipped[i] && r->next_ms < due)
				due = r->next_ms;
		} else if (r->failed && !r->bounced)
			unreported = true;
	}
	if (unreported)
		queue_bounce(q, &env);
	if (pending)
		queue_warn_delay(q, &env, now);
	unreported = false;
	for (size_t i = 0; i < env.nrcpts; i++)
		if (env.rcpts[i].failed && !env.rcpts[i].bounced)
			unreported = true;
	if (unreported && !pending) {	/* the DSN could not be queued */
		struct queue_opts o;
		queue_opts_now(q, &o);
		due = now + o.retry_min_ms;
	}
	if (!pending && !unreported) {
		if (queue_finish(q, &env, &err) == -1) {
			log_event(LOG_LVL_ERROR, "queue", env.sid, qid,
			    "cannot remove from the spool why=\"%s\"", err);
			free(skipped);
			spool_env_clear(&env);
			return QUEUE_DROP;
		}
		free(skipped);
		spool_env_clear(&env);
		return QUEUE_FINISHED;
	}
	*due_out = due;
	free(skipped);
	spool_env_clear(&env);
	return QUEUE_RETRY;
}

/* ---- the jobs ---------------------------------------------------------- */

/* The job of qid, made (due now) if new.  Locked. */
static struct queue_job *
queue_job_get(struct queue *q, const char *qid)
{
	struct queue_job *j = queue_jobs_find(&q->jobs, qid);

	/* Appended: submission order among equals. */
	return j != NULL ? j : queue_jobs_add(&q->jobs, qid, queue_wall_ms());
}

static void
queue_unlink(struct queue *q, struct queue_job *job)
{
	queue_wake(q, queue_jobs_remove(&q->jobs, job));
}

/* Try job now, whatever its schedule.  Locked. */
static void
queue_job_force(struct queue *q, struct queue_job *job)
{
	job->force = true;
	queue_wake(q, queue_jobs_refile(&q->jobs, job));
}

/* The monotonic time wait_ms from now, for a timed wait on q's cvs. */
static void
queue_abstime(uint64_t wait_ms, struct timespec *ts_out)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(wait_ms / 1000);
	ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	*ts_out = ts;
}

static void
queue_wait_until(struct queue *q, uint64_t due_ms, uint64_t now)
{
	struct timespec ts;
	uint64_t wait_ms;

	if (due_ms == UINT64_MAX) {
		pthread_cond_wait(&q->work_cv, &q->mu);
		return;
	}
	/* Due times are wall clock; the wait itself is monotonic. */
	wait_ms = due_ms > now ? due_ms - now : 0;
	if (wait_ms > 60000)
		wait_ms = 60000;	/* re-read the clock now and then */
	queue_abstime(wait_ms, &ts);
	pthread_cond_timedwait(&q->work_cv, &q->mu, &ts);
}

/* The run of job is over.  Locked. */
static void
queue_job_done(struct queue *q, struct queue_job *job,
    enum queue_outcome out, uint64_t due, char **blocked, size_t nblocked)
{
	const char *err = NULL;

	queue_wake(q, queue_jobs_block(&q->jobs, job, blocked, nblocked));
	if (job->deleted) {
		/* The operator's delete waited for this run to end. */
		pthread_mutex_unlock(&q->mu);
		if (out != QUEUE_FINISHED &&
		    spool_remove(q->sp, job->qid, &err) == -1)
			log_event(LOG_LVL_ERROR, "queue", NULL, job->qid,
			    "cannot delete why=\"%s\"", err);
		pthread_mutex_lock(&q->mu);
		queue_unlink(q, job);
		return;
	}
	job->damaged = out == QUEUE_DAMAGED;
	switch (out) {
	case QUEUE_RETRY:
	case QUEUE_DAMAGED:
		job->due_ms = due;
		job->running = false;
		queue_wake(q, queue_jobs_refile(&q->jobs, job));
		/*
		 * Sleeping workers recompute their deadline; a job waiting
		 * only for a destination slot is woken by its release.
		 */
		if (due != UINT64_MAX)
			pthread_cond_broadcast(&q->work_cv);
		break;
	case QUEUE_HELD:
		job->held = true;
		job->running = false;
		queue_wake(q, queue_jobs_refile(&q->jobs, job));
		break;
	case QUEUE_FINISHED:
	case QUEUE_DROP:
		queue_unlink(q, job);
		break;
	}
}

static void *
queue_worker(void *arg)
{
	struct queue *q = arg;
	struct queue_job *job;
	uint64_t now, next_due, due;
	char **blocked;
	size_t nblocked;
	bool force;

	deliver_stop_fd_set(q->stop_pipe[0]);
	pthread_mutex_lock(&q->mu);
	while (!q->stopping) {
		now = queue_wall_ms();
		job = queue_jobs_peek(&q->jobs, now, &next_due);
		if (job == NULL) {
			queue_wait_until(q, next_due, now);
			continue;
		}
		force = queue_jobs_take(&q->jobs, job);
		q->nrunning++;
		pthread_mutex_unlock(&q->mu);
		/* job stays ours: submit skips running jobs, free joins us. */
		blocked = NULL;
		nblocked = 0;
		due = UINT64_MAX;
		enum queue_outcome out = queue_run(q, job, force, &due,
		    &blocked, &nblocked);
		pthread_mutex_lock(&q->mu);
		q->nrunning--;
		/*
		 * A flush (or start-up) that found destinations full is not
		 * over: the run a free slot gives the job is forced too, or
		 * recipients scheduled later would wait for their time.
		 */
		job->flushed = force && out == QUEUE_RETRY && nblocked > 0;
		queue_job_done(q, job, out, due, blocked, nblocked);
		pthread_cond_broadcast(&q->idle_cv);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

void
queue_stats(struct queue *q, struct queue_stats *out)
{
	uint64_t now = queue_wall_ms();

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&q->mu);
	for (const struct queue_job *j = q->jobs.first; j != NULL;
	    j = j->next)
		if (j->running)
			out->active++;
		else if (j->deleted)
			continue;
		else if (j->damaged)
			out->damaged++;
		else if (j->held)
			out->held++;
		else if (j->force || j->woken || j->due_ms <= now)
			out->ready++;
		else if (j->nblocked > 0)
			out->waiting++;	/* for a slot, not for a timer */
		else
			out->deferred++;
	pthread_mutex_unlock(&q->mu);
}

/* ---- the public face --------------------------------------------------- */

struct queue *
queue_new_opts(struct spool *sp, const struct queue_opts *o)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	pthread_condattr_t ca;
	const char *err = NULL;

	q->sp = sp;
	q->o = *o;
	q->o.hostname = xstrdup(o->hostname != NULL ? o->hostname :
	    "localhost");
	if (q->o.concurrency == 0)
		q->o.concurrency = 1;
	if (q->o.dest_concurrency == 0)
		q->o.dest_concurrency = 1;
	if (q->o.retry_min_ms == 0)
		q->o.retry_min_ms = 1000;
	if (q->o.retry_max_ms < q->o.retry_min_ms)
		q->o.retry_max_ms = q->o.retry_min_ms;
	q->ctl_fd = -1;
	q->ctl_wake[0] = q->ctl_wake[1] = -1;
	queue_jobs_init(&q->jobs, q->o.dest_concurrency);
	pthread_mutex_init(&q->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->work_cv, &ca);
	pthread_cond_init(&q->idle_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pipe2(q->stop_pipe, O_CLOEXEC) == -1)
		fatal("queue: pipe2: %s", strerror(errno));
	q->threads = xcalloc(q->o.concurrency, sizeof(*q->threads));
	for (unsigned i = 0; i < q->o.concurrency; i++) {
		int rc = pthread_create(&q->threads[i], NULL, queue_worker, q);
		if (rc != 0)
			fatal("queue: pthread_create: %s", strerror(rc));
		q->nthreads++;
	}
	if (q->o.sweep_maildirs)
		deliver_maildir_sweeper_start();
	if ((q->o.control || q->o.pickup_ms > 0) &&
	    queue_control_start(q, &err) == -1)
		log_msg(LOG_LVL_ERROR, "queue: no control socket: %s "
		    "(postern queue and postern send cannot reach this "
		    "server)", err);
	return q;
}

struct queue *
queue_new(struct spool *sp, const char *hostname, unsigned nthreads)
{
	struct queue_opts o;

	queue_opts_init(&o, NULL);
	o.hostname = hostname;
	o.concurrency = nthreads;
	o.pickup_ms = 0;
	o.sweep_maildirs = false;
	return queue_new_opts(sp, &o);
}

void
queue_submit(struct queue *q, const char *qid)
{
	pthread_mutex_lock(&q->mu);
	/*
	 * Already known: a running job will see every pending recipient; a
	 * waiting one keeps its schedule (a flush is queue_flush).
	 */
	(void)queue_job_get(q, qid);
	pthread_mutex_unlock(&q->mu);
	/* After the unlock: the worker woken need not wait for the mutex. */
	pthread_cond_signal(&q->work_cv);
}

/*
 * Try every message now: each of qids (what the spool holds, whether the
 * queue knew it or not; freed here) and each one the queue knows.  A held
 * one stays held.
 */
static void
queue_force_all(struct queue *q, char **qids, size_t n)
{
	pthread_mutex_lock(&q->mu);
	for (size_t i = 0; i < n; i++) {
		(void)queue_job_get(q, qids[i]);
		free(qids[i]);
	}
	for (struct queue_job *j = q->jobs.first; j != NULL; j = j->next)
		queue_job_force(q, j);
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->mu);
	free(qids);
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
	/*
	 * A start-up is an implicit flush: every message is tried once now
	 * (an operator who restarts after fixing something expects that),
	 * then the persisted attempt counts carry the backoff on.
	 */
	queue_force_all(q, qids, n);
}

void
queue_drain(struct queue *q)
{
	uint64_t next_due;

	pthread_mutex_lock(&q->mu);
	while (!q->stopping && (q->nrunning > 0 ||
	    queue_jobs_peek(&q->jobs, queue_wall_ms(), &next_due) != NULL))
		pthread_cond_wait(&q->idle_cv, &q->mu);
	pthread_mutex_unlock(&q->mu);
}

/*
 * Does qid exist in the spool (damaged or not)?  -1 with *err_out if not.
 * *held_out (may be NULL): whether the spool has it on hold.
 */
static int
queue_check_msg(struct queue *q, const char *qid, bool *held_out,
    const char **err_out)
{
	struct spool_env env;

	if (held_out != NULL)
		*held_out = false;
	if (!spool_qid_ok(qid)) {
		*err_out = "invalid queue id";
		return -1;
	}
	if (spool_env_load(q->sp, qid, &env, err_out) == -1) {
		if (errno != ENOENT)
			return 0;	/* damaged: the operator may act */
		*err_out = "no such message";
		return -1;
	}
	if (held_out != NULL)
		*held_out = env.held;
	spool_env_clear(&env);
	return 0;
}

int
queue_flush(struct queue *q, const char *qid, const char **err_out)
{
	char **qids;
	size_t n;
	bool held;

	if (qid == NULL) {
		/* Also what the pickup scan has not found yet; read only, as
		 * that scan (control.c): the sweep is the start's. */
		if (spool_list_readonly(q->sp, &qids, &n, err_out) == -1)
			return -1;
		queue_force_all(q, qids, n);
		return 0;
	}
	if (queue_check_msg(q, qid, &held, err_out) == -1)
		return -1;
	if (held) {
		*err_out = "on hold; release it first";
		return -1;
	}
	pthread_mutex_lock(&q->mu);
	queue_job_force(q, queue_job_get(q, qid));
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->mu);
	return 0;
}

int
queue_hold(struct queue *q, const char *qid, bool hold, const char **err_out)
{
	struct queue_job *j;

	if (queue_check_msg(q, qid, NULL, err_out) == -1 ||
	    spool_mark_flag(q->sp, qid, hold ? SPOOL_FLAG_HOLD :
	    SPOOL_FLAG_RELEASE, err_out) == -1)
		return -1;
	log_event(LOG_LVL_INFO, hold ? "hold" : "release", NULL, qid,
	    "by=operator");
	pthread_mutex_lock(&q->mu);
	j = queue_job_get(q, qid);
	j->held = hold;
	if (!hold)
		j->force = true;	/* released: try it now */
	queue_wake(q, queue_jobs_refile(&q->jobs, j));
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->mu);
	return 0;
}

int
queue_delete(struct queue *q, const char *qid, const char **err_out)
{
	struct queue_job *j;

	if (queue_check_msg(q, qid, NULL, err_out) == -1)
		return -1;
	log_event(LOG_LVL_INFO, "deleted", NULL, qid, "by=operator");
	pthread_mutex_lock(&q->mu);
	j = queue_job_get(q, qid);
	j->deleted = true;
	if (j->running) {	/* its worker removes it after the run */
		pthread_mutex_unlock(&q->mu);
		return 0;
	}
	j->running = true;	/* ours now: no worker takes it */
	queue_wake(q, queue_jobs_refile(&q->jobs, j));
	pthread_mutex_unlock(&q->mu);
	if (spool_remove(q->sp, qid, err_out) == -1) {
		pthread_mutex_lock(&q->mu);
		j->running = false;
		j->deleted = false;
		queue_wake(q, queue_jobs_refile(&q->jobs, j));
		pthread_mutex_unlock(&q->mu);
		return -1;
	}
	pthread_mutex_lock(&q->mu);
	queue_unlink(q, j);
	pthread_cond_broadcast(&q->idle_cv);
	pthread_mutex_unlock(&q->mu);
	return 0;
}

void
queue_shutdown(struct queue *q, uint64_t grace_ms)
{
	uint64_t cut = util_now_ms() + grace_ms;

	pthread_mutex_lock(&q->mu);
	if (q->cut_ms == 0 || cut < q->cut_ms)	/* a second signal: no later */
		q->cut_ms = cut;
	pthread_mutex_unlock(&q->mu);
}

/*
 * The workers stop after their run; the deliveries still in progress at
 * q->cut_ms are cut short (their waits end, so each returns a temporary
 * failure and is recorded as deferred).  Locked.
 */
static void
queue_stop_workers(struct queue *q)
{
	struct timespec ts;
	uint64_t now = util_now_ms();

	q->stopping = true;
	pthread_cond_broadcast(&q->work_cv);
	pthread_cond_broadcast(&q->idle_cv);
	if (q->nrunning > 0 && now < q->cut_ms)
		log_msg(LOG_LVL_INFO, "shutdown: waiting for %u deliveries "
		    "in progress, at most %jus", q->nrunning,
		    (uintmax_t)((q->cut_ms - now + 999) / 1000));
	while (q->nrunning > 0 && (now = util_now_ms()) < q->cut_ms) {
		queue_abstime(q->cut_ms - now, &ts);
		pthread_cond_timedwait(&q->idle_cv, &q->mu, &ts);
	}
	if (q->nrunning == 0)
		return;
	log_msg(LOG_LVL_WARN, "shutdown: grace over, cutting %u deliveries "
	    "short (deferred: the next start tries them again)", q->nrunning);
	while (write(q->stop_pipe[1], "", 1) == -1 && errno == EINTR)
		;
}

void
queue_free(struct queue **qp)
{
	struct queue *q = *qp;

	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	queue_stop_workers(q);
	pthread_mutex_unlock(&q->mu);
	for (unsigned i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	/*
	 * Only now: during the grace postern queue still reaches us (a
	 * delete of a message in delivery must wait for that delivery), and
	 * with no socket it would take the server for gone.
	 */
	queue_control_stop(q);
	close(q->stop_pipe[0]);
	close(q->stop_pipe[1]);
	if (q->o.sweep_maildirs)
		deliver_maildir_sweeper_stop();
	queue_jobs_clear(&q->jobs);
	pthread_cond_destroy(&q->work_cv);
	pthread_cond_destroy(&q->idle_cv);
	pthread_mutex_destroy(&q->mu);
	free(q->threads);
	free((char *)q->o.hostname);
	for (size_t i = 0; i < q->nold_names; i++)
		free(q->old_names[i]);
	free(q->old_names);
	free(q);
	*qp = NULL;
}

void
queue_opts_now(struct queue *q, struct queue_opts *out)
{
	pthread_mutex_lock(&q->mu);
	*out = q->o;
	pthread_mutex_unlock(&q->mu);
}

bool
queue_reconfigure(struct queue *q, const struct queue_opts *o)
{
	const char *name = o->hostname != NULL ? o->hostname : "localhost";

	pthread_mutex_lock(&q->mu);
	if (strcmp(q->o.hostname, name) != 0) {
		q->old_names = xreallocarray(q->old_names, q->nold_names + 1,
		    sizeof(*q->old_names));
		q->old_names[q->nold_names++] = (char *)q->o.hostname;
		q->o.hostname = xstrdup(name);
	}
	q->o.retry_min_ms = o->retry_min_ms > 0 ? o->retry_min_ms : 1000;
	q->o.retry_max_ms = o->retry_max_ms > q->o.retry_min_ms ?
	    o->retry_max_ms : q->o.retry_min_ms;
	q->o.lifetime_ms = o->lifetime_ms;
	q->o.delay_warning_ms = o->delay_warning_ms;
	q->o.dest_concurrency = o->dest_concurrency > 0 ?
	    o->dest_concurrency : 1;
	q->jobs.dest_max = q->o.dest_concurrency;
	pthread_cond_broadcast(&q->work_cv);	/* more room, maybe */
	pthread_mutex_unlock(&q->mu);
	return o->concurrency == 0 || o->concurrency == q->o.concurrency;
}
