/*
 * chain/loop.c: a loop's chain state (the state store, the DNS resolver,
 * table answers), shared by the sessions of that loop and replaced when a
 * reload names another store or resolver; deferred calls on a loop.
 */
#include "chain/chain.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain_private.h"
#include "chain/session.h"
#include "config/config.h"
#include "store/store.h"
#include "table/table.h"
#include "util/util.h"

#define CHAIN_CALL_TIMEOUT_MS	(60u * 1000)

struct chain_deferred {
	void	(*fn)(void *);
	void	*arg;
};

static void
chain_deferred_cb(evutil_socket_t fd, short what, void *arg)
{
	struct chain_deferred d = *(struct chain_deferred *)arg;

	(void)fd;
	(void)what;
	free(arg);
	d.fn(d.arg);
}

void
chain_defer(struct event_base *base, void (*fn)(void *), void *arg)
{
	struct chain_deferred *d = xmalloc(sizeof(*d));
	struct timeval zero = { 0, 0 };

	d->fn = fn;
	d->arg = arg;
	if (event_base_once(base, -1, EV_TIMEOUT, chain_deferred_cb, d,
	    &zero) == -1)
		fatal("event_base_once failed");
}

/* ----- per loop ----- */

/* The store spec cfg (or opts) names, with its default; owned. */
static char *
chain_loop_spec(const struct config *cfg, const struct chain_loop_opts *opts)
{
	if (opts != NULL && opts->store != NULL)
		return xstrdup(opts->store);
	if (cfg != NULL && cfg->chain_store != NULL)
		return xstrdup(cfg->chain_store);
	if (cfg != NULL)
		return xasprintf("sqlite:%s/state.db", cfg->spool);
	return xstrdup("memory:");
}

struct chain_loop *
chain_loop_new(struct event_base *base, const struct config *cfg,
    const struct chain_loop_opts *opts, const char **err_out)
{
	struct chain_loop *l = xcalloc(1, sizeof(*l));
	const char *resolver = opts != NULL && opts->resolver != NULL ?
	    opts->resolver : cfg != NULL ? cfg->chain_resolver : NULL;

	l->refs = 1;
	l->base = base;
	l->call_timeout_ms = opts != NULL && opts->call_timeout_ms > 0 ?
	    opts->call_timeout_ms : CHAIN_CALL_TIMEOUT_MS;
	l->store_spec = chain_loop_spec(cfg, opts);
	l->resolver = resolver != NULL ? xstrdup(resolver) : NULL;
	l->dns = evdns_base_new(base, resolver == NULL ?
	    EVDNS_BASE_INITIALIZE_NAMESERVERS : 0);
	if (l->dns == NULL) {
		*err_out = "cannot set up the DNS resolver";
		goto fail;
	}
	if (resolver != NULL && evdns_base_nameserver_ip_add(l->dns,
	    resolver) != 0) {
		*err_out = "bad resolver address";
		goto fail;
	}
	if ((l->store = store_open(base, l->store_spec, err_out)) == NULL)
		goto fail;
	l->tables = table_loop_new(base);
	return l;
fail:
	chain_loop_free(&l);
	return NULL;
}

void
chain_loop_free(struct chain_loop **lp)
{
	struct chain_loop *l = *lp;

	if (l == NULL)
		return;
	table_loop_free(&l->tables);
	store_close(&l->store);
	if (l->dns != NULL)
		evdns_base_free(l->dns, 1);
	free(l->store_spec);
	free(l->resolver);
	free(l);
	*lp = NULL;
}

struct chain_loop *
chain_loop_ref(struct chain_loop *l)
{
	l->refs++;
	return l;
}

static void
chain_loop_free_cb(void *arg)
{
	struct chain_loop *l = arg;

	chain_loop_free(&l);
}

void
chain_loop_unref(struct chain_loop **lp)
{
	struct chain_loop *l = *lp;

	if (l == NULL)
		return;
	*lp = NULL;
	if (--l->refs == 0)
		chain_defer(l->base, chain_loop_free_cb, l);
}

bool
chain_loop_is_for(const struct chain_loop *l, const struct config *cfg)
{
	char *spec = chain_loop_spec(cfg, NULL);
	bool same = strcmp(spec, l->store_spec) == 0 &&
	    (l->resolver == NULL ? cfg->chain_resolver == NULL :
	    cfg->chain_resolver != NULL &&
	    strcmp(l->resolver, cfg->chain_resolver) == 0);

	free(spec);
	return same;
}

struct store *
chain_loop_store(struct chain_loop *l)
{
	return l->store;
}

struct table_loop *
chain_loop_tables(struct chain_loop *l)
{
	return l->tables;
}
