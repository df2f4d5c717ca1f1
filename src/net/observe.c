/*
 * net/observe.c: what the server shows Prometheus: the metrics endpoint's
 * socket (bound with the listeners, before the privilege drop), /healthz,
 * and the gauges only the server knows (open connections, the queue).
 * The health check and the gauges run on the endpoint's thread.
 */
#include "net/net_private.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "queue/queue.h"
#include "spool/spool.h"
#include "store/store.h"

int
net_observe_bind(struct net_server *srv, const struct config *cfg,
    const char **err_out)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, on = 1;

	srv->metrics_fd = -1;
	if (cfg->metrics_addr == NULL)
		return 0;
	if (util_sockaddr_make(cfg->metrics_addr, cfg->metrics_port, &ss,
	    &len) == -1) {
		errno = EINVAL;
		goto fail;
	}
	/* No SO_REUSEPORT: a second server cannot share the endpoint. */
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	/* IPv6 only, as the listeners: [::] leaves IPv4's port alone. */
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (struct sockaddr *)&ss, len) == -1 ||
	    listen(fd, 64) == -1) {
		int e = errno;
		close(fd);
		errno = e;
		goto fail;
	}
	srv->metrics_fd = fd;
	return 0;
fail:
	*err_out = util_err("metrics listen %s port %d: %s", cfg->metrics_addr,
	    cfg->metrics_port, strerror(errno));
	return -1;
}

/* 200 when listeners, spool and state store work; else why not. */
static const char *
net_health_cb(void *arg)
{
	struct net_server *srv = arg;
	const char *err = NULL;

	if (atomic_load(&srv->stopping))
		return "stopping";
	if (atomic_load(&srv->nlistening) == 0)
		return "no listener";
	if (spool_probe(srv->spool, &err) == -1)
		return util_err("spool %s is not writable: %s",
		    spool_dir(srv->spool), err);
	return store_health();
}

static void
net_gauges_cb(void *arg, struct metrics_out *out)
{
	struct net_server *srv = arg;
	struct queue_stats qs;
	unsigned nconns;
	int64_t oldest;

	pthread_mutex_lock(&srv->mu);
	nconns = srv->nconns;
	pthread_mutex_unlock(&srv->mu);
	metrics_gauge(out, "postern_connections_open", "Connections open now",
	    NULL, nconns);
	queue_stats(srv->queue, &qs);
	static const char help[] = "Messages in the queue, by state";
	metrics_gauge(out, "postern_queue_messages", help, "state=\"active\"",
	    qs.active);
	metrics_gauge(out, "postern_queue_messages", help, "state=\"ready\"",
	    qs.ready);
	metrics_gauge(out, "postern_queue_messages", help,
	    "state=\"waiting\"", qs.waiting);
	metrics_gauge(out, "postern_queue_messages", help,
	    "state=\"deferred\"", qs.deferred);
	metrics_gauge(out, "postern_queue_messages", help, "state=\"held\"",
	    qs.held);
	metrics_gauge(out, "postern_queue_messages", help,
	    "state=\"damaged\"", qs.damaged);
	oldest = spool_oldest_s(srv->spool);
	metrics_gauge(out, "postern_queue_oldest_message_age_seconds", "Age of "
	    "the oldest message in the spool (0: none)", NULL, oldest == 0 ?
	    0 : (double)(time(NULL) - oldest));
	metrics_gauge(out, "postern_log_lines_lost_total", "Log lines a "
	    "failed write lost (a full disk)", NULL, (double)log_lines_lost());
}

void
net_observe_start(struct net_server *srv)
{
	const char *err = NULL;

	if (srv->metrics_fd == -1)
		return;
	metrics_gauge_register(net_gauges_cb, srv);
	if ((srv->metrics = metrics_http_new(srv->metrics_fd, net_health_cb,
	    srv, &err)) == NULL)
		fatal("%s", err);
	srv->metrics_fd = -1;		/* the endpoint's now */
	log_msg(LOG_LVL_INFO, "metrics on http://%s%s%s:%d/metrics",
	    strchr(srv->rt->cfg->metrics_addr, ':') ? "[" : "",
	    srv->rt->cfg->metrics_addr,
	    strchr(srv->rt->cfg->metrics_addr, ':') ? "]" : "",
	    srv->rt->cfg->metrics_port);
}

void
net_observe_stop(struct net_server *srv)
{
	if (srv->metrics != NULL) {
		metrics_http_free(&srv->metrics);
		metrics_gauge_unregister(net_gauges_cb, srv);
	}
	if (srv->metrics_fd != -1)
		close(srv->metrics_fd);
	srv->metrics_fd = -1;
}
