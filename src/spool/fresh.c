/*
 * spool/fresh.c: the envelopes of messages committed by this process that
 * have no status record yet, kept in memory (up to SPOOL_FRESH_MAX), so
 * the queue's first load of such a message reads no file and looks for no
 * done/<qid>, and its removal unlinks no done/<qid>: none can exist.  A
 * message leaves at its first record (spool_append) or its removal.
 *
 * Why "no record" holds: a queue id is new at its commit (a done/ file
 * left by a crash is removed at the start, before any commit), every
 * record goes through spool_append, which forgets the message before it
 * writes, and no other process writes to a spool this one holds.
 *
 * Unwritten messages.  A message the spool log committed (commit.c) has
 * its envelope and content in the log's record, durable: its files only
 * matter once the log's checkpoint passes that record.  So such a
 * message is kept here whole, content too (up to SPOOL_UNWRITTEN_MAX
 * octets in all), with no file written, and its record stays pinned in
 * the log.  Most go before the checkpoint comes: delivered, then removed
 * with no file made or unlinked, and gone/<qid> a link to gone/.removed
 * (remove.c) until the log has their removal.  The others are written
 * into msg/ and env/ unsynced (the checkpoint's syncfs makes them
 * durable) and their record unpinned: by the checkpoint, before it moves
 * (spool_unwritten_write_all), before a status record is appended
 * (spool_append; but a recipient's outcome, which the log makes durable,
 * is kept here with the message and written into done/ with its files),
 * and when a delivery needs the files.  A crash before
 * that replays the record (logspool.c).  The queue delivers an unwritten
 * message's content from here (spool_content_mem).  Messages are kept so
 * only within what the last checkpoint found room for on the spool's
 * file system (half of what was free, counting each message's content
 * and 8 KiB for its files' blocks and inodes), and while it wrote every
 * file it had to: a full disk refuses a message before its 250, as
 * without the log, not with no room for its files after it.  Knows
 * nothing of the queue.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log/log.h"

/* What an unwritten message is counted for: its content and, for the
 * blocks and inodes of its two files, this much. */
#define UNWRITTEN_FILES_OCTETS	8192

/* FILED: its files are on disk (or it has no content here at all). */
enum fresh_state { FRESH_FILED, FRESH_UNWRITTEN, FRESH_WRITING };

struct spool_fresh {
	struct spool_fresh	*next;
	char			 qid[SPOOL_QID_MAX];
	enum fresh_state	 state;
	uint64_t		 seq;		/* unwritten: its log record */
	char			*content;	/* owned while unwritten */
	size_t			 content_len;
	struct util_buf		 lines;		/* records held: unwritten */
	size_t			 len;
	char			 text[];	/* the envelope file's bytes */
};

static size_t
spool_fresh_slot(const char *qid)
{
	return util_hash_str(qid) % SPOOL_FRESH_SLOTS;
}

/* The entry of qid, or NULL; *pp_out: the link to it.  Locked. */
static struct spool_fresh *
spool_fresh_find(struct spool *sp, const char *qid,
    struct spool_fresh ***pp_out)
{
	struct spool_fresh **pp = &sp->fresh[spool_fresh_slot(qid)];

	for (; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->qid, qid) == 0)
			break;
	*pp_out = pp;
	return *pp;
}

/* Unlink f (at *pp) and free it.  Locked. */
static void
spool_fresh_unlink(struct spool *sp, struct spool_fresh **pp)
{
	struct spool_fresh *f = *pp;

	*pp = f->next;
	sp->nfresh--;
	if (f->content != NULL) {
		sp->unwritten_bytes -= f->content_len + UNWRITTEN_FILES_OCTETS;
		sp->nunwritten--;
	}
	free(f->content);
	util_buf_clear(&f->lines);
	free(f);
}

void
spool_fresh_init(struct spool *sp)
{
	pthread_mutex_init(&sp->fresh_mu, NULL);
	pthread_cond_init(&sp->fresh_cv, NULL);
}

void
spool_fresh_clear(struct spool *sp)
{
	for (size_t i = 0; i < SPOOL_FRESH_SLOTS; i++)
		while (sp->fresh[i] != NULL)
			spool_fresh_unlink(sp, &sp->fresh[i]);
	pthread_cond_destroy(&sp->fresh_cv);
	pthread_mutex_destroy(&sp->fresh_mu);
}

/* A new entry for qid, or NULL when one exists or there is no room. */
static struct spool_fresh *
spool_fresh_add(struct spool *sp, const char *qid, const char *text,
    size_t len)
{
	struct spool_fresh *f, **pp;

	if (sp->nfresh >= SPOOL_FRESH_MAX ||
	    spool_fresh_find(sp, qid, &pp) != NULL)
		return NULL;
	f = xmalloc(sizeof(*f) + len);
	util_strlcpy(f->qid, qid, sizeof(f->qid));
	f->state = FRESH_FILED;
	f->seq = 0;
	f->content = NULL;
	f->content_len = 0;
	f->lines = (struct util_buf){ 0 };
	f->len = len;
	memcpy(f->text, text, len);
	f->next = NULL;
	*pp = f;
	sp->nfresh++;
	return f;
}

void
spool_fresh_put(struct spool *sp, const char *qid, const char *text,
    size_t len)
{
	pthread_mutex_lock(&sp->fresh_mu);
	(void)spool_fresh_add(sp, qid, text, len);
	pthread_mutex_unlock(&sp->fresh_mu);
}

char *
spool_fresh_get(struct spool *sp, const char *qid, size_t *len_out,
    char **lines_out, size_t *lines_len_out)
{
	struct spool_fresh *f, **pp;
	char *copy = NULL;

	*lines_out = NULL;
	*lines_len_out = 0;
	pthread_mutex_lock(&sp->fresh_mu);
	if ((f = spool_fresh_find(sp, qid, &pp)) != NULL) {
		copy = xmalloc(f->len + 1);
		memcpy(copy, f->text, f->len);
		*len_out = f->len;
		if (f->lines.len > 0) {
			*lines_out = xmalloc(f->lines.len);
			memcpy(*lines_out, f->lines.data, f->lines.len);
			*lines_len_out = f->lines.len;
		}
	}
	pthread_mutex_unlock(&sp->fresh_mu);
	return copy;
}

bool
spool_fresh_drop(struct spool *sp, const char *qid)
{
	struct spool_fresh *f, **pp;

	pthread_mutex_lock(&sp->fresh_mu);
	if ((f = spool_fresh_find(sp, qid, &pp)) != NULL) {
		/* An unwritten one is written (spool_append) or removed
		   (spool_unwritten_forget) first. */
		ASSERT(f->state == FRESH_FILED);
		spool_fresh_unlink(sp, pp);
	}
	pthread_mutex_unlock(&sp->fresh_mu);
	return f != NULL;
}

/* ---- unwritten messages ---- */

/* Is there room for one more, of content_len octets?  Locked. */
static bool
spool_unwritten_fits(const struct spool *sp, size_t content_len)
{
	return sp->nfresh < SPOOL_FRESH_MAX && content_len <=
	    SPOOL_UNWRITTEN_MAX && sp->unwritten_bytes + content_len +
	    UNWRITTEN_FILES_OCTETS <= sp->unwritten_room;
}

bool
spool_unwritten_may(struct spool *sp, size_t content_len)
{
	bool may;

	pthread_mutex_lock(&sp->fresh_mu);
	may = spool_unwritten_fits(sp, content_len);
	pthread_mutex_unlock(&sp->fresh_mu);
	return may;
}

bool
spool_unwritten_put(struct spool *sp, const char *qid, const char *env,
    size_t env_len, const char *content, size_t content_len, uint64_t seq)
{
	struct spool_fresh *f = NULL;

	pthread_mutex_lock(&sp->fresh_mu);
	if (spool_unwritten_fits(sp, content_len) &&
	    (f = spool_fresh_add(sp, qid, env, env_len)) != NULL) {
		f->state = FRESH_UNWRITTEN;
		f->seq = seq;
		/* One more octet: a message of none still has a buffer. */
		f->content = xmalloc(content_len + 1);
		memcpy(f->content, content, content_len);
		f->content_len = content_len;
		sp->unwritten_bytes += content_len + UNWRITTEN_FILES_OCTETS;
		sp->nunwritten++;
	}
	pthread_mutex_unlock(&sp->fresh_mu);
	return f != NULL;
}

/* "call(sub/qidsuffix): strerror", errno kept. */
static int
spool_unwritten_fail(const char *call, enum spool_sub sub, const char *qid,
    const char *suffix, const char **err_out)
{
	int saved = errno;

	*err_out = spool_err(call, sub, qid, suffix, saved);
	errno = saved;
	return -1;
}

/* f's records held in memory appended to done/<qid>, unsynced (their
 * log records keep them until the checkpoint's syncfs).  0, or -1 with
 * *err_out. */
static int
spool_unwritten_lines(struct spool *sp, const struct spool_fresh *f,
    const char **err_out)
{
	int fd, rc = 0;

	if (f->lines.len == 0)
		return 0;
	fd = openat(sp->fd[SUB_DONE], f->qid, O_WRONLY | O_CREAT | O_APPEND |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1)
		return spool_unwritten_fail("open", SUB_DONE, f->qid, "",
		    err_out);
	if (util_write_all(fd, f->lines.data, f->lines.len, -1) == -1) {
		spool_unwritten_fail("write", SUB_DONE, f->qid, "", err_out);
		unlinkat(sp->fd[SUB_DONE], f->qid, 0);
		rc = -1;
	}
	close(fd);
	return rc;
}

/*
 * f's files written, unsynced: the content, locked until the envelope
 * names it (a start's sweep leaves a locked msg/ file alone), then the
 * envelope, made in env/<qid>.tmp and renamed.  f is ours (WRITING).
 * 0, or -1 with *err_out and nothing left behind.
 */
static int
spool_unwritten_files(struct spool *sp, const struct spool_fresh *f,
    const char **err_out)
{
	char tmp[SPOOL_QID_MAX + 8];
	int mfd, efd, rc = -1;

	snprintf(tmp, sizeof(tmp), "%s.tmp", f->qid);
	mfd = openat(sp->fd[SUB_MSG], f->qid, O_WRONLY | O_CREAT | O_TRUNC |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (mfd == -1)
		return spool_unwritten_fail("open", SUB_MSG, f->qid, "",
		    err_out);
	if (flock(mfd, LOCK_EX) == -1 || util_write_all(mfd, f->content,
	    f->content_len, -1) == -1) {
		spool_unwritten_fail("write", SUB_MSG, f->qid, "", err_out);
		goto out;
	}
	efd = openat(sp->fd[SUB_ENV], tmp, O_WRONLY | O_CREAT | O_TRUNC |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (efd == -1) {
		spool_unwritten_fail("open", SUB_ENV, f->qid, ".tmp", err_out);
		goto out;
	}
	if (util_write_all(efd, f->text, f->len, -1) == -1)
		spool_unwritten_fail("write", SUB_ENV, f->qid, ".tmp", err_out);
	else if (renameat(sp->fd[SUB_ENV], tmp, sp->fd[SUB_ENV], f->qid) ==
	    -1)
		spool_unwritten_fail("rename", SUB_ENV, f->qid, ".tmp",
		    err_out);
	else if (spool_unwritten_lines(sp, f, err_out) == -1)
		unlinkat(sp->fd[SUB_ENV], f->qid, 0);
	else
		rc = 0;
	close(efd);
	if (rc == -1)
		unlinkat(sp->fd[SUB_ENV], tmp, 0);
out:
	if (rc == -1)
		unlinkat(sp->fd[SUB_MSG], f->qid, 0);
	close(mfd);
	return rc;
}

/*
 * Write f (found under the lock, held) out if it is unwritten, waiting
 * for a write another thread has under way.  0 once it has its files,
 * or -1 with *err_out (still unwritten).  The lock is dropped meanwhile.
 */
static int
spool_unwritten_write_locked(struct spool *sp, const char *qid,
    const char **err_out)
{
	struct spool_fresh *f, **pp;
	uint64_t seq;
	int rc;

	for (;;) {
		if ((f = spool_fresh_find(sp, qid, &pp)) == NULL ||
		    f->state == FRESH_FILED)
			return 0;
		if (f->state == FRESH_UNWRITTEN)
			break;
		pthread_cond_wait(&sp->fresh_cv, &sp->fresh_mu);
	}
	f->state = FRESH_WRITING;	/* nobody frees or changes it now */
	pthread_mutex_unlock(&sp->fresh_mu);
	rc = spool_unwritten_files(sp, f, err_out);
	pthread_mutex_lock(&sp->fresh_mu);
	seq = f->seq;
	if (rc == 0) {
		f->state = FRESH_FILED;
		free(f->content);
		f->content = NULL;
		sp->unwritten_bytes -= f->content_len + UNWRITTEN_FILES_OCTETS;
		sp->nunwritten--;
		/* With records on disk now, loads read them there. */
		if (f->lines.len > 0 && spool_fresh_find(sp, qid, &pp) != NULL)
			spool_fresh_unlink(sp, pp);
	} else
		f->state = FRESH_UNWRITTEN;
	pthread_cond_broadcast(&sp->fresh_cv);
	if (rc == 0) {
		/* The checkpoint may pass the record: the files are named. */
		pthread_mutex_unlock(&sp->fresh_mu);
		spool_log_named(sp, seq);
		pthread_mutex_lock(&sp->fresh_mu);
	}
	return rc;
}

int
spool_unwritten_write(struct spool *sp, const char *qid,
    const char **err_out)
{
	int rc;

	pthread_mutex_lock(&sp->fresh_mu);
	rc = spool_unwritten_write_locked(sp, qid, err_out);
	pthread_mutex_unlock(&sp->fresh_mu);
	return rc;
}

void
spool_unwritten_check_room(struct spool *sp, bool wrote)
{
	uint64_t room = 0;
	struct statvfs v;

	/* Half of what is free: others write there too. */
	if (wrote && fstatvfs(sp->fd[SUB_MSG], &v) == 0) {
		room = (uint64_t)v.f_bavail * v.f_frsize / 2;
		if (v.f_files > 0 && v.f_favail / 4 * UNWRITTEN_FILES_OCTETS <
		    room)
			room = v.f_favail / 4 * UNWRITTEN_FILES_OCTETS;
	}
	pthread_mutex_lock(&sp->fresh_mu);
	sp->unwritten_room = room < SPOOL_UNWRITTEN_MAX ? (size_t)room :
	    SPOOL_UNWRITTEN_MAX;
	pthread_mutex_unlock(&sp->fresh_mu);
}

void
spool_unwritten_write_all(struct spool *sp)
{
	const char *err = NULL;
	char (*qids)[SPOOL_QID_MAX] = NULL;
	size_t n = 0, failed = 0;

	/* Those unwritten now; each written on its own, failures or not. */
	pthread_mutex_lock(&sp->fresh_mu);
	if (sp->nunwritten > 0)
		qids = xcalloc(sp->nunwritten, sizeof(*qids));
	for (size_t i = 0; i < SPOOL_FRESH_SLOTS && n < sp->nunwritten; i++)
		for (struct spool_fresh *f = sp->fresh[i]; f != NULL &&
		    n < sp->nunwritten; f = f->next)
			if (f->state == FRESH_UNWRITTEN)
				util_strlcpy(qids[n++], f->qid, SPOOL_QID_MAX);
	pthread_mutex_unlock(&sp->fresh_mu);
	for (size_t i = 0; i < n; i++)
		if (spool_unwritten_write(sp, qids[i], &err) == -1)
			failed++;
	free(qids);
	spool_unwritten_check_room(sp, failed == 0);
	if (failed > 0)
		log_msg(LOG_LVL_ERROR, "spool: cannot write %zu message%s the "
		    "log holds into %s files: %s; the log keeps %s, retrying, "
		    "and messages are written before their 250 meanwhile",
		    failed, failed == 1 ? "" : "s", failed == 1 ? "its" :
		    "their", err, failed == 1 ? "it" : "them");
}

/* The entry of qid once no write of it is under way, if it is still
 * unwritten then, else NULL.  Locked (dropped while waiting). */
static struct spool_fresh *
spool_unwritten_find(struct spool *sp, const char *qid,
    struct spool_fresh ***pp_out)
{
	struct spool_fresh *f;

	while ((f = spool_fresh_find(sp, qid, pp_out)) != NULL &&
	    f->state == FRESH_WRITING)
		pthread_cond_wait(&sp->fresh_cv, &sp->fresh_mu);
	return f != NULL && f->state == FRESH_UNWRITTEN ? f : NULL;
}

bool
spool_unwritten_line(struct spool *sp, const char *qid, const char *line,
    size_t len)
{
	struct spool_fresh *f, **pp;

	pthread_mutex_lock(&sp->fresh_mu);
	if ((f = spool_unwritten_find(sp, qid, &pp)) != NULL)
		util_buf_add(&f->lines, line, len);
	pthread_mutex_unlock(&sp->fresh_mu);
	return f != NULL;
}

void
spool_unwritten_unline(struct spool *sp, const char *qid, const char *line,
    size_t len)
{
	struct spool_fresh *f, **pp;

	pthread_mutex_lock(&sp->fresh_mu);
	if ((f = spool_unwritten_find(sp, qid, &pp)) != NULL) {
		/* The last copy that starts a line: another thread may have
		   kept a line of another recipient after it. */
		char *d = f->lines.data;
		for (size_t at = f->lines.len; at >= len && len > 0; at--) {
			size_t o = at - len;
			if ((o == 0 || d[o - 1] == '\n') &&
			    memcmp(d + o, line, len) == 0) {
				memmove(d + o, d + at, f->lines.len - at);
				f->lines.len -= len;
				break;
			}
		}
	}
	pthread_mutex_unlock(&sp->fresh_mu);
}

bool
spool_unwritten_forget(struct spool *sp, const char *qid, uint64_t *seq_out)
{
	struct spool_fresh *f, **pp;
	bool unwritten = false;

	pthread_mutex_lock(&sp->fresh_mu);
	if ((f = spool_unwritten_find(sp, qid, &pp)) != NULL) {
		unwritten = true;
		*seq_out = f->seq;
		spool_fresh_unlink(sp, pp);
	}
	pthread_mutex_unlock(&sp->fresh_mu);
	return unwritten;
}

char *
spool_content_mem(struct spool *sp, const char *qid, size_t *len_out)
{
	struct spool_fresh *f, **pp;
	char *copy = NULL;

	pthread_mutex_lock(&sp->fresh_mu);
	if ((f = spool_fresh_find(sp, qid, &pp)) != NULL &&
	    f->content != NULL) {
		copy = xmalloc(f->content_len + 1);
		memcpy(copy, f->content, f->content_len);
		*len_out = f->content_len;
	}
	pthread_mutex_unlock(&sp->fresh_mu);
	return copy;
}
