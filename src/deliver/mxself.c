/*
 * deliver/mxself.c: the addresses and ports at which this server takes
 * mail, so that mx.c can tell an MX host that is ourselves (RFC 5321
 * 5.1).  Made from the configuration's "listen" lines; knows nothing of
 * the listening sockets themselves.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config/config.h"
#include "util/util.h"

struct self_addr {
	int		 af;
	unsigned char	 ip[16];
	int		 port;		/* a listener's; 0 for a local one */
};

struct deliver_self {
	struct self_addr *listen;	/* owned: the listeners */
	size_t		 nlisten;
	struct self_addr *local;	/* owned: the host's addresses, for
					   wildcard listeners */
	size_t		 nlocal;
};

static bool
self_parse(const char *addr, struct self_addr *out)
{
	memset(out, 0, sizeof(*out));
	out->af = strchr(addr, ':') != NULL ? AF_INET6 : AF_INET;
	return inet_pton(out->af, addr, out->ip) == 1;
}

static size_t
self_len(int af)
{
	return af == AF_INET ? 4 : 16;
}

static bool
self_is_any(const struct self_addr *a)
{
	static const unsigned char zero[16];

	return memcmp(a->ip, zero, self_len(a->af)) == 0;
}

static void
self_push(struct self_addr **v, size_t *n, const struct self_addr *a)
{
	*v = xreallocarray(*v, *n + 1, sizeof(**v));
	(*v)[(*n)++] = *a;
}

/* The host's own addresses (getifaddrs), for wildcard listeners. */
static void
self_locals(struct deliver_self *s)
{
	struct ifaddrs *ifa = NULL;

	if (getifaddrs(&ifa) == -1)
		return;		/* loopback is still known: self_is_local */
	for (struct ifaddrs *i = ifa; i != NULL; i = i->ifa_next) {
		struct self_addr a = { 0 };
		if (i->ifa_addr == NULL || (i->ifa_addr->sa_family != AF_INET &&
		    i->ifa_addr->sa_family != AF_INET6))
			continue;
		a.af = i->ifa_addr->sa_family;
		if (a.af == AF_INET)
			memcpy(a.ip, &((struct sockaddr_in *)(void *)
			    i->ifa_addr)->sin_addr, 4);
		else
			memcpy(a.ip, &((struct sockaddr_in6 *)(void *)
			    i->ifa_addr)->sin6_addr, 16);
		self_push(&s->local, &s->nlocal, &a);
	}
	freeifaddrs(ifa);
}

struct deliver_self *
deliver_self_new(const struct config *c)
{
	struct deliver_self *s;
	bool any = false;

	if (c == NULL)
		return NULL;
	s = xcalloc(1, sizeof(*s));
	for (size_t i = 0; i < c->nlistens; i++) {
		const struct config_listen *l = &c->listens[i];
		struct self_addr a;
		/* A proxy listener hands mail on, to a server of its own. */
		if (l->proxy != NULL || l->proxy_sni != NULL ||
		    l->proxy_rcpt != NULL || !self_parse(l->addr, &a))
			continue;
		a.port = l->port;
		any = any || self_is_any(&a);
		self_push(&s->listen, &s->nlisten, &a);
	}
	if (any)
		self_locals(s);
	return s;
}

void
deliver_self_free(struct deliver_self **sp)
{
	struct deliver_self *s = *sp;

	if (s == NULL)
		return;
	free(s->listen);
	free(s->local);
	free(s);
	*sp = NULL;
}

/* Whether a is an address of this host: loopback, or an interface's. */
static bool
self_is_local(const struct deliver_self *s, const struct self_addr *a)
{
	static const unsigned char lo6[16] = { [15] = 1 };

	if ((a->af == AF_INET && a->ip[0] == 127) || (a->af == AF_INET6 &&
	    memcmp(a->ip, lo6, 16) == 0))
		return true;
	for (size_t i = 0; i < s->nlocal; i++)
		if (s->local[i].af == a->af && memcmp(s->local[i].ip, a->ip,
		    self_len(a->af)) == 0)
			return true;
	return false;
}

bool
deliver_self_has(const struct deliver_self *s, const char *addr, int port)
{
	struct self_addr a;

	if (s == NULL || !self_parse(addr, &a))
		return false;
	for (size_t i = 0; i < s->nlisten; i++) {
		const struct self_addr *l = &s->listen[i];
		if (l->port != port || l->af != a.af)
			continue;
		if (memcmp(l->ip, a.ip, self_len(a.af)) == 0 ||
		    (self_is_any(l) && self_is_local(s, &a)))
			return true;
	}
	return false;
}
