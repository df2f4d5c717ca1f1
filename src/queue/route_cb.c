/*
 * queue/route_cb.c: the queue's routing callback over a router, so the
 * server and `postern send` route DSNs and local submissions exactly as
 * SMTP recipients are routed.  Knows nothing of connections.
 */
#include "queue/queue.h"

#include <stdlib.h>

#include "config/config.h"
#include "route/route.h"
#include "util/util.h"

const char *
queue_remote_kind(int kind)
{
	switch (kind) {
	case CONFIG_ACTION_RELAY:
		return "relay";
	case CONFIG_ACTION_MX:
		return "mx";
	case CONFIG_ACTION_FORWARD:
		return "forward";
	case CONFIG_ACTION_RELAY_BY_SENDER:
		return "relay-by-sender";
	default:
		return NULL;
	}
}

int
queue_route_router(void *arg, const char *sender, const char *rcpt,
    char **action_out, char **arg_out, const char **err_out)
{
	struct router *r = arg;
	const struct config_action *a;
	enum route_miss miss;

	*action_out = *arg_out = NULL;
	if ((a = route_find(r, sender, rcpt, &miss)) == NULL) {
		*err_out = miss == ROUTE_UNKNOWN_USER ?
		    "550 5.1.1 Recipient address rejected: User unknown" :
		    "550 5.7.1 Relay access denied";
		return -1;
	}
	switch (a->kind) {
	case CONFIG_ACTION_MAILDIR:
		if (route_expand(a->path, rcpt, arg_out, err_out) == -1)
			return -1;
		*action_out = xstrdup("maildir");
		return 0;
	case CONFIG_ACTION_DISCARD:
		*action_out = xstrdup("discard");
		return 0;
	case CONFIG_ACTION_RELAY:
	case CONFIG_ACTION_MX:
	case CONFIG_ACTION_FORWARD:
	case CONFIG_ACTION_RELAY_BY_SENDER:
		/*
		 * Remote kinds: the spool names the kind and the action, and
		 * the server's queue_deliver_fn finds its deliver_remote.
		 */
		*action_out = xstrdup(queue_remote_kind(a->kind));
		*arg_out = xstrdup(a->name);
		return 0;
	default:
		*err_out = "451 4.3.5 action kind not supported by the queue";
		return -1;
	}
}
