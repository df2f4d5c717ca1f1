/*
 * util/pool.c: a fixed set of worker threads over one FIFO of jobs.  Many
 * threads let many fsyncs be in flight at once, which the filesystem
 * commits together (docs/architecture.md, Durability).  Knows nothing of
 * event loops.
 *
 * The workers run as SCHED_BATCH: a job's latency is the disk's or the
 * network's, so waking a worker should not preempt the event loop that
 * submitted it.  Under load that preemption cost two context switches per
 * job and about a tenth of the server's CPU time (c=50, bench/).
 *
 * Idle workers sleep each on a futex word of its own, on a stack: the
 * one woken is the one that went to sleep last, whose stack and data are
 * likeliest still in the caches.  A submit may hold its wake-up back
 * (util_pool_submit_held) until the submitting thread calls
 * util_pool_kick: an event loop does at the end of its turn, and the jobs
 * of that turn wake their workers together.
 *
 * A pool may limit how many of its workers run jobs on the CPU at once
 * (maxrun): a job queued while that many run waits for one of them to
 * come back for it, rather than waking a sleeper.  Most disk jobs take
 * microseconds: a sleeper woken for each would mostly find it taken
 * already by a worker that has just finished its own, and sleep again,
 * two context switches for nothing.  A worker about to wait (an fsync,
 * another thread's work) says so (util_pool_block_begin) and leaves its
 * place to a sleeper if jobs are waiting, so a slow disk never holds the
 * queue back.
 */
#include "util/util.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

struct util_pool_job {
	void			(*fn)(void *);
	void			*arg;
	struct util_pool_job	*next;
};

struct util_pool {
	pthread_mutex_t		 mu;
	struct util_pool_job	*head, *tail;
	bool			 stopping;
	unsigned		 nthreads;
	pthread_t		*threads;	/* owned array */
	struct util_pool_sleeper *idle;		/* the last asleep first */
	atomic_uint		 nqueued;	/* jobs not yet taken */
	atomic_uint		 nrun;		/* in jobs, not blocked */
	unsigned		 maxrun;	/* 0: no limit */
};

/* A worker asleep: woken when the waker sets word, off the stack. */
struct util_pool_sleeper {
	atomic_uint			 word;
	struct util_pool_sleeper	*next;
};

/* Wake-ups this thread holds back, for one pool at a time. */
static __thread struct util_pool *held_pool;
static __thread unsigned	  held_n;
/* On a worker: its pool, and how deep it is in blocking sections. */
static __thread struct util_pool *self_pool;
static __thread unsigned	  self_blocked;

void
util_futex_wait(atomic_uint *word, unsigned seen)
{
	(void)syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL,
	    0);
}

void
util_futex_wake(atomic_uint *word, unsigned n)
{
	(void)syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE,
	    n > INT_MAX ? INT_MAX : (int)n, NULL, NULL, 0);
}

/* Wake the worker that went to sleep last; called with mu held. */
static void
util_pool_rouse(struct util_pool *p)
{
	struct util_pool_sleeper *s = p->idle;

	p->idle = s->next;
	/* It cannot sleep again before mu is released: s stays valid. */
	atomic_store(&s->word, 1);
	util_futex_wake(&s->word, 1);
}

/*
 * Wake up to n sleepers, no more than maxrun leaves room for.  Under mu:
 * a worker leaving its place changes nrun without it, and one going to
 * sleep checks nrun and joins the stack under mu, so it is on the stack
 * here or saw the room.
 */
static void
util_pool_wake(struct util_pool *p, unsigned n)
{
	if (p->maxrun > 0) {
		unsigned run = atomic_load(&p->nrun);
		unsigned room = run < p->maxrun ? p->maxrun - run : 0;
		if (n > room)
			n = room;
	}
	if (n == 0)
		return;
	pthread_mutex_lock(&p->mu);
	for (; n > 0 && p->idle != NULL; n--)
		util_pool_rouse(p);
	pthread_mutex_unlock(&p->mu);
}

void
util_pool_block_begin(void)
{
	struct util_pool *p = self_pool;

	if (p == NULL || self_blocked++ > 0)
		return;
	atomic_fetch_sub(&p->nrun, 1);
	/* Pairs with a submit's nqueued, then nrun: one of us wakes. */
	if (atomic_load(&p->nqueued) > 0)
		util_pool_wake(p, 1);
}

void
util_pool_block_end(void)
{
	struct util_pool *p = self_pool;

	if (p == NULL || --self_blocked > 0)
		return;
	atomic_fetch_add(&p->nrun, 1);
}

/* May a worker take the job at the head now?  Called with mu held. */
static bool
util_pool_may_take(struct util_pool *p)
{
	return p->head != NULL && (p->maxrun == 0 ||
	    atomic_load(&p->nrun) < p->maxrun);
}

static void *
util_pool_main(void *arg)
{
	struct util_pool *p = arg;
	struct sched_param sp = { .sched_priority = 0 };
	struct util_pool_sleeper me;

	/* Best effort: a policy this kernel refuses changes no result. */
	(void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
	self_pool = p;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stopping && !util_pool_may_take(p)) {
			atomic_store(&me.word, 0);
			me.next = p->idle;
			p->idle = &me;
			pthread_mutex_unlock(&p->mu);
			while (atomic_load(&me.word) == 0)
				util_futex_wait(&me.word, 0);
			pthread_mutex_lock(&p->mu);
		}
		struct util_pool_job *j = p->head;
		if (j == NULL)
			break;		/* stopping and nothing left */
		p->head = j->next;
		if (p->head == NULL)
			p->tail = NULL;
		atomic_fetch_sub(&p->nqueued, 1);
		atomic_fetch_add(&p->nrun, 1);
		pthread_mutex_unlock(&p->mu);
		j->fn(j->arg);
		free(j);
		ASSERT(self_blocked == 0);
		atomic_fetch_sub(&p->nrun, 1);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct util_pool *
util_pool_new(unsigned nthreads, unsigned maxrun)
{
	struct util_pool *p = xcalloc(1, sizeof(*p));

	ASSERT(nthreads > 0);
	pthread_mutex_init(&p->mu, NULL);
	p->nthreads = nthreads;
	p->maxrun = maxrun;
	p->threads = xcalloc(nthreads, sizeof(*p->threads));
	for (unsigned i = 0; i < nthreads; i++)
		if (pthread_create(&p->threads[i], NULL, util_pool_main, p) != 0)
			fatal("pthread_create: cannot start worker %u", i);
	return p;
}

static void
util_pool_queue(struct util_pool *p, void (*fn)(void *), void *arg)
{
	struct util_pool_job *j = xmalloc(sizeof(*j));

	j->fn = fn;
	j->arg = arg;
	j->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->tail != NULL)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	atomic_fetch_add(&p->nqueued, 1);
	pthread_mutex_unlock(&p->mu);
}

void
util_pool_submit(struct util_pool *p, void (*fn)(void *), void *arg)
{
	util_pool_queue(p, fn, arg);
	util_pool_wake(p, 1);
}

void
util_pool_submit_held(struct util_pool *p, void (*fn)(void *), void *arg)
{
	if (held_pool != p)
		util_pool_kick();
	util_pool_queue(p, fn, arg);
	held_pool = p;
	held_n++;
}

void
util_pool_kick(void)
{
	if (held_pool != NULL)
		util_pool_wake(held_pool, held_n);
	held_pool = NULL;
	held_n = 0;
}

void
util_pool_free(struct util_pool **pp)
{
	struct util_pool *p = *pp;

	if (p == NULL)
		return;
	if (held_pool == p)
		util_pool_kick();
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	while (p->idle != NULL)
		util_pool_rouse(p);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
	*pp = NULL;
}
