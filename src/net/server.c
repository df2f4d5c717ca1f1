/*
 * net/server.c: the server process.  The main thread binds the listeners,
 * drops privileges and then only waits for signals; "workers" event loops,
 * each on its own thread with its own SO_REUSEPORT socket per listener,
 * run the sessions (a session lives on one loop for its whole life).
 * Connection limits are counted across loops under one mutex.
 *
 * Which loop takes a new connection: by default ("pack") the main thread
 * samples the CPU time the loops used and steers new connections, with a
 * classic BPF program on each listen address's SO_REUSEPORT group, to as
 * few loops as their load allows: loop 0 alone while it is not busy, more
 * as the open ones get busy, fewer again as they calm down.  A loop with work
 * queued up seldom sleeps, and every sleep and wake-up of a loop costs a
 * cross-CPU interrupt (and in a VM a halt exit); spreading a light load over
 * all loops makes each of them sleep and wake for nearly every event.
 * "workers N spread" leaves the choice to the kernel's hash instead.
 */
#include "net/net_private.h"

#include <errno.h>
#include <linux/filter.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "chain/chain.h"
#include "config/config.h"
#include "conn/conn.h"
#include "log/log.h"
#include "queue/queue.h"
#include "spool/spool.h"

#define NET_IP_BUCKETS		4096
#define NET_DISK_THREADS	64	/* fsyncs in flight at once: the journal
				   commits concurrent ones together */
#define NET_BACKLOG		4096
#define NET_BALANCE_MS		200	/* pack: how often loads are sampled */
#define NET_BUSY_OPEN		0.75	/* pack: the open loops are this busy on
					   average: open more */
#define NET_BUSY_CLOSE		0.5	/* ... the load would leave one fewer
					   below this: close one */

struct net_ipcount {
	char			 ip[INET6_ADDRSTRLEN];
	unsigned		 n;
	struct net_ipcount	*next;
};

/*
 * Connections from one address in an ageing window (the Mailinator-style
 * counter of the agent seed): the count of the current window plus the
 * share of the previous one that still overlaps the last PERIOD.
 */
struct net_rate {
	char			 ip[INET6_ADDRSTRLEN];
	unsigned		 cur, prev;
	uint64_t		 start_ms;	/* of the current window */
	struct net_rate		*next;
};

/* One listen address: a socket per loop, bound by the main thread. */
struct net_listen {
	char			*addr;		/* owned */
	int			 port;
	int			*fds;		/* one per loop; each loop owns its own */
};

/* A loop's own listener on one of those sockets. */
struct net_lev {
	int			 fd;
	char			 addr[INET6_ADDRSTRLEN];
	int			 port;
	struct net_loop		*loop;		/* borrowed: our owner */
	struct evconnlistener	*lev;		/* owned; closes fd (NULL in a mailbox) */
};

struct net_loop {
	struct net_server	*srv;		/* borrowed: our owner */
	unsigned		 idx;
	pthread_t		 thread;
	struct event_base	*base;		/* owned */
	struct conn_ctx		 ctx;
	struct net_lev		*levs;		/* owned array */
	size_t			 nlevs;
	struct event		*wake_ev;	/* owned: the main thread has news */
	struct event		*drain_ev;	/* owned: polls for the end of a stop */
	uint64_t		 drain_deadline_ms;
	bool			 killed;
	unsigned		 quiet_ticks;	/* drain: ticks with nothing left */
	uint64_t		 cpu_ns;	/* pack: its CPU time at the last
						   sample (main thread) */
	/* Mailbox from the main thread, guarded by srv->mu. */
	struct conn_rt		*new_rt;	/* ref, or NULL */
	struct net_lev		*new_levs;	/* owned: the listener set to have */
	size_t			 new_nlevs;
	bool			 new_listeners;
	bool			 stop;
};

struct net_server {
	char			*config_path;	/* owned */
	struct event_base	*base;		/* owned: main thread, signals */
	struct conn_rt		*rt;		/* ref: the config in force */
	struct net_listen	*listens;	/* owned array */
	size_t			 nlistens;
	struct net_loop		*loops;		/* owned array */
	unsigned		 nloops;
	struct util_pool	*pool;		/* owned: disk work */
	struct spool		*spool;		/* owned */
	struct queue		*queue;		/* owned */
	struct event		*sig_term, *sig_int, *sig_hup;
	pthread_mutex_t		 mu;		/* guards what follows, and mailboxes */
	unsigned		 nconns;	/* across loops */
	struct net_ipcount	*ips[NET_IP_BUCKETS];
	struct net_rate		*rates[NET_IP_BUCKETS];
	uint64_t		 rate_sweep_ms;	/* next sweep of stale rates */
	bool			 balance_asleep; /* pack: nothing to sample until
						   the next connection */
	/* pack, main thread only: */
	struct event		*balance_ev;	/* owned: the sampling timer */
	unsigned		 nopen;		/* new ones: loops 0..nopen-1 */
	uint64_t		 sample_ns;	/* last sampled at */
};

/* ----- per-address counts (srv->mu held) ----- */

static uint32_t
net_ip_hash(const char *ip)
{
	uint32_t h = 2166136261u;	/* FNV-1a */

	for (const char *p = ip; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % NET_IP_BUCKETS;
}

static struct net_ipcount **
net_ip_slot(struct net_server *srv, const char *ip)
{
	struct net_ipcount **pp = &srv->ips[net_ip_hash(ip)];

	while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* Forget addresses quiet for two windows; at most once a window. */
static void
net_rate_sweep(struct net_server *srv, uint64_t now, uint64_t window)
{
	if (now < srv->rate_sweep_ms)
		return;
	srv->rate_sweep_ms = now + window;
	for (size_t i = 0; i < NET_IP_BUCKETS; i++)
		for (struct net_rate **pp = &srv->rates[i]; *pp != NULL; ) {
			struct net_rate *r = *pp;
			if (now - r->start_ms >= 2 * window) {
				*pp = r->next;
				free(r);
			} else
				pp = &r->next;
		}
}

/* Count one connection from ip; true when it is one too many. */
static bool
net_rate_over(struct net_server *srv, const struct config_limits *lim,
    const char *ip)
{
	uint64_t now = util_now_ms(), w = lim->conn_rate_window_ms;
	struct net_rate **pp, *r;

	if (lim->conn_rate_max == 0)
		return false;
	net_rate_sweep(srv, now, w);
	pp = &srv->rates[net_ip_hash(ip)];
	while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
		pp = &(*pp)->next;
	if ((r = *pp) == NULL) {
		r = *pp = xcalloc(1, sizeof(*r));
		util_strlcpy(r->ip, ip, sizeof(r->ip));
		r->start_ms = now;
	}
	if (now - r->start_ms >= 2 * w) {
		r->prev = r->cur = 0;
		r->start_ms = now;
	} else if (now - r->start_ms >= w) {
		r->prev = r->cur;
		r->cur = 0;
		r->start_ms += w;
	}
	uint64_t left = w - (now - r->start_ms);	/* of the previous window */
	if ((uint64_t)r->cur * w + (uint64_t)r->prev * left >=
	    (uint64_t)lim->conn_rate_max * w)
		return true;	/* refused attempts are not counted */
	r->cur++;
	return false;
}

/*
 * Count a new connection from ip unless a limit says no; NULL when it is
 * admitted, else the refusal text.
 */
static const char *
net_admit(struct net_server *srv, const struct config_limits *lim,
    const char *ip)
{
	const char *why = NULL;

	pthread_mutex_lock(&srv->mu);
	struct net_ipcount **pp = net_ip_slot(srv, ip);
	if (srv->nconns >= lim->conn_max)
		why = "Too many connections, try again later";
	else if (*pp != NULL && (*pp)->n >= lim->conn_per_ip_max)
		why = "Too many connections from your address, try again later";
	else if (net_rate_over(srv, lim, ip))
		why = "Too many connections from your address, slow down";
	else {
		if (*pp == NULL) {
			*pp = xcalloc(1, sizeof(**pp));
			util_strlcpy((*pp)->ip, ip, sizeof((*pp)->ip));
		}
		(*pp)->n++;
		srv->nconns++;
		if (srv->balance_asleep) {
			srv->balance_asleep = false;
			event_active(srv->balance_ev, EV_TIMEOUT, 1);
		}
	}
	pthread_mutex_unlock(&srv->mu);
	return why;
}

static void
net_conn_closed_cb(void *arg, const char *ip)
{
	struct net_server *srv = arg;

	pthread_mutex_lock(&srv->mu);
	struct net_ipcount **pp = net_ip_slot(srv, ip), *e = *pp;
	ASSERT(e != NULL && e->n > 0 && srv->nconns > 0);
	srv->nconns--;
	if (--e->n == 0) {
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&srv->mu);
}

/* ----- accepting (on a loop) ----- */

static void
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
	const struct config *cfg = loop->ctx.rt->cfg;
	char ip[INET6_ADDRSTRLEN] = "?";
	const char *why;
	size_t idx;

	(void)lev;
	for (idx = 0; idx < cfg->nlistens; idx++)
		if (cfg->listens[idx].port == nl->port &&
		    strcmp(cfg->listens[idx].addr, nl->addr) == 0)
			break;
	if (idx == cfg->nlistens) {
		close(fd);	/* a listener on its way out during a reload */
		return;
	}
	(void)util_sockaddr_text(sa, ip, NULL);
	if ((why = net_admit(loop->srv, &cfg->limits, ip)) != NULL) {
		net_refuse(cfg, fd, ip, why);
		return;
	}
	conn_new(&loop->ctx, fd, sa, (socklen_t)salen, idx);
}

static void
net_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	(void)lev;
	(void)arg;
	/* EMFILE and friends: log and go on; libevent retries. */
	log_msg(LOG_LVL_WARN, "accept: %s", strerror(errno));
}

/*
 * Make the loop's listeners exactly want[0..n): keep, close or open.  The
 * array moves into the loop (levs are reached by address from libevent).
 */
static void
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
		}
	}
	for (size_t j = 0; j < loop->nlevs; j++)
		if (loop->levs[j].lev != NULL)
			evconnlistener_free(loop->levs[j].lev);
	free(loop->levs);
	loop->levs = next;
	loop->nlevs = n;
}

/* ----- a loop's life ----- */

static void
net_loop_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_loop *loop = arg;
	struct timeval tick = { 0, 20000 };

	(void)fd;
	(void)what;
	if (!loop->killed && loop->ctx.conns != NULL &&
	    util_now_ms() >= loop->drain_deadline_ms) {
		log_msg(LOG_LVL_WARN, "shutdown: grace over, closing %u "
		    "sessions", loop->ctx.nconns);
		conn_kill_all(&loop->ctx);
		loop->killed = true;
	}
	/*
	 * Transactions outlive their sessions until their disk job ends;
	 * then two more ticks let the chains' last state-store writes land.
	 */
	if (loop->ctx.conns == NULL && loop->ctx.ntx == 0 &&
	    ++loop->quiet_ticks > 2) {
		event_base_loopbreak(loop->base);
		return;
	}
	evtimer_add(loop->drain_ev, &tick);
}

static void
net_loop_stop(struct net_loop *loop)
{
	if (loop->ctx.shutting_down)
		return;
	loop->ctx.shutting_down = true;
	net_loop_sync_levs(loop, NULL, 0);
	conn_shutdown_all(&loop->ctx);
	loop->drain_deadline_ms = util_now_ms() +
	    loop->ctx.rt->cfg->limits.shutdown_ms;
	net_loop_drain_cb(-1, 0, loop);
}

/* The main thread left news in the mailbox. */
static void
net_loop_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_loop *loop = arg;
	struct net_server *srv = loop->srv;
	struct conn_rt *rt;
	struct net_lev *levs;
	size_t nlevs;
	bool relisten, stop;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&srv->mu);
	rt = loop->new_rt;
	loop->new_rt = NULL;
	levs = loop->new_levs;
	nlevs = loop->new_nlevs;
	relisten = loop->new_listeners;
	loop->new_levs = NULL;
	loop->new_listeners = false;
	stop = loop->stop;
	pthread_mutex_unlock(&srv->mu);

	if (rt != NULL) {
		conn_rt_unref(&loop->ctx.rt);
		loop->ctx.rt = rt;	/* new sessions take this one */
	}
	if (relisten && !loop->ctx.shutting_down) {
		net_loop_sync_levs(loop, levs, nlevs);
		levs = NULL;
	}
	free(levs);
	if (stop)
		net_loop_stop(loop);
}

static void *
net_loop_main(void *arg)
{
	struct net_loop *loop = arg;
	int rc;

	/* One turn at a time: the turn's log lines go out before a wait. */
	log_buffer(true);
	do {
		rc = event_base_loop(loop->base, EVLOOP_ONCE);
		log_flush();
	} while (rc == 0 && !event_base_got_break(loop->base) &&
	    !event_base_got_exit(loop->base));
	log_buffer(false);
	if (rc == -1)
		log_msg(LOG_LVL_ERROR, "loop %u: event_base_loop failed",
		    loop->idx);
	return NULL;
}

/* The listener set of loop idx, from srv->listens (srv->mu held). */
static void
net_post_listeners(struct net_server *srv, struct net_loop *loop)
{
	free(loop->new_levs);
	loop->new_levs = xcalloc(srv->nlistens + 1, sizeof(*loop->new_levs));
	for (size_t i = 0; i < srv->nlistens; i++) {
		struct net_lev *nl = &loop->new_levs[i];
		nl->fd = srv->listens[i].fds[loop->idx];
		util_strlcpy(nl->addr, srv->listens[i].addr, sizeof(nl->addr));
		nl->port = srv->listens[i].port;
	}
	loop->new_nlevs = srv->nlistens;
	loop->new_listeners = true;
}

static void
net_loop_init(struct net_server *srv, struct net_loop *loop, unsigned idx)
{
	loop->srv = srv;
	loop->idx = idx;
	loop->base = event_base_new();
	if (loop->base == NULL)
		fatal("event_base_new failed");
	loop->ctx.base = loop->base;
	loop->ctx.pool = srv->pool;
	loop->ctx.spool = srv->spool;
	loop->ctx.queue = srv->queue;
	loop->ctx.rt = conn_rt_ref(srv->rt);
	loop->ctx.closed_cb = net_conn_closed_cb;
	loop->ctx.closed_arg = srv;
	loop->ctx.loop_idx = idx;
	loop->wake_ev = event_new(loop->base, -1, 0, net_loop_wake_cb, loop);
	loop->drain_ev = evtimer_new(loop->base, net_loop_drain_cb, loop);
	net_post_listeners(srv, loop);
	event_active(loop->wake_ev, EV_TIMEOUT, 1);	/* first listen */
}

/* ----- binding (main thread) ----- */

static int
net_bind_one(const char *addr, int port, const char **err_out)
{
	static char err[256];
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd = -1, on = 1;

	if (util_sockaddr_make(addr, port, &ss, &sslen) == -1) {
		errno = EINVAL;		/* config/ checks it first */
		goto fail;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	/* One socket per loop; the kernel spreads connections over them. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) == -1)
		goto fail;
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (struct sockaddr *)&ss, sslen) == -1 ||
	    listen(fd, NET_BACKLOG) == -1)
		goto fail;
	return fd;
fail:
	util_snprintf(err, sizeof(err), "listen %s port %d: %s", addr, port,
	    strerror(errno));
	if (fd != -1)
		close(fd);
	*err_out = err;
	return -1;
}

/* ----- which loop takes a new connection (main thread) ----- */

/*
 * Steer new connections on one listen address to loops 0..n-1: a classic
 * BPF program on its SO_REUSEPORT group returns the index of a socket in
 * the group, and the sockets joined it in loop order (net_listens_sync).
 */
static void
net_steer_listen(const struct net_listen *l, unsigned n)
{
	struct sock_filter one[] = {
		BPF_STMT(BPF_RET | BPF_K, 0),
	};
	struct sock_filter some[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_RANDOM),
		BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog prog = { 1, one };

	if (n > 1) {
		prog.len = sizeof(some) / sizeof(some[0]);
		prog.filter = some;
	}
	if (setsockopt(l->fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
	    sizeof(prog)) == -1)
		log_msg(LOG_LVL_WARN, "listen %s port %d: cannot steer new "
		    "connections (%s): the kernel spreads them", l->addr,
		    l->port, strerror(errno));
}

/* Open loops 0..n-1 to new connections on every listen address. */
static void
net_steer(struct net_server *srv, unsigned n)
{
	for (size_t i = 0; i < srv->nlistens; i++)
		net_steer_listen(&srv->listens[i], n);
	log_msg(LOG_LVL_DEBUG, "new connections go to %u of %u loops", n,
	    srv->nloops);
	srv->nopen = n;
}

static uint64_t
net_clock_ns(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) == -1)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Sample the loops' CPU time since the last tick and open or close one
 * (more at once when a burst needs them).  Sleeps while no connection is
 * open and loop 0 alone takes new ones; the next connection wakes it.
 */
static void
net_balance_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_server *srv = arg;
	struct timeval tick = { 0, NET_BALANCE_MS * 1000 };
	uint64_t now = net_clock_ns(CLOCK_MONOTONIC);
	double wall = (double)(now - srv->sample_ns), busy = 0;
	unsigned open = srv->nopen;
	bool asleep;

	(void)fd;
	(void)what;
	for (unsigned i = 0; i < srv->nloops; i++) {
		struct net_loop *loop = &srv->loops[i];
		clockid_t id;
		if (pthread_getcpuclockid(loop->thread, &id) != 0)
			continue;
		uint64_t cpu = net_clock_ns(id);
		if (wall > 0 && cpu > loop->cpu_ns)
			busy += (double)(cpu - loop->cpu_ns) / wall;
		loop->cpu_ns = cpu;
	}
	srv->sample_ns = now;
	if (busy > NET_BUSY_OPEN * open)
		open = busy / NET_BUSY_OPEN + 1 < srv->nloops ?
		    (unsigned)(busy / NET_BUSY_OPEN) + 1 : srv->nloops;
	else if (open > 1 && busy < NET_BUSY_CLOSE * (open - 1))
		open--;
	if (open != srv->nopen)
		net_steer(srv, open);
	pthread_mutex_lock(&srv->mu);
	asleep = srv->balance_asleep = srv->nconns == 0 && open == 1;
	pthread_mutex_unlock(&srv->mu);
	if (!asleep)
		evtimer_add(srv->balance_ev, &tick);
}

/*
 * Make srv->listens match cfg: kept addresses keep their sockets, new ones
 * get nloops fresh sockets.  Sockets of dropped addresses are closed by
 * their loops when they take the new set.  -1 when a new one cannot be
 * bound (the others are kept).
 */
static int
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
				o->fds = NULL;
			}
		}
		if (l->fds == NULL) {
			l->fds = xcalloc(srv->nloops, sizeof(int));
			for (unsigned k = 0; k < srv->nloops; k++)
				if ((l->fds[k] = net_bind_one(l->addr, l->port,
				    err_out)) == -1) {
					while (k-- > 0)
						close(l->fds[k]);
					free(l->fds);
					free(l->addr);
					rc = -1;
					goto next;
				}
			log_msg(LOG_LVL_INFO, "listening on %s%s%s:%d",
			    strchr(l->addr, ':') ? "[" : "", l->addr,
			    strchr(l->addr, ':') ? "]" : "", l->port);
			if (srv->balance_ev != NULL)
				net_steer_listen(l, srv->nopen);
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

/* ----- signals (main thread) ----- */

static void
net_post(struct net_server *srv, struct conn_rt *rt, bool listeners,
    bool stop)
{
	pthread_mutex_lock(&srv->mu);
	for (unsigned i = 0; i < srv->nloops; i++) {
		struct net_loop *loop = &srv->loops[i];
		if (rt != NULL) {
			conn_rt_unref(&loop->new_rt);
			loop->new_rt = conn_rt_ref(rt);
		}
		if (listeners)
			net_post_listeners(srv, loop);
		loop->stop |= stop;
		event_active(loop->wake_ev, EV_TIMEOUT, 1);
	}
	pthread_mutex_unlock(&srv->mu);
}

static void
net_reload(struct net_server *srv)
{
	char *errs = NULL;
	const char *err = NULL;
	struct config *cfg = config_load(srv->config_path, &errs);
	struct conn_rt *rt;

	if (cfg == NULL) {
		/* One log line per error, then keep what runs. */
		char *save = NULL;
		for (char *line = strtok_r(errs, "\n", &save); line != NULL;
		    line = strtok_r(NULL, "\n", &save))
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
	if (strcmp(rt->cfg->spool, srv->rt->cfg->spool) != 0 ||
	    rt->cfg->workers != srv->rt->cfg->workers ||
	    rt->cfg->workers_spread != srv->rt->cfg->workers_spread)
		log_msg(LOG_LVL_WARN, "reload: spool and workers change only "
		    "at restart");
	if (net_listens_sync(srv, rt->cfg, &err) == -1)
		log_msg(LOG_LVL_ERROR, "reload: %s", err);
	log_init(rt->cfg->log_syslog, rt->cfg->log_facility,
	    (enum log_level)rt->cfg->log_level);
	net_post(srv, rt, true, false);
	pthread_mutex_lock(&srv->mu);	/* queue threads read srv->rt */
	conn_rt_unref(&srv->rt);
	srv->rt = rt;
	pthread_mutex_unlock(&srv->mu);
	log_msg(LOG_LVL_INFO, "reload: configuration %s loaded",
	    srv->config_path);
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
	log_msg(LOG_LVL_INFO, "shutdown: signal %d, draining %u sessions",
	    (int)sig, srv->nconns);
	if (srv->balance_ev != NULL) {
		/* The loops close the listen sockets: no more steering. */
		event_del(srv->balance_ev);
		pthread_mutex_lock(&srv->mu);
		srv->balance_asleep = false;
		pthread_mutex_unlock(&srv->mu);
	}
	net_post(srv, NULL, false, true);
	event_base_loopbreak(srv->base);	/* then join the loops */
}

/* ----- life ----- */

/* The configuration in force, for a queue thread. */
static struct conn_rt *
net_rt_get(struct net_server *srv)
{
	struct conn_rt *rt;

	pthread_mutex_lock(&srv->mu);
	rt = conn_rt_ref(srv->rt);
	pthread_mutex_unlock(&srv->mu);
	return rt;
}

/* The queue routes DSNs with the current configuration's router. */
static int
net_queue_route(void *arg, const char *sender, const char *rcpt,
    char **action_out, char **arg_out, const char **err_out)
{
	struct conn_rt *rt = net_rt_get(arg);
	int rc;

	rc = queue_route_router(rt->router, sender, rcpt, action_out,
	    arg_out, err_out);
	conn_rt_unref(&rt);
	return rc;
}

/* The upstream said 250: record it before QUIT (issue 5: never twice). */
struct net_settle {
	struct spool		*sp;
	const struct spool_env	*env;
	size_t			 idx;
};

static void
net_settled_cb(void *arg, const char *rcpt)
{
	struct net_settle *ns = arg;
	const char *err = NULL;

	(void)rcpt;	/* one recipient per call: it is env->rcpts[idx] */
	if (spool_mark_done(ns->sp, ns->env->qid, ns->idx, &err) == -1)
		log_event(LOG_LVL_ERROR, "spool-error", ns->env->sid,
		    ns->env->qid, "why=\"%s\"", err);
}

/*
 * The queue's delivery of one recipient: relay/mx/forward through the
 * current configuration's sender for the action named in the envelope,
 * everything else as the queue does it.  Runs on a queue thread.
 */
static enum deliver_result
net_queue_deliver(void *arg, const struct spool_env *env, size_t idx,
    const char *content_path, const char *hostname, const char **why_out)
{
	static _Thread_local char why[600];
	const struct spool_rcpt *r = &env->rcpts[idx];
	struct deliver_rcpt_status st;
	struct deliver_remote *dr;
	struct conn_rt *rt;
	const char *err = NULL, *addr = r->addr;

	if ((strcmp(r->action, "maildir") ==
	    0 || strcmp(r->action, "discard") == 0))
		return queue_deliver_default(NULL, env, idx, content_path,
		    hostname, why_out);
	rt = net_rt_get(arg);
	if (r->arg == NULL || (dr = conn_rt_remote(rt, r->arg)) == NULL) {
		util_snprintf(why, sizeof(why), "4.3.5 action %s is not "
		    "configured any more", r->arg != NULL ? r->arg : "-");
		conn_rt_unref(&rt);
		*why_out = why;
		return DELIVER_TEMPFAIL;
	}
	struct net_settle ns = { ((struct net_server *)arg)->spool, env, idx };
	struct deliver_msg m = {
		.content_path = content_path,
		.return_path = env->sender,
		.qid = env->qid,
		.rcpt_idx = idx,
		.received = env->received,
		.hostname = hostname,
		.settled_cb = net_settled_cb,
		.settled_arg = &ns,
	};
	memset(&st, 0, sizeof(st));
	(void)deliver_remote_send(dr, &m, &addr, 1, &st, &err);
	conn_rt_unref(&rt);
	if (st.code != 0)
		util_snprintf(why, sizeof(why), "%d %s", st.code, st.text);
	else
		util_strlcpy(why, st.text[0] != '\0' ? st.text : err != NULL ?
		    err : "4.4.0 delivery failed", sizeof(why));
	*why_out = why;
	return st.result;
}

/* Room for many idle connections: raise the soft descriptor limit. */
static void
net_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_msg(LOG_LVL_WARN, "setrlimit(NOFILE): %s",
			    strerror(errno));
	}
}

struct net_server *
net_server_new(const char *config_path, struct config *cfg)
{
	struct net_server *srv = xcalloc(1, sizeof(*srv));
	const char *err = NULL;

	log_init(cfg->log_syslog, cfg->log_facility,
	    (enum log_level)cfg->log_level);
	if (evthread_use_pthreads() == -1)
		fatal("libevent: no thread support");
	pthread_mutex_init(&srv->mu, NULL);
	net_raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	srv->config_path = xstrdup(config_path);
	/* Signals first: once a port answers, SIGTERM must drain, not kill. */
	srv->base = event_base_new();
	if (srv->base == NULL)
		fatal("event_base_new failed");
	srv->sig_term = evsignal_new(srv->base, SIGTERM, net_signal_cb, srv);
	srv->sig_int = evsignal_new(srv->base, SIGINT, net_signal_cb, srv);
	srv->sig_hup = evsignal_new(srv->base, SIGHUP, net_signal_cb, srv);
	event_add(srv->sig_term, NULL);
	event_add(srv->sig_int, NULL);
	event_add(srv->sig_hup, NULL);
	if ((srv->rt = conn_rt_new(cfg, &err)) == NULL)
		fatal("%s", err);
	cfg = srv->rt->cfg;
	srv->nloops = cfg->workers;
	if (srv->nloops > 1 && !cfg->workers_spread) {
		/* pack: loop 0 alone to begin with */
		srv->balance_ev = evtimer_new(srv->base, net_balance_cb, srv);
		srv->nopen = 1;
		srv->balance_asleep = true;
	}
	if (net_listens_sync(srv, cfg, &err) == -1)
		fatal("%s", err);
	/* Bound and read: from here on, no root (STYLE.md 8). */
	if (net_drop_privileges(cfg->user, cfg->group, &err) == -1)
		fatal("%s", err);
	if (geteuid() == 0)
		log_msg(LOG_LVL_WARN, "running as root: add a 'user' "
		    "statement to drop privileges");
	if ((srv->spool = spool_open(cfg->spool, &err)) == NULL)
		fatal("spool %s: %s", cfg->spool, err);
	srv->pool = util_pool_new(NET_DISK_THREADS);
	struct queue_opts qo;
	queue_opts_init(&qo, cfg);
	qo.route = net_queue_route;
	qo.route_arg = srv;
	qo.deliver = net_queue_deliver;
	qo.deliver_arg = srv;
	qo.control = true;	/* <spool>/control.sock: postern queue, send */
	srv->queue = queue_new_opts(srv->spool, &qo);
	srv->loops = xcalloc(srv->nloops, sizeof(*srv->loops));
	for (unsigned i = 0; i < srv->nloops; i++)
		net_loop_init(srv, &srv->loops[i], i);
	queue_recover(srv->queue);
	return srv;
}

int
net_server_run(struct net_server *srv)
{
	for (unsigned i = 0; i < srv->nloops; i++)
		if (pthread_create(&srv->loops[i].thread, NULL, net_loop_main,
		    &srv->loops[i]) != 0)
			fatal("pthread_create: cannot start loop %u", i);
	log_msg(LOG_LVL_INFO, "postern started: hostname=%s spool=%s "
	    "workers=%u", srv->rt->cfg->hostname, srv->rt->cfg->spool,
	    srv->nloops);
	if (event_base_dispatch(srv->base) == -1)
		return 1;
	for (unsigned i = 0; i < srv->nloops; i++)
		pthread_join(srv->loops[i].thread, NULL);
	log_msg(LOG_LVL_INFO, "postern stopped");
	return 0;
}

void
net_server_free(struct net_server **srvp)
{
	struct net_server *srv = *srvp;

	if (srv == NULL)
		return;
	for (unsigned i = 0; i < srv->nloops; i++) {
		struct net_loop *loop = &srv->loops[i];
		conn_kill_all(&loop->ctx);
		net_loop_sync_levs(loop, NULL, 0);
	}
	util_pool_free(&srv->pool);		/* every disk job has ended */
	queue_free(&srv->queue);		/* the rest waits in the spool */
	spool_close(&srv->spool);
	for (unsigned i = 0; i < srv->nloops; i++) {
		struct net_loop *loop = &srv->loops[i];
		chain_loop_free(&loop->ctx.chain_loop);
		/* Completions the store posted while closing: run them. */
		for (int k = 0; k < 10; k++)
			event_base_loop(loop->base, EVLOOP_NONBLOCK);
		conn_rt_unref(&loop->ctx.rt);
		conn_rt_unref(&loop->new_rt);
		free(loop->new_levs);
		free(loop->levs);
		event_free(loop->wake_ev);
		event_free(loop->drain_ev);
		event_base_free(loop->base);
	}
	free(srv->loops);
	for (size_t i = 0; i < srv->nlistens; i++) {
		free(srv->listens[i].addr);
		free(srv->listens[i].fds);
	}
	free(srv->listens);
	for (size_t i = 0; i < NET_IP_BUCKETS; i++) {
		while (srv->ips[i] != NULL) {
			struct net_ipcount *e = srv->ips[i];
			srv->ips[i] = e->next;
			free(e);
		}
		while (srv->rates[i] != NULL) {
			struct net_rate *r = srv->rates[i];
			srv->rates[i] = r->next;
			free(r);
		}
	}
	event_free(srv->sig_term);
	event_free(srv->sig_int);
	event_free(srv->sig_hup);
	if (srv->balance_ev != NULL)
		event_free(srv->balance_ev);
	conn_rt_unref(&srv->rt);
	event_base_free(srv->base);
	pthread_mutex_destroy(&srv->mu);
	free(srv->config_path);
	free(srv);
	*srvp = NULL;
}
