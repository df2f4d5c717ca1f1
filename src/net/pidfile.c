/*
 * net/pidfile.c: the PID file, for init scripts and monitors on hosts
 * without systemd.  The process holds an exclusive flock(2) on the file for
 * its whole life, so the lock, not the number in it, says whether the
 * writer still runs: a second instance finds it locked and refuses; a file
 * left by a process that died (killed, crashed) is unlocked, stale, and
 * taken over.
 */
#include "net/net_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "log/log.h"

/* The process id written in fd's file, or 0 when there is none. */
static long
net_pidfile_read(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	char *end;
	long pid;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	pid = strtol(buf, &end, 10);
	return end != buf && (*end == '\n' || *end == '\0') && pid > 0 ?
	    pid : 0;
}

int
net_pidfile_open(const char *path, const char **err_out)
{
	char line[32];
	long old;
	int fd, n;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd == -1) {
		*err_out = util_err("pid file %s: %s", path, strerror(errno));
		goto fail;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			*err_out = util_err("pid file %s: another postern (pid "
			    "%ld) is running with it", path,
			    net_pidfile_read(fd));
		else
			*err_out = util_err("pid file %s: flock: %s", path,
			    strerror(errno));
		goto fail;
	}
	if ((old = net_pidfile_read(fd)) != 0)
		log_msg(LOG_LVL_INFO, "pid file %s: stale (pid %ld holds it no "
		    "more): taken over", path, old);
	n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == -1 || pwrite(fd, line, (size_t)n, 0) != n) {
		*err_out = util_err("pid file %s: write: %s", path,
		    strerror(errno));
		goto fail;
	}
	return fd;
fail:
	if (fd != -1)
		close(fd);
	return -1;
}

void
net_pidfile_close(int *fdp, const char *path)
{
	if (*fdp == -1)
		return;
	/*
	 * Once we run as "user" the folder (/run/postern, root's) may not
	 * let us remove the file: then leave it empty, which reads as stale.
	 */
	if (unlink(path) == -1 && ftruncate(*fdp, 0) == -1)
		log_msg(LOG_LVL_WARN, "pid file %s: cannot remove or empty it: "
		    "%s", path, strerror(errno));
	close(*fdp);
	*fdp = -1;
}
