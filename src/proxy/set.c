/*
 * proxy/set.c: the upstreams of a configuration, ready to connect to: the
 * host resolved (when the configuration is loaded: start-up and reload),
 * the TLS client context, the timeouts with their defaults.  Read-only
 * once made, shared by every loop.
 */
#include "proxy/proxy_private.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "tls/tls.h"

struct proxy_set {
	struct proxy_upstream	*ups;		/* owned array */
	size_t			 n;
};

/* RFC 5321 4.5.3.2 (connect: ours), in the order of enum proxy_to. */
static const uint64_t proxy_to_default[PROXY_TO_COUNT] = { 30000, 300000,
	300000, 120000, 180000, 600000 };

static int
proxy_set_resolve(struct proxy_upstream *u, const char **err_out)
{
	const struct config_relay *r = &u->cfg->relay;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_NUMERICSERV }, *res, *ai;
	char port[8];
	int rc;

	snprintf(port, sizeof(port), "%d", r->port);
	if ((rc = getaddrinfo(r->host, port, &hints, &res)) != 0) {
		*err_out = util_err("upstream %s: cannot resolve %s: %s",
		    u->cfg->name, r->host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof(struct sockaddr_storage))
			continue;
		u->addrs = xreallocarray(u->addrs, u->naddrs + 1,
		    sizeof(*u->addrs));
		u->addrlens = xreallocarray(u->addrlens, u->naddrs + 1,
		    sizeof(*u->addrlens));
		memcpy(&u->addrs[u->naddrs], ai->ai_addr, ai->ai_addrlen);
		u->addrlens[u->naddrs++] = ai->ai_addrlen;
	}
	freeaddrinfo(res);
	return 0;
}

static int
proxy_set_one(struct proxy_upstream *u, const struct config_upstream *cu,
    const struct config *cfg, const char **err_out)
{
	const char *err;

	u->cfg = cu;
	for (size_t k = 0; k < PROXY_TO_COUNT; k++)
		u->to_ms[k] = cu->relay.timeouts_ms[k] != 0 ?
		    cu->relay.timeouts_ms[k] : proxy_to_default[k];
	/*
	 * smtp:// uses STARTTLS when offered, unauthenticated (RFC 7435);
	 * smtp+starttls:// and smtp+tls:// verify unless told not to.
	 */
	struct tls_client_opts to = {
		.no_verify = cu->relay.no_verify ||
		    cu->relay.tls == CONFIG_RELAY_PLAIN,
		.ca_file = cu->relay.ca_file,
		.min_version = cfg->tls_min_version,
	};
	if ((u->tls = tls_client_new(&to, &err)) == NULL) {
		*err_out = util_err("upstream %s: %s", cu->name, err);
		return -1;
	}
	return proxy_set_resolve(u, err_out);
}

struct proxy_set *
proxy_set_new(const struct config *cfg, const char **err_out)
{
	struct proxy_set *s = xcalloc(1, sizeof(*s));

	s->ups = xcalloc(cfg->nupstreams + 1, sizeof(*s->ups));
	for (size_t i = 0; i < cfg->nupstreams; i++) {
		s->n++;
		if (proxy_set_one(&s->ups[i], cfg->upstreams[i], cfg,
		    err_out) == -1) {
			*err_out = util_err("%s:%d: %s", cfg->path,
			    cfg->upstreams[i]->line, *err_out);
			proxy_set_free(&s);
			return NULL;
		}
	}
	return s;
}

void
proxy_set_free(struct proxy_set **sp)
{
	struct proxy_set *s = *sp;

	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n; i++) {
		free(s->ups[i].addrs);
		free(s->ups[i].addrlens);
		tls_client_free(&s->ups[i].tls);
	}
	free(s->ups);
	free(s);
	*sp = NULL;
}

const struct proxy_upstream *
proxy_set_find(const struct proxy_set *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->ups[i].cfg->name, name) == 0)
			return &s->ups[i];
	return NULL;
}
