/*
 * log/file.c: "log file PATH [size N count K]": where the lines go when not
 * to stderr or syslog.  Every thread writes to one descriptor number that
 * never changes once the file is open: a reopen (SIGUSR1, after logrotate
 * renamed the file), a rotation or a return to stderr dup2()s the new file
 * onto it, which is atomic for the writers, and nothing is ever closed
 * under them.  Rotation by size renames PATH to PATH.1 (PATH.1 to PATH.2
 * ..., PATH.K is dropped) and is done by the writer that filled the file,
 * once, while the others keep writing to the full one for that moment.
 */
#include "log/log_private.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static _Atomic int	 log_fd = STDERR_FILENO;
static pthread_mutex_t	 log_file_mu = PTHREAD_MUTEX_INITIALIZER;
static char		*log_path;		/* owned, NULL: stderr (mu) */
static _Atomic uint64_t	 log_size_max;		/* 0: no rotation */
static unsigned		 log_keep;		/* PATH.1 .. PATH.keep */
static _Atomic uint64_t	 log_size;		/* octets in the file now */
static bool		 log_made;		/* the open file is ours (mu) */

int
log_out_fd(void)
{
	return atomic_load_explicit(&log_fd, memory_order_relaxed);
}

/* Open path for appending and make it the output; 0 or -1 (mu held). */
static int
log_file_install(const char *path, const char **err_out)
{
	struct stat st;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL |
	    O_CLOEXEC | O_NOFOLLOW, 0640);
	bool made = fd != -1;

	if (fd == -1 && errno == EEXIST)
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1 || fstat(fd, &st) == -1) {
		*err_out = util_err("log file %s: %s", path, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	if (log_out_fd() == STDERR_FILENO)
		atomic_store(&log_fd, fd);	/* the number for good */
	else {
		dup2(fd, log_out_fd());
		close(fd);
	}
	atomic_store(&log_size, (uint64_t)st.st_size);
	log_made = made;
	return 0;
}

int
log_file_set(const char *path, uint64_t size_max, unsigned keep,
    const char **err_out)
{
	int rc = 0;

	pthread_mutex_lock(&log_file_mu);
	if (path == NULL) {
		if (log_out_fd() != STDERR_FILENO)
			dup2(STDERR_FILENO, log_out_fd());
		free(log_path);
		log_path = NULL;
	} else if (log_path != NULL && strcmp(path, log_path) == 0)
		;	/* a reload: the file stays open (we may be root no more) */
	else if ((rc = log_file_install(path, err_out)) == 0) {
		free(log_path);
		log_path = xstrdup(path);
	}
	atomic_store(&log_size_max, size_max);
	log_keep = keep;
	pthread_mutex_unlock(&log_file_mu);
	return rc;
}

bool
log_has_file(void)
{
	bool set;

	pthread_mutex_lock(&log_file_mu);
	set = log_path != NULL;
	pthread_mutex_unlock(&log_file_mu);
	return set;
}

int
log_file_reopen(const char **err_out)
{
	int rc = 0;

	pthread_mutex_lock(&log_file_mu);
	if (log_path != NULL)
		rc = log_file_install(log_path, err_out);
	pthread_mutex_unlock(&log_file_mu);
	return rc;
}

int
log_file_give(uid_t uid, gid_t gid, const char **err_out)
{
	struct stat st;
	int rc = 0;

	pthread_mutex_lock(&log_file_mu);
	if (log_path == NULL || fstat(log_out_fd(), &st) == -1 ||
	    st.st_uid == uid)
		;	/* nothing to give */
	else if (!log_made) {
		*err_out = util_err("log file %s belongs to uid %u, not to the "
		    "user postern runs as (uid %u): reopening it (SIGUSR1, "
		    "logrotate) and rotating it will fail; chown it to that "
		    "user", log_path, (unsigned)st.st_uid, (unsigned)uid);
		rc = -1;
	} else if (fchown(log_out_fd(), uid, gid) == -1) {
		*err_out = util_err("log file: fchown(%s): %s", log_path,
		    strerror(errno));
		rc = -1;
	}
	pthread_mutex_unlock(&log_file_mu);
	return rc;
}

/* PATH.i for i > 0, PATH for 0. */
static void
log_file_name(char *buf, size_t bufsz, unsigned i)
{
	if (i == 0)
		util_strlcpy(buf, log_path, bufsz);
	else
		(void)util_snprintf(buf, bufsz, "%s.%u", log_path, i);
}

/* Shift the old files up by one and start a new PATH (mu held). */
static void
log_file_rotate(void)
{
	char from[PATH_MAX], to[PATH_MAX];
	const char *err = NULL;

	for (unsigned i = log_keep; i > 0; i--) {
		log_file_name(from, sizeof(from), i - 1);
		log_file_name(to, sizeof(to), i);
		if (rename(from, to) == -1 && errno != ENOENT) {
			err = util_err("log file: rename(%s, %s): %s", from, to,
			    strerror(errno));
			break;
		}
	}
	if (log_keep == 0 && unlink(log_path) == -1)
		err = util_err("log file: unlink(%s): %s", log_path,
		    strerror(errno));
	if (err == NULL && log_file_install(log_path, &err) == 0)
		return;
	/* Keep writing where we are; try again after as much again. */
	atomic_store(&log_size, 0);
	log_msg(LOG_LVL_WARN, "%s: not rotated", err);
}

void
log_file_wrote(size_t n)
{
	uint64_t now;

	if (atomic_load_explicit(&log_size_max, memory_order_relaxed) == 0)
		return;
	now = atomic_fetch_add(&log_size, n) + n;
	if (now < atomic_load(&log_size_max) ||
	    pthread_mutex_trylock(&log_file_mu) != 0)
		return;
	/* Another writer may have rotated between our add and the lock. */
	if (log_path != NULL && atomic_load(&log_size) >=
	    atomic_load(&log_size_max))
		log_file_rotate();
	pthread_mutex_unlock(&log_file_mu);
}
