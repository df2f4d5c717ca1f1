/*
 * queue/queue_private.h: shared between the files of queue/ and its unit
 * tests; nobody else includes it.
 */
#ifndef POSTERN_QUEUE_PRIVATE_H
#define POSTERN_QUEUE_PRIVATE_H

#include "queue/queue.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "queue/jobs.h"
#include "spool/spool.h"
#include "util/util.h"

struct queue {
	struct spool		*sp;		/* borrowed */
	pthread_mutex_t		 mu;		/* guards everything below */
	struct queue_opts	 o;		/* hostname owned (copied); a
					   reload changes the times, the
					   hostname and the destination
					   limit: queue_opts_now() */
	char			**old_names;	/* owned: hostnames a reload
					   replaced, which an attempt may
					   still use */
	size_t			 nold_names;
	pthread_cond_t		 work_cv;	/* a job may be ready */
	pthread_cond_t		 idle_cv;	/* a job finished */
	struct queue_jobs	 jobs;		/* and destinations (jobs.h) */
	unsigned		 nrunning;
	bool			 stopping;
	uint64_t		 cut_ms;	/* monotonic: queue_free cuts the
					   deliveries still running then
					   (queue_shutdown; 0: at once) */
	int			 stop_pipe[2];	/* readable: every worker's
					   waits end (deliver_stop_fd_set) */
	pthread_t		*threads;	/* owned */
	unsigned		 nthreads;
	/* The control socket (control.c). */
	int			 ctl_fd;	/* listening socket, or -1 */
	int			 ctl_wake[2];	/* pipe: stop the thread */
	bool			 ctl_running;
	pthread_t		 ctl_thread;
};

/* q->o as it is now, for one attempt or notice (copied under q->mu). */
void	queue_opts_now(struct queue *q, struct queue_opts *out);

/*
 * The delay before retry number attempts (1, 2, ...): retry_min doubled
 * per attempt up to retry_max, plus jitter of rnd % (delay / 8 + 1), so
 * the result lies in [delay, delay + delay / 8].  Pure.
 */
uint64_t queue_backoff_ms(unsigned attempts, uint64_t min_ms, uint64_t max_ms,
	    uint32_t rnd);

/*
 * When a recipient deferred for the attempts-th time at now_ms is tried
 * next, for a message received at received_ms: now + backoff, but never
 * past the end of its lifetime (then it is tried once more and expires).
 */
uint64_t queue_next_attempt_ms(const struct queue_opts *o, unsigned attempts,
	    uint64_t now_ms, uint64_t received_ms, uint32_t rnd);
/* True if a message received at received_ms has outlived o->lifetime_ms. */
bool	queue_expired(const struct queue_opts *o, uint64_t now_ms,
	    uint64_t received_ms);

/* A delivery status notification (RFC 3464) to build. */
struct queue_dsn {
	const char		*reporting_mta;	/* our host name */
	const struct spool_env	*env;		/* the original message */
	const size_t		*idx;		/* recipients reported */
	size_t			 n;
	bool			 delayed;	/* a delay warning, not a failure */
	const char		*headers;	/* original header block (LF) */
	size_t			 headers_len;
	int64_t			 now;		/* epoch s: Date, Last-Attempt */
	int64_t			 retry_until;	/* delayed: epoch s of expiry */
	const char		*qid;		/* the DSN's own queue id */
	const char		*boundary;	/* MIME boundary, unique */
};

/*
 * Append the whole DSN message (LF line ends, Received: first) to out: a
 * global one (RFC 6533) when queue_dsn_is_global(d).
 */
void	queue_dsn_build(const struct queue_dsn *d, struct util_buf *out);
/*
 * True when the DSN d must be an internationalised one (RFC 6533): its
 * sender or a reported recipient is not ASCII, which a plain DSN's fields
 * cannot hold.  It is then in UTF-8 and needs SMTPUTF8 itself.  A message
 * that merely came with SMTPUTF8 gets a plain one, 7-bit throughout, which
 * reaches a sender behind a server without SMTPUTF8.
 */
bool	queue_dsn_is_global(const struct queue_dsn *d);
/*
 * The RFC 3463 status of a failure text: the enhanced code of an SMTP
 * reply in why ("550 5.1.1 ..."), else 5.0.0 (temp: 4.0.0).  Its class
 * is always 5 (temp: 4), whatever the reply said: "550 4.2.2" is 5.2.2.
 */
void	queue_dsn_status(const char *why, bool temp, char out[16]);

/* Now, in ms since the epoch: due times are wall clock (they persist). */
uint64_t queue_wall_ms(void);

/*
 * Recipients idx[0..n) of env, delivered in an earlier run whose record
 * could not be written: done in env, and recorded now if the spool takes
 * it (the message's removal when nothing else keeps it); those it still
 * refuses keep unrecorded set (attempt.c).
 */
void	queue_record_again(struct queue *q, struct spool_env *env,
	    const size_t *idx, size_t n);
/*
 * Recipients in one transaction upstream, at most: the least a server must
 * take (RFC 5321 4.5.3.1.8); a message's others go in further ones.
 */
#define QUEUE_TXN_RCPTS	100

/*
 * Try recipients idx[0..n) of env once, together (one, or several of one
 * action of a kind that takes them together; their one destination slot
 * is held), and record the outcome of each in the spool
 * and in env (attempt.c); a delivery it cannot record is done in env all
 * the same, with unrecorded set.
 */
void	queue_attempt(struct queue *q, struct spool_env *env,
	    const size_t *idx, size_t n, const char *content_path);
/*
 * The same for recipients idx[0..n) of env at once, all of kind k, which
 * takes several copies at once (its deliver_copies); their slots are held.
 */
void	queue_attempt_copies(struct queue *q, struct spool_env *env,
	    const struct deliver_kind *k, const size_t *idx, size_t n,
	    const char *content_path);

/*
 * Every recipient of env is done and every failure reported: keep a copy
 * (spool_keeps) and remove the message from the spool.  0, or -1 with
 * *err_out (spool_remove's).
 */
int	queue_finish(struct queue *q, const struct spool_env *env,
	    const char **err_out);
/*
 * Did a delivery of this thread's run remove its message (queue_finish),
 * being the last thing it was kept for?  Reset at the start of a run.
 */
bool	queue_msg_is_gone(void);
void	queue_gone_reset(void);
/* The content of this thread's run in memory (mem[0..len), borrowed for
 * the run), or NULL: at its path (queue_msg_content). */
void	queue_content_use(const char *mem, size_t len);

/* bounce.c: bounce the failures not reported yet; record each as reported. */
void	queue_bounce(struct queue *q, struct spool_env *env);
/* Once past delay_warning, tell the sender which recipients still wait. */
void	queue_warn_delay(struct queue *q, struct spool_env *env, uint64_t now);

/* Start and stop the control socket thread (control.c). */
int	queue_control_start(struct queue *q, const char **err_out);
void	queue_control_stop(struct queue *q);

#endif
