/*
 * queue/jobs.h: the scheduler's index, private to queue/: one job per
 * queued message (found by queue id), the destinations with their slots in
 * use and the jobs waiting for one, and the order in which jobs become
 * ready.  Submit, pick, a slot's release and a job's removal each cost
 * O(log N) or less in the number of jobs.  No locks, no threads, no disk:
 * the queue calls it under its mutex and wakes the workers it is told to.
 */
#ifndef POSTERN_QUEUE_JOBS_H
#define POSTERN_QUEUE_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

struct queue_job;
struct queue_dest;

/* A string-keyed chain of a hash table; embedded in what it indexes. */
struct queue_hnode {
	struct queue_hnode	*next;
	const char		*key;		/* borrowed: the owner's */
};

struct queue_htab {
	struct queue_hnode	**b;		/* owned; the nodes are not */
	size_t			 size;		/* a power of two, or 0 */
	size_t			 n;
};

/* A job waiting for a slot of dest: one per destination it waits for. */
struct queue_wait {
	struct queue_job	*job;		/* borrowed: our owner */
	struct queue_dest	*dest;		/* borrowed: kept while we wait */
	struct queue_wait	*prev, *next;	/* dest's waiters, first come first */
};

struct queue_job {
	char			 qid[SPOOL_QID_MAX];
	uint64_t		 due_ms;	/* wall clock, epoch ms;
						   UINT64_MAX: no timer */
	bool			 running;	/* a worker owns it now */
	bool			 held;		/* operator hold: never picked */
	bool			 force;		/* flush: try every pending rcpt */
	bool			 deleted;	/* delete once the run ends */
	bool			 damaged;	/* its last run found it
						   damaged (queue_stats) */
	bool			 flushed;	/* a forced run found destinations
						   full: its next run is forced
						   too, once it is ready */
	char			**blocked;	/* owned: destinations at their
						   limit when last tried; the
						   job is ready when one frees */
	size_t			 nblocked;
	size_t			*unrecorded;	/* owned: recipients delivered whose
						   record could not be written:
						   done while this process runs */
	size_t			 nunrecorded;
	/* Where jobs.c filed it; change the fields above, then refile. */
	uint64_t		 seq;		/* submission order */
	bool			 woken;		/* a slot of woken_by is free
						   for it: ready */
	struct queue_dest	*woken_by;	/* counts it until it is picked */
	size_t			 heap_idx;	/* in the heap, or SIZE_MAX */
	struct queue_wait	*waits;		/* owned: nblocked, or NULL */
	struct queue_hnode	 hn;		/* by qid */
	struct queue_job	*prev, *next;	/* every job, oldest first */
};

/* Deliveries in progress per destination ("maildir /path", "relay ..."). */
struct queue_dest {
	char			*name;		/* owned */
	unsigned		 active;	/* slots in use */
	unsigned		 nwoken;	/* jobs woken for a free slot and
						   not picked yet */
	struct queue_wait	*first, *last;	/* jobs waiting for a slot */
	struct queue_hnode	 hn;		/* by name */
};

/*
 * The jobs and destinations of a queue.  A job that is not running, held
 * or deleted is in the heap when it can become ready by itself (forced,
 * woken, or a finite due time), and waits in the lists of its blocked
 * destinations unless it is ready anyway.  A destination lives while it
 * has a slot in use, a waiter, or a woken job not picked yet.
 */
struct queue_jobs {
	unsigned		 dest_max;	/* slots per destination */
	struct queue_htab	 by_qid;
	struct queue_htab	 dests;
	struct queue_job	*first, *last;	/* owned: every job */
	size_t			 njobs;
	struct queue_job	**heap;		/* owned array; borrowed jobs */
	size_t			 nheap, heap_cap;
	uint64_t		 seq;		/* the next job's */
};

void	queue_jobs_init(struct queue_jobs *js, unsigned dest_max);
/* Free every job and destination. */
void	queue_jobs_clear(struct queue_jobs *js);

/* The job of qid, or NULL.  Borrowed: valid until its removal. */
struct queue_job *queue_jobs_find(struct queue_jobs *js, const char *qid);
/* A new job for qid (not known yet), due at due_ms, after every other. */
struct queue_job *queue_jobs_add(struct queue_jobs *js, const char *qid,
	    uint64_t due_ms);
/*
 * File j again after its running, held, force, deleted or due_ms changed.
 * Returns how many other jobs became ready (a slot j was woken for and
 * gives up goes to the next waiter): wake that many workers.
 */
unsigned queue_jobs_refile(struct queue_jobs *js, struct queue_job *j);
/* Forget j and free it; returns the jobs that became ready, as refile. */
unsigned queue_jobs_remove(struct queue_jobs *js, struct queue_job *j);

/*
 * The job a worker should take at now_ms, or NULL: forced and woken jobs
 * first, then the earliest due one that is due, in submission order among
 * equals.  On NULL, *next_due_out is the earliest due time of the jobs that
 * wait (UINT64_MAX: none).
 */
struct queue_job *queue_jobs_peek(struct queue_jobs *js, uint64_t now_ms,
	    uint64_t *next_due_out);
/*
 * A worker takes j (peek's): it is running, no longer forced or woken.
 * Returns whether its run is forced (j->force or j->flushed).  A slot it was woken for stays its own
 * until queue_jobs_block at the end of the run.
 */
bool	queue_jobs_take(struct queue_jobs *js, struct queue_job *j);
/*
 * The run of j is over: blocked[0..n) (owned, taken; NULL, 0: none) are
 * the destinations that were at their limit.  A free slot of those it
 * waited for before, which the run left unused, goes to the next waiter.
 * Returns the jobs that became ready.  The caller then sets j's fields and
 * refiles it (or removes it).
 */
unsigned queue_jobs_block(struct queue_jobs *js, struct queue_job *j,
	    char **blocked, size_t n);

/* Take a slot of destination name; false when it is at its limit. */
bool	queue_jobs_acquire(struct queue_jobs *js, const char *name);
/*
 * Give a slot of name back (it must be held).  Its first waiter, if any,
 * becomes ready: returns 1 then (wake one worker), else 0.
 */
unsigned queue_jobs_release(struct queue_jobs *js, const char *name);

#endif
