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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

ssize_t
net_listen_idx(const struct config *cfg, const char *addr, int port)
{
	for (size_t i = 0; i < cfg->nlistens; i++)
		if (cfg->listens[i].port == port &&
		    strcmp(cfg->listens[i].addr, addr) == 0)
			return (ssize_t)i;
	return -1;
}

/*
 * RFC 8314 3.3: on an implicit TLS port the client's first bytes are its
 * ClientHello and it reads nothing before the handshake, so a refusal in
 * plain text is garbage to it (WRONG_VERSION_NUMBER); nothing is said
 * there, the close alone refuses.  Not a handshake to say 421 inside TLS
 * either: these refusals shed load, and a handshake is the dearest part
 * of a session, with a descriptor and memory held for as long as the
 * client takes: what the limits are there to bound.
 */
void
net_refuse_line(const struct config_listen *l, int fd, const char *line)
{
	if (l != NULL && !l->implicit_tls && line[0] != '\0') {
		/* A fresh socket's buffer takes one line; never wait for it. */
		ssize_t n = send(fd, line, strlen(line), MSG_DONTWAIT |
		    MSG_NOSIGNAL);
		(void)n;
	}
	close(fd);
}

const struct conn_origin *
net_local_origin(int fd, struct conn_origin *o, char *lip)
{
	struct sockaddr_storage ss;
	struct sockaddr_in v4;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1 ||
	    !util_sockaddr_unmap((struct sockaddr *)&ss, &v4))
		return NULL;
	*o = (struct conn_origin){ .local_ip = lip };
	(void)util_sockaddr_text((struct sockaddr *)&v4, lip, &o->local_port);
	return o;
}

void
net_refuse(const struct config *cfg, const struct config_listen *l, int fd,
    const char *ip, const char *why)
{
	char line[512];

	log_event(LOG_LVL_WARN, "reject", NULL, NULL,
	    "stage=connect ip=%s code=421 esc=4.7.0 why=\"%s\"", ip, why);
	if (util_snprintf(line, sizeof(line), "421 4.7.0 %s %s\r\n",
	    cfg->hostname, why) == -1)
		line[0] = '\0';	/* cut: say nothing */
	net_refuse_line(l, fd, line);
}

static void
net_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct net_lev *nl = arg;
	struct net_loop *loop = nl->loop;
	char ip[INET6_ADDRSTRLEN] = "?", lip[INET6_ADDRSTRLEN];
	struct sockaddr_in v4;
	struct conn_origin local;
	const struct conn_origin *origin = NULL;
	const char *why;
	ssize_t idx;

	(void)lev;
	/* Once a reload is logged, every new session has its configuration,
	 * even one this loop accepts before it reads its mailbox. */
	if (atomic_load(&loop->rt_posted))
		net_loop_adopt_rt(loop);
	const struct config *cfg = loop->ctx.rt->cfg;
	if (nl->nodelay_each)
		net_nodelay(fd);
	if ((idx = net_listen_idx(cfg, nl->addr, nl->port)) == -1) {
		close(fd);	/* a listener on its way out during a reload */
		return;
	}
	const struct config_listen *l = &cfg->listens[idx];
	/* An IPv4 client of a dual-stack socket is IPv4 before anything
	 * sees it: every rule, limit, log line and header says 192.0.2.1. */
	if (util_sockaddr_unmap(sa, &v4)) {
		sa = (struct sockaddr *)&v4;
		salen = (int)sizeof(v4);
		origin = net_local_origin(fd, &local, lip);
	}
	(void)util_sockaddr_text(sa, ip, NULL);
	if (net_pph_wanted(l, ip)) {
		/* Admitted once the header names the client. */
		net_pph_start(loop, fd, sa, ip, l);
		return;
	}
	if ((why = net_admit(loop->srv, cfg, ip)) != NULL) {
		net_refuse(cfg, l, fd, ip, why);
		return;
	}
	conn_new(&loop->ctx, fd, sa, (socklen_t)salen, (size_t)idx, origin);
}

/*
 * Out of descriptors, the clients waiting to be accepted would wait for
 * nothing: free the spare descriptor, accept and answer each with 421
 * (closed without a word on a tls listener: net_refuse_line), at most
 * NET_EMFILE_REFUSE_MAX, then take the spare back.  Returns how many were
 * refused.
 */
static unsigned
net_refuse_waiting(struct net_loop *loop, const struct net_lev *nl)
{
	const struct config *cfg = loop->ctx.rt->cfg;
	ssize_t idx = net_listen_idx(cfg, nl->addr, nl->port);
	const struct config_listen *l = idx == -1 ? NULL : &cfg->listens[idx];
	char line[300];
	unsigned n = 0;
	int fd;

	if (loop->spare_fd == -1 || util_snprintf(line, sizeof(line),
	    "421 4.3.2 %s Too busy, try again later\r\n",
	    cfg->hostname) == -1)
		return 0;
	close(loop->spare_fd);
	while (n < NET_EMFILE_REFUSE_MAX && (fd = accept4(nl->fd, NULL, NULL,
	    SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
		net_refuse_line(l, fd, line);
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
	refused = net_refuse_waiting(loop, nl);
	log_msg(LOG_LVL_WARN, "accept: %s: pausing accepts on loop %u for "
	    "%d ms; %u waiting clients refused", strerror(err),
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

void
net_loop_close_dropped(struct net_loop *loop, const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		bool held = false;
		for (size_t j = 0; j < loop->nlevs && !held; j++)
			held = loop->levs[j].lev != NULL &&
			    loop->levs[j].fd == fds[i];
		if (!held)
			close(fds[i]);
	}
}

/* Is fd the socket of loop idx at one of srv->listens? */
static bool
net_listens_have(const struct net_server *srv, unsigned idx, int fd)
{
	for (size_t i = 0; i < srv->nlistens; i++)
		if (srv->listens[i].fds[idx] == fd)
			return true;
	return false;
}

/*
 * A socket stays open, in its SO_REUSEPORT group and taking a share of
 * the connections, until its loop closes it.  A set the loop has not
 * taken yet is about to be replaced: its sockets that srv->listens no
 * longer has (the main thread let them go, net_listens_sync) would be
 * closed by no one, and the connections steered to them would wait for
 * ever.  The loop closes them (net_loop_close_dropped) with the new set.
 */
static void
net_post_drop_untaken(struct net_server *srv, struct net_loop *loop)
{
	for (size_t i = 0; i < loop->new_nlevs; i++) {
		int fd = loop->new_levs[i].fd;
		if (net_listens_have(srv, loop->idx, fd))
			continue;
		loop->dropped_fds = xreallocarray(loop->dropped_fds,
		    loop->ndropped_fds + 1, sizeof(*loop->dropped_fds));
		loop->dropped_fds[loop->ndropped_fds++] = fd;
	}
}

void
net_post_listeners(struct net_server *srv, struct net_loop *loop)
{
	if (loop->new_levs != NULL)
		net_post_drop_untaken(srv, loop);
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

/*
 * A socket of ours listening at addr:port.  steer_n: the first of its
 * SO_REUSEPORT group, steered to loops 0..steer_n-1 before another socket
 * joins the group, so that the kernel never spreads a connection among
 * them; 0 for the others.  (Not before its listen(): a socket already in
 * a group fails the bind check beside our listener at an overlapping
 * address.)
 */
static int
net_bind_one(const char *addr, int port, unsigned steer_n,
    const char **err_out)
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
	if (steer_n > 0)
		net_steer_fd(fd, steer_n, addr, port);
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
 * An address as /proc/net/tcp and tcp6 show it ("0100007F", 32 digits for
 * IPv6): each 8 digits are a 32-bit word as the kernel holds it, so in
 * memory they are the address in network order.  Its length in bytes (4
 * or 16), or 0.
 */
static size_t
net_proc_addr(const char *hex, unsigned char *out)
{
	size_t len = strlen(hex);

	if (len != 8 && len != 32)
		return 0;
	for (size_t i = 0; i < len / 8; i++) {
		char word[9];
		uint32_t w;

		memcpy(word, hex + 8 * i, 8);
		word[8] = '\0';
		w = (uint32_t)strtoul(word, NULL, 16);
		memcpy(out + 4 * i, &w, sizeof(w));
	}
	return len / 2;
}

static bool
net_addr_is_any(const unsigned char *a, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (a[i] != 0)
			return false;
	return true;
}

/*
 * Would a listener at e (elen bytes) keep a plain bind of a (alen bytes,
 * the same port) from succeeding?  Ours are IPv6-only, so an IPv4 one
 * meets IPv6 listeners only on "::" or an IPv4-mapped address (which may
 * take IPv4 too), and an IPv6 one never meets IPv4 listeners.
 */
static bool
net_addr_overlap(const unsigned char *a, size_t alen, const unsigned char *e,
    size_t elen)
{
	static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };

	if (alen == elen)
		return net_addr_is_any(a, alen) || net_addr_is_any(e, elen) ||
		    memcmp(a, e, alen) == 0;
	if (alen != 4 || elen != 16)
		return false;
	return net_addr_is_any(e, elen) || (memcmp(e, mapped, 12) == 0 &&
	    (net_addr_is_any(a, alen) || memcmp(e + 12, a, 4) == 0));
}

/* Is one of the sockets of ls[0..n) (nloops each) the one with inode ino? */
static bool
net_listens_hold(const struct net_listen *ls, size_t n, unsigned nloops,
    unsigned long ino)
{
	struct stat st;

	for (size_t i = 0; i < n; i++)
		for (unsigned k = 0; ls[i].fds != NULL && k < nloops; k++)
			if (fstat(ls[i].fds[k], &st) == 0 && st.st_ino == ino)
				return true;
	return false;
}

/*
 * Does a socket that is not ours (in srv->listens or next[0..n)) listen
 * on port at an address that overlaps ss's?  1 yes, 0 no, -1 when
 * /proc/net/tcp cannot be read.
 */
static int
net_foreign_listener(const struct net_server *srv, const struct net_listen
    *next, size_t n, const struct sockaddr_storage *ss, int port)
{
	static const char *const tables[] = { "/proc/net/tcp",
	    "/proc/net/tcp6" };
	unsigned char a[16], e[16];
	size_t alen = ss->ss_family == AF_INET6 ? 16 : 4;
	int rc = 0;

	memcpy(a, ss->ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)ss)->sin_addr, alen);
	for (size_t t = 0; t < 2 && rc == 0; t++) {
		FILE *f = fopen(tables[t], "re");
		char line[512], hex[33];
		unsigned lport, state;
		unsigned long ino;

		if (f == NULL) {
			if (t == 0)
				return -1;
			continue;	/* no IPv6 */
		}
		while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
			/* sl local rem st tx:rx tr:when retr uid timeout inode */
			if (sscanf(line, " %*u: %32[0-9A-Fa-f]:%x %*s %x %*s %*s "
			    "%*s %*u %*u %lu", hex, &lport, &state, &ino) != 4 ||
			    lport != (unsigned)port || state != 0x0A)
				continue;	/* 0x0A: TCP_LISTEN */
			size_t elen = net_proc_addr(hex, e);
			if (elen != 0 && net_addr_overlap(a, alen, e, elen) &&
			    !net_listens_hold(srv->listens, srv->nlistens,
			    srv->nloops, ino) &&
			    !net_listens_hold(next, n, srv->nloops, ino))
				rc = 1;
		}
		fclose(f);
	}
	return rc;
}

/*
 * Is addr:port free of other processes' listeners?  A socket without
 * SO_REUSEPORT cannot bind where any process listens (SO_REUSEADDR only
 * passes connections in TIME_WAIT), while ours would join that process's
 * SO_REUSEPORT group when it runs as the same user and take a share of
 * its connections.  Our own listeners at overlapping addresses (a
 * specific address beside the wildcard on the same port) fail that bind
 * too: /proc/net/tcp tells them apart, and ours bind beside them (another
 * group; the kernel gives a connection to the most specific address).
 * next[0..n): the listeners this sync opened so far.  0, or -1 with
 * *err_out.
 */
static int
net_probe_free(const struct net_server *srv, const struct net_listen *next,
    size_t n, const char *addr, int port, const char **err_out)
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
		switch (net_foreign_listener(srv, next, n, &ss, port)) {
		case 0:
			break;
		case 1:
			*err_out = util_err("listen %s port %d: in use by "
			    "another process (another postern?)", addr, port);
			rc = -1;
			break;
		default:
			*err_out = util_err("listen %s port %d: in use by "
			    "another process, or by an address of ours on that "
			    "port (/proc/net/tcp cannot be read to tell)",
			    addr, port);
			rc = -1;
		}
	}
	close(fd);
	return rc;
}

/*
 * l->fds: the socket the service manager passed for l's address (shared by
 * every loop), else one fresh SO_REUSEPORT socket per loop once no other
 * process listens there (next[0..n): those opened before l).  0, or -1
 * with *err_out (srv->bind_errno: why).
 */
static int
net_listen_open(struct net_server *srv, const struct net_listen *next,
    size_t n, struct net_listen *l, const char **err_out)
{
	int fd = net_passed_take(&srv->passed, l->addr, l->port);

	if (fd == -1 && net_probe_free(srv, next, n, l->addr, l->port,
	    err_out) == -1) {
		srv->bind_errno = EADDRINUSE;	/* it may be going away */
		return -1;
	}
	l->fds = xcalloc(srv->nloops, sizeof(int));
	if (fd != -1) {
		l->passed = true;
		if (net_passed_spread(fd, l->fds, srv->nloops, err_out) == 0)
			return 0;
		net_passed_give(&srv->passed, fd);
		goto fail;
	}
	for (unsigned k = 0; k < srv->nloops; k++)
		if ((l->fds[k] = net_bind_one(l->addr, l->port,
		    k == 0 ? net_steer_nopen(srv) : 0, err_out)) == -1) {
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

/* Close what net_listen_open opened for l; a passed socket goes back. */
static void
net_listen_close(struct net_server *srv, struct net_listen *l)
{
	for (unsigned k = 0; l->fds != NULL && k < srv->nloops; k++)
		if (k == 0 && l->passed)
			net_passed_give(&srv->passed, l->fds[0]);
		else
			close(l->fds[k]);
	free(l->fds);
	l->fds = NULL;
}

/* The listen address of srv at addr:port that still has its sockets. */
static struct net_listen *
net_listen_find(struct net_server *srv, const char *addr, int port)
{
	for (size_t j = 0; j < srv->nlistens; j++) {
		struct net_listen *o = &srv->listens[j];
		if (o->fds != NULL && o->port == port &&
		    strcmp(o->addr, addr) == 0)
			return o;
	}
	return NULL;
}

/* "WHAT ADDR:PORT[MORE]", an IPv6 address in brackets. */
static void
net_listen_note(const char *what, const struct net_listen *l,
    const char *more)
{
	bool v6 = strchr(l->addr, ':') != NULL;

	log_msg(LOG_LVL_INFO, "%s %s%s%s:%d%s", what, v6 ? "[" : "", l->addr,
	    v6 ? "]" : "", l->port, more);
}

/*
 * Make srv->listens match cfg, all or nothing: first each new address is
 * bound, beside the sockets in use; then kept addresses keep their
 * sockets, and those of dropped ones are closed by their loops when they
 * take the new set.  -1 when a new one cannot be bound: then nothing has
 * changed (srv->bind_errno says why).
 */
int
net_listens_sync(struct net_server *srv, const struct config *cfg,
    const char **err_out)
{
	struct net_listen *next = xcalloc(cfg->nlistens + 1, sizeof(*next));
	size_t n;

	for (n = 0; n < cfg->nlistens; n++) {
		struct net_listen *l = &next[n];
		l->addr = xstrdup(cfg->listens[n].addr);
		l->port = cfg->listens[n].port;
		if (net_listen_find(srv, l->addr, l->port) == NULL &&
		    net_listen_open(srv, next, n, l, err_out) == -1) {
			for (size_t i = 0; i <= n; i++) {
				net_listen_close(srv, &next[i]);
				free(next[i].addr);
			}
			free(next);
			return -1;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct net_listen *l = &next[i], *o;
		if (l->fds == NULL) {
			o = net_listen_find(srv, l->addr, l->port);
			l->fds = o->fds;	/* moves over */
			l->passed = o->passed;
			o->fds = NULL;
			continue;
		}
		/* Steered from its first socket on (net_bind_one), always: a
		 * socket another process adds to the group is never picked. */
		net_listen_note("listening on", l, l->passed ? " (socket "
		    "passed by the service manager)" : "");
	}
	for (size_t j = 0; j < srv->nlistens; j++) {
		if (srv->listens[j].fds != NULL)
			net_listen_note("no longer listening on",
			    &srv->listens[j], "");
		free(srv->listens[j].addr);
		free(srv->listens[j].fds);	/* the loops close them */
	}
	free(srv->listens);
	srv->listens = next;
	srv->nlistens = n;
	return 0;
}
