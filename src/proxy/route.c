/*
 * proxy/route.c: which upstream a request goes to: the one the first
 * recipient's domain names (proxy-rcpt), the one the client's TLS name
 * names (proxy-sni), or the listener's.  Tables answer on the loop; a
 * name no upstream has, or a table that does not answer, is a temporary
 * failure.
 */
#include "proxy/proxy_private.h"

#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "log/log.h"
#include "table/table.h"

/* A table could not say: the client tries again later. */
static void
ps_route_failed(struct proxy_session *ps, const char *why)
{
	log_event(LOG_LVL_WARN, "proxy-route", ps->info.sid, NULL,
	    "why=\"%s\"", why);
	if (ps->cmd == PROXY_CMD_RCPT)
		ps_answer_own(ps, SMTP_REJECT, 451, "4.3.0 <%s>: Temporary "
		    "lookup failure, try again later", ps->arg != NULL ?
		    ps->arg : "");
	else
		ps_answer_own(ps, SMTP_CLOSE, 421, "4.3.0 %s Service "
		    "temporarily unavailable", ps->info.hostname);
}

/* A lookup's answer: true when it set ps->target. */
static bool
ps_route_answer(struct proxy_session *ps, bool by_sni, int rc,
    const struct table_values *vals)
{
	const struct proxy_upstream *up = ps->def;
	char why[300];

	if (rc == TABLE_ERROR) {
		ps_route_failed(ps, "routing table did not answer");
		return false;
	}
	if (rc == TABLE_FOUND) {
		const char *name = vals->n > 0 ? vals->v[0] : "";
		if ((up = proxy_set_find(ps->info.set, name)) == NULL) {
			char safe[200];
			snprintf(why, sizeof(why), "the routing table names %s, "
			    "which is no upstream", log_safe_into(safe,
			    sizeof(safe), name, strlen(name)));
			ps_route_failed(ps, why);
			return false;
		}
	}
	if (by_sni)
		ps->sni_up = up;
	ps->target = up;
	return true;
}

static void
ps_lookup_cb(void *arg, int rc, const struct table_values *vals)
{
	struct proxy_session *ps = arg;

	ps->lookup = NULL;
	if (ps_route_answer(ps, ps->cmd != PROXY_CMD_RCPT ||
	    ps->info.by_rcpt == NULL, rc, vals))
		ps_advance(ps);
}

bool
ps_route(struct proxy_session *ps)
{
	struct table *t = NULL;
	const char *key = NULL;
	struct table_values vals = { 0 };
	bool by_sni = false;

	if (ps->link != NULL && ps->cmd != PROXY_CMD_HELO &&
	    (ps->cmd != PROXY_CMD_RCPT || ps->info.by_rcpt == NULL)) {
		ps->target = ps->up;	/* the transaction's, or the EHLO's */
		return true;
	}
	if (ps->cmd == PROXY_CMD_RCPT && ps->info.by_rcpt != NULL) {
		const char *at = ps->arg != NULL ? strrchr(ps->arg, '@') :
		    NULL;
		if (at != NULL && at[1] != '\0') {
			t = ps->info.by_rcpt;
			key = at + 1;
		}
	} else if (ps->info.by_sni != NULL && ps->client_sni != NULL &&
	    ps->client_sni[0] != '\0') {
		if (ps->sni_up != NULL) {
			ps->target = ps->sni_up;
			return true;
		}
		t = ps->info.by_sni;
		key = ps->client_sni;
		by_sni = true;
	}
	if (t == NULL) {
		ps->target = ps->def;
		return true;
	}
	int rc = table_lookup_start(t, ps->info.tables, key, ps_lookup_cb, ps,
	    &vals, &ps->lookup);
	if (rc == TABLE_PENDING)
		return false;
	bool ok = ps_route_answer(ps, by_sni, rc, &vals);
	table_values_clear(&vals);
	return ok;
}
