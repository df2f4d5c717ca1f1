/*
 * net/loop.c: an event loop's life.  "workers" loops, each on its own
 * thread, run the sessions (a session lives on one loop for its whole
 * life); the main thread leaves news (a new configuration, a new listener
 * set, a stop) in a loop's mailbox and wakes it.  A stop closes the
 * listeners and drains the sessions within the shutdown grace.
 */
#include "net/net_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"

/* ----- a loop's life ----- */

/* Every few seconds of a stop: what it still waits for, and how long. */
static void
net_loop_drain_note(struct net_loop *loop)
{
	uint64_t now = util_now_ms();

	if (now < loop->drain_note_ms ||
	    (loop->ctx.conns == NULL && loop->ctx.ntx == 0))
		return;
	loop->drain_note_ms = now + NET_DRAIN_NOTE_MS;
	if (!loop->killed && now < loop->drain_deadline_ms)
		log_msg(LOG_LVL_INFO, "shutdown: loop %u waits for sessions=%u "
		    "transactions=%u, at most %jus more", loop->idx,
		    loop->ctx.nconns, loop->ctx.ntx, (uintmax_t)
		    ((loop->drain_deadline_ms - now + 999) / 1000));
	else	/* a disk job cannot be called off; it ends on its own */
		log_msg(LOG_LVL_WARN, "shutdown: loop %u waits for "
		    "transactions=%u still writing to disk", loop->idx,
		    loop->ctx.ntx);
}

static void
net_loop_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_loop *loop = arg;
	struct timeval tick = { 0, 20000 };

	(void)fd;
	(void)what;
	if (!loop->killed && util_now_ms() >= loop->drain_deadline_ms &&
	    (loop->ctx.conns != NULL || loop->ctx.ntx > 0)) {
		if (loop->ctx.conns != NULL)
			log_msg(LOG_LVL_WARN, "shutdown: grace over, closing "
			    "%u sessions", loop->ctx.nconns);
		conn_kill_all(&loop->ctx);
		/* What the transactions still wait for but the disk (a sync
		 * webhook's answer) is cancelled. */
		while (write(loop->cut_pipe[1], "", 1) == -1 && errno == EINTR)
			;
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
	net_loop_drain_note(loop);
	evtimer_add(loop->drain_ev, &tick);
}

static void
net_loop_stop(struct net_loop *loop)
{
	if (loop->ctx.shutting_down)
		return;
	loop->ctx.shutting_down = true;
	net_loop_sync_levs(loop, NULL, 0);
	net_pph_drop_all(loop);
	conn_shutdown_all(&loop->ctx);
	loop->drain_deadline_ms = util_now_ms() +
	    loop->ctx.rt->cfg->limits.shutdown_ms;
	net_loop_drain_cb(-1, 0, loop);
}

void
net_loop_adopt_rt(struct net_loop *loop)
{
	struct net_server *srv = loop->srv;
	struct conn_rt *rt;

	pthread_mutex_lock(&srv->mu);
	rt = loop->new_rt;
	loop->new_rt = NULL;
	atomic_store(&loop->rt_posted, false);
	pthread_mutex_unlock(&srv->mu);
	if (rt != NULL) {
		conn_rt_unref(&loop->ctx.rt);
		loop->ctx.rt = rt;	/* new sessions take this one */
		if (!loop->ctx.shutting_down)
			conn_ctx_chain_sync(&loop->ctx);
	}
}

/* The main thread left news in the mailbox. */
static void
net_loop_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_loop *loop = arg;
	struct net_server *srv = loop->srv;
	struct net_lev *levs;
	size_t nlevs, ndropped;
	int *dropped;
	bool relisten, stop;

	(void)fd;
	(void)what;
	net_loop_adopt_rt(loop);
	pthread_mutex_lock(&srv->mu);
	levs = loop->new_levs;
	nlevs = loop->new_nlevs;
	relisten = loop->new_listeners;
	loop->new_levs = NULL;
	loop->new_listeners = false;
	dropped = loop->dropped_fds;
	ndropped = loop->ndropped_fds;
	loop->dropped_fds = NULL;
	loop->ndropped_fds = 0;
	stop = loop->stop;
	pthread_mutex_unlock(&srv->mu);

	if (relisten && !loop->ctx.shutting_down) {
		net_loop_close_dropped(loop, dropped, ndropped);
		net_loop_sync_levs(loop, levs, nlevs);
		levs = NULL;
	}
	free(dropped);
	free(levs);
	if (stop)
		net_loop_stop(loop);
}

void *
net_loop_main(void *arg)
{
	struct net_loop *loop = arg;
	int rc;

	/*
	 * One turn at a time: the turn's log lines go out before a wait.  A
	 * loop with nothing to wait for (no listener left, no session) still
	 * waits: for its mailbox, until a stop ends it (net_loop_drain_cb).
	 */
	log_buffer(true);
	do {
		rc = event_base_loop(loop->base, EVLOOP_ONCE |
		    EVLOOP_NO_EXIT_ON_EMPTY);
		util_pool_kick();	/* the turn's disk jobs, at once */
		log_flush();
	} while (rc == 0 && !event_base_got_break(loop->base) &&
	    !event_base_got_exit(loop->base));
	log_buffer(false);
	if (rc == -1)
		log_msg(LOG_LVL_ERROR, "loop %u: event_base_loop failed",
		    loop->idx);
	return NULL;
}

void
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
	loop->ctx.priv = srv->priv;
	loop->ctx.tlw = srv->tlw;
	if (pipe2(loop->cut_pipe, O_CLOEXEC) == -1)
		fatal("loop %u: pipe2: %s", idx, strerror(errno));
	loop->ctx.stop_fd = loop->cut_pipe[0];
	conn_ctx_chain_sync(&loop->ctx);	/* never under a flood */
	loop->wake_ev = event_new(loop->base, -1, 0, net_loop_wake_cb, loop);
	loop->drain_ev = evtimer_new(loop->base, net_loop_drain_cb, loop);
	loop->resume_ev = evtimer_new(loop->base, net_accept_resume_cb, loop);
	loop->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	net_post_listeners(srv, loop);
	event_active(loop->wake_ev, EV_TIMEOUT, 1);	/* first listen */
}

void
net_loop_clear(struct net_loop *loop)
{
	net_pph_drop_all(loop);
	conn_ctx_chain_clear(&loop->ctx);
	conn_ctx_proxy_clear(&loop->ctx);
	/* Its freeing, and the completions its store posts: run them. */
	for (int k = 0; k < 10; k++) {
		event_base_loop(loop->base, EVLOOP_NONBLOCK);
		util_pool_kick();
	}
	conn_rt_unref(&loop->ctx.rt);
	conn_rt_unref(&loop->new_rt);
	free(loop->new_levs);
	free(loop->dropped_fds);
	free(loop->levs);
	event_free(loop->wake_ev);
	event_free(loop->drain_ev);
	event_free(loop->resume_ev);
	if (loop->spare_fd != -1)
		close(loop->spare_fd);
	close(loop->cut_pipe[0]);
	close(loop->cut_pipe[1]);
	event_base_free(loop->base);
}
