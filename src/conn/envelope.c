/*
 * conn/envelope.c: the envelope of a transaction: MAIL's sender check and
 * RCPT's routing (the client's recipients, and a filter's at the end of a
 * message), each possibly waiting for a table lookup; the one recipient of
 * a sync webhook.  Knows nothing of the message's content (message.c).
 */
#include "conn/conn_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chain/chain.h"
#include "config/config.h"
#include "log/log.h"
#include "queue/queue.h"
#include "route/route.h"
#include "smtp/smtp.h"
#include "spool/spool.h"

/*
 * The action of a transaction in sync mode (its one recipient goes to a
 * webhook with "sync"), or NULL.
 */
const struct config_action *
conn_sync_action(struct conn *c)
{
	struct spool_env *env = conn_tx_env(c->tx);
	const struct config_action *a;

	if (env->nrcpts != 1 || strcmp(env->rcpts[0].action,
	    config_action_kind_name(CONFIG_ACTION_WEBHOOK)) != 0 ||
	    env->rcpts[0].arg == NULL)
		return NULL;
	a = config_action_find(conn_cfg(c), env->rcpts[0].arg);
	return a != NULL && a->hook != NULL && a->hook->sync ? a : NULL;
}

/*
 * A sync webhook answers for one recipient alone: a second recipient,
 * either way round (or an alias that reaches it and more), waits for a
 * transaction of its own (RFC 5321 4.5.3.1.10: the client sends it again
 * later).  The first recipient is always taken: an alias that reaches a
 * sync webhook and more is queued whole, its webhook member posted the
 * usual way, since no transaction could ever bring it alone.  0, or -1
 * with *r.
 */
static int
conn_sync_rcpt(struct conn *c, const struct route_result *res,
    const char *safe, struct smtp_reply *r)
{
	bool sync = false;

	if (conn_tx_env(c->tx)->nrcpts == 0)
		return 0;
	for (size_t i = 0; i < res->n; i++)
		sync |= res->targets[i].action != NULL &&
		    res->targets[i].action->kind == CONFIG_ACTION_WEBHOOK &&
		    res->targets[i].action->hook->sync;
	if (!sync && conn_sync_action(c) == NULL)
		return 0;
	conn_set_reply(r, 452, "4.5.3 <%s>: Send this recipient in a new "
	    "transaction (the other one is answered at once)", safe);
	return -1;
}

/*
 * rcpt is postmaster@ our host name, what "<Postmaster>" stands for
 * (RFC 5321 4.1.1.3).
 */
static bool
conn_is_postmaster(const struct conn *c, const char *rcpt)
{
	static const char pm[] = "postmaster@";

	return strncasecmp(rcpt, pm, sizeof(pm) - 1) == 0 &&
	    strcasecmp(rcpt + sizeof(pm) - 1, conn_cfg(c)->hostname) == 0;
}

/*
 * Log each alias member of rcpt (safe: its log form) that no rule or
 * mailbox takes, and why: at warn, since only the configuration can fix it.
 */
static void
conn_log_unroutable(const struct conn *c, const char *safe,
    const struct route_result *res)
{
	char member[600], why[300];

	for (size_t i = 0; i < res->n; i++) {
		const struct route_target *t = &res->targets[i];
		if (t->action != NULL)
			continue;
		log_safe_word_into(member, sizeof(member), t->rcpt,
		    strlen(t->rcpt));
		log_safe_into(why, sizeof(why), t->arg, strlen(t->arg));
		log_event(LOG_LVL_WARN, "route-error", c->sid, NULL,
		    "rcpt=<%s> member=<%s> why=\"%s\"", safe, member, why);
	}
}

/* The reply for a routing answer that is not ROUTE_OK; always a refusal. */
static enum smtp_verdict
conn_rcpt_refused(struct conn *c, const char *safe, enum conn_rcpt_from from,
    const struct route_result *res, struct smtp_reply *r)
{
	char why[300];

	/* What the configuration or a backend must fix: the log says why. */
	if (res->status == ROUTE_NO_MEMBER || res->status == ROUTE_BAD_ALIAS ||
	    res->status == ROUTE_BAD_MAILDIR || res->status == ROUTE_TEMPFAIL ||
	    res->status == ROUTE_LOOP) {
		log_event(LOG_LVL_WARN, "route-error", c->sid, NULL,
		    "rcpt=<%s> why=\"%s\"", safe, log_safe_into(why,
		    sizeof(why), res->why, strlen(res->why)));
		conn_log_unroutable(c, safe, res);
	}
	switch (res->status) {
	case ROUTE_OK:
		break;
	case ROUTE_NO_USER:
		conn_set_reply(r, 550, "5.1.1 <%s>: Recipient address "
		    "rejected: User unknown", safe);
		return SMTP_REJECT;
	case ROUTE_NO_RELAY:
	case ROUTE_SENDER_AUTH:
	case ROUTE_SENDER_NOT_OWNED:
		conn_set_reply(r, 550, "5.7.1 <%s>: Relay access denied", safe);
		if (c->cs != NULL && from != CONN_RCPT_FILTER)
			chain_session_failed(c->cs, CHAIN_FAILED_RELAY);
		return SMTP_REJECT;
	case ROUTE_NO_MEMBER:
		/* Our own address: not a relay attempt, whatever its members. */
		conn_set_reply(r, 550, "5.1.1 <%s>: Recipient address "
		    "rejected: No member of this alias can be delivered", safe);
		return SMTP_REJECT;
	case ROUTE_BAD_ALIAS:
		/* RFC 3463 X.3.5: ours to fix; the client tries again. */
		conn_set_reply(r, 451, "4.3.5 <%s>: Alias misconfigured, try "
		    "again later", safe);
		return SMTP_REJECT;
	case ROUTE_BAD_MAILDIR:
		conn_set_reply(r, 451, "4.3.5 <%s>: Mailbox misconfigured, try "
		    "again later", safe);
		return SMTP_REJECT;
	case ROUTE_TEMPFAIL:
		conn_set_reply(r, 451, "4.3.0 <%s>: Temporary lookup failure, "
		    "try again later", safe);
		return SMTP_REJECT;
	case ROUTE_LOOP:
		/* RFC 3463 X.4.6: a routing loop; the admin can fix it. */
		conn_set_reply(r, 451, "4.4.6 <%s>: Alias loop or nesting too "
		    "deep", safe);
		return SMTP_REJECT;
	case ROUTE_TOO_MANY:
		conn_set_reply(r, 452, "4.5.3 <%s>: Too many alias targets",
		    safe);
		return SMTP_REJECT;
	}
	return SMTP_REJECT;
}

/* The routing answer for rcpt: its targets into the envelope, or a reply. */
static enum smtp_verdict
conn_rcpt_result(struct conn *c, const char *rcpt, enum conn_rcpt_from from,
    const struct route_result *res, struct smtp_reply *r)
{
	char safe[600];

	log_safe_word_into(safe, sizeof(safe), rcpt, strlen(rcpt));
	if ((res->status == ROUTE_NO_USER || res->status == ROUTE_NO_RELAY) &&
	    conn_is_postmaster(c, rcpt)) {
		/*
		 * RFC 5321 4.5.1 wants this one accepted: not an unknown user
		 * or a relay attempt, but a gap in our configuration.
		 */
		log_event(LOG_LVL_WARN, "route-error", c->sid, NULL,
		    "rcpt=<%s> why=\"no rule routes the hostname's "
		    "postmaster\"", safe);
		conn_set_reply(r, 550, "5.3.5 <%s>: The postmaster of this "
		    "host is not routed here", safe);
		return SMTP_REJECT;
	}
	if (res->status != ROUTE_OK)
		return conn_rcpt_refused(c, safe, from, res, r);
	if (conn_sync_rcpt(c, res, safe, r) == -1)
		return SMTP_REJECT;
	/* A member no rule takes goes in too: the queue bounces it. */
	conn_log_unroutable(c, safe, res);
	for (size_t i = 0; i < res->n; i++) {
		const struct route_target *t = &res->targets[i];
		char to[600];
		/* Remote kinds carry the action's name: the queue finds its
		 * sender. */
		(void)queue_env_add_target(conn_tx_env(c->tx), t->rcpt, t->kind,
		    t->arg);
		if (t->action == NULL)
			continue;
		log_safe_word_into(to, sizeof(to), t->rcpt, strlen(t->rcpt));
		if (strcmp(to, safe) == 0)
			log_event(LOG_LVL_INFO, "rcpt", c->sid, NULL,
			    "to=<%s> action=%s", safe, t->action->name);
		else
			log_event(LOG_LVL_INFO, "rcpt", c->sid, NULL,
			    "to=<%s> alias=<%s> action=%s", safe, to,
			    t->action->name);
	}
	c->nrcpts++;
	if (c->cs != NULL)
		chain_session_rcpt_accepted(c->cs, rcpt);
	return SMTP_OK;
}

static void
conn_rcpt_done_cb(void *arg, struct route_result *res)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };
	enum smtp_verdict v;

	c->route_q = NULL;
	v = conn_rcpt_result(c, c->wait_arg != NULL ? c->wait_arg : "",
	    CONN_RCPT_CLIENT, res, &r);
	conn_resume(c, v, &r);
}

static struct table_loop *
conn_tables(const struct conn *c)
{
	return c->chain_loop != NULL ? chain_loop_tables(c->chain_loop) :
	    NULL;
}

enum smtp_verdict
conn_stage_rcpt(struct conn *c, const char *rcpt, enum conn_rcpt_from from,
    struct smtp_reply *r)
{
	char safe[600];
	struct route_result res;
	enum smtp_verdict v;

	log_safe_word_into(safe, sizeof(safe), rcpt, strlen(rcpt));
	if (c->nrcpts >= conn_cfg(c)->limits.rcpts_per_session_max) {
		conn_set_reply(r, 452, "4.5.3 Too many recipients in this "
		    "session");
		return SMTP_REJECT;
	}
	if (from == CONN_RCPT_CLIENT_NO_DELIVER) {
		/* verify's soft-invalid mode, nomail after-data: accepted,
		 * never delivered. */
		log_event(LOG_LVL_INFO, "rcpt", c->sid, NULL, "to=<%s> "
		    "action=none (no delivery)", safe);
		return SMTP_OK;
	}
	struct route_client cl = { .ip = c->ip,
	    .auth_user = smtp_session_auth_user(c->smtp) };
	if (route_resolve_start(c->rt->router, conn_tables(c), &cl,
	    smtp_session_sender(c->smtp), rcpt, conn_rcpt_done_cb, c, &res,
	    &c->route_q) == 1) {
		if (from == CONN_RCPT_FILTER) {
			/* A filter adds its recipients at the end of data,
			 * where nothing may wait for a backend table. */
			route_resolve_cancel(&c->route_q);
			conn_set_reply(r, 451, "4.3.0 <%s>: lookup would wait",
			    safe);
			return SMTP_REJECT;
		}
		char *keep = xstrdup(rcpt);	/* rcpt may be wait_arg */
		free(c->wait_arg);
		c->wait_arg = keep;
		return SMTP_PENDING;
	}
	v = conn_rcpt_result(c, rcpt, from, &res, r);
	route_result_clear(&res);
	return v;
}

/* The sender check's answer (route_sender_start). */
static enum smtp_verdict
conn_mail_checked(struct conn *c, const struct smtp_event *ev,
    const struct route_result *res, struct smtp_reply *r)
{
	char safe[600], why[300];

	log_safe_word_into(safe, sizeof(safe), ev->arg, strlen(ev->arg));
	switch (res->status) {
	case ROUTE_OK:
		return conn_mail_begin(c, ev);
	case ROUTE_TEMPFAIL:
		conn_set_reply(r, 451, "4.3.0 Temporary lookup failure, try "
		    "again later");
		break;
	case ROUTE_SENDER_NOT_OWNED:
		conn_set_reply(r, 553, "5.7.1 <%s>: Sender address not owned "
		    "by the authenticated user", safe);
		break;
	default:
		conn_set_reply(r, 553, "5.7.1 <%s>: Sender address needs "
		    "authentication", safe);
		break;
	}
	log_event(LOG_LVL_INFO, "reject", c->sid, NULL, "stage=mail code=%d "
	    "from=<%s> why=\"%s\"", r->code, safe, log_safe_into(why,
	    sizeof(why), res->why, strlen(res->why)));
	return SMTP_REJECT;
}

static void
conn_mail_done_cb(void *arg, struct route_result *res)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };
	enum smtp_verdict v;

	c->route_q = NULL;
	v = conn_mail_checked(c, &c->wait_ev, res, &r);
	conn_resume(c, v, &r);
}

enum smtp_verdict
conn_stage_mail(struct conn *c, const struct smtp_event *ev,
    struct smtp_reply *r)
{
	const struct config *cfg = conn_cfg(c);
	struct route_result res;
	enum smtp_verdict v;

	if (c->nmsgs >= cfg->limits.msgs_per_session_max) {
		conn_set_reply(r, 452, "4.5.3 Too many messages in this "
		    "session");
		return SMTP_REJECT;
	}
	if (!c->lcfg->sender_auth && cfg->sender_auth == NULL &&
	    cfg->sender_login == NULL)
		return conn_mail_begin(c, ev);
	struct route_client cl = { .ip = c->ip,
	    .auth_user = smtp_session_auth_user(c->smtp) };
	if (route_sender_start(c->rt->router, conn_tables(c), &cl,
	    c->lcfg->sender_auth, ev->arg, conn_mail_done_cb, c, &res,
	    &c->route_q) == 1) {
		conn_keep_event(c, ev);
		return SMTP_PENDING;
	}
	v = conn_mail_checked(c, ev, &res, r);
	route_result_clear(&res);
	return v;
}
