/*
 * net/server.c: listeners, connection limits per server and per client
 * address, signals, and the drain on shutdown.  One event loop for now;
 * every session lives on it for its whole life.
 */
#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "conn/conn.h"
#include "log/log.h"
#include "queue/queue.h"
#include "spool/spool.h"
#include "util/util.h"

#define NET_IP_BUCKETS		1024
#define NET_DISK_THREADS	16	/* fsyncs in flight at once */
#define NET_QUEUE_THREADS	8

struct net_ipcount {
	char			 ip[INET6_ADDRSTRLEN];
	unsigned		 n;
	struct net_ipcount	*next;
};

struct net_listener {
	char			*addr;		/* owned */
	int			 port;
	struct evconnlistener	*lev;		/* owned */
};

struct net_server {
	char			*config_path;	/* owned */
	struct event_base	*base;		/* owned */
	struct conn_ctx		 ctx;
	struct net_listener	*listeners;	/* owned array */
	size_t			 nlisteners;
	struct net_ipcount	*ips[NET_IP_BUCKETS];
	struct event		*sig_term, *sig_int, *sig_hup;
	struct event		*drain_ev;	/* shutdown: polls for the end */
	uint64_t		 drain_deadline_ms;
	bool			 killed;	/* grace ran out */
};

static const struct config *
net_cfg(const struct net_server *srv)
{
	return srv->ctx.rt->cfg;
}

/* ----- per-address counts ----- */

static struct net_ipcount **
net_ip_slot(struct net_server *srv, const char *ip)
{
	uint32_t h = 2166136261u;	/* FNV-1a */

	for (const char *p = ip; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	struct net_ipcount **pp = &srv->ips[h % NET_IP_BUCKETS];
	while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
		pp = &(*pp)->next;
	return pp;
}

static unsigned
net_ip_count(struct net_server *srv, const char *ip)
{
	struct net_ipcount **pp = net_ip_slot(srv, ip);

	return *pp != NULL ? (*pp)->n : 0;
}

static void
net_ip_add(struct net_server *srv, const char *ip)
{
	struct net_ipcount **pp = net_ip_slot(srv, ip);

	if (*pp == NULL) {
		*pp = xcalloc(1, sizeof(**pp));
		util_strlcpy((*pp)->ip, ip, sizeof((*pp)->ip));
	}
	(*pp)->n++;
}

static void
net_conn_closed_cb(void *arg, const char *ip)
{
	struct net_server *srv = arg;
	struct net_ipcount **pp = net_ip_slot(srv, ip), *e = *pp;

	ASSERT(e != NULL && e->n > 0);
	if (--e->n == 0) {
		*pp = e->next;
		free(e);
	}
}

/* ----- accepting ----- */

static void
net_refuse(struct net_server *srv, int fd, const char *ip, const char *why)
{
	char line[512];

	log_event(LOG_LVL_WARN, "reject", NULL, NULL,
	    "stage=connect ip=%s code=421 esc=4.7.0 why=\"%s\"", ip, why);
	if (util_snprintf(line, sizeof(line), "421 4.7.0 %s %s\r\n",
	    net_cfg(srv)->hostname, why) == 0) {
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
	struct net_server *srv = arg;
	const struct config_limits *lim = &net_cfg(srv)->limits;
	char ip[INET6_ADDRSTRLEN] = "?";

	(void)lev;
	if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)sa)->sin6_addr,
		    ip, sizeof(ip));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)sa)->sin_addr,
		    ip, sizeof(ip));
	if (srv->ctx.nconns >= lim->conn_max) {
		net_refuse(srv, fd, ip, "Too many connections, try again later");
		return;
	}
	if (net_ip_count(srv, ip) >= lim->conn_per_ip_max) {
		net_refuse(srv, fd, ip,
		    "Too many connections from your address, try again later");
		return;
	}
	evutil_make_socket_nonblocking(fd);
	net_ip_add(srv, ip);
	conn_new(&srv->ctx, fd, sa, (socklen_t)salen);
}

static void
net_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	(void)lev;
	(void)arg;
	/* EMFILE and friends: log and go on; libevent retries. */
	log_msg(LOG_LVL_WARN, "accept: %s", strerror(errno));
}

static int
net_listen_open(struct net_server *srv, struct net_listener *l,
    const char **err_out)
{
	static char err[256];
	struct sockaddr_storage ss = { 0 };
	socklen_t sslen;
	int fd, on = 1;

	if (strchr(l->addr, ':') != NULL) {
		struct sockaddr_in6 *s6 = (void *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)l->port);
		inet_pton(AF_INET6, l->addr, &s6->sin6_addr);
		sslen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (void *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)l->port);
		inet_pton(AF_INET, l->addr, &s4->sin_addr);
		sslen = sizeof(*s4);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (struct sockaddr *)&ss, sslen) == -1 ||
	    listen(fd, 1024) == -1)
		goto fail;
	l->lev = evconnlistener_new(srv->base, net_accept_cb, srv,
	    LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (l->lev == NULL)
		goto fail;
	evconnlistener_set_error_cb(l->lev, net_accept_error_cb);
	log_msg(LOG_LVL_INFO, "listening on %s%s%s:%d",
	    ss.ss_family == AF_INET6 ? "[" : "", l->addr,
	    ss.ss_family == AF_INET6 ? "]" : "", l->port);
	return 0;
fail:
	util_snprintf(err, sizeof(err), "listen %s port %d: %s", l->addr,
	    l->port, strerror(errno));
	if (fd != -1)
		close(fd);
	*err_out = err;
	return -1;
}

static void
net_listener_close(struct net_listener *l)
{
	if (l->lev != NULL)
		evconnlistener_free(l->lev);
	l->lev = NULL;
	free(l->addr);
	l->addr = NULL;
}

/*
 * Make the open listeners match cfg: keep those still wanted, close the
 * rest, open the new ones.  Returns -1 when a new one cannot be opened
 * (those that could stay open).
 */
static int
net_listeners_sync(struct net_server *srv, const struct config *cfg,
    const char **err_out)
{
	struct net_listener *next = xcalloc(cfg->nlistens + 1, sizeof(*next));
	int rc = 0;

	for (size_t i = 0; i < cfg->nlistens; i++) {
		next[i].addr = xstrdup(cfg->listens[i].addr);
		next[i].port = cfg->listens[i].port;
		for (size_t j = 0; j < srv->nlisteners; j++) {
			struct net_listener *o = &srv->listeners[j];
			if (o->lev != NULL && o->port == next[i].port &&
			    strcmp(o->addr, next[i].addr) == 0) {
				next[i].lev = o->lev;	/* moves over */
				o->lev = NULL;
			}
		}
		if (next[i].lev == NULL && net_listen_open(srv, &next[i],
		    err_out) == -1)
			rc = -1;
	}
	for (size_t j = 0; j < srv->nlisteners; j++)
		net_listener_close(&srv->listeners[j]);
	free(srv->listeners);
	srv->listeners = next;
	srv->nlisteners = cfg->nlistens;
	return rc;
}

/* ----- signals ----- */

static void
net_reload(struct net_server *srv)
{
	char *errs = NULL;
	const char *err = NULL;
	struct config *cfg = config_load(srv->config_path, &errs);
	struct conn_rt *rt;

	if (cfg == NULL) {
		/* One log line per error, then keep what runs. */
		for (char *line = strtok(errs, "\n"); line != NULL;
		    line = strtok(NULL, "\n"))
			log_msg(LOG_LVL_ERROR, "reload: %s", line);
		log_msg(LOG_LVL_ERROR, "reload failed: keeping the running "
		    "configuration");
		free(errs);
		return;
	}
	if ((rt = conn_rt_new(cfg, &err)) == NULL) {
		log_msg(LOG_LVL_ERROR, "reload failed: %s: keeping the running "
		    "configuration", err);
		return;
	}
	if (strcmp(rt->cfg->spool, net_cfg(srv)->spool) != 0)
		log_msg(LOG_LVL_WARN, "reload: the spool folder changes only "
		    "at restart");
	if (net_listeners_sync(srv, rt->cfg, &err) == -1)
		log_msg(LOG_LVL_ERROR, "reload: %s", err);
	log_init(rt->cfg->log_syslog, rt->cfg->log_facility,
	    (enum log_level)rt->cfg->log_level);
	conn_rt_unref(&srv->ctx.rt);
	srv->ctx.rt = rt;
	log_msg(LOG_LVL_INFO, "reload: configuration %s loaded",
	    srv->config_path);
}

static void
net_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_server *srv = arg;
	struct timeval tick = { 0, 20000 };

	(void)fd;
	(void)what;
	if (!srv->killed && srv->ctx.conns != NULL &&
	    util_now_ms() >= srv->drain_deadline_ms) {
		log_msg(LOG_LVL_WARN, "shutdown: grace over, closing %u "
		    "sessions", srv->ctx.nconns);
		conn_kill_all(&srv->ctx);
		srv->killed = true;
	}
	/* Transactions outlive their sessions until their disk job ends. */
	if (srv->ctx.conns == NULL && srv->ctx.ntx == 0) {
		event_base_loopbreak(srv->base);
		return;
	}
	evtimer_add(srv->drain_ev, &tick);
}

static void
net_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct net_server *srv = arg;

	(void)what;
	if (sig == SIGHUP) {
		net_reload(srv);
		return;
	}
	if (srv->ctx.shutting_down)
		return;
	log_msg(LOG_LVL_INFO, "shutdown: signal %d, draining %u sessions",
	    (int)sig, srv->ctx.nconns);
	srv->ctx.shutting_down = true;
	for (size_t i = 0; i < srv->nlisteners; i++)
		net_listener_close(&srv->listeners[i]);
	conn_shutdown_all(&srv->ctx);
	srv->drain_deadline_ms = util_now_ms() +
	    net_cfg(srv)->limits.shutdown_ms;
	srv->drain_ev = evtimer_new(srv->base, net_drain_cb, srv);
	net_drain_cb(-1, 0, srv);
}

/* ----- life ----- */

struct net_server *
net_server_new(const char *config_path, struct config *cfg)
{
	struct net_server *srv = xcalloc(1, sizeof(*srv));
	const char *err = NULL;
	struct spool *spool;

	log_init(cfg->log_syslog, cfg->log_facility,
	    (enum log_level)cfg->log_level);
	if (evthread_use_pthreads() == -1)
		fatal("libevent: no thread support");
	srv->config_path = xstrdup(config_path);
	srv->base = event_base_new();
	if (srv->base == NULL)
		fatal("event_base_new failed");
	srv->ctx.base = srv->base;
	if ((srv->ctx.rt = conn_rt_new(cfg, &err)) == NULL)
		fatal("%s", err);
	if ((spool = spool_open(net_cfg(srv)->spool, &err)) == NULL)
		fatal("spool %s: %s", net_cfg(srv)->spool, err);
	srv->ctx.spool = spool;
	srv->ctx.pool = util_pool_new(NET_DISK_THREADS);
	srv->ctx.queue = queue_new(spool, net_cfg(srv)->hostname,
	    NET_QUEUE_THREADS);
	srv->ctx.closed_cb = net_conn_closed_cb;
	srv->ctx.closed_arg = srv;
	if (net_listeners_sync(srv, net_cfg(srv), &err) == -1)
		fatal("%s", err);
	signal(SIGPIPE, SIG_IGN);
	srv->sig_term = evsignal_new(srv->base, SIGTERM, net_signal_cb, srv);
	srv->sig_int = evsignal_new(srv->base, SIGINT, net_signal_cb, srv);
	srv->sig_hup = evsignal_new(srv->base, SIGHUP, net_signal_cb, srv);
	event_add(srv->sig_term, NULL);
	event_add(srv->sig_int, NULL);
	event_add(srv->sig_hup, NULL);
	queue_recover(srv->ctx.queue);
	return srv;
}

int
net_server_run(struct net_server *srv)
{
	log_msg(LOG_LVL_INFO, "postern started: hostname=%s spool=%s",
	    net_cfg(srv)->hostname, net_cfg(srv)->spool);
	if (event_base_dispatch(srv->base) == -1)
		return 1;
	log_msg(LOG_LVL_INFO, "postern stopped");
	return 0;
}

void
net_server_free(struct net_server **srvp)
{
	struct net_server *srv = *srvp;

	if (srv == NULL)
		return;
	conn_kill_all(&srv->ctx);
	util_pool_free(&srv->ctx.pool);		/* every disk job has ended */
	queue_free(&srv->ctx.queue);		/* the rest waits in the spool */
	spool_close(&srv->ctx.spool);
	for (size_t i = 0; i < srv->nlisteners; i++)
		net_listener_close(&srv->listeners[i]);
	free(srv->listeners);
	for (size_t i = 0; i < NET_IP_BUCKETS; i++)
		while (srv->ips[i] != NULL) {
			struct net_ipcount *e = srv->ips[i];
			srv->ips[i] = e->next;
			free(e);
		}
	if (srv->drain_ev != NULL)
		event_free(srv->drain_ev);
	event_free(srv->sig_term);
	event_free(srv->sig_int);
	event_free(srv->sig_hup);
	conn_rt_unref(&srv->ctx.rt);
	event_base_free(srv->base);
	free(srv->config_path);
	free(srv);
	*srvp = NULL;
}
