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
 *
 * With the spool log on, where the journal keeps the order, a message
 * committed by its record (spool.c) may have files a power cut loses
 * until the log's next checkpoint, and a start writes them again from the
 * record: one removed meanwhile would come back.  So the syncer records
 * the interval's removals in the log instead (a REMOVED record each, one
 * write and one fdatasync for all, no journal commit), and a start skips
 * the messages so recorded and unlinks whatever the disk still holds of
 * them (logspool.c); the log's checkpoint makes the unlinks durable
 * before it passes those records.  A power cut before the records are
 * durable may find the message and deliver it again, as one before the
 * fsync would.  Where the log does not take them all, env/ is fsynced.
 *
 * A killed process leaves the page cache as it was, where the envelope
 * is gone: the start must not take that for a power cut's loss and write
 * the message again from its record.  So the envelope is not unlinked but
 * renamed into gone/ (the same journal transaction as an unlink: a power
 * cut keeps both or neither), which tells the start "removed" until the
 * removal's record is durable (a message held in memory, with no files,
 * gets a link to gone/.removed instead); the syncer unlinks gone/<qid>
 * then, and a start empties gone/ once it has begun the log's new epoch.
 * On a full disk where gone/ has no room for the name, the envelope is
 * unlinked: a kill before the record then may deliver the message again.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"

/* Is a removal recorded in the log rather than by an fsync of env/? */
static bool
spool_sync_by_log(const struct spool *sp)
{
	return sp->ordered && spool_log_on(sp);
}

/* Is gone/<qid> a link to gone/.removed (spool_gone_mark)? */
static bool
spool_gone_is_mark(struct spool *sp, const char *qid)
{
	struct stat a, b;

	return fstatat(sp->fd[SUB_GONE], qid, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
	    fstatat(sp->fd[SUB_GONE], SPOOL_GONE_MARK, &b,
	    AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino &&
	    a.st_dev == b.st_dev;
}

/*
 * Make the removals pending durable: qids' records, or fsync; then their
 * envelopes in gone/ tell nothing the disk does not (qids freed).
 */
static void
spool_sync_now(struct spool *sp, char **qids, size_t n)
{
	const char *err = NULL;
	size_t recorded = n > 0 ? spool_log_removed(sp, qids, n, &err) : 0;

	if ((n == 0 || recorded < n) && util_fsync(sp->fd[SUB_ENV]) == -1)
		log_msg(LOG_LVL_ERROR, "spool: fsync(%s/env): %s (the "
		    "messages removed last may be delivered again after a "
		    "crash)", sp->dir, strerror(errno));
	for (size_t i = 0; i < n; i++) {
		/* A message that never had files: no fsync of env/ says it
		   went, its mark does until the next start (which empties
		   gone/ once its log's records are stale). */
		if (i < recorded || !spool_gone_is_mark(sp, qids[i]))
			unlinkat(sp->fd[SUB_GONE], qids[i], 0);
		free(qids[i]);
	}
	free(qids);
}

/* The thread: once a removal asked, after gathering others, sync them. */
static void *
spool_syncer(void *arg)
{
	struct spool *sp = arg;
	struct timespec until;
	char **qids;
	size_t n;

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
		qids = sp->removed;	/* each unlinked from env/ already */
		n = sp->nremoved;
		sp->removed = NULL;
		sp->nremoved = 0;
		pthread_mutex_unlock(&sp->sync_mu);
		spool_sync_now(sp, qids, n);
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
		spool_sync_now(sp, sp->removed, sp->nremoved);
	pthread_cond_destroy(&sp->sync_cv);
	pthread_mutex_destroy(&sp->sync_mu);
}

/* qid's unlink in env/ to make durable soon: the thread is told, or made. */
static void
spool_sync_soon(struct spool *sp, const char *qid)
{
	char **qids = NULL;
	size_t n = 0;
	bool now;
	int rc;

	pthread_mutex_lock(&sp->sync_mu);
	if (spool_sync_by_log(sp)) {
		sp->removed = xreallocarray(sp->removed, sp->nremoved + 1,
		    sizeof(*sp->removed));
		sp->removed[sp->nremoved++] = xstrdup(qid);
	}
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
	if ((now = !sp->sync_started)) {
		qids = sp->removed;
		n = sp->nremoved;
		sp->removed = NULL;
		sp->nremoved = 0;
	}
	pthread_mutex_unlock(&sp->sync_mu);
	if (now)
		spool_sync_now(sp, qids, n);
}

/*
 * env/<qid> out of env/: moved into gone/ until the log records its
 * removal (by_log), else unlinked.  0, or -1 with errno.
 */
static int
spool_remove_env(struct spool *sp, const char *qid, bool by_log)
{
	if (by_log) {
		if (renameat(sp->fd[SUB_ENV], qid, sp->fd[SUB_GONE], qid) == 0)
			return 0;
		/* gone/ cannot grow on a full disk; an unlink needs no room. */
		if (errno != ENOSPC && errno != EDQUOT)
			return -1;
	}
	return unlinkat(sp->fd[SUB_ENV], qid, 0);
}

/*
 * gone/<qid> for a message that never had files (fresh.c): a link to
 * gone/.removed, made at the first need, so no inode is made per message;
 * an empty file of its own when that cannot be (too many links).  Not
 * made, a kill before the removal's record may deliver it again.
 */
static void
spool_gone_mark(struct spool *sp, const char *qid)
{
	int fd, gone = sp->fd[SUB_GONE];

	if (linkat(gone, SPOOL_GONE_MARK, gone, qid, 0) == 0)
		return;
	if (errno == ENOENT && (fd = openat(gone, SPOOL_GONE_MARK, O_WRONLY |
	    O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)) != -1) {
		close(fd);
		if (linkat(gone, SPOOL_GONE_MARK, gone, qid, 0) == 0)
			return;
	}
	if ((fd = openat(gone, qid, O_WRONLY | O_CREAT | O_NOFOLLOW |
	    O_CLOEXEC, 0600)) != -1)
		close(fd);
}

int
spool_remove(struct spool *sp, const char *qid, const char **err_out)
{
	bool recordless, by_log = spool_sync_by_log(sp);
	uint64_t seq;

	if (!spool_qid_is_valid(qid)) {
		*err_out = "invalid queue id";
		return -1;
	}
	if (spool_unwritten_forget(sp, qid, &seq)) {
		/* Its record pinned until the mark is made: no gap. */
		spool_gone_mark(sp, qid);
		spool_log_named(sp, seq);
		spool_sync_soon(sp, qid);
		return 0;
	}
	/* No record was ever written for it: no done/<qid> to unlink. */
	recordless = spool_fresh_drop(sp, qid);
	if (spool_remove_env(sp, qid, by_log) == -1 && errno != ENOENT) {
		*err_out = spool_err(by_log ? "rename" : "unlink", SUB_ENV,
		    qid, "", errno);
		return -1;
	}
	spool_sync_soon(sp, qid);
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
