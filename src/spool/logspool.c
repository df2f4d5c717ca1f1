/*
 * spool/logspool.c: the spooled messages' part of the log's replay at
 * start (logrecover.c).  A SPOOLED record holds a message committed into
 * the spool after one device write (spool.c): its envelope's and content's
 * bytes.  Unless a later REMOVED record, or its envelope in gone/ (a
 * removal whose record was not yet written: remove.c), says it was
 * removed since, each of its two files found with the record's exact size
 * is synced, and one missing, empty or short is written again from the
 * record (a file in tmp/, fsync, rename into env/ or msg/), content first.
 * What the disk still holds of a message with a REMOVED record (its
 * removal was made durable by that record alone) is unlinked.  A LINE
 * record's line (a recipient's outcome) is appended to its message's
 * done/ file if the file lacks it, unless the message was removed since.  The
 * folders are synced once at the end.  Knows nothing of Maildirs.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log/log.h"

static int
ls_qid_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void
spool_logspool_note_removed(struct spool_logspool *ls,
    const struct spool_logrec *r)
{
	ls->removed = xreallocarray(ls->removed, ls->nremoved + 1,
	    sizeof(*ls->removed));
	ls->removed[ls->nremoved++] = xstrdup(r->qid);
	ls->sorted = false;
}

static bool
ls_was_removed(struct spool_logspool *ls, const char *qid)
{
	const char *key = qid;

	if (!ls->sorted && ls->nremoved > 1)
		qsort(ls->removed, ls->nremoved, sizeof(*ls->removed),
		    ls_qid_cmp);
	ls->sorted = true;
	return ls->nremoved > 0 && bsearch(&key, ls->removed, ls->nremoved,
	    sizeof(*ls->removed), ls_qid_cmp) != NULL;
}

/* Was qid removed since its records: a REMOVED record, or its envelope
 * in gone/ (a removal whose record was not yet written: remove.c)? */
static bool
ls_gone(struct spool_logspool *ls, struct spool *sp, const char *qid)
{
	struct stat st;

	return ls_was_removed(ls, qid) || fstatat(sp->fd[SUB_GONE], qid, &st,
	    AT_SYMLINK_NOFOLLOW) == 0;
}

/* Is sub/<qid> a file of exactly want bytes?  Synced if so. */
static bool
ls_found(struct spool *sp, enum spool_sub sub, const char *qid, size_t want)
{
	struct stat st;
	bool ok;
	int fd;

	fd = openat(sp->fd[sub], qid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1)
		return false;
	ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size == want && util_fsync(fd) == 0;
	close(fd);
	return ok;
}

/* sub/<qid> written again from buf[0..len), durably but for its name. */
static int
ls_rewrite(struct spool *sp, enum spool_sub sub, const char *qid,
    const char *buf, size_t len)
{
	char tmp[SPOOL_QID_MAX + 8];
	int fd, rc = -1;

	snprintf(tmp, sizeof(tmp), "%s.log", qid);
	fd = openat(sp->fd[SUB_TMP], tmp, O_WRONLY | O_CREAT | O_TRUNC |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd != -1 && util_write_all(fd, buf, len, -1) == 0 &&
	    util_fsync(fd) == 0 && renameat(sp->fd[SUB_TMP], tmp, sp->fd[sub],
	    qid) == 0)
		rc = 0;
	if (rc == -1) {
		log_msg(LOG_LVL_ERROR, "spool log: cannot write %s/%s again: "
		    "%s", spool_sub_names[sub], qid, strerror(errno));
		unlinkat(sp->fd[SUB_TMP], tmp, 0);
	}
	if (fd != -1)
		close(fd);
	return rc;
}

void
spool_logspool_record(struct spool_logspool *ls, struct spool *sp,
    const struct spool_logrec *r)
{
	size_t env_len = strlen(r->hdr);
	bool content_ok, env_ok;

	if (!spool_qid_is_valid(r->qid)) {
		log_msg(LOG_LVL_ERROR, "spool log: a record names no queue id");
		ls->lost++;
		return;
	}
	if (ls_gone(ls, sp, r->qid)) {
		ls->skipped++;
		ls->dirty = true;	/* env/ synced: removed for good */
		return;
	}
	content_ok = ls_found(sp, SUB_MSG, r->qid, r->content_len);
	env_ok = ls_found(sp, SUB_ENV, r->qid, env_len);
	if (content_ok && env_ok) {
		ls->found++;
		return;
	}
	ls->dirty = true;
	/* The content first: an envelope means accepted. */
	if ((content_ok || ls_rewrite(sp, SUB_MSG, r->qid, r->content,
	    r->content_len) == 0) && (env_ok || ls_rewrite(sp, SUB_ENV,
	    r->qid, r->hdr, env_len) == 0))
		ls->written++;
	else
		ls->lost++;
}

void
spool_logspool_line(struct spool_logspool *ls, struct spool *sp,
    const struct spool_logrec *r)
{
	const char *err;
	struct stat st;

	if (!spool_qid_is_valid(r->qid) || ls_gone(ls, sp, r->qid) ||
	    fstatat(sp->fd[SUB_ENV], r->qid, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return;
	/* Not appended, a recipient's outcome before the restart is
	   forgotten: delivered again, say; nothing lost. */
	if (spool_replay_line(sp, r->qid, r->hdr, &err) == -1) {
		log_msg(LOG_LVL_ERROR, "spool log: message %s: %s; a "
		    "recipient's outcome before the restart may be tried "
		    "again", r->qid, err);
		return;
	}
	ls->lines++;
	ls->dirty = true;
}

void
spool_logspool_finish(struct spool_logspool *ls, struct spool *sp)
{
	/* The removals recorded: the envelope first, as spool_remove. */
	for (size_t i = 0; i < ls->nremoved; i++) {
		const char *qid = ls->removed[i];
		if (!spool_qid_is_valid(qid) ||
		    unlinkat(sp->fd[SUB_ENV], qid, 0) == -1)
			continue;
		unlinkat(sp->fd[SUB_MSG], qid, 0);
		unlinkat(sp->fd[SUB_DONE], qid, 0);
		ls->finished++;
		ls->dirty = true;
	}
	/* The names written or removed, durable before the log forgets. */
	if (ls->dirty && (util_fsync(sp->fd[SUB_MSG]) == -1 ||
	    util_fsync(sp->fd[SUB_ENV]) == -1 ||
	    util_fsync(sp->fd[SUB_DONE]) == -1))
		log_msg(LOG_LVL_ERROR, "spool log: fsync(%s/msg, env, done): "
		    "%s", sp->dir, strerror(errno));
	for (size_t i = 0; i < ls->nremoved; i++)
		free(ls->removed[i]);
	free(ls->removed);
	ls->removed = NULL;
	ls->nremoved = 0;
}

void
spool_logspool_forget_gone(struct spool *sp)
{
	struct dirent *de;
	DIR *d;
	int fd;

	fd = openat(sp->fd[SUB_GONE], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1 || (d = fdopendir(fd)) == NULL) {
		log_msg(LOG_LVL_ERROR, "spool log: opendir(%s/gone): %s",
		    sp->dir, strerror(errno));
		if (fd != -1)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			unlinkat(sp->fd[SUB_GONE], de->d_name, 0);
	closedir(d);
}
