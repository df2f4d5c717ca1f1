/*
 * net/notify.c: what the service manager hands us and wants to hear.
 * It learns when we accept mail, reload and stop through the sd_notify
 * protocol (systemd's Type=notify, start-stop-daemon --notify-await): a
 * datagram to $NOTIFY_SOCKET.  The socket is connected at start-up, while
 * we are still root: a manager's socket in a folder only root may enter
 * (start-stop-daemon makes one) is out of reach once we run as "user", and
 * libsystemd's sd_notify() connects anew for every message.  A socket unit
 * passes listening sockets (LISTEN_FDS, libsystemd), which the listeners
 * take instead of binding the same addresses.  Main thread only.
 */
#include "net/net_private.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef POSTERN_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log/log.h"

int
net_notify_open(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd;

	if (path == NULL || *path == '\0')
		return -1;
	if ((path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sun.sun_path)) {
		log_msg(LOG_LVL_WARN, "NOTIFY_SOCKET=%s: not a socket path",
		    path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path));
	if (path[0] == '@')
		sun.sun_path[0] = '\0';	/* an abstract name */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
	    strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, (struct sockaddr *)&sun, len) == -1) {
		log_msg(LOG_LVL_WARN, "NOTIFY_SOCKET=%s: %s: the service "
		    "manager will not hear from us", path, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	unsetenv("NOTIFY_SOCKET");	/* not for the programs we start */
	return fd;
}

void
net_notify(int fd, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	if (fd == -1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		n = (int)strlen(msg);
	/* A manager gone (start-stop-daemon after READY) is no error. */
	if (send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == -1)
		log_msg(LOG_LVL_DEBUG, "notify %.*s: %s", (int)strcspn(msg,
		    "\n"), msg, strerror(errno));
}

void
net_passed_take_all(struct net_passed *np)
{
#ifdef POSTERN_HAVE_LIBSYSTEMD
	/* Unset: programs we start must not think the sockets are theirs. */
	int n = sd_listen_fds(1);

	if (n < 0) {
		log_msg(LOG_LVL_WARN, "sd_listen_fds: %s", strerror(-n));
		return;
	}
	np->fds = xcalloc((size_t)n + 1, sizeof(*np->fds));
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		/* The loops' listeners want it non-blocking. */
		if (fcntl(fd, F_SETFD, FD_CLOEXEC) == -1 ||
		    sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
		    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1) {
			log_msg(LOG_LVL_WARN, "passed socket %d is not a "
			    "listening stream socket: closed", fd);
			close(fd);
			continue;
		}
		np->fds[np->n++] = fd;
	}
#else
	if (getenv("LISTEN_FDS") != NULL)
		log_msg(LOG_LVL_WARN, "LISTEN_FDS is set but postern was built "
		    "without libsystemd: the passed sockets are not used");
	(void)np;
#endif
}

int
net_passed_take(struct net_passed *np, const char *addr, int port)
{
#ifdef POSTERN_HAVE_LIBSYSTEMD
	struct sockaddr_storage ss;
	unsigned len;

	if (util_sockaddr_make(addr, port, &ss, &len) == -1)
		return -1;
	for (size_t i = 0; i < np->n; i++) {
		int fd = np->fds[i];
		if (sd_is_socket_sockaddr(fd, SOCK_STREAM,
		    (struct sockaddr *)&ss, len, 1) > 0) {
			np->fds[i] = np->fds[--np->n];
			return fd;
		}
	}
#else
	(void)np;
	(void)addr;
	(void)port;
#endif
	return -1;
}

void
net_passed_give(struct net_passed *np, int fd)
{
	np->fds[np->n++] = fd;	/* taken from np: there is room */
}

void
net_passed_close_rest(struct net_passed *np)
{
	for (size_t i = 0; i < np->n; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char ip[INET6_ADDRSTRLEN] = "?";
		int port = 0;

		if (getsockname(np->fds[i], (struct sockaddr *)&ss,
		    &len) == 0)
			(void)util_sockaddr_text((struct sockaddr *)&ss, ip,
			    &port);
		log_msg(LOG_LVL_WARN, "passed socket %s port %d: no listen "
		    "statement names it: closed", ip, port);
		close(np->fds[i]);
	}
	free(np->fds);
	np->fds = NULL;
	np->n = 0;
}

/* One socket per loop: the passed one, and duplicates of it. */
int
net_passed_spread(int fd, int *fds, unsigned n, const char **err_out)
{
	fds[0] = fd;
	for (unsigned k = 1; k < n; k++)
		if ((fds[k] = fcntl(fd, F_DUPFD_CLOEXEC, 0)) == -1) {
			*err_out = util_err("dup of a passed socket: %s",
			    strerror(errno));
			while (k-- > 1)
				close(fds[k]);
			return -1;
		}
	return 0;
}
