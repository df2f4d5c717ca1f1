/*
 * spool/spool.c: the durable message store on disk: opening and locking
 * it, queue ids, loading, done-records.  Receiving and committing a
 * message (the order below) is commit.c; removal remove.c; what a start
 * finds recover.c.  Knows nothing of routing or SMTP.
 *
 * Layout under the spool folder (all 0700, files 0600):
 *	msg/<qid>	content: being received (not accepted, locked)
 *			until an envelope names it, then committed
 *	tmp/<qid>.new	content with a filter's edits on its way to
 *			msg/<qid> (locked); tmp/ also holds probes
 *	env/<qid>	committed envelope: its existence means "accepted"
 *	env/<qid>.tmp	envelope being written (never accepted)
 *	done/<qid>	status records appended: "done N\n" per delivered
 *			rcpt, and deferrals, failures, bounces, holds
 *			(see spool_done_parse in envelope.c)
 *	gone/<qid>	the envelope of a message removed, moved here from
 *			env/ until the spool log records the removal: a
 *			start that finds it does not write the message
 *			again from the log (remove.c, logspool.c); for a
 *			message that never had files, a link to
 *	gone/.removed	an empty file, made at the first such removal
 *
 * Commit order and what a crash (kill -9 or power loss) at each point
 * leaves behind:
 *	1. write msg/<qid>, fsync it	crash: content without envelope,
 *					not accepted; spool_list removes it
 *	2. write env/<qid>.tmp, fsync	crash: as 1, plus a .tmp removed by
 *					spool_list
 *	3. rename to env/<qid>		crash: the content's name and the
 *					rename may reach the disk in any
 *					order until 4, so we may find an
 *					envelope without content; it was
 *					never acknowledged (4 did not finish),
 *					and spool_list removes it
 *	4. fsync msg/, then env/	both names are durable: accepted;
 *					only now does commit return 0
 * The content is written under its final name rather than renamed into
 * it: a name in msg/ that no envelope accounts for is a leftover as one
 * in tmp/ would be, and a rename per message is spared.
 * Where util_fs_ordered() holds (XFS, ext4 with a journal), steps 1 and 2
 * only write the file's data out and wait for it (util_settle), and 4 is
 * one fsync of the envelope: one journal commit instead of three in a row.
 * The crash table stays true: a rename that reaches the disk carries the
 * size and blocks of its file, written out before it, and the data is on
 * the device already.  The envelope's rename changed its inode (ctime), so
 * its fsync waits for the commit holding that rename, and such a journal
 * commits in order: everything before it, the content's name, size and
 * blocks included, is durable with it.  The directories need no fsync of
 * their own.
 *
 * Where the order holds and the spool log takes the message (log.c: on,
 * not full, the record within a quarter of it), nothing is synced at all:
 * 1 and 2 without the settle, then one SPOOLED record with the envelope's
 * and the content's bytes made durable in the log (a data write and a
 * cache flush, shared by the messages committing together), then 3;
 * commit returns 0 with no fsync.  A crash before the record: as 2.
 * After it, the files may be lost, empty or short on the disk
 * until the log's checkpoint has synced the file system (each second);
 * the next start writes them again from the record (logspool.c) before
 * spool_list runs.  A message whose content came whole in memory skips
 * 1 to 3 altogether: it is held in memory after its record, its files
 * written only when needed (fresh.c).  A record whose write fails, or a
 * full log, falls back to the settles of 1 and 2 and the fsync of 4.
 *
 * Removal (remove.c) unlinks env/<qid> first, then the content and the
 * records; one fsync of env/ on a thread of its own makes the removals of
 * SPOOL_REMOVE_SYNC_MS durable together, or, with the log where the
 * order holds, one write of their records in the log (a start finishes
 * them, and does not write those messages again); there the envelope is
 * moved into gone/ rather than unlinked, until its record is written.  Where the journal keeps the
 * order, a crash half-way leaves content or done-records without an
 * envelope (removed by spool_list), never an envelope with missing
 * recipients' records.  The queue uses the removal as the record of a
 * message's last delivery (no done/<qid> written for it): a crash before
 * that fsync may find the envelope and deliver that recipient again, as
 * a crash before its done-record's fdatasync would.
 *
 * While a message is open, its content file is flock()ed (the lock, on
 * the inode, dies with the process), so spool_list in this or another
 * process never removes a message still being received or committed.
 *
 * Error strings (*err_out) come from util_err(): valid until the thread's
 * next error.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const spool_sub_names[SUB_N] = { "tmp", "msg", "env",
    "done", "gone" };

static __thread int spool_errnum;	/* behind the last spool_err() */

const char *
spool_err(const char *call, enum spool_sub sub, const char *qid,
    const char *suffix, int err)
{
	spool_errnum = err;
	return util_err("%s(%s/%s%s): %s", call, spool_sub_names[sub], qid,
	    suffix, strerror(err));
}

bool
spool_err_is_full(void)
{
	return spool_errnum == ENOSPC || spool_errnum == EDQUOT;
}

struct spool *
spool_open(const char *dir, const char **err_out)
{
	struct spool *sp = xcalloc(1, sizeof(*sp));
	int err;

	sp->dir = xstrdup(dir);
	sp->lock_fd = -1;
	spool_sync_init(sp);
	spool_fresh_init(sp);
	for (int i = 0; i < SUB_N; i++)
		sp->fd[i] = -1;
	if (util_mkdirs(dir, 0700) == -1) {
		*err_out = util_err("mkdir(%s): %s", dir, strerror(errno));
		goto fail;
	}
	for (int i = 0; i < SUB_N; i++) {
		char *p = xasprintf("%s/%s", dir, spool_sub_names[i]);
		if (mkdir(p, 0700) == -1 && errno != EEXIST) {
			*err_out = util_err("mkdir(%s): %s", p, strerror(errno));
			free(p);
			goto fail;
		}
		sp->fd[i] = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (sp->fd[i] == -1) {
			*err_out = util_err("open(%s): %s", p, strerror(errno));
			free(p);
			goto fail;
		}
		free(p);
	}
	/* The folders we may just have made must survive a crash too. */
	if (util_fsync_dir(dir) == -1) {
		*err_out = util_err("fsync(%s): %s", dir, strerror(errno));
		goto fail;
	}
	sp->ordered = util_fs_ordered(sp->fd[SUB_MSG], NULL);
	return sp;
fail:
	err = errno;	/* a refusal is told apart from other trouble */
	spool_close(&sp);
	errno = err;
	return NULL;
}

void
spool_close(struct spool **spp)
{
	struct spool *sp = *spp;

	if (sp == NULL)
		return;
	/* Its last removals go into the log, which then checkpoints all. */
	spool_sync_clear(sp);	/* before the folders close */
	spool_log_stop(&sp->log);
	spool_fresh_clear(sp);
	for (int i = 0; i < SUB_N; i++)
		if (sp->fd[i] != -1)
			close(sp->fd[i]);
	if (sp->lock_fd != -1)
		close(sp->lock_fd);	/* and the lock with it */
	util_capdir_free(&sp->keep);
	free(sp->dir);
	free(sp);
	*spp = NULL;
}

/* flock(op) <dir>/lock for sp: LOCK_EX (the server) or LOCK_SH. */
static int
spool_flock(struct spool *sp, int op, const char **err_out)
{
	char *p = xasprintf("%s/lock", sp->dir), pid[32] = "";
	int fd = open(p, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	ssize_t n;

	/* Made by root before a privilege drop: a lock all the same. */
	if (fd == -1 && errno == EACCES)
		fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 || flock(fd, op | LOCK_NB) == -1) {
		int err = errno;
		if (fd != -1 && err == EWOULDBLOCK && op == LOCK_EX &&
		    flock(fd, LOCK_SH | LOCK_NB) == 0)
			/* Shared: no server, but a postern queue at work. */
			*err_out = util_err("spool %s is in use by postern "
			    "queue, changing it; try again", sp->dir);
		else if (fd != -1 && err == EWOULDBLOCK) {
			/* The holder wrote its pid: name it. */
			n = pread(fd, pid, sizeof(pid) - 1, 0);
			pid[n > 0 ? n : 0] = '\0';
			pid[strcspn(pid, "\n")] = '\0';
			*err_out = util_err("spool %s is in use by another "
			    "postern (pid %s)", sp->dir, pid[0] != '\0' ? pid :
			    "unknown");
		} else
			*err_out = util_err("%s(%s): %s", fd == -1 ? "open" :
			    "flock", p, strerror(err));
		if (fd != -1)
			close(fd);
		free(p);
		errno = err;
		return -1;
	}
	free(p);
	sp->lock_fd = fd;
	return 0;
}

int
spool_lock(struct spool *sp, const char **err_out)
{
	char pid[32];

	if (spool_flock(sp, LOCK_EX, err_out) == -1)
		return -1;
	snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(sp->lock_fd, 0) == 0)
		(void)!pwrite(sp->lock_fd, pid, strlen(pid), 0);
	return 0;
}

int
spool_lock_shared(struct spool *sp, const char **err_out)
{
	return spool_flock(sp, LOCK_SH, err_out);
}

const char *
spool_dir(const struct spool *sp)
{
	return sp->dir;
}

int64_t
spool_oldest_s(struct spool *sp)
{
	int fd = dup(sp->fd[SUB_ENV]);
	DIR *d = fd != -1 ? fdopendir(fd) : NULL;
	int64_t oldest = 0;
	struct dirent *e;
	struct stat st;

	if (d == NULL) {
		if (fd != -1)
			close(fd);
		return 0;
	}
	rewinddir(d);	/* a dup shares the offset with sp's descriptor */
	while ((e = readdir(d)) != NULL)
		if (spool_qid_ok(e->d_name) && fstatat(sp->fd[SUB_ENV],
		    e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    (oldest == 0 || st.st_mtime < oldest))
			oldest = (int64_t)st.st_mtime;
	closedir(d);
	return oldest;
}

int
spool_probe(struct spool *sp, const char **err_out)
{
	char name[64];
	int fd;

	(void)util_snprintf(name, sizeof(name), ".probe-%ld", (long)gettid());
	fd = openat(sp->fd[SUB_TMP], name, O_WRONLY | O_CREAT | O_TRUNC |
	    O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1 || write(fd, "x", 1) != 1) {
		*err_out = spool_err("create", SUB_TMP, name, "", errno);
		if (fd != -1) {
			close(fd);
			unlinkat(sp->fd[SUB_TMP], name, 0);
		}
		return -1;
	}
	close(fd);
	if (unlinkat(sp->fd[SUB_TMP], name, 0) == -1) {
		*err_out = spool_err("unlink", SUB_TMP, name, "", errno);
		return -1;
	}
	return 0;
}

static void
spool_b62(char **p, uint64_t v, int width)
{
	static const char digits[] =
	    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

	for (int i = width - 1; i >= 0; i--) {
		(*p)[i] = digits[v % 62];
		v /= 62;
	}
	*p += width;
}

/*
 * 6 digits of seconds (good until year 3700), 4 of microseconds, 3 of a
 * per-process counter, 4 random: 17 characters.  Fixed width, and the
 * digits sort in ASCII order, so qids sort by time.  The random part makes
 * two processes started in the same microsecond (or a clock stepped back)
 * collide only with probability 1/62^4 per pair; O_EXCL catches the rest.
 */
void
spool_new_qid(struct spool *sp, char qid_out[SPOOL_QID_MAX])
{
	static atomic_uint counter;
	uint64_t us = util_wall_us();
	uint32_t rnd = 0;
	char *p = qid_out;

	(void)sp;
	if (!util_random32(&rnd))
		rnd = (uint32_t)(us ^ (uint64_t)getpid() << 16);
	spool_b62(&p, us / 1000000, 6);
	spool_b62(&p, us % 1000000, 4);
	spool_b62(&p, atomic_fetch_add(&counter, 1), 3);
	spool_b62(&p, rnd, 4);
	*p = '\0';
}

char *
spool_content_path(const struct spool *sp, const char *qid)
{
	return xasprintf("%s/msg/%s", sp->dir, qid);
}

int
spool_content_check(struct spool *sp, const struct spool_env *env,
    const char **err_out)
{
	struct stat st;

	if (fstatat(sp->fd[SUB_MSG], env->qid, &st, AT_SYMLINK_NOFOLLOW)
	    == -1) {
		*err_out = spool_err("stat", SUB_MSG, env->qid, "", errno);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != env->size) {
		*err_out = util_err("msg/%s holds %jd octets, its envelope "
		    "says %ju", env->qid, (intmax_t)st.st_size,
		    (uintmax_t)env->size);
		return -1;
	}
	return 0;
}

int
spool_content_load(struct spool *sp, const struct spool_env *env,
    char **mem_out, size_t *len_out, const char **err_out)
{
	if ((*mem_out = spool_content_mem(sp, env->qid, len_out)) == NULL)
		return spool_content_check(sp, env, err_out);
	if (*len_out != env->size) {
		*err_out = util_err("the content of %s held in memory is %zu "
		    "octets, its envelope says %ju", env->qid, *len_out,
		    (uintmax_t)env->size);
		free(*mem_out);
		*mem_out = NULL;
		return -1;
	}
	return 0;
}

int
spool_content_write(struct spool *sp, const char *qid, const char **err_out)
{
	return spool_unwritten_write(sp, qid, err_out);
}

void
spool_content_write_all(struct spool *sp)
{
	spool_unwritten_write_all(sp);
}

/*
 * Read a whole small file sub/<name> into a malloc'd buffer.  0, or -1
 * with errno set (EFBIG when over SPOOL_ENV_MAX).
 */
static int
spool_slurp(struct spool *sp, enum spool_sub sub, const char *name,
    char **buf_out, size_t *len_out)
{
	struct stat st;
	char *buf = NULL;
	ssize_t len;
	int fd, saved;

	fd = openat(sp->fd[sub], name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1)
		return -1;
	if (fstat(fd, &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)SPOOL_ENV_MAX) {
		errno = S_ISREG(st.st_mode) ? EFBIG : EINVAL;
		goto fail;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	/*
	 * Up to the size fstat saw, with no read to find the end: an
	 * envelope never changes once named, and records appended to a done
	 * file meanwhile are read next time, as if we had read first.
	 */
	if ((len = util_read_upto(fd, buf, (size_t)st.st_size, -1)) == -1)
		goto fail;
	close(fd);
	*buf_out = buf;
	*len_out = (size_t)len;
	return 0;
fail:
	saved = errno;
	free(buf);
	close(fd);
	errno = saved;
	return -1;
}

int
spool_env_load(struct spool *sp, const char *qid, struct spool_env *out,
    const char **err_out)
{
	const char *why;
	char *buf, *lines;
	size_t len, lines_len;
	bool fresh;

	memset(out, 0, sizeof(*out));
	if (!spool_qid_is_valid(qid)) {
		*err_out = "invalid queue id";
		errno = EINVAL;
		return -1;
	}
	/* Committed here and no record yet: nothing to read (fresh.c). */
	buf = spool_fresh_get(sp, qid, &len, &lines, &lines_len);
	fresh = buf != NULL;
	if (!fresh && spool_slurp(sp, SUB_ENV, qid, &buf, &len) == -1) {
		int saved = errno;
		*err_out = spool_err("read", SUB_ENV, qid, "", saved);
		errno = saved;	/* ENOENT: no such message (any more) */
		return -1;
	}
	if (spool_env_parse(buf, len, out, &why) == -1) {
		free(buf);
		free(lines);
		*err_out = util_err("env/%s: %s", qid, why);
		errno = EINVAL;
		return -1;
	}
	free(buf);
	if (strcmp(out->qid, qid) != 0) {
		free(lines);
		*err_out = util_err("env/%s: qid does not match the file "
		    "name", qid);
		goto fail;
	}
	if (fresh) {
		/* Its records held in memory with it, if any. */
		int rc = lines == NULL ? 0 : spool_done_parse(lines,
		    lines_len, out, &why);
		free(lines);
		if (rc == 0)
			return 0;
		*err_out = util_err("done/%s: %s", qid, why);
		goto fail;
	}
	if (spool_slurp(sp, SUB_DONE, qid, &buf, &len) == -1) {
		if (errno == ENOENT)
			return 0;
		*err_out = spool_err("read", SUB_DONE, qid, "", errno);
		goto fail;
	}
	if (spool_done_parse(buf, len, out, &why) == -1) {
		free(buf);
		*err_out = util_err("done/%s: %s", qid, why);
		goto fail;
	}
	free(buf);
	return 0;
fail:
	spool_env_clear(out);
	errno = EINVAL;
	return -1;
}

/*
 * If the done file ends in a torn record (a crash during an append that
 * never returned), cut it off so the next record starts on its own line.
 */
static int
spool_done_trim(int fd, off_t size)
{
	char c;
	char *buf;
	off_t keep = 0;

	if (size == 0)
		return 0;
	if (pread(fd, &c, 1, size - 1) != 1)
		return -1;
	if (c == '\n')
		return 0;
	if (size > (off_t)SPOOL_ENV_MAX) {
		errno = EFBIG;
		return -1;
	}
	buf = xmalloc((size_t)size);
	if (pread(fd, buf, (size_t)size, 0) != (ssize_t)size) {
		free(buf);
		errno = EIO;
		return -1;
	}
	for (off_t i = size; i > 0; i--)
		if (buf[i - 1] == '\n') {
			keep = i;
			break;
		}
	free(buf);
	return ftruncate(fd, keep);
}

/*
 * Append one record to done/<qid> durably.  0, or -1 with *err_out.
 * by_log: a record written once per message (a recipient done, failed,
 * bounced, a deferral with its attempt count: no two alike, as the
 * queue reads a message's records before each run and records what
 * follows them) is made
 * durable by the spool log where it takes it (spool_log_line: a share of
 * a group commit, where the file's fdatasync is a journal commit of its
 * own); the checkpoint's syncfs makes the file durable before the log
 * forgets the record, and a start appends it again if the file lacks it
 * (logspool.c).  The flags (hold, release) repeat: they keep the sync.
 */
static int
spool_append(struct spool *sp, const char *qid, const char *rec, size_t len,
    bool by_log, const char **err_out)
{
	const char *err;
	bool held = false;
	struct stat st;
	int fd;

	if (!spool_qid_is_valid(qid)) {
		*err_out = "invalid queue id";
		return -1;
	}
	by_log = by_log && sp->ordered && spool_log_on(sp);
	/* A message held in memory keeps the record there (fresh.c). */
	if (by_log && (held = spool_unwritten_line(sp, qid, rec, len))) {
		if (spool_log_line(sp, qid, rec, len, &err) == 0)
			return 0;
		by_log = false;	/* written out below, then synced */
	}
	/* Its files first: a record is read with them (fresh.c).  A held
	   record that nothing made durable is taken back: a later record
	   made durable without it (a bounce reported after a failure)
	   would say what it cannot. */
	if (spool_unwritten_write(sp, qid, err_out) == -1) {
		if (held)
			spool_unwritten_unline(sp, qid, rec, len);
		return -1;
	}
	/* Before the record exists: a load from now on reads it. */
	(void)spool_fresh_drop(sp, qid);
	fd = openat(sp->fd[SUB_DONE], qid, O_RDWR | O_CREAT | O_APPEND |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1) {
		*err_out = spool_err("open", SUB_DONE, qid, "", errno);
		return -1;
	}
	if (fstat(fd, &st) == -1 || spool_done_trim(fd, st.st_size) == -1) {
		*err_out = spool_err("fstat", SUB_DONE, qid, "", errno);
		goto fail;
	}
	/* One write(2) per record: appends of other threads never mix in.
	   One held in memory is in the file already. */
	if (!held && util_write_all(fd, rec, len, -1) == -1) {
		*err_out = spool_err("write", SUB_DONE, qid, "", errno);
		goto fail;
	}
	/* The log refusing it or failing: the file's own sync instead. */
	if (by_log && spool_log_line(sp, qid, rec, len, &err) == 0) {
		close(fd);
		return 0;
	}
	if (util_fdatasync(fd) == -1) {
		*err_out = spool_err("fdatasync", SUB_DONE, qid, "", errno);
		goto fail;
	}
	/*
	 * A file we just created needs its name made durable too, except
	 * where the journal keeps the order (util_fs_ordered): there the
	 * fdatasync has committed the name already.  The create logged the
	 * new inode and its directory entry in one transaction; the write
	 * that gave the file its size changed the inode in that transaction
	 * or a later one, which the data sync waits for, and the journal
	 * commits in order.  A directory fsync is no free check either: ext4
	 * answers it with a full commit of whatever transaction is running
	 * by then (other messages' work), needed or not.
	 */
	if (st.st_size == 0 && !sp->ordered &&
	    util_fsync(sp->fd[SUB_DONE]) == -1) {
		*err_out = spool_err("fsync", SUB_DONE, "", "", errno);
		goto fail;
	}
	close(fd);
	return 0;
fail:
	close(fd);
	return -1;
}

static int
spool_append_buf(struct spool *sp, const char *qid, struct util_buf *b,
    const char **err_out)
{
	int rc = spool_append(sp, qid, b->data, b->len, true, err_out);

	util_buf_clear(b);
	return rc;
}

int
spool_mark_done(struct spool *sp, const char *qid, size_t idx,
    const char **err_out)
{
	char rec[32];

	snprintf(rec, sizeof(rec), "done %zu\n", idx);
	return spool_append(sp, qid, rec, strlen(rec), true, err_out);
}

int
spool_mark_deferred(struct spool *sp, const char *qid, size_t idx,
    unsigned attempts, uint64_t next_ms, const char *why,
    const char **err_out)
{
	struct util_buf b = { 0 };

	spool_rec_deferred(&b, idx, attempts, next_ms, why);
	return spool_append_buf(sp, qid, &b, err_out);
}

int
spool_mark_failed(struct spool *sp, const char *qid, size_t idx,
    const char *status, const char *why, const char **err_out)
{
	struct util_buf b = { 0 };

	spool_rec_failed(&b, idx, status, why);
	return spool_append_buf(sp, qid, &b, err_out);
}

int
spool_mark_bounced(struct spool *sp, const char *qid, size_t idx,
    const char **err_out)
{
	char rec[32];

	snprintf(rec, sizeof(rec), "bounced %zu\n", idx);
	return spool_append(sp, qid, rec, strlen(rec), true, err_out);
}

int
spool_mark_flag(struct spool *sp, const char *qid, enum spool_flag f,
    const char **err_out)
{
	const char *rec = f == SPOOL_FLAG_WARNED ? "warned\n" :
	    f == SPOOL_FLAG_HOLD ? "hold\n" : "release\n";

	return spool_append(sp, qid, rec, strlen(rec), false, err_out);
}

/* Does buf[0..len) hold line (n bytes, its LF last) as a whole line? */
static bool
spool_has_line(const char *buf, size_t len, const char *line, size_t n)
{
	const char *p = buf, *end = buf + len;

	while ((p = memmem(p, (size_t)(end - p), line, n)) != NULL) {
		if (p == buf || p[-1] == '\n')
			return true;
		p++;
	}
	return false;
}

/*
 * Zeros in done/<qid> (buf[0..*len), read from it): a power cut after the
 * journal committed an append's size but not its data, within a block
 * the file had already.  The file cut back to the whole lines before the
 * first zero (*len too): what followed was written after the checkpoint,
 * so the log's records give it back.  0, or -1 with *err_out.
 */
static int
spool_cut_zeros(struct spool *sp, const char *qid, const char *buf,
    size_t *len, const char **err_out)
{
	const char *z = memchr(buf, '\0', *len), *nl;
	size_t keep;
	int fd, rc = 0;

	if (z == NULL)
		return 0;
	nl = memrchr(buf, '\n', (size_t)(z - buf));
	keep = nl == NULL ? 0 : (size_t)(nl - buf) + 1;
	fd = openat(sp->fd[SUB_DONE], qid, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 || ftruncate(fd, (off_t)keep) == -1) {
		*err_out = spool_err("ftruncate", SUB_DONE, qid, "", errno);
		rc = -1;
	}
	if (fd != -1)
		close(fd);
	*len = keep;
	return rc;
}

int
spool_replay_line(struct spool *sp, const char *qid, const char *line,
    const char **err_out)
{
	size_t n = strlen(line), len = 0;
	char *buf = NULL;
	bool have;
	int fd, rc = 0;

	if (spool_slurp(sp, SUB_DONE, qid, &buf, &len) == -1 &&
	    errno != ENOENT) {
		*err_out = spool_err("read", SUB_DONE, qid, "", errno);
		return -1;
	}
	if (buf != NULL && spool_cut_zeros(sp, qid, buf, &len, err_out) == -1) {
		free(buf);
		return -1;
	}
	have = buf != NULL && spool_has_line(buf, len, line, n);
	free(buf);
	if (!have)
		return spool_append(sp, qid, line, n, false, err_out);
	/* Kept by the page cache, not yet by the disk: synced. */
	fd = openat(sp->fd[SUB_DONE], qid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 || util_fdatasync(fd) == -1) {
		*err_out = spool_err("fdatasync", SUB_DONE, qid, "", errno);
		rc = -1;
	}
	if (fd != -1)
		close(fd);
	return rc;
}

bool
spool_qid_ok(const char *qid)
{
	return spool_qid_is_valid(qid);
}
