/*
 * net/wiring.c: what the server plugs into the queue.  The queue routes
 * DSNs and delivers outbound recipients with the configuration in force
 * (srv->rt, which a reload replaces); these callbacks run on queue
 * threads and take their own reference to it.
 */
#include "net/net_private.h"

#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "priv/priv.h"
#include "queue/queue.h"
#include "spool/spool.h"

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
int
net_queue_route(void *arg, const char *sender, const char *rcpt,
    struct spool_env *env, const char **err_out)
{
	struct conn_rt *rt = net_rt_get(arg);
	int rc;

	rc = queue_route_router(rt->router, sender, rcpt, env, err_out);
	conn_rt_unref(&rt);
	return rc;
}

/*
 * The upstream said 250: record it before QUIT, so it is not sent twice
 * (the message's removal when it was its last recipient, durable within
 * the removals' 50 ms: a crash before that sends it again).
 */
struct net_settle {
	struct queue		*q;
	const struct spool_env	*env;
	const size_t		*idx;	/* borrowed: the queue's */
	const char *const	*addrs;	/* env's addresses of idx, as sent */
	size_t			 n;
	bool			 one_copy; /* one upstream recipient for all */
};

static void
net_settled_cb(void *arg, const char *const *rcpts, size_t n)
{
	struct net_settle *ns = arg;
	size_t *idx = xcalloc(ns->n, sizeof(*idx)), k = 0;
	const char *err = NULL;

	/*
	 * The recipients the upstream took: those handed over at those
	 * addresses (the delivery passes the pointers through), or for a
	 * copy to one address each of them.
	 */
	for (size_t g = 0; g < ns->n; g++)
		for (size_t r = 0; r < n; r++)
			if (ns->one_copy || ns->addrs[g] == rcpts[r]) {
				idx[k++] = ns->idx[g];
				break;
			}
	if (k > 0 && queue_settle(ns->q, ns->env, idx, k, &err) == -1)
		log_event(LOG_LVL_ERROR, "spool-error", ns->env->sid,
		    ns->env->qid, "why=\"%s\"", err);
	free(idx);
}

/* maildir-owner: "USER:FOLDER", written by the helper as USER. */
static void
net_queue_deliver_owner(struct net_server *srv, const struct spool_env *env,
    size_t idx, const char *content_path, const char *hostname,
    struct deliver_rcpt_status *st_out)
{
	const struct spool_rcpt *r = &env->rcpts[idx];
	const char *colon = r->arg != NULL ? strchr(r->arg, ':') : NULL;
	struct deliver_msg m = {
		.return_path = env->sender,
		.smtputf8 = env->smtputf8,
		.smtputf8_needed = env->smtputf8_needed,
		.qid = env->qid, .rcpt_idx = idx,
		.received = env->received, .hostname = hostname,
	};

	const char *why = NULL;

	if (colon == NULL || colon == r->arg) {
		deliver_status_all(st_out, 1, DELIVER_PERMFAIL,
		    "5.3.5 maildir-owner without USER:FOLDER");
		return;
	}
	queue_msg_content(&m, content_path);
	char *owner = xstrndup(r->arg, (size_t)(colon - r->arg));
	enum deliver_result res = priv_deliver(srv->priv, owner, colon + 1,
	    &m, &why);
	free(owner);
	deliver_status_all(st_out, 1, res, res == DELIVER_OK ? NULL : why);
}

/* What the envelope says of the client and the other recipients. */
static void
net_origin(const struct spool_env *env, struct deliver_origin *o,
    const char **rcpts)
{
	memset(o, 0, sizeof(*o));
	o->client_ip = env->client_ip;
	o->helo = env->helo;
	o->tls = env->tls;
	o->auth_user = env->auth_user;
	for (size_t i = 0; i < env->nrcpts; i++)
		rcpts[i] = env->rcpts[i].addr;
	o->rcpts = rcpts;
	o->nrcpts = env->nrcpts;
}

/*
 * The runtime of the action recipient r was routed to, by the name the
 * spool keeps, as the configuration in force has it: *kp becomes its kind
 * now.  A reload may have made that name another kind with a runtime: the
 * action as configured now delivers (the name is all the spool keeps for
 * those).  NULL with *why_out when there is none now, or the name is now
 * a kind whose recipients carry what routing resolved (a maildir's
 * folder), which the spool does not have for r.
 */
static void *
net_queue_runtime(const struct conn_rt *rt, const struct spool_rcpt *r,
    const struct deliver_kind **kp, const char **why_out)
{
	const struct deliver_kind *was = *kp;
	void *run = r->arg != NULL ? conn_rt_runtime(rt, r->arg, kp) : NULL;

	if (run != NULL) {
		if (*kp != was)
			queue_delivered_as(deliver_kind_name(*kp));
		return run;
	}
	if (*kp != was && (*kp)->open == NULL)
		*why_out = util_err("4.3.5 action %s is now a %s action; the "
		    "message was routed to it as a %s action", r->arg,
		    deliver_kind_name(*kp), deliver_kind_name(was));
	else
		*why_out = util_err("4.3.5 action %s is not configured any "
		    "more", r->arg != NULL ? r->arg : "-");
	return NULL;
}

/*
 * The queue's delivery of recipients idx[0..n) (several only of one action
 * of a kind that takes them together) through their kind: with the runtime of the
 * configuration in force (found by the action's name that the spool
 * keeps) when the kind has one.  Deliveries may put new messages in the
 * queue (agents' replies, pass-through copies) and see the client's
 * facts.  Runs on a queue thread.
 */
void
net_queue_deliver(void *arg, const struct spool_env *env, const size_t *idx,
    size_t n, const char *content_path, const char *hostname,
    struct deliver_rcpt_status *st)
{
	struct net_server *srv = arg;
	const struct spool_rcpt *r = &env->rcpts[idx[0]];
	const struct deliver_kind *k = deliver_kind_find(r->action);
	struct deliver_inject inject;
	struct deliver_origin origin;
	struct conn_rt *rt = NULL;
	void *run = NULL;
	const char *err = NULL, **addrs;
	const char **rcpts;

	if (strcmp(r->action, "maildir-owner") == 0) {
		net_queue_deliver_owner(srv, env, idx[0], content_path,
		    hostname, st);
		return;
	}
	if (k == NULL) {
		queue_deliver_default(NULL, env, idx, n, content_path,
		    hostname, st);
		return;
	}
	if (k->open != NULL) {
		rt = net_rt_get(srv);
		run = net_queue_runtime(rt, r, &k, &err);
		if (run == NULL) {
			conn_rt_unref(&rt);
			deliver_status_all(st, n, DELIVER_TEMPFAIL, err);
			return;
		}
	}
	addrs = xcalloc(n, sizeof(*addrs));
	for (size_t g = 0; g < n; g++)
		addrs[g] = env->rcpts[idx[g]].addr;
	struct net_settle ns = { srv->queue, env, idx, addrs, n,
	    k->together == DELIVER_ONE_COPY };
	rcpts = xcalloc(env->nrcpts + 1, sizeof(*rcpts));
	net_origin(env, &origin, rcpts);
	queue_injector(srv->queue, &inject);
	struct deliver_msg m = {
		.return_path = env->sender,
		.smtputf8 = env->smtputf8,
		.smtputf8_needed = env->smtputf8_needed,
		.qid = env->qid,
		.rcpt_idx = idx[0],
		.received = env->received,
		.hostname = hostname,
		.settled_cb = net_settled_cb,
		.settled_arg = &ns,
		.origin = &origin,
		.inject = &inject,
	};
	queue_msg_content(&m, content_path);
	(void)k->deliver(run, r->arg, &m, addrs, n, st, &err);
	conn_rt_unref(&rt);
	free(rcpts);
	free(addrs);
	for (size_t g = 0; g < n; g++) {
		if (st[g].result == DELIVER_TEMPFAIL &&
		    st[g].retry_after_ms > 0)
			queue_retry_after(st[g].retry_after_ms);
		/* The deciding reply with its code, or our reason. */
		if (st[g].result != DELIVER_OK && st[g].text[0] == '\0')
			util_strlcpy(st[g].text, err != NULL ? err :
			    "4.4.0 delivery failed", sizeof(st[g].text));
	}
}
