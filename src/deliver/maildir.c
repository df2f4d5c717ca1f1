/*
 * deliver/maildir.c: the copies of a spooled message in Maildirs
 * (https://cr.yp.to/proto/maildir.html), one per recipient.  The name is
 * derived from the message and the recipient, not from the clock, so a
 * retry after a crash finds an earlier copy and writes nothing: exactly
 * once per recipient.  Knows nothing of the queue.
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
 * On the fast path (m->unsynced set) a copy in the one-commit order is
 * written into tmp/ with no sync at all and left there (hold), and the
 * copies to be linked to it are not made yet; all are noted in
 * m->unsynced, and maildir_publish.c names them in new/ once the caller
 * has recorded them.  The bytes of each copy are maildir_write.c's.
 *
 * Symlinks: the folder path is admin configuration, and the folders it
 * leads through are ours to write, so any of its components may be a
 * symlink, the folder itself included (a Maildir moved to a bigger disk
 * and linked back).  Inside the Maildir nothing is followed: tmp/ new/
 * cur/ are opened with O_NOFOLLOW and files are created with O_EXCL, so a
 * symlink planted inside a Maildir cannot redirect our writes.  A copy
 * written as the mailbox's owner (priv/) gets here only after the helper
 * found no symlink on the path from the owner's home or maildir-root down;
 * one swapped in after that check leads the owner's own process where the
 * owner may write anyway.
 *
 * Each thread keeps the Maildirs it delivered to last open
 * (maildir_keep.c): their new/, and tmp/ where a copy was written; cur/ is
 * opened next to new/ when a retry looks for an earlier copy.  A run of
 * messages to the same mailboxes (a list, an application's catch-all, ten
 * recipients each) then costs the two stats of the check below, before the
 * copy is written and again before its rename into new/, instead of four
 * opens and four closes.  Before each use the folder path's new/ (the path
 * followed as an open follows it, new itself not) must be the new/ we
 * hold; else everything is opened afresh.  A directory has one parent, so
 * the folder then leads to the Maildir we opened, whatever symlinks it
 * passes, and our descriptor keeps new/ alive, so its number cannot have
 * been reused meanwhile: a Maildir moved away or replaced, or a symlink
 * pointed elsewhere, is never written behind the reader.  (A folder's
 * ctime would be too coarse to show a rename within the same tick.)
 * Whether the file system journals in order (util_fs_ordered) is kept
 * too: the descriptors hold the mount, which cannot change its journal.
 * Besides what is kept, a delivery holds at most seven descriptors
 * (net/nofile.c counts them): a Maildir being opened (folder, tmp/, new/,
 * cur/) or a copy being written (its file, the spool file, its Maildir's
 * new/ and tmp/ if they found no room among the kept ones), and the first
 * copy's file with, likewise, its Maildir's two.
 *
 * Several recipients of one message (deliver_maildir_copies): their copies
 * are the same bytes (the Return-Path line is the message's, and nothing
 * else is added per recipient), so the first copy is written once and
 * hard-linked into the new/ of each other Maildir on its file system, under
 * that recipient's own name; then one fsync of the file.  Each link changed
 * the inode (link count, ctime) in the same journal transaction (ext4) or
 * log item (XFS) that adds its directory entry, so the inode's last change
 * is no earlier than any entry's, and its fsync waits for the commit holding
 * that change; commits are in order, so every entry and the rename before
 * them are durable too: one commit for all the copies, not one each.  The
 * data was on the device before the first rename, so no name ever shows a
 * partial file.  Where the one-commit order is not used, the file was
 * fsynced before its rename, and each new/ holding a link is fsynced on its
 * own.  Maildirs on another file system than the first copy's wait for the
 * next round, whose first copy they link to: one commit per file system.  A
 * link that fails all the same (EXDEV across bind mounts, too many links:
 * EMLINK, EPERM, ...) writes a copy of its own, made durable on its own.  A
 * crash in the middle leaves some names: a retry finds those (exactly once)
 * and links or writes the others; a copy found is never linked to, since a
 * reader may have moved or flagged it meanwhile.  Links go straight into
 * new/, never through tmp/, so the tmp/ sweep sees only what it sees for one
 * copy.  Copies made as the mailbox's owner (maildir-owner) are each written
 * by their owner in a process of their own (priv/): never linked.
 *
 * The router spells each folder one way (no "//", "/./" or trailing "/"),
 * so one Maildir is one destination; one still reached by two paths (a
 * symlink on the way) is known here by its new/ (device and inode): a
 * recipient whose Maildir an earlier copy of the message went to gets no
 * copy of its own, and its delivery is that copy's.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

enum { MD_TMP, MD_NEW, MD_CUR, MD_N };
static const char *const md_sub[MD_N] = { "tmp", "new", "cur" };

/*
 * Which errors are permanent.  Only a name too long to ever exist is: a
 * folder path with a file or a refused symlink (ENOTDIR, ELOOP) in it is an
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

enum deliver_result
deliver_md_fail(const char **err_out, int err, const char *call,
    const char *folder, const char *sub, const char *name)
{
	*err_out = util_err("%s(%s%s%s%s%s): %s", call, folder,
	    sub != NULL ? "/" : "", sub != NULL ? sub : "",
	    name != NULL ? "/" : "", name != NULL ? name : "", strerror(err));
	return md_classify(err);
}

/* "<received>.<qid>_<idx>.<host>", with '/' and ':' in host escaped. */
static int
md_name(struct deliver_md_copy *c, const struct deliver_msg *m, size_t rcpt_idx)
{
	const char *h = m->hostname != NULL && *m->hostname != '\0' ?
	    m->hostname : "localhost";
	struct util_buf b = { 0 };
	char num[UTIL_DEC_MAX];
	int rc;

	util_buf_addstr(&b, util_i64_dec(num, m->received));
	util_buf_add(&b, ".", 1);
	util_buf_addstr(&b, m->qid);
	util_buf_add(&b, "_", 1);
	util_buf_addstr(&b, util_i64_dec(num, (int64_t)rcpt_idx));
	util_buf_add(&b, ".", 1);
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

/*
 * Make the missing folder and the folders on its way, and open it: its
 * descriptor, or -1 (errno) when the open fails, or -2 with *err_out
 * naming the folder that could not be made.
 */
static int
md_mkdirs(struct deliver_md_copy *c, const char **err_out)
{
	size_t n;
	char *failed;
	int e;

	if (util_mkdirs_where(c->folder, 0700, &n) == 0)
		return open(c->folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	e = errno;
	failed = xstrndup(c->folder, n);
	(void)deliver_md_fail(err_out, e, "mkdir", failed, NULL, NULL);
	free(failed);
	errno = e;
	return -2;
}

/*
 * Why sub of the Maildir did not open (errno): O_NOFOLLOW with
 * O_DIRECTORY gives ENOTDIR for a symlink, even one to a folder.
 */
static enum deliver_result
md_open_fail(struct deliver_md_copy *c, int dirfd, const char *sub,
    const char **err_out)
{
	int e = errno;
	struct stat st;

	if (e == ENOTDIR && fstatat(dirfd, sub, &st, AT_SYMLINK_NOFOLLOW) ==
	    0 && S_ISLNK(st.st_mode)) {
		*err_out = util_err("open(%s/%s): is a symbolic link, which "
		    "postern does not follow", c->folder, sub);
		return md_classify(ELOOP);
	}
	return deliver_md_fail(err_out, e, "open", c->folder, sub, NULL);
}

/* Open folder's Maildir afresh, creating what is missing. */
static enum deliver_result
md_open_new(struct deliver_md_copy *c, bool want_tmp, const char **err_out)
{
	const int dflags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	/* The folder may be a symlink (see top); what is inside may not. */
	const int fflags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
	enum deliver_result r = DELIVER_OK;
	int dirfd, fd[MD_N] = { -1, -1, -1 };
	struct stat st;

	/* The Maildir usually exists: open first, create only when missing. */
	dirfd = open(c->folder, fflags);
	if (dirfd == -1 && errno == ENOENT) {
		if ((dirfd = md_mkdirs(c, err_out)) == -2)
			return md_classify(errno);
	}
	if (dirfd == -1)
		return deliver_md_fail(err_out, errno, "open", c->folder, NULL,
		    NULL);
	for (int i = 0; i < MD_N && r == DELIVER_OK; i++) {
		fd[i] = openat(dirfd, md_sub[i], dflags);
		if (fd[i] == -1 && errno == ENOENT) {
			if (mkdirat(dirfd, md_sub[i], 0700) == -1 &&
			    errno != EEXIST) {
				r = deliver_md_fail(err_out, errno, "mkdir",
				    c->folder, md_sub[i], NULL);
				break;
			}
			fd[i] = openat(dirfd, md_sub[i], dflags);
		}
		if (fd[i] == -1)
			r = md_open_fail(c, dirfd, md_sub[i], err_out);
	}
	if (r == DELIVER_OK && fstat(fd[MD_NEW], &st) == -1)
		r = deliver_md_fail(err_out, errno, "stat", c->folder, "new",
		    NULL);
	if (r == DELIVER_OK) {
		/* Kept: new/, and tmp/ if a copy is to be written now. */
		c->dir = deliver_md_add(c->folder, fd[MD_NEW],
		    want_tmp ? fd[MD_TMP] : -1,
		    util_fs_ordered(fd[MD_NEW], &st), &st);
		fd[MD_NEW] = -1;
		if (want_tmp)
			fd[MD_TMP] = -1;
	}
	close(dirfd);
	for (int i = 0; i < MD_N; i++)
		if (fd[i] != -1)
			close(fd[i]);
	return r;
}

/* folder's Maildir: the thread's kept one if still current, or afresh. */
enum deliver_result
deliver_md_open(struct deliver_md_copy *c, bool want_tmp, const char **err_out)
{
	if ((c->dir = deliver_md_find(c->folder)) != NULL)
		return DELIVER_OK;
	return md_open_new(c, want_tmp, err_out);
}

/*
 * Is our name already in new/, or in cur/ as "<name>" or "<name>:<info>"
 * (a reader moved it)?  0 no, 1 yes, -1 error (errno).
 *
 * XXX: scanning cur/ costs O(mailbox) on every delivery; the queue could
 * pass a hint that this recipient may have been tried before.
 */
static int
md_already(struct deliver_md_copy *c)
{
	size_t nl = strlen(c->name);
	struct stat st;
	struct dirent *de;
	DIR *d;
	int fd, found = 0;

	if (fstatat(c->dir->new_fd, c->name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	if (errno != ENOENT)
		return -1;
	/* new/ was just checked to be the folder's: its parent is ours. */
	fd = openat(c->dir->new_fd, "../cur", O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
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

/* Write tmp/<name>: Return-Path, then the content, settled on the device
 * (unless it is made durable later). */
static enum deliver_result
md_write(struct deliver_md_copy *c, const struct deliver_msg *m,
    const char **err_out)
{
	enum deliver_result r = DELIVER_OK;
	char *hdr;
	int in = -1, out;

	if (m->content == NULL && m->content_fd > 0) {
		/* Reopening would check the file's owner: read what we got. */
		if ((in = dup(m->content_fd)) == -1 ||
		    lseek(in, 0, SEEK_SET) == -1) {
			deliver_md_fail(err_out, errno, "dup", "message", NULL,
			    NULL);
			if (in != -1)
				close(in);
			return DELIVER_TEMPFAIL;
		}
	} else if (m->content == NULL &&
	    (in = open(m->content_path, O_RDONLY | O_CLOEXEC)) == -1) {
		/* Our own spool file: never the recipient's fault. */
		deliver_md_fail(err_out, errno, "open", m->content_path, NULL,
		    NULL);
		return DELIVER_TEMPFAIL;
	}
	out = openat(c->dir->tmp_fd, c->name, O_WRONLY | O_CREAT | O_EXCL |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	/* A leftover from a crash before the rename; never delivered. */
	if (out == -1 && errno == EEXIST &&
	    unlinkat(c->dir->tmp_fd, c->name, 0) == 0)
		out = openat(c->dir->tmp_fd, c->name, O_WRONLY | O_CREAT |
		    O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out == -1) {
		r = deliver_md_fail(err_out, errno, "open", c->folder, "tmp",
		    c->name);
		if (in != -1)
			close(in);
		return r;
	}
	hdr = deliver_maildir_hdr(m);
	if (deliver_md_write_content(out, hdr, m, in) == -1)
		r = deliver_md_fail(err_out, errno, "write", c->folder, "tmp",
		    c->name);
	else if (!c->later && (c->ordered ? util_settle(out) :
	    util_fsync(out)) == -1)
		r = deliver_md_fail(err_out, errno, "fsync", c->folder, "tmp",
		    c->name);
	free(hdr);
	if (in != -1)
		close(in);
	c->out = out;
	if (r != DELIVER_OK) {
		/* A full disk or EIO is never the message's fault. */
		if (r == DELIVER_PERMFAIL)
			r = DELIVER_TEMPFAIL;
		unlinkat(c->dir->tmp_fd, c->name, 0);
	}
	return r;
}

/* c's outcome, with the reason err (util_err's: copied now). */
void
deliver_md_set(struct deliver_md_copy *c, enum deliver_result r,
    const char *err)
{
	c->r = r;
	if (r != DELIVER_OK)
		util_strlcpy(c->err, err, sizeof(c->err));
}

/*
 * Name and open c's copy of m for recipient rcpt_idx: 1 when the name is
 * there already (delivered before), 0 when not, -1 when that failed (c->r).
 */
static int
md_prepare(struct deliver_md_copy *c, const struct deliver_msg *m,
    size_t rcpt_idx, bool want_tmp)
{
	enum deliver_result r;
	const char *err;
	int seen;

	if (c->folder == NULL || *c->folder == '\0') {
		deliver_md_set(c, DELIVER_PERMFAIL, "maildir: no folder");
		return -1;
	}
	if (md_name(c, m, rcpt_idx) == -1) {
		deliver_md_set(c, DELIVER_PERMFAIL,
		    "maildir: unique name too long");
		return -1;
	}
	if ((r = deliver_md_open(c, want_tmp, &err)) != DELIVER_OK) {
		deliver_md_set(c, r, err);
		return -1;
	}
	c->dev = c->dir->dev;
	c->ino = c->dir->new_ino;
	c->ordered = c->dir->ordered;
	c->later = c->ordered && m->unsynced != NULL;
	c->rcpt = rcpt_idx;
	if (m->fresh)
		return 0;
	if ((seen = md_already(c)) == -1) {
		r = deliver_md_fail(&err, errno, "stat", c->folder, "new",
		    c->name);
		deliver_md_set(c, r, err);
	}
	return seen;
}

/*
 * Delivered before a crash (exactly once).  If the earlier attempt stopped
 * before its fsyncs, make the copy durable now (a reader may have moved it
 * to cur/ already).
 */
static void
md_seen(struct deliver_md_copy *c)
{
	const char *err;

	c->out = openat(c->dir->new_fd, c->name, O_RDONLY | O_NOFOLLOW |
	    O_CLOEXEC);
	if ((c->out != -1 && util_fsync(c->out) == -1) ||
	    util_fsync(c->dir->new_fd) == -1) {
		deliver_md_fail(&err, errno, "fsync", c->folder, "new", NULL);
		deliver_md_set(c, DELIVER_TEMPFAIL, err);
	}
}

/* Write c's copy into tmp/ and rename it into new/ (unless held there for
 * deliver_maildir_publish); md_finish makes it durable. */
void
deliver_md_place(struct deliver_md_copy *c, const struct deliver_msg *m)
{
	struct deliver_md_busy busy;
	enum deliver_result r;
	const char *err = NULL;

	if (deliver_md_tmp(c->dir) == -1) {
		r = deliver_md_fail(&err, errno, "open", c->folder, "tmp",
		    NULL);
		deliver_md_set(c, r, err);
		return;
	}
	/* Ours while in tmp/: the tmp/ sweep leaves it alone. */
	deliver_md_busy_enter(&busy, c->folder, c->name);
	r = md_write(c, m, &err);
	if (r == DELIVER_OK && !c->hold && renameat(c->dir->tmp_fd, c->name,
	    c->dir->new_fd, c->name) == -1) {
		r = deliver_md_fail(&err, errno, "rename", c->folder, "tmp",
		    c->name);
		unlinkat(c->dir->tmp_fd, c->name, 0);
	}
	deliver_md_busy_leave(&busy);
	if (r != DELIVER_OK)
		deliver_md_set(c, r, err);
}

/* Close c's files; keep its Maildir open for the thread when keep. */
void
deliver_md_close(struct deliver_md_copy *c, bool keep)
{
	const char *err;

	if (c->out != -1 && close(c->out) == -1 && c->r == DELIVER_OK) {
		deliver_md_fail(&err, errno, "close", c->folder, "new",
		    c->name);
		deliver_md_set(c, DELIVER_TEMPFAIL, err);
	}
	c->out = -1;
	/* A failure opens everything afresh next time. */
	deliver_md_release(&c->dir, keep && c->r == DELIVER_OK);
}

/*
 * Where the one-commit order is not used: the name in new/ may not be
 * durable yet; a retry finds it in new/ if it is, or writes it again if
 * it was lost.
 */
static void
md_sync_new(struct deliver_md_copy *c)
{
	const char *err;

	if (util_fsync(c->dir->new_fd) == -1) {
		deliver_md_fail(&err, errno, "fsync", c->folder, "new", NULL);
		deliver_md_set(c, DELIVER_TEMPFAIL, err);
	}
}

/* Take back the name of a copy not known to be whole on disk. */
static void
md_take_back(struct deliver_md_copy *c, const char *err)
{
	const char *e;
	bool closed = c->dir == NULL;

	if (!closed || deliver_md_open(c, false, &e) == DELIVER_OK)
		unlinkat(c->dir->new_fd, c->name, 0);
	deliver_md_set(c, DELIVER_TEMPFAIL, err);
	if (closed)
		deliver_md_close(c, false);
}

/*
 * Make placed copy i durable (see top): in the one-commit order, fsync
 * the file, which commits its links (after it in cs) too; else its new/.
 */
static void
md_finish(struct deliver_md_copy *cs, size_t n, size_t i)
{
	struct deliver_md_copy *c = &cs[i];
	const char *err;

	if (!c->ordered) {
		md_sync_new(c);
		return;
	}
	if (c->later)
		return;
	if (util_fsync(c->out) == 0)
		return;
	deliver_md_fail(&err, errno, "fsync", c->folder, "new", c->name);
	md_take_back(c, err);
	for (size_t j = i + 1; j < n; j++)
		if (cs[j].src == i && cs[j].r == DELIVER_OK)
			md_take_back(&cs[j], c->err);
}

/*
 * Link copy i to the source s (see top): true when done, its Maildir
 * closed; false when it must be written (any failure: EXDEV, EMLINK,
 * EPERM...).
 */
static bool
md_link(struct deliver_md_copy *cs, size_t s, size_t i)
{
	struct deliver_md_copy *c = &cs[i];

	if (linkat(cs[s].dir->new_fd, cs[s].name, c->dir->new_fd, c->name,
	    0) == -1)
		return false;
	c->src = s;
	c->ordered = cs[s].ordered;
	c->later = cs[s].later;
	if (!c->ordered)
		md_sync_new(c);
	deliver_md_close(c, true);
	return true;
}

/*
 * Is copy i's Maildir one that an earlier copy of this message went to
 * (or was found in), named another way (a symlink, another spelling)?
 * Its new/ is the same directory: one copy serves both recipients.
 */
static bool
md_same_as_earlier(const struct deliver_md_copy *cs, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (cs[j].done && cs[j].r == DELIVER_OK &&
		    cs[j].dev == cs[i].dev && cs[j].ino == cs[i].ino)
			return true;
	return false;
}

/*
 * One round over the copies not done yet: the first one written is the
 * source, the others on its file system are linked to it, those on
 * another wait for the next round; then the source's commit.  Returns
 * how many wait.
 */
static size_t
md_round(struct deliver_md_copy *cs, size_t n, const size_t *rcpt_idx,
    const struct deliver_msg *m)
{
	size_t src = SIZE_MAX, wait = 0;

	for (size_t i = 0; i < n; i++) {
		struct deliver_md_copy *c = &cs[i];

		if (c->done)
			continue;
		switch (md_prepare(c, m, rcpt_idx[i], src == SIZE_MAX)) {
		case 1:
			md_seen(c);
			/* FALLTHROUGH */
		case -1:
			c->done = true;
			deliver_md_close(c, true);
			continue;
		}
		if (md_same_as_earlier(cs, i)) {
			c->done = true;
			c->later = false;	/* no file of its own to note */
			deliver_md_close(c, true);
			continue;
		}
		if (src != SIZE_MAX && c->dev != cs[src].dev) {
			deliver_md_close(c, true);
			wait++;
			continue;
		}
		c->done = true;
		if (src != SIZE_MAX && cs[src].hold) {
			c->src = src;	/* linked by deliver_maildir_publish */
			deliver_md_close(c, true);
			continue;
		}
		if (src != SIZE_MAX && md_link(cs, src, i))
			continue;
		c->hold = c->later;
		deliver_md_place(c, m);
		if (c->r == DELIVER_OK && src == SIZE_MAX) {
			src = i;	/* stays open while others link to it */
			continue;
		}
		if (c->r == DELIVER_OK)		/* not linked: on its own */
			md_finish(cs, n, i);
		deliver_md_close(c, true);
	}
	if (src != SIZE_MAX) {
		/* Every link is made: now the commit (see top). */
		md_finish(cs, n, src);
		deliver_md_close(&cs[src], true);
	}
	return wait;
}

void
deliver_maildir_copies(const char *const *folders, const size_t *rcpt_idx,
    size_t n, const struct deliver_msg *m,
    struct deliver_rcpt_status *st_out)
{
	struct deliver_md_copy *cs = xcalloc(n, sizeof(*cs));
	size_t *at = xcalloc(n, sizeof(*at));	/* cs index -> u index */

	for (size_t i = 0; i < n; i++)
		cs[i] = (struct deliver_md_copy){ .folder = folders[i],
		    .out = -1, .src = SIZE_MAX };
	/* Each round finishes at least its first copy. */
	while (md_round(cs, n, rcpt_idx, m) > 0)
		;
	for (size_t i = 0; i < n; i++) {
		deliver_status_all(&st_out[i], 1, cs[i].r,
		    cs[i].r == DELIVER_OK ? NULL : cs[i].err);
		if (cs[i].later && cs[i].r == DELIVER_OK) {
			at[i] = m->unsynced->n;
			deliver_md_note(&cs[i], m->unsynced,
			    cs[i].src == SIZE_MAX || !cs[cs[i].src].hold ?
			    SIZE_MAX : at[cs[i].src]);
		}
	}
	free(at);
	free(cs);
}

enum deliver_result
deliver_maildir(const char *folder, const struct deliver_msg *m,
    const char **err_out)
{
	struct deliver_rcpt_status st;

	deliver_maildir_copies(&folder, &m->rcpt_idx, 1, m, &st);
	if (st.result != DELIVER_OK)
		*err_out = util_err("%s", st.text);
	return st.result;
}

/*
 * "as USER" names an account the helper can deliver as: one that exists
 * and is not root under any name (uid 0), which it refuses at each
 * delivery; an owner from a passwd table is looked up then.
 */
int
deliver_maildir_check(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	uid_t uid;
	gid_t gid;

	(void)c;
	if (a->owner == NULL)
		return 0;
	if (!deliver_uid_of(a->owner, &uid, &gid)) {
		*err_out = util_err("as %s: no such user", a->owner);
		return -1;
	}
	if (uid == 0) {
		*err_out = util_err("as %s: uid 0 is root, which a Maildir is "
		    "never delivered as", a->owner);
		return -1;
	}
	return 0;
}
