/*
 * queue/queue.h: takes committed messages from the spool and delivers each
 * pending recipient through deliver/, on worker threads; retries temporary
 * failures with exponential backoff and jitter up to a lifetime, sends a
 * delay warning and RFC 3464 bounces (as new spooled messages from <>);
 * limits deliveries in total and per destination; removes the spool entry
 * once every recipient is durably done.  A unix socket <spool>/control.sock
 * lets `postern queue` and `postern send` talk to the running queue.
 * Knows nothing of the wire format of each action, nor of connections.
 */
#ifndef POSTERN_QUEUE_H
#define POSTERN_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deliver/deliver.h"

struct config;
struct spool;
struct spool_env;
struct queue;

/*
 * Route rcpt of a message from sender ("" for <>) as the server's router
 * does, aliases included: 0 after adding to env each place it goes to
 * (queue_env_add_target: the address after aliases, the action kind as the
 * spool stores it, its argument); -1 with *err_out ("CODE X.Y.Z text",
 * static) when it has none, a 4xx code meaning it may have one later.
 * Called from queue worker threads: must be thread-safe.
 */
typedef int (*queue_route_fn)(void *arg, const char *sender, const char *rcpt,
	    struct spool_env *env, const char **err_out);

/*
 * Deliver recipients idx[0..n) of env (content at content_path): one, or
 * several of one action whose kind takes them at once (struct
 * deliver_kind: together).  st_out[g] (zeroed by the queue) gets
 * idx[g]'s outcome, with the deciding reply or the reason in its text
 * when not DELIVER_OK.  The server passes its own (outbound actions
 * through the configuration in force); without one the queue calls
 * queue_deliver_default.
 */
typedef void (*queue_deliver_fn)(void *arg, const struct spool_env *env,
	    const size_t *idx, size_t n, const char *content_path,
	    const char *hostname, struct deliver_rcpt_status *st_out);

struct queue_opts {
	const char	*hostname;	/* borrowed: Reporting-MTA, Maildir names */
	unsigned	 concurrency;	/* deliveries at once (worker threads) */
	unsigned	 dest_concurrency; /* at once per destination (kind+arg) */
	uint64_t	 retry_min_ms;	/* first retry after this (plus jitter) */
	uint64_t	 retry_max_ms;	/* backoff doubles up to this */
	uint64_t	 lifetime_ms;	/* then a temporary failure is final */
	uint64_t	 delay_warning_ms; /* one "delayed" DSN after; 0: never */
	queue_route_fn	 route;		/* for DSNs to the sender; NULL: none
					   can be sent (logged) */
	void		*route_arg;
	queue_deliver_fn deliver;	/* NULL: queue_deliver_default */
	void		*deliver_arg;
	bool		 control;	/* listen on <spool>/control.sock */
	uint64_t	 pickup_ms;	/* rescan the spool this often; 0: never */
	bool		 sweep_maildirs; /* run deliver_maildir_sweeper while
					   the queue lives (default on) */
};

/* Defaults from cfg's "queue" statements (cfg NULL: built-in defaults). */
void	queue_opts_init(struct queue_opts *o, const struct config *cfg);

/* Start o->concurrency delivery workers over sp (borrowed). */
struct queue *queue_new_opts(struct spool *sp, const struct queue_opts *o);
/* The same with default options, nthreads workers, no control socket. */
struct queue *queue_new(struct spool *sp, const char *hostname,
	    unsigned nthreads);
/* Hand over a committed message; thread-safe, never blocks on the disk. */
void	queue_submit(struct queue *q, const char *qid);
/*
 * Submit every committed message found in the spool (start-up recovery),
 * each tried once now whatever its schedule; held ones stay held.
 */
void	queue_recover(struct queue *q);
/*
 * A reload's options: the retry times, the lifetime, the delay warning,
 * the limit per destination and the hostname apply to what comes next;
 * the number of workers changes only at restart (false: it differs).
 */
bool	queue_reconfigure(struct queue *q, const struct queue_opts *o);
/* Wait until nothing is being delivered or due now (tests, shutdown). */
void	queue_drain(struct queue *q);
/*
 * A stop has begun: the deliveries in progress then, and those that start
 * meanwhile, may go on until grace_ms from now (a later call never moves
 * that later); queue_free cuts short those still running then.
 */
void	queue_shutdown(struct queue *q, uint64_t grace_ms);
/*
 * Stop the workers after their current delivery, which is cut short (its
 * waits end, it is deferred and stays in the spool) when it runs past the
 * time queue_shutdown gave (without it: at once); the control socket
 * answers until they have; then free.
 */
void	queue_free(struct queue **qp);

/* The queue's messages by state, for metrics (any thread). */
struct queue_stats {
	unsigned	active;		/* being delivered now */
	unsigned	ready;		/* due, waiting for a worker */
	unsigned	waiting;	/* due, waiting for a free slot of a
					   destination at its limit */
	unsigned	deferred;	/* due later: a retry */
	unsigned	held;		/* on hold */
	unsigned	damaged;	/* damaged: left for the operator */
};
void	queue_stats(struct queue *q, struct queue_stats *out);

/*
 * A new message from sender ("" for <>) to rcpt, routed now (o->route, as
 * SMTP recipients are), committed to the spool and queued: "Received: by HOST (postern) id QID"
 * first, then head[0..head_len), then src's content from byte src_off on
 * (src NULL: none).  0 once committed; -1 with *err_out when the spool
 * or a table failed (a retry may work); -2 when rcpt has no route.  Thread-safe;
 * blocks on the disk.
 */
int	queue_inject(struct queue *q, const char *sender, const char *rcpt,
	    const char *head, size_t head_len, const struct deliver_msg *src,
	    uint64_t src_off, const char **err_out);
/*
 * Called by a queue_deliver_fn on its thread before it returns a
 * temporary failure: not again before ms from now (an HTTP Retry-After),
 * if that is later than the backoff's time (and within the lifetime).
 */
void	queue_retry_after(uint64_t ms);
/*
 * Called by a queue_deliver_fn on its thread: the recipient went through
 * an action of this kind (static), not the kind the spool recorded (its
 * action's name now names an action of another kind).  The attempt's log
 * line and metrics say kind.
 */
void	queue_delivered_as(const char *kind);
/*
 * For a delivery function, on the queue's thread, once recipients
 * idx[0..n) of env, ones it was called with, are delivered (an upstream's
 * 250 to the data, before QUIT): record them durably now, so that a crash
 * from here on never delivers them again, and the queue does not record
 * them a second time.  When they were the last thing the message was kept
 * for, the record is the message's removal from the spool, one for all of
 * them.  0, or -1 with *err_out (the queue then records those left when
 * the delivery returns).
 */
int	queue_settle(struct queue *q, const struct spool_env *env,
	    const size_t *idx, size_t n, const char **err_out);
/* The hook deliveries use to call queue_inject() on q. */
void	queue_injector(struct queue *q, struct deliver_inject *out);

/*
 * Operator commands (the control socket calls them).  flush: try qid now,
 * whatever its schedule ("on hold; release it first" when it is held), or
 * with NULL every message the spool holds that is not on hold, those the
 * pickup scan has not found yet too.  hold: deliver
 * nothing of qid until released (persisted in the spool).  delete: remove
 * qid from the spool without any DSN.  A run of qid in progress ends after
 * the delivery it is making: no other recipient, no DSN.
 * 0, or -1 with *err_out ("no such message", ...).  Thread-safe.
 */
int	queue_flush(struct queue *q, const char *qid, const char **err_out);
int	queue_hold(struct queue *q, const char *qid, bool hold,
	    const char **err_out);
int	queue_delete(struct queue *q, const char *qid, const char **err_out);

/*
 * The content for the deliver_msg a queue_deliver_fn builds: at
 * content_path, or in memory (m->content, content_path NULL) where the
 * spool holds the message unwritten and every kind it goes to reads it
 * from there (struct deliver_kind: from_memory).  On the delivering
 * thread only.
 */
void	queue_msg_content(struct deliver_msg *m, const char *content_path);

/*
 * The actions the queue delivers by itself: maildir and discard.  The
 * outbound kinds need the server's deliver function and wait without it.
 */
void	queue_deliver_default(void *arg, const struct spool_env *env,
	    const size_t *idx, size_t n, const char *content_path,
	    const char *hostname, struct deliver_rcpt_status *st_out);

/*
 * A queue_route_fn over a router (arg: struct router *, which must outlive
 * every call): route_resolve() as a local submission.  Blocks on backend
 * tables: worker threads and the command line only.
 */
int	queue_route_router(void *arg, const char *sender, const char *rcpt,
	    struct spool_env *env, const char **err_out);

/*
 * Add recipient addr (action kind, arg) to env unless the message already
 * goes there: a Maildir (kind "maildir" or "maildir-owner") is the same
 * place for any address, the other kinds are the same address.  False
 * when it was there, so the Maildir gets one copy.
 */
bool	queue_env_add_target(struct spool_env *env, const char *addr,
	    const char *kind, const char *arg);

/*
 * Client side of the control socket, for the CLI: send one command line
 * ("flush", "flush QID", "hold QID", "release QID", "delete QID",
 * "submit QID", "ping", "writeout") to the server whose spool folder is
 * spool_dir.  0 with the reply line in *reply_out (malloc'd, "ok ..." or
 * "error: ..."); -1 with errno (ENOENT or ECONNREFUSED: no server is
 * running) and *err_out.
 */
int	queue_control_request(const char *spool_dir, const char *cmd,
	    char **reply_out, const char **err_out);
/*
 * Does the control socket of the spool folder spool_dir (as the server
 * will name it) fit in a unix socket's address?  0, or -1 with *err_out
 * (static text) naming the path and the limit.
 */
int	queue_control_check(const char *spool_dir, const char **err_out);

#endif
