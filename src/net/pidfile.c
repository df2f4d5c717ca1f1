/*
 * net/pidfile.c: the PID file, for init scripts and monitors on hosts
 * without systemd.  The process holds an exclusive flock(2) on the file for
 * its whole life, so the lock, not the number in it, says whether the
 * writer still runs: a second instance finds it locked and refuses; a file
 * left by a process that died (killed, crashed) is unlocked, stale, and
 * taken over.  The file goes at any exit of the process that wrote it,
 * also a start that fails (fatal() exits without net_server_free): only a
 * process that was killed leaves one behind.
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

/*
 * The file we hold, one a process, from net_pidfile_open to its close:
 * here, not in the server, since atexit(3) hands its function nothing.
 */
static int	 net_pidfile_fd = -1;
static char	*net_pidfile_path;	/* owned */
static pid_t	 net_pidfile_owner;	/* who wrote it: not a forked child */

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

/* At exit, wherever it comes from: the writer's file goes with it. */
static void
net_pidfile_atexit(void)
{
	if (getpid() == net_pidfile_owner)
		net_pidfile_close();
}

int
net_pidfile_open(const char *path, const char **err_out)
{
	static bool registered;
	char line[32];
	long old;
	int fd, n;

	ASSERT(net_pidfile_fd == -1);
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
	/* Locked: ours from here on, to remove whatever happens next. */
	net_pidfile_fd = fd;
	net_pidfile_path = xstrdup(path);
	net_pidfile_owner = getpid();
	if (!registered && atexit(net_pidfile_atexit) == 0)
		registered = true;
	if ((old = net_pidfile_read(fd)) != 0)
		log_msg(LOG_LVL_INFO, "pid file %s: stale (pid %ld holds it no "
		    "more): taken over", path, old);
	n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == -1 || pwrite(fd, line, (size_t)n, 0) != n) {
		*err_out = util_err("pid file %s: write: %s", path,
		    strerror(errno));
		net_pidfile_close();
		return -1;
	}
	return 0;
fail:
	if (fd != -1)
		close(fd);
	return -1;
}

void
net_pidfile_close(void)
{
	if (net_pidfile_fd == -1)
		return;
	/*
	 * Once we run as "user" the folder (/run/postern, root's) may not
	 * let us remove the file: then leave it empty, which reads as stale.
	 */
	if (unlink(net_pidfile_path) == -1 && ftruncate(net_pidfile_fd, 0) ==
	    -1)
		log_msg(LOG_LVL_WARN, "pid file %s: cannot remove or empty it: "
		    "%s", net_pidfile_path, strerror(errno));
	close(net_pidfile_fd);
	net_pidfile_fd = -1;
	free(net_pidfile_path);
	net_pidfile_path = NULL;
}
