/*
 * spool/commit.c: a message received into msg/<qid> and committed: its
 * content and envelope made durable in the order of spool.c's crash
 * table, after one record in the spool log where the journal keeps the
 * order and the log takes it, else with the file system's syncs.  A
 * message whose content came whole in memory and that the log commits
 * gets no file at all yet (fresh.c).  Knows nothing of SMTP or of the
 * queue.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics/metrics.h"

/* MSG_OPEN: msg/<qid> exists and is ours, no envelope names it yet. */
enum spool_state { MSG_EMPTY, MSG_OPEN, MSG_COMMITTED };

struct spool_msg {
	struct spool		*sp;		/* borrowed */
	char			 qid[SPOOL_QID_MAX];
	int			 fd;		/* content, -1 before first write */
	enum spool_state	 state;
	const char		*whole;		/* borrowed: the content, if the
						   caller said (spool_msg_whole);
						   unwritten while fd is -1 */
	size_t			 whole_len;
};

struct spool_msg *
spool_msg_new(struct spool *sp, const char *qid)
{
	struct spool_msg *m;

	ASSERT(spool_qid_is_valid(qid));
	m = xcalloc(1, sizeof(*m));
	m->sp = sp;
	m->fd = -1;
	m->state = MSG_EMPTY;
	util_strlcpy(m->qid, qid, sizeof(m->qid));
	return m;
}

/*
 * Create msg/<qid> and lock it; 0 or -1 with *err_out.  Until an envelope
 * names it, a start (spool_list) takes it for a leftover and removes it,
 * unless the lock says it is being received or committed.
 */
static int
spool_msg_create(struct spool_msg *m, const char **err_out)
{
	struct stat st;

	for (int tries = 0; tries < 2; tries++) {
		/* Read back for the log's record (spool_commit_record). */
		m->fd = openat(m->sp->fd[SUB_MSG], m->qid, O_RDWR | O_CREAT |
		    O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (m->fd == -1) {
			*err_out = spool_err("open", SUB_MSG, m->qid, "",
			    errno);
			return -1;
		}
		m->state = MSG_OPEN;
		if (flock(m->fd, LOCK_EX) == -1 || fstat(m->fd, &st) == -1) {
			*err_out = spool_err("flock", SUB_MSG, m->qid, "",
			    errno);
			return -1;
		}
		/* A concurrent spool_list may have taken it before our lock. */
		if (st.st_nlink > 0)
			return 0;
		close(m->fd);
		m->fd = -1;
		m->state = MSG_EMPTY;
	}
	*err_out = spool_err("open", SUB_MSG, m->qid, "", EAGAIN);
	return -1;
}

void
spool_msg_whole(struct spool_msg *m, const char *data, size_t len)
{
	m->whole = data;
	m->whole_len = len;
}

/* msg/<qid> made and holding the whole content: 0 or -1 with *err_out. */
static int
spool_msg_file(struct spool_msg *m, const char **err_out)
{
	if (m->fd != -1)
		return 0;
	if (spool_msg_create(m, err_out) == -1)
		return -1;
	if (m->whole != NULL && util_write_all(m->fd, m->whole,
	    m->whole_len, -1) == -1) {
		*err_out = spool_err("write", SUB_MSG, m->qid, "", errno);
		return -1;
	}
	return 0;
}

int
spool_msg_write(struct spool_msg *m, const void *buf, size_t len,
    const char **err_out)
{
	ASSERT(m->state == MSG_EMPTY || m->state == MSG_OPEN);
	ASSERT(m->whole == NULL || m->fd != -1);
	m->whole = NULL;
	if (m->fd == -1 && spool_msg_create(m, err_out) == -1)
		return -1;
	if (util_write_all(m->fd, buf, len, -1) == -1) {
		*err_out = spool_err("write", SUB_MSG, m->qid, "", errno);
		return -1;
	}
	return 0;
}

/* Copy len bytes of in from off to the end of out. */
static int
spool_copy_range(int in, off_t off, uint64_t len, int out)
{
	while (len > 0) {
		ssize_t n = copy_file_range(in, &off, out, NULL, len, 0);
		if (n == -1 && (errno == EXDEV || errno == EINVAL ||
		    errno == ENOSYS || errno == EOPNOTSUPP)) {
			/* A file system without it: copy by hand. */
			char buf[64 * 1024];
			n = pread(in, buf, len < sizeof(buf) ? len : sizeof(buf),
			    off);
			if (n > 0 &&
			    util_write_all(out, buf, (size_t)n, -1) == -1)
				n = -1;
			if (n > 0)
				off += n;
		}
		if (n <= 0) {
			if (n == 0)
				errno = EIO;	/* the file got shorter */
			return -1;
		}
		len -= (uint64_t)n;
	}
	return 0;
}

int
spool_msg_replace(struct spool_msg *m, uint64_t offset, uint64_t old_len,
    const void *data, size_t len, const char **err_out)
{
	char name[SPOOL_QID_MAX + 8];
	int out, rc = -1;
	struct stat st;

	ASSERT(m->state == MSG_OPEN && m->fd != -1);
	m->whole = NULL;
	/* Made in tmp/, whose leftovers a start removes unless locked. */
	snprintf(name, sizeof(name), "%s.new", m->qid);
	out = openat(m->sp->fd[SUB_TMP], name, O_RDWR | O_CREAT | O_TRUNC |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out == -1 || flock(out, LOCK_EX) == -1 || fstat(m->fd, &st) == -1) {
		*err_out = spool_err("open", SUB_TMP, m->qid, ".new", errno);
		goto out;
	}
	if ((uint64_t)st.st_size < offset + old_len) {
		*err_out = spool_err("replace", SUB_MSG, m->qid, "", EINVAL);
		goto out;
	}
	if (spool_copy_range(m->fd, 0, offset, out) == -1 ||
	    util_write_all(out, data, len, -1) == -1 ||
	    spool_copy_range(m->fd, (off_t)(offset + old_len),
	    (uint64_t)st.st_size - offset - old_len, out) == -1) {
		*err_out = spool_err("write", SUB_TMP, m->qid, ".new", errno);
		goto out;
	}
	/* The new file is locked before it takes the name: no sweep gap. */
	if (renameat(m->sp->fd[SUB_TMP], name, m->sp->fd[SUB_MSG], m->qid) ==
	    -1) {
		*err_out = spool_err("rename", SUB_TMP, m->qid, ".new", errno);
		goto out;
	}
	close(m->fd);
	m->fd = out;
	out = -1;
	rc = 0;
out:
	if (out != -1) {
		unlinkat(m->sp->fd[SUB_TMP], name, 0);
		close(out);
	}
	return rc;
}

/* env/<qid>.tmp, unnamed yet, withdrawn: fd closed, the file removed. */
static void
spool_env_drop(struct spool *sp, const char *qid, int fd)
{
	char tmpname[SPOOL_QID_MAX + 8];

	snprintf(tmpname, sizeof(tmpname), "%s.tmp", qid);
	close(fd);
	unlinkat(sp->fd[SUB_ENV], tmpname, 0);
}

/* Step 2's write: env/<qid>.tmp made from b.  *fd_out: its fd. */
static int
spool_env_create(struct spool *sp, const char *qid, const struct util_buf *b,
    int *fd_out, const char **err_out)
{
	char tmpname[SPOOL_QID_MAX + 8];
	int fd;

	snprintf(tmpname, sizeof(tmpname), "%s.tmp", qid);
	fd = openat(sp->fd[SUB_ENV], tmpname, O_WRONLY | O_CREAT | O_TRUNC |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1) {
		*err_out = spool_err("open", SUB_ENV, qid, ".tmp", errno);
		return -1;
	}
	if (util_write_all(fd, b->data, b->len, -1) == -1) {
		*err_out = spool_err("write", SUB_ENV, qid, ".tmp", errno);
		spool_env_drop(sp, qid, fd);
		return -1;
	}
	*fd_out = fd;
	return 0;
}

/*
 * The rest of steps 2 and 3: env/<qid>.tmp (fd) fdatasynced (settled where
 * the order allows; neither without settle), renamed.  On failure the
 * file is removed and fd closed.
 */
static int
spool_env_name(struct spool *sp, const char *qid, int fd, bool settle,
    const char **err_out)
{
	char tmpname[SPOOL_QID_MAX + 8];

	snprintf(tmpname, sizeof(tmpname), "%s.tmp", qid);
	if (settle && (sp->ordered ? util_settle(fd) :
	    util_fdatasync(fd)) == -1) {
		*err_out = spool_err("fdatasync", SUB_ENV, qid, ".tmp", errno);
		goto fail;
	}
	if (renameat(sp->fd[SUB_ENV], tmpname, sp->fd[SUB_ENV], qid) == -1) {
		*err_out = spool_err("rename", SUB_ENV, qid, ".tmp", errno);
		goto fail;
	}
	return 0;
fail:
	spool_env_drop(sp, qid, fd);
	return -1;
}

/* Step 1's sync of the content: settled where the order allows. */
static int
spool_content_settle(struct spool_msg *m, const char **err_out)
{
	struct spool *sp = m->sp;

	if ((sp->ordered ? util_settle(m->fd) : util_fdatasync(m->fd)) == -1) {
		*err_out = spool_err("fdatasync", SUB_MSG, m->qid, "", errno);
		return -1;
	}
	return 0;
}

/* Steps 1 to 3 in the order of the table: *fd_out the envelope's. */
static int
spool_commit_named(struct spool_msg *m, const struct util_buf *b,
    int *fd_out, const char **err_out)
{
	if (spool_msg_file(m, err_out) == -1 ||
	    spool_content_settle(m, err_out) == -1 ||
	    spool_env_create(m->sp, m->qid, b, fd_out, err_out) == -1)
		return -1;
	return spool_env_name(m->sp, m->qid, *fd_out, true, err_out);
}

/* The content file whole (len bytes, from fstat), malloc'd; or NULL. */
static char *
spool_content_read(struct spool_msg *m, size_t len)
{
	char *buf = xmalloc(len + 1);

	if (util_read_upto(m->fd, buf, len, 0) != (ssize_t)len) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* A commit on its way (spool_msg_commit, spool_msg_commit_async). */
struct spool_commit {
	struct spool_msg	*m;
	struct util_buf		 b;		/* the envelope's bytes */
	int			 envfd;
	bool			 logged;	/* the log's record made it durable */
	bool			 unwritten;	/* no file yet: the content whole
						   in memory, the log to take it */
	char			*readback;	/* the content read for the record */
	uint64_t		 start_ns;
	spool_commit_fn		 fn;		/* the outcome's, async */
	void			*arg;
};

/* The envelope of m formatted into c, m's content file made: 0 or -1. */
static int
spool_commit_begin(struct spool_commit *c, struct spool_msg *m,
    const struct spool_env *env, const char **err_out)
{
	ASSERT(m->state == MSG_EMPTY || m->state == MSG_OPEN);
	ASSERT(strcmp(env->qid, m->qid) == 0);
	*c = (struct spool_commit){ .m = m, .envfd = -1,
	    .start_ns = metrics_now_ns() };
	/* Content in memory: its file waits for what the log says. */
	if (m->whole == NULL && m->fd == -1 &&
	    spool_msg_create(m, err_out) == -1)
		return -1;
	spool_env_format(env, &c->b);
	return 0;
}

/*
 * The commit after one device write, where the journal keeps the order
 * and the log takes the message: the content written into msg/ and the
 * envelope written into env/<qid>.tmp, neither synced; one SPOOLED record
 * holding both made durable in the log; only then the envelope named
 * (accepted).  A crash before the record leaves nothing accepted; after
 * it, the start replays the record (logrecover.c) and writes again what
 * the disk lost.  Content that came whole in memory, with no file yet,
 * gets none here: after the record it is kept unwritten (fresh.c), unless
 * the keep folder wants a copy of its file or the spool's file system is
 * short of room.  Here the steps up to the
 * record: 0, the content for it in *content_out (*len_out bytes: what the
 * caller said it is, or read back into c->readback).  1 when the log
 * cannot take it (off, too large: counted as such): nothing done.  -1.
 */
static int
spool_commit_record(struct spool_commit *c, const char **content_out,
    size_t *len_out, const char **err_out)
{
	struct spool_msg *m = c->m;
	struct spool *sp = m->sp;
	struct stat st;

	if (!sp->ordered || !spool_log_on(sp))
		return 1;
	if (m->whole != NULL && m->fd == -1 && sp->keep == NULL &&
	    spool_unwritten_may(sp, m->whole_len) &&
	    spool_log_fits_spooled(sp, m->qid, c->b.len, m->whole_len)) {
		c->unwritten = true;
		*content_out = m->whole;
		*len_out = m->whole_len;
		return 0;
	}
	if (spool_msg_file(m, err_out) == -1)
		return -1;
	if (m->whole != NULL)
		st.st_size = (off_t)m->whole_len;
	else if (fstat(m->fd, &st) == -1)
		return 1;
	if (!spool_log_fits_spooled(sp, m->qid, c->b.len,
	    (size_t)st.st_size)) {
		metrics_inc(MET_SPOOL_LOG_COMMITS, MET_SL_TOO_LARGE, 0);
		return 1;
	}
	if (m->whole == NULL && (c->readback = spool_content_read(m,
	    (size_t)st.st_size)) == NULL)
		return 1;
	if (spool_env_create(sp, m->qid, &c->b, &c->envfd, err_out) == -1) {
		free(c->readback);
		return -1;
	}
	*content_out = m->whole != NULL ? m->whole : c->readback;
	*len_out = (size_t)st.st_size;
	return 0;
}

/*
 * The log's answer for the record (rc 0: durable, its sequence seq): the
 * envelope named.  A full log or a failed write of it falls back to the
 * order of the table from step 1's settle on.  0 or -1.
 */
static int
spool_commit_recorded(struct spool_commit *c, int rc, uint64_t seq,
    const char **err_out)
{
	struct spool_msg *m = c->m;
	struct spool *sp = m->sp;

	if (c->unwritten) {
		if (rc != 0)	/* the order of the table after all */
			return spool_commit_named(m, &c->b, &c->envfd, err_out);
		c->logged = true;
		if (spool_unwritten_put(sp, m->qid, c->b.data, c->b.len,
		    m->whole, m->whole_len, seq))
			return 0;	/* its record stays pinned */
		/* No room to keep it: its files now, unsynced. */
		rc = spool_msg_file(m, err_out) == -1 || spool_env_create(sp,
		    m->qid, &c->b, &c->envfd, err_out) == -1 ? -1 :
		    spool_env_name(sp, m->qid, c->envfd, false, err_out);
		spool_log_named(sp, seq);
		return rc;
	}
	if (rc != 0) {
		/* Step 1's settle, then steps 2 and 3 as the table has them. */
		if (spool_content_settle(m, err_out) == -1) {
			spool_env_drop(sp, m->qid, c->envfd);
			return -1;
		}
		return spool_env_name(sp, m->qid, c->envfd, true, err_out);
	}
	c->logged = true;
	rc = spool_env_name(sp, m->qid, c->envfd, false, err_out);
	spool_log_named(sp, seq);
	return rc;
}

/* The commit's last steps, rc what came before: 0 (accepted) or -1. */
static int
spool_commit_end(struct spool_commit *c, int rc, const char **err_out)
{
	struct spool_msg *m = c->m;
	struct spool *sp = m->sp;

	if (rc == -1)
		goto fail_text;
	/* 4. (the log's record made it durable already) */
	if (!c->logged && sp->ordered && util_fsync(c->envfd) == -1) {
		*err_out = spool_err("fsync", SUB_ENV, m->qid, "", errno);
		goto fail;
	}
	if (!sp->ordered && util_fsync(sp->fd[SUB_MSG]) == -1) {
		*err_out = spool_err("fsync", SUB_MSG, "", "", errno);
		goto fail;
	}
	if (!sp->ordered && util_fsync(sp->fd[SUB_ENV]) == -1) {
		*err_out = spool_err("fsync", SUB_ENV, "", "", errno);
		goto fail;
	}
	if (c->envfd != -1)
		close(c->envfd);
	m->state = MSG_COMMITTED;
	/* Its first load needs no read: no record exists yet (fresh.c). */
	spool_fresh_put(sp, m->qid, c->b.data, c->b.len);
	util_buf_clear(&c->b);
	metrics_observe_ns(MET_SPOOL_COMMIT_SECONDS, 0, metrics_now_ns() -
	    c->start_ns);
	return 0;
fail:
	/* Not acknowledged: withdraw the envelope first, as spool_remove. */
	unlinkat(sp->fd[SUB_ENV], m->qid, 0);
	close(c->envfd);
fail_text:
	util_buf_clear(&c->b);
	return -1;
}

static void	spool_commit_logged_cb(void *arg, int rc, uint64_t seq);

/*
 * The commit from its record on: waited for (c->fn NULL), or, where the
 * log answers by callback, 1 and c goes on in spool_commit_logged_cb.
 * Else 0 or -1.
 */
static int
spool_commit_run(struct spool_commit *c, const char **err_out)
{
	struct spool_msg *m = c->m;
	const char *content, *lerr;
	char *readback;
	bool async = c->fn != NULL;
	size_t len;
	uint64_t seq = 0;
	int rc;

	if ((rc = spool_commit_record(c, &content, &len, err_out)) == 0) {
		readback = c->readback;	/* c may be gone when it returns */
		rc = spool_log_append_spooled(m->sp, m->qid,
		    util_buf_cstr(&c->b), content, len, async ?
		    spool_commit_logged_cb : NULL, c, &seq, &lerr);
		free(readback);
		if (rc == 0 && async)
			return 1;
		rc = spool_commit_recorded(c, rc, seq, err_out);
	} else if (rc == 1)
		rc = spool_commit_named(m, &c->b, &c->envfd, err_out);
	return spool_commit_end(c, rc, err_out);
}

int
spool_msg_commit(struct spool_msg *m, const struct spool_env *env,
    const char **err_out)
{
	struct spool_commit c;

	if (spool_commit_begin(&c, m, env, err_out) == -1)
		return -1;
	return spool_commit_run(&c, err_out);
}

/* The log's answer, on the thread that wrote the record: the rest. */
static void
spool_commit_logged_cb(void *arg, int rc, uint64_t seq)
{
	struct spool_commit *c = arg;
	const char *err = NULL;

	rc = spool_commit_recorded(c, rc, seq, &err);
	rc = spool_commit_end(c, rc, &err);
	c->fn(c->arg, rc, err);
	free(c);
}

int
spool_msg_commit_async(struct spool_msg *m, const struct spool_env *env,
    spool_commit_fn fn, void *arg, const char **err_out)
{
	struct spool_commit *c = xmalloc(sizeof(*c));
	int rc;

	if (spool_commit_begin(c, m, env, err_out) == -1) {
		free(c);
		return -1;
	}
	c->fn = fn;
	c->arg = arg;
	if ((rc = spool_commit_run(c, err_out)) != 1)
		free(c);
	return rc;
}

void
spool_msg_free(struct spool_msg **mp)
{
	struct spool_msg *m = *mp;

	if (m == NULL)
		return;
	/* Unlink before close: the lock keeps spool_list away meanwhile. */
	if (m->state == MSG_OPEN)
		unlinkat(m->sp->fd[SUB_MSG], m->qid, 0);
	if (m->fd != -1)
		close(m->fd);
	free(m);
	*mp = NULL;
}

int
spool_msg_keep(struct spool_msg *m, const char *suffix, const char **err_out)
{
	if (m->state == MSG_EMPTY)
		return 0;	/* no content */
	return spool_keep_from(m->sp, SUB_MSG, m->qid, suffix, err_out);
}
