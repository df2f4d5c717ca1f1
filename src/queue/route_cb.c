/*
 * queue/route_cb.c: the queue's routing callback over a router, so the
 * server and `postern send` route DSNs and local submissions exactly as
 * SMTP recipients are routed.  Knows nothing of connections.
 */
#include "queue/queue.h"

#include <stdlib.h>

#include "config/config.h"
#include "deliver/deliver.h"
#include "route/route.h"
#include "util/util.h"

int
queue_route_router(void *arg, const char *sender, const char *rcpt,
    char **action_out, char **arg_out, const char **err_out)
{
	struct router *r = arg;
	const struct config_action *a;
	const struct deliver_kind *k;
	enum route_miss miss;

	*action_out = *arg_out = NULL;
	if ((a = route_find(r, sender, rcpt, &miss)) == NULL) {
		*err_out = miss == ROUTE_UNKNOWN_USER ?
		    "550 5.1.1 Recipient address rejected: User unknown" :
		    "550 5.7.1 Relay access denied";
		return -1;
	}
	if ((k = deliver_kind_of(a->kind)) == NULL) {
		*err_out = "451 4.3.5 action kind not supported by the queue";
		return -1;
	}
	/*
	 * The spool names the kind and keeps its arg: a maildir's folder for
	 * rcpt, the name of an action with a runtime (the server's
	 * queue_deliver_fn finds it).
	 */
	if (k->spool_arg(a, rcpt, arg_out, err_out) == -1)
		return -1;
	*action_out = xstrdup(deliver_kind_name(k));
	return 0;
}
