/*
 * proxy/session.c: one client's upstream side.  Each command the client's
 * chains let through becomes a request; the session makes sure of an
 * upstream for it (its route, connect, greeting, EHLO, STARTTLS, and the
 * client's MAIL again when a recipient picked the upstream), sends it,
 * and answers with the upstream's reply as the client gets it.  Knows
 * nothing of the spool or of the client's socket.
 */
#include "proxy/proxy_private.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "table/table.h"

static const struct proxy_link_ops ps_link_ops;

/* ----- life ----- */

static void	ps_later_cb(evutil_socket_t fd, short what, void *arg);

struct proxy_session *
proxy_session_new(const struct proxy_session_info *info,
    const struct proxy_hooks *hooks, void *arg)
{
	struct proxy_session *ps = xcalloc(1, sizeof(*ps));

	ps->info = *info;
	ps->hooks = hooks;
	ps->hook_arg = arg;
	ps->def = proxy_set_find(info->set, info->up->name);
	ASSERT(ps->def != NULL);
	ps->held_fd = -1;
	ps->later_ev = event_new(info->base, -1, 0, ps_later_cb, ps);
	proxy_reply_init(&ps->ehlo);
	return ps;
}

void
ps_drop_link(struct proxy_session *ps)
{
	/*
	 * RFC 5321 4.1.1.10: QUIT before the close, its reply waited for
	 * by the loop, never by the client.  Not in the middle of content:
	 * the upstream must never see an end of it.
	 */
	if (ps->up_data)
		proxy_link_free(&ps->link);
	else
		proxy_link_quit(&ps->link, ps->info.loop);
	ps->up = NULL;
	ps->step = PS_IDLE;
	ps->greeted = ps->hello_done = ps->up_esmtp = false;
	ps->tls_declined = ps->relayed = ps->up_tx = ps->up_data = false;
	ps->rset_due = ps->ehlo_fresh = ps->want_drain = false;
	memset(&ps->caps, 0, sizeof(ps->caps));
	if (ps->held_fd != -1)
		close(ps->held_fd);
	ps->held_fd = -1;
}

static void
ps_clear_request(struct proxy_session *ps)
{
	ps->active = false;
	ps->target = NULL;
	table_lookup_cancel(&ps->lookup);
	ps->spelling = 0;
	OPENSSL_cleanse(ps->line.data, ps->line.len);	/* may hold AUTH */
	util_buf_reset(&ps->line);
	free(ps->arg);
	ps->arg = NULL;
	free(ps->held_path);
	ps->held_path = NULL;
	util_buf_reset(&ps->held_head);
}

static void
ps_destroy(struct proxy_session *ps)
{
	ps_clear_request(ps);
	ps_drop_link(ps);
	event_free(ps->later_ev);
	util_buf_clear(&ps->later_raw);
	util_buf_clear(&ps->line);
	util_buf_clear(&ps->mail_line);
	util_buf_clear(&ps->held_head);
	proxy_reply_clear(&ps->ehlo);
	free(ps->client_sni);
	free(ps->helo);
	free(ps);
}

void
proxy_session_free(struct proxy_session **psp)
{
	struct proxy_session *ps = *psp;

	if (ps == NULL)
		return;
	*psp = NULL;
	if (ps->busy > 0) {
		ps->doomed = true;	/* a hook of ours is below on the stack */
		return;
	}
	ps_destroy(ps);
}

/* After a hook: false when the session was freed by it (gone now). */
static bool
ps_hook_done(struct proxy_session *ps)
{
	if (--ps->busy == 0 && ps->doomed) {
		ps_destroy(ps);
		return false;
	}
	return !ps->doomed;
}

/* ----- answers ----- */

void
ps_answer(struct proxy_session *ps, enum smtp_verdict v, int code,
    const char *raw, size_t len)
{
	if (ps->in_relay) {
		/*
		 * Never from inside proxy_session_relay(): from the loop.  The
		 * request is over now; only its answer waits, so nothing (an
		 * earlier answer's hook still below us) takes it up again.
		 */
		ps_clear_request(ps);
		ps->later_v = v;
		ps->later_code = code;
		util_buf_reset(&ps->later_raw);
		if (raw != NULL)
			util_buf_add(&ps->later_raw, raw, len);
		event_active(ps->later_ev, EV_TIMEOUT, 0);
		return;
	}
	ps_clear_request(ps);
	ps->busy++;
	ps->hooks->answer_cb(ps->hook_arg, v, code, raw, len);
	if (ps_hook_done(ps))
		ps_advance(ps);		/* an RSET the answer made due */
}

static void
ps_later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_session *ps = arg;

	(void)fd;
	(void)what;
	ps_answer(ps, ps->later_v, ps->later_code, ps->later_raw.len > 0 ?
	    ps->later_raw.data : NULL, ps->later_raw.len);
}

void
ps_answer_own(struct proxy_session *ps, enum smtp_verdict v, int code,
    const char *fmt, ...)
{
	char text[400], raw[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	if (vsnprintf(text, sizeof(text), fmt, ap) < 0)
		text[0] = '\0';
	va_end(ap);
	/* A client's address may be in it: printable ASCII only. */
	for (char *p = text; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	n = snprintf(raw, sizeof(raw), "%d %s\r\n", code, text);
	ps_answer(ps, v, code, raw, n > 0 && (size_t)n < sizeof(raw) ?
	    (size_t)n : 0);
}

/* The upstream failed the request: 421 4.4.2 and the close. */
static void
ps_answer_lost(struct proxy_session *ps, const char *what)
{
	if (ps->cmd == PROXY_CMD_QUIT) {
		ps_answer(ps, SMTP_OK, 0, NULL, 0);	/* still our 221 */
		return;
	}
	ps_answer_own(ps, SMTP_CLOSE, 421, "4.4.2 %s Error: %s",
	    ps->info.hostname, what);
}

/* The verdict an upstream's reply to cmd stands for; -1: no such reply. */
static int
ps_verdict(enum proxy_cmd cmd, int code)
{
	if (code == 421)
		return SMTP_CLOSE;
	if (code >= 400 && code <= 599)
		return SMTP_REJECT;
	switch (cmd) {
	case PROXY_CMD_DATA:
		return code == 354 ? SMTP_OK : -1;
	case PROXY_CMD_AUTH:
		return code == 235 ? SMTP_OK : -1;
	default:
		return code >= 200 && code <= 299 ? SMTP_OK : -1;
	}
}

static void
ps_keep_reply(struct proxy_reply *dst, const struct proxy_reply *r)
{
	proxy_reply_init(dst);
	util_buf_add(&dst->wire, r->wire.data, r->wire.len);
	dst->code = r->code;
	dst->nlines = r->nlines;
}

/* The client's EHLO gets the upstream's last one, filtered. */
static void
ps_relay_ehlo(struct proxy_session *ps)
{
	struct util_buf out = { 0 };
	struct proxy_ehlo_opts o = {
		.starttls = ps->info.starttls && !ps->client_tls,
		.auth = ps->info.auth && (ps->client_tls ||
		    ps->info.auth_plaintext),
		.size_max = ps->info.size_max,
	};

	proxy_ehlo_filter(&ps->ehlo, &o, &out);
	ps->relayed = true;
	ps_answer(ps, SMTP_OK, ps->ehlo.code, out.data, out.len);
	util_buf_clear(&out);
}

/* The upstream's reply r answers the client's request. */
static void
ps_relay(struct proxy_session *ps, const struct proxy_reply *r)
{
	int v = ps_verdict(ps->cmd, r->code);
	char safe[80];

	if (v == -1) {
		log_event(LOG_LVL_WARN, "proxy-error", ps->info.sid, NULL,
		    "up=%s why=\"unexpected reply\" reply=\"%s\"",
		    ps->up->cfg->name, log_safe_into(safe, sizeof(safe),
		    r->wire.data, r->wire.len));
		metrics_inc(MET_PROXY_FAILURES, MET_PX_PROTOCOL, 0);
		ps_drop_link(ps);
		ps_answer_lost(ps, "upstream protocol error");
		return;
	}
	if (v == SMTP_CLOSE || ps->cmd == PROXY_CMD_QUIT) {
		/* It closes itself: no QUIT after 421 or 221.  r lives
		 * through the call. */
		proxy_link_free(&ps->link);
		ps_drop_link(ps);
	} else if (v == SMTP_OK && ps->cmd == PROXY_CMD_HELO) {
		ps->up_tx = false;
		if (ps->esmtp) {
			ps_keep_reply(&ps->ehlo, r);
			proxy_caps_parse(&ps->ehlo, &ps->caps);
			ps_relay_ehlo(ps);
			return;
		}
		ps->relayed = true;
	} else if (v == SMTP_OK && ps->cmd == PROXY_CMD_MAIL)
		ps->up_tx = true;
	else if (v == SMTP_OK && ps->cmd == PROXY_CMD_DATA)
		ps_content_begin(ps);
	if (ps->cmd == PROXY_CMD_EOM)
		log_event(LOG_LVL_INFO, "proxied", ps->info.sid, NULL,
		    "up=%s code=%d", ps->up != NULL ? ps->up->cfg->name : "-",
		    r->code);
	ps_answer(ps, (enum smtp_verdict)v, r->code, r->wire.data,
	    r->wire.len);
}

/* ----- the upstream's side ----- */

static bool
ps_wants_tls(const struct proxy_session *ps)
{
	enum config_relay_tls t = ps->up->cfg->relay.tls;

	if (proxy_link_is_tls(ps->link) || t == CONFIG_RELAY_TLS)
		return false;
	return t == CONFIG_RELAY_STARTTLS || (ps->caps.starttls &&
	    !ps->tls_declined);
}

static const char *
ps_up_sni(const struct proxy_session *ps, const struct proxy_upstream *up)
{
	if (up->cfg->sni_pass && ps->client_sni != NULL &&
	    ps->client_sni[0] != '\0')
		return ps->client_sni;
	return up->cfg->sni != NULL ? up->cfg->sni : up->cfg->relay.host;
}

static void
ps_open(struct proxy_session *ps)
{
	char hdr[PROXY_HEADER_MAX];
	size_t n = 0;
	const struct config_upstream *cu = ps->target->cfg;

	if (cu->proxy_protocol != 0) {
		struct util_proxyhdr h;

		util_proxyhdr_set(&h, ps->info.client_ip,
		    ps->info.client_port, ps->info.local_ip,
		    ps->info.local_port);
		n = util_proxyhdr_write(&h, cu->proxy_protocol, hdr,
		    sizeof(hdr));
	}
	ps->up = ps->target;
	ps->step = PS_GREET;
	ps->link = proxy_link_new(ps->info.base, ps->up, &ps_link_ops, ps, hdr,
	    n, ps_up_sni(ps, ps->up));
}

static void
ps_send(struct proxy_session *ps, enum ps_step step, const char *line,
    size_t len, enum proxy_to to, bool secret)
{
	ps->step = step;
	proxy_link_command(ps->link, line, len, ps->up->to_ms[to], secret);
}

/* "EHLO name" or "HELO name" with the client's name. */
static void
ps_send_hello(struct proxy_session *ps, enum ps_step step, const char *verb)
{
	char *line = xasprintf("%s %s", verb, ps->helo != NULL ? ps->helo :
	    ps->info.hostname);

	ps_send(ps, step, line, strlen(line), PROXY_TO_COMMAND, false);
	free(line);
}

/* RFC 5321 4.5.3.1.4: a command line, CRLF included. */
#define PS_CMD_LINE_MAX	512

/* Octets of the base64 of n octets (RFC 4648 4). */
static size_t
ps_b64_len(size_t n)
{
	return 4 * ((n + 2) / 3);
}

/*
 * Send prefix and the client's PLAIN response (RFC 4616) in base64 on one
 * line, the buffers wiped after (RFC 4954 14); its reply is relayed.
 */
static void
ps_send_response(struct proxy_session *ps, const char *prefix)
{
	size_t n = ps->line.len;
	char *b = xmalloc(ps_b64_len(n) + 1);
	char *line;

	EVP_EncodeBlock((unsigned char *)b, (unsigned char *)ps->line.data,
	    (int)n);
	line = xasprintf("%s%s", prefix, b);
	ps_send(ps, PS_CMD, line, strlen(line), PROXY_TO_COMMAND, true);
	OPENSSL_cleanse(b, strlen(b));
	OPENSSL_cleanse(line, strlen(line));
	free(b);
	free(line);
}

/*
 * AUTH PLAIN with the client's credentials.  RFC 4954 4: the response
 * goes on the command line only when that line stays within the limit;
 * else "AUTH PLAIN" alone, and the response after the upstream's 334.
 */
static void
ps_send_auth(struct proxy_session *ps)
{
	static const char cmd[] = "AUTH PLAIN ";

	if (ps_b64_len(ps->line.len) <= PS_CMD_LINE_MAX - (sizeof(cmd) - 1) -
	    2)
		ps_send_response(ps, cmd);
	else
		ps_send(ps, PS_AUTH, "AUTH PLAIN", 10, PROXY_TO_COMMAND,
		    false);
}

/* The request itself, once the upstream is ready for it. */
static void
ps_send_request(struct proxy_session *ps)
{
	switch (ps->cmd) {
	case PROXY_CMD_HELO:
		if (ps->ehlo_fresh && ps->up_esmtp && ps->esmtp) {
			/* Setting up sent this very EHLO: its reply is it. */
			ps_relay_ehlo(ps);
			return;
		}
		break;
	case PROXY_CMD_AUTH:
		ps_send_auth(ps);
		return;
	case PROXY_CMD_EOM:
		if (ps->held_path != NULL) {
			ps_send(ps, PS_DATA_HELD, "DATA", 4,
			    PROXY_TO_DATA_INIT, false);
			return;
		}
		if (!ps->up_data) {
			ps_answer_own(ps, SMTP_REJECT, 451, "4.3.0 No upstream "
			    "transaction to end");
			return;
		}
		ps_content_end(ps);
		return;
	default:
		break;
	}
	ps_send(ps, PS_CMD, ps->line.data, ps->line.len, ps->cmd ==
	    PROXY_CMD_DATA ? PROXY_TO_DATA_INIT : PROXY_TO_COMMAND, false);
}

/*
 * Take the next step toward the request: an RSET that is due, its route,
 * the connection, greeting, EHLO and TLS, the client's MAIL again for a
 * recipient that picked the upstream, then the request.
 */
void
ps_advance(struct proxy_session *ps)
{
	if (ps->link != NULL && ps->step != PS_IDLE)
		return;		/* a reply is due first */
	if (ps->rset_due) {
		ps->rset_due = false;
		if (ps->link != NULL && ps->hello_done && ps->up_tx) {
			ps_send(ps, PS_RSET, "RSET", 4, PROXY_TO_COMMAND,
			    false);
			return;
		}
	}
	if (!ps->active || ps->lookup != NULL)
		return;
	if (ps->target == NULL && !ps_route(ps))
		return;
	if (ps->cmd == PROXY_CMD_RCPT && ps->info.by_rcpt != NULL &&
	    ps->up_tx && ps->link != NULL && ps->target != ps->up) {
		/* RFC 5321 4.5.3.1.10: the client sends it again later. */
		ps_answer_own(ps, SMTP_REJECT, 452, "4.5.3 <%s>: another "
		    "server takes this recipient; send it in a transaction of "
		    "its own", ps->arg != NULL ? ps->arg : "");
		return;
	}
	if (ps->link != NULL && ps->up != ps->target)
		ps_drop_link(ps);	/* another upstream for this client */
	if (ps->link == NULL) {
		ps_open(ps);
		return;
	}
	if (!ps->hello_done)
		ps_send_hello(ps, PS_EHLO, "EHLO");
	else if (ps_wants_tls(ps))
		ps_send(ps, PS_STARTTLS, "STARTTLS", 8, PROXY_TO_COMMAND,
		    false);
	else if (ps->cmd == PROXY_CMD_RCPT && ps->info.by_rcpt != NULL &&
	    !ps->up_tx)
		ps_send(ps, PS_REPLAY, ps->mail_line.data, ps->mail_line.len,
		    PROXY_TO_COMMAND, false);
	else
		ps_send_request(ps);
}

/* ----- the link's callbacks ----- */

/* Setting up failed on reply r: the client gets it (4xx/5xx) and the end. */
static void
ps_setup_refused(struct proxy_session *ps, const struct proxy_reply *r,
    const char *what)
{
	char safe[200];

	log_event(LOG_LVL_WARN, "proxy-error", ps->info.sid, NULL, "up=%s "
	    "why=\"%s refused\" reply=\"%s\"", ps->up->cfg->name, what,
	    log_safe_into(safe, sizeof(safe), r->wire.data, r->wire.len));
	metrics_inc(MET_PROXY_FAILURES, MET_PX_REFUSED, 0);
	ps_drop_link(ps);
	if (!ps->active)
		return;
	if (r->code >= 400 && r->code <= 599 && ps->cmd != PROXY_CMD_QUIT)
		ps_answer(ps, SMTP_CLOSE, r->code, r->wire.data, r->wire.len);
	else
		ps_answer_lost(ps, "upstream not available");
}

/*
 * A reply while setting up (greeting, EHLO/HELO, STARTTLS).  True when
 * the next step may go; false when this one sent another or ended it.
 */
static bool
ps_setup_reply(struct proxy_session *ps, enum ps_step st,
    const struct proxy_reply *r)
{
	bool ok = r->code / 100 == 2;

	if (st == PS_EHLO && r->code / 100 == 5) {
		ps_send_hello(ps, PS_HELO, "HELO");	/* RFC 5321 4.1.4 */
		return false;
	}
	if (st == PS_STARTTLS && r->code == 220) {
		ps->step = PS_TLS;
		proxy_link_starttls(ps->link, ps_up_sni(ps, ps->up));
		return false;
	}
	if (st == PS_STARTTLS && ps->up->cfg->relay.tls !=
	    CONFIG_RELAY_STARTTLS) {
		ps->tls_declined = true;	/* offered, then refused: plain */
		return true;
	}
	if (!ok || st == PS_STARTTLS) {
		ps_setup_refused(ps, r, st == PS_GREET ? "the greeting" :
		    st == PS_EHLO ? "EHLO" : st == PS_HELO ? "HELO" :
		    "STARTTLS");
		return false;
	}
	if (st == PS_GREET) {
		ps->greeted = true;
		log_event(LOG_LVL_INFO, "proxy-connect", ps->info.sid, NULL,
		    "up=%s peer=%s", ps->up->cfg->name,
		    proxy_link_peer(ps->link));
		return true;
	}
	if (st == PS_EHLO) {
		ps_keep_reply(&ps->ehlo, r);
		proxy_caps_parse(&ps->ehlo, &ps->caps);
		ps->up_esmtp = ps->ehlo_fresh = true;
	}
	ps->hello_done = true;
	ps->up_tx = false;	/* RFC 5321 4.1.4: a new EHLO is an RSET */
	return true;
}

static void
ps_reply_cb(void *arg, const struct proxy_reply *r)
{
	struct proxy_session *ps = arg;
	enum ps_step st = ps->step;

	ps->step = PS_IDLE;
	switch (st) {
	case PS_GREET:
	case PS_EHLO:
	case PS_HELO:
	case PS_STARTTLS:
		if (!ps_setup_reply(ps, st, r))
			return;
		break;
	case PS_REPLAY:
		if (r->code / 100 != 2) {
			ps_relay(ps, r);	/* the RCPT gets the MAIL's */
			return;
		}
		ps->up_tx = true;
		break;
	case PS_RSET:
		ps->up_tx = false;
		break;
	case PS_DATA_HELD:
		if (r->code == 354) {
			ps_held_start(ps);
			return;
		}
		ps->cmd = PROXY_CMD_DATA;	/* its refusal is the answer */
		ps_relay(ps, r);
		return;
	case PS_AUTH:
		if (r->code == 334) {
			ps_send_response(ps, "");
			return;
		}
		ps_relay(ps, r);	/* a refusal is the client's answer */
		return;
	case PS_DOT:
		ps->up_data = ps->up_tx = false;
		/* FALLTHROUGH */
	case PS_CMD:
		ps_relay(ps, r);
		return;
	default:
		metrics_inc(MET_PROXY_FAILURES, MET_PX_PROTOCOL, 0);
		ps_drop_link(ps);
		if (ps->active)
			ps_answer_lost(ps, "upstream protocol error");
		return;
	}
	ps_advance(ps);
}

static void
ps_fail_cb(void *arg, const char *why)
{
	struct proxy_session *ps = arg;
	bool waited = ps->active && ps->step != PS_IDLE;
	bool greeting = ps->step == PS_GREET;
	bool fatal = ps->relayed || ps->up_tx || ps->up_data;

	log_event(LOG_LVL_WARN, "proxy-lost", ps->info.sid, NULL, "up=%s "
	    "peer=%s why=\"%s\"", ps->up->cfg->name, proxy_link_peer(ps->link),
	    why);
	metrics_inc(MET_PROXY_FAILURES, greeting ? MET_PX_UNAVAILABLE :
	    MET_PX_LOST, 0);
	ps_drop_link(ps);
	if (waited) {
		ps_answer_lost(ps, greeting ? "upstream not available" :
		    "upstream connection lost");
		return;
	}
	if (!fatal)
		return;		/* the next command connects again */
	ps->busy++;
	ps->hooks->lost_cb(ps->hook_arg);
	(void)ps_hook_done(ps);
}

static void
ps_tls_cb(void *arg)
{
	struct proxy_session *ps = arg;

	log_event(LOG_LVL_INFO, "proxy-tls", ps->info.sid, NULL, "up=%s",
	    ps->up->cfg->name);
	ps->step = PS_IDLE;
	/* RFC 3207 4.2: what the upstream said before counts no more. */
	ps->hello_done = ps->ehlo_fresh = false;
	memset(&ps->caps, 0, sizeof(ps->caps));
	ps_advance(ps);
}

static void
ps_drain_cb(void *arg)
{
	struct proxy_session *ps = arg;

	if (ps->step == PS_CONTENT) {
		ps_held_pump(ps);
		return;
	}
	if (!ps->want_drain)
		return;
	ps->want_drain = false;
	ps->busy++;
	ps->hooks->drained_cb(ps->hook_arg);
	(void)ps_hook_done(ps);
}

static void
ps_trace_cb(void *arg, bool out, const char *line, size_t len)
{
	struct proxy_session *ps = arg;

	/* Freed by its owner (the QUIT of ps_destroy): no one to tell. */
	if (ps->hooks->trace_cb != NULL && !ps->doomed)
		ps->hooks->trace_cb(ps->hook_arg, out, line, len);
}

static const struct proxy_link_ops ps_link_ops = {
	.reply_cb = ps_reply_cb,
	.fail_cb = ps_fail_cb,
	.tls_cb = ps_tls_cb,
	.drain_cb = ps_drain_cb,
	.trace_cb = ps_trace_cb,
};

/* ----- what the client's side asks ----- */

/* The upstream depends on what comes after EHLO: answer it ourselves. */
static bool
ps_hello_deferred(const struct proxy_session *ps)
{
	return ps->info.by_rcpt != NULL || (ps->info.by_sni != NULL &&
	    ps->info.starttls && !ps->client_tls);
}

int
proxy_session_relay(struct proxy_session *ps, const struct proxy_request *rq)
{
	ASSERT(!ps->active);
	switch (rq->cmd) {
	case PROXY_CMD_HELO:
		free(ps->helo);
		ps->helo = xstrdup(rq->arg);
		if (ps_hello_deferred(ps))
			return 0;
		break;
	case PROXY_CMD_MAIL:
		util_buf_reset(&ps->mail_line);
		util_buf_add(&ps->mail_line, rq->line, strlen(rq->line));
		if (ps->info.by_rcpt != NULL)
			return 0;	/* the first recipient picks */
		break;
	case PROXY_CMD_QUIT:
		/* After an RSET still due up: it goes first, then QUIT. */
		if (ps->link == NULL || !ps->hello_done)
			return 0;
		break;
	default:
		break;
	}
	ps->active = true;
	ps->cmd = rq->cmd;
	ps->esmtp = rq->esmtp;
	ps->ehlo_fresh = false;
	util_buf_reset(&ps->line);
	if (rq->cmd == PROXY_CMD_AUTH) {
		/* authzid NUL authcid NUL passwd (RFC 4616 2) */
		util_buf_add(&ps->line, "", 1);
		util_buf_addstr(&ps->line, rq->arg);
		util_buf_add(&ps->line, "", 1);
		util_buf_addstr(&ps->line, rq->secret);
	} else if (rq->line != NULL)
		util_buf_add(&ps->line, rq->line, strlen(rq->line));
	ps->arg = rq->arg != NULL ? xstrdup(rq->arg) : NULL;
	if (rq->held_path != NULL) {
		ps->held_path = xstrdup(rq->held_path);
		util_buf_add(&ps->held_head, rq->head, rq->head_len);
		ps->held_off = rq->head_old;
	}
	ps->in_relay = true;
	ps_advance(ps);
	ps->in_relay = false;
	return 1;
}

void
proxy_session_reset(struct proxy_session *ps)
{
	if (ps->link == NULL)
		return;
	if (ps->up_data || ps->step == PS_DATA_HELD ||
	    ps->step == PS_CONTENT || ps->step == PS_DOT) {
		/* No way to end DATA but the end: it must never come. */
		log_event(LOG_LVL_INFO, "proxy-abort", ps->info.sid, NULL,
		    "up=%s why=\"the client's message ended without its end "
		    "of data\"", ps->up->cfg->name);
		ps_drop_link(ps);
		return;
	}
	if (ps->up_tx) {
		ps->rset_due = true;
		ps_advance(ps);
	}
}

void
proxy_session_client_tls(struct proxy_session *ps, const char *sni)
{
	free(ps->client_sni);
	ps->client_sni = xstrdup(sni != NULL ? sni : "");
	ps->client_tls = true;
	ps->sni_up = NULL;
}
