/*
 * queue/route_cb.c: the queue's routing callback over a router, so the
 * server and `postern send` route DSNs and local submissions exactly as
 * SMTP recipients are routed (aliases, the rules, the action's lookups),
 * and the one rule for which recipients of a message are the same place.
 * Knows nothing of connections.
 */
#include "queue/queue.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "route/route.h"
#include "spool/spool.h"
#include "util/util.h"

static bool
queue_str_eq(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

bool
queue_env_add_target(struct spool_env *env, const char *addr,
    const char *kind, const char *arg)
{
	/* A Maildir is one place whoever it is for; the rest are per address. */
	bool by_folder = strcmp(kind, "maildir") == 0 ||
	    strcmp(kind, "maildir-owner") == 0;

	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (strcmp(r->action, kind) == 0 && queue_str_eq(r->arg, arg) &&
		    (by_folder || strcasecmp(r->addr, addr) == 0))
			return false;
	}
	spool_env_add_rcpt(env, addr, kind, arg);
	return true;
}

/* The reply for a recipient route_resolve() found no place for. */
static const char *
queue_route_why(enum route_status st)
{
	switch (st) {
	case ROUTE_NO_USER:
		return "550 5.1.1 Recipient address rejected: User unknown";
	case ROUTE_NO_RELAY:
		return "550 5.7.1 Relay access denied";
	case ROUTE_LOOP:
		return "451 4.4.6 Alias loop or nesting too deep";
	case ROUTE_TOO_MANY:
		return "452 4.5.3 Too many alias targets";
	case ROUTE_BAD_ALIAS:
		return "451 4.3.5 Alias misconfigured, try again later";
	case ROUTE_BAD_MAILDIR:
		return "451 4.3.5 Mailbox misconfigured, try again later";
	case ROUTE_NO_MEMBER:
		return "550 5.1.1 No member of this alias can be delivered";
	default:
		return "451 4.3.0 Temporary lookup failure, try again later";
	}
}

int
queue_route_router(void *arg, const char *sender, const char *rcpt,
    struct spool_env *env, const char **err_out)
{
	struct router *r = arg;
	struct route_result res;

	route_resolve(r, NULL, sender, rcpt, &res);
	if (res.status != ROUTE_OK) {
		*err_out = queue_route_why(res.status);
		route_result_clear(&res);
		return -1;
	}
	for (size_t i = 0; i < res.n; i++)
		(void)queue_env_add_target(env, res.targets[i].rcpt,
		    res.targets[i].kind, res.targets[i].arg);
	route_result_clear(&res);
	return 0;
}
