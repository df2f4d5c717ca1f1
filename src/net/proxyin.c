/*
 * net/proxyin.c: listeners with "proxy-protocol": a connection from a
 * trusted load balancer starts with a PROXY header (util/proxyhdr.c), read
 * here before anything else, within "limit proxy-timeout" and
 * UTIL_PROXYHDR_MAX bytes.  Only the header's bytes are taken from the
 * socket; the session (conn/) then starts as if the client in the header
 * had connected, and the limits per address count that client.
 */
#include "net/net_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"

/* One connection waiting for its header. */
struct net_pph {
	struct net_loop		*loop;		/* borrowed: our owner */
	int			 fd;		/* owned until the session has it */
	struct sockaddr_storage	 peer;		/* the balancer */
	char			 peer_ip[INET6_ADDRSTRLEN];
	char			 addr[INET6_ADDRSTRLEN];	/* the listener */
	int			 port;
	struct event		*ev;		/* owned: readable, or the deadline */
	uint64_t		 deadline_ms;
	unsigned char		 buf[UTIL_PROXYHDR_MAX];	/* header so far */
	size_t			 have;
	struct net_pph		*next, *prev;	/* in loop->pphs */
};

static void	net_pph_read_cb(evutil_socket_t fd, short what, void *arg);

static void
net_pph_free(struct net_pph *p)
{
	struct net_loop *loop = p->loop;

	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		loop->pphs = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	loop->npphs--;
	event_free(p->ev);
	if (p->fd != -1)
		close(p->fd);
	free(p);
}

/* No usable header: say so to the balancer (it may log it), and close. */
static void
net_pph_fail(struct net_pph *p, const char *why)
{
	const struct config *cfg = p->loop->ctx.rt->cfg;
	ssize_t idx = net_listen_idx(cfg, p->addr, p->port);
	char line[300];

	log_event(LOG_LVL_WARN, "proxy-error", NULL, NULL, "ip=%s why=\"%s\"",
	    p->peer_ip, why);
	if (util_snprintf(line, sizeof(line), "421 4.7.0 %s PROXY protocol "
	    "header missing or invalid\r\n", cfg->hostname) == -1)
		line[0] = '\0';
	/* On a tls listener the balancer passes on what we say to a TLS
	   client: nothing, there. */
	net_refuse_line(idx == -1 ? NULL : &cfg->listens[idx], p->fd, line);
	p->fd = -1;
	net_pph_free(p);
}

/*
 * An address of the header as a socket address into *ss (*len), IPv4
 * where it is an IPv4-mapped one (a balancer's dual-stack socket), as at
 * accept: its text, in buf if it changed.  NULL when ip is unusable.
 */
static const char *
net_pph_addr(const char *ip, int port, struct sockaddr_storage *ss,
    unsigned *len, char *buf)
{
	struct sockaddr_in v4;

	if (util_sockaddr_make(ip, port, ss, len) == -1)
		return NULL;
	if (!util_sockaddr_unmap((const struct sockaddr *)ss, &v4))
		return ip;
	memcpy(ss, &v4, sizeof(v4));
	*len = sizeof(v4);
	(void)util_sockaddr_text((const struct sockaddr *)ss, buf, NULL);
	return buf;
}

/* A whole header: admit its client and hand the socket to a session. */
static void
net_pph_done(struct net_pph *p, const struct util_proxyhdr *h)
{
	struct net_loop *loop = p->loop;
	const struct config *cfg = loop->ctx.rt->cfg;
	struct conn_origin o = { .via_ip = p->peer_ip, .version = h->version };
	char lip[INET6_ADDRSTRLEN], sip[INET6_ADDRSTRLEN];
	char dip[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss, dss;
	const struct sockaddr *sa = (const struct sockaddr *)&p->peer;
	unsigned sslen = sizeof(p->peer), dlen;
	const char *ip = p->peer_ip, *why;
	ssize_t idx = net_listen_idx(cfg, p->addr, p->port);

	if (idx == -1) {
		net_pph_free(p);	/* the listener went in a reload */
		return;
	}
	if (h->kind != UTIL_PROXYHDR_LOCAL) {
		if ((ip = net_pph_addr(h->src_ip, h->src_port, &ss, &sslen,
		    sip)) == NULL) {
			net_pph_fail(p, "unusable source address");
			return;
		}
		sa = (const struct sockaddr *)&ss;
		o.local_ip = net_pph_addr(h->dst_ip, h->dst_port, &dss, &dlen,
		    dip);
		if (o.local_ip == NULL)
			o.local_ip = h->dst_ip;
		o.local_port = h->dst_port;
	}
	if ((why = net_admit(loop->srv, cfg, ip)) != NULL) {
		net_refuse(cfg, &cfg->listens[idx], p->fd, ip, why);
		p->fd = -1;
		net_pph_free(p);
		return;
	}
	int fd = p->fd;
	p->fd = -1;
	/* LOCAL (a health check): the balancer itself is the client. */
	conn_new(&loop->ctx, fd, sa, (socklen_t)sslen, (size_t)idx,
	    h->kind != UTIL_PROXYHDR_LOCAL ? &o : net_local_origin(fd, &o,
	    lip));
	net_pph_free(p);
}

/* Wait for more of the header, within what is left of the deadline. */
static void
net_pph_wait(struct net_pph *p)
{
	uint64_t now = util_now_ms();
	struct timeval tv = util_timeval_ms(p->deadline_ms > now ?
	    p->deadline_ms - now : 0);

	event_add(p->ev, &tv);
}

/*
 * Look at what has arrived without taking it, and take only the bytes
 * that belong to the header: the client's own bytes after it stay in the
 * socket for the session (a TLS ClientHello, an early talker's command).
 */
static void
net_pph_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_pph *p = arg;
	struct util_proxyhdr h;
	const char *why = NULL;
	ssize_t n;
	int rc;

	(void)fd;
	if (what & EV_TIMEOUT) {
		net_pph_fail(p, "no PROXY header in time");
		return;
	}
	n = recv(p->fd, p->buf + p->have, sizeof(p->buf) - p->have, MSG_PEEK);
	if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
		net_pph_wait(p);
		return;
	}
	if (n <= 0) {
		log_event(LOG_LVL_INFO, "proxy-error", NULL, NULL, "ip=%s "
		    "why=\"%s\"", p->peer_ip, n == 0 ? "closed before the "
		    "header" : strerror(errno));
		net_pph_free(p);
		return;
	}
	rc = util_proxyhdr_parse(p->buf, p->have + (size_t)n, &h, &why);
	if (rc == -1) {
		net_pph_fail(p, why);
		return;
	}
	/* 0: all of it is header so far; 1: up to h.len. */
	size_t take = rc == 1 ? h.len - p->have : (size_t)n;
	if (recv(p->fd, p->buf + p->have, take, 0) != (ssize_t)take) {
		net_pph_fail(p, "short read of peeked bytes");
		return;
	}
	p->have += take;
	if (rc == 0)
		net_pph_wait(p);
	else
		net_pph_done(p, &h);
}

bool
net_pph_wanted(const struct config_listen *l, const char *peer_ip)
{
	if (!l->proxy_protocol)
		return false;
	if (l->nproxy_from == 0)
		return true;
	for (size_t i = 0; i < l->nproxy_from; i++)
		if (util_cidr_contains(&l->proxy_from[i], peer_ip))
			return true;
	return false;
}

void
net_pph_start(struct net_loop *loop, int fd, const struct sockaddr *sa,
    const char *peer_ip, const struct config_listen *l)
{
	const struct config *cfg = loop->ctx.rt->cfg;
	struct net_pph *p;

	/* Bounded like sessions: at most "connections" per loop. */
	if (loop->npphs >= cfg->limits.conn_max) {
		net_refuse(cfg, l, fd, peer_ip, "Too many connections, try "
		    "again later");
		return;
	}
	p = xcalloc(1, sizeof(*p));
	p->loop = loop;
	p->fd = fd;
	memcpy(&p->peer, sa, sa->sa_family == AF_INET6 ?
	    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	util_strlcpy(p->peer_ip, peer_ip, sizeof(p->peer_ip));
	util_strlcpy(p->addr, l->addr, sizeof(p->addr));
	p->port = l->port;
	p->deadline_ms = util_now_ms() + cfg->limits.proxy_timeout_ms;
	p->ev = event_new(loop->base, fd, EV_READ, net_pph_read_cb, p);
	p->next = loop->pphs;
	if (p->next != NULL)
		p->next->prev = p;
	loop->pphs = p;
	loop->npphs++;
	net_pph_wait(p);
}

void
net_pph_drop_all(struct net_loop *loop)
{
	while (loop->pphs != NULL)
		net_pph_free(loop->pphs);
}
