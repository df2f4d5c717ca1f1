/*
 * proxy/route.c: which upstream a request goes to: the one the first
 * recipient's domain names, in any of its spellings (proxy-rcpt), the one
 * the client's TLS name names (proxy-sni), or the listener's.  Tables
 * answer on the loop; a name no upstream has, or a table that does not
 * answer, is a temporary failure.
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
	bool by_sni = ps->cmd != PROXY_CMD_RCPT || ps->info.by_rcpt == NULL;

	ps->lookup = NULL;
	/* Missing in this spelling: ps_route asks for the next one. */
	if ((!by_sni && rc == TABLE_MISSING) ||
	    ps_route_answer(ps, by_sni, rc, vals))
		ps_advance(ps);
}

/*
 * proxy-rcpt: the recipient's domain dom looked up as the client wrote it,
 * then, while missing, in its other spellings (util_idna_spellings: the
 * lower-case U-label, the A-label), so a key names the domain either way,
 * as a match rule's does.  ps->spelling is the next one to ask for: the
 * answer of a pending lookup calls ps_route again, which goes on there.
 */
static bool
ps_route_rcpt(struct proxy_session *ps, const char *dom)
{
	struct table_values vals = { 0 };
	char *sp[2];
	size_t n = util_idna_spellings(dom, sp);
	int rc = TABLE_MISSING;

	while (rc == TABLE_MISSING && ps->spelling <= n) {
		const char *key = ps->spelling == 0 ? dom :
		    sp[ps->spelling - 1];
		ps->spelling++;
		rc = table_lookup_start(ps->info.by_rcpt, ps->info.tables, key,
		    ps_lookup_cb, ps, &vals, &ps->lookup);
	}
	for (size_t i = 0; i < n; i++)
		free(sp[i]);
	if (rc == TABLE_PENDING)
		return false;
	bool ok = ps_route_answer(ps, false, rc, &vals);
	table_values_clear(&vals);
	return ok;
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
		if (at != NULL && at[1] != '\0')
			return ps_route_rcpt(ps, at + 1);
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
