/*
 * queue/control.c: the control channel of a running queue, a unix stream
 * socket <spool>/control.sock (the spool folder is 0700, so only its owner
 * and root get in).  One command line per connection, one reply line:
 *
 *	flush [QID] | hold QID | release QID | delete QID | submit QID | ping
 *	| writeout
 *	-> "ok[ TEXT]" or "error: TEXT"
 *
 * writeout: the messages the spool holds in memory get their files, so
 * that a reader of the spool's folders (postern queue list) sees them.
 *
 * The same thread rescans the spool every pickup_ms for messages that
 * arrived without a word (postern send when the socket was unreachable).
 * Knows nothing of the CLI.
 */
#include "queue/queue_private.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "log/log.h"
#include "spool/spool.h"

#define CTL_NAME	"control.sock"
#define CTL_LINE_MAX	256
#define CTL_TIMEOUT_S	5

static int
ctl_addr(const char *spool_dir, struct sockaddr_un *sun, const char **err_out)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (util_snprintf(sun->sun_path, sizeof(sun->sun_path), "%s/%s",
	    spool_dir, CTL_NAME) == -1) {
		*err_out = util_err("%s/%s: path too long for a unix socket "
		    "(%zu bytes, at most %zu)", spool_dir, CTL_NAME,
		    strlen(spool_dir) + 1 + strlen(CTL_NAME),
		    sizeof(sun->sun_path) - 1);
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int
queue_control_check(const char *spool_dir, const char **err_out)
{
	struct sockaddr_un sun;

	return ctl_addr(spool_dir, &sun, err_out);
}

static void
ctl_timeouts(int fd)
{
	struct timeval tv = { CTL_TIMEOUT_S, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Read one line (without its LF) into buf; -1 on error or overlong. */
static int
ctl_read_line(int fd, char *buf, size_t size)
{
	size_t len = 0;

	for (;;) {
		ssize_t n = read(fd, buf + len, size - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len) != NULL || len == size - 1)
			break;
	}
	buf[len] = '\0';
	char *lf = strchr(buf, '\n');
	if (lf == NULL)
		return -1;
	*lf = '\0';
	return 0;
}

static void
ctl_write_all(int fd, const char *s)
{
	/* A client that left is told nothing. */
	(void)util_write_all(fd, s, strlen(s), -1);
}

/* Run one command line; the reply (with LF) into reply. */
static void
ctl_command(struct queue *q, char *line, char *reply, size_t size)
{
	char *verb = line, *arg = strchr(line, ' ');
	const char *err = "unknown command";
	int rc = -1;

	if (arg != NULL)
		*arg++ = '\0';
	if (strcmp(verb, "ping") == 0)
		rc = 0;		/* a server runs on this spool */
	else if (strcmp(verb, "writeout") == 0 && arg == NULL) {
		spool_content_write_all(q->sp);
		rc = 0;
	}
	else if (strcmp(verb, "flush") == 0)
		rc = queue_flush(q, arg, &err);
	else if (strcmp(verb, "hold") != 0 && strcmp(verb, "release") != 0 &&
	    strcmp(verb, "delete") != 0 && strcmp(verb, "submit") != 0)
		err = "unknown command";
	else if (arg == NULL)
		err = "missing queue id";
	else if (strcmp(verb, "hold") == 0 || strcmp(verb, "release") == 0)
		rc = queue_hold(q, arg, verb[0] == 'h', &err);
	else if (strcmp(verb, "delete") == 0)
		rc = queue_delete(q, arg, &err);
	else if (strcmp(verb, "submit") == 0) {
		if (spool_qid_ok(arg)) {
			queue_submit(q, arg);
			rc = 0;
		} else
			err = "invalid queue id";
	}
	if (rc == 0)
		snprintf(reply, size, "ok\n");
	else
		snprintf(reply, size, "error: %s\n", err);
}

static void
ctl_serve(struct queue *q, int fd)
{
	char line[CTL_LINE_MAX], reply[CTL_LINE_MAX + 64];

	ctl_timeouts(fd);
	if (ctl_read_line(fd, line, sizeof(line)) == -1) {
		ctl_write_all(fd, "error: bad command line\n");
		return;
	}
	ctl_command(q, line, reply, sizeof(reply));
	ctl_write_all(fd, reply);
}

/*
 * Submit what the spool holds that the queue does not know yet.  Read
 * only: beside the workers, a message being removed has lost its envelope
 * already, and is no leftover (those are the start's, queue_recover).
 */
static void
ctl_pickup(struct queue *q)
{
	const char *err = NULL;
	char **qids;
	size_t n;

	if (spool_list_readonly(q->sp, &qids, &n, &err) == -1) {
		log_msg(LOG_LVL_WARN, "queue: pickup scan: %s", err);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		queue_submit(q, qids[i]);	/* known ones keep their schedule */
		free(qids[i]);
	}
	free(qids);
}

static void *
ctl_main(void *arg)
{
	struct queue *q = arg;
	uint64_t next_scan = util_now_ms() + q->o.pickup_ms;

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = q->ctl_wake[0], .events = POLLIN },
			{ .fd = q->ctl_fd, .events = POLLIN },
		};
		int timeout = -1;

		if (q->o.pickup_ms > 0) {
			uint64_t now = util_now_ms();
			if (now >= next_scan) {
				ctl_pickup(q);
				next_scan = now + q->o.pickup_ms;
			}
			timeout = (int)(next_scan - now > 60000 ? 60000 :
			    next_scan - now);
		}
		if (poll(pfd, q->ctl_fd != -1 ? 2 : 1, timeout) == -1 &&
		    errno != EINTR)
			break;
		if (pfd[0].revents != 0)
			break;
		if (q->ctl_fd != -1 && (pfd[1].revents & POLLIN)) {
			int c = accept4(q->ctl_fd, NULL, NULL, SOCK_CLOEXEC);
			if (c != -1) {
				ctl_serve(q, c);
				close(c);
			}
		}
	}
	return NULL;
}

static int
ctl_listen(struct queue *q, const char **err_out)
{
	struct sockaddr_un sun;
	int fd;

	if (ctl_addr(spool_dir(q->sp), &sun, err_out) == -1)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto fail;
	/* A socket left by a killed server: nobody listens on it. */
	unlink(sun.sun_path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    chmod(sun.sun_path, 0600) == -1 || listen(fd, 16) == -1)
		goto fail;
	q->ctl_fd = fd;
	return 0;
fail:
	*err_out = util_err("%s: %s", sun.sun_path, strerror(errno));
	if (fd != -1)
		close(fd);
	return -1;
}

int
queue_control_start(struct queue *q, const char **err_out)
{
	int rc = 0, prc;

	if (q->o.control && ctl_listen(q, err_out) == -1)
		rc = -1;	/* the pickup scan still runs */
	if (q->ctl_fd == -1 && q->o.pickup_ms == 0)
		return rc;
	if (pipe2(q->ctl_wake, O_CLOEXEC) == -1)
		fatal("queue: pipe: %s", strerror(errno));
	if ((prc = pthread_create(&q->ctl_thread, NULL, ctl_main, q)) != 0)
		fatal("queue: pthread_create: %s", strerror(prc));
	q->ctl_running = true;
	return rc;
}

void
queue_control_stop(struct queue *q)
{
	struct sockaddr_un sun;
	const char *err;

	if (q->ctl_running) {
		(void)!write(q->ctl_wake[1], "x", 1);
		pthread_join(q->ctl_thread, NULL);
		q->ctl_running = false;
	}
	if (q->ctl_fd != -1) {
		if (ctl_addr(spool_dir(q->sp), &sun, &err) == 0)
			unlink(sun.sun_path);
		close(q->ctl_fd);
		q->ctl_fd = -1;
	}
	for (int i = 0; i < 2; i++)
		if (q->ctl_wake[i] != -1) {
			close(q->ctl_wake[i]);
			q->ctl_wake[i] = -1;
		}
}

int
queue_control_request(const char *spool_dir_path, const char *cmd,
    char **reply_out, const char **err_out)
{
	struct sockaddr_un sun;
	char line[CTL_LINE_MAX + 64];
	int fd, saved;

	*reply_out = NULL;
	if (ctl_addr(spool_dir_path, &sun, err_out) == -1)
		return -1;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		goto fail;
	ctl_timeouts(fd);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		goto fail;
	snprintf(line, sizeof(line), "%s\n", cmd);
	ctl_write_all(fd, line);
	if (ctl_read_line(fd, line, sizeof(line)) == -1) {
		errno = EPROTO;
		goto fail;
	}
	close(fd);
	*reply_out = xstrdup(line);
	return 0;
fail:
	saved = errno;
	*err_out = util_err("%s: %s", sun.sun_path, strerror(saved));
	if (fd != -1)
		close(fd);
	errno = saved;
	return -1;
}
