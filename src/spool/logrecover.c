/*
 * spool/logrecover.c: opening the spool log (log.c) at start, before any
 * client is served.  What lies after its checkpoint names copies that were
 * acknowledged but may not be durable: a power cut can lose them, or leave
 * a name with no data (delayed allocation) or part of it.  Each copy found
 * whole (new/<name>, or cur/<name>:... a reader moved it) is synced; one
 * missing or short is written again (tmp/, fsync, rename, fsync new/); one
 * whose folder cannot take it is spooled as a new message for the queue.
 * Then the log starts afresh: a new epoch, nothing to replay.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "log/log.h"

struct lr_count {
	struct spool	*sp;
	size_t		 records, found, written, spooled, lost;
	size_t		 nspooled;	/* SPOOLED records */
	struct spool_logspool ls;
};

/* fsync the file at path (opened read-only). 0 or -1. */
static int
lr_fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), rc;

	if (fd == -1)
		return -1;
	rc = util_fsync(fd);
	close(fd);
	return rc;
}

/* Is the copy at path (new/NAME), or cur/NAME:..., whole?  Synced if so. */
static bool
lr_found(const char *path, off_t want)
{
	char *cur = xstrdup(path), *name, *slash = strrchr(cur, '/');
	struct stat st;
	struct dirent *de;
	bool found = false;
	size_t nl;
	DIR *d;

	if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == want) {
		free(cur);
		return lr_fsync_path(path) == 0;
	}
	name = xstrdup(slash + 1);
	nl = strlen(name);
	memcpy(slash - 3, "cur", 3);	/* ".../new/NAME" -> ".../cur" */
	*slash = '\0';
	if ((d = opendir(cur)) != NULL) {
		while (!found && (de = readdir(d)) != NULL) {
			char *p;
			if (strncmp(de->d_name, name, nl) != 0 ||
			    de->d_name[nl] != ':')
				continue;
			p = xasprintf("%s/%s", cur, de->d_name);
			found = stat(p, &st) == 0 && st.st_size == want &&
			    lr_fsync_path(p) == 0;
			free(p);
		}
		closedir(d);
	}
	free(name);
	free(cur);
	return found;
}

/* Write the copy at path again, durably.  0, or -1 (logged). */
static int
lr_rewrite(const char *path, const struct spool_logrec *r)
{
	char *tmp = xstrdup(path), *slash = strrchr(tmp, '/'), *newdir;
	int fd = -1, rc = -1;

	memcpy(slash - 3, "tmp", 3);
	newdir = xstrndup(path, (size_t)(slash - tmp));
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd != -1 &&
	    util_write_all(fd, r->hdr, strlen(r->hdr), -1) == 0 &&
	    util_write_all(fd, r->content, r->content_len, -1) == 0 &&
	    util_fsync(fd) == 0 && close(fd) == 0) {
		fd = -1;
		if (rename(tmp, path) == 0 && util_fsync_dir(newdir) == 0)
			rc = 0;
	}
	if (rc == -1) {
		log_msg(LOG_LVL_WARN, "spool log: cannot write %s again: %s",
		    path, strerror(errno));
		unlink(tmp);
	}
	if (fd != -1)
		close(fd);
	free(newdir);
	free(tmp);
	return rc;
}

/* Hand copy i of r to the queue as a message of its own.  0 or -1. */
static int
lr_spool(struct spool *sp, const struct spool_logrec *r, size_t i)
{
	const char *path = r->copies[i].path, *err = NULL;
	char *folder = xstrndup(path, (size_t)(strrchr(path, '/') - path - 4));
	struct spool_env env = { .received = r->received };
	struct spool_msg *m;
	char addr[600];
	int rc;

	spool_new_qid(sp, env.qid);
	env.sender = xstrdup(r->sender);
	env.size = r->content_len;
	spool_env_add_rcpt(&env, r->copies[i].addr, "maildir", folder);
	m = spool_msg_new(sp, env.qid);
	rc = spool_msg_write(m, r->content, r->content_len, &err);
	if (rc == 0)
		rc = spool_msg_commit(m, &env, &err);
	log_safe_word_into(addr, sizeof(addr), r->copies[i].addr,
	    strlen(r->copies[i].addr));
	if (rc == 0)
		log_msg(LOG_LVL_WARN, "spool log: %s for <%s> spooled as %s "
		    "(message %s)", path, addr, env.qid, r->qid);
	else
		log_msg(LOG_LVL_ERROR, "spool log: %s for <%s> (message %s) "
		    "cannot be spooled: %s", path, addr, r->qid, err);
	spool_msg_free(&m);
	spool_env_clear(&env);
	free(folder);
	return rc;
}

/* The first scan: which spooled messages were removed since. */
static void
lr_removed_cb(const struct spool_logrec *r, void *arg)
{
	struct lr_count *n = arg;

	if (r->kind == SPOOL_LR_REMOVED)
		spool_logspool_note_removed(&n->ls, r);
}

static void
lr_record_cb(const struct spool_logrec *r, void *arg)
{
	struct lr_count *n = arg;
	off_t want = (off_t)(strlen(r->hdr) + r->content_len);

	if (r->kind == SPOOL_LR_REMOVED)
		return;
	if (r->kind == SPOOL_LR_SPOOLED) {
		n->nspooled++;
		spool_logspool_record(&n->ls, n->sp, r);
		return;
	}
	if (r->kind == SPOOL_LR_LINE) {
		spool_logspool_line(&n->ls, n->sp, r);
		return;
	}
	n->records++;
	for (size_t i = 0; i < r->ncopies; i++) {
		const char *path = r->copies[i].path;
		const char *slash = strrchr(path, '/');

		/* Only what the fast path writes: "<folder>/new/<name>". */
		if (slash == NULL || slash - path < 4 ||
		    strncmp(slash - 4, "/new", 4) != 0) {
			log_msg(LOG_LVL_ERROR, "spool log: record %s names %s, "
			    "not a copy in new/", r->qid, path);
			n->lost++;
		} else if (lr_found(path, want))
			n->found++;
		else if (lr_rewrite(path, r) == 0)
			n->written++;
		else if (lr_spool(n->sp, r, i) == 0)
			n->spooled++;
		else
			n->lost++;
	}
}

/*
 * The count: records of copies, with a second part once the spool's own
 * messages were recorded ("in the spool: K whole, W written again, L lost,
 * R removed since": their files found with the record's sizes, written
 * again from it, neither, or not replayed since a later record says the
 * message was removed; "F removals finished": envelopes of messages
 * removed that the disk still held, unlinked; "D done-records": lines
 * of done/ files replayed, appended where a file lacked them).
 */
static void
lr_report(const struct lr_count *n)
{
	const struct spool_logspool *ls = &n->ls;
	char tail[200] = "";

	if (n->records == 0 && n->nspooled == 0 && ls->finished == 0 &&
	    ls->lines == 0)
		return;
	if (n->nspooled > 0 || ls->finished > 0 || ls->lines > 0)
		snprintf(tail, sizeof(tail), "; %zu in the spool: %zu whole, "
		    "%zu written again, %zu lost, %zu removed since; %zu "
		    "removals finished; %zu done-records",
		    n->nspooled - ls->skipped, ls->found, ls->written,
		    ls->lost, ls->skipped, ls->finished, ls->lines);
	log_msg(n->lost > 0 || ls->lost > 0 ? LOG_LVL_ERROR : LOG_LVL_INFO,
	    "spool log: recovered %zu messages: %zu copies found, %zu "
	    "written again, %zu spooled, %zu lost%s", n->records +
	    n->nspooled - ls->skipped, n->found, n->written, n->spooled,
	    n->lost, tail);
}

/* Replay the log in fd; *h gets its header (zeroed if it has none). */
static void
lr_replay(struct spool *sp, int fd, struct spool_loghdr *h)
{
	struct lr_count n = { .sp = sp };
	struct spool_loghdr h2;
	struct stat st;
	unsigned char *img;
	int ok;

	*h = (struct spool_loghdr){ 0 };
	if (fstat(fd, &st) == -1 || st.st_size < SPOOL_LOG_HDR)
		return;
	img = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (img == MAP_FAILED) {
		log_msg(LOG_LVL_ERROR, "spool log: mmap: %s", strerror(errno));
		return;
	}
	ok = spool_loghdr_decode(img, h);
	if (spool_loghdr_decode(img + 512, &h2) == 1 && (!ok ||
	    h2.gen > h->gen)) {
		*h = h2;
		ok = 1;
	}
	if (ok) {
		spool_log_scan(img, (size_t)st.st_size, SPOOL_LOG_HDR,
		    (size_t)h->off, h->seq, h->epoch, lr_removed_cb, &n, NULL);
		spool_log_scan(img, (size_t)st.st_size, SPOOL_LOG_HDR,
		    (size_t)h->off, h->seq, h->epoch, lr_record_cb, &n, NULL);
		spool_logspool_finish(&n.ls, sp);
	} else
		log_msg(LOG_LVL_WARN, "spool log: no valid header; "
		    "nothing replayed");
	munmap(img, (size_t)st.st_size);
	lr_report(&n);
}

/* A fresh log file of size bytes at path: zeros written, then synced. */
static int
lr_create(const char *dir, const char *path, uint64_t size)
{
	char *tmp = xasprintf("%s.tmp", path);
	static const char zeros[1 << 16];
	int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	uint64_t done = 0;

	while (fd != -1 && done < size) {
		size_t n = size - done < sizeof(zeros) ? (size_t)(size - done) :
		    sizeof(zeros);
		if (util_write_all(fd, zeros, n, -1) == -1)
			break;
		done += n;
	}
	if (fd == -1 || done < size || util_fsync(fd) == -1 ||
	    rename(tmp, path) == -1 || util_fsync_dir(dir) == -1) {
		int e = errno;
		if (fd != -1)
			close(fd);
		unlink(tmp);
		free(tmp);
		errno = e;
		return -1;
	}
	free(tmp);
	return fd;
}

int
spool_log_open(struct spool *sp, uint64_t size, const char **err_out)
{
	char *path = xasprintf("%s/log", sp->dir);
	int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	struct spool_loghdr h = { 0 };
	struct statfs sf;
	struct stat st;

	if (fd != -1) {
		lr_replay(sp, fd, &h);
		if (fstat(fd, &st) == -1 || (uint64_t)st.st_size != size) {
			close(fd);
			fd = -1;
			unlink(path);
		}
	}
	/* On tmpfs nothing is durable: the log would promise too much. */
	if (size > 0 && statfs(sp->dir, &sf) == 0 &&
	    (sf.f_type == 0x01021994 /* tmpfs */ ||
	    sf.f_type == 0x858458f6 /* ramfs */)) {
		log_msg(LOG_LVL_INFO, "spool log: off (the spool is in "
		    "memory)");
		size = 0;
	}
	if (size == 0) {
		if (fd != -1)
			close(fd);
		unlink(path);
		free(path);
		spool_logspool_forget_gone(sp);
		return 0;
	}
	if (fd == -1 && (fd = lr_create(sp->dir, path, size)) == -1) {
		if (errno == ENOSPC || errno == EDQUOT) {
			/* The server runs on, each copy synced on its own. */
			log_msg(LOG_LVL_WARN, "spool log: off: %s of %ju "
			    "bytes: %s", path, (uintmax_t)size,
			    strerror(errno));
			free(path);
			spool_logspool_forget_gone(sp);
			return 0;
		}
		*err_out = util_err("spool log %s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	free(path);
	/* A new epoch: whatever the area holds now is stale. */
	h = (struct spool_loghdr){ .epoch = h.epoch + 1, .gen = h.gen,
	    .seq = 1, .off = SPOOL_LOG_HDR, .size = size };
	if (spool_log_write_hdr(fd, &h) == -1) {
		*err_out = util_err("spool log: write(header): %s",
		    strerror(errno));
		close(fd);
		return -1;
	}
	/* The records replayed are stale now: so is what gone/ told them. */
	spool_logspool_forget_gone(sp);
	sp->log = spool_log_start(sp, fd, size, &h);
	spool_unwritten_check_room(sp, true);
	return 0;
}
