/*
 * deliver/maildir.c: one copy of a spooled message into a Maildir
 * (https://cr.yp.to/proto/maildir.html).  The name is derived from the
 * message, not from the clock, so a retry after a crash finds an earlier
 * copy and writes nothing: exactly once per recipient.  Knows nothing of
 * the queue.
 *
 * Order of writes, one journal commit instead of two: write tmp/<name>,
 * write its data out and wait for it (sync_file_range), rename into new/,
 * then fsync the file; DELIVER_OK only after that.  The rename changed the
 * file's inode (ctime), so its fsync waits for the commit holding the
 * rename, and new/ needs no fsync of its own: on ext4 that would force one
 * more commit of whatever else is running, on every delivery.  The classic
 * order (fsync, rename, fsync new/) waits for two commits one after the
 * other; at concurrency 1 that halves the rate.  The guarantee a reader
 * relies on still holds: a name in new/ never shows a partial file, before
 * or after a crash.  The data blocks are on the device before the rename
 * is issued, and the file's size and block map go into the journal (ext4)
 * or log (XFS) at that writeback, so no earlier than the rename; a commit
 * that makes the rename durable flushes the device cache and carries them
 * too.  A crash before the final fsyncs may leave a complete copy of an
 * unacknowledged message in new/: the client retries and the user sees
 * the message twice, never a truncated one.  That reasoning needs a file
 * system that journals its metadata in order, so the one-commit order is
 * used only on XFS and on ext4 mounted with a journal (util_fs_ordered);
 * everywhere else, and where sync_file_range is not supported, the
 * classic order.
 *
 * Symlinks: the folder path itself is admin configuration, so its parent
 * components may be symlinks; the folder and its tmp/ new/ cur/ are opened
 * with O_NOFOLLOW and files are created with O_EXCL, so a symlink planted
 * inside a Maildir cannot redirect our writes.
 *
 * Each thread keeps its last Maildir open (md_keep): a run of messages to
 * one mailbox (a list, an application's catch-all) then costs two stats per
 * copy instead of four opens and four closes.  Before each use the folder
 * path must still name the same directory, not a symlink, and its new/ the
 * same new/; else everything is opened afresh.  Our open descriptors keep
 * those inodes alive, so their numbers cannot have been reused meanwhile:
 * a Maildir moved away or replaced is never written behind the reader.
 * Whether the file system journals in order (util_fs_ordered) is kept
 * too: the descriptors hold the mount, which cannot change its journal.
 *
 * What a crash leaves in tmp/ is removed by maildir_sweep.c, which keeps
 * away from the names our deliveries are writing.
 *
 * Error strings (*err_out) come from util_err(): valid until the thread's
 * next error.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/util.h"

enum { MD_TMP, MD_NEW, MD_CUR, MD_N };
static const char *const md_sub[MD_N] = { "tmp", "new", "cur" };

struct md_ctx {
	const char	*folder;
	int		 dirfd;		/* the folder */
	int		 fd[MD_N];	/* tmp/ new/ cur/ */
	char		 name[512];
	int		 out;		/* the copy, in tmp/ then new/ */
	bool		 ordered;	/* the one-commit order (see top) */
	struct md_kept	*kept;		/* owned: from md_take, its fds ours */
};

/*
 * Which errors are permanent.  Only a name too long to ever exist is: a
 * folder path with a file (ENOTDIR) or a refused symlink (ELOOP) in it is an
 * operator's mistake that a fix repairs, like a full disk, a quota
 * (EDQUOT) or permissions (EACCES/EPERM, which Postfix defers too), so the
 * message waits in the queue for it instead of being refused.
 */
static enum deliver_result
md_classify(int err)
{
	switch (err) {
	case ENAMETOOLONG:
		return DELIVER_PERMFAIL;
	default:
		return DELIVER_TEMPFAIL;
	}
}

static enum deliver_result
md_fail(const char **err_out, int err, const char *call, const char *folder,
    const char *sub, const char *name)
{
	*err_out = util_err("%s(%s%s%s%s%s): %s", call, folder,
	    sub != NULL ? "/" : "", sub != NULL ? sub : "",
	    name != NULL ? "/" : "", name != NULL ? name : "", strerror(err));
	return md_classify(err);
}

/* "<received>.<qid>_<idx>.<host>", with '/' and ':' in host escaped. */
static int
md_name(struct md_ctx *c, const struct deliver_msg *m)
{
	const char *h = m->hostname != NULL && *m->hostname != '\0' ?
	    m->hostname : "localhost";
	struct util_buf b = { 0 };
	int rc;

	util_buf_printf(&b, "%" PRId64 ".%s_%zu.", m->received, m->qid,
	    m->rcpt_idx);
	for (; *h != '\0'; h++) {
		/* Maildir spec: '/' as \057 and ':' as \072. */
		if (*h == '/')
			util_buf_addstr(&b, "\\057");
		else if (*h == ':')
			util_buf_addstr(&b, "\\072");
		else
			util_buf_add(&b, h, 1);
	}
	rc = util_strlcpy(c->name, util_buf_cstr(&b), sizeof(c->name));
	util_buf_clear(&b);
	return rc;
}

/* A thread's last Maildir, still open (see top). */
struct md_kept {
	char		*folder;
	int		 dirfd;
	int		 fd[MD_N];
	dev_t		 dev;
	ino_t		 ino, new_ino;	/* of the folder and its new/ */
	bool		 ordered;
};

static pthread_key_t	md_kept_key;
static pthread_once_t	md_kept_once = PTHREAD_ONCE_INIT;

static void
md_kept_free(void *arg)
{
	struct md_kept *k = arg;

	if (k == NULL)
		return;
	close(k->dirfd);
	for (int i = 0; i < MD_N; i++)
		close(k->fd[i]);
	free(k->folder);
	free(k);
}

static void
md_kept_init(void)
{
	if (pthread_key_create(&md_kept_key, md_kept_free) != 0)
		fatal("pthread_key_create failed");
}

/* Take this thread's kept Maildir if it is still folder's (see top). */
static bool
md_take(struct md_ctx *c)
{
	struct md_kept *k;
	struct stat st;

	pthread_once(&md_kept_once, md_kept_init);
	if ((k = pthread_getspecific(md_kept_key)) == NULL)
		return false;
	pthread_setspecific(md_kept_key, NULL);
	if (strcmp(k->folder, c->folder) != 0 ||
	    fstatat(AT_FDCWD, c->folder, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
	    st.st_dev != k->dev || st.st_ino != k->ino ||
	    fstatat(k->dirfd, "new", &st, AT_SYMLINK_NOFOLLOW) == -1 ||
	    st.st_dev != k->dev || st.st_ino != k->new_ino) {
		md_kept_free(k);
		return false;
	}
	c->dirfd = k->dirfd;
	memcpy(c->fd, k->fd, sizeof(c->fd));
	c->ordered = k->ordered;
	c->kept = k;
	return true;
}

/*
 * Keep c's open Maildir for this thread's next delivery (true), or let c
 * close it (false).
 */
static bool
md_keep(struct md_ctx *c, bool ok)
{
	struct md_kept *k = c->kept;
	struct stat dst, nst;

	c->kept = NULL;
	if (ok && k == NULL && fstat(c->dirfd, &dst) == 0 &&
	    fstat(c->fd[MD_NEW], &nst) == 0) {
		k = xmalloc(sizeof(*k));
		k->folder = xstrdup(c->folder);
		k->dirfd = c->dirfd;
		memcpy(k->fd, c->fd, sizeof(k->fd));
		k->dev = dst.st_dev;
		k->ino = dst.st_ino;
		k->new_ino = nst.st_ino;
		k->ordered = c->ordered;
	} else if (!ok && k != NULL) {
		free(k->folder);	/* its fds are c's to close */
		free(k);
		k = NULL;
	}
	if (k != NULL)
		pthread_setspecific(md_kept_key, k);	/* md_take emptied it */
	return k != NULL;
}

/* Create (if needed) and open folder and its three subfolders. */
static enum deliver_result
md_open(struct md_ctx *c, const char **err_out)
{
	const int dflags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

	if (md_take(c))
		return DELIVER_OK;

	/* The Maildir usually exists: open first, create only when missing. */
	c->dirfd = open(c->folder, dflags);
	if (c->dirfd == -1 && errno == ENOENT) {
		if (util_mkdirs(c->folder, 0700) == -1)
			return md_fail(err_out, errno, "mkdir", c->folder,
			    NULL, NULL);
		c->dirfd = open(c->folder, dflags);
	}
	if (c->dirfd == -1)
		return md_fail(err_out, errno, "open", c->folder, NULL, NULL);
	for (int i = 0; i < MD_N; i++) {
		c->fd[i] = openat(c->dirfd, md_sub[i], dflags);
		if (c->fd[i] == -1 && errno == ENOENT) {
			if (mkdirat(c->dirfd, md_sub[i], 0700) == -1 &&
			    errno != EEXIST)
				return md_fail(err_out, errno, "mkdir",
				    c->folder, md_sub[i], NULL);
			c->fd[i] = openat(c->dirfd, md_sub[i], dflags);
		}
		if (c->fd[i] == -1)
			return md_fail(err_out, errno, "open", c->folder,
			    md_sub[i], NULL);
	}
	return DELIVER_OK;
}

/*
 * Is our name already in new/, or in cur/ as "<name>" or "<name>:<info>"
 * (a reader moved it)?  0 no, 1 yes, -1 error (errno).
 *
 * XXX: scanning cur/ costs O(mailbox) on every delivery; the queue could
 * pass a hint that this recipient may have been tried before.
 */
static int
md_already(struct md_ctx *c)
{
	size_t nl = strlen(c->name);
	struct stat st;
	struct dirent *de;
	DIR *d;
	int fd, found = 0;

	if (fstatat(c->fd[MD_NEW], c->name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	if (errno != ENOENT)
		return -1;
	fd = openat(c->fd[MD_CUR], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -1;
	}
	while (!found && (de = readdir(d)) != NULL)
		if (strncmp(de->d_name, c->name, nl) == 0 &&
		    (de->d_name[nl] == '\0' || de->d_name[nl] == ':'))
			found = 1;
	closedir(d);
	return found;
}

static int
md_write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* hdr, then body: one writev(2) unless the file system takes less. */
static int
md_write2(int fd, const char *hdr, size_t hlen, const char *body,
    size_t blen)
{
	struct iovec iov[2] = { { (void *)hdr, hlen }, { (void *)body, blen } };
	ssize_t n;

	do
		n = writev(fd, iov, 2);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	if ((size_t)n < hlen)
		return md_write_all(fd, hdr + n, hlen - (size_t)n) == -1 ? -1 :
		    md_write_all(fd, body, blen);
	n -= (ssize_t)hlen;
	return md_write_all(fd, body + n, blen - (size_t)n);
}

/* Copy in to out from their current offsets; never the whole in memory. */
static int
md_copy(int in, int out)
{
	char buf[65536];
	ssize_t n;

	for (;;) {
		n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
		    errno == EOPNOTSUPP || errno == EBADF)
			break;		/* fall back to read/write */
		return -1;
	}
	for (;;) {
		n = read(in, buf, sizeof(buf));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0)
			return 0;
		if (md_write_all(out, buf, (size_t)n) == -1)
			return -1;
	}
}

/* hdr and the content, from memory or from in. */
static int
md_write_content(int out, const char *hdr, const struct deliver_msg *m,
    int in)
{
	if (m->content != NULL)
		return md_write2(out, hdr, strlen(hdr), m->content,
		    m->content_len);
	if (md_write_all(out, hdr, strlen(hdr)) == -1)
		return -1;
	return md_copy(in, out);
}

/* Write tmp/<name>: Return-Path, then the content, settled on the device. */
static enum deliver_result
md_write(struct md_ctx *c, const struct deliver_msg *m, const char **err_out)
{
	enum deliver_result r = DELIVER_OK;
	char *hdr;
	int in = -1, out;

	if (m->content == NULL && m->content_fd > 0) {
		/* Reopening would check the file's owner: read what we got. */
		if ((in = dup(m->content_fd)) == -1 ||
		    lseek(in, 0, SEEK_SET) == -1) {
			md_fail(err_out, errno, "dup", "message", NULL, NULL);
			if (in != -1)
				close(in);
			return DELIVER_TEMPFAIL;
		}
	} else if (m->content == NULL &&
	    (in = open(m->content_path, O_RDONLY | O_CLOEXEC)) == -1) {
		/* Our own spool file: never the recipient's fault. */
		md_fail(err_out, errno, "open", m->content_path, NULL, NULL);
		return DELIVER_TEMPFAIL;
	}
	out = openat(c->fd[MD_TMP], c->name, O_WRONLY | O_CREAT | O_EXCL |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	/* A leftover from a crash before the rename; never delivered. */
	if (out == -1 && errno == EEXIST &&
	    unlinkat(c->fd[MD_TMP], c->name, 0) == 0)
		out = openat(c->fd[MD_TMP], c->name, O_WRONLY | O_CREAT |
		    O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out == -1) {
		r = md_fail(err_out, errno, "open", c->folder, "tmp", c->name);
		if (in != -1)
			close(in);
		return r;
	}
	hdr = xasprintf("Return-Path: <%s>\n", m->return_path != NULL ?
	    m->return_path : "");
	/*
	 * smtp/ never accepts such a sender, but the envelope is a file: a
	 * control byte here must not start a header of its own.
	 */
	for (char *p = hdr + 14; p[1] != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (md_write_content(out, hdr, m, in) == -1)
		r = md_fail(err_out, errno, "write", c->folder, "tmp", c->name);
	else if ((c->ordered ? util_settle(out) : fsync(out)) == -1)
		r = md_fail(err_out, errno, "fsync", c->folder, "tmp", c->name);
	free(hdr);
	if (in != -1)
		close(in);
	c->out = out;
	if (r != DELIVER_OK) {
		/* A full disk or EIO is never the message's fault. */
		if (r == DELIVER_PERMFAIL)
			r = DELIVER_TEMPFAIL;
		unlinkat(c->fd[MD_TMP], c->name, 0);
	}
	return r;
}

enum deliver_result
deliver_maildir(const char *folder, const struct deliver_msg *m,
    const char **err_out)
{
	struct md_ctx c = { .folder = folder, .dirfd = -1,
	    .fd = { -1, -1, -1 }, .out = -1 };
	struct deliver_md_busy busy;
	enum deliver_result r;
	int seen;

	if (folder == NULL || *folder == '\0') {
		*err_out = "maildir: no folder";
		return DELIVER_PERMFAIL;
	}
	if (md_name(&c, m) == -1) {
		*err_out = "maildir: unique name too long";
		return DELIVER_PERMFAIL;
	}
	if ((r = md_open(&c, err_out)) != DELIVER_OK)
		goto out;
	if (c.kept == NULL)
		c.ordered = util_fs_ordered(c.fd[MD_NEW]);
	if (m->fresh)
		seen = 0;
	else if ((seen = md_already(&c)) == -1) {
		r = md_fail(err_out, errno, "stat", folder, "new", c.name);
		goto out;
	}
	if (seen == 1) {
		/*
		 * Delivered before a crash (exactly once).  If the earlier
		 * attempt stopped before its fsyncs, make the copy durable
		 * now (a reader may have moved it to cur/ already).
		 */
		c.out = openat(c.fd[MD_NEW], c.name, O_RDONLY | O_NOFOLLOW |
		    O_CLOEXEC);
		if ((c.out != -1 && fsync(c.out) == -1) ||
		    fsync(c.fd[MD_NEW]) == -1) {
			md_fail(err_out, errno, "fsync", folder, "new", NULL);
			r = DELIVER_TEMPFAIL;
		}
		goto out;
	}
	/* Ours while in tmp/: the tmp/ sweep leaves it alone. */
	deliver_md_busy_enter(&busy, folder, c.name);
	r = md_write(&c, m, err_out);
	if (r == DELIVER_OK && renameat(c.fd[MD_TMP], c.name, c.fd[MD_NEW],
	    c.name) == -1) {
		r = md_fail(err_out, errno, "rename", folder, "tmp", c.name);
		unlinkat(c.fd[MD_TMP], c.name, 0);
	}
	deliver_md_busy_leave(&busy);
	if (r != DELIVER_OK)
		goto out;
	if (c.ordered) {
		if (fsync(c.out) == -1) {
			/* Not known to be whole on disk: take it back. */
			md_fail(err_out, errno, "fsync", folder, "new", c.name);
			unlinkat(c.fd[MD_NEW], c.name, 0);
			r = DELIVER_TEMPFAIL;
		}
	} else if (fsync(c.fd[MD_NEW]) == -1) {
		/*
		 * The name may not be durable yet; a retry finds it in new/
		 * if it is, or writes it again if it was lost.
		 */
		md_fail(err_out, errno, "fsync", folder, "new", NULL);
		r = DELIVER_TEMPFAIL;
	}
out:
	if (c.out != -1 && close(c.out) == -1 && r == DELIVER_OK)
		r = md_fail(err_out, errno, "close", folder, "new", c.name);
	/* A failure opens everything afresh next time. */
	if (md_keep(&c, r == DELIVER_OK))
		return r;
	for (int i = 0; i < MD_N; i++)
		if (c.fd[i] != -1)
			close(c.fd[i]);
	if (c.dirfd != -1)
		close(c.dirfd);
	return r;
}
