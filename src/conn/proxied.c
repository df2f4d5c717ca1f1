/*
 * conn/proxied.c: a connection on a proxy listener.  The client's side is
 * as on any listener (smtp/ reads it, limits and timeouts hold, every
 * stage's chain runs); what a stage's chain lets through is relayed to the
 * upstream by proxy/ instead of routed and spooled, and the client gets
 * the upstream's reply as it came.  Content goes up as it arrives, or is
 * held in a spool file until the header and eom chains have decided.
 */
#include "conn/conn_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "chain/chain.h"
#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "proxy/proxy.h"
#include "route/route.h"
#include "smtp/smtp.h"
#include "spool/spool.h"

struct conn_proxy {
	struct proxy_session	*ps;		/* owned */
	struct util_buf		 line;		/* the client's last command */
	char			*secret;	/* owned: AUTH's password until
						   it went up, wiped */
	bool			 hold;		/* content waits in a file for
						   the header and eom chains */
	enum smtp_stage		 stage;		/* the one relayed */
	bool			 relaying;	/* its answer is still to come */
	char			 local_ip[INET6_ADDRSTRLEN]; /* what the
						   client reached */
	int			 local_port;
};

static void
conn_proxy_answer_cb(void *arg, enum smtp_verdict v, int code,
    const char *raw, size_t len)
{
	struct conn *c = arg;
	char safe[600];
	const char *a = c->wait_arg != NULL ? c->wait_arg : "";

	c->px->relaying = false;
	if (v == SMTP_OK) {
		switch (c->px->stage) {
		case SMTP_STAGE_MAIL:
			(void)conn_mail_begin(c, &c->wait_ev);
			break;
		case SMTP_STAGE_RCPT:
			c->nrcpts++;
			log_event(LOG_LVL_INFO, "rcpt", c->sid, NULL, "to=<%s> "
			    "action=proxy", log_safe_word_into(safe, sizeof(safe),
			    a, strlen(a)));
			if (c->cs != NULL)
				chain_session_rcpt_accepted(c->cs, a);
			break;
		case SMTP_STAGE_AUTH:
			log_event(LOG_LVL_INFO, "auth", c->sid, NULL, "user=\"%s\" "
			    "by=upstream", log_safe_into(safe, sizeof(safe), a,
			    strlen(a)));
			if (c->cs != NULL)
				chain_session_set_auth(c->cs, a);
			break;
		case SMTP_STAGE_EOM:
			c->nmsgs++;
			if (c->cs != NULL)
				chain_session_message_accepted(c->cs);
			break;
		default:
			break;
		}
	}
	smtp_session_resume_raw(c->smtp, v, code, raw, len);
	if (c->px->stage == SMTP_STAGE_EOM)
		conn_eom_answered(c);
	conn_process_input(c);
	conn_check_close(c);
}

/* The upstream went while the client waited on nothing: 421 and close. */
static void
conn_proxy_lost_cb(void *arg)
{
	struct conn *c = arg;
	char text[300];

	util_snprintf(text, sizeof(text), "4.4.2 %s Error: upstream "
	    "connection lost", conn_cfg(c)->hostname);
	smtp_session_close_with(c->smtp, 421, text);
	conn_check_close(c);
}

static void
conn_proxy_drained_cb(void *arg)
{
	struct conn *c = arg;

	conn_process_input(c);
	conn_check_close(c);
}

/* Transcripts: a line to the upstream ('}'), or one from it ('{'). */
static void
conn_proxy_trace_cb(void *arg, bool to_upstream, const char *line,
    size_t len)
{
	struct conn *c = arg;

	log_translog_line(c->translog, to_upstream ? LOG_TL_UP_OUT :
	    LOG_TL_UP_IN, line, len);
}

static const struct proxy_hooks conn_proxy_hooks = {
	.answer_cb = conn_proxy_answer_cb,
	.lost_cb = conn_proxy_lost_cb,
	.drained_cb = conn_proxy_drained_cb,
	.trace_cb = conn_proxy_trace_cb,
};

void
conn_proxy_start(struct conn *c, int fd, const struct conn_origin *origin)
{
	const struct config *cfg = conn_cfg(c);
	const struct config_listen *l = c->lcfg;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	const char *err;

	c->px = xcalloc(1, sizeof(*c->px));
	metrics_inc(MET_PROXY_SESSIONS, 0, 0);
	/* Behind a balancer, the address the client reached is its header's. */
	if (origin != NULL && origin->local_ip != NULL) {
		util_strlcpy(c->px->local_ip, origin->local_ip,
		    sizeof(c->px->local_ip));
		c->px->local_port = origin->local_port;
	} else if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		(void)util_sockaddr_text((struct sockaddr *)&ss,
		    c->px->local_ip, &c->px->local_port);
	if ((l->proxy_sni != NULL || l->proxy_rcpt != NULL) &&
	    c->chain_loop == NULL && !c->chain_broken &&
	    (c->chain_loop = conn_chain_take(c->ctx, &err)) == NULL) {
		log_event(LOG_LVL_ERROR, "chain-error", c->sid, NULL,
		    "why=\"%s\"", err);
		c->chain_broken = true;	/* 421 at connect */
	}
	if (c->ctx->proxy_loop == NULL)
		c->ctx->proxy_loop = proxy_loop_new();
	struct proxy_session_info info = {
		.base = c->ctx->base,
		.loop = c->ctx->proxy_loop,
		.set = c->rt->proxies,
		.up = l->proxy,
		.by_sni = l->proxy_sni != NULL ? route_table_of(c->rt->router,
		    l->proxy_sni) : NULL,
		.by_rcpt = l->proxy_rcpt != NULL ? route_table_of(
		    c->rt->router, l->proxy_rcpt) : NULL,
		.tables = c->chain_loop != NULL ?
		    chain_loop_tables(c->chain_loop) : NULL,
		.sid = c->sid,
		.hostname = cfg->hostname,
		.client_ip = c->ip,
		.client_port = c->port,
		.local_ip = c->px->local_ip,
		.local_port = c->px->local_port,
		.starttls = c->params.starttls,
		.auth = l->auth,
		.auth_plaintext = l->auth_plaintext,
		.size_max = cfg->limits.msg_max,
	};
	c->px->ps = proxy_session_new(&info, &conn_proxy_hooks, c);
	c->px->hold = c->cs != NULL && (chain_set_has(c->rt->chains,
	    SMTP_STAGE_EOM) || chain_set_has(c->rt->chains,
	    SMTP_STAGE_HEADER));
}

void
conn_ctx_proxy_clear(struct conn_ctx *ctx)
{
	proxy_loop_free(&ctx->proxy_loop);
}

void
conn_proxy_free(struct conn *c)
{
	if (c->px == NULL)
		return;
	proxy_session_free(&c->px->ps);
	util_buf_clear(&c->px->line);
	conn_proxy_keep_secret(c, NULL);
	free(c->px);
	c->px = NULL;
}

void
conn_proxy_line(struct conn *c, const char *line, size_t len)
{
	util_buf_reset(&c->px->line);
	util_buf_add(&c->px->line, line, len);
}

void
conn_proxy_keep_secret(struct conn *c, const char *secret)
{
	if (c->px->secret != NULL) {
		OPENSSL_cleanse(c->px->secret, strlen(c->px->secret));
		free(c->px->secret);
	}
	c->px->secret = secret != NULL ? xstrdup(secret) : NULL;
}

/* Relay rq for stage: PENDING until the answer, or OK when it was ours. */
static enum smtp_verdict
conn_proxy_relay(struct conn *c, const struct smtp_event *ev,
    struct proxy_request *rq)
{
	if (ev != &c->wait_ev)
		conn_keep_event(c, ev);	/* the answer needs its argument */
	c->px->stage = ev->stage;
	if (rq->line == NULL)
		rq->line = util_buf_cstr(&c->px->line);
	int rc = proxy_session_relay(c->px->ps, rq);
	conn_proxy_keep_secret(c, NULL);
	c->px->relaying = rc == 1;
	if (rc == 1)
		return SMTP_PENDING;
	if (ev->stage == SMTP_STAGE_MAIL)
		(void)conn_mail_begin(c, ev);	/* the first RCPT relays it */
	return SMTP_OK;
}

/* DATA of a held message: a spool file, no trace header (transparent). */
static enum smtp_verdict
conn_proxy_hold(struct conn *c)
{
	char qid[SPOOL_QID_MAX];

	spool_new_qid(c->ctx->spool, qid);
	conn_tx_begin(c->tx, qid, conn_cfg(c)->hostname);
	return SMTP_OK;
}

enum smtp_verdict
conn_proxy_stage(struct conn *c, const struct smtp_event *ev,
    struct smtp_reply *r)
{
	const struct config *cfg = conn_cfg(c);
	struct proxy_request rq = { .arg = ev->arg };
	char safe[300];

	switch (ev->stage) {
	case SMTP_STAGE_HELO:
		log_event(LOG_LVL_INFO, "helo", c->sid, NULL, "name=\"%s\" "
		    "esmtp=%s", log_safe_into(safe, sizeof(safe), ev->arg,
		    strlen(ev->arg)), ev->esmtp ? "yes" : "no");
		rq.cmd = PROXY_CMD_HELO;
		rq.esmtp = ev->esmtp;
		return conn_proxy_relay(c, ev, &rq);
	case SMTP_STAGE_AUTH:
		rq.cmd = PROXY_CMD_AUTH;
		rq.secret = c->px->secret != NULL ? c->px->secret : "";
		return conn_proxy_relay(c, ev, &rq);
	case SMTP_STAGE_MAIL:
		if (c->nmsgs >= cfg->limits.msgs_per_session_max) {
			r->code = 452;
			util_strlcpy(r->text, "4.5.3 Too many messages in this "
			    "session", sizeof(r->text));
			return SMTP_REJECT;
		}
		rq.cmd = PROXY_CMD_MAIL;
		return conn_proxy_relay(c, ev, &rq);
	case SMTP_STAGE_RCPT:
		if (c->nrcpts >= cfg->limits.rcpts_per_session_max) {
			r->code = 452;
			util_strlcpy(r->text, "4.5.3 Too many recipients in "
			    "this session", sizeof(r->text));
			return SMTP_REJECT;
		}
		rq.cmd = PROXY_CMD_RCPT;
		return conn_proxy_relay(c, ev, &rq);
	case SMTP_STAGE_DATA:
		if (c->px->hold)
			return conn_proxy_hold(c);	/* our 354; DATA later */
		rq.cmd = PROXY_CMD_DATA;
		rq.line = "DATA";	/* BDAT's content goes up as DATA */
		return conn_proxy_relay(c, ev, &rq);
	case SMTP_STAGE_QUIT:
		rq.cmd = PROXY_CMD_QUIT;
		rq.line = "QUIT";
		return conn_proxy_relay(c, ev, &rq);
	default:
		return SMTP_OK;
	}
}

/* A filter's header edits go up with the message; its envelope cannot. */
static int
conn_proxy_mods(struct conn *c, struct util_buf *head, size_t *old_out,
    struct smtp_reply *r)
{
	size_t n;
	const struct chain_mod *m = chain_session_mods(c->cs, &n);
	bool hdr = false;
	char safe[600];

	for (size_t i = 0; i < n; i++) {
		if (m[i].kind != CHAIN_MOD_SENDER &&
		    m[i].kind != CHAIN_MOD_RCPT_ADD &&
		    m[i].kind != CHAIN_MOD_RCPT_DEL) {
			hdr = true;
			continue;
		}
		log_event(LOG_LVL_WARN, "modify-refused", c->sid, NULL,
		    "value=<%s> why=\"the upstream has the envelope already\"",
		    log_safe_word_into(safe, sizeof(safe), m[i].value,
		    strlen(m[i].value)));
	}
	if (!hdr || !c->px->hold)
		return 0;
	return conn_mods_head(c, head, old_out, r);
}

enum smtp_verdict
conn_proxy_eom(struct conn *c, struct smtp_reply *r)
{
	const char *act = NULL;
	enum chain_disposition d = c->cs != NULL ?
	    chain_session_disposition(c->cs, &act) : CHAIN_DISP_DELIVER;
	struct proxy_request rq = { .cmd = PROXY_CMD_EOM };
	struct smtp_event ev = { .stage = SMTP_STAGE_EOM, .arg = "" };
	struct util_buf head = { 0 };
	size_t old = 0;
	char *path = NULL;

	if (d == CHAIN_DISP_DISCARD) {
		/* Accepted and dropped: the upstream never sees an end. */
		log_event(LOG_LVL_INFO, "discarded", c->sid, NULL, "proxy=yes");
		proxy_session_reset(c->px->ps);
		return SMTP_OK;
	}
	if (d == CHAIN_DISP_QUARANTINE) {
		r->code = 451;
		util_strlcpy(r->text, "4.3.0 Quarantine is not available on "
		    "a proxy listener", sizeof(r->text));
		return SMTP_REJECT;
	}
	if (c->cs != NULL && conn_proxy_mods(c, &head, &old, r) == -1)
		return SMTP_REJECT;
	if (c->px->hold) {
		path = conn_tx_path(c->tx);
		rq.held_path = path;
		rq.head = head.data;
		rq.head_len = head.len;
		rq.head_old = old;
	}
	rq.line = "";
	enum smtp_verdict v = conn_proxy_relay(c, &ev, &rq);
	free(path);
	util_buf_clear(&head);
	return v;
}

bool
conn_proxy_holds(const struct conn *c)
{
	return c->px != NULL && c->px->hold;
}

bool
conn_proxy_eom_out(const struct conn *c)
{
	return c->px != NULL && c->px->relaying &&
	    c->px->stage == SMTP_STAGE_EOM;
}

bool
conn_proxy_backlogged(struct conn *c)
{
	return c->px != NULL && proxy_session_backlogged(c->px->ps);
}

int
conn_proxy_body(struct conn *c, const char *buf, size_t len)
{
	return proxy_session_body(c->px->ps, buf, len);
}

void
conn_proxy_reset(struct conn *c)
{
	proxy_session_reset(c->px->ps);
}

void
conn_proxy_tls(struct conn *c, const char *sni)
{
	if (c->px != NULL)
		proxy_session_client_tls(c->px->ps, sni);
}

/* AUTH on a proxy listener that does not relay it (RFC 5321 4.2.4). */
bool
conn_proxy_refuses_auth(const struct conn *c, const char *verb,
    struct smtp_reply *r)
{
	if (c->px == NULL || c->lcfg->auth || strcmp(verb, "AUTH") != 0)
		return false;
	r->code = 500;
	util_strlcpy(r->text, "5.5.1 AUTH command not supported",
	    sizeof(r->text));
	return true;
}
