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
 */
#include "util/util.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

struct util_pool_job {
	void			(*fn)(void *);
	void			*arg;
	struct util_pool_job	*next;
};

struct util_pool {
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	struct util_pool_job	*head, *tail;
	bool			 stopping;
	unsigned		 nthreads;
	pthread_t		*threads;	/* owned array */
};

static void *
util_pool_main(void *arg)
{
	struct util_pool *p = arg;
	struct sched_param sp = { .sched_priority = 0 };

	/* Best effort: a policy this kernel refuses changes no result. */
	(void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->head == NULL && !p->stopping)
			pthread_cond_wait(&p->cv, &p->mu);
		struct util_pool_job *j = p->head;
		if (j == NULL)
			break;		/* stopping and nothing left */
		p->head = j->next;
		if (p->head == NULL)
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);
		j->fn(j->arg);
		free(j);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct util_pool *
util_pool_new(unsigned nthreads)
{
	struct util_pool *p = xcalloc(1, sizeof(*p));

	ASSERT(nthreads > 0);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->nthreads = nthreads;
	p->threads = xcalloc(nthreads, sizeof(*p->threads));
	for (unsigned i = 0; i < nthreads; i++)
		if (pthread_create(&p->threads[i], NULL, util_pool_main, p) != 0)
			fatal("pthread_create: cannot start worker %u", i);
	return p;
}

void
util_pool_submit(struct util_pool *p, void (*fn)(void *), void *arg)
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
	pthread_mutex_unlock(&p->mu);
	/* After the unlock: the worker woken does not wait for our mutex. */
	pthread_cond_signal(&p->cv);
}

void
util_pool_free(struct util_pool **pp)
{
	struct util_pool *p = *pp;

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->threads);
	free(p);
	*pp = NULL;
}
