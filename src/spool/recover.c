/*
 * spool/recover.c: what a start finds in the spool.  spool_list removes
 * what was never accepted (see the crash table in spool.c) unless a
 * message is still being received or committed (its lock is held), and
 * lists the committed messages, oldest first, damaged ones included;
 * spool_list_readonly lists the same and touches nothing (postern queue).
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log/log.h"

static bool
spool_exists(struct spool *sp, enum spool_sub sub, const char *name)
{
	struct stat st;

	return fstatat(sp->fd[sub], name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/*
 * Remove sub/<name> if nobody holds its lock (a message being received or
 * committed right now, in any process) and, for msg/ and done/, if it still
 * has no envelope once we hold the lock.
 */
static void
spool_reap(struct spool *sp, enum spool_sub sub, const char *name)
{
	int fd;

	fd = openat(sp->fd[sub], name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC |
	    O_NONBLOCK);
	if (fd == -1) {
		if (errno == ELOOP)	/* a symlink: nothing of ours */
			unlinkat(sp->fd[sub], name, 0);
		return;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0 &&
	    (sub == SUB_TMP || !spool_exists(sp, SUB_ENV, name))) {
		log_msg(LOG_LVL_INFO, "spool: removing unaccepted %s/%s",
		    spool_sub_names[sub], name);
		unlinkat(sp->fd[sub], name, 0);
	}
	close(fd);
}

/*
 * env/<qid>.tmp is not locked itself; its message is busy while someone
 * holds the lock of msg/<qid> (steps 3 and 4 of a commit in progress).
 */
static void
spool_reap_env_tmp(struct spool *sp, const char *name, size_t qidlen)
{
	char qid[SPOOL_QID_MAX];
	int fd;

	if (qidlen >= sizeof(qid))
		goto reap;
	memcpy(qid, name, qidlen);
	qid[qidlen] = '\0';
	fd = openat(sp->fd[SUB_MSG], qid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC |
	    O_NONBLOCK);
	if (fd != -1) {
		bool busy = flock(fd, LOCK_EX | LOCK_NB) == -1;
		close(fd);
		if (busy)
			return;
	}
reap:
	log_msg(LOG_LVL_INFO, "spool: removing unaccepted env/%s", name);
	unlinkat(sp->fd[SUB_ENV], name, 0);
}

/* Remove what no envelope accounts for in sub/ (tmp/, msg/ or done/). */
static int
spool_sweep(struct spool *sp, enum spool_sub sub, const char **err_out)
{
	struct dirent *de;
	DIR *d;
	int fd;

	fd = openat(sp->fd[sub], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1 || (d = fdopendir(fd)) == NULL) {
		*err_out = spool_err("opendir", sub, "", "", errno);
		if (fd != -1)
			close(fd);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (sub == SUB_TMP || !spool_exists(sp, SUB_ENV, de->d_name))
			spool_reap(sp, sub, de->d_name);
	}
	closedir(d);
	return 0;
}

struct spool_entry {
	char		*qid;
	struct timespec	 mtime;
};

static int
spool_entry_cmp(const void *a, const void *b)
{
	const struct spool_entry *x = a, *y = b;

	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->qid, y->qid);
}

/*
 * Collect committed envelopes; .tmp leftovers and content-less ones are
 * passed over, and removed when sweep.
 */
static int
spool_scan_env(struct spool *sp, bool sweep, struct spool_entry **ents_out,
    size_t *n_out, const char **err_out)
{
	struct spool_entry *ents = NULL;
	struct dirent *de;
	struct stat st;
	size_t n = 0;
	DIR *d;
	int fd;

	fd = openat(sp->fd[SUB_ENV], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1 || (d = fdopendir(fd)) == NULL) {
		*err_out = spool_err("opendir", SUB_ENV, "", "", errno);
		if (fd != -1)
			close(fd);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		size_t len = strlen(name);

		if (name[0] == '.')
			continue;
		if (len > 4 && strcmp(name + len - 4, ".tmp") == 0) {
			if (sweep)
				spool_reap_env_tmp(sp, name, len - 4);
			continue;
		}
		if (!spool_qid_is_valid(name) ||
		    fstatat(sp->fd[SUB_ENV], name, &st, AT_SYMLINK_NOFOLLOW)
		    == -1 || !S_ISREG(st.st_mode)) {
			if (sweep)
				log_msg(LOG_LVL_WARN, "spool: ignoring env/%s",
				    name);
			continue;
		}
		/*
		 * Content renames precede envelope renames, so an envelope
		 * without content is a commit cut short by a crash (step 4):
		 * never acknowledged.  Unless it has status records: only
		 * the queue writes them, after the commit, so its content
		 * was lost since (an operator, fsck).  That one stays, and
		 * the queue reports it as damaged.
		 */
		if (!spool_exists(sp, SUB_MSG, name) &&
		    !spool_exists(sp, SUB_DONE, name)) {
			if (!sweep)
				continue;
			log_msg(LOG_LVL_INFO, "spool: removing unaccepted "
			    "env/%s (no content)", name);
			unlinkat(sp->fd[SUB_ENV], name, 0);
			unlinkat(sp->fd[SUB_DONE], name, 0);
			continue;
		}
		ents = xreallocarray(ents, n + 1, sizeof(*ents));
		ents[n].qid = xstrdup(name);
		ents[n++].mtime = st.st_mtim;
	}
	closedir(d);
	*ents_out = ents;
	*n_out = n;
	return 0;
}

/* ents (n of them) as a malloc'd array of qids, oldest first. */
static char **
spool_entries_sorted(struct spool_entry *ents, size_t n)
{
	char **qids;

	if (n > 1)
		qsort(ents, n, sizeof(*ents), spool_entry_cmp);
	qids = xcalloc(n + 1, sizeof(*qids));
	for (size_t i = 0; i < n; i++)
		qids[i] = ents[i].qid;
	free(ents);
	return qids;
}

int
spool_list(struct spool *sp, char ***qids_out, size_t *n_out,
    const char **err_out)
{
	struct spool_entry *ents;
	size_t n;

	*qids_out = NULL;
	*n_out = 0;
	if (spool_sweep(sp, SUB_TMP, err_out) == -1 ||
	    spool_scan_env(sp, true, &ents, &n, err_out) == -1)
		return -1;
	if (spool_sweep(sp, SUB_MSG, err_out) == -1 ||
	    spool_sweep(sp, SUB_DONE, err_out) == -1) {
		for (size_t i = 0; i < n; i++)
			free(ents[i].qid);
		free(ents);
		return -1;
	}
	*qids_out = spool_entries_sorted(ents, n);
	*n_out = n;
	return 0;
}

int
spool_list_readonly(struct spool *sp, char ***qids_out, size_t *n_out,
    const char **err_out)
{
	struct spool_entry *ents;
	size_t n;

	*qids_out = NULL;
	*n_out = 0;
	if (spool_scan_env(sp, false, &ents, &n, err_out) == -1)
		return -1;
	*qids_out = spool_entries_sorted(ents, n);
	*n_out = n;
	return 0;
}
