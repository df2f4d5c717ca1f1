/*
 * net/admit.c: admission of new connections: the total and per-address
 * limits and the connection rate of each address, counted across all
 * loops under the server's mutex; trusted networks skip the last two.
 */
#include "net/net_private.h"

#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "metrics/metrics.h"

/* ----- per-address counts (srv->mu held) ----- */

static size_t
net_ip_hash(const char *ip)
{
	return util_hash_str(ip) % NET_IP_BUCKETS;
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
const char *
net_admit(struct net_server *srv, const struct config *cfg, const char *ip)
{
	const struct config_limits *lim = &cfg->limits;
	/* Trusted clients skip the per-address limits (counted all the same:
	   a reload may change who is trusted before they close). */
	bool trusted = config_is_trusted(cfg, ip);
	const char *why = NULL;
	unsigned reason = 0;

	pthread_mutex_lock(&srv->mu);
	struct net_ipcount **pp = net_ip_slot(srv, ip);
	if (srv->nconns >= lim->conn_max) {
		why = "Too many connections, try again later";
		reason = MET_REFUSED_TOTAL;
	} else if (!trusted && *pp != NULL &&
	    (*pp)->n >= lim->conn_per_ip_max) {
		why = "Too many connections from your address, try again later";
		reason = MET_REFUSED_PER_IP;
	} else if (!trusted && net_rate_over(srv, lim, ip)) {
		why = "Too many connections from your address, slow down";
		reason = MET_REFUSED_RATE;
	} else {
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
	if (why != NULL)
		metrics_inc(MET_CONN_REFUSED, reason, 0);
	else
		metrics_inc(MET_CONN_ACCEPTED, 0, 0);
	return why;
}

void
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

void
net_admit_clear(struct net_server *srv)
{
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
}
