/*
 * net/listen.c: the listen sockets and the listeners on them.  The main
 * thread binds one SO_REUSEPORT socket per loop for each listen address
 * (or shares among the loops the one a socket unit passed, net/notify.c)
 * and keeps them across reloads; each loop runs its own listener on its
 * own socket and hands accepted connections, once admitted, to conn/.
 */
#include "net/net_private.h"

#include <errno.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"

/* ----- accepting (on a loop) ----- */

/*
 * Replies go out in one write per batch (conn/): no small-packet delay.
 * A connection inherits TCP_NODELAY from its listening socket, as it was
 * when the connection was made: our sockets have it from before their
 * listen(), so their connections need no call of their own.  A socket
 * the service manager passed may hold connections made before we set it:
 * those get it one by one.  Not TCP: nothing to set.
 */
static void
net_nodelay(int fd)
{
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void
net_refuse(const struct config *cfg, int fd, const char *ip, const char *why)
{
	char line[512];

	log_event(LOG_LVL_WARN, "reject", NULL, NULL,
	    "stage=connect ip=%s code=421 esc=4.7.0 why=\"%s\"", ip, why);
	if (util_snprintf(line, sizeof(line), "421 4.7.0 %s %s\r\n",
	    cfg->hostname, why) == 0) {
		/* A fresh socket's buffer takes one line; never wait for it. */
		ssize_t n = send(fd, line, strlen(line), MSG_DONTWAIT |
		    MSG_NOSIGNAL);
		(void)n;
	}
	close(fd);
}

static void
net_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct net_lev *nl = arg;
	struct net_loop *loop = nl->loop;
	char ip[INET6_ADDRSTRLEN] = "?";
	const char *why;
	size_t idx;

	(void)lev;
	/* Once a reload is logged, every new session has its configuration,
	 * even one this loop accepts before it reads its mailbox. */
	if (atomic_load(&loop->rt_posted))
		net_loop_adopt_rt(loop);
	const struct config *cfg = loop->ctx.rt->cfg;
	if (nl->nodelay_each)
		net_nodelay(fd);
	for (idx = 0; idx < cfg->nlistens; idx++)
		if (cfg->listens[idx].port == nl->port &&
		    strcmp(cfg->listens[idx].addr, nl->addr) == 0)
			break;
	if (idx == cfg->nlistens) {
		close(fd);	/* a listener on its way out during a reload */
		return;
	}
	(void)util_sockaddr_text(sa, ip, NULL);
	if (net_pph_wanted(&cfg->listens[idx], ip)) {
		/* Admitted once the header names the client. */
		net_pph_start(loop, fd, sa, ip, nl->addr, nl->port);
		return;
	}
	if ((why = net_admit(loop->srv, cfg, ip)) != NULL) {
		net_refuse(cfg, fd, ip, why);
		return;
	}
	conn_new(&loop->ctx, fd, sa, (socklen_t)salen, idx, NULL);
}

/*
 * Out of descriptors, the clients waiting to be accepted would wait for
 * nothing: free the spare descriptor, accept and answer each with 421
 * (at most NET_EMFILE_REFUSE_MAX), then take the spare back.  Returns how
 * many were answered.
 */
static unsigned
net_refuse_waiting(struct net_loop *loop, int lfd)
{
	char line[300];
	unsigned n = 0;
	int fd;

	if (loop->spare_fd == -1 || util_snprintf(line, sizeof(line),
	    "421 4.3.2 %s Too busy, try again later\r\n",
	    loop->ctx.rt->cfg->hostname) == -1)
		return 0;
	close(loop->spare_fd);
	while (n < NET_EMFILE_REFUSE_MAX &&
	    (fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
		/* A fresh socket's buffer takes one line; never wait. */
		ssize_t w = send(fd, line, strlen(line), MSG_DONTWAIT |
		    MSG_NOSIGNAL);
		(void)w;
		close(fd);
		n++;
	}
	loop->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return n;
}

/*
 * accept failed.  Out of descriptors (EMFILE, ENFILE) the socket stays
 * readable and libevent would call again at once, for ever: stop
 * accepting on this loop for NET_EMFILE_PAUSE_MS, answer the waiting
 * clients 421, and say so once per pause.
 */
static void
net_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct net_lev *nl = arg;
	struct net_loop *loop = nl->loop;
	struct timeval tv = util_timeval_ms(NET_EMFILE_PAUSE_MS);
	int err = EVUTIL_SOCKET_ERROR();
	unsigned refused;

	(void)lev;
	if (err != EMFILE && err != ENFILE) {
		log_msg(LOG_LVL_WARN, "accept: %s", strerror(err));
		return;
	}
	for (size_t i = 0; i < loop->nlevs; i++)
		if (loop->levs[i].lev != NULL)
			evconnlistener_disable(loop->levs[i].lev);
	loop->accept_paused = true;
	evtimer_add(loop->resume_ev, &tv);
	refused = net_refuse_waiting(loop, nl->fd);
	log_msg(LOG_LVL_WARN, "accept: %s: pausing accepts on loop %u for "
	    "%d ms; %u waiting clients answered 421", strerror(err),
	    loop->idx, NET_EMFILE_PAUSE_MS, refused);
}

void
net_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_loop *loop = arg;

	(void)fd;
	(void)what;
	loop->accept_paused = false;
	if (loop->spare_fd == -1)
		loop->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	for (size_t i = 0; i < loop->nlevs; i++)
		if (loop->levs[i].lev != NULL)
			evconnlistener_enable(loop->levs[i].lev);
}

/*
 * Make the loop's listeners exactly want[0..n): keep, close or open.  The
 * array moves into the loop (levs are reached by address from libevent).
 */
void
net_loop_sync_levs(struct net_loop *loop, struct net_lev *want, size_t n)
{
	struct net_lev *next = want != NULL ? want : xcalloc(1, sizeof(*next));

	for (size_t i = 0; i < n; i++) {
		next[i].loop = loop;
		for (size_t j = 0; j < loop->nlevs; j++)
			if (loop->levs[j].lev != NULL &&
			    loop->levs[j].fd == next[i].fd) {
				next[i].lev = loop->levs[j].lev;
				loop->levs[j].lev = NULL;
				evconnlistener_set_cb(next[i].lev,
				    net_accept_cb, &next[i]);
			}
		if (next[i].lev == NULL) {
			/* backlog 0: bound and listening already (-1 would
			   listen again with 128). */
			next[i].lev = evconnlistener_new(loop->base,
			    net_accept_cb, &next[i], LEV_OPT_CLOSE_ON_FREE, 0,
			    next[i].fd);
			if (next[i].lev == NULL)
				fatal("evconnlistener_new failed");
			evconnlistener_set_error_cb(next[i].lev,
			    net_accept_error_cb);
			if (loop->accept_paused)
				evconnlistener_disable(next[i].lev);
		}
	}
	for (size_t j = 0; j < loop->nlevs; j++)
		if (loop->levs[j].lev != NULL)
			evconnlistener_free(loop->levs[j].lev);
	free(loop->levs);
	loop->levs = next;
	loop->nlevs = n;
}

/* The listener set of loop idx, from srv->listens (srv->mu held). */
void
net_post_listeners(struct net_server *srv, struct net_loop *loop)
{
	free(loop->new_levs);
	loop->new_levs = xcalloc(srv->nlistens + 1, sizeof(*loop->new_levs));
	for (size_t i = 0; i < srv->nlistens; i++) {
		struct net_lev *nl = &loop->new_levs[i];
		nl->fd = srv->listens[i].fds[loop->idx];
		nl->nodelay_each = srv->listens[i].passed;
		util_strlcpy(nl->addr, srv->listens[i].addr, sizeof(nl->addr));
		nl->port = srv->listens[i].port;
	}
	loop->new_nlevs = srv->nlistens;
	loop->new_listeners = true;
}

/* ----- binding (main thread) ----- */

static int
net_bind_one(const char *addr, int port, const char **err_out)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd = -1, on = 1, e;

	if (util_sockaddr_make(addr, port, &ss, &sslen) == -1) {
		errno = EINVAL;		/* config/ checks it first */
		goto fail;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	/* One socket per loop; net/steer.c picks among them. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) == -1)
		goto fail;
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	net_nodelay(fd);
	if (bind(fd, (struct sockaddr *)&ss, sslen) == -1 ||
	    listen(fd, NET_BACKLOG) == -1)
		goto fail;
	return fd;
fail:
	e = errno;
	*err_out = util_err("listen %s port %d: %s", addr, port, strerror(e));
	if (fd != -1)
		close(fd);
	errno = e;	/* for the caller: is it worth trying again? */
	return -1;
}

/*
 * Is addr:port free of listeners?  A socket without SO_REUSEPORT cannot
 * bind where any process listens (SO_REUSEADDR only passes connections in
 * TIME_WAIT), while ours would join that process's SO_REUSEPORT group
 * when it runs as the same user and take a share of its connections.
 * 0, or -1 with *err_out.
 */
static int
net_probe_free(const char *addr, int port, const char **err_out)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd, on = 1, rc = 0;

	if (util_sockaddr_make(addr, port, &ss, &sslen) == -1)
		return 0;		/* net_bind_one says why */
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (struct sockaddr *)&ss, sslen) == -1 &&
	    errno == EADDRINUSE) {
		*err_out = util_err("listen %s port %d: in use by another "
		    "process (another postern?)", addr, port);
		rc = -1;
	}
	close(fd);
	return rc;
}

/*
 * l->fds: the socket the service manager passed for l's address (shared by
 * every loop), else one fresh SO_REUSEPORT socket per loop once no other
 * process listens there.  0, or -1 with *err_out (srv->bind_errno: why).
 */
static int
net_listen_open(struct net_server *srv, struct net_listen *l,
    const char **err_out)
{
	int fd = net_passed_take(&srv->passed, l->addr, l->port);

	if (fd == -1 && net_probe_free(l->addr, l->port, err_out) == -1) {
		srv->bind_errno = EADDRINUSE;	/* it may be going away */
		return -1;
	}
	l->fds = xcalloc(srv->nloops, sizeof(int));
	if (fd != -1) {
		l->passed = true;
		if (net_passed_spread(fd, l->fds, srv->nloops, err_out) == 0)
			return 0;
		close(fd);
		goto fail;
	}
	for (unsigned k = 0; k < srv->nloops; k++)
		if ((l->fds[k] = net_bind_one(l->addr, l->port,
		    err_out)) == -1) {
			srv->bind_errno = errno;
			while (k-- > 0)
				close(l->fds[k]);
			goto fail;
		}
	return 0;
fail:
	free(l->fds);
	l->fds = NULL;
	return -1;
}

/*
 * Make srv->listens match cfg: kept addresses keep their sockets, new ones
 * get nloops fresh sockets (or the one the service manager passed).
 * Sockets of dropped addresses are closed by their loops when they take
 * the new set.  -1 when a new one cannot be bound (the others are kept;
 * srv->bind_errno says why).
 */
int
net_listens_sync(struct net_server *srv, const struct config *cfg,
    const char **err_out)
{
	struct net_listen *next = xcalloc(cfg->nlistens + 1, sizeof(*next));
	size_t n = 0;
	int rc = 0;

	for (size_t i = 0; i < cfg->nlistens; i++) {
		struct net_listen *l = &next[n];
		l->addr = xstrdup(cfg->listens[i].addr);
		l->port = cfg->listens[i].port;
		for (size_t j = 0; j < srv->nlistens; j++) {
			struct net_listen *o = &srv->listens[j];
			if (o->fds != NULL && o->port == l->port &&
			    strcmp(o->addr, l->addr) == 0) {
				l->fds = o->fds;	/* moves over */
				l->passed = o->passed;
				o->fds = NULL;
			}
		}
		if (l->fds == NULL) {
			if (net_listen_open(srv, l, err_out) == -1) {
				free(l->addr);
				rc = -1;
				goto next;
			}
			log_msg(LOG_LVL_INFO, "listening on %s%s%s:%d%s",
			    strchr(l->addr, ':') ? "[" : "", l->addr,
			    strchr(l->addr, ':') ? "]" : "", l->port,
			    l->passed ? " (socket passed by the service "
			    "manager)" : "");
			/* Always steered: a socket another process adds to
			 * the group is never picked. */
			net_steer_listen(l, srv->balance_ev != NULL ?
			    srv->nopen : srv->nloops);
		}
		n++;
next:		;
	}
	for (size_t j = 0; j < srv->nlistens; j++) {
		free(srv->listens[j].addr);
		free(srv->listens[j].fds);	/* the loops close them */
	}
	free(srv->listens);
	srv->listens = next;
	srv->nlistens = n;
	return rc;
}
