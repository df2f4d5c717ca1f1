/*
 * conn/conn.c: one client connection.  Moves bytes between the socket
 * (a libevent bufferevent) and the SMTP dialogue, answers every stage at
 * the single decision point conn_decide_cb(), and owns the timers and the
 * close.  Knows nothing of how actions deliver.
 */
#include "conn/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "chain/chain.h"
#include "config/config.h"
#include "conn/conn_private.h"
#include "log/log.h"
#include "queue/queue.h"
#include "route/route.h"
#include "smtp/smtp.h"
#include "spool/spool.h"
#include "tls/tls.h"

#define CONN_READ_HIGH	(64 * 1024)	/* unparsed input that pauses reading */
#define CONN_OUT_HIGH	(256 * 1024)	/* unsent replies that pause parsing */
#define CONN_SID_MAX	24

struct conn {
	struct conn_ctx		*ctx;		/* borrowed: the server's */
	struct conn_rt		*rt;		/* ref: the config this session started with */
	const struct config_listen *lcfg;	/* borrowed from rt: our listener */
	struct tls_server	*tls;		/* borrowed from rt; NULL: no TLS */
	struct bufferevent	*bev;		/* owned (the TLS filter once on) */
	struct event		*greet_ev;	/* owned: greeting delay, or NULL */
	struct event		*flush_ev;	/* owned: closing under TLS, or NULL */
	struct event		*hs_ev;		/* owned: TLS handshake deadline, or NULL */
	struct smtp_session	*smtp;		/* owned */
	struct smtp_params	 params;
	struct conn_tx		*tx;		/* owned; NULL outside a transaction */
	struct event		*deadline_ev;	/* owned: whole-session limit */
	struct log_translog	*translog;	/* owned, or NULL */
	char			 sid[CONN_SID_MAX];
	char			 ip[INET6_ADDRSTRLEN];
	int			 port;
	bool			 ipv6;
	bool			 in_data;	/* timeouts currently set for DATA */
	bool			 closing;	/* flush the last reply, then free */
	bool			 peer_gone;
	bool			 started;	/* the greeting was sent (or refused) */
	bool			 tls_pending;	/* STARTTLS accepted, handshake next */
	char			 tls_desc[160];	/* for Received:, "" before TLS */
	struct chain_session	*cs;		/* owned; NULL without chains */
	bool			 chain_broken;	/* chains configured, loop failed */
	bool			 eom_flushing;	/* eom chain waits for the file */
	size_t			 trace_len;	/* our Received: lines, content
						   first */
	struct smtp_event	 wait_ev;	/* the stage a chain works on */
	char			*wait_arg;	/* owned: wait_ev.arg */
	char			 greeting[256];	/* expanded greeting template */
	struct conn_auth_job	*auth_job;	/* a credential check under way */
	char			 last_verb[16];	/* for reject log lines */
	unsigned		 nmsgs;
	unsigned		 nrcpts;	/* accepted in the whole session */
	uint64_t		 start_ms;
	struct conn		*next, *prev;	/* in ctx->conns */
};

static void	conn_process_input(struct conn *c);
static void	conn_early_talker(struct conn *c);
static void	conn_hs_deadline(struct conn *c);
/* The eom chain reads the message file: it runs once all of it is written. */
static enum smtp_verdict conn_eom_chain(struct conn *c, struct smtp_reply *r);
static void	conn_read_cb(struct bufferevent *bev, void *arg);
static void	conn_write_cb(struct bufferevent *bev, void *arg);
static void	conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void	conn_check_close(struct conn *c);

static const struct config *
conn_cfg(const struct conn *c)
{
	return c->rt->cfg;
}

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
		log_translog_line(c->translog, '>', "[message committed]", 19);
		smtp_session_resume(c->smtp, SMTP_OK, &r);
	} else {
		(void)err;	/* logged by tx.c with the qid */
		r.code = 451;
		util_strlcpy(r.text, "4.3.0 Local error in processing, try again later",
		    sizeof(r.text));
		smtp_session_resume(c->smtp, SMTP_REJECT, &r);
	}
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
		enum smtp_verdict v;
		c->eom_flushing = false;
		if ((v = conn_eom_chain(c, &r)) != SMTP_PENDING)
			smtp_session_resume(c->smtp, v, &r);
	}
	conn_process_input(c);
	conn_check_close(c);
}

static const struct conn_tx_ops conn_tx_ops = {
	.committed_cb = conn_tx_committed_cb,
	.drained_cb = conn_tx_drained_cb,
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

static enum smtp_verdict
conn_stage_rcpt(struct conn *c, const char *rcpt, enum conn_rcpt_from from,
    struct smtp_reply *r)
{
	char safe[600];
	enum route_miss miss;
	const struct config_action *a;
	char *arg = NULL;
	const char *err;

	log_safe_into(safe, sizeof(safe), rcpt, strlen(rcpt));
	if (c->nrcpts >= conn_cfg(c)->limits.rcpts_per_session_max) {
		conn_set_reply(r, 452, "4.5.3 Too many recipients in this "
		    "session");
		return SMTP_REJECT;
	}
	if (from == RCPT_CLIENT_NO_DELIVER) {
		/* verify's soft-invalid mode: accepted, never delivered. */
		log_event(LOG_LVL_INFO, "rcpt", c->sid, NULL, "to=<%s> "
		    "action=none (no delivery)", safe);
		return SMTP_OK;
	}
	struct route_client cl = { .ip = c->ip,
	    .auth_user = smtp_session_auth_user(c->smtp) };
	a = route_find_client(c->rt->router, &cl, smtp_session_sender(c->smtp),
	    rcpt, &miss);
	if (a == NULL) {
		if (miss == ROUTE_UNKNOWN_USER)
			conn_set_reply(r, 550, "5.1.1 <%s>: Recipient address "
			    "rejected: User unknown", safe);
		else {
			conn_set_reply(r, 550, "5.7.1 <%s>: Relay access "
			    "denied", safe);
			if (c->cs != NULL && from != RCPT_FILTER)
				chain_session_failed(c->cs, CHAIN_FAILED_RELAY);
		}
		return SMTP_REJECT;
	}
	const char *kind = a->kind == CONFIG_ACTION_MAILDIR ? "maildir" :
	    a->kind == CONFIG_ACTION_DISCARD ? "discard" :
	    queue_remote_kind(a->kind);
	if (kind == NULL) {
		conn_set_reply(r, 451, "4.3.5 <%s>: Action %s cannot deliver "
		    "here", safe, a->name);
		return SMTP_REJECT;
	}
	if (a->kind == CONFIG_ACTION_MAILDIR &&
	    route_expand(a->path, rcpt, &arg, &err) == -1) {
		log_event(LOG_LVL_WARN, "route-error", c->sid, NULL,
		    "rcpt=<%s> action=%s why=\"%s\"", safe, a->name, err);
		conn_set_reply(r, 451, "4.3.0 <%s>: Temporary routing error",
		    safe);
		return SMTP_REJECT;
	}
	/* Remote kinds carry the action's name: the queue finds its sender. */
	spool_env_add_rcpt(conn_tx_env(c->tx), rcpt, kind,
	    a->kind == CONFIG_ACTION_MAILDIR ? arg :
	    a->kind == CONFIG_ACTION_DISCARD ? NULL : a->name);
	c->nrcpts++;
	if (c->cs != NULL)
		chain_session_rcpt_accepted(c->cs, rcpt);
	log_event(LOG_LVL_INFO, "rcpt", c->sid, NULL, "to=<%s> action=%s",
	    safe, a->name);
	free(arg);
	return SMTP_OK;
}

static enum smtp_verdict
conn_stage_mail(struct conn *c, const struct smtp_event *ev,
    struct smtp_reply *r)
{
	char safe[600];
	struct spool_env *env;

	if (c->nmsgs >= conn_cfg(c)->limits.msgs_per_session_max) {
		conn_set_reply(r, 452, "4.5.3 Too many messages in this "
		    "session");
		return SMTP_REJECT;
	}

	conn_tx_release(&c->tx);
	c->tx = conn_tx_new(c->ctx, &conn_tx_ops, c);
	env = conn_tx_env(c->tx);
	env->sid = xstrdup(c->sid);
	env->sender = xstrdup(ev->arg);
	env->client_ip = xstrdup(c->ip);
	env->helo = smtp_session_helo(c->smtp) != NULL ?
	    xstrdup(smtp_session_helo(c->smtp)) : NULL;
	env->smtputf8 = ev->smtputf8;
	env->body_8bit = ev->body == SMTP_BODY_8BITMIME;
	log_event(LOG_LVL_INFO, "mail", c->sid, NULL, "from=<%s> size=%ju",
	    log_safe_into(safe, sizeof(safe), ev->arg, strlen(ev->arg)),
	    (uintmax_t)ev->size);
	return SMTP_OK;
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

/* Our own checks at connect, before any chain runs. */
static enum smtp_verdict
conn_stage_connect(struct conn *c, struct smtp_reply *r)
{
	if (c->lcfg->nomail) {
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
	size_t n, len;
	const struct chain_mod *m = chain_session_mods(c->cs, &n);
	bool hdr = false;
	char safe[600];

	for (size_t i = 0; i < n; i++) {
		log_safe_into(safe, sizeof(safe), m[i].value,
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
	int64_t hl = chain_session_header_len(c->cs);
	const char *h = chain_session_headers(c->cs, &len);
	if (hl < 0) {
		conn_set_reply(r, 451, "4.3.0 Header block too long to "
		    "modify");
		return -1;
	}
	struct util_buf head = { 0 };
	chain_headers_edit(h != NULL ? h : "", (size_t)hl, m, n, &head);
	log_event(LOG_LVL_INFO, "modified", c->sid, env->qid, "headers=%zu "
	    "size=%zu", n, head.len);
	conn_tx_set_head(c->tx, c->trace_len, (size_t)hl, &head);
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
	struct spool_env *env = conn_tx_env(c->tx);
	const char *act = NULL;
	enum chain_disposition d = c->cs != NULL ?
	    chain_session_disposition(c->cs, &act) : CHAIN_DISP_DELIVER;

	if (c->cs != NULL && d != CHAIN_DISP_DISCARD &&
	    conn_apply_mods(c, env, r) == -1)
		return SMTP_REJECT;

	if (d == CHAIN_DISP_DISCARD || env->nrcpts == 0) {
		/* Accepted and dropped: soft-invalid recipients or discard. */
		log_event(LOG_LVL_INFO, "discarded", c->sid, env->qid,
		    "size=%ju", (uintmax_t)env->size);
		return SMTP_OK;
	}
	if (d == CHAIN_DISP_QUARANTINE) {
		const struct config_action *a = act != NULL ?
		    config_action_find(conn_cfg(c), act) : NULL;
		if (a == NULL || a->kind != CONFIG_ACTION_MAILDIR) {
			conn_set_reply(r, 451, "4.3.0 Quarantine %s is not a "
			    "maildir action", act != NULL ? act : "-");
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
			env->rcpts[i].action = xstrdup("maildir");
			env->rcpts[i].arg = arg;
		}
		log_event(LOG_LVL_INFO, "quarantined", c->sid, env->qid,
		    "action=%s", a->name);
	}
	conn_keep_state(c, env);
	conn_tx_commit(c->tx);
	return SMTP_PENDING;
}

static enum smtp_verdict
conn_stage_eom(struct conn *c, struct smtp_reply *r)
{
	if (c->cs == NULL)
		return conn_eom_commit(c, r);
	if (!chain_set_has(c->rt->chains, SMTP_STAGE_EOM))
		return chain_set_has(c->rt->chains, SMTP_STAGE_HEADER) ?
		    conn_eom_chain(c, r) : conn_eom_commit(c, r);
	c->eom_flushing = true;
	if (!conn_tx_flush(c->tx))
		return SMTP_PENDING;	/* conn_tx_drained_cb goes on */
	c->eom_flushing = false;
	return conn_eom_chain(c, r);
}

/* Our own work for a stage the chains let through. */
static enum smtp_verdict
conn_stage(struct conn *c, const struct smtp_event *ev, bool no_deliver,
    struct smtp_reply *r)
{
	char safe[300];

	switch (ev->stage) {
	case SMTP_STAGE_HELO:
		log_event(LOG_LVL_INFO, "helo", c->sid, NULL, "name=\"%s\" "
		    "esmtp=%s", log_safe_into(safe, sizeof(safe), ev->arg,
		    strlen(ev->arg)), ev->esmtp ? "yes" : "no");
		return SMTP_OK;
	case SMTP_STAGE_MAIL:
		return conn_stage_mail(c, ev, r);
	case SMTP_STAGE_RCPT:
		return conn_stage_rcpt(c, ev->arg, no_deliver ?
		    RCPT_CLIENT_NO_DELIVER : RCPT_CLIENT, r);
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
static void
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
	if (chain_set_has(c->rt->chains, SMTP_STAGE_EOM)) {
		char *path = conn_tx_path(c->tx);
		chain_session_set_message_file(c->cs, path, c->trace_len);
		free(path);
	}
	conn_keep_event(c, &ev);
	if (chain_run(c->cs, &ev, conn_chain_done_cb, c, &res) == CHAIN_PENDING)
		return SMTP_PENDING;
	return conn_after_chain(c, &ev, &res, r);
}

/* Credentials checked: then the auth chain has its say, if any. */
static void
conn_auth_checked_cb(void *arg, bool ok, const char *user)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };
	struct chain_result res;
	char safe[300];

	c->auth_job = NULL;
	log_safe_into(safe, sizeof(safe), user, strlen(user));
	if (!ok) {
		log_event(LOG_LVL_WARN, "auth-failed", c->sid, NULL,
		    "ip=%s user=\"%s\"", c->ip, safe);
		if (c->cs != NULL)
			chain_session_failed(c->cs, CHAIN_FAILED_AUTH);
		conn_set_reply(&r, 535, "5.7.8 Authentication credentials "
		    "invalid");
		smtp_session_resume(c->smtp, SMTP_REJECT, &r);
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
static enum smtp_verdict
conn_decide_cb(void *arg, const struct smtp_event *ev, struct smtp_reply *r)
{
	struct conn *c = arg;
	struct chain_result res;
	enum smtp_verdict v;

	if (ev->stage == SMTP_STAGE_CONNECT &&
	    (v = conn_stage_connect(c, r)) != SMTP_OK)
		return v;
	if (ev->stage == SMTP_STAGE_AUTH) {
		/* The password lives for this call only: check it first. */
		c->auth_job = conn_auth_start(c->ctx, c->rt, ev->arg,
		    ev->secret != NULL ? ev->secret : "", conn_auth_checked_cb, c);
		return SMTP_PENDING;
	}
	/* The eom chain runs after the last write (conn_stage_eom). */
	if (c->cs == NULL || ev->stage == SMTP_STAGE_EOM)
		return conn_stage(c, ev, false, r);
	conn_keep_event(c, ev);
	if (chain_run(c->cs, ev, conn_chain_done_cb, c, &res) == CHAIN_PENDING)
		return SMTP_PENDING;
	return conn_after_chain(c, ev, &res, r);
}

static int
conn_body_cb(void *arg, const char *buf, size_t len)
{
	struct conn *c = arg;

	if (c->cs != NULL)
		chain_session_body(c->cs, buf, len);	/* runs "on header" */
	return conn_tx_write(c->tx, buf, len);
}

static void
conn_reset_cb(void *arg)
{
	struct conn *c = arg;

	if (c->cs != NULL)
		chain_session_tx_reset(c->cs);
	conn_tx_release(&c->tx);
}

/* Log every refusal, whoever made it (smtp/ or a stage above). */
static void
conn_log_reply(struct conn *c, const char *buf, size_t len)
{
	char why[400];
	const char *sp, *end = memchr(buf, '\r', len);
	size_t n = end != NULL ? (size_t)(end - buf) : len;

	if (n < 4 || (buf[0] != '4' && buf[0] != '5'))
		return;
	sp = buf + 4;
	const char *esc_end = memchr(sp, ' ', n - 4);
	size_t esc_len = esc_end != NULL ? (size_t)(esc_end - sp) : 0;
	bool has_esc = esc_len >= 5 && esc_len < 12 && sp[1] == '.';
	const char *text = has_esc ? esc_end + 1 : sp;
	log_event(LOG_LVL_INFO, "reject", c->sid,
	    c->tx != NULL && conn_tx_env(c->tx)->qid[0] != '\0' ?
	    conn_tx_env(c->tx)->qid : NULL,
	    "stage=%s code=%.3s esc=%.*s why=\"%s\"",
	    c->last_verb[0] != '\0' ? c->last_verb : "connect", buf,
	    has_esc ? (int)esc_len : 1, has_esc ? sp : "-",
	    log_safe_into(why, sizeof(why), text, n - (size_t)(text - buf)));
}

static void
conn_send_cb(void *arg, const char *buf, size_t len)
{
	struct conn *c = arg;

	conn_log_reply(c, buf, len);
	if (!c->peer_gone)
		bufferevent_write(c->bev, buf, len);
}

static void
conn_trace_cb(void *arg, bool from_peer, const char *line, size_t len)
{
	struct conn *c = arg;

	if (from_peer) {
		size_t n = 0;
		while (n < len && n < sizeof(c->last_verb) - 1 &&
		    line[n] != ' ' && line[n] != '\r' && line[n] != '\n') {
			char ch = line[n];
			c->last_verb[n++] = (ch >= 'a' && ch <= 'z') ?
			    (char)(ch - 32) : ch;
		}
		c->last_verb[n] = '\0';
		if (log_enabled(LOG_LVL_DEBUG)) {
			char safe[300];
			log_event(LOG_LVL_DEBUG, "command", c->sid, NULL,
			    "line=\"%s\"", log_safe_into(safe, sizeof(safe),
			    line, len));
		}
	}
	log_translog_line(c->translog, from_peer ? '>' : '<', line, len);
}

/* Session-wide chain policies (nomail every-command, trap) on any command. */
static enum smtp_verdict
conn_command_cb(void *arg, const char *verb, struct smtp_reply *r)
{
	struct conn *c = arg;
	struct chain_result res;

	if (c->cs == NULL || chain_session_is_running(c->cs) ||
	    !chain_session_check_command(c->cs, verb, &res))
		return SMTP_OK;
	*r = res.reply;
	return res.verdict;
}

static const struct smtp_hooks conn_smtp_hooks = {
	.send_cb = conn_send_cb,
	.decide_cb = conn_decide_cb,
	.body_cb = conn_body_cb,
	.reset_cb = conn_reset_cb,
	.trace_cb = conn_trace_cb,
	.command_cb = conn_command_cb,
};

/* ----- socket events ----- */

static void
conn_set_timeouts(struct conn *c)
{
	const struct config_limits *lim = &conn_cfg(c)->limits;
	uint64_t ms = c->in_data ? lim->data_idle_ms : lim->idle_ms;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	bufferevent_set_timeouts(c->bev, &tv, &tv);
}

static void
conn_free(struct conn *c)
{
	struct conn_ctx *ctx = c->ctx;

	log_event(LOG_LVL_INFO, "disconnect", c->sid, NULL,
	    "ip=%s messages=%u duration_ms=%ju", c->ip, c->nmsgs,
	    (uintmax_t)(util_now_ms() - c->start_ms));
	conn_tx_release(&c->tx);
	conn_auth_abandon(&c->auth_job);
	chain_session_free(&c->cs);	/* runs the disconnect chain */
	free(c->wait_arg);
	smtp_session_free(&c->smtp);
	bufferevent_free(c->bev);
	event_free(c->deadline_ev);
	if (c->greet_ev != NULL)
		event_free(c->greet_ev);
	if (c->flush_ev != NULL)
		event_free(c->flush_ev);
	if (c->hs_ev != NULL)
		event_free(c->hs_ev);
	log_translog_close(&c->translog);
	conn_rt_unref(&c->rt);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		ctx->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	ctx->nconns--;
	if (ctx->closed_cb != NULL)
		ctx->closed_cb(ctx->closed_arg, c->ip);
	free(c);
}

static void
conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_check_close(arg);
}

/* Bytes not yet handed to the kernel, through a TLS filter if there is one. */
static size_t
conn_output_pending(struct conn *c)
{
	struct bufferevent *under = bufferevent_get_underlying(c->bev);
	size_t n = evbuffer_get_length(bufferevent_get_output(c->bev));

	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

/* Free once the session is over and its last reply is on the wire. */
static void
conn_check_close(struct conn *c)
{
	if (!c->closing && !smtp_session_is_closing(c->smtp))
		return;
	if (!c->closing) {
		c->closing = true;
		bufferevent_disable(c->bev, EV_READ);
	}
	if (c->peer_gone || conn_output_pending(c) == 0) {
		conn_free(c);
		return;
	}
	if (bufferevent_get_underlying(c->bev) != NULL) {
		/*
		 * Under TLS our write callback fires when the filter hands its
		 * bytes down, not when the socket takes them: look again soon
		 * (the session deadline bounds a peer that never reads).
		 */
		struct timeval tv = { 0, 10000 };
		if (c->flush_ev == NULL)
			c->flush_ev = evtimer_new(c->ctx->base, conn_flush_cb,
			    c);
		evtimer_add(c->flush_ev, &tv);
	}
}

/*
 * STARTTLS was accepted and its 220 queued: whatever the client sent after
 * it is thrown away unread (RFC 3207 4.2; CVE-2011-0411), and the
 * handshake runs over the same socket, after the 220.
 */
static void
conn_starttls(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct bufferevent *tbev;
	SSL *ssl = tls_server_ssl_new(c->tls);

	c->tls_pending = false;
	if (evbuffer_get_length(in) > 0)
		log_event(LOG_LVL_WARN, "starttls-injection", c->sid, NULL,
		    "dropped=%zu", evbuffer_get_length(in));
	evbuffer_drain(in, evbuffer_get_length(in));
	tbev = ssl == NULL ? NULL : bufferevent_openssl_filter_new(c->ctx->base,
	    c->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tbev == NULL) {
		log_event(LOG_LVL_ERROR, "tls-error", c->sid, NULL,
		    "why=\"cannot start TLS\"");
		if (ssl != NULL)
			SSL_free(ssl);
		smtp_session_close_with(c->smtp, 421, "4.7.0 TLS not "
		    "available, closing channel");
		return;
	}
	c->bev = tbev;		/* owns the socket bufferevent now */
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_READ_HIGH);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	conn_set_timeouts(c);
	conn_hs_deadline(c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void
conn_hs_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	log_event(LOG_LVL_INFO, "tls-error", c->sid, NULL,
	    "why=\"handshake timed out\"");
	c->peer_gone = true;	/* no channel to say 421 on */
	conn_free(c);
}

/* A handshake gets the idle timeout to finish, whatever the peer sends. */
static void
conn_hs_deadline(struct conn *c)
{
	uint64_t ms = conn_cfg(c)->limits.idle_ms;
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	if (c->hs_ev == NULL)
		c->hs_ev = evtimer_new(c->ctx->base, conn_hs_timeout_cb, c);
	evtimer_add(c->hs_ev, &tv);
}

/* The handshake is over: note what was agreed and go on. */
static void
conn_tls_done(struct conn *c)
{
	struct tls_info ti;
	char sni[300];

	if (c->hs_ev != NULL)
		evtimer_del(c->hs_ev);
	tls_session_info(bufferevent_openssl_get_ssl(c->bev), &ti);
	c->params.tls_active = true;
	if (c->cs != NULL)
		chain_session_set_tls(c->cs, ti.protocol, ti.cipher, ti.sni);
	util_snprintf(c->tls_desc, sizeof(c->tls_desc), "version=%s cipher=%s "
	    "bits=%d", ti.protocol, ti.cipher, ti.bits);
	log_event(LOG_LVL_INFO, "tls", c->sid, NULL, "proto=%s cipher=%s "
	    "bits=%d sni=\"%s\"", ti.protocol, ti.cipher, ti.bits,
	    log_safe_into(sni, sizeof(sni), ti.sni, strlen(ti.sni)));
	if (!c->started) {
		/* Implicit TLS: the greeting comes after the handshake. */
		c->started = true;
		smtp_session_start(c->smtp);
	} else {
		smtp_session_tls_started(c->smtp);
	}
	conn_process_input(c);
	conn_check_close(c);
}

static void
conn_process_input(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);

	while (evbuffer_get_length(in) > 0 && !c->closing &&
	    !smtp_session_is_closing(c->smtp) &&
	    !smtp_session_is_waiting(c->smtp) &&
	    (c->tx == NULL || !conn_tx_backlogged(c->tx)) &&
	    evbuffer_get_length(out) < CONN_OUT_HIGH) {
		size_t n = evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
		size_t used = smtp_session_feed(c->smtp, p, n);
		evbuffer_drain(in, used);
		if (used < n)
			break;
	}
	if (smtp_session_in_data(c->smtp) != c->in_data) {
		c->in_data = !c->in_data;
		conn_set_timeouts(c);
	}
	if (c->tls_pending) {
		conn_starttls(c);
		return;
	}
	if (!c->closing && !smtp_session_is_closing(c->smtp))
		bufferevent_enable(c->bev, EV_READ);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (!c->started) {
		conn_early_talker(c);
		return;
	}
	conn_process_input(c);
	conn_check_close(c);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (!c->closing)
		conn_process_input(c);	/* output drained below its mark */
	conn_check_close(c);
}

static void
conn_timeout(struct conn *c, const char *why)
{
	char text[128];

	log_event(LOG_LVL_INFO, "timeout", c->sid, NULL, "what=%s", why);
	if (smtp_session_is_closing(c->smtp)) {
		c->peer_gone = true;	/* it does not even read: give up */
		conn_check_close(c);
		return;
	}
	util_snprintf(text, sizeof(text), "4.4.2 %s Error: %s",
	    conn_cfg(c)->hostname, why);
	smtp_session_close_with(c->smtp, 421, text);
	conn_check_close(c);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		conn_tls_done(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		conn_timeout(c, (what & BEV_EVENT_WRITING) ?
		    "write timeout" : "timeout exceeded");
		return;
	}
	/* EOF or error: nobody is left to answer. */
	c->peer_gone = true;
	unsigned long e = bufferevent_get_openssl_error(c->bev);
	if (e != 0) {
		char buf[256];
		ERR_error_string_n(e, buf, sizeof(buf));
		log_event(LOG_LVL_INFO, "tls-error", c->sid, NULL,
		    "why=\"%s\"", buf);
	}
	if (smtp_session_in_data(c->smtp))
		log_event(LOG_LVL_INFO, "lost", c->sid, NULL,
		    "why=\"connection closed in DATA\"");
	conn_free(c);
}

static void
conn_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_timeout(arg, "session time limit exceeded");
}

/*
 * Session ids: a random 64-bit start drawn once per process, then a
 * counter, so ids never repeat across restarts or between loops.
 */
/* A chain session when the config has chains; the greeting is a template. */
static void
conn_chain_start(struct conn *c, struct conn_ctx *ctx,
    const struct config *cfg)
{
	const char *err = NULL;
	bool any = false;

	for (unsigned st = 0; st < SMTP_STAGE_COUNT; st++)
		any |= chain_set_has(c->rt->chains, (enum smtp_stage)st);
	if (!any)
		return;
	if (ctx->chain_loop == NULL &&
	    (ctx->chain_loop = chain_loop_new(ctx->base, cfg, NULL,
	    &err)) == NULL) {
		log_event(LOG_LVL_ERROR, "chain-error", c->sid, NULL,
		    "why=\"%s\"", err);
		c->chain_broken = true;
		return;
	}
	struct chain_session_info info = { .sid = c->sid, .ip = c->ip,
	    .port = c->port, .hostname = cfg->hostname };
	c->cs = chain_session_new(c->rt->chains, ctx->chain_loop, &info);
	if (cfg->greeting != NULL && chain_expand(c->cs, cfg->greeting,
	    c->greeting, sizeof(c->greeting)) == 0)
		c->params.greeting = c->greeting;
}

static void
conn_greet(struct conn *c)
{
	c->started = true;
	smtp_session_start(c->smtp);
	conn_process_input(c);
	conn_check_close(c);	/* a refusal at connect closes at once */
}

static void
conn_greet_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_greet(arg);
}

/* Bytes before the greeting: refuse and hang up. */
static void
conn_early_talker(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	char text[300];

	log_event(LOG_LVL_WARN, "early-talker", c->sid, NULL,
	    "ip=%s bytes=%zu", c->ip, evbuffer_get_length(in));
	if (c->cs != NULL)
		chain_session_set_early_talker(c->cs);
	evbuffer_drain(in, evbuffer_get_length(in));
	evtimer_del(c->greet_ev);
	c->started = true;
	util_snprintf(text, sizeof(text), "5.5.0 %s Protocol error: talked "
	    "before the greeting", conn_cfg(c)->hostname);
	smtp_session_close_with(c->smtp, 554, text);
	conn_check_close(c);
}

static void
conn_make_sid(char *sid, size_t sidsz)
{
	static atomic_uint_fast64_t next;
	static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	uint64_t n;
	char tmp[16];
	size_t i = 0;

	if (atomic_load(&next) == 0) {
		uint64_t seed = 0;
		if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
			seed = util_wall_us();
		uint_fast64_t zero = 0;
		atomic_compare_exchange_strong(&next, &zero, seed | 1);
	}
	n = atomic_fetch_add(&next, 1);
	do {
		tmp[i++] = digits[n % 36];
		n /= 36;
	} while (n != 0 && i < sizeof(tmp));
	for (size_t j = 0; j < i && j + 1 < sidsz; j++)
		sid[j] = tmp[i - 1 - j];
	sid[i < sidsz ? i : sidsz - 1] = '\0';
}

void
conn_new(struct conn_ctx *ctx, int fd, const struct sockaddr *sa,
    socklen_t salen, size_t listen_idx)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	const struct config *cfg;

	(void)salen;
	c->ctx = ctx;
	c->rt = conn_rt_ref(ctx->rt);
	cfg = conn_cfg(c);
	ASSERT(listen_idx < cfg->nlistens);
	c->lcfg = &cfg->listens[listen_idx];
	c->tls = c->rt->tls_listen[listen_idx];
	c->start_ms = util_now_ms();
	conn_make_sid(c->sid, sizeof(c->sid));
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, c->ip, sizeof(c->ip));
		c->port = ntohs(s6->sin6_port);
		c->ipv6 = true;
	} else {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, c->ip, sizeof(c->ip));
		c->port = ntohs(s4->sin_port);
	}
	ctx->nconns++;
	c->next = ctx->conns;
	if (c->next != NULL)
		c->next->prev = c;
	ctx->conns = c;
	log_event(LOG_LVL_INFO, "connect", c->sid, NULL, "ip=%s port=%d",
	    c->ip, c->port);
	if (cfg->translog_dir != NULL)
		c->translog = log_translog_open(cfg->translog_dir, c->ip,
		    c->sid);

	c->params.lim.line_max = cfg->limits.line_max;
	c->params.lim.msg_max = cfg->limits.msg_max;
	c->params.lim.rcpt_max = cfg->limits.rcpt_max;
	c->params.lim.err_max = cfg->limits.err_max;
	c->params.hostname = cfg->hostname;
	c->params.greeting = cfg->greeting;
	conn_chain_start(c, ctx, cfg);
	c->params.starttls = c->tls != NULL && !c->lcfg->no_starttls &&
	    !c->lcfg->implicit_tls;
	c->params.tls_active = false;
	c->params.require_tls = c->lcfg->require_tls;
	c->params.auth = c->lcfg->auth && cfg->auth_table != NULL;
	c->params.auth_plaintext = c->lcfg->auth_plaintext;
	c->smtp = smtp_session_new(&c->params, &conn_smtp_hooks, c);

	SSL *ssl = c->lcfg->implicit_tls ? tls_server_ssl_new(c->tls) : NULL;
	if (ssl != NULL)
		c->bev = bufferevent_openssl_socket_new(ctx->base, fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	else
		c->bev = bufferevent_socket_new(ctx->base, fd,
		    BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
	    c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_READ_HIGH);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	conn_set_timeouts(c);
	c->deadline_ev = evtimer_new(ctx->base, conn_deadline_cb, c);
	struct timeval tv = {
		(time_t)(cfg->limits.session_ms / 1000),
		(suseconds_t)(cfg->limits.session_ms % 1000) * 1000 };
	evtimer_add(c->deadline_ev, &tv);

	if (c->lcfg->implicit_tls) {
		/* The greeting waits for the handshake (conn_tls_done). */
		if (ssl == NULL) {
			log_event(LOG_LVL_ERROR, "tls-error", c->sid, NULL,
			    "why=\"no TLS context\"");
			c->peer_gone = true;
			conn_free(c);
			return;
		}
		conn_hs_deadline(c);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		return;
	}
	if (cfg->limits.greeting_delay_ms > 0) {
		/* Listen before speaking: early talkers give themselves away. */
		uint64_t ms = cfg->limits.greeting_delay_ms;
		struct timeval gtv = { (time_t)(ms / 1000),
		    (suseconds_t)(ms % 1000) * 1000 };
		c->greet_ev = evtimer_new(ctx->base, conn_greet_cb, c);
		evtimer_add(c->greet_ev, &gtv);
		bufferevent_enable(c->bev, EV_READ);
		return;
	}
	conn_greet(c);
}

void
conn_shutdown_all(struct conn_ctx *ctx)
{
	struct conn *c, *next;

	for (c = ctx->conns; c != NULL; c = next) {
		next = c->next;
		if (c->closing || smtp_session_is_closing(c->smtp) ||
		    smtp_session_in_data(c->smtp) ||
		    smtp_session_is_waiting(c->smtp))
			continue;	/* in DATA: the commit closes it */
		smtp_session_close_with(c->smtp, 421,
		    "4.3.2 Service shutting down, closing channel");
		conn_check_close(c);
	}
}

void
conn_kill_all(struct conn_ctx *ctx)
{
	while (ctx->conns != NULL) {
		ctx->conns->peer_gone = true;
		conn_free(ctx->conns);
	}
}
