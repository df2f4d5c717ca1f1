/*
 * spool/remove.c: a message's removal once every recipient is done, and
 * the one fsync of env/ that makes a short interval's removals durable
 * together, on a thread of its own.  Knows nothing of why a message is
 * removed.
 *
 * What a crash leaves (see spool.c for the commit): env/<qid> is
 * unlinked first, then the content and the records.  Until the next
 * fsync of env/, at most SPOOL_REMOVE_SYNC_MS later, a crash may find the
 * envelope again and deliver the message again: one duplicate, never a
 * loss (everything the removal throws away was delivered or reported).
 * Where the journal keeps the order (util_fs_ordered) a restart finds
 * the envelope with its content and records, or neither; elsewhere it may
 * find an envelope whose content is gone, which spool_list removes.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"

/* The thread: fsync env/ once a removal asked, after gathering others. */
static void *
spool_syncer(void *arg)
{
	struct spool *sp = arg;
	struct timespec until;

	pthread_mutex_lock(&sp->sync_mu);
	for (;;) {
		if (!sp->sync_dirty) {
			if (sp->sync_stop)
				break;
			pthread_cond_wait(&sp->sync_cv, &sp->sync_mu);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += SPOOL_REMOVE_SYNC_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		/* The removals of the next SPOOL_REMOVE_SYNC_MS join in. */
		while (!sp->sync_stop && pthread_cond_timedwait(&sp->sync_cv,
		    &sp->sync_mu, &until) != ETIMEDOUT)
			;
		sp->sync_dirty = false;
		pthread_mutex_unlock(&sp->sync_mu);
		if (fsync(sp->fd[SUB_ENV]) == -1)
			log_msg(LOG_LVL_ERROR, "spool: fsync(%s/env): %s (the "
			    "messages removed last may be delivered again "
			    "after a crash)", sp->dir, strerror(errno));
		pthread_mutex_lock(&sp->sync_mu);
	}
	pthread_mutex_unlock(&sp->sync_mu);
	return NULL;
}

void
spool_sync_init(struct spool *sp)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&sp->sync_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sp->sync_cv, &ca);
	pthread_condattr_destroy(&ca);
}

void
spool_sync_clear(struct spool *sp)
{
	pthread_mutex_lock(&sp->sync_mu);
	sp->sync_stop = true;
	pthread_cond_signal(&sp->sync_cv);
	pthread_mutex_unlock(&sp->sync_mu);
	/* It syncs what is pending before it ends. */
	if (sp->sync_started)
		pthread_join(sp->sync_thread, NULL);
	else if (sp->sync_dirty)
		(void)fsync(sp->fd[SUB_ENV]);
	pthread_cond_destroy(&sp->sync_cv);
	pthread_mutex_destroy(&sp->sync_mu);
}

/* An unlink in env/ to make durable soon: the thread is told, or made. */
static void
spool_sync_soon(struct spool *sp)
{
	int rc;

	pthread_mutex_lock(&sp->sync_mu);
	if (!sp->sync_dirty) {
		sp->sync_dirty = true;
		if (!sp->sync_started) {
			rc = pthread_create(&sp->sync_thread, NULL,
			    spool_syncer, sp);
			sp->sync_started = rc == 0;
			if (rc != 0)	/* then now, in this thread */
				sp->sync_dirty = false;
		} else
			pthread_cond_signal(&sp->sync_cv);
	}
	bool now = !sp->sync_started;
	pthread_mutex_unlock(&sp->sync_mu);
	if (now && fsync(sp->fd[SUB_ENV]) == -1)
		log_msg(LOG_LVL_ERROR, "spool: fsync(%s/env): %s", sp->dir,
		    strerror(errno));
}

int
spool_remove(struct spool *sp, const char *qid, const char **err_out)
{
	bool recordless;

	if (!spool_qid_is_valid(qid)) {
		*err_out = "invalid queue id";
		return -1;
	}
	/* No record was ever written for it: no done/<qid> to unlink. */
	recordless = spool_fresh_drop(sp, qid);
	if (unlinkat(sp->fd[SUB_ENV], qid, 0) == -1 && errno != ENOENT) {
		*err_out = spool_err("unlink", SUB_ENV, qid, "", errno);
		return -1;
	}
	spool_sync_soon(sp);
	if (unlinkat(sp->fd[SUB_MSG], qid, 0) == -1 && errno != ENOENT) {
		*err_out = spool_err("unlink", SUB_MSG, qid, "", errno);
		return -1;
	}
	if (!recordless && unlinkat(sp->fd[SUB_DONE], qid, 0) == -1 &&
	    errno != ENOENT) {
		*err_out = spool_err("unlink", SUB_DONE, qid, "", errno);
		return -1;
	}
	return 0;
}
