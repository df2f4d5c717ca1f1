/*
 * net/steer.c: which loop takes a new connection.  By default ("pack") the
 * main thread samples the CPU time the loops used and steers new
 * connections, with a classic BPF program on each listen address's
 * SO_REUSEPORT group, to as few loops as their load allows: loop 0 alone
 * while it is not busy, more as the open ones get busy, fewer again as
 * they calm down.  A loop with work queued up seldom sleeps, and every
 * sleep and wake-up of a loop costs a cross-CPU interrupt (and in a VM a
 * halt exit); spreading a light load over all loops makes each of them
 * sleep and wake for nearly every event.  "workers N spread" picks one of
 * all the loops at random instead.  Either way the program picks only our
 * own sockets: one that another process of the same user binds into the
 * group with SO_REUSEPORT is never handed a connection.
 */
#include "net/net_private.h"

#include <errno.h>
#include <linux/filter.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log/log.h"

/* ----- which loop takes a new connection (main thread) ----- */

void
net_steer_fd(int fd, unsigned n, const char *addr, int port)
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
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
	    sizeof(prog)) == -1)
		log_msg(LOG_LVL_WARN, "listen %s port %d: cannot steer new "
		    "connections (%s): the kernel spreads them", addr, port,
		    strerror(errno));
}

unsigned
net_steer_nopen(const struct net_server *srv)
{
	return srv->balance_ev != NULL ? srv->nopen : srv->nloops;
}

/* Open loops 0..n-1 to new connections on every listen address. */
static void
net_steer(struct net_server *srv, unsigned n)
{
	for (size_t i = 0; i < srv->nlistens; i++) {
		const struct net_listen *l = &srv->listens[i];
		if (!l->passed)
			net_steer_fd(l->fds[0], n, l->addr, l->port);
	}
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
 * Woken soon after it went to sleep, the window is a fraction of a tick
 * and what it holds (the connection that woke it, a loop's start) reads
 * as a busy loop: such a sample only starts the next window.
 */
void
net_balance_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_server *srv = arg;
	struct timeval tick = util_timeval_ms(NET_BALANCE_MS);
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
	if (wall < NET_BALANCE_MS * 1e6 / 2) {
		/* too short to judge: the next tick decides */
	} else if (busy > NET_BUSY_OPEN * open)
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
