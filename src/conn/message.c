/*
 * conn/message.c: a transaction's message: the transaction started once
 * the sender is accepted, with the callbacks of its disk work (tx.c), the
 * Received: header at DATA, the eom chain on the content in memory or on
 * file, then a filter's edits, a discard or a quarantine, and the commit
 * (or the sync webhook) whose outcome is the reply.
 */
#include "conn/conn_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "chain/chain.h"
#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "queue/queue.h"
#include "route/route.h"
#include "smtp/smtp.h"
#include "spool/spool.h"

static enum smtp_verdict conn_eom_chain_file(struct conn *c,
	    struct smtp_reply *r);

/* ----- transaction plumbing ----- */

/*
 * The end of a message was answered: while the server shuts down, or
 * once a time limit passed, the session ends after it; then input goes
 * on, or the connection closes.
 */
static void
conn_tx_answered(struct conn *c)
{
	conn_eom_answered(c);
	conn_process_input(c);
	conn_check_close(c);
}

/* The final 250 of a message taken: "Ok: queued as QID". */
static void
conn_reply_queued(struct smtp_reply *r, const char *qid)
{
	r->code = 250;
	util_strjoin(r->text, sizeof(r->text), "2.0.0 Ok: queued as ", qid,
	    NULL);
}

static void
conn_tx_committed_cb(void *arg, int rc, const char *err)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };

	if (rc == 0) {
		c->nmsgs++;
		if (c->cs != NULL)
			chain_session_message_accepted(c->cs);
		const char *qid = conn_tx_env(c->tx)->qid;
		conn_reply_queued(&r, qid);
		char note[64];
		util_strjoin(note, sizeof(note), "accepted qid=", qid, NULL);
		log_translog_line(c->translog, LOG_TL_NOTE, note, strlen(note));
		smtp_session_resume(c->smtp, SMTP_OK, &r);
	} else {
		(void)err;	/* logged by tx.c with the qid */
		conn_tx_refusal(c->tx, &r);
		smtp_session_resume(c->smtp, SMTP_REJECT, &r);
	}
	conn_tx_answered(c);
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

	/* Logged by tx.c, which hears of it even when the client left. */
	if (st->result == DELIVER_OK) {
		c->nmsgs++;
		if (c->cs != NULL)
			chain_session_message_accepted(c->cs);
		r.code = 250;
		util_strjoin(r.text, sizeof(r.text), "2.0.0 Ok: delivered as ",
		    env->qid, NULL);
	} else {
		/* Raw: the session's reply writer makes each byte outside
		   printable ASCII '?' (RFC 5321 4.2), as for every reply. */
		r.code = st->result == DELIVER_PERMFAIL ? 550 : 451;
		util_strlcpy(r.text, st->text, sizeof(r.text));
	}
	smtp_session_resume(c->smtp, st->result == DELIVER_OK ? SMTP_OK :
	    SMTP_REJECT, &r);
	conn_tx_answered(c);
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

enum smtp_verdict
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
	util_buf_reserve(&hdr, 512);	/* the usual trace fields in one go */
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
			char why[400];
			/* Routed as an RCPT from this client would be. */
			if (conn_stage_rcpt(c, m[i].value, CONN_RCPT_FILTER,
			    &rr) != SMTP_OK)
				log_event(LOG_LVL_WARN, "modify-refused",
				    c->sid, env->qid, "rcpt=<%s> why=\"%d "
				    "%s\"", safe, rr.code, log_safe_into(why,
				    sizeof(why), rr.text, strlen(rr.text)));
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
	int64_t hl = chain_session_header_len(c->cs);

	(void)chain_session_mods(c->cs, &n);
	if (hl < 0) {
		conn_set_reply(r, 451, "4.3.0 Header block too long to "
		    "modify");
		return -1;
	}
	/* The block the handlers saw last: the edits applied in order. */
	const char *h = chain_session_headers(c->cs, &len);
	util_buf_add(head, h, len);
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
enum smtp_verdict
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
		metrics_inc(MET_MSG_ACCEPTED, 0, 0);
		metrics_add(MET_MSG_BYTES, 0, 0, env->size);
		/* The reply of a message kept: nothing tells the sender which
		 * recipients exist (soft-invalid) or that it was dropped. */
		conn_reply_queued(r, env->qid);
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

enum smtp_verdict
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
