/*
 * conn/stage.c: the single decision point of a connection: every SMTP stage
 * gets our own checks, then its chain, then our work, which is handed to
 * envelope.c (MAIL, RCPT) and message.c (DATA, the end of a message).
 * Also AUTH's outcome once the credentials are checked (auth.c checks them),
 * and the body and reset hooks.
 */
#include "conn/conn_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "chain/chain.h"
#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "smtp/smtp.h"

void
conn_set_reply(struct smtp_reply *r, int code, const char *fmt, ...)
{
	va_list ap;

	r->code = code;
	va_start(ap, fmt);
	if (vsnprintf(r->text, sizeof(r->text), fmt, ap) < 0)
		r->text[0] = '\0';
	va_end(ap);
}

/*
 * "nomail after-data" (the listener's, or a handler's session.nomail):
 * every recipient is taken, never routed, and the message's content is
 * answered 521.
 */
bool
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
		    conn_nomail_after_data(c) ? CONN_RCPT_CLIENT_NO_DELIVER :
		    CONN_RCPT_CLIENT, r);
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
	if (ev == &c->wait_ev)
		return;		/* kept already: its arg is ours */
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

	conn_resume(c, conn_after_chain(c, &c->wait_ev, res, &r), &r);
}

enum smtp_verdict
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

/* A refused AUTH's 535, after the tarpit. */
static void
conn_auth_tarpit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct smtp_reply r = { 0 };

	(void)fd;
	(void)what;
	conn_set_reply(&r, 535, "5.7.8 Authentication credentials invalid");
	conn_resume(c, SMTP_REJECT, &r);
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
	if (rc < 0) {
		/* RFC 4954 6: 454 4.7.0, a temporary failure. */
		static const char *const text[] = {
			"4.7.0 Temporary authentication failure, try again "
			    "later",
			"4.7.0 Too many authentication failures, try again "
			    "later",
			"4.7.0 Authentication not available to your address "
			    "now, try again later",
		};
		log_event(LOG_LVL_WARN, "auth-failed", c->sid, NULL,
		    "ip=%s user=\"%s\" why=\"%s\"", c->ip, safe, rc == -1 ?
		    "backend unavailable" : "client on the ban list");
		conn_set_reply(&r, 454, "%s", text[-rc - 1]);
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
	/* Only a stage with handlers can wait for its chain. */
	if (chain_set_has(c->rt->chains, ev->stage))
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
	uint64_t size;

	/* Content that got no end-of-message stage ends here. */
	if (smtp_session_content_dropped(c->smtp, &size))
		log_translog_end_data(c->translog, size);
	if (c->cs != NULL)
		chain_session_tx_reset(c->cs);
	conn_tx_release(&c->tx);
	if (c->px != NULL)
		conn_proxy_reset(c);
}
