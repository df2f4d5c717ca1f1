/*
 * spool/keep.c: "spool ... keep DIR": a copy of each message's content in
 * a folder of its own (to train a content filter, say), DIR kept under its
 * size cap by removing the oldest copies (util_capdir).  A copy is a hard
 * link to the spool's file where the file system allows, else a copy
 * written under a dot name and renamed.  A copy larger than the cap is
 * not kept, and a folder removed meanwhile is made again.  Research
 * material, not mail: never fsynced, and a copy that fails costs a
 * warning, never a message.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
spool_keep_open(struct spool *sp, const char *dir, uint64_t max_bytes,
    const char **err_out)
{
	ASSERT(sp->keep == NULL);
	if ((sp->keep = util_capdir_new(dir, max_bytes, err_out)) == NULL)
		return -1;
	return 0;
}

bool
spool_keeps(const struct spool *sp)
{
	return sp->keep != NULL;
}

/* "<qid><suffix>.eml" into name; -1 when it does not fit (never). */
static int
spool_keep_name(char *name, size_t sz, const char *qid, const char *suffix)
{
	return util_snprintf(name, sz, "%s%s.eml", qid, suffix);
}

/* Count the copy name made of size bytes; one over the cap goes again. */
static int
spool_keep_count(struct spool *sp, const char *name, uint64_t size,
    const char **err_out)
{
	const char *err;

	if (util_capdir_add(sp->keep, name, size, &err) == 0)
		return 0;
	unlinkat(util_capdir_fd(sp->keep), name, 0);
	*err_out = util_err("keep %s", err);
	return -1;
}

/*
 * keep/.name from buf (len bytes) or, with buf NULL, from what src_fd
 * reads; then renamed to name and counted.
 */
static int
spool_keep_write(struct spool *sp, const char *name, const void *buf,
    size_t len, int src_fd, const char **err_out)
{
	int kfd = util_capdir_fd(sp->keep), fd;
	int flags = O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC;
	char tmp[SPOOL_QID_MAX + 40], chunk[65536];
	uint64_t done = len;
	ssize_t n = 0;

	(void)util_snprintf(tmp, sizeof(tmp), ".%s", name);
	fd = openat(kfd, tmp, flags, 0600);
	if (fd == -1 && util_capdir_remade(sp->keep))
		fd = openat(kfd, tmp, flags, 0600);
	if (fd == -1)
		goto fail;
	if (buf != NULL && util_write_all(fd, buf, len, -1) == -1)
		goto fail;
	while (buf == NULL && (n = read(src_fd, chunk, sizeof(chunk))) > 0) {
		if (util_write_all(fd, chunk, (size_t)n, -1) == -1)
			goto fail;
		done += (uint64_t)n;
	}
	if (n == -1)
		goto fail;
	n = close(fd);
	fd = -1;
	if (n == -1 || renameat(kfd, tmp, kfd, name) == -1)
		goto fail;
	return spool_keep_count(sp, name, done, err_out);
fail:
	*err_out = util_err("keep %s/%s: %s", util_capdir_path(sp->keep), name,
	    strerror(errno));
	if (fd != -1)
		close(fd);
	unlinkat(kfd, tmp, 0);
	return -1;
}

int
spool_keep_from(struct spool *sp, enum spool_sub sub, const char *qid,
    const char *suffix, const char **err_out)
{
	int kfd = util_capdir_fd(sp->keep), fd, rc;
	char name[SPOOL_QID_MAX + 32];
	struct stat st;

	if (spool_keep_name(name, sizeof(name), qid, suffix) == -1) {
		*err_out = "keep: name too long";
		return -1;
	}
	rc = linkat(sp->fd[sub], qid, kfd, name, 0);
	if (rc == -1 && util_capdir_remade(sp->keep))
		rc = linkat(sp->fd[sub], qid, kfd, name, 0);
	if (rc == 0) {
		if (fstatat(kfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
			return 0;
		return spool_keep_count(sp, name, (uint64_t)st.st_size,
		    err_out);
	}
	if (errno == EEXIST)
		return 0;	/* kept before a restart */
	if (errno != EXDEV && errno != EPERM && errno != EMLINK) {
		*err_out = util_err("keep link(%s/%s, %s/%s): %s",
		    spool_sub_names[sub], qid, util_capdir_path(sp->keep),
		    name, strerror(errno));
		return -1;
	}
	/* Another file system: a copy. */
	if ((fd = openat(sp->fd[sub], qid, O_RDONLY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1) {
		*err_out = spool_err("open", sub, qid, "", errno);
		return -1;
	}
	rc = spool_keep_write(sp, name, NULL, 0, fd, err_out);
	close(fd);
	return rc;
}

int
spool_keep_msg(struct spool *sp, const char *qid, const char **err_out)
{
	if (!spool_qid_is_valid(qid)) {
		*err_out = "invalid queue id";
		return -1;
	}
	return spool_keep_from(sp, SUB_MSG, qid, "", err_out);
}

int
spool_keep_content(struct spool *sp, const char *qid, const char *suffix,
    const void *buf, size_t len, const char **err_out)
{
	char name[SPOOL_QID_MAX + 32];

	if (!spool_qid_is_valid(qid) || spool_keep_name(name, sizeof(name), qid,
	    suffix) == -1) {
		*err_out = "keep: invalid queue id";
		return -1;
	}
	return spool_keep_write(sp, name, buf, len, -1, err_out);
}
