/*
 * spool/log.c: the spool log, <spool>/log: what lets the fast path
 * acknowledge a message after one device write instead of a journal
 * commit.  The Maildir copies are written into tmp/ without being synced;
 * then one record naming them and holding their bytes is appended here
 * and made durable by fdatasync; only then are the copies renamed and
 * linked into new/ (spool_log_named says so), and the client gets its 250.
 * The file is written whole with zeros once (never fallocated), so a
 * record's write changes no metadata: a data write and a cache flush.
 * Several messages waiting at once share one write and one flush.  A
 * fast-path record is answered by a callback: of each batch one thread
 * waits and writes it, and runs the callbacks of the others it made
 * durable, so the rest go back to work instead of sleeping.
 *
 * A message committed into the spool where the journal keeps the order
 * is recorded the same way, envelope and content (spool.c): its files
 * are written unsynced, renamed once the record is durable; the
 * removals' syncer adds a small record for each message it removes.
 *
 * A checkpoint thread, every second or when half the log is used, makes
 * the copies and spool files durable (syncfs of each file system holding
 * them) and then moves the checkpoint in the header past their records;
 * space is reused only behind it.  A start replays what lies after it
 * (logrecover.c).  Each append's outcome is counted (logged, too large,
 * full, failed), and a full log is warned of at most once a minute: the
 * commits it turns away are fsynced, slower.  Knows nothing of Maildir
 * deliveries or the spool's layout beyond the paths it is given.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"
#include "metrics/metrics.h"

#define LOG_CKPT_MS	1000	/* checkpoint at least this often */
#define LOG_FULL_WARN_NS (60 * 1000000000ULL)	/* a full log: warned of at
						   most this often */

struct log_fs {
	dev_t	 dev;
	int	 fd;		/* a folder on it: syncfs; errors since open */
};

struct log_open {
	uint64_t seq;
	size_t	 off;		/* where the record starts */
};

/*
 * A record waited for, listed under mu: by a thread in log_wait (fn NULL,
 * on that thread's stack), or by a callback (fn, on the heap), which the
 * thread that wrote the record calls.
 */
enum { LW_WAIT, LW_DURABLE, LW_AGAIN };
struct log_waiter {
	uint64_t		 seq;
	atomic_uint		 state;	/* LW_*: AGAIN, look again under mu */
	unsigned		 answer;	/* the state it is woken to */
	spool_log_done_fn	 fn;
	void			*arg;
	struct log_waiter	*next;
};

struct spool_log {
	struct spool	*sp;		/* borrowed: its unwritten messages */
	int		 fd;
	uint64_t	 size;
	pthread_mutex_t	 mu;
	/*
	 * The records waited for.  A batch written wakes the threads of
	 * those it holds, which go on without taking mu again, and calls
	 * their callbacks; with a batch placed meanwhile, one of its threads
	 * is woken to write it (elected, until it or another starts).  A
	 * callback joins a batch only with a thread of the batch waiting, or
	 * one elected: one sees to its write (log_batch_covered).
	 */
	struct log_waiter *waiters;
	bool		 elected;
	pthread_cond_t	 free_cv;	/* a batch taken, or a write over:
					   room for one that would wrap */
	unsigned	 free_waiters;	/* on free_cv */
	pthread_cond_t	 ckpt_cv;	/* the checkpoint thread's */
	pthread_t	 thread;
	bool		 stop;
	bool		 broken;	/* a write failed: appends refused */
	struct spool_loghdr hdr;	/* the durable checkpoint */
	uint64_t	 next_seq;	/* the next record's */
	uint64_t	 durable_seq;	/* records before it are durable */
	size_t		 head;		/* where the next record goes */
	/* Records placed but not yet written: one contiguous piece. */
	struct util_buf	 batch;
	size_t		 batch_off;
	uint64_t	 batch_seq;	/* its first record's */
	bool		 writing;
	struct log_fs	*fs;		/* the copies' file systems */
	size_t		 nfs;
	bool		 fs_unknown;	/* one could not be opened: sync(2) */
	bool		 spool_noted;	/* the spool's is among fs */
	/* Records whose copies are not in new/ yet: never checkpointed. */
	struct log_open	*open;
	size_t		 nopen;
	/* Commits turned away for want of room, for the warning. */
	uint64_t	 full_n;	/* since the last warning */
	uint64_t	 full_warned_ns;	/* its time (metrics_now_ns) */
	bool		 full_warned;	/* there was one */
};

size_t
spool_log_data_off(void)
{
	return SPOOL_LOG_HDR;
}

int
spool_log_write_hdr(int fd, struct spool_loghdr *h)
{
	unsigned char b[64];

	h->gen++;
	spool_loghdr_encode(h, b);
	/* Two copies, alternately: a torn write leaves the other. */
	if (util_write_all(fd, b, sizeof(b), (off_t)(h->gen % 2) * 512) ==
	    -1)
		return -1;
	return util_fdatasync(fd);
}

/* Bytes of the data area in use (between the checkpoint and head). */
static size_t
log_used(const struct spool_log *lg)
{
	size_t tail = (size_t)lg->hdr.off;

	if (lg->next_seq == lg->hdr.seq)
		return 0;
	if (lg->head > tail)
		return lg->head - tail;
	return (size_t)lg->size - tail + lg->head - SPOOL_LOG_HDR;
}

/*
 * Where a record of len bytes goes, or SIZE_MAX when there is no room
 * before the checkpoint.  The live area runs from the checkpoint to head.
 */
static size_t
log_place(const struct spool_log *lg, size_t len)
{
	size_t tail = (size_t)lg->hdr.off, end = (size_t)lg->size;
	bool empty = lg->next_seq == lg->hdr.seq;

	if (empty || lg->head > tail) {
		if (lg->head + len <= end)
			return lg->head;
		if (SPOOL_LOG_HDR + len < tail)
			return SPOOL_LOG_HDR;
		return SIZE_MAX;
	}
	return lg->head + len < tail ? lg->head : SIZE_MAX;
}

/* Remember the file system of dir (dev), for the checkpoint's syncfs:
 * true once it is among them. */
static bool
log_note_fs(struct spool_log *lg, dev_t dev, const char *dir)
{
	int fd;

	for (size_t i = 0; i < lg->nfs; i++)
		if (lg->fs[i].dev == dev)
			return true;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1) {
		/* The checkpoint falls back to sync(2) meanwhile. */
		log_msg(LOG_LVL_WARN, "spool log: open(%s): %s", dir,
		    strerror(errno));
		lg->fs_unknown = true;
		return false;
	}
	lg->fs = xrealloc(lg->fs, (lg->nfs + 1) * sizeof(*lg->fs));
	lg->fs[lg->nfs++] = (struct log_fs){ dev, fd };
	return true;
}

/* The same for a copy at path: its folder's. */
static void
log_note_copy_fs(struct spool_log *lg, const struct spool_log_copy *c)
{
	char *dir, *slash;

	for (size_t i = 0; i < lg->nfs; i++)
		if (lg->fs[i].dev == c->dev)
			return;
	dir = xstrdup(c->path);
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	log_note_fs(lg, c->dev, dir);
	free(dir);
}

static void	log_unpin(struct spool_log *, uint64_t);

/*
 * Take from the list, under mu, the waiters the batch just written
 * answers: all once a write failed (a callback's record unpinned), else
 * those whose records are durable, and a thread of the batch placed
 * meanwhile to write it.
 */
static struct log_waiter *
log_answered(struct spool_log *lg)
{
	struct log_waiter *out = NULL, *w, **pp = &lg->waiters;

	while ((w = *pp) != NULL)
		if (lg->broken || w->seq < lg->durable_seq) {
			*pp = w->next;
			w->answer = lg->broken ? LW_AGAIN : LW_DURABLE;
			if (lg->broken && w->fn != NULL)
				log_unpin(lg, w->seq);
			w->next = out;
			out = w;
		} else
			pp = &w->next;
	if (lg->batch.len == 0)
		return out;
	for (pp = &lg->waiters; (w = *pp) != NULL; pp = &w->next)
		if (w->fn == NULL) {
			*pp = w->next;
			w->answer = LW_AGAIN;
			w->next = out;
			lg->elected = true;
			return w;
		}
	return out;
}

/*
 * Whether a thread sees to the write of the batch being placed: one
 * elected to write it, or one waiting for a record in it while another
 * batch is written.  Called with mu held.
 */
static bool
log_batch_covered(const struct spool_log *lg)
{
	if (lg->elected)
		return true;
	if (!lg->writing)
		return false;
	for (const struct log_waiter *w = lg->waiters; w != NULL; w = w->next)
		if (w->fn == NULL && w->seq >= lg->batch_seq)
			return true;
	return false;
}

/* A callback's record answered: counted, then fn called; w freed. */
static void
log_call(struct log_waiter *w)
{
	bool ok = w->answer == LW_DURABLE;

	metrics_inc(MET_SPOOL_LOG_COMMITS, ok ? MET_SL_LOGGED :
	    MET_SL_FAILED, 0);
	w->fn(w->arg, ok ? 0 : -1, w->seq);
	free(w);
}

/* Write the batch placed so far and wait for it; called with mu held. */
static void
log_write_batch(struct spool_log *lg)
{
	struct util_buf b = lg->batch;
	size_t off = lg->batch_off;
	uint64_t upto = lg->next_seq;
	struct log_waiter *w, *next, *calls = NULL;
	int rc;

	lg->batch = (struct util_buf){ 0 };
	lg->writing = true;
	lg->elected = false;
	if (lg->free_waiters > 0)	/* the batch is free again */
		pthread_cond_broadcast(&lg->free_cv);
	pthread_mutex_unlock(&lg->mu);
	util_pool_block_begin();
	rc = util_write_all(lg->fd, b.data, b.len, (off_t)off);
	if (rc == 0)
		rc = fdatasync(lg->fd);
	util_pool_block_end();
	if (rc == -1)
		log_msg(LOG_LVL_ERROR, "spool log: write(%zu bytes at %zu): "
		    "%s; acknowledging with fsync from now on", b.len, off,
		    strerror(errno));
	util_buf_clear(&b);
	pthread_mutex_lock(&lg->mu);
	if (rc == 0)
		lg->durable_seq = upto;
	else
		lg->broken = true;
	lg->writing = false;
	w = log_answered(lg);
	/* One waiting to place a record that wraps may write the batch now. */
	if (lg->free_waiters > 0)
		pthread_cond_broadcast(&lg->free_cv);
	pthread_mutex_unlock(&lg->mu);
	/* A waiter may be gone once its state is set: read it first. */
	for (; w != NULL; w = next) {
		next = w->next;
		if (w->fn != NULL) {
			w->next = calls;
			calls = w;
			continue;
		}
		atomic_store(&w->state, w->answer);
		util_futex_wake(&w->state, 1);
	}
	/* The threads first: a callback may take its time. */
	for (; calls != NULL; calls = next) {
		next = calls->next;
		log_call(calls);
	}
	pthread_mutex_lock(&lg->mu);
}

/*
 * Place rec (sealed here) in the batch: its sequence, or 0 if no room.
 * pin: no checkpoint passes it before log_unpin (what it names is not
 * published yet).
 */
static uint64_t
log_enqueue(struct spool_log *lg, unsigned char *rec, size_t len, bool pin)
{
	size_t at;

	for (;;) {
		if (lg->broken || (at = log_place(lg, len)) == SIZE_MAX)
			return 0;
		/* A batch is one piece: one that would wrap waits. */
		if (lg->batch.len == 0 || at == lg->batch_off + lg->batch.len)
			break;
		/*
		 * For the batch to be taken, not for a thread that would
		 * take it: its records' threads may all have gone on, or be
		 * waiting here too (the removals placed before this one).
		 * With no write under way, this thread writes it.
		 */
		if (!lg->writing) {
			log_write_batch(lg);
			continue;
		}
		lg->free_waiters++;
		util_pool_block_begin();
		pthread_cond_wait(&lg->free_cv, &lg->mu);
		util_pool_block_end();
		lg->free_waiters--;
	}
	if (lg->batch.len == 0) {
		lg->batch_off = at;
		lg->batch_seq = lg->next_seq;
	}
	spool_logrec_seal(rec, lg->next_seq, lg->hdr.epoch);
	util_buf_add(&lg->batch, rec, len);
	if (pin) {
		lg->open = xrealloc(lg->open, (lg->nopen + 1) *
		    sizeof(*lg->open));
		lg->open[lg->nopen++] = (struct log_open){ lg->next_seq, at };
	}
	lg->head = at + len;
	if (log_used(lg) + len > (lg->size - SPOOL_LOG_HDR) / 2)
		pthread_cond_signal(&lg->ckpt_cv);
	return lg->next_seq++;
}

/* Record seq's copies are in new/ (or never will be); called with mu held. */
static void
log_unpin(struct spool_log *lg, uint64_t seq)
{
	for (size_t i = 0; i < lg->nopen; i++)
		if (lg->open[i].seq == seq) {
			lg->open[i] = lg->open[--lg->nopen];
			return;
		}
}

/*
 * Until record seq is durable: 0, or -1 with *err_out.  Called with mu
 * held; returns with it released.
 */
static int
log_wait(struct spool_log *lg, uint64_t seq, const char **err_out)
{
	struct log_waiter w;
	unsigned st;

	while (lg->durable_seq <= seq) {
		if (lg->broken) {
			pthread_mutex_unlock(&lg->mu);
			*err_out = util_err("spool log: write failed");
			return -1;
		} else if (!lg->writing) {
			log_write_batch(lg);
			continue;
		}
		/* In the batch being written, or in the next one. */
		w = (struct log_waiter){ .seq = seq, .next = lg->waiters };
		atomic_init(&w.state, LW_WAIT);
		lg->waiters = &w;
		pthread_mutex_unlock(&lg->mu);
		util_pool_block_begin();
		while ((st = atomic_load(&w.state)) == LW_WAIT)
			util_futex_wait(&w.state, LW_WAIT);
		util_pool_block_end();
		if (st == LW_DURABLE)
			return 0;
		pthread_mutex_lock(&lg->mu);
	}
	pthread_mutex_unlock(&lg->mu);
	return 0;
}

/*
 * One more commit the full log turned away; called with mu held.  How
 * many since the last warning when one is due now (at most once a
 * minute; *first_out: none before), else 0.
 */
static uint64_t
log_full_due(struct spool_log *lg, bool *first_out)
{
	uint64_t now = metrics_now_ns(), n;

	lg->full_n++;
	if (lg->full_warned && now - lg->full_warned_ns < LOG_FULL_WARN_NS)
		return 0;
	*first_out = !lg->full_warned;
	lg->full_warned = true;
	lg->full_warned_ns = now;
	n = lg->full_n;
	lg->full_n = 0;
	return n;
}

/*
 * A record the log did not take (no room, or the log broken by an
 * earlier failed write): counted, the full log warned of; 1.  Called with
 * mu held; returns with it released.
 */
static int
log_refused(struct spool_log *lg)
{
	uint64_t nfull = 0;
	bool first = false, broken = lg->broken;

	if (!broken)
		nfull = log_full_due(lg, &first);
	pthread_mutex_unlock(&lg->mu);
	metrics_inc(MET_SPOOL_LOG_COMMITS, broken ? MET_SL_FAILED :
	    MET_SL_FULL, 0);
	if (nfull > 0)
		log_msg(LOG_LVL_WARN, "spool log: full: %ju commit%s fsynced "
		    "instead since %s; a larger \"spool log-size\" keeps "
		    "them on the log", (uintmax_t)nfull, nfull == 1 ? "" : "s",
		    first ? "the start" : "the last warning");
	return 1;
}

/* Wait for record seq as log_wait does, unpinned if it failed; counted. */
static int
log_settle(struct spool_log *lg, uint64_t seq, const char **err_out)
{
	int rc = log_wait(lg, seq, err_out);

	if (rc != 0) {
		pthread_mutex_lock(&lg->mu);
		log_unpin(lg, seq);
		pthread_mutex_unlock(&lg->mu);
	}
	metrics_inc(MET_SPOOL_LOG_COMMITS, rc == 0 ? MET_SL_LOGGED :
	    MET_SL_FAILED, 0);
	return rc;
}

/*
 * rec (len bytes, encoded, no larger than the log takes) appended,
 * pinned, and waited for: 0 (its sequence in *seq_out), 1 (refused:
 * log_refused), -1 (the write failed).  The outcome is counted.  Called
 * with mu held; returns with it released.
 */
static int
log_commit(struct spool_log *lg, unsigned char *rec, size_t len,
    uint64_t *seq_out, const char **err_out)
{
	ASSERT(len <= spool_log_record_max(lg->size));
	if ((*seq_out = log_enqueue(lg, rec, len, true)) == 0)
		return log_refused(lg);
	return log_settle(lg, *seq_out, err_out);
}

/*
 * As log_commit, but the outcome goes to fn: 0, fn called once (maybe
 * already), on this thread or on the one that writes the record; or 1
 * (refused), fn not called.  While a thread sees to the write of the
 * batch the record joins, this one goes on at once; else it waits for
 * the record and writes it, and the records of others too.
 */
static int
log_commit_async(struct spool_log *lg, unsigned char *rec, size_t len,
    spool_log_done_fn fn, void *arg)
{
	struct log_waiter *w;
	const char *err;
	uint64_t seq;

	ASSERT(len <= spool_log_record_max(lg->size));
	if ((seq = log_enqueue(lg, rec, len, true)) == 0)
		return log_refused(lg);
	if (log_batch_covered(lg)) {
		w = xcalloc(1, sizeof(*w));
		*w = (struct log_waiter){ .seq = seq, .fn = fn, .arg = arg,
		    .next = lg->waiters };
		lg->waiters = w;
		pthread_mutex_unlock(&lg->mu);
		return 0;
	}
	fn(arg, log_settle(lg, seq, &err), seq);
	return 0;
}

/* A record larger than the log takes: counted; 1, the caller fsyncs. */
static int
log_too_large(void)
{
	metrics_inc(MET_SPOOL_LOG_COMMITS, MET_SL_TOO_LARGE, 0);
	return 1;
}

int
spool_log_append(struct spool *sp, const struct spool_log_msg *m,
    spool_log_done_fn fn, void *arg)
{
	struct spool_log *lg = sp->log;
	struct spool_logcopy *cs;
	struct spool_logrec r = { .kind = SPOOL_LR_COPIES,
	    .received = m->received, .sender = (char *)m->sender,
	    .hdr = (char *)m->hdr, .content = m->content,
	    .content_len = m->content_len, .ncopies = m->ncopies };
	unsigned char *rec;
	size_t len;
	int rc;

	if (lg == NULL || m->ncopies == 0)
		return 1;
	if (m->ncopies > UINT16_MAX)
		return log_too_large();
	r.copies = cs = xcalloc(m->ncopies, sizeof(*cs));
	util_strlcpy(r.qid, m->qid, sizeof(r.qid));
	for (size_t i = 0; i < m->ncopies; i++)
		cs[i] = (struct spool_logcopy){ (char *)m->copies[i].path,
		    (char *)m->copies[i].addr };
	len = spool_logrec_size(&r);
	if (len > spool_log_record_max(lg->size)) {
		free(cs);
		return log_too_large();
	}
	rec = xmalloc(len);
	spool_logrec_encode(&r, rec);	/* the checksum's bulk, unlocked */
	free(cs);
	pthread_mutex_lock(&lg->mu);
	for (size_t i = 0; i < m->ncopies; i++)
		log_note_copy_fs(lg, &m->copies[i]);
	rc = log_commit_async(lg, rec, len, fn, arg);
	free(rec);
	return rc;
}

/* The checkpoint syncs the spool's file system from now on.  mu held. */
static void
log_note_spool_fs(struct spool_log *lg, struct spool *sp)
{
	struct stat st;

	/* Until it is known, each checkpoint falls back to sync(2). */
	if (!lg->spool_noted && fstat(sp->fd[SUB_ENV], &st) == 0)
		lg->spool_noted = log_note_fs(lg, st.st_dev, sp->dir);
}

bool
spool_log_fits_spooled(const struct spool *sp, const char *qid,
    size_t env_len, size_t content_len)
{
	return sp->log != NULL && spool_logrec_spooled_size(strlen(qid),
	    env_len, content_len) <= spool_log_record_max(sp->log->size);
}

int
spool_log_append_spooled(struct spool *sp, const char *qid, const char *env,
    const char *content, size_t content_len, spool_log_done_fn fn,
    void *arg, uint64_t *seq_out, const char **err_out)
{
	struct spool_log *lg = sp->log;
	struct spool_logrec r = { .kind = SPOOL_LR_SPOOLED, .sender = "",
	    .hdr = (char *)env, .content = content,
	    .content_len = content_len };
	unsigned char *rec;
	size_t len;
	int rc;

	*seq_out = 0;
	util_strlcpy(r.qid, qid, sizeof(r.qid));
	len = spool_logrec_size(&r);
	/* Too large: counted by the caller, which asked fits_spooled. */
	if (lg == NULL || len > spool_log_record_max(lg->size))
		return 1;
	rec = xmalloc(len);
	spool_logrec_encode(&r, rec);
	pthread_mutex_lock(&lg->mu);
	log_note_spool_fs(lg, sp);
	rc = fn != NULL ? log_commit_async(lg, rec, len, fn, arg) :
	    log_commit(lg, rec, len, seq_out, err_out);
	free(rec);
	return rc;
}

size_t
spool_log_removed(struct spool *sp, char *const *qids, size_t n,
    const char **err_out)
{
	struct spool_log *lg = sp->log;
	struct spool_logrec r = { .kind = SPOOL_LR_REMOVED, .sender = "",
	    .hdr = "" };
	unsigned char rec[SPOOL_LOGREC_REMOVED_MAX];
	uint64_t seq = 0, last = 0;
	size_t done = 0;

	if (lg == NULL)
		return 0;
	pthread_mutex_lock(&lg->mu);
	/* No checkpoint passes these before the unlinks are durable. */
	log_note_spool_fs(lg, sp);
	for (; done < n; done++, last = seq) {
		util_strlcpy(r.qid, qids[done], sizeof(r.qid));
		spool_logrec_encode(&r, rec);
		if ((seq = log_enqueue(lg, rec, spool_logrec_size(&r),
		    false)) == 0)
			break;
	}
	if (last == 0)
		pthread_mutex_unlock(&lg->mu);
	else if (log_wait(lg, last, err_out) == -1)
		done = 0;
	return done;
}

int
spool_log_line(struct spool *sp, const char *qid, const char *line,
    size_t len, const char **err_out)
{
	struct spool_log *lg = sp->log;
	struct spool_logrec r = { .kind = SPOOL_LR_LINE, .sender = "" };
	unsigned char *rec;
	uint64_t seq;
	size_t size;
	int rc;

	if (lg == NULL || len > SPOOL_LOGREC_LINE_MAX ||
	    memchr(line, '\0', len) != NULL)
		return 1;
	util_strlcpy(r.qid, qid, sizeof(r.qid));
	r.hdr = xstrndup(line, len);
	size = spool_logrec_size(&r);
	rec = xmalloc(size);
	spool_logrec_encode(&r, rec);
	free(r.hdr);
	pthread_mutex_lock(&lg->mu);
	/* No checkpoint passes it before done/ is synced. */
	log_note_spool_fs(lg, sp);
	if ((seq = log_enqueue(lg, rec, size, false)) == 0)
		rc = log_refused(lg);
	else
		rc = log_settle(lg, seq, err_out);
	free(rec);
	return rc;
}

void
spool_log_named(struct spool *sp, uint64_t seq)
{
	struct spool_log *lg = sp->log;

	pthread_mutex_lock(&lg->mu);
	log_unpin(lg, seq);
	pthread_mutex_unlock(&lg->mu);
}

size_t
spool_log_record_max(uint64_t size)
{
	return (size_t)((size - SPOOL_LOG_HDR) / 4);
}

/*
 * Make every copy named by a record placed so far durable, then move the
 * checkpoint past those records, up to the first whose copies are still
 * in tmp/ (a checkpoint past it would not make their names in new/
 * durable).  Called with mu held; drops it meanwhile.
 * -1 (logged) when a sync failed: the records stay, the next tick retries.
 */
static int
log_checkpoint(struct spool_log *lg)
{
	struct spool_loghdr h;
	size_t nfs;
	bool all;
	int *fds, rc = 0;

	/* Messages still unwritten get their files, which the syncs below
	   make durable; those committed meanwhile stay pinned. */
	pthread_mutex_unlock(&lg->mu);
	spool_unwritten_write_all(lg->sp);
	pthread_mutex_lock(&lg->mu);
	h = lg->hdr;
	nfs = lg->nfs;
	all = lg->fs_unknown;
	h.seq = lg->next_seq;
	h.off = lg->head;
	for (size_t i = 0; i < lg->nopen; i++)
		if (lg->open[i].seq < h.seq) {
			h.seq = lg->open[i].seq;
			h.off = lg->open[i].off;
		}
	if (h.seq == lg->hdr.seq)
		return 0;
	fds = xcalloc(nfs + 1, sizeof(*fds));
	for (size_t i = 0; i < nfs; i++)
		fds[i] = lg->fs[i].fd;	/* kept open until the log closes */
	lg->fs_unknown = false;
	pthread_mutex_unlock(&lg->mu);
	if (all)
		sync();		/* reports no error: the best there is */
	for (size_t i = 0; i < nfs && rc == 0; i++)
		if ((rc = syncfs(fds[i])) == -1)
			log_msg(LOG_LVL_ERROR, "spool log: checkpoint: syncfs: "
			    "%s; keeping the records, retrying",
			    strerror(errno));
	free(fds);
	if (rc == 0 && (rc = spool_log_write_hdr(lg->fd, &h)) == -1)
		log_msg(LOG_LVL_ERROR, "spool log: checkpoint: write(header): "
		    "%s; retrying", strerror(errno));
	pthread_mutex_lock(&lg->mu);
	if (rc == 0) {
		lg->hdr = h;
		if (lg->next_seq == h.seq)
			lg->head = (size_t)h.off;
	}
	return rc;
}

static void *
log_thread(void *arg)
{
	struct spool_log *lg = arg;
	struct timespec ts;

	pthread_mutex_lock(&lg->mu);
	while (!lg->stop) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += LOG_CKPT_MS / 1000;
		pthread_cond_timedwait(&lg->ckpt_cv, &lg->mu, &ts);
		if (!lg->stop)
			(void)log_checkpoint(lg);
	}
	pthread_mutex_unlock(&lg->mu);
	return NULL;
}

struct spool_log *
spool_log_start(struct spool *sp, int fd, uint64_t size,
    const struct spool_loghdr *h)
{
	struct spool_log *lg = xcalloc(1, sizeof(*lg));
	pthread_condattr_t ca;

	lg->sp = sp;
	lg->fd = fd;
	lg->size = size;
	lg->hdr = *h;
	lg->next_seq = lg->durable_seq = h->seq;
	lg->head = (size_t)h->off;
	pthread_mutex_init(&lg->mu, NULL);
	pthread_cond_init(&lg->free_cv, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lg->ckpt_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&lg->thread, NULL, log_thread, lg) != 0)
		fatal("pthread_create: cannot start the spool log's thread");
	return lg;
}

void
spool_log_stop(struct spool_log **lgp)
{
	struct spool_log *lg = *lgp;

	if (lg == NULL)
		return;
	pthread_mutex_lock(&lg->mu);
	lg->stop = true;
	pthread_cond_signal(&lg->ckpt_cv);
	pthread_mutex_unlock(&lg->mu);
	pthread_join(lg->thread, NULL);
	/* A clean stop leaves nothing to replay: the messages still held
	   in memory are written, which unpins their records in lg (those
	   that cannot be, or a broken log, leave their records to the
	   next start's replay). */
	pthread_mutex_lock(&lg->mu);
	for (int tries = 0; tries < 3 && !lg->broken &&
	    log_checkpoint(lg) == -1; tries++)
		;
	pthread_mutex_unlock(&lg->mu);
	*lgp = NULL;
	for (size_t i = 0; i < lg->nfs; i++)
		close(lg->fs[i].fd);
	free(lg->fs);
	free(lg->open);
	util_buf_clear(&lg->batch);
	close(lg->fd);
	pthread_cond_destroy(&lg->free_cv);
	pthread_cond_destroy(&lg->ckpt_cv);
	pthread_mutex_destroy(&lg->mu);
	free(lg);
}

bool
spool_log_on(const struct spool *sp)
{
	return sp->log != NULL;
}
