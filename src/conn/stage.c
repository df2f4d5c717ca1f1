/*
 * conn/stage.c: the single decision point of a connection: every SMTP stage
 * gets our own checks, then its chain, then our work (routing a recipient,
 * starting the spool file, applying a filter's edits, the commit).
 */
#include "conn/conn_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "chain/chain.h"
#include "config/config.h"
#include "queue/queue.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "route/route.h"
#include "table/table.h"
#include "smtp/smtp.h"
#include "spool/spool.h"

static enum smtp_verdict conn_eom_chain(struct conn *c, struct smtp_reply *r);
static enum smtp_verdict conn_eom_chain_file(struct conn *c,
	    struct smtp_reply *r);

/* ----- transaction plumbing ----- */

static void
conn_tx_committed_cb(void *arg, int rc, const char *err)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };

	if (rc == 0) {
		c->nmsgs++;
		if (c->cs != NULL)
			chain_session_message_accepted(c->cs);
		r.code = 250;
		util_snprintf(r.text, sizeof(r.text), "2.0.0 Ok: queued as %s",
		    conn_tx_env(c->tx)->qid);
		char note[64];
		int n = snprintf(note, sizeof(note), "accepted qid=%s",
		    conn_tx_env(c->tx)->qid);
		log_translog_line(c->translog, LOG_TL_NOTE, note, (size_t)n);
		smtp_session_resume(c->smtp, SMTP_OK, &r);
	} else {
		(void)err;	/* logged by tx.c with the qid */
		conn_tx_refusal(c->tx, &r);
		smtp_session_resume(c->smtp, SMTP_REJECT, &r);
	}
	if (c->ctx->shutting_down && !smtp_session_is_closing(c->smtp))
		smtp_session_close_with(c->smtp, 421,
		    "4.3.2 Service shutting down, closing channel");
	conn_process_input(c);
	conn_check_close(c);
}

/*
 * Sync mode: the web service's answer is DATA's reply: 2xx 250, a final
 * refusal 550, anything else (5xx, 408, 429, no answer in time) 451.
 * Nothing was queued either way.
 */
static void
conn_tx_synced_cb(void *arg, const struct deliver_rcpt_status *st)
{
	struct conn *c = arg;
	struct spool_env *env = conn_tx_env(c->tx);
	struct smtp_reply r = { 0 };
	char safe[300];

	log_event(st->result == DELIVER_OK ? LOG_LVL_INFO : LOG_LVL_WARN,
	    "sync-webhook", c->sid, env->qid, "rcpt=<%s> result=%s why=\"%s\"",
	    log_safe_into(safe, sizeof(safe), env->rcpts[0].addr,
	    strlen(env->rcpts[0].addr)), st->result == DELIVER_OK ?
	    "delivered" : st->result == DELIVER_PERMFAIL ? "refused" :
	    "deferred", st->text);
	if (st->result == DELIVER_OK) {
		c->nmsgs++;
		if (c->cs != NULL)
			chain_session_message_accepted(c->cs);
		r.code = 250;
		util_snprintf(r.text, sizeof(r.text), "2.0.0 Ok: delivered as "
		    "%s", env->qid);
	} else {
		r.code = st->result == DELIVER_PERMFAIL ? 550 : 451;
		util_strlcpy(r.text, st->text, sizeof(r.text));
	}
	smtp_session_resume(c->smtp, st->result == DELIVER_OK ? SMTP_OK :
	    SMTP_REJECT, &r);
	if (c->ctx->shutting_down && !smtp_session_is_closing(c->smtp))
		smtp_session_close_with(c->smtp, 421,
		    "4.3.2 Service shutting down, closing channel");
	conn_process_input(c);
	conn_check_close(c);
}

static void
conn_tx_drained_cb(void *arg)
{
	struct conn *c = arg;

	if (c->eom_flushing && conn_tx_flush(c->tx)) {
		struct smtp_reply r = { 0 };
		enum smtp_verdict v = SMTP_REJECT;
		c->eom_flushing = false;
		if (conn_tx_failed(c->tx))
			conn_tx_refusal(c->tx, &r);
		else
			v = conn_eom_chain_file(c, &r);
		if (v != SMTP_PENDING)
			smtp_session_resume(c->smtp, v, &r);
	}
	conn_process_input(c);
	conn_check_close(c);
}

static const struct conn_tx_ops conn_tx_ops = {
	.committed_cb = conn_tx_committed_cb,
	.drained_cb = conn_tx_drained_cb,
	.synced_cb = conn_tx_synced_cb,
};

/* ----- the stages ----- */

static void
conn_set_reply(struct smtp_reply *r, int code, const char *fmt, ...)
    UTIL_PRINTF(3, 4);

static void
conn_set_reply(struct smtp_reply *r, int code, const char *fmt, ...)
{
	va_list ap;

	r->code = code;
	va_start(ap, fmt);
	if (vsnprintf(r->text, sizeof(r->text), fmt, ap) < 0)
		r->text[0] = '\0';
	va_end(ap);
}

/* Who names a recipient: the client (perhaps never to deliver), a filter. */
enum conn_rcpt_from { RCPT_CLIENT, RCPT_CLIENT_NO_DELIVER, RCPT_FILTER };

/*
 * The action of a transaction in sync mode (its one recipient goes to a
 * webhook with "sync"), or NULL.
 */
static const struct config_action *
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
 * later).  0, or -1 with *r.
 */
static int
conn_sync_rcpt(struct conn *c, const struct route_result *res,
    const char *safe, struct smtp_reply *r)
{
	bool sync = false;

	for (size_t i = 0; i < res->n; i++)
		sync |= res->targets[i].action->kind == CONFIG_ACTION_WEBHOOK &&
		    res->targets[i].action->hook->sync;
	if (conn_tx_env(c->tx)->nrcpts == 0 ? !sync || res->n == 1 :
	    !sync && conn_sync_action(c) == NULL)
		return 0;
	conn_set_reply(r, 452, "4.5.3 <%s>: Send this recipient in a new "
	    "transaction (the other one is answered at once)", safe);
	return -1;
}

/* The routing answer for rcpt: its targets into the envelope, or a reply. */
static enum smtp_verdict
conn_rcpt_result(struct conn *c, const char *rcpt, enum conn_rcpt_from from,
    const struct route_result *res, struct smtp_reply *r)
{
	char safe[600], why[300];

	log_safe_word_into(safe, sizeof(safe), rcpt, strlen(rcpt));
	if (res->status != ROUTE_OK)
		log_safe_into(why, sizeof(why), res->why, strlen(res->why));
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
		if (c->cs != NULL && from != RCPT_FILTER)
			chain_session_failed(c->cs, CHAIN_FAILED_RELAY);
		return SMTP_REJECT;
	case ROUTE_TEMPFAIL:
		log_event(LOG_LVL_WARN, "route-error", c->sid, NULL,
		    "rcpt=<%s> why=\"%s\"", safe, why);
		conn_set_reply(r, 451, "4.3.0 <%s>: Temporary lookup failure, "
		    "try again later", safe);
		return SMTP_REJECT;
	case ROUTE_LOOP:
		log_event(LOG_LVL_WARN, "route-error", c->sid, NULL,
		    "rcpt=<%s> why=\"%s\"", safe, why);
		/* RFC 3463 X.4.6: a routing loop; the admin can fix it. */
		conn_set_reply(r, 451, "4.4.6 <%s>: Alias loop or nesting too "
		    "deep", safe);
		return SMTP_REJECT;
	case ROUTE_TOO_MANY:
		conn_set_reply(r, 452, "4.5.3 <%s>: Too many alias targets",
		    safe);
		return SMTP_REJECT;
	}
	if (conn_sync_rcpt(c, res, safe, r) == -1)
		return SMTP_REJECT;
	for (size_t i = 0; i < res->n; i++) {
		const struct route_target *t = &res->targets[i];
		char to[600];
		/* Remote kinds carry the action's name: the queue finds its
		 * sender. */
		(void)queue_env_add_target(conn_tx_env(c->tx), t->rcpt, t->kind,
		    t->arg);
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
	    RCPT_CLIENT, res, &r);
	smtp_session_resume(c->smtp, v, &r);
	conn_process_input(c);
	conn_check_close(c);
}

static struct table_loop *
conn_tables(const struct conn *c)
{
	return c->chain_loop != NULL ? chain_loop_tables(c->chain_loop) :
	    NULL;
}

static enum smtp_verdict
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
	if (from == RCPT_CLIENT_NO_DELIVER) {
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
		if (from == RCPT_FILTER) {
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

/* The sender is fine: start the transaction. */
enum smtp_verdict
conn_mail_begin(struct conn *c, const struct smtp_event *ev)
{
	char safe[600];
	struct spool_env *env;

	conn_tx_release(&c->tx);
	c->tx = conn_tx_new(c->ctx, &conn_tx_ops, c);
	env = conn_tx_env(c->tx);
	env->sid = xstrdup(c->sid);
	env->sender = xstrdup(ev->arg);
	env->client_ip = xstrdup(c->ip);
	env->helo = smtp_session_helo(c->smtp) != NULL ?
	    xstrdup(smtp_session_helo(c->smtp)) : NULL;
	/* What webhooks and agents tell of the client. */
	env->tls = c->tls_proto[0] != '\0' ? xstrdup(c->tls_proto) : NULL;
	env->auth_user = smtp_session_auth_user(c->smtp) != NULL ?
	    xstrdup(smtp_session_auth_user(c->smtp)) : NULL;
	env->smtputf8 = ev->smtputf8;
	env->body_8bit = ev->body == SMTP_BODY_8BITMIME;
	log_event(LOG_LVL_INFO, "mail", c->sid, NULL, "from=<%s> size=%ju",
	    log_safe_word_into(safe, sizeof(safe), ev->arg, strlen(ev->arg)),
	    (uintmax_t)ev->size);
	return SMTP_OK;
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
	smtp_session_resume(c->smtp, v, &r);
	conn_process_input(c);
	conn_check_close(c);
}

static enum smtp_verdict
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

static enum smtp_verdict
conn_stage_data(struct conn *c)
{
	char qid[SPOOL_QID_MAX];
	struct util_buf hdr = { 0 };
	struct spool_env *env = conn_tx_env(c->tx);
	bool tls = c->params.tls_active;
	char rdns[256];
	struct conn_received r = {
		.rdns = c->cs != NULL ? chain_session_get(c->cs, "client.rdns",
		    rdns, sizeof(rdns)) : NULL,
		.helo = smtp_session_helo(c->smtp),
		.ip = c->ip,
		.ipv6 = c->ipv6,
		.hostname = conn_cfg(c)->hostname,
		.qid = qid,
		.when = time(NULL),
	};

	/* RFC 3848 protocol names; RFC 6531 3.7.3 for UTF8. */
	bool auth = smtp_session_auth_user(c->smtp) != NULL;
	if (!smtp_session_is_esmtp(c->smtp))
		r.protocol = tls ? "SMTPS" : "SMTP";
	else if (env->smtputf8)
		r.protocol = tls ? (auth ? "UTF8SMTPSA" : "UTF8SMTPS") :
		    (auth ? "UTF8SMTPA" : "UTF8SMTP");
	else
		r.protocol = tls ? (auth ? "ESMTPSA" : "ESMTPS") :
		    (auth ? "ESMTPA" : "ESMTP");
	if (env->nrcpts == 1)
		r.single_rcpt = env->rcpts[0].addr;
	if (tls)
		r.tls = c->tls_desc;
	spool_new_qid(c->ctx->spool, qid);
	env->received = r.when;
	conn_tx_begin(c->tx, qid, conn_cfg(c)->hostname);
	conn_received_build(&hdr, &r);
	const char *spf = c->cs != NULL ?
	    chain_kv_get(c->cs, CHAIN_SCOPE_TX, "spf.received") : NULL;
	if (spf != NULL)
		util_buf_printf(&hdr, "Received-SPF: %s\n", spf);
	conn_tx_write(c->tx, hdr.data, hdr.len);
	c->trace_len = hdr.len;
	util_buf_clear(&hdr);
	return SMTP_OK;
}

/*
 * "nomail after-data" (the listener's, or a handler's session.nomail):
 * every recipient is taken, never routed, and the message's content is
 * answered 521.
 */
static bool
conn_nomail_after_data(const struct conn *c)
{
	const char *v;

	if (c->lcfg->nomail_after_data)
		return true;
	v = c->cs != NULL ? chain_kv_get(c->cs, CHAIN_SCOPE_SESSION,
	    "nomail") : NULL;
	return v != NULL && strcmp(v, "after-data") == 0;
}

/* Our own checks at connect, before any chain runs. */
static enum smtp_verdict
conn_stage_connect(struct conn *c, struct smtp_reply *r)
{
	if (c->lcfg->nomail && !c->lcfg->nomail_after_data) {
		/* RFC 7504 3: this host does not accept mail. */
		conn_set_reply(r, 521, "5.3.2 %s does not accept mail",
		    conn_cfg(c)->hostname);
		return SMTP_CLOSE;
	}
	if (c->ctx->shutting_down) {
		conn_set_reply(r, 421, "4.3.2 %s Service shutting down",
		    conn_cfg(c)->hostname);
		return SMTP_CLOSE;
	}
	if (c->chain_broken) {
		conn_set_reply(r, 421, "4.3.0 %s Service temporarily "
		    "unavailable", conn_cfg(c)->hostname);
		return SMTP_CLOSE;
	}
	return SMTP_OK;
}

/* Handler state goes with the message: delivery and logs see it. */
static void
conn_keep_state(struct conn *c, struct spool_env *env)
{
	static const struct { enum chain_scope sc; const char *prefix; }
	    scopes[] = { { CHAIN_SCOPE_SESSION, "session." },
	    { CHAIN_SCOPE_TX, "tx." } };
	const char *k, *v;
	char key[CHAIN_KEY_MAX + 16];

	if (c->cs == NULL)
		return;
	for (size_t s = 0; s < 2; s++)
		for (size_t i = 0; chain_kv_at(c->cs, scopes[s].sc, i, &k, &v);
		    i++)
			if (util_snprintf(key, sizeof(key), "%s%s",
			    scopes[s].prefix, k) == 0)
				spool_env_add_state(env, key, v);
}

/*
 * A filter's modifications (a milter's, at eom), in order: the envelope's
 * now, the header block's by the commit.  -1 with *r when the header
 * block cannot be edited.
 */
static int
conn_apply_mods(struct conn *c, struct spool_env *env, struct smtp_reply *r)
{
	size_t n;
	const struct chain_mod *m = chain_session_mods(c->cs, &n);
	bool hdr = false;
	char safe[600];

	for (size_t i = 0; i < n; i++) {
		log_safe_word_into(safe, sizeof(safe), m[i].value,
		    strlen(m[i].value));
		switch (m[i].kind) {
		case CHAIN_MOD_SENDER:
			free(env->sender);
			env->sender = xstrdup(m[i].value);
			log_event(LOG_LVL_INFO, "modified", c->sid, env->qid,
			    "from=<%s>", safe);
			break;
		case CHAIN_MOD_RCPT_ADD: {
			struct smtp_reply rr = { 0 };
			/* Routed as an RCPT from this client would be. */
			if (conn_stage_rcpt(c, m[i].value, RCPT_FILTER, &rr) !=
			    SMTP_OK)
				log_event(LOG_LVL_WARN, "modify-refused",
				    c->sid, env->qid, "rcpt=<%s> why=\"%d "
				    "%s\"", safe, rr.code, rr.text);
			break;
		}
		case CHAIN_MOD_RCPT_DEL:
			for (size_t j = 0; j < env->nrcpts; j++)
				if (strcasecmp(env->rcpts[j].addr,
				    m[i].value) == 0) {
					spool_env_del_rcpt(env, j);
					log_event(LOG_LVL_INFO, "modified",
					    c->sid, env->qid, "removed=<%s>",
					    safe);
					break;
				}
			break;
		default:
			hdr = true;
		}
	}
	if (!hdr)
		return 0;
	struct util_buf head = { 0 };
	size_t old_len;
	if (conn_mods_head(c, &head, &old_len, r) == -1)
		return -1;
	conn_tx_set_head(c->tx, c->trace_len, old_len, &head);
	return 0;
}

int
conn_mods_head(struct conn *c, struct util_buf *head, size_t *old_len_out,
    struct smtp_reply *r)
{
	size_t n, len;
	const struct chain_mod *m = chain_session_mods(c->cs, &n);
	int64_t hl = chain_session_header_len(c->cs);
	const char *h = chain_session_headers(c->cs, &len);

	if (hl < 0) {
		conn_set_reply(r, 451, "4.3.0 Header block too long to "
		    "modify");
		return -1;
	}
	chain_headers_edit(h != NULL ? h : "", (size_t)hl, m, n, head);
	log_event(LOG_LVL_INFO, "modified", c->sid, conn_tx_env(c->tx)->qid,
	    "headers=%zu size=%zu", n, head->len);
	*old_len_out = (size_t)hl;
	return 0;
}

/*
 * The message is complete and the chains have spoken: apply their
 * modifications, a discard or a quarantine, then make it durable (the
 * reply comes from the commit).
 */
static enum smtp_verdict
conn_eom_commit(struct conn *c, struct smtp_reply *r)
{
	if (c->px != NULL)
		return conn_proxy_eom(c, r);	/* it goes up instead */
	struct spool_env *env = conn_tx_env(c->tx);
	const char *act = NULL;
	enum chain_disposition d = c->cs != NULL ?
	    chain_session_disposition(c->cs, &act) : CHAIN_DISP_DELIVER;

	if (c->cs != NULL && d != CHAIN_DISP_DISCARD &&
	    conn_apply_mods(c, env, r) == -1)
		return SMTP_REJECT;

	if (conn_nomail_after_data(c)) {
		/* RFC 7504 3: the content was taken, the mail is not. */
		log_event(LOG_LVL_INFO, "refused", c->sid, env->qid, "size=%ju "
		    "why=\"nomail after-data\"", (uintmax_t)env->size);
		conn_tx_keep_uncommitted(c->tx, ".refused");
		conn_set_reply(r, 521, "5.3.2 %s does not accept mail",
		    conn_cfg(c)->hostname);
		return SMTP_CLOSE;
	}
	if (d == CHAIN_DISP_DISCARD || env->nrcpts == 0) {
		/* Accepted and dropped: soft-invalid recipients or discard. */
		log_event(LOG_LVL_INFO, "discarded", c->sid, env->qid,
		    "size=%ju", (uintmax_t)env->size);
		conn_tx_keep_uncommitted(c->tx, ".discarded");
		return SMTP_OK;
	}
	if (d == CHAIN_DISP_QUARANTINE) {
		const struct config_action *a = act != NULL ?
		    config_action_find(conn_cfg(c), act) : NULL;
		if (a == NULL || a->kind != CONFIG_ACTION_MAILDIR ||
		    a->path == NULL) {
			conn_set_reply(r, 451, "4.3.0 Quarantine %s is not a "
			    "maildir action with a path", act != NULL ? act :
			    "-");
			return SMTP_REJECT;
		}
		for (size_t i = 0; i < env->nrcpts; i++) {
			char *arg = NULL;
			const char *err;
			if (route_expand(a->path, env->rcpts[i].addr, &arg,
			    &err) == -1) {
				conn_set_reply(r, 451, "4.3.0 Quarantine: %s",
				    err);
				return SMTP_REJECT;
			}
			free(env->rcpts[i].action);
			free(env->rcpts[i].arg);
			env->rcpts[i].action = xstrdup(
			    config_action_kind_name(a->kind));
			env->rcpts[i].arg = arg;
		}
		log_event(LOG_LVL_INFO, "quarantined", c->sid, env->qid,
		    "action=%s", a->name);
	}
	conn_keep_state(c, env);
	if (conn_sync_action(c) != NULL) {
		const struct config_action *a = conn_sync_action(c);
		const struct deliver_kind *k;

		conn_tx_sync(c->tx, conn_rt_runtime(c->rt, a->name, &k),
		    a->hook->sync_ms);
	} else
		conn_tx_commit(c->tx);
	return SMTP_PENDING;
}

static enum smtp_verdict
conn_stage_eom(struct conn *c, struct smtp_reply *r)
{
	/* A write failed mid-message: no chain sees it, nothing commits. */
	if (conn_tx_failed(c->tx)) {
		conn_tx_refusal(c->tx, r);
		return SMTP_REJECT;
	}
	if (c->cs == NULL)
		return conn_eom_commit(c, r);
	/* A held message goes up from its file: all of it written first. */
	if (!chain_set_has(c->rt->chains, SMTP_STAGE_EOM) &&
	    !conn_proxy_holds(c))
		return chain_set_has(c->rt->chains, SMTP_STAGE_HEADER) ?
		    conn_eom_chain(c, r) : conn_eom_commit(c, r);
	/*
	 * A chain that reads no file sees the message in memory: nothing is
	 * written, and the commit may still be the delivery (conn/tx.c).
	 */
	size_t len;
	const char *mem = conn_proxy_holds(c) ||
	    chain_set_reads_file(c->rt->chains, SMTP_STAGE_EOM) ? NULL :
	    conn_tx_memory(c->tx, &len);
	if (mem != NULL) {
		chain_session_set_message_mem(c->cs, mem, len, c->trace_len);
		return conn_eom_chain(c, r);
	}
	c->eom_flushing = true;
	if (!conn_tx_flush(c->tx))
		return SMTP_PENDING;	/* conn_tx_drained_cb goes on */
	c->eom_flushing = false;
	return conn_eom_chain_file(c, r);
}

/* Our own work for a stage the chains let through. */
static enum smtp_verdict
conn_stage(struct conn *c, const struct smtp_event *ev, bool no_deliver,
    struct smtp_reply *r)
{
	char safe[300];

	if (c->px != NULL && ev->stage != SMTP_STAGE_STARTTLS &&
	    ev->stage != SMTP_STAGE_EOM)
		return conn_proxy_stage(c, ev, r);	/* relayed instead */
	switch (ev->stage) {
	case SMTP_STAGE_HELO:
		log_event(LOG_LVL_INFO, "helo", c->sid, NULL, "name=\"%s\" "
		    "esmtp=%s", log_safe_into(safe, sizeof(safe), ev->arg,
		    strlen(ev->arg)), ev->esmtp ? "yes" : "no");
		return SMTP_OK;
	case SMTP_STAGE_MAIL:
		return conn_stage_mail(c, ev, r);
	case SMTP_STAGE_RCPT:
		return conn_stage_rcpt(c, ev->arg, no_deliver ||
		    conn_nomail_after_data(c) ? RCPT_CLIENT_NO_DELIVER :
		    RCPT_CLIENT, r);
	case SMTP_STAGE_DATA:
		return conn_stage_data(c);
	case SMTP_STAGE_EOM:
		return conn_stage_eom(c, r);
	case SMTP_STAGE_STARTTLS:
		if (c->tls == NULL) {
			conn_set_reply(r, 454, "4.7.0 TLS not available");
			return SMTP_REJECT;
		}
		c->tls_pending = true;	/* the session stops reading now */
		return SMTP_OK;
	default:
		return SMTP_OK;
	}
}

/* A chain's result, then (when it lets the stage through) our own work. */
static enum smtp_verdict
conn_after_chain(struct conn *c, const struct smtp_event *ev,
    const struct chain_result *res, struct smtp_reply *r)
{
	/* The commit may free the message the eom chain saw in memory. */
	if (ev->stage == SMTP_STAGE_EOM && c->cs != NULL)
		chain_session_set_message_mem(c->cs, NULL, 0, 0);
	if (res->verdict != SMTP_OK) {
		*r = res->reply;
		return res->verdict;
	}
	if (ev->stage == SMTP_STAGE_EOM)
		return conn_eom_commit(c, r);
	enum smtp_verdict v = conn_stage(c, ev, res->no_deliver, r);
	if (v == SMTP_OK && r->code == 0 && res->reply.code != 0)
		*r = res->reply;	/* a handler's own 2xx text */
	return v;
}

/* The event of a stage that waits for its chain (ev->arg is borrowed). */
void
conn_keep_event(struct conn *c, const struct smtp_event *ev)
{
	free(c->wait_arg);
	c->wait_ev = *ev;
	c->wait_arg = ev->arg != NULL ? xstrdup(ev->arg) : NULL;
	c->wait_ev.arg = c->wait_arg;
}

static void
conn_chain_done_cb(void *arg, const struct chain_result *res)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };
	enum smtp_verdict v = conn_after_chain(c, &c->wait_ev, res, &r);

	if (v != SMTP_PENDING)
		smtp_session_resume(c->smtp, v, &r);
	conn_process_input(c);
	conn_check_close(c);
}

static enum smtp_verdict
conn_eom_chain(struct conn *c, struct smtp_reply *r)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_EOM,
	    .size = conn_tx_env(c->tx)->size };
	struct chain_result res;

	conn_keep_event(c, &ev);
	if (chain_run(c->cs, &ev, conn_chain_done_cb, c, &res) == CHAIN_PENDING)
		return SMTP_PENDING;
	return conn_after_chain(c, &ev, &res, r);
}

/* The eom chain on the content written out whole (conn_tx_flush). */
static enum smtp_verdict
conn_eom_chain_file(struct conn *c, struct smtp_reply *r)
{
	if (chain_set_has(c->rt->chains, SMTP_STAGE_EOM)) {
		char *path = conn_tx_path(c->tx);
		chain_session_set_message_file(c->cs, path, c->trace_len);
		free(path);
	}
	return conn_eom_chain(c, r);
}

/* A refused AUTH's 535, after the tarpit. */
static void
conn_auth_tarpit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };

	(void)fd;
	(void)what;
	conn_set_reply(&r, 535, "5.7.8 Authentication credentials invalid");
	smtp_session_resume(c->smtp, SMTP_REJECT, &r);
	conn_process_input(c);
	conn_check_close(c);
}

/* Credentials checked: then the auth chain has its say, if any. */
static void
conn_auth_checked_cb(void *arg, int rc, const char *user)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };
	struct chain_result res;
	char safe[300];
	uint64_t tarpit_ms = conn_cfg(c)->auth_guard.tarpit_ms;

	c->auth_job = NULL;
	log_safe_into(safe, sizeof(safe), user, strlen(user));
	/* Credentials accepted (the auth chain may still refuse): success. */
	metrics_inc(MET_AUTH, rc == 1 ? 0 : 1, 0);
	if (rc == -1 || rc == -2) {
		log_event(LOG_LVL_WARN, "auth-failed", c->sid, NULL,
		    "ip=%s user=\"%s\" why=\"%s\"", c->ip, safe, rc == -1 ?
		    "backend unavailable" : "client on the ban list");
		conn_set_reply(&r, 454, rc == -1 ? "4.7.0 Temporary "
		    "authentication failure, try again later" : "4.7.0 Too "
		    "many authentication failures, try again later");
		smtp_session_resume(c->smtp, SMTP_REJECT, &r);
	} else if (rc == 0) {
		log_event(LOG_LVL_WARN, "auth-failed", c->sid, NULL,
		    "ip=%s user=\"%s\"", c->ip, safe);
		if (c->cs != NULL)
			chain_session_failed(c->cs, CHAIN_FAILED_AUTH);
		conn_auth_failed(c, user);
		if (tarpit_ms > 0) {
			struct timeval tv = { (time_t)(tarpit_ms / 1000),
			    (suseconds_t)(tarpit_ms % 1000) * 1000 };
			if (c->tarpit_ev == NULL)
				c->tarpit_ev = evtimer_new(c->ctx->base,
				    conn_auth_tarpit_cb, c);
			evtimer_add(c->tarpit_ev, &tv);
			return;
		}
		conn_auth_tarpit_cb(-1, 0, c);
		return;
	} else {
		log_event(LOG_LVL_INFO, "auth", c->sid, NULL, "user=\"%s\"",
		    safe);
		struct smtp_event ev = { .stage = SMTP_STAGE_AUTH, .arg = user };
		enum smtp_verdict v = SMTP_OK;
		if (c->cs != NULL) {
			chain_session_set_auth(c->cs, user);
			conn_keep_event(c, &ev);
			if (chain_run(c->cs, &ev, conn_chain_done_cb, c, &res) ==
			    CHAIN_PENDING)
				goto out;
			v = conn_after_chain(c, &ev, &res, &r);
		}
		smtp_session_resume(c->smtp, v, &r);
	}
out:
	conn_process_input(c);
	conn_check_close(c);
}

/* The single decision point of every stage: our checks, the chain, ours. */
enum smtp_verdict
conn_decide_cb(void *arg, const struct smtp_event *ev, struct smtp_reply *r)
{
	struct conn *c = arg;
	struct chain_result res;
	enum smtp_verdict v;

	if (ev->stage == SMTP_STAGE_CONNECT &&
	    (v = conn_stage_connect(c, r)) != SMTP_OK)
		return v;
	if (c->cs != NULL && smtp_session_saw_bare_eol(c->smtp))
		chain_session_set_bare_lf(c->cs);	/* the "crlf" fact */
	if (ev->stage == SMTP_STAGE_AUTH && c->px != NULL)
		conn_proxy_keep_secret(c, ev->secret);	/* for the upstream */
	else if (ev->stage == SMTP_STAGE_AUTH) {
		/* The password lives for this call only: check it first. */
		c->auth_job = conn_auth_start(c, ev->arg, ev->secret != NULL ?
		    ev->secret : "", conn_auth_checked_cb, c);
		return SMTP_PENDING;
	}
	if (ev->stage == SMTP_STAGE_EOM)
		log_translog_end_data(c->translog, ev->size);
	/* The eom chain runs after the last write (conn_stage_eom). */
	if (c->cs == NULL || ev->stage == SMTP_STAGE_EOM)
		return conn_stage(c, ev, false, r);
	conn_keep_event(c, ev);
	if (chain_run(c->cs, ev, conn_chain_done_cb, c, &res) == CHAIN_PENDING)
		return SMTP_PENDING;
	return conn_after_chain(c, ev, &res, r);
}

int
conn_body_cb(void *arg, const char *buf, size_t len)
{
	struct conn *c = arg;

	if (c->cs != NULL)
		chain_session_body(c->cs, buf, len);	/* runs "on header" */
	log_translog_data(c->translog, buf, len);
	if (c->px != NULL && !conn_proxy_holds(c))
		return conn_proxy_body(c, buf, len);	/* straight up */
	/* After a failed write the rest is dropped; the end says why. */
	(void)conn_tx_write(c->tx, buf, len);
	return 0;
}

void
conn_reset_cb(void *arg)
{
	struct conn *c = arg;

	if (c->cs != NULL)
		chain_session_tx_reset(c->cs);
	conn_tx_release(&c->tx);
	if (c->px != NULL)
		conn_proxy_reset(c);
}

