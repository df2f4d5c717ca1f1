/*
 * queue/jobs.c: the scheduler's index of jobs and destinations: a hash of
 * jobs by queue id, a min-heap of the jobs that become ready by themselves
 * (forced or woken first, then by due time, then in submission order), a
 * hash of destinations, each with its waiters first come first served.
 * Knows nothing of threads, the spool's files or deliveries.
 */
#include "queue/jobs.h"

#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define QUEUE_NOWHERE	SIZE_MAX	/* heap_idx of a job not in the heap */

/* ---- string-keyed hash tables ------------------------------------------ */

static struct queue_hnode **
queue_htab_slot(struct queue_htab *t, const char *key)
{
	struct queue_hnode **np;

	if (t->size == 0)
		return NULL;
	for (np = &t->b[util_hash_str(key) & (t->size - 1)]; *np != NULL;
	    np = &(*np)->next)
		if (strcmp((*np)->key, key) == 0)
			break;
	return np;
}

static struct queue_hnode *
queue_htab_find(struct queue_htab *t, const char *key)
{
	struct queue_hnode **np = queue_htab_slot(t, key);

	return np != NULL ? *np : NULL;
}

/* Add n (its key not in t yet); the table doubles past one per bucket. */
static void
queue_htab_add(struct queue_htab *t, struct queue_hnode *n)
{
	size_t i;

	if (t->n >= t->size) {
		size_t size = t->size > 0 ? t->size * 2 : 64;
		struct queue_hnode **b = xcalloc(size, sizeof(*b));

		for (i = 0; i < t->size; i++)
			while (t->b[i] != NULL) {
				struct queue_hnode *m = t->b[i];
				size_t k = util_hash_str(m->key) & (size - 1);

				t->b[i] = m->next;
				m->next = b[k];
				b[k] = m;
			}
		free(t->b);
		t->b = b;
		t->size = size;
	}
	i = util_hash_str(n->key) & (t->size - 1);
	n->next = t->b[i];
	t->b[i] = n;
	t->n++;
}

static void
queue_htab_del(struct queue_htab *t, struct queue_hnode *n)
{
	struct queue_hnode **np = queue_htab_slot(t, n->key);

	ASSERT(np != NULL && *np == n);
	*np = n->next;
	t->n--;
}

static struct queue_job *
queue_job_of(struct queue_hnode *n)
{
	return n == NULL ? NULL : (struct queue_job *)(void *)((char *)n -
	    offsetof(struct queue_job, hn));
}

static struct queue_dest *
queue_dest_of(struct queue_hnode *n)
{
	return n == NULL ? NULL : (struct queue_dest *)(void *)((char *)n -
	    offsetof(struct queue_dest, hn));
}

/* ---- the heap of jobs that become ready by themselves ------------------ */

/* Does a come before b: forced or woken first, then due, then seq. */
static bool
queue_job_before(const struct queue_job *a, const struct queue_job *b)
{
	bool now_a = a->force || a->woken, now_b = b->force || b->woken;

	if (now_a != now_b)
		return now_a;
	if (a->due_ms != b->due_ms)
		return a->due_ms < b->due_ms;
	return a->seq < b->seq;
}

static void
queue_heap_set(struct queue_jobs *js, size_t i, struct queue_job *j)
{
	js->heap[i] = j;
	j->heap_idx = i;
}

static void
queue_heap_up(struct queue_jobs *js, size_t i)
{
	struct queue_job *j = js->heap[i];

	while (i > 0 && queue_job_before(j, js->heap[(i - 1) / 2])) {
		queue_heap_set(js, i, js->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	queue_heap_set(js, i, j);
}

static void
queue_heap_down(struct queue_jobs *js, size_t i)
{
	struct queue_job *j = js->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= js->nheap)
			break;
		if (c + 1 < js->nheap &&
		    queue_job_before(js->heap[c + 1], js->heap[c]))
			c++;
		if (!queue_job_before(js->heap[c], j))
			break;
		queue_heap_set(js, i, js->heap[c]);
		i = c;
	}
	queue_heap_set(js, i, j);
}

static void
queue_heap_insert(struct queue_jobs *js, struct queue_job *j)
{
	if (js->nheap == js->heap_cap) {
		js->heap_cap = js->heap_cap > 0 ? js->heap_cap * 2 : 64;
		js->heap = xreallocarray(js->heap, js->heap_cap,
		    sizeof(*js->heap));
	}
	queue_heap_set(js, js->nheap++, j);
	queue_heap_up(js, js->nheap - 1);
}

static void
queue_heap_remove(struct queue_jobs *js, struct queue_job *j)
{
	size_t i = j->heap_idx;
	struct queue_job *last = js->heap[--js->nheap];

	j->heap_idx = QUEUE_NOWHERE;
	if (last == j)
		return;
	queue_heap_set(js, i, last);
	if (i > 0 && queue_job_before(last, js->heap[(i - 1) / 2]))
		queue_heap_up(js, i);
	else
		queue_heap_down(js, i);
}

/* ---- destinations and their waiters ------------------------------------ */

static struct queue_dest *
queue_dest_get(struct queue_jobs *js, const char *name)
{
	struct queue_dest *d = queue_dest_of(queue_htab_find(&js->dests,
	    name));

	if (d == NULL) {
		d = xcalloc(1, sizeof(*d));
		d->name = xstrdup(name);
		d->hn.key = d->name;
		queue_htab_add(&js->dests, &d->hn);
	}
	return d;
}

static bool
queue_dest_has_room(const struct queue_jobs *js, const struct queue_dest *d)
{
	return d->active + d->nwoken < js->dest_max;
}

/* Idle destinations are forgotten. */
static void
queue_dest_gc(struct queue_jobs *js, struct queue_dest *d)
{
	if (d->active > 0 || d->nwoken > 0 || d->first != NULL)
		return;
	queue_htab_del(&js->dests, &d->hn);
	free(d->name);
	free(d);
}

/* j waits no more (the destinations it emptied may go). */
static void
queue_job_unwait(struct queue_jobs *js, struct queue_job *j)
{
	if (j->waits == NULL)
		return;
	for (size_t i = 0; i < j->nblocked; i++) {
		struct queue_wait *w = &j->waits[i];
		struct queue_dest *d = w->dest;

		*(w->prev != NULL ? &w->prev->next : &d->first) = w->next;
		*(w->next != NULL ? &w->next->prev : &d->last) = w->prev;
		queue_dest_gc(js, d);
	}
	free(j->waits);
	j->waits = NULL;
}

static void
queue_job_wait(struct queue_jobs *js, struct queue_job *j)
{
	j->waits = xcalloc(j->nblocked, sizeof(*j->waits));
	for (size_t i = 0; i < j->nblocked; i++) {
		struct queue_wait *w = &j->waits[i];
		struct queue_dest *d = queue_dest_get(js, j->blocked[i]);

		w->job = j;
		w->dest = d;
		w->prev = d->last;
		*(d->last != NULL ? &d->last->next : &d->first) = w;
		d->last = w;
	}
}

/* j is ready for a free slot of d (which counts it until it is picked). */
static void
queue_job_wake(struct queue_jobs *js, struct queue_job *j,
    struct queue_dest *d)
{
	d->nwoken++;		/* first: keeps d when j leaves its list */
	queue_job_unwait(js, j);
	if (j->heap_idx != QUEUE_NOWHERE)
		queue_heap_remove(js, j);
	j->woken = true;
	j->woken_by = d;
	queue_heap_insert(js, j);
}

/* Each free slot of d goes to its next waiter; returns how many woke. */
static unsigned
queue_dest_kick(struct queue_jobs *js, struct queue_dest *d)
{
	unsigned n = 0;

	for (; d->first != NULL && queue_dest_has_room(js, d); n++)
		queue_job_wake(js, d->first->job, d);
	queue_dest_gc(js, d);
	return n;
}

/* ---- filing jobs -------------------------------------------------------- */

/* A free slot of one of j's blocked destinations, or NULL. */
static struct queue_dest *
queue_job_free_dest(struct queue_jobs *js, const struct queue_job *j)
{
	for (size_t i = 0; i < j->nblocked; i++) {
		struct queue_dest *d = queue_dest_of(queue_htab_find(
		    &js->dests, j->blocked[i]));

		if (d == NULL || queue_dest_has_room(js, d))
			return queue_dest_get(js, j->blocked[i]);
	}
	return NULL;
}

/* Put j where its fields say (it is nowhere). */
static void
queue_job_file(struct queue_jobs *js, struct queue_job *j)
{
	struct queue_dest *d;

	if (j->running || j->held || j->deleted)
		return;
	if (!j->force && !j->woken && j->nblocked > 0) {
		/* A slot freed while its run ended: it need not wait. */
		if ((d = queue_job_free_dest(js, j)) != NULL) {
			d->nwoken++;
			j->woken = true;
			j->woken_by = d;
		} else
			queue_job_wait(js, j);
	}
	if (j->force || j->woken || j->due_ms != UINT64_MAX)
		queue_heap_insert(js, j);
}

/*
 * Take j out of the heap and its destinations' lists.  give_back: a slot
 * it was woken for goes to the next waiter now (not when j is picked:
 * then its run may take it).  Returns the jobs woken.
 */
static unsigned
queue_job_unfile(struct queue_jobs *js, struct queue_job *j, bool give_back)
{
	struct queue_dest *d = j->woken_by;
	unsigned n = 0;

	if (j->heap_idx != QUEUE_NOWHERE)
		queue_heap_remove(js, j);
	queue_job_unwait(js, j);
	j->woken = false;
	if (d != NULL) {
		j->woken_by = NULL;
		d->nwoken--;
		if (give_back)
			n = queue_dest_kick(js, d);
		else
			queue_dest_gc(js, d);
	}
	return n;
}

/* ---- the interface ------------------------------------------------------ */

void
queue_jobs_init(struct queue_jobs *js, unsigned dest_max)
{
	memset(js, 0, sizeof(*js));
	js->dest_max = dest_max > 0 ? dest_max : 1;
}

static void
queue_job_free_blocked(struct queue_job *j)
{
	for (size_t i = 0; i < j->nblocked; i++)
		free(j->blocked[i]);
	free(j->blocked);
	j->blocked = NULL;
	j->nblocked = 0;
}

void
queue_jobs_clear(struct queue_jobs *js)
{
	while (js->first != NULL)
		(void)queue_jobs_remove(js, js->first);
	/* What is left has slots in use: nobody gives them back now. */
	for (size_t i = 0; i < js->dests.size; i++)
		while (js->dests.b[i] != NULL) {
			struct queue_dest *d = queue_dest_of(js->dests.b[i]);

			js->dests.b[i] = d->hn.next;
			free(d->name);
			free(d);
		}
	free(js->dests.b);
	free(js->by_qid.b);
	free(js->heap);
	memset(js, 0, sizeof(*js));
}

struct queue_job *
queue_jobs_find(struct queue_jobs *js, const char *qid)
{
	return queue_job_of(queue_htab_find(&js->by_qid, qid));
}

struct queue_job *
queue_jobs_add(struct queue_jobs *js, const char *qid, uint64_t due_ms)
{
	struct queue_job *j = xcalloc(1, sizeof(*j));

	ASSERT(queue_jobs_find(js, qid) == NULL);
	util_strlcpy(j->qid, qid, sizeof(j->qid));
	j->due_ms = due_ms;
	j->seq = js->seq++;
	j->heap_idx = QUEUE_NOWHERE;
	j->hn.key = j->qid;
	queue_htab_add(&js->by_qid, &j->hn);
	j->prev = js->last;
	*(js->last != NULL ? &js->last->next : &js->first) = j;
	js->last = j;
	js->njobs++;
	queue_job_file(js, j);
	return j;
}

unsigned
queue_jobs_refile(struct queue_jobs *js, struct queue_job *j)
{
	unsigned n = 0;

	if (j->woken && !j->running && !j->held && !j->deleted) {
		/* Still ready: it keeps the slot it was woken for. */
		queue_heap_remove(js, j);
		queue_heap_insert(js, j);
		return 0;
	}
	n = queue_job_unfile(js, j, true);
	queue_job_file(js, j);
	return n;
}

unsigned
queue_jobs_remove(struct queue_jobs *js, struct queue_job *j)
{
	unsigned n = queue_job_unfile(js, j, true);

	queue_htab_del(&js->by_qid, &j->hn);
	*(j->prev != NULL ? &j->prev->next : &js->first) = j->next;
	*(j->next != NULL ? &j->next->prev : &js->last) = j->prev;
	js->njobs--;
	queue_job_free_blocked(j);
	free(j->unrecorded);
	free(j);
	return n;
}

struct queue_job *
queue_jobs_peek(struct queue_jobs *js, uint64_t now_ms,
    uint64_t *next_due_out)
{
	struct queue_job *j = js->nheap > 0 ? js->heap[0] : NULL;

	*next_due_out = UINT64_MAX;
	if (j == NULL)
		return NULL;
	if (j->force || j->woken || j->due_ms <= now_ms)
		return j;
	*next_due_out = j->due_ms;
	return NULL;
}

bool
queue_jobs_take(struct queue_jobs *js, struct queue_job *j)
{
	bool force = j->force || j->flushed;

	ASSERT(!j->running);
	(void)queue_job_unfile(js, j, false);
	j->running = true;
	j->force = false;
	j->flushed = false;
	return force;
}

unsigned
queue_jobs_block(struct queue_jobs *js, struct queue_job *j, char **blocked,
    size_t n)
{
	char **old = j->blocked;
	size_t nold = j->nblocked;
	unsigned woke = 0;

	ASSERT(j->waits == NULL);
	j->blocked = blocked;
	j->nblocked = n;
	for (size_t i = 0; i < nold; i++) {
		struct queue_dest *d = queue_dest_of(queue_htab_find(
		    &js->dests, old[i]));

		if (d != NULL)
			woke += queue_dest_kick(js, d);
		free(old[i]);
	}
	free(old);
	return woke;
}

bool
queue_jobs_acquire(struct queue_jobs *js, const char *name)
{
	struct queue_dest *d = queue_dest_get(js, name);

	if (d->active >= js->dest_max)
		return false;
	d->active++;
	return true;
}

unsigned
queue_jobs_release(struct queue_jobs *js, const char *name)
{
	struct queue_dest *d = queue_dest_of(queue_htab_find(&js->dests,
	    name));

	ASSERT(d != NULL && d->active > 0);
	d->active--;
	return queue_dest_kick(js, d);
}
